//! Proves the checkers can fail: each bug planted in the core or the
//! pipeline (feature `planted-bugs`) is found under the default swarm (`--faults swarm`,
//! 10,000 ticks) on 3 and on 5 nodes within the seed range recorded for
//! it, and the very same seeds without the bug pass every checker. The
//! recorded ranges are the seeds `make sim-hunt` needed (its full proof
//! sweeps 0..500 for every bug); a change to the swarm's draws may move
//! them, and `make sim-hunt` prints the new ones. Run with `--release`
//! (`make test` does): 10,000-tick worlds are slow in a debug build.
#![cfg(feature = "planted-bugs")]

use indicatif::ProgressBar;
use raftgres_sim::config::SimConfig;
use raftgres_sim::sweep::run_sweep;

/// Ticks per world: the default swarm's.
const TICKS: u64 = 10_000;

struct Hunt {
    bug: &'static str,
    /// Seeds `make sim-hunt` needed on 3 and on 5 nodes.
    seeds_needed: [u64; 2],
    /// Checkers allowed to report the bug.
    checkers: &'static [&'static str],
}

fn hunts() -> Vec<Hunt> {
    vec![
        Hunt {
            bug: "vote-without-log-check",
            seeds_needed: [1, 1],
            checkers: &[
                "leader_completeness",
                "state_machine_safety",
                "log_matching",
                "core_invariant",
            ],
        },
        Hunt {
            bug: "commit-previous-term",
            seeds_needed: [1, 1],
            checkers: &[
                "leader_commit_rule",
                "leader_completeness",
                "state_machine_safety",
            ],
        },
        Hunt {
            bug: "vote-before-durable",
            seeds_needed: [2, 6],
            checkers: &["single_vote", "election_safety", "honest_peers"],
        },
        Hunt {
            bug: "skip-truncate",
            seeds_needed: [1, 1],
            checkers: &[
                "log_matching",
                "state_machine_safety",
                "leader_completeness",
                "core_invariant",
                // A follower that keeps a conflicting suffix refuses every
                // append past it: on 5 nodes the first failing seed is a
                // cluster that stops committing.
                "liveness",
            ],
        },
        Hunt {
            bug: "read-without-confirmation",
            seeds_needed: [1, 1],
            checkers: &["read_index_safety", "linearizability"],
        },
        Hunt {
            bug: "forget-vote-on-step-down",
            seeds_needed: [1, 1],
            checkers: &["single_vote", "election_safety"],
        },
        Hunt {
            bug: "apply-before-durable",
            seeds_needed: [1, 1],
            checkers: &["apply_after_durable", "core_invariant"],
        },
        Hunt {
            bug: "read-confirmed-by-old-round",
            seeds_needed: [7, 20],
            checkers: &["read_index_safety", "linearizability"],
        },
        Hunt {
            bug: "lease-by-tick-count",
            seeds_needed: [2, 2],
            checkers: &[
                "clock_ticks",
                "lease_exclusivity",
                "read_index_safety",
                "linearizability",
            ],
        },
        Hunt {
            bug: "lease-after-timeout-now",
            seeds_needed: [16, 7],
            checkers: &["lease_exclusivity", "read_index_safety", "linearizability"],
        },
        Hunt {
            bug: "snapshot-before-hard-state",
            seeds_needed: [122, 122],
            checkers: &["crash_recovery"],
        },
        Hunt {
            bug: "session-expiry-at-batch-end",
            seeds_needed: [2, 1],
            checkers: &["replica_rows", "exactly_once", "linearizability"],
        },
        Hunt {
            bug: "covered-proposals-lost",
            seeds_needed: [1, 4],
            checkers: &[
                "client_outcomes",
                "held_requests",
                "gauges",
                "linearizability",
            ],
        },
        Hunt {
            bug: "read-contexts-restart",
            seeds_needed: [18, 11],
            checkers: &["read_index_safety", "linearizability"],
        },
        Hunt {
            bug: "read-beyond-stored-applied",
            seeds_needed: [19, 19],
            checkers: &["linearizability", "read_index_safety"],
        },
        Hunt {
            bug: "snapshot-labelled-at-log-start",
            seeds_needed: [2, 1],
            checkers: &[
                "corrupt_durable_data",
                "replica_rows",
                "revisions",
                "state_machine_safety",
            ],
        },
        Hunt {
            bug: "peer-link-gives-up",
            seeds_needed: [2, 1],
            checkers: &["liveness", "read_liveness"],
        },
        Hunt {
            bug: "wake-while-write-queued",
            seeds_needed: [1, 1],
            checkers: &["wake_up"],
        },
        Hunt {
            bug: "confirm-ahead-early",
            seeds_needed: [1, 1],
            checkers: &[
                "core_invariant",
                "apply_after_durable",
                "state_machine_safety",
                "replica_rows",
            ],
        },
    ]
}

