//! Leader stickiness (Raft dissertation, sections 4.2.3 and 9.6), with
//! check-quorum on or off: a node that heard from the leader of its term
//! less than `election_ticks_min` of its own ticks ago ignores vote
//! requests of later terms, unless the campaign follows a leadership
//! transfer. A node that rejoins after a partition, or one removed from
//! the membership that never learnt it, then cannot depose a leader that
//! still reaches a quorum, and (with check-quorum) a leader's lease (three
//! quarters of `election_ticks_min` after a quorum acknowledged it) rests
//! on it: no voter of that quorum helps elect anyone else meanwhile.
//!
//! The world notes, before a node takes a real vote request of a later
//! term without the transfer flag, whether the node follows a leader it
//! heard from recently; if the node then grants that vote, stickiness
//! failed. (A lease that outlives stickiness is judged again, by its
//! consequence, in `lease_exclusivity`.)

use raftgres::core::{NodeId, Term};

/// A vote request reaching a node in its leader's lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StickyVoter {
    /// The node asked.
    pub voter: NodeId,
    /// The leader it follows.
    pub leader: NodeId,
    /// Ticks since it last heard from that leader.
    pub heard_ticks_ago: u64,
    /// Its `election_ticks_min`.
    pub election_ticks_min: u64,
    /// The candidate.
    pub candidate: NodeId,
    /// The candidate's term.
    pub term: Term,
}

impl StickyVoter {
    /// Whether a node in this state must ignore the request: a leader
    /// known, heard from within `election_ticks_min`.
    pub fn applies(leader: Option<NodeId>, heard_ticks_ago: u64, election_ticks_min: u64) -> bool {
        leader.is_some() && heard_ticks_ago < election_ticks_min
    }

    /// Checks the voter's vote after it took the request: `voted_for` in
    /// `term`.
    pub fn check(&self, term: Term, voted_for: Option<NodeId>) -> Result<(), String> {
        if term == self.term && voted_for == Some(self.candidate) {
            return Err(format!(
                "node {} voted for node {} in term {} though it heard from its leader, node {}, \
                 {} ticks before (stickiness lasts {} ticks)",
                self.voter,
                self.candidate,
                self.term,
                self.leader,
                self.heard_ticks_ago,
                self.election_ticks_min
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voter() -> StickyVoter {
        StickyVoter {
            voter: NodeId(2),
            leader: NodeId(1),
            heard_ticks_ago: 3,
            election_ticks_min: 10,
            candidate: NodeId(3),
            term: Term(5),
        }
    }

    #[test]
    fn stickiness_applies_only_to_a_follower_of_a_recent_leader() {
        assert!(StickyVoter::applies(Some(NodeId(1)), 9, 10));
        assert!(!StickyVoter::applies(Some(NodeId(1)), 10, 10));
        assert!(!StickyVoter::applies(None, 0, 10));
    }

    #[test]
    fn a_vote_granted_in_the_lease_fails() {
        let error = voter().check(Term(5), Some(NodeId(3))).unwrap_err();
        assert!(
            error.contains("node 2 voted for node 3 in term 5"),
            "{error}"
        );
    }

    #[test]
    fn an_ignored_request_passes() {
        assert_eq!(voter().check(Term(4), Some(NodeId(1))), Ok(()));
        assert_eq!(voter().check(Term(5), None), Ok(()));
    }
}
