//! The `raftgres-sim` command: seed sweeps with fault injection and
//! checkers (`run`), and election timing measurements (`elections`).

use std::io::IsTerminal;
use std::ops::Range;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use raftgres_sim::config::SimConfig;
use raftgres_sim::elections;
use raftgres_sim::profile::PROFILE_NAMES;
use raftgres_sim::sweep::{format_summary, run_sweep};

#[derive(Parser)]
#[command(
    name = "raftgres-sim",
    about = "Deterministic simulator for the raftgres consensus core"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a range of seeds with fault injection and every checker.
    Run(RunArguments),
    /// Measures how long it takes to replace a crashed leader (section 9.3).
    Elections(ElectionArguments),
    /// Lists the planted bugs this build can enable, one per line.
    PlantedBugs,
}

#[derive(clap::Args)]
struct RunArguments {
    /// Seeds to run, as START..END (END excluded).
    #[arg(long, default_value = "0..100")]
    seeds: String,
    /// Cluster size.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Simulated ticks per seed.
    #[arg(long, default_value_t = 2000)]
    ticks: u64,
    /// Fault profile: none, default, heavy, crashy, figure8, or swarm (a
    /// fault mix and core settings drawn per seed; a core flag moved from
    /// its default pins that setting).
    #[arg(long, default_value = "swarm")]
    faults: String,
    #[arg(long, value_name = "NAME", help = planted_bug_help())]
    planted_bug: Option<String>,
    /// Print each seed's event trace.
    #[arg(long)]
    trace: bool,
    /// Worker threads (default: available parallelism).
    #[arg(long)]
    threads: Option<usize>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 3)]
    clients: usize,
    /// Distinct keys.
    #[arg(long, default_value_t = 3)]
    keys: u64,
    /// Election timeout range in ticks, MIN-MAX.
    #[arg(long, default_value = "10-20")]
    election_ticks: String,
    /// Disable the pre-vote phase.
    #[arg(long)]
    no_pre_vote: bool,
    /// Disable check-quorum and leader stickiness.
    #[arg(long)]
    no_check_quorum: bool,
    /// Most entries per AppendEntries message.
    #[arg(long, default_value_t = 64)]
    entries_per_message_max: usize,
    /// Most bytes of entries per AppendEntries message.
    #[arg(long, default_value_t = 1 << 20)]
    message_bytes_max: usize,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(clap::Args)]
struct ElectionArguments {
    /// Election timeout ranges in ticks, comma separated: MIN-MAX,...
    #[arg(long, default_value = "10-20,10-11,150-300")]
    timeouts: String,
    /// Trials per range.
    #[arg(long, default_value_t = 1000)]
    trials: u64,
    /// Cluster size.
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// Worker threads (default: available parallelism).
    #[arg(long)]
    threads: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// The `--planted-bug` help, naming the bugs this build can plant.
fn planted_bug_help() -> String {
    let names = raftgres_sim::planted_bug_names();
    if names.is_empty() {
        "Enable a planted bug in every node (this build has none: build with \
         --features planted-bugs)"
            .to_string()
    } else {
        format!("Enable a planted bug in every node: {}", names.join(", "))
    }
}

fn parse_seeds(text: &str) -> Result<Range<u64>> {
    let (start, end) = text
        .split_once("..")
        .context("--seeds must look like START..END")?;
    let start: u64 = start.trim().parse().context("--seeds start")?;
    let end: u64 = end.trim().parse().context("--seeds end")?;
    if end <= start {
        bail!("--seeds {text}: END must exceed START");
    }
    Ok(start..end)
}

fn parse_range(text: &str) -> Result<(u64, u64)> {
    let (min, max) = text
        .split_once('-')
        .with_context(|| format!("{text:?} must look like MIN-MAX"))?;
    let (min, max): (u64, u64) = (min.trim().parse()?, max.trim().parse()?);
    if max <= min || min < 2 {
        bail!("{text:?}: need 2 <= MIN < MAX");
    }
    Ok((min, max))
}

fn progress_bar(length: u64, quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(length), ProgressDrawTarget::stderr());
    let style =
        ProgressStyle::with_template("{bar:40} {pos}/{len} seeds {elapsed_precise} eta {eta}")
            .expect("valid template");
    bar.set_style(style);
    bar
}

