//! A leader cut off from a majority steps down (check-quorum, Raft
//! dissertation 6.2): with `check_quorum` on, a leader that heard from no
//! majority of its voters (of both voter sets while joint) for two
//! check-quorum periods is a leader no longer, so that clients stop
//! waiting on it and its lease cannot outlive its followers' patience.
//! After every step of such a leader, some majority of its voters was
//! heard from (any message delivered to it) within
//! `3 * election_ticks_max` world ticks, or it became leader, or its
//! voters changed, that recently (two periods of `election_ticks_min`
//! node ticks, with room for clock drift).

use std::collections::BTreeMap;

use raftgres::core::{Membership, NodeId, Term};

/// When each node last heard from each other, and when each leader's
/// term began, in world ticks.
#[derive(Debug, Default)]
pub struct QuorumContact {
    /// By receiver: the tick each sender was last heard at.
    heard: BTreeMap<NodeId, BTreeMap<NodeId, u64>>,
    /// By leader: the term it leads and its voters, and the tick it was
    /// first seen leading them.
    led_since: BTreeMap<NodeId, (Term, Membership, u64)>,
}

impl QuorumContact {
    /// A message from `sender` reached `receiver` (and was heard) at `now`.
    pub fn heard(&mut self, receiver: NodeId, sender: NodeId, now: u64) {
        self.heard.entry(receiver).or_default().insert(sender, now);
    }

    /// Checks leader `leader` of `term` with `membership` at `now`: some
    /// majority of each voter set was heard within `bound` ticks, or it
    /// leads these voters for less than that.
    pub fn check(
        &mut self,
        leader: NodeId,
        term: Term,
        membership: &Membership,
        now: u64,
        bound: u64,
    ) -> Result<(), String> {
        let same_voters = |led: &Membership| {
            led.voters == membership.voters && led.voters_outgoing == membership.voters_outgoing
        };
        let since = match self.led_since.get(&leader) {
            Some((led_term, led, since)) if *led_term == term && same_voters(led) => *since,
            _ => {
                self.led_since
                    .insert(leader, (term, membership.clone(), now));
                now
            }
        };
        let heard = self.heard.get(&leader);
        let contact = |voters: &std::collections::BTreeSet<NodeId>| {
            let mut times: Vec<u64> = voters
                .iter()
                .map(|voter| {
                    if *voter == leader {
                        now
                    } else {
                        heard
                            .and_then(|heard| heard.get(voter))
                            .copied()
                            .unwrap_or(0)
                    }
                })
                .collect();
            times.sort_unstable_by(|a, b| b.cmp(a));
            times.get(voters.len() / 2).copied().unwrap_or(now)
        };
        let mut quorum_heard = contact(&membership.voters);
        if membership.is_joint() {
            quorum_heard = quorum_heard.min(contact(&membership.voters_outgoing));
        }
        let latest = quorum_heard.max(since);
        if now.saturating_sub(latest) <= bound {
            return Ok(());
        }
        Err(format!(
            "node {leader} still leads term {term} at tick {now}, though no majority of its \
             voters ({membership}) was heard since tick {quorum_heard} (it leads since tick {since})"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_that_heard_no_majority_for_too_long_fails() {
        let membership = Membership::new((1..=3).map(NodeId));
        let mut contact = QuorumContact::default();
        assert_eq!(
            contact.check(NodeId(1), Term(2), &membership, 100, 60),
            Ok(())
        );
        contact.heard(NodeId(1), NodeId(3), 130);
        assert_eq!(
            contact.check(NodeId(1), Term(2), &membership, 190, 60),
            Ok(()),
            "node 3 and itself are a majority, heard at 130"
        );
        let error = contact
            .check(NodeId(1), Term(2), &membership, 191, 60)
            .unwrap_err();
        assert!(error.contains("heard since tick 130"), "{error}");
        // A new term starts a new window, and so do new voters.
        assert_eq!(
            contact.check(NodeId(1), Term(3), &membership, 200, 60),
            Ok(())
        );
        assert!(contact
            .check(NodeId(1), Term(3), &membership, 261, 60)
            .is_err());
        let grown = Membership::new((1..=4).map(NodeId));
        assert_eq!(contact.check(NodeId(1), Term(3), &grown, 262, 60), Ok(()));
    }

    #[test]
    fn a_joint_membership_needs_both_majorities() {
        let mut membership = Membership::new((1..=3).map(NodeId));
        membership.voters_outgoing = [4, 5, 6].into_iter().map(NodeId).collect();
        let mut contact = QuorumContact::default();
        contact
            .check(NodeId(1), Term(2), &membership, 0, 60)
            .unwrap();
        contact.heard(NodeId(1), NodeId(2), 100);
        contact.heard(NodeId(1), NodeId(4), 100);
        assert!(
            contact
                .check(NodeId(1), Term(2), &membership, 150, 60)
                .is_err(),
            "only one of 4, 5, 6"
        );
        contact.heard(NodeId(1), NodeId(5), 100);
        assert_eq!(
            contact.check(NodeId(1), Term(2), &membership, 150, 60),
            Ok(())
        );
    }
}
