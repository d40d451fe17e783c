//! Leader Completeness (Raft paper, section 5.4 and Figure 3; proof in
//! section 5.4.3): if a log entry is committed in a given term, that entry
//! will be present in the logs of the leaders of all higher-numbered terms.
//!
//! The checker records every committed entry the first time any node's
//! commit index passes it, together with the lowest term in which a node
//! was seen to know it committed (the term it was "committed in", or an
//! upper bound of it). When a node becomes leader of term T it must hold
//! every recorded entry committed in a term below T. A leader of a term at
//! or below the commit term may legitimately lack it (its votes can arrive
//! late), so such leaders are not held to it.

use raftgres::core::log::RaftLog;
use raftgres::core::{LogIndex, NodeId, Term};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct CommittedEntry {
    term: Term,
    /// Lowest term of a node seen knowing the entry committed.
    commit_term: Term,
}

/// Committed entries, indexed by log index.
#[derive(Debug, Default)]
pub struct LeaderCompleteness {
    committed: Vec<Option<CommittedEntry>>,
}

impl LeaderCompleteness {
    /// A node in `node_term` knows the entry of `entry_term` at `index` is
    /// committed.
    pub fn on_commit(
        &mut self,
        node: NodeId,
        node_term: Term,
        index: LogIndex,
        entry_term: Term,
    ) -> Result<(), String> {
        let position = index.0 as usize;
        if self.committed.len() <= position {
            self.committed.resize(position + 1, None);
        }
        match &mut self.committed[position] {
            slot @ None => {
                *slot = Some(CommittedEntry { term: entry_term, commit_term: node_term });
                Ok(())
            }
            Some(existing) if existing.term == entry_term => {
                existing.commit_term = existing.commit_term.min(node_term);
                Ok(())
            }
            Some(existing) => Err(format!(
                "node {node} committed index {index} from term {entry_term} but an entry from term {} was committed there",
                existing.term
            )),
        }
    }

    /// `node` became leader of `term` with `log`.
    pub fn on_leader(&self, node: NodeId, term: Term, log: &RaftLog) -> Result<(), String> {
        let first = log.snapshot().index.0 as usize + 1;
        for position in first..self.committed.len() {
            let Some(committed) = self.committed[position] else {
                continue;
            };
            if committed.commit_term >= term {
                continue;
            }
            let index = LogIndex(position as u64);
            let held = log.term_at(index);
            if held != Some(committed.term) {
                return Err(format!(
                    "node {node} became leader of term {term} without the entry at index {index} (term {}) committed in term {}; its log has {held:?} there",
                    committed.term, committed.commit_term
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkers::test_logs::log_with_terms;

    #[test]
    fn a_leader_of_a_later_term_must_hold_every_committed_entry() {
        let mut checker = LeaderCompleteness::default();
        checker
            .on_commit(NodeId(1), Term(2), LogIndex(1), Term(1))
            .unwrap();
        checker
            .on_commit(NodeId(1), Term(2), LogIndex(2), Term(2))
            .unwrap();
        assert!(checker
            .on_leader(NodeId(2), Term(3), &log_with_terms(&[1, 2], false))
            .is_ok());
        let error = checker
            .on_leader(NodeId(3), Term(3), &log_with_terms(&[1], false))
            .unwrap_err();
        assert!(error.contains("index 2"), "{error}");
        assert!(checker
            .on_leader(NodeId(3), Term(3), &log_with_terms(&[1, 3], false))
            .is_err());
        // A late leader of the commit term itself is not held to it.
        assert!(checker
            .on_leader(NodeId(3), Term(2), &log_with_terms(&[1], false))
            .is_ok());
        // Two different entries committed at one index.
        assert!(checker
            .on_commit(NodeId(2), Term(4), LogIndex(2), Term(3))
            .is_err());
    }
}
