//! A leader's lease is exclusive (Raft dissertation, section 6.4.1: a
//! leader may serve reads without a quorum round only while no other
//! leader can have been elected). Whenever a node claims a lease (its core
//! answers `lease_read_index` with an index), no node may already have
//! been elected in a later term: that election moved a quorum past the
//! lease holder's term, so a read served from the lease may miss what the
//! new leader commits.
//!
//! Nor may a message be in flight that lets its receiver win such an
//! election whatever leases the others hold: a TimeoutNow of the lease
//! holder's term, or a vote request of the campaign it starts (voters
//! grant those although they still hear from the old leader, section 3.10
//! of the dissertation). Such a message may be delivered at any moment
//! within the lease; a leader that sent one cannot know when.
//!
//! This is stricter than `read_index_safety` and `linearizability`, which
//! see a lease that outlived its exclusivity only when a read arrives at
//! the old leader after the new one committed something, within the few
//! ticks the lease has left: here the claim itself is the violation,
//! whether or not a client happened to use it.
//!
//! An election counts from the moment its winner leads, except one that
//! a crash undoes: the only voter of its membership wins the moment it
//! votes for itself, before its new term and vote are written, and if it
//! crashes before that write it restarts in its old term, having sent
//! nothing in the new one (`make sim` seed 8765: node 4, the only voter,
//! was deposed by a learner re-added with a high term, won term 184 in the
//! same tick, crashed the next, restarted in term 52 and claimed a lease
//! in term 53). No node holds the term, so no quorum moved past any lease:
//! a restart in a term below an election its restarted node won as the
//! only voter forgets that election. An election with other voters is
//! never forgotten: their grants are durable where they were made.
//!
//! Without check-quorum there is no lease at all: followers then vote for
//! any candidate whenever its log is up to date, so nothing keeps a quorum
//! from electing someone else while a leader believes it holds one. A
//! leader of a cluster without check-quorum must never claim a lease
//! (`lease_needs_check_quorum`), whatever the history so far.

use std::collections::BTreeMap;

use raftgres::core::{NodeId, Term};

/// The elections anyone won that count.
#[derive(Debug, Default)]
pub struct LeaseExclusivity {
    /// By term: the winner, the tick, and whether it was the only voter.
    elections: BTreeMap<Term, Election>,
}

#[derive(Clone, Copy, Debug)]
struct Election {
    leader: NodeId,
    tick: u64,
    only_voter: bool,
}

impl LeaseExclusivity {
    /// `node` was elected leader of `term` at tick `now`, the only voter
    /// of its membership when `only_voter`.
    pub fn on_elected(&mut self, node: NodeId, term: Term, now: u64, only_voter: bool) {
        self.elections.entry(term).or_insert(Election {
            leader: node,
            tick: now,
            only_voter,
        });
    }

    /// `node` restarted in `term`, its durable term: an election it won
    /// as the only voter in a later term was undone by its crash.
    pub fn on_restart(&mut self, node: NodeId, term: Term) {
        self.elections.retain(|elected, election| {
            !(election.leader == node && election.only_voter && *elected > term)
        });
    }

    fn latest(&self) -> Option<(Term, NodeId, u64)> {
        self.elections
            .last_key_value()
            .map(|(term, election)| (*term, election.leader, election.tick))
    }

    /// Whether anyone was elected in a term after `term`.
    pub fn elected_after(&self, term: Term) -> bool {
        self.latest().is_some_and(|(latest, _, _)| latest > term)
    }

    /// `node`, in `term`, claims a lease at tick `now`, while
    /// `breaker_in_flight` is the latest term above `term` that a message
    /// in flight may elect its receiver in whatever the leases (see the
    /// module documentation), if any.
    pub fn on_lease_claimed(
        &self,
        node: NodeId,
        term: Term,
        now: u64,
        breaker_in_flight: Option<Term>,
    ) -> Result<(), String> {
        if let Some((later, leader, elected_at)) = self.latest().filter(|latest| latest.0 > term) {
            return Err(format!(
                "node {node} claims a lease in term {term} at tick {now}, but node {leader} \
                 was elected in term {later} at tick {elected_at}"
            ));
        }
        match breaker_in_flight {
            Some(later) if later > term => Err(format!(
                "node {node} claims a lease in term {term} at tick {now}, while a message \
                 that may elect its receiver in term {later} whatever the leases (a \
                 TimeoutNow or its campaign's vote request) is in flight"
            )),
            _ => Ok(()),
        }
    }
}

