//! `raftgres dev`: a local cluster, each node with its own Postgres, all
//! on 127.0.0.1 (see `raftgres::dev`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use raftgres::dev::{self, DevCluster, DevClusterOptions};

use crate::table;

#[derive(Debug, Subcommand)]
pub enum DevCommand {
    /// Start N nodes and their Postgres instances, wait for a leader, print
    /// where everything is, and run until Ctrl-C (SIGINT or SIGTERM), then
    /// stop everything. Reuses the data and ports of an earlier run in DIR.
    Up {
        /// Number of nodes.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Directory for data, configs, logs and pid files.
        #[arg(long, default_value = ".dev")]
        dir: PathBuf,
        /// Length of a Raft tick in milliseconds.
        #[arg(long, default_value_t = 50)]
        tick_ms: u64,
        /// Seconds to wait for the first leader.
        #[arg(long, default_value_t = 120)]
        leader_timeout: u64,
    },
    /// Stop whatever a dev cluster left running in DIR (nodes by their pid
    /// files, then Postgres). Keeps the data.
    Down {
        /// The cluster's directory.
        #[arg(long, default_value = ".dev")]
        dir: PathBuf,
    },
    /// Start one node of the cluster in DIR again (after it was killed),
    /// on its existing config and data. Its Postgres must be running.
    StartNode {
        /// The cluster's directory.
        #[arg(long, default_value = ".dev")]
        dir: PathBuf,
        /// The node to start.
        id: u64,
    },
}

/// Seconds a node gets to stop on SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(command: DevCommand) -> anyhow::Result<()> {
    match command {
        DevCommand::Up {
            nodes,
            dir,
            tick_ms,
            leader_timeout,
        } => {
            let mut options = DevClusterOptions::new(nodes, own_binary()?);
            options.tick_ms = tick_ms;
            options.grpc_port_first = Some(dev::DEFAULT_GRPC_PORT_FIRST);
            options.metrics_port_first = Some(dev::DEFAULT_METRICS_PORT_FIRST);
            options.leader_timeout = Duration::from_secs(leader_timeout);
            options.stop_timeout = STOP_TIMEOUT;
            up(&dir, options).await
        }
        DevCommand::Down { dir } => {
            let stopped = dev::stop_directory(&dir, STOP_TIMEOUT)
                .with_context(|| format!("stopping the dev cluster in {}", dir.display()))?;
            if stopped.is_empty() {
                println!("nothing was running in {}", dir.display());
            }
            for line in stopped {
                println!("stopped {line}");
            }
            Ok(())
        }
        DevCommand::StartNode { dir, id } => {
            let pid =
                dev::start_node_process(&dir, id, &own_binary()?, None).with_context(|| {
                    format!("starting node {id} of the dev cluster in {}", dir.display())
                })?;
            println!(
                "started node {id} (pid {pid}); log: {}",
                dir.join(format!("node-{id}.log")).display()
            );
            Ok(())
        }
    }
}

async fn up(dir: &std::path::Path, options: DevClusterOptions) -> anyhow::Result<()> {
    let shutdown = crate::signals::shutdown_signal()?;
    tokio::pin!(shutdown);
    println!(
        "starting {} node(s) in {} (first start runs initdb; this takes a while)",
        options.nodes,
        dir.display()
    );
    // A signal during startup drops the half-started cluster, which stops
    // whatever it had started.
    let mut cluster = tokio::select! {
        cluster = DevCluster::start(dir, options) => {
            cluster.with_context(|| format!("starting the dev cluster in {}", dir.display()))?
        }
        () = &mut shutdown => {
            println!("interrupted; stopped what was started");
            return Ok(());
        }
    };
    let leader = cluster.leader().await;
    print!("{}", describe(&mut cluster, leader));
    println!("endpoints: {}", cluster.addresses().join(","));
    println!(
        "  (also in {})",
        cluster.layout().endpoints_path().display()
    );
    println!("cluster is up; Ctrl-C stops it");
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(Duration::from_millis(500)) => {
                for (id, status) in cluster.reap_exited() {
                    println!("node {id} exited ({status}); restart it with `raftgres dev start-node --dir {} {id}`", dir.display());
                }
            }
        }
    }
    println!("stopping the dev cluster in {}", dir.display());
    let stop = tokio::task::spawn_blocking(move || cluster.shutdown());
    stop.await
        .context("the stop task failed")?
        .context("stopping the dev cluster")?;
    println!("stopped");
    Ok(())
}

fn describe(cluster: &mut DevCluster, leader: Option<u64>) -> String {
    let rows: Vec<Vec<String>> = cluster
        .nodes()
        .into_iter()
        .map(|node| {
            vec![
                node.id.to_string(),
                if leader == Some(node.id) {
                    "leader".to_string()
                } else {
                    String::new()
                },
                node.address,
                node.metrics_address,
                node.pid
                    .map(|pid| pid.to_string())
                    .unwrap_or_else(|| "-".to_string()),
                node.postgres_port.to_string(),
                node.log_path.display().to_string(),
            ]
        })
        .collect();
    table::render(
        &["NODE", "ROLE", "GRPC", "METRICS", "PID", "POSTGRES", "LOG"],
        &rows,
    )
}

/// Nodes run the same binary as this command.
fn own_binary() -> anyhow::Result<PathBuf> {
    std::env::current_exe().context("locating the raftgres binary")
}