fn threads(requested: Option<usize>) -> usize {
    requested.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |count| count.get()))
}

fn run(arguments: RunArguments) -> Result<ExitCode> {
    let seeds = parse_seeds(&arguments.seeds)?;
    if !PROFILE_NAMES.contains(&arguments.faults.as_str()) {
        bail!(
            "unknown --faults {:?}; choose one of {PROFILE_NAMES:?}",
            arguments.faults
        );
    }
    if arguments.nodes == 0 || arguments.nodes > 9 {
        bail!("--nodes must be between 1 and 9");
    }
    if let Some(bug) = &arguments.planted_bug {
        let known = raftgres_sim::planted_bug_names();
        if known.is_empty() {
            bail!("--planted-bug needs a build with `--features planted-bugs`");
        }
        if !known.contains(&bug.as_str()) {
            bail!("unknown --planted-bug {bug:?}; choose one of {known:?}");
        }
    }
    let (election_ticks_min, election_ticks_max) = parse_range(&arguments.election_ticks)?;
    let mut config = SimConfig::new(arguments.nodes, arguments.ticks, &arguments.faults);
    config.planted_bug = arguments.planted_bug;
    config.trace = arguments.trace;
    config.clients = arguments.clients;
    config.keys = arguments.keys.max(1);
    config.election_ticks_min = election_ticks_min;
    config.election_ticks_max = election_ticks_max;
    config.heartbeat_ticks = (election_ticks_min / 5).max(1);
    config.pre_vote = !arguments.no_pre_vote;
    config.check_quorum = !arguments.no_check_quorum;
    config.entries_per_message_max = arguments.entries_per_message_max.max(1);
    config.message_bytes_max = arguments.message_bytes_max.max(1);
    let progress = progress_bar(seeds.end - seeds.start, arguments.quiet);
    let report = run_sweep(&config, seeds, threads(arguments.threads), &progress);
    progress.finish_and_clear();
    for (seed, text) in &report.traces {
        println!("=== trace of seed {seed} ===\n{text}");
    }
    println!("{}", format_summary(&config, &report));
    if report.failures.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    println!();
    for failure in &report.failures {
        let violation = &failure.violation;
        println!(
            "FAILED seed {} at tick {}: {}: {}",
            failure.seed, violation.tick, violation.checker, violation.message
        );
        println!("  replay: {}", failure.replay);
    }
    Ok(ExitCode::FAILURE)
}

fn elections_command(arguments: ElectionArguments) -> Result<ExitCode> {
    let ranges: Vec<(u64, u64)> = arguments
        .timeouts
        .split(',')
        .map(parse_range)
        .collect::<Result<_>>()?;
    println!(
        "leader replacement after a crash, {} nodes, {} trials per range (ticks)",
        arguments.nodes, arguments.trials
    );
    println!(
        "{:>12} {:>6} {:>6} {:>6} {:>6} {:>6} {:>10}",
        "timeout", "min", "p50", "p90", "p99", "max", "no leader"
    );
    for range in ranges {
        let progress = progress_bar(arguments.trials, arguments.quiet);
        let statistics = elections::measure(
            arguments.nodes,
            range,
            arguments.trials,
            threads(arguments.threads),
            &progress,
        );
        progress.finish_and_clear();
        let (min, p50, p90, p99, max) = statistics.summary();
        println!(
            "{:>12} {min:>6} {p50:>6} {p90:>6} {p99:>6} {max:>6} {:>10}",
            format!("{}-{}", range.0, range.1),
            statistics.trials_without_leader
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> Result<ExitCode> {
    // A panic inside a simulated run is caught and reported with its seed
    // and replay command; the default hook's backtrace would only clutter
    // the summary. RUST_BACKTRACE=1 brings it back for debugging.
    if std::env::var_os("RUST_BACKTRACE").is_none() {
        std::panic::set_hook(Box::new(|_| {}));
    }
    match Cli::parse().command {
        Command::Run(arguments) => run(arguments),
        Command::Elections(arguments) => elections_command(arguments),
        Command::PlantedBugs => {
            for name in raftgres_sim::planted_bug_names() {
                println!("{name}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
