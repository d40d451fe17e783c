//! `raftgres-bench`: a closed-loop gRPC load generator that drives raftgres
//! (through `raftgres.v1.Kv` or through its etcd API) and etcd with the
//! identical workload and reports throughput and latency percentiles.
//!
//! ```text
//! raftgres-bench run --system raftgres|raftgres-etcd-api|etcd --endpoints A,B,C [workload]
//!                                                                         one point, JSON on stdout
//! raftgres-bench compare --etcd-endpoints .. --etcd-pids .. [sweep]        the full comparison (scripts/bench.sh)
//! raftgres-bench snapshot --cluster-dir DIR [--mebibytes 256]             a follower's catch-up by snapshot (make bench-snapshot)
//! ```
//!
//! Modules:
//! - `target`: the systems (raftgres through either API, etcd) behind one
//!   put/get interface, leader finding;
//! - `workload`: the bounded load loop, progress bar;
//! - `latency`: HDR histograms and the percentiles reported;
//! - `node_metrics`: scraping raftgres' Prometheus endpoint;
//! - `process_stats`: CPU and peak RSS from /proc;
//! - `postgres_ceiling`: plain multi-row INSERT rows per second;
//! - `report`: JSON, CSV and the Markdown section; `svg`: the plot;
//! - `compare`: the orchestration of a whole comparison;
//! - `snapshot`: a follower's catch-up by snapshot against `pg_dump |
//!   pg_restore` (load, watch, row checks, baseline, report).
#![forbid(unsafe_code)]

mod compare;
mod latency;
mod node_metrics;
mod postgres_ceiling;
mod process_stats;
mod report;
mod snapshot;
mod svg;
mod target;
mod workload;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::target::{ReadMode, System};
use crate::workload::Workload;

#[derive(Parser)]
#[command(
    version,
    about = "Load generator: raftgres against etcd, same workload, same machine."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// One point against a running cluster; prints the result as JSON.
    Run {
        /// Which system the load goes to: raftgres through its own API or
        /// through its etcd API, or etcd.
        #[arg(long, value_enum)]
        system: System,
        /// Client endpoints (`host:port`, comma-separated) of the system's
        /// cluster; the load goes to the leader among them.
        #[arg(long, value_delimiter = ',', required = true)]
        endpoints: Vec<String>,
        /// Concurrent clients.
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// HTTP/2 connections the clients share (default: min(clients, 16)).
        #[arg(long)]
        connections: Option<usize>,
        /// Share of reads, percent.
        #[arg(long, default_value_t = 0)]
        read_percent: u8,
        #[command(flatten)]
        workload: WorkloadArguments,
    },
    /// Starts a 3-node raftgres dev cluster, runs the sweep against it and
    /// a running etcd cluster, writes JSON, CSV, the SVG plot and the
    /// Markdown section, then stops the raftgres cluster.
    Compare {
        /// etcd client endpoints (`host:port`, comma-separated).
        #[arg(long, value_delimiter = ',', required = true)]
        etcd_endpoints: Vec<String>,
        /// Pids of the etcd members, for CPU and peak RSS.
        #[arg(long, value_delimiter = ',')]
        etcd_pids: Vec<u32>,
        /// Client counts of the write sweep.
        #[arg(long, value_delimiter = ',', default_value = "1,16,64,256,1024")]
        clients: Vec<usize>,
        /// Clients of the extra 100 % linearizable-read point (0: none).
        #[arg(long, default_value_t = 64)]
        read_point_clients: usize,
        /// Clients of the extra 50 % read, 50 % write point (0: none).
        #[arg(long, default_value_t = 64)]
        mix_point_clients: usize,
        /// Clients of the extra write point with large values (0: none).
        #[arg(long, default_value_t = 64)]
        large_value_point_clients: usize,
        /// Bytes of every value written at the large-value point.
        #[arg(long, default_value_t = 1024)]
        large_value_bytes: usize,
        /// Clients of the extra write point run against raftgres through
        /// `raftgres.v1.Kv`, raftgres through its etcd API, and etcd, back
        /// to back (0: none).
        #[arg(long, default_value_t = 64)]
        etcd_api_point_clients: usize,
        /// Directory of the raftgres cluster (Postgres data and node logs).
        #[arg(long)]
        cluster_dir: PathBuf,
        /// Seconds per batch size of the raw Postgres ceiling (0: skip).
        #[arg(long, default_value_t = 5.0)]
        ceiling_seconds: f64,
        /// Where results.json and results.csv go.
        #[arg(long, default_value = "target/bench")]
        output_dir: PathBuf,
        /// The plot.
        #[arg(long, default_value = "docs/bench-throughput.svg")]
        svg: PathBuf,
        /// The Markdown file whose "## raftgres vs etcd" section is replaced.
        #[arg(long)]
        markdown: Option<PathBuf>,
        /// How this run was started, quoted in the Markdown.
        #[arg(long, default_value = "make bench")]
        command_line: String,
        #[command(flatten)]
        workload: WorkloadArguments,
    },
    /// Starts a 3-node raftgres dev cluster, stops a follower, loads the
    /// state machine, starts the follower again and measures its catch-up
    /// by snapshot, then `pg_dump | pg_restore` of the same table; checks
    /// both copies and writes the Markdown section.
    Snapshot {
        /// Mebibytes of values loaded.
        #[arg(long, default_value_t = 256)]
        mebibytes: u64,
        /// Bytes of every value (one put, one log entry).
        #[arg(long, default_value_t = 16_384)]
        value_bytes: usize,
        /// Concurrent puts of the load.
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// `raft.compaction_entries` of every node (small, so that the
        /// stopped follower falls behind the compacted log).
        #[arg(long, default_value_t = 1000)]
        compaction_entries: u64,
        /// Directory of the cluster (created; removed after a run that
        /// passed, kept with the node logs after one that failed).
        #[arg(long)]
        cluster_dir: PathBuf,
        /// Keep the cluster directory after a run that passed too.
        #[arg(long)]
        keep_cluster_dir: bool,
        /// The whole run is abandoned after this many minutes.
        #[arg(long, default_value_t = 20)]
        timeout_minutes: u64,
        /// The Markdown file whose "## Snapshots: N MiB" section is replaced.
        #[arg(long)]
        markdown: Option<PathBuf>,
        /// The date written into the Markdown (default: today, UTC).
        #[arg(long)]
        date: Option<String>,
        /// How this run was started, quoted in the Markdown.
        #[arg(long, default_value = "make bench-snapshot")]
        command_line: String,
    },
}

