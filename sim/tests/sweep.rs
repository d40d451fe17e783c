//! The fixed sweep `make test` runs: swarm-profile seeds on 3- and 5-node
//! clusters must pass every checker (safety on every step, durability,
//! linearizability and liveness on every run), and the sweep must really
//! exercise faults, elections, snapshots and clients. The large sweep is
//! `make sim` (see docs/SIMULATOR.md).

use indicatif::ProgressBar;
use raftgres_sim::config::SimConfig;
use raftgres_sim::sweep::run_sweep;

fn sweep(nodes: usize, seeds: std::ops::Range<u64>, ticks: u64) {
    let config = SimConfig::new(nodes, ticks, "swarm");
    let report = run_sweep(&config, seeds, 2, &ProgressBar::hidden());
    let failures: Vec<String> = report
        .failures
        .iter()
        .map(|failure| format!("{:?}\n  replay: {}", failure.violation, failure.replay))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let totals = &report.totals;
    assert!(
        totals.faults.crashes > 0 && totals.faults.restarts > 0,
        "{totals:?}"
    );
    assert!(
        totals.faults.partitions.iter().all(|count| *count > 0),
        "every partition kind: {totals:?}"
    );
    assert!(
        totals.faults.messages_lost > 0 && totals.faults.messages_duplicated > 0,
        "{totals:?}"
    );
    assert!(
        totals.faults.disk_errors > 0 && totals.faults.pauses > 0,
        "{totals:?}"
    );
    assert!(
        totals.snapshots_installed > 0 && totals.compactions > 0,
        "{totals:?}"
    );
    assert!(
        totals.elections >= report.seeds && totals.acknowledged_writes > 10 * report.seeds,
        "{totals:?}"
    );
    assert!(
        totals.client_operations_unknown > 0,
        "unknown outcomes must reach the linearizability checker"
    );
    let faults = &totals.faults;
    assert!(
        faults.storage_errors > 0
            && faults.commits_unknown > 0
            && faults.postgres_crashes > 0
            && faults.applies_lost > 0
            && faults.hand_offs > 0,
        "what Postgres does to a node: {faults:?}"
    );
    assert!(
        totals.session_retries > 0 && totals.lease_reads > 0 && totals.stale_reads > 0,
        "every client kind: {totals:?}"
    );
    assert_eq!(
        report.recovery_ticks.len() as u64,
        report.seeds,
        "every seed recovers after healing"
    );
    assert!(
        totals.transfers_checked > report.seeds / 2
            && totals.idle_windows_checked > report.seeds / 2,
        "most runs end with a checked transfer and a counted idle window: {totals:?}"
    );
}

#[test]
fn swarm_sweep_three_nodes() {
    sweep(3, 0..200, 2000);
}

#[test]
fn swarm_sweep_five_nodes() {
    sweep(5, 1000..1200, 2000);
}
