//! Accepting gRPC connections: a bound on how many are open at once, and
//! the TLS handshake with a deadline.
//!
//! A connection beyond `limits.connections_max` is closed as soon as it is
//! accepted, and a TLS handshake that does not finish within
//! `limits.tls_handshake_timeout_ms` is dropped, so clients that connect and
//! then stall cannot hold the node's memory, file descriptors or connection
//! slots. Handshakes run in tasks of their own: one slow client never delays
//! the next.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use super::metrics::Metrics;

/// Connections accepted (and through their handshake) but not yet picked
/// up by the gRPC server. The server takes them as they come, so a few
/// suffice; a full queue only makes the accept loop wait.
const ACCEPTED_QUEUE_MAX: usize = 16;

/// An accepted TCP connection holding one of the listener's connection
/// slots until it closes.
pub(crate) struct Connection {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
}

impl Connected for Connection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(context, buffer)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(context, buffer)
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(context)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(context)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(context, buffers)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// How a listener accepts.
#[derive(Clone)]
pub(crate) struct AcceptSettings {
    /// Most connections open at once on this listener.
    pub(crate) connections_max: usize,
    /// Longest a TLS handshake may take.
    pub(crate) handshake_timeout: Duration,
    /// Counts refused connections and failed handshakes.
    pub(crate) metrics: Arc<Metrics>,
}

/// Plain-text connections from `listener`, at most
/// `settings.connections_max` open at once.
pub(crate) fn accept_plain(
    listener: TcpListener,
    settings: AcceptSettings,
    shutdown: watch::Receiver<bool>,
) -> ReceiverStream<io::Result<Connection>> {
    accept(
        listener,
        settings,
        shutdown,
        |connection, _timeout| async move { Ok(connection) },
    )
}

/// TLS connections from `listener`: each handshake runs in its own task
/// and is abandoned after `settings.handshake_timeout`.
pub(crate) fn accept_tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    settings: AcceptSettings,
    shutdown: watch::Receiver<bool>,
) -> ReceiverStream<io::Result<TlsStream<Connection>>> {
    accept(listener, settings, shutdown, move |connection, timeout| {
        let acceptor = acceptor.clone();
        async move {
            match tokio::time::timeout(timeout, acceptor.accept(connection)).await {
                Ok(result) => result,
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "TLS handshake timed out",
                )),
            }
        }
    })
}

fn accept<T, F, Handshake>(
    listener: TcpListener,
    settings: AcceptSettings,
    mut shutdown: watch::Receiver<bool>,
    handshake: Handshake,
) -> ReceiverStream<io::Result<T>>
where
    T: Send + 'static,
    F: std::future::Future<Output = io::Result<T>> + Send + 'static,
    Handshake: Fn(Connection, Duration) -> F + Send + 'static,
{
    let (sender, receiver) = mpsc::channel(ACCEPTED_QUEUE_MAX);
    let slots = Arc::new(Semaphore::new(settings.connections_max));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.changed() => return,
                accepted = listener.accept() => accepted,
            };
            let stream = match accepted {
                Ok((stream, _remote)) => stream,
                Err(error) => {
                    // Out of file descriptors and the like: back off
                    // instead of spinning; the listener itself is fine.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                settings.metrics.connections_refused.inc();
                drop(stream);
                continue;
            };
            // Without it, small responses wait for the client's delayed
            // ACK (about 40 ms).
            let _ = stream.set_nodelay(true);
            let connection = Connection {
                stream,
                _slot: slot,
            };
            let handshaking = handshake(connection, settings.handshake_timeout);
            let sender = sender.clone();
            let metrics = settings.metrics.clone();
            tokio::spawn(async move {
                match handshaking.await {
                    Ok(ready) => {
                        let _ = sender.send(Ok(ready)).await;
                    }
                    Err(error) => {
                        metrics.tls_handshakes_failed.inc();
                        tracing::debug!(%error, "connection dropped during its handshake");
                    }
                }
            });
        }
    });
    ReceiverStream::new(receiver)
}