/// Workload settings shared by both commands.
#[derive(Args, Clone)]
struct WorkloadArguments {
    /// Measured seconds per point.
    #[arg(long, default_value_t = 20.0)]
    duration_seconds: f64,
    /// Unmeasured seconds of load before each point.
    #[arg(long, default_value_t = 3.0)]
    warmup_seconds: f64,
    /// Operations per point at most (warm-up included).
    #[arg(long, default_value_t = 5_000_000)]
    operations_max: u64,
    /// Bytes of every written value.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// Size of the key space.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// How reads are served (etcd's API: lease maps to serializable).
    #[arg(long, value_enum, default_value_t = ReadMode::Linearizable)]
    read_mode: ReadMode,
    /// Seed of key and operation choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

impl WorkloadArguments {
    fn workload(&self, clients: usize, connections: usize, read_percent: u8) -> Workload {
        Workload {
            clients,
            connections,
            duration_seconds: self.duration_seconds,
            warmup_seconds: self.warmup_seconds,
            operations_max: self.operations_max,
            value_bytes: self.value_bytes,
            keys: self.keys,
            read_percent,
            read_mode: self.read_mode,
            seed: self.seed,
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run {
            system,
            endpoints,
            clients,
            connections,
            read_percent,
            workload,
        } => {
            let connections = connections.unwrap_or_else(|| workload::default_connections(clients));
            let workload = workload.workload(clients, connections, read_percent);
            workload.validate()?;
            let leader = target::find_leader(system, &endpoints).await?;
            let label = format!("{} {clients}c", system.name());
            let result = workload::run(system, &leader, &workload, &label).await?;
            let output = serde_json::json!({ "system": system, "leader": leader, "workload": workload, "result": result });
            println!(
                "{}",
                serde_json::to_string_pretty(&output).context("serialising the result")?
            );
        }
        Command::Compare {
            etcd_endpoints,
            etcd_pids,
            clients,
            read_point_clients,
            mix_point_clients,
            large_value_point_clients,
            large_value_bytes,
            etcd_api_point_clients,
            cluster_dir,
            ceiling_seconds,
            output_dir,
            svg,
            markdown,
            command_line,
            workload,
        } => {
            let template = workload.workload(1, 1, 0);
            let chosen = |clients: usize| (clients > 0).then_some(clients);
            let options = compare::CompareOptions {
                clients,
                read_point_clients: chosen(read_point_clients),
                mix_point_clients: chosen(mix_point_clients),
                large_value_point: chosen(large_value_point_clients)
                    .map(|clients| (clients, large_value_bytes)),
                etcd_api_point_clients: chosen(etcd_api_point_clients),
                workload: template,
                etcd_endpoints,
                etcd_pids,
                cluster_dir,
                ceiling_seconds,
                output_dir,
                svg_path: svg,
                markdown_path: markdown,
                command: command_line,
            };
            for point in compare::plan(&options) {
                compare::point_workload(&options.workload, &point).validate()?;
            }
            let report = compare::compare(options).await?;
            println!("{}", report::results_table(&report));
            for check in report::target_checks(&report) {
                println!(
                    "{}: {}",
                    if check.met { "met" } else { "MISSED" },
                    check.text
                );
            }
        }
        Command::Snapshot {
            mebibytes,
            value_bytes,
            clients,
            compaction_entries,
            cluster_dir,
            keep_cluster_dir,
            timeout_minutes,
            markdown,
            date,
            command_line,
        } => {
            let options = snapshot::SnapshotOptions {
                mebibytes,
                value_bytes,
                clients,
                compaction_entries,
                cluster_dir,
                keep_cluster_dir,
                timeout: std::time::Duration::from_secs(timeout_minutes * 60),
                command: command_line,
            };
            let report = snapshot::run(options).await?;
            snapshot::print_table(&report);
            if let Some(path) = markdown {
                let date = date.unwrap_or_else(today);
                snapshot::write_section(&report, &path, &date)?;
                eprintln!("wrote the section to {}", path.display());
            }
        }
    }
    Ok(())
}

/// Today's date (UTC) as `date` prints it, `unknown` when it cannot.
fn today() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .map(|text| text.trim().to_string())
        .filter(|text| !text.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_takes_raftgres_through_its_etcd_api_as_a_system() {
        let cli = Cli::try_parse_from([
            "raftgres-bench",
            "run",
            "--system",
            "raftgres-etcd-api",
            "--endpoints",
            "127.0.0.1:7001,127.0.0.1:7002",
            "--read-mode",
            "lease",
        ])
        .unwrap();
        let Command::Run {
            system,
            endpoints,
            workload,
            ..
        } = cli.command
        else {
            panic!("not the run command");
        };
        assert_eq!(system, System::RaftgresEtcdApi);
        assert_eq!(endpoints, ["127.0.0.1:7001", "127.0.0.1:7002"]);
        assert_eq!(workload.read_mode, ReadMode::Lease);
        let unknown = Cli::try_parse_from([
            "raftgres-bench",
            "run",
            "--system",
            "etcd-api",
            "--endpoints",
            "127.0.0.1:7001",
        ]);
        assert!(unknown.is_err());
    }

    #[test]
    fn compare_runs_the_etcd_api_point_at_64_clients_unless_told_0() {
        let parse = |extra: &[&str]| {
            let mut arguments = vec![
                "raftgres-bench",
                "compare",
                "--etcd-endpoints",
                "127.0.0.1:2379",
                "--cluster-dir",
                "/tmp/unused",
            ];
            arguments.extend_from_slice(extra);
            match Cli::try_parse_from(arguments).unwrap().command {
                Command::Compare {
                    etcd_api_point_clients,
                    ..
                } => etcd_api_point_clients,
                _ => panic!("not the compare command"),
            }
        };
        assert_eq!(parse(&[]), 64);
        assert_eq!(parse(&["--etcd-api-point-clients", "0"]), 0);
        assert_eq!(parse(&["--etcd-api-point-clients", "16"]), 16);
    }
}
