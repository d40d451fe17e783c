//! Many seeds at once: each seed is an independent, deterministic run, so
//! seeds are handed out to `std::thread` workers from an atomic counter and
//! the results are put back in seed order. Wall-clock time is measured here,
//! for the summary only; it never reaches a run.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;

use crate::checkers::Violation;
use crate::config::SimConfig;
use crate::network::PartitionKind;
use crate::stats::RunStats;
use crate::world::World;

/// Runs `work` for every value of `range` on `threads` threads; returns the
/// results in range order. `progress` is advanced once per value.
pub fn parallel_map<T: Send>(
    range: Range<u64>,
    threads: usize,
    progress: &ProgressBar,
    work: impl Fn(u64) -> T + Sync,
) -> Vec<T> {
    let next = AtomicU64::new(range.start);
    let results: Mutex<Vec<(u64, T)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| loop {
                let value = next.fetch_add(1, Ordering::Relaxed);
                if value >= range.end {
                    break;
                }
                let result = work(value);
                results
                    .lock()
                    .expect("no worker panics while holding the lock")
                    .push((value, result));
                progress.inc(1);
            });
        }
    });
    let mut results = results.into_inner().expect("workers finished");
    results.sort_by_key(|(value, _)| *value);
    results.into_iter().map(|(_, result)| result).collect()
}

/// One failing seed.
#[derive(Clone, Debug)]
pub struct Failure {
    /// The seed.
    pub seed: u64,
    /// What failed first.
    pub violation: Violation,
    /// The command that replays it.
    pub replay: String,
}

/// The result of a sweep.
#[derive(Debug)]
pub struct SweepReport {
    /// Seeds run.
    pub seeds: u64,
    /// Counters summed over every run.
    pub totals: RunStats,
    /// Runs whose history was too expensive to check for linearizability.
    pub linearizability_too_expensive_runs: u64,
    /// Recovery times after healing (ticks), sorted.
    pub recovery_ticks: Vec<u64>,
    /// Runs that recovered after healing.
    pub recovered_runs: u64,
    /// Failing seeds, in seed order.
    pub failures: Vec<Failure>,
    /// Trace hash of each seed, in seed order.
    pub trace_hashes: Vec<u64>,
    /// Readable traces of each seed (with `--trace`), in seed order.
    pub traces: Vec<(u64, String)>,
    /// Wall-clock time of the sweep.
    pub elapsed: Duration,
}

impl SweepReport {
    /// What the sweep should have exercised and did not (see
    /// `RunStats::missing_exercises`).
    pub fn missing_exercises(&self) -> Vec<String> {
        self.totals
            .missing_exercises(self.seeds, self.recovered_runs)
    }
}

/// Runs every seed of `seeds` with `config`.
pub fn run_sweep(
    config: &SimConfig,
    seeds: Range<u64>,
    threads: usize,
    progress: &ProgressBar,
) -> SweepReport {
    let started = Instant::now();
    let outcomes = parallel_map(seeds.clone(), threads, progress, |seed| {
        World::new(config.clone(), seed).run()
    });
    let mut report = SweepReport {
        seeds: seeds.end - seeds.start,
        totals: RunStats::default(),
        linearizability_too_expensive_runs: 0,
        recovery_ticks: Vec::new(),
        recovered_runs: 0,
        failures: Vec::new(),
        trace_hashes: Vec::new(),
        traces: Vec::new(),
        elapsed: started.elapsed(),
    };
    for outcome in outcomes {
        let stats = outcome.stats;
        report.recovered_runs += u64::from(stats.recovery_ticks.is_some());
        report.totals += stats;
        report.linearizability_too_expensive_runs += u64::from(stats.linearizability_too_expensive);
        report.recovery_ticks.extend(stats.recovery_ticks);
        report.trace_hashes.push(outcome.trace_hash);
        if let Some(text) = outcome.trace_text {
            report.traces.push((outcome.seed, text));
        }
        if let Some(violation) = outcome.violation {
            report.failures.push(Failure {
                seed: outcome.seed,
                violation,
                replay: config.replay_command(outcome.seed),
            });
        }
    }
    report.recovery_ticks.sort_unstable();
    report
}

/// The `q`-quantile (0..=100) of sorted `values`.
pub fn percentile(values: &[u64], q: usize) -> u64 {
    if values.is_empty() {
        return 0;
    }
    values[((values.len() - 1) * q).div_ceil(100)]
}