/// Runs `config`'s seeds `0..seeds_max` with `hunt.bug` planted; returns
/// how many seeds it took to find it.
fn seeds_to_find(hunt: &Hunt, config: &SimConfig, seeds_max: u64) -> Option<u64> {
    let mut config = config.clone();
    config.planted_bug = Some(hunt.bug.to_string());
    let report = run_sweep(&config, 0..seeds_max, 2, &ProgressBar::hidden());
    let failure = report.failures.first()?;
    assert!(
        hunt.checkers.contains(&failure.violation.checker),
        "{} was reported by {}: {}",
        hunt.bug,
        failure.violation.checker,
        failure.violation.message
    );
    assert!(
        failure
            .replay
            .contains(&format!("--planted-bug {}", hunt.bug)),
        "{}",
        failure.replay
    );
    Some(failure.seed + 1)
}

fn check_bug(bug: &str) {
    let hunt = hunts()
        .into_iter()
        .find(|hunt| hunt.bug == bug)
        .expect("a hunt for every bug");
    for (nodes, seeds_max) in [3, 5].into_iter().zip(hunt.seeds_needed) {
        let config = SimConfig::new(nodes, TICKS, "swarm");
        let seeds = seeds_to_find(&hunt, &config, seeds_max).unwrap_or_else(|| {
            panic!("{bug} not found on {nodes} nodes within the recorded {seeds_max} seeds")
        });
        eprintln!("{bug}: found on {nodes} nodes after {seeds} seed(s)");
        // The same seeds with a correct core pass every checker.
        let report = run_sweep(&config, 0..seeds, 2, &ProgressBar::hidden());
        assert!(
            report.failures.is_empty(),
            "{bug} sweep on {nodes} nodes without the bug failed: {:?}",
            report.failures
        );
    }
}

#[test]
fn finds_vote_without_log_check() {
    check_bug("vote-without-log-check");
}

#[test]
fn finds_commit_previous_term() {
    check_bug("commit-previous-term");
}

#[test]
fn finds_vote_before_durable() {
    check_bug("vote-before-durable");
}

#[test]
fn finds_skip_truncate() {
    check_bug("skip-truncate");
}

#[test]
fn finds_read_without_confirmation() {
    check_bug("read-without-confirmation");
}

#[test]
fn finds_forget_vote_on_step_down() {
    check_bug("forget-vote-on-step-down");
}

#[test]
fn finds_apply_before_durable() {
    check_bug("apply-before-durable");
}

#[test]
fn finds_read_confirmed_by_old_round() {
    check_bug("read-confirmed-by-old-round");
}

#[test]
fn finds_peer_link_gives_up() {
    check_bug("peer-link-gives-up");
}

#[test]
fn finds_lease_by_tick_count() {
    check_bug("lease-by-tick-count");
}

#[test]
fn finds_lease_after_timeout_now() {
    check_bug("lease-after-timeout-now");
}

#[test]
fn finds_snapshot_before_hard_state() {
    check_bug("snapshot-before-hard-state");
}

#[test]
fn finds_session_expiry_at_batch_end() {
    check_bug("session-expiry-at-batch-end");
}

#[test]
fn finds_covered_proposals_lost() {
    check_bug("covered-proposals-lost");
}

#[test]
fn finds_read_contexts_restart() {
    check_bug("read-contexts-restart");
}

#[test]
fn finds_read_beyond_stored_applied() {
    check_bug("read-beyond-stored-applied");
}

#[test]
fn finds_snapshot_labelled_at_log_start() {
    check_bug("snapshot-labelled-at-log-start");
}

#[test]
fn finds_confirm_ahead_early() {
    check_bug("confirm-ahead-early");
}

#[test]
fn every_planted_bug_has_a_hunt() {
    let mut names: Vec<&str> = hunts().iter().map(|hunt| hunt.bug).collect();
    names.sort_unstable();
    let mut planted = raftgres_sim::planted_bug_names();
    planted.sort_unstable();
    assert_eq!(names, planted);
}

#[test]
fn finds_wake_while_write_queued() {
    check_bug("wake-while-write-queued");
}
