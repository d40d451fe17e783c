//! Majority arithmetic over a fixed set of voters (section 5.2 and 5.3).

use super::types::{LogIndex, NodeId};

/// How many votes of `voter_count` make a majority.
pub fn majority(voter_count: usize) -> usize {
    voter_count / 2 + 1
}

/// The highest index that a majority of voters hold, given each voter's
/// match index. Voters missing from `match_index_of` count as 0.
pub fn committed_index(voters: &[NodeId], match_index_of: impl Fn(NodeId) -> LogIndex) -> LogIndex {
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
pub fn vote_result(
    voters: &[NodeId],
    votes: &std::collections::BTreeMap<NodeId, bool>,
) -> VoteResult {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn ids(count: u64) -> Vec<NodeId> {
        (1..=count).map(NodeId).collect()
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