/// The summary table printed after a sweep.
pub fn format_summary(config: &SimConfig, report: &SweepReport) -> String {
    let totals = &report.totals;
    let faults = &totals.faults;
    let seconds = report.elapsed.as_secs_f64().max(1e-9);
    let mut lines = vec![
        format!(
            "raftgres-sim: {} seeds, {} nodes, {} ticks each, faults {}",
            report.seeds, config.nodes, config.ticks, config.faults
        ),
        format!("  steps (core inputs)        {:>14}", totals.steps),
        format!("  trace events               {:>14}", totals.trace_events),
        format!("  messages sent              {:>14}", totals.messages_sent),
        format!("  faults: crashes            {:>14}", faults.crashes),
        format!("          restarts           {:>14}", faults.restarts),
        format!("          pauses             {:>14}", faults.pauses),
        format!("          disk errors        {:>14}", faults.disk_errors),
        format!("          storage errors     {:>14}", faults.storage_errors),
        format!(
            "          commits unknown    {:>14}",
            faults.commits_unknown
        ),
        format!(
            "          postgres crashes   {:>14}",
            faults.postgres_crashes
        ),
        format!("          applies lost       {:>14}", faults.applies_lost),
        format!("          storage hand-offs  {:>14}", faults.hand_offs),
        format!("          forged messages    {:>14}", faults.forged),
        format!("          transfers          {:>14}", faults.transfers),
        format!(
            "          membership changes {:>14}",
            format!(
                "{} ({} applied)",
                faults.membership_changes, faults.membership_changes_applied
            )
        ),
        format!(
            "          joins              {:>14}",
            format!("{} ({} caught up)", faults.joins, faults.joins_caught_up)
        ),
        format!("          messages lost      {:>14}", faults.messages_lost),
        format!(
            "          messages duplicated{:>14}",
            faults.messages_duplicated
        ),
        format!(
            "          messages cut       {:>14}",
            faults.messages_partitioned
        ),
        format!(
            "          messages unlinked  {:>14}",
            faults.messages_unconnected
        ),
        format!(
            "          messages unheard   {:>14}",
            faults.messages_unheard
        ),
    ];
    let kinds = [
        PartitionKind::Symmetric,
        PartitionKind::OneWay,
        PartitionKind::Bridge,
        PartitionKind::IsolateLeader,
        PartitionKind::DeafenLeader,
    ];
    for kind in kinds {
        lines.push(format!(
            "          partition {:<15}{:>10}",
            kind.name(),
            faults.partitions[kind as usize]
        ));
    }
    lines.extend([
        format!("  elections                  {:>14}", totals.elections),
        format!(
            "  entries committed          {:>14}",
            totals.committed_index_max
        ),
        format!(
            "  compactions / snapshots    {:>14}",
            format!("{} / {}", totals.compactions, totals.snapshots_installed)
        ),
        format!(
            "  applies ahead              {:>14}",
            format!(
                "{} ({} confirmed, {} abandoned, {} committed asynchronously)",
                totals.applies_ahead[0],
                totals.applies_ahead[1],
                totals.applies_ahead[2],
                totals.applies_ahead[3]
            )
        ),
        format!(
            "  follower applies waited    {:>14}",
            format!(
                "{} carried, {} alone",
                totals.follower_apply_waits[0], totals.follower_apply_waits[1]
            )
        ),
        format!(
            "  history compactions        {:>14}",
            format!(
                "{} ({} / {} refused)",
                totals.history_compactions,
                totals.history_compactions_refused[0],
                totals.history_compactions_refused[1]
            )
        ),
        format!(
            "  lease worlds               {:>14}",
            format!(
                "{} ({} keep-alives, {} revokes applied, {} expiry checks)",
                totals.leases[0], totals.leases[1], totals.leases[2], totals.leases[3]
            )
        ),
        format!(
            "  watch worlds               {:>14}",
            format!(
                "{} ({} windows, {} changes checked, {} compacted)",
                totals.watches[0], totals.watches[1], totals.watches[2], totals.watches[3]
            )
        ),
        format!(
            "  longest history kept       {:>14}",
            totals.history_changes_max
        ),
        format!(
            "  lease / stale reads        {:>14}",
            format!("{} / {}", totals.lease_reads, totals.stale_reads)
        ),
        format!(
            "  session retries            {:>14}",
            totals.session_retries
        ),
        format!(
            "  transfers / idle windows   {:>14}",
            format!(
                "{} / {}",
                totals.transfers_checked, totals.idle_windows_checked
            )
        ),
        format!(
            "  client ops answered        {:>14}",
            totals.client_operations_completed
        ),
        format!(
            "  client ops unknown outcome {:>14}",
            totals.client_operations_unknown
        ),
        format!(
            "  writes acknowledged        {:>14}",
            totals.acknowledged_writes
        ),
        format!(
            "  history ops checked        {:>14}",
            totals.history_operations
        ),
        format!(
            "  linearizability too costly {:>14}",
            report.linearizability_too_expensive_runs
        ),
    ]);
    if !report.recovery_ticks.is_empty() {
        let recovery = &report.recovery_ticks;
        lines.push(format!(
            "  recovery after heal (ticks) p50 {} p99 {} max {}",
            percentile(recovery, 50),
            percentile(recovery, 99),
            recovery[recovery.len() - 1]
        ));
    }
    let checker_line = if report.failures.is_empty() {
        "all checkers passed".to_string()
    } else {
        format!("{} seed(s) FAILED", report.failures.len())
    };
    lines.extend([
        format!("  checkers                   {checker_line:>14}"),
        format!("  wall time                  {:>13.2}s", seconds),
        format!(
            "  seeds/minute               {:>14.0}",
            report.seeds as f64 * 60.0 / seconds
        ),
        format!(
            "  simulated ticks/second     {:>14.0}",
            totals.ticks as f64 / seconds
        ),
    ]);
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_map_returns_results_in_range_order() {
        let squares = parallel_map(3..40, 4, &ProgressBar::hidden(), |value| value * value);
        assert_eq!(
            squares,
            (3..40u64).map(|value| value * value).collect::<Vec<_>>()
        );
    }

    #[test]
    fn percentiles_pick_from_sorted_values() {
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&values, 0), 1);
        assert_eq!(percentile(&values, 50), 51);
        assert_eq!(percentile(&values, 100), 100);
        assert_eq!(percentile(&[], 50), 0);
    }
}
