//! Proves the checkers can fail: each bug planted in the core (feature
//! `planted-bugs`) is found by the expected checkers within a bounded seed
//! sweep, with a fault profile tuned per bug, and the very same sweep
//! without the bug finds nothing.
#![cfg(feature = "planted-bugs")]

use indicatif::ProgressBar;
use raftgres_sim::config::SimConfig;
use raftgres_sim::sweep::run_sweep;

struct Hunt {
    bug: &'static str,
    config: SimConfig,
    seeds_max: u64,
    /// Checkers allowed to report the bug.
    checkers: &'static [&'static str],
}

fn hunts() -> Vec<Hunt> {
    let config = |nodes, ticks, faults: &str| SimConfig::new(nodes, ticks, faults);
    let unguarded = |mut config: SimConfig| {
        // Without pre-vote and check-quorum elections are more frequent and
        // restarted nodes vote at once, which is what these bugs need.
        config.pre_vote = false;
        config.check_quorum = false;
        config
    };
    let mut figure8 = unguarded(config(3, 5000, "figure8"));
    // One entry per message lets a new leader's old-term entries reach a
    // majority before its own blank entry does (the Figure 8 window).
    figure8.entries_per_message_max = 1;
    vec![
        Hunt {
            bug: "vote-without-log-check",
            config: config(3, 2000, "heavy"),
            seeds_max: 50,
            checkers: &[
                "leader_completeness",
                "state_machine_safety",
                "log_matching",
                "core_invariant",
            ],
        },
        Hunt {
            bug: "commit-previous-term",
            config: figure8,
            seeds_max: 200,
            checkers: &["leader_completeness", "state_machine_safety"],
        },
        Hunt {
            bug: "vote-before-durable",
            config: unguarded(config(3, 5000, "crashy")),
            seeds_max: 100,
            checkers: &["election_safety"],
        },
        Hunt {
            bug: "skip-truncate",
            config: config(5, 2000, "heavy"),
            seeds_max: 50,
            checkers: &[
                "log_matching",
                "state_machine_safety",
                "leader_completeness",
                "core_invariant",
            ],
        },
        Hunt {
            bug: "read-without-confirmation",
            config: config(3, 2000, "heavy"),
            seeds_max: 50,
            checkers: &["linearizability"],
        },
    ]
}

/// Runs seeds in batches until one fails; returns how many seeds it took.
fn seeds_to_find(hunt: &Hunt) -> Option<u64> {
    let mut config = hunt.config.clone();
    config.planted_bug = Some(hunt.bug.to_string());
    let batch = 8;
    let mut start = 0;
    while start < hunt.seeds_max {
        let end = (start + batch).min(hunt.seeds_max);
        let report = run_sweep(&config, start..end, 2, &ProgressBar::hidden());
        if let Some(failure) = report.failures.first() {
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
            return Some(failure.seed + 1);
        }
        start = end;
    }
    None
}

fn check_bug(bug: &str) {
    let hunt = hunts()
        .into_iter()
        .find(|hunt| hunt.bug == bug)
        .expect("a hunt for every bug");
    let seeds = seeds_to_find(&hunt)
        .unwrap_or_else(|| panic!("{bug} not found within {} seeds", hunt.seeds_max));
    eprintln!("{bug}: found after {seeds} seed(s)");
    // The same seeds with a correct core pass every checker.
    let report = run_sweep(&hunt.config, 0..seeds, 2, &ProgressBar::hidden());
    assert!(
        report.failures.is_empty(),
        "{bug} sweep without the bug failed: {:?}",
        report.failures
    );
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
fn every_planted_bug_has_a_hunt() {
    let names: Vec<&str> = hunts().iter().map(|hunt| hunt.bug).collect();
    assert_eq!(names, raftgres_sim::planted_bug_names());
}
