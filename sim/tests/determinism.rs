//! Proves a run is a function of (seed, configuration): the same seed gives
//! the same event trace, bit for bit, and different seeds give different
//! runs.

use raftgres_sim::config::SimConfig;
use raftgres_sim::world::World;

fn trace_hash(config: &SimConfig, seed: u64) -> u64 {
    let outcome = World::new(config.clone(), seed).run();
    assert!(
        outcome.violation.is_none(),
        "seed {seed}: {:?}",
        outcome.violation
    );
    assert!(
        outcome.stats.trace_events > 1000,
        "seed {seed} did too little to compare"
    );
    outcome.trace_hash
}

#[test]
fn same_seed_gives_the_same_trace_hash() {
    for faults in ["swarm", "heavy"] {
        let config = SimConfig::new(5, 1500, faults);
        for seed in [1, 42] {
            assert_eq!(
                trace_hash(&config, seed),
                trace_hash(&config, seed),
                "{faults} seed {seed}"
            );
        }
    }
}

#[test]
fn keeping_the_readable_trace_does_not_change_the_run() {
    let mut config = SimConfig::new(3, 1000, "default");
    let quiet = trace_hash(&config, 7);
    config.trace = true;
    let outcome = World::new(config, 7).run();
    assert_eq!(outcome.trace_hash, quiet);
    let text = outcome.trace_text.expect("trace kept");
    for kind in ["send", "durable", "role", "invoke", "return"] {
        assert!(text.contains(kind), "trace lacks {kind} events");
    }
}

#[test]
fn different_seeds_give_different_traces() {
    let config = SimConfig::new(3, 1000, "default");
    let hashes: std::collections::BTreeSet<u64> =
        (0..8).map(|seed| trace_hash(&config, seed)).collect();
    assert_eq!(hashes.len(), 8);
}
