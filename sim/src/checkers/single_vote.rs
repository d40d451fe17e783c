//! One vote per term (Raft paper, section 5.2: "each server will vote for
//! at most one candidate in a given term", and Figure 2: `votedFor` is
//! persistent state, updated on stable storage before responding). Once a
//! node's vote in a term is out in the world (a grant was sent, or the
//! vote reached its disk), the node's vote in that term never changes
//! again: not to another candidate, not back to no one, not across a
//! crash and restart. A vote that was neither sent nor durable may be lost
//! in a crash; nobody could have counted it.

use std::collections::BTreeMap;

use raftgres::core::{NodeId, Term};

/// The votes each node has committed to, by term.
#[derive(Debug, Default)]
pub struct SingleVote {
    votes: BTreeMap<(NodeId, Term), NodeId>,
}

impl SingleVote {
    /// `node` sent a vote grant for `candidate` in `term`, or made that
    /// vote durable.
    pub fn on_vote(&mut self, node: NodeId, term: Term, candidate: NodeId) -> Result<(), String> {
        match self.votes.get(&(node, term)) {
            Some(earlier) if *earlier != candidate => Err(format!(
                "node {node} voted for {earlier} and then for {candidate} in term {term}"
            )),
            Some(_) => Ok(()),
            None => {
                self.votes.insert((node, term), candidate);
                Ok(())
            }
        }
    }

    /// `node` is in `term` with vote `voted_for` (in memory, or as loaded
    /// after a restart): it must still hold any vote it committed to.
    pub fn on_observe(
        &self,
        node: NodeId,
        term: Term,
        voted_for: Option<NodeId>,
    ) -> Result<(), String> {
        match self.votes.get(&(node, term)) {
            Some(committed) if voted_for != Some(*committed) => Err(format!(
                "node {node} voted for {committed} in term {term} but now holds vote {voted_for:?}"
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_grant_in_one_term_is_a_violation() {
        let mut checker = SingleVote::default();
        assert!(checker.on_vote(NodeId(1), Term(3), NodeId(2)).is_ok());
        assert!(checker.on_vote(NodeId(1), Term(3), NodeId(2)).is_ok());
        assert!(checker.on_vote(NodeId(1), Term(4), NodeId(3)).is_ok());
        let error = checker
            .on_vote(NodeId(1), Term(3), NodeId(3))
            .expect_err("two candidates in term 3");
        assert!(error.contains("term 3"), "{error}");
    }

    #[test]
    fn forgetting_a_committed_vote_is_a_violation_even_across_a_restart() {
        let mut checker = SingleVote::default();
        checker.on_vote(NodeId(2), Term(5), NodeId(1)).unwrap();
        assert!(checker
            .on_observe(NodeId(2), Term(5), Some(NodeId(1)))
            .is_ok());
        assert!(checker.on_observe(NodeId(2), Term(5), None).is_err());
        assert!(checker
            .on_observe(NodeId(2), Term(5), Some(NodeId(3)))
            .is_err());
    }

    #[test]
    fn a_vote_never_sent_nor_durable_may_be_lost() {
        let checker = SingleVote::default();
        assert!(checker.on_observe(NodeId(2), Term(5), None).is_ok());
        assert!(checker
            .on_observe(NodeId(2), Term(6), Some(NodeId(2)))
            .is_ok());
    }
}
