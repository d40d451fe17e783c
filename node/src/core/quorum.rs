//! Majority arithmetic (section 5.2 and 5.3) over a set of voters, and
//! over a membership: while it is joint, a decision needs a majority of
//! each of its two voter sets (the Raft dissertation, section 4.3).

use std::collections::{BTreeMap, BTreeSet};

use super::types::{LogIndex, Membership, NodeId};

/// How many votes of `voter_count` make a majority.
pub fn majority(voter_count: usize) -> usize {
    voter_count / 2 + 1
}

/// The highest index that a majority of voters hold, given each voter's
/// match index. Voters missing from `match_index_of` count as 0.
pub fn committed_index(
    voters: &BTreeSet<NodeId>,
    match_index_of: impl Fn(NodeId) -> LogIndex,
) -> LogIndex {
    let mut match_indexes: Vec<LogIndex> =
        voters.iter().map(|voter| match_index_of(*voter)).collect();
    if match_indexes.is_empty() {
        return LogIndex(0);
    }
    match_indexes.sort_unstable_by(|left, right| right.cmp(left));
    match_indexes[majority(voters.len()) - 1]
}

/// The outcome of an election so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    /// A majority granted.
    Won,
    /// A majority refused: the election cannot be won.
    Lost,
    /// Not decided yet.
    Pending,
}

/// Tallies `votes` (voter, granted) against `voters`; votes from non-voters
/// are ignored.
pub fn vote_result(voters: &BTreeSet<NodeId>, votes: &BTreeMap<NodeId, bool>) -> VoteResult {
    let needed = majority(voters.len());
    let granted = voters
        .iter()
        .filter(|voter| votes.get(voter) == Some(&true))
        .count();
    let refused = voters
        .iter()
        .filter(|voter| votes.get(voter) == Some(&false))
        .count();
    if granted >= needed {
        VoteResult::Won
    } else if refused > voters.len() - needed {
        VoteResult::Lost
    } else {
        VoteResult::Pending
    }
}

/// The highest index a majority of `membership`'s voters hold (of both
/// voter sets while joint).
pub fn membership_committed_index(
    membership: &Membership,
    match_index_of: impl Fn(NodeId) -> LogIndex,
) -> LogIndex {
    let incoming = committed_index(&membership.voters, &match_index_of);
    if membership.is_joint() {
        incoming.min(committed_index(&membership.voters_outgoing, match_index_of))
    } else {
        incoming
    }
}

/// Tallies `votes` against `membership`: won when both voter sets (one
/// when not joint) grant a majority, lost when either refuses one.
pub fn membership_vote_result(
    membership: &Membership,
    votes: &BTreeMap<NodeId, bool>,
) -> VoteResult {
    let incoming = vote_result(&membership.voters, votes);
    if !membership.is_joint() {
        return incoming;
    }
    match (incoming, vote_result(&membership.voters_outgoing, votes)) {
        (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
        (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
        _ => VoteResult::Pending,
    }
}

/// Whether the voters for which `active` holds are a majority of
/// `membership` (of both voter sets while joint).
pub fn membership_has_quorum(membership: &Membership, active: impl Fn(NodeId) -> bool) -> bool {
    let has_majority = |voters: &BTreeSet<NodeId>| {
        voters.iter().filter(|voter| active(**voter)).count() >= majority(voters.len())
    };
    has_majority(&membership.voters)
        && (!membership.is_joint() || has_majority(&membership.voters_outgoing))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(count: u64) -> BTreeSet<NodeId> {
        (1..=count).map(NodeId).collect()
    }

    fn joint(voters: &[u64], outgoing: &[u64]) -> Membership {
        Membership {
            voters: voters.iter().copied().map(NodeId).collect(),
            voters_outgoing: outgoing.iter().copied().map(NodeId).collect(),
            ..Membership::default()
        }
    }

    #[test]
    fn a_joint_membership_commits_what_both_majorities_hold() {
        // {1,2,3} moving to {3,4,5}: 1 and 2 hold 9, 3 holds 7, 4 and 5 hold 2.
        let matches = [9, 9, 7, 2, 2];
        let of = |id: NodeId| LogIndex(matches[id.0 as usize - 1]);
        let membership = joint(&[3, 4, 5], &[1, 2, 3]);
        assert_eq!(membership_committed_index(&membership, of), LogIndex(2));
        assert_eq!(committed_index(&ids(3), of), LogIndex(9));
        let plain = joint(&[1, 2, 3], &[]);
        assert_eq!(membership_committed_index(&plain, of), LogIndex(9));
    }

    #[test]
    fn a_joint_election_needs_both_majorities() {
        let membership = joint(&[3, 4, 5], &[1, 2, 3]);
        let mut votes = BTreeMap::new();
        for id in [1, 2, 3] {
            votes.insert(NodeId(id), true);
        }
        assert_eq!(
            membership_vote_result(&membership, &votes),
            VoteResult::Pending
        );
        votes.insert(NodeId(4), true);
        assert_eq!(membership_vote_result(&membership, &votes), VoteResult::Won);
        let mut refusals = BTreeMap::new();
        refusals.insert(NodeId(4), false);
        refusals.insert(NodeId(5), false);
        assert_eq!(
            membership_vote_result(&membership, &refusals),
            VoteResult::Lost
        );
    }

    #[test]
    fn a_joint_quorum_needs_both_majorities() {
        let membership = joint(&[3, 4, 5], &[1, 2, 3]);
        assert!(!membership_has_quorum(&membership, |id| id.0 <= 3));
        assert!(membership_has_quorum(&membership, |id| id.0 >= 2 && id.0 <= 4));
        assert!(membership_has_quorum(&joint(&[1], &[]), |id| id.0 == 1));
    }

    #[test]
    fn majority_sizes() {
        assert_eq!(majority(1), 1);
        assert_eq!(majority(2), 2);
        assert_eq!(majority(3), 2);
        assert_eq!(majority(4), 3);
        assert_eq!(majority(5), 3);
    }

    #[test]
    fn committed_index_is_the_majority_th_highest_match() {
        let matches = [5, 3, 9, 1, 3];
        let committed = committed_index(&ids(5), |id| LogIndex(matches[id.0 as usize - 1]));
        assert_eq!(committed, LogIndex(3));
        let committed = committed_index(&ids(3), |id| LogIndex([7, 7, 2][id.0 as usize - 1]));
        assert_eq!(committed, LogIndex(7));
        let committed = committed_index(&ids(4), |id| LogIndex([7, 6, 2, 1][id.0 as usize - 1]));
        assert_eq!(committed, LogIndex(2), "4 voters need 3 copies");
    }

    #[test]
    fn vote_tally() {
        let voters = ids(5);
        let mut votes = BTreeMap::new();
        votes.insert(NodeId(1), true);
        votes.insert(NodeId(2), true);
        assert_eq!(vote_result(&voters, &votes), VoteResult::Pending);
        votes.insert(NodeId(3), true);
        assert_eq!(vote_result(&voters, &votes), VoteResult::Won);
        let mut refusals = BTreeMap::new();
        refusals.insert(NodeId(2), false);
        refusals.insert(NodeId(3), false);
        assert_eq!(vote_result(&voters, &refusals), VoteResult::Pending);
        refusals.insert(NodeId(4), false);
        assert_eq!(vote_result(&voters, &refusals), VoteResult::Lost);
        refusals.insert(NodeId(9), true);
        assert_eq!(
            vote_result(&voters, &refusals),
            VoteResult::Lost,
            "non-voters do not count"
        );
    }
}
