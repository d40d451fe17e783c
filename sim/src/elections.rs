//! Election timing, as measured in section 9.3 of the Raft paper (Figure
//! 16): on a quiet cluster, crash the leader at a uniformly random point of
//! its heartbeat interval (half the minimum election timeout, as in the
//! paper) and count the ticks until another node becomes leader. Repeated
//! over many trials for each election timeout range, it gives the
//! distribution of the time to replace a crashed leader.

use indicatif::ProgressBar;
use rand::Rng;

use crate::config::SimConfig;
use crate::sweep::{parallel_map, percentile};
use crate::world::{rng_stream, World};

/// The distribution of leader replacement times for one timeout range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElectionStatistics {
    /// Election timeout range, in ticks (`min..max`).
    pub timeout_ticks: (u64, u64),
    /// Trials run.
    pub trials: u64,
    /// Trials in which no new leader emerged within the bound.
    pub trials_without_leader: u64,
    /// Ticks from the crash to the new leader, sorted.
    pub replacement_ticks: Vec<u64>,
}

impl ElectionStatistics {
    /// (min, p50, p90, p99, max) of the replacement times.
    pub fn summary(&self) -> (u64, u64, u64, u64, u64) {
        let values = &self.replacement_ticks;
        (
            values.first().copied().unwrap_or(0),
            percentile(values, 50),
            percentile(values, 90),
            percentile(values, 99),
            values.last().copied().unwrap_or(0),
        )
    }
}

/// One trial: the ticks until a new leader replaces the crashed one, or
/// `None` if none did within a generous bound.
pub fn replacement_ticks(nodes: usize, timeout_ticks: (u64, u64), seed: u64) -> Option<u64> {
    let (election_ticks_min, election_ticks_max) = timeout_ticks;
    let mut config = SimConfig::new(nodes, u64::MAX, "none");
    config.clients = 0;
    config.election_ticks_min = election_ticks_min;
    config.election_ticks_max = election_ticks_max;
    config.heartbeat_ticks = (election_ticks_min / 2).max(1);
    config.liveness_ticks_max = u64::MAX / 4;
    let mut world = World::new(config, seed);
    world.disable_faults();
    let bound = 200 * election_ticks_max;
    // Wait for a leader that has held on for a while, so the cluster is
    // quiet and every follower has heard from it.
    let mut stable_since = None;
    let leader = loop {
        world.step_tick();
        if world.now() > bound {
            return None;
        }
        match (world.leader(), stable_since) {
            (Some(leader), Some((since_leader, since))) if since_leader == leader => {
                if world.now() - since >= 2 * election_ticks_max {
                    break leader;
                }
            }
            (Some(leader), _) => stable_since = Some((leader, world.now())),
            (None, _) => stable_since = None,
        }
    };
    let mut rng = rng_stream(seed, 7);
    let heartbeat_ticks = (election_ticks_min / 2).max(1);
    for _ in 0..rng.gen_range(0..heartbeat_ticks) {
        world.step_tick();
    }
    world.crash_for(leader.0 as usize - 1, u64::MAX / 4);
    let crashed_at = world.now();
    loop {
        world.step_tick();
        if let Some(new_leader) = world.leader() {
            if new_leader != leader {
                return Some(world.now() - crashed_at);
            }
        }
        if world.now() - crashed_at > bound {
            return None;
        }
    }
}

/// Runs `trials` trials for `timeout_ticks` on `threads` threads.
pub fn measure(
    nodes: usize,
    timeout_ticks: (u64, u64),
    trials: u64,
    threads: usize,
    progress: &ProgressBar,
) -> ElectionStatistics {
    let results = parallel_map(0..trials, threads, progress, |seed| {
        replacement_ticks(nodes, timeout_ticks, seed)
    });
    let mut replacement_ticks: Vec<u64> = results.iter().flatten().copied().collect();
    replacement_ticks.sort_unstable();
    ElectionStatistics {
        timeout_ticks,
        trials,
        trials_without_leader: results.iter().filter(|result| result.is_none()).count() as u64,
        replacement_ticks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crashed_leader_is_replaced_after_about_one_election_timeout() {
        let statistics = measure(3, (10, 20), 20, 2, &ProgressBar::hidden());
        assert_eq!(statistics.trials_without_leader, 0);
        let (min, p50, _, _, max) = statistics.summary();
        // Followers wait at least the minimum timeout minus the part of the
        // heartbeat interval that had elapsed, then need a vote round trip.
        assert!(min >= 5, "min {min}");
        assert!(p50 <= 40 && max <= 200, "p50 {p50} max {max}");
    }
}