/// Checks a lease claim (`claimed`) of `node` in `term` against its
/// setting `check_quorum`.
pub fn lease_needs_check_quorum(
    node: NodeId,
    term: Term,
    check_quorum: bool,
    claimed: bool,
) -> Result<(), String> {
    if claimed && !check_quorum {
        return Err(format!(
            "node {node} claims a lease in term {term} with check-quorum off: its followers \
             vote for anyone, so no lease is exclusive"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_without_check_quorum_is_a_violation() {
        let error = lease_needs_check_quorum(NodeId(1), Term(2), false, true).unwrap_err();
        assert!(error.contains("check-quorum off"), "{error}");
        assert!(lease_needs_check_quorum(NodeId(1), Term(2), false, false).is_ok());
        assert!(lease_needs_check_quorum(NodeId(1), Term(2), true, true).is_ok());
    }

    #[test]
    fn a_lease_in_the_latest_elected_term_passes() {
        let mut checker = LeaseExclusivity::default();
        assert!(checker
            .on_lease_claimed(NodeId(1), Term(1), 5, None)
            .is_ok());
        checker.on_elected(NodeId(1), Term(3), 10, false);
        checker.on_elected(NodeId(2), Term(2), 11, false);
        assert!(!checker.elected_after(Term(3)) && checker.elected_after(Term(2)));
        assert!(checker
            .on_lease_claimed(NodeId(1), Term(3), 12, None)
            .is_ok());
        // A TimeoutNow of an older term elects no one now.
        assert!(checker
            .on_lease_claimed(NodeId(1), Term(3), 12, Some(Term(3)))
            .is_ok());
    }

    #[test]
    fn a_lease_claimed_after_a_later_election_is_a_violation() {
        let mut checker = LeaseExclusivity::default();
        checker.on_elected(NodeId(1), Term(3), 10, false);
        checker.on_elected(NodeId(2), Term(4), 20, false);
        let error = checker
            .on_lease_claimed(NodeId(1), Term(3), 22, None)
            .unwrap_err();
        assert!(
            error.contains("node 1 claims a lease in term 3 at tick 22")
                && error.contains("node 2 was elected in term 4 at tick 20"),
            "{error}"
        );
    }

    #[test]
    fn a_lease_claimed_while_a_timeout_now_is_in_flight_is_a_violation() {
        let mut checker = LeaseExclusivity::default();
        checker.on_elected(NodeId(1), Term(3), 10, false);
        let error = checker
            .on_lease_claimed(NodeId(1), Term(3), 40, Some(Term(4)))
            .unwrap_err();
        assert!(
            error.contains("node 1 claims a lease in term 3 at tick 40")
                && error.contains("elect its receiver in term 4"),
            "{error}"
        );
    }

    #[test]
    fn an_election_a_crash_undid_no_longer_counts() {
        // Seed 8765: the only voter wins term 184, crashes before writing
        // it, restarts in term 52 and wins term 53.
        let mut checker = LeaseExclusivity::default();
        checker.on_elected(NodeId(4), Term(52), 10, true);
        checker.on_elected(NodeId(4), Term(184), 20, true);
        checker.on_restart(NodeId(4), Term(52));
        checker.on_elected(NodeId(4), Term(53), 30, true);
        assert!(checker
            .on_lease_claimed(NodeId(4), Term(53), 31, None)
            .is_ok());
        // Elected with other voters, or restarted in the term it won, or
        // another node restarting: the election stands.
        for (only_voter, restarted, durable) in [
            (false, NodeId(4), Term(52)),
            (true, NodeId(4), Term(184)),
            (true, NodeId(5), Term(52)),
        ] {
            let mut checker = LeaseExclusivity::default();
            checker.on_elected(NodeId(4), Term(184), 20, only_voter);
            checker.on_restart(restarted, durable);
            assert!(checker
                .on_lease_claimed(NodeId(4), Term(53), 31, None)
                .is_err());
        }
    }
}
