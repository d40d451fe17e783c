//! A leadership transfer on a healthy cluster hands leadership to its
//! target in the very next term (Raft dissertation, section 3.10: the
//! leader brings the target's log up to date and sends it TimeoutNow; the
//! target campaigns at once, its vote requests pass leader stickiness
//! because they say they come from a transfer, and its log is as long as
//! anyone's). Once the cluster has recovered, the world asks the leader to
//! hand leadership to another node; the next leader must be that node, in
//! the term after the one the request was made in, within `ticks_max`
//! ticks. A transfer whose vote requests voters ignore, that never sends
//! TimeoutNow, or that lets another node win fails here.
//!
//! In a world whose shortest election timeout is within a healed vote
//! round trip, the target's first campaign may time out before its votes
//! return (Raft's timing requirement, section 5.6, does not hold there);
//! the target must then still be the next leader, in a later term.

use raftgres::core::{NodeId, Term};

/// A transfer the world asked for, not yet done.
#[derive(Clone, Copy, Debug)]
struct Pending {
    leader: NodeId,
    target: NodeId,
    term: Term,
    requested_at: u64,
}

/// Watches at most one transfer at a time.
#[derive(Debug)]
pub struct TransferLiveness {
    ticks_max: u64,
    /// Whether the target may win in a term after the next.
    later_terms_allowed: bool,
    pending: Option<Pending>,
    /// Transfers done.
    completed: u64,
}

impl TransferLiveness {
    /// A checker allowing `ticks_max` ticks per transfer, and, with
    /// `later_terms_allowed`, the target's win in a term after the next.
    pub fn new(ticks_max: u64, later_terms_allowed: bool) -> TransferLiveness {
        TransferLiveness {
            ticks_max,
            later_terms_allowed,
            pending: None,
            completed: 0,
        }
    }

    /// The world asked `leader`, leading in `term`, at `tick`, to hand
    /// leadership to `target`.
    pub fn on_requested(&mut self, leader: NodeId, target: NodeId, term: Term, tick: u64) {
        self.pending = Some(Pending {
            leader,
            target,
            term,
            requested_at: tick,
        });
    }

    /// Transfers that completed.
    pub fn completed(&self) -> u64 {
        self.completed
    }

    /// Node `node` became leader in `term` at `tick`.
    pub fn on_leader(&mut self, node: NodeId, term: Term, tick: u64) -> Result<(), String> {
        let Some(pending) = self.pending else {
            return Ok(());
        };
        if term <= pending.term {
            return Ok(());
        }
        self.pending = None;
        if node == pending.target && (term == pending.term.next() || self.later_terms_allowed) {
            self.completed += 1;
            return Ok(());
        }
        Err(format!(
            "node {} was asked at tick {} to hand leadership to node {} in term {}; \
             node {node} became leader in term {term} at tick {tick} instead",
            pending.leader,
            pending.requested_at,
            pending.target,
            pending.term.next()
        ))
    }

    /// Checks at `tick` that the transfer asked for is not overdue.
    pub fn check(&self, tick: u64) -> Result<(), String> {
        match self.pending {
            Some(pending) if tick - pending.requested_at > self.ticks_max => Err(format!(
                "node {} was asked at tick {} to hand leadership to node {}; no new \
                 leader after {} ticks",
                pending.leader,
                pending.requested_at,
                pending.target,
                tick - pending.requested_at
            )),
            _ => Ok(()),
        }
    }

    /// Whether a transfer is being watched.
    pub fn pending(&self) -> bool {
        self.pending.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requested() -> TransferLiveness {
        let mut checker = TransferLiveness::new(50, false);
        checker.on_requested(NodeId(1), NodeId(3), Term(7), 1_000);
        checker
    }

    #[test]
    fn the_target_leading_in_the_next_term_completes_the_transfer() {
        let mut checker = requested();
        assert!(checker.on_leader(NodeId(1), Term(7), 1_001).is_ok());
        assert!(checker.on_leader(NodeId(3), Term(8), 1_010).is_ok());
        assert_eq!(checker.completed(), 1);
        assert!(!checker.pending());
        assert!(checker.check(5_000).is_ok());
    }

    #[test]
    fn another_leader_or_a_later_term_is_a_violation() {
        let error = requested()
            .on_leader(NodeId(2), Term(8), 1_010)
            .unwrap_err();
        assert!(error.contains("node 2 became leader in term 8"), "{error}");
        let error = requested()
            .on_leader(NodeId(3), Term(9), 1_010)
            .unwrap_err();
        assert!(error.contains("in term 8"), "{error}");
    }

    #[test]
    fn with_timeouts_within_a_round_trip_the_target_may_win_later_but_must_win() {
        let mut checker = TransferLiveness::new(50, true);
        checker.on_requested(NodeId(1), NodeId(3), Term(7), 1_000);
        assert!(checker.on_leader(NodeId(3), Term(9), 1_020).is_ok());
        assert_eq!(checker.completed(), 1);
        let mut checker = TransferLiveness::new(50, true);
        checker.on_requested(NodeId(1), NodeId(3), Term(7), 1_000);
        let error = checker.on_leader(NodeId(2), Term(9), 1_020).unwrap_err();
        assert!(error.contains("node 2 became leader in term 9"), "{error}");
    }

    #[test]
    fn no_new_leader_within_the_bound_is_a_violation() {
        let checker = requested();
        assert!(checker.check(1_050).is_ok());
        let error = checker.check(1_051).unwrap_err();
        assert!(error.contains("no new leader after 51 ticks"), "{error}");
    }
}
