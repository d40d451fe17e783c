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
    let missing = report.missing_exercises();
    assert!(missing.is_empty(), "not exercised: {}", missing.join("\n"));
}

#[test]
fn swarm_sweep_three_nodes() {
    sweep(3, 0..200, 2000);
}

#[test]
fn swarm_sweep_five_nodes() {
    sweep(5, 1000..1200, 2000);
}

/// Regressions from `make sim` (5 nodes, swarm, 10,000 ticks) where a
/// safety checker was wrong, not the product (docs/SIMULATOR.md, "A
/// failure of `make sim` with the MVCC store, the simulator's").
#[test]
fn make_sim_checker_regressions_pass() {
    let config = SimConfig::new(5, 10_000, "swarm");
    // The only voter won term 184 by its own vote, crashed before writing
    // it, restarted in term 52 and claimed a lease in term 53:
    // `lease_exclusivity` counted the election the crash undid.
    let outcome = raftgres_sim::world::World::new(config, 8765).run();
    assert!(outcome.violation.is_none(), "{:?}", outcome.violation);
}
