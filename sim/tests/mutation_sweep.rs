//! The simulator as the test of a mutation run (`make mutants`): the
//! default swarm (200 seeds on 3 nodes and 200 on 5, 10,000 ticks each)
//! must pass every checker and exercise what a sweep must exercise
//! (`RunStats::missing_exercises`, the same demand `make test`'s sweep
//! makes). cargo-mutants builds each mutant of the core
//! and runs this test alone; a mutant it does not fail survived the
//! simulator. Skipped unless `RAFTGRES_MUTATION_SWEEP` is set, because it
//! takes seconds in a release build and minutes in a debug one
//! (`sweep.rs` is `make test`'s sweep). `RAFTGRES_MUTATION_SEEDS`
//! overrides the 200 seeds per cluster size.

use indicatif::ProgressBar;
use raftgres_sim::config::SimConfig;
use raftgres_sim::stats::RunStats;
use raftgres_sim::sweep::run_sweep;

/// Seeds run between two looks for a failure: a caught mutant stops early.
const BATCH_SEEDS: u64 = 20;

#[test]
fn default_swarm_passes_every_checker_on_three_and_five_nodes() {
    if std::env::var_os("RAFTGRES_MUTATION_SWEEP").is_none() {
        eprintln!("skipped: set RAFTGRES_MUTATION_SWEEP=1 (make mutants does)");
        return;
    }
    let seeds: u64 = std::env::var("RAFTGRES_MUTATION_SEEDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(200);
    for nodes in [3, 5] {
        let config = SimConfig::new(nodes, 10_000, "swarm");
        let mut totals = RunStats::default();
        let mut recovered = 0;
        let mut start = 0;
        while start < seeds {
            let end = (start + BATCH_SEEDS).min(seeds);
            let report = run_sweep(&config, start..end, 2, &ProgressBar::hidden());
            totals += report.totals;
            recovered += report.recovered_runs;
            if let Some(failure) = report.failures.first() {
                panic!(
                    "{} nodes seed {}: {}: {}\n  replay: {}",
                    nodes,
                    failure.seed,
                    failure.violation.checker,
                    failure.violation.message,
                    failure.replay
                );
            }
            start = end;
        }
        // A mutant that switches a behaviour off (hand-offs, snapshots,
        // lease reads) may break no safety rule; the sweep's own demand
        // that it be exercised catches it.
        let missing = totals.missing_exercises(seeds, recovered);
        assert!(
            missing.is_empty(),
            "{nodes} nodes: not exercised: {}",
            missing.join("\n")
        );
    }
}
