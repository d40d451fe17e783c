//! `raftgres dev`: a local cluster, each node with its own Postgres, all
//! on 127.0.0.1 (see `raftgres_devcluster::cluster`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use raftgres_devcluster::cluster::{self as dev, DevCluster, DevClusterOptions};

use crate::table;

#[derive(Debug, Subcommand)]
pub enum DevCommand {
    /// Start N nodes and their Postgres instances, wait for a leader, print
    /// where everything is, and run until Ctrl-C (SIGINT or SIGTERM), then
    /// stop everything. Reuses the data and ports of an earlier run in DIR;
    /// a new cluster gets free ports (DIR/endpoints names them, and the
    /// client commands read .dev/endpoints by default).
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
        /// Exit once the cluster has a leader, leaving it running, and print
        /// its nodes as JSON (also written to DIR/cluster.json): pids,
        /// addresses, Postgres ports and data directories. Stop it with
        /// `raftgres dev down`.
        #[arg(long)]
        detach: bool,
        /// Give node N gRPC port FIRST + N - 1 when it is free (a free port
        /// otherwise); by default every port is picked free.
        #[arg(long, value_name = "FIRST")]
        grpc_port_first: Option<u16>,
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
    /// Stop one node of the cluster in DIR (SIGTERM, SIGKILL after 10 s),
    /// leaving its Postgres running; its pid file goes with it.
    StopNode {
        /// The cluster's directory.
        #[arg(long, default_value = ".dev")]
        dir: PathBuf,
        /// SIGKILL at once, as a crash would.
        #[arg(long)]
        kill: bool,
        /// The node to stop.
        id: u64,
    },
    /// Stop or start one node's Postgres under it.
    Pg {
        #[command(subcommand)]
        command: PgCommand,
    },
}

/// `raftgres dev pg ...`.
#[derive(Debug, Subcommand)]
pub enum PgCommand {
    /// Stop node N's Postgres: a fast shutdown; --immediate: `pg_ctl stop
    /// -m immediate` (nothing flushed or checkpointed); --crash: SIGKILL of
    /// the postmaster.
    Stop {
        /// The cluster's directory.
        #[arg(long, default_value = ".dev")]
        dir: PathBuf,
        /// `pg_ctl stop -m immediate`.
        #[arg(long, conflicts_with = "crash")]
        immediate: bool,
        /// SIGKILL of the postmaster, as a crash would.
        #[arg(long)]
        crash: bool,
        /// The node whose Postgres stops.
        id: u64,
    },
    /// Start node N's Postgres again, on the port its config names.
    Start {
        /// The cluster's directory.
        #[arg(long, default_value = ".dev")]
        dir: PathBuf,
        /// The node whose Postgres starts.
        id: u64,
    },
}

/// Seconds a node gets to stop on SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `dev pg start` waits for Postgres to answer.
const POSTGRES_START_TIMEOUT: Duration = Duration::from_secs(60);

pub async fn run(command: DevCommand) -> anyhow::Result<()> {
    match command {
        DevCommand::Up {
            nodes,
            dir,
            tick_ms,
            leader_timeout,
            detach,
            grpc_port_first,
        } => {
            let mut options = DevClusterOptions::new(nodes, own_binary()?);
            options.tick_ms = tick_ms;
            // Free ports unless asked: two clusters on one machine (or a
            // test's and a person's) must never collide.
            options.grpc_port_first = grpc_port_first;
            options.leader_timeout = Duration::from_secs(leader_timeout);
            options.stop_timeout = STOP_TIMEOUT;
            if detach {
                up_detached(&dir, options).await
            } else {
                up(&dir, options).await
            }
        }
        DevCommand::StopNode { dir, kill, id } => {
            let pid = dev::stop_node_process(&dir, id, STOP_TIMEOUT, kill).with_context(|| {
                format!("stopping node {id} of the dev cluster in {}", dir.display())
            })?;
            println!("stopped node {id} (pid {pid})");
            Ok(())
        }
        DevCommand::Pg {
            command:
                PgCommand::Stop {
                    dir,
                    immediate,
                    crash,
                    id,
                },
        } => {
            let mode = match (immediate, crash) {
                (true, _) => dev::PostgresStop::Immediate,
                (_, true) => dev::PostgresStop::Kill,
                _ => dev::PostgresStop::Fast,
            };
            dev::stop_postgres(&dir, id, mode)
                .with_context(|| format!("stopping the Postgres of node {id}"))?;
            println!("stopped the Postgres of node {id} ({mode:?})");
            Ok(())
        }
        DevCommand::Pg {
            command: PgCommand::Start { dir, id },
        } => {
            let port = dev::start_postgres(&dir, id, POSTGRES_START_TIMEOUT)
                .with_context(|| format!("starting the Postgres of node {id}"))?;
            println!("started the Postgres of node {id} on port {port}");
            Ok(())
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

/// Starts the cluster, prints its nodes as JSON once it has a leader (the
/// ready signal: the command exits then), and leaves it running.
async fn up_detached(dir: &std::path::Path, options: DevClusterOptions) -> anyhow::Result<()> {
    let mut cluster = DevCluster::start(dir, options)
        .await
        .with_context(|| format!("starting the dev cluster in {}", dir.display()))?;
    let leader = cluster.leader().await;
    let cluster_dir = cluster.dir().to_path_buf();
    let nodes = cluster.detach();
    let json = dev::nodes_json(&cluster_dir, leader, &nodes);
    let path = cluster_dir.join("cluster.json");
    std::fs::write(&path, format!("{json}\n"))
        .with_context(|| format!("writing {}", path.display()))?;
    println!("{json}");
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
