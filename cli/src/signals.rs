//! SIGINT and SIGTERM as one graceful-shutdown future.

use std::future::Future;

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};

/// A future that resolves at the first SIGINT or SIGTERM. A second signal
/// ends the process at once (exit status 130), for when a graceful stop
/// hangs. Must be called inside the tokio runtime; the handlers are in
/// place when this returns.
pub fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let (first_sender, first_receiver) = tokio::sync::oneshot::channel::<&'static str>();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        };
        tracing::info!(
            signal = name,
            "stopping gracefully; send the signal again to exit at once"
        );
        let _ = first_sender.send(name);
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        eprintln!("raftgres: second signal, exiting without finishing the graceful stop");
        std::process::exit(130);
    });
    Ok(async move {
        // An error means the task ended without sending, which it only does
        // when the runtime shuts down: stopping is right then too.
        let _ = first_receiver.await;
    })
}
