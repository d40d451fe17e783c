//! `make nemesis`: a long nemesis campaign against a real cluster, with a
//! progress bar and a report (text, history, throughput plot with the
//! faults marked, node logs on failure). Exits 1 when a check fails.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use raftgres_tests::campaign::{self, CampaignOptions};
use raftgres_tests::nemesis::FaultKind;

/// Runs one seeded nemesis campaign.
#[derive(Parser, Debug)]
#[command(name = "raftgres-nemesis")]
struct Arguments {
    /// Seed of the fault schedule and of the workers' choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Length of the campaign in minutes.
    #[arg(long, default_value_t = 20.0)]
    minutes: f64,
    /// Voters (3 or 5).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Concurrent client workers.
    #[arg(long, default_value_t = 8)]
    workers: usize,
    /// Fault kinds, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    faults: Vec<String>,
    /// Leader check interval of the retrying workers' client, in ms (0: no
    /// leader check; the attempt at a stopped leader waits out its timeout).
    #[arg(long)]
    leader_check_ms: Option<u64>,
    /// The nodes' log filter (`RUST_LOG` syntax), e.g. `debug`.
    #[arg(long, default_value = "info")]
    log_filter: String,
    /// Where the report, history, plot and logs go.
    #[arg(long, default_value = "target/nemesis")]
    artifacts: PathBuf,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> anyhow::Result<()> {
    let arguments = Arguments::parse();
    let duration = Duration::from_secs_f64(arguments.minutes * 60.0);
    let mut options = CampaignOptions::new(arguments.seed, duration);
    options.nodes = arguments.nodes;
    options.workload.workers = arguments.workers;
    if let Some(milliseconds) = arguments.leader_check_ms {
        options.workload.leader_check_interval =
            (milliseconds > 0).then(|| Duration::from_millis(milliseconds));
    }
    options.log_filter = arguments.log_filter.clone();
    options.progress = true;
    options.keep_artifacts = true;
    options.artifacts_dir = std::path::absolute(&arguments.artifacts)?;
    if !arguments.faults.is_empty() {
        options.faults = arguments
            .faults
            .iter()
            .map(|name| {
                FaultKind::from_name(name).ok_or_else(|| {
                    let known: Vec<&str> = FaultKind::ALL.iter().map(FaultKind::name).collect();
                    anyhow::anyhow!("unknown fault {name:?}; known: {}", known.join(", "))
                })
            })
            .collect::<anyhow::Result<_>>()?;
    }
    let report = campaign::run(options).await;
    println!("{}", raftgres_tests::report::text(&report));
    if !report.passed() {
        std::process::exit(1);
    }
    Ok(())
}
