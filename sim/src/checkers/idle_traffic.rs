//! An idle, healthy cluster costs its heartbeats and nothing more (what an
//! operator pays for a cluster that serves nothing: etcd's leader sends one
//! heartbeat per follower per heartbeat interval and hears one answer).
//! At the end of the run the clients stop for a while; once nothing is in
//! flight, the checker counts every message sent during the last `window`
//! ticks. If the leader and the terms stayed the same throughout, at most
//! one heartbeat per follower per `heartbeat_ticks`, its answer, and one
//! more exchange per follower (the commit index of the last write) may be
//! sent. A leader that heartbeats every tick, replicates what a follower
//! already has, or chatters in any other way fails here.

/// Counts the messages of the final quiet window.
#[derive(Debug)]
pub struct IdleTraffic {
    window_start: u64,
    window_ticks: u64,
    heartbeat_ticks: u64,
    followers: u64,
    /// Armed when the window opened on a quiet cluster, with the leader
    /// and term then.
    armed: Option<(u64, u64)>,
    messages: u64,
}

impl IdleTraffic {
    /// A checker of the last `window_ticks` of a run of `ticks` ticks, on
    /// a cluster of `nodes` nodes heartbeating every `heartbeat_ticks`.
    pub fn new(ticks: u64, window_ticks: u64, heartbeat_ticks: u64, nodes: u64) -> IdleTraffic {
        IdleTraffic {
            window_start: ticks.saturating_sub(window_ticks),
            window_ticks,
            heartbeat_ticks: heartbeat_ticks.max(1),
            followers: nodes.saturating_sub(1),
            armed: None,
            messages: 0,
        }
    }

    /// The first tick of the window.
    pub fn window_start(&self) -> u64 {
        self.window_start
    }

    /// The window opens on a quiet cluster led by `leader` in `term`
    /// (nothing in flight, no request held anywhere).
    pub fn arm(&mut self, leader: u64, term: u64) {
        self.armed = Some((leader, term));
    }

    /// Whether the window counts (it opened on a quiet cluster and stayed
    /// so).
    pub fn armed(&self) -> bool {
        self.armed.is_some()
    }

    /// A message was sent at `tick`.
    pub fn on_send(&mut self, tick: u64) {
        if self.armed.is_some() && tick >= self.window_start {
            self.messages += 1;
        }
    }

    /// A node changed role or term: the cluster was not quiet, the window
    /// does not count.
    pub fn on_role_change(&mut self) {
        self.armed = None;
    }

    /// The most messages the window may see.
    pub fn messages_max(&self) -> u64 {
        let rounds = self.window_ticks.div_ceil(self.heartbeat_ticks) + 1;
        2 * (rounds + 1) * self.followers
    }

    /// Checks the count at the end of the run.
    pub fn check(&self) -> Result<(), String> {
        match self.armed {
            Some((leader, term)) if self.messages > self.messages_max() => Err(format!(
                "an idle cluster led by node {leader} in term {term} sent {} messages in its \
                 last {} ticks, more than the {} its heartbeats need",
                self.messages,
                self.window_ticks,
                self.messages_max()
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_and_their_answers_pass() {
        let mut checker = IdleTraffic::new(1_000, 40, 2, 3);
        checker.arm(1, 5);
        // 20 rounds, 2 followers, request and answer each.
        for tick in 960..1_000 {
            if tick % 2 == 0 {
                for _ in 0..4 {
                    checker.on_send(tick);
                }
            }
        }
        assert!(checker.check().is_ok());
    }

    #[test]
    fn heartbeats_every_tick_are_a_violation() {
        let mut checker = IdleTraffic::new(1_000, 40, 2, 3);
        checker.arm(1, 5);
        for tick in 960..1_000 {
            for _ in 0..4 {
                checker.on_send(tick);
            }
        }
        let error = checker.check().unwrap_err();
        assert!(error.contains("sent 160 messages"), "{error}");
    }

    #[test]
    fn a_window_with_a_new_leader_or_not_armed_does_not_count() {
        let mut checker = IdleTraffic::new(1_000, 40, 2, 3);
        for tick in 960..1_000 {
            checker.on_send(tick);
        }
        assert!(checker.check().is_ok());
        checker.arm(1, 5);
        for tick in 960..1_000 {
            for _ in 0..10 {
                checker.on_send(tick);
            }
        }
        checker.on_role_change();
        assert!(checker.check().is_ok());
    }
}
