//! The `raftgres` command: serve a node, run a local dev cluster, and talk
//! to a cluster as a client.
//!
//! - `serve.rs`: `raftgres serve`, a node from a config file, flags and
//!   environment variables.
//! - `dev.rs`: `raftgres dev up|down|start-node|stop-node|pg`, local clusters with their
//!   own Postgres instances.
//! - `client.rs`: `raftgres kv ...`, `status`, `transfer-leader`, `wait`.
//! - `member.rs`: `raftgres member list|add|promote|remove`, membership
//!   changes.
//! - `signals.rs`: SIGINT/SIGTERM as a graceful shutdown future.
//! - `table.rs`: plain-text tables.
//!
//! Exit status: 0 on success, 1 when a read finds no key or a
//! compare-and-swap does not swap (as `grep` does for "no match"), 2 on
//! any error.
#![forbid(unsafe_code)]

/// The node allocates and frees per request and per entry (gRPC frames,
/// protobuf messages, SQL parameters); mimalloc does that with less CPU
/// than the system allocator (docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod client;
mod dev;
mod member;
mod serve;
mod signals;
mod table;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// A Raft consensus log whose nodes keep their state in PostgreSQL.
#[derive(Debug, Parser)]
#[command(name = "raftgres", version, after_help = EXIT_STATUS_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const EXIT_STATUS_HELP: &str = "Exit status: 0 on success, 1 when `kv get` finds no key or `kv cas` \
                                does not swap, 2 on errors. Logs go to stderr, filtered by RUST_LOG.";

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one node of a cluster.
    Serve(serve::ServeArgs),
    /// Run a local cluster, each node with its own Postgres.
    Dev {
        #[command(subcommand)]
        command: dev::DevCommand,
    },
    /// Read and write the built-in key-value store.
    Kv {
        #[command(subcommand)]
        command: client::KvCommand,
        #[command(flatten)]
        connection: client::ConnectionArgs,
    },
    /// Show every node's role, term and indexes.
    Status {
        /// Print JSON (an array with one object per node) instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connection: client::ConnectionArgs,
    },
    /// List the cluster's members; add, promote or remove one.
    Member {
        #[command(subcommand)]
        command: member::MemberCommand,
        #[command(flatten)]
        connection: client::ConnectionArgs,
    },
    /// Hand leadership to another node.
    TransferLeader {
        /// The node that should lead.
        target_id: u64,
        #[command(flatten)]
        connection: client::ConnectionArgs,
    },
    /// Wait for a cluster condition (for scripts).
    Wait {
        #[command(subcommand)]
        command: client::WaitCommand,
        #[command(flatten)]
        connection: client::ConnectionArgs,
    },
}

/// What a command found, for the exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Success,
    /// A negative answer that is not an error: no such key, no swap.
    Negative,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_filter = match cli.command {
        Command::Serve(_)
        | Command::Dev {
            command: dev::DevCommand::Up { .. },
        } => "info",
        _ => "warn",
    };
    initialise_tracing(default_filter);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("raftgres: cannot start the async runtime: {error}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::Negative) => ExitCode::from(1),
        Err(error) => {
            eprintln!("raftgres: {error:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(command: Command) -> anyhow::Result<Outcome> {
    match command {
        Command::Serve(arguments) => serve::run(arguments).await.map(|()| Outcome::Success),
        Command::Dev { command } => dev::run(command).await.map(|()| Outcome::Success),
        Command::Kv {
            command,
            connection,
        } => client::run_kv(command, &connection).await,
        Command::Status { json, connection } => client::run_status(&connection, json).await,
        Command::Member {
            command,
            connection,
        } => member::run_member(command, &connection).await,
        Command::TransferLeader {
            target_id,
            connection,
        } => client::run_transfer_leader(target_id, &connection).await,
        Command::Wait {
            command,
            connection,
        } => client::run_wait(command, &connection).await,
    }
}

/// Logs to stderr, filtered by RUST_LOG (else `default_filter`); colours
/// only on a terminal, so that node log files stay plain text.
fn initialise_tracing(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn endpoints_can_follow_the_subcommand() {
        let cli = Cli::try_parse_from([
            "raftgres",
            "kv",
            "get",
            "k",
            "--endpoints",
            "a:1,b:2",
            "--mode",
            "stale",
        ])
        .unwrap();
        let Command::Kv { connection, .. } = cli.command else {
            panic!("kv expected")
        };
        assert_eq!(connection.endpoints, ["a:1", "b:2"]);
    }

    #[test]
    fn member_add_takes_an_id_an_address_and_the_connection_flags() {
        let cli = Cli::try_parse_from([
            "raftgres",
            "member",
            "add",
            "4",
            "127.0.0.1:7004",
            "--learner",
            "--timeout",
            "120",
        ])
        .unwrap();
        let Command::Member {
            command,
            connection,
        } = cli.command
        else {
            panic!("member expected")
        };
        assert!(matches!(
            command,
            member::MemberCommand::Add { id: 4, ref address, learner: true } if address == "127.0.0.1:7004"
        ));
        assert_eq!(connection.timeout, 120);
    }
}
