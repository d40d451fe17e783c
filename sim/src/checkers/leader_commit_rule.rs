//! A leader commits by counting replicas only entries of its own term
//! (Raft paper, section 5.4.2 and Figure 8; Figure 2, rules for leaders:
//! "if there exists an N > commitIndex such that a majority of
//! matchIndex[i] >= N, and log[N].term == currentTerm: set commitIndex =
//! N"). Entries of earlier terms become committed only indirectly, under
//! an entry of the leader's term. Leader completeness catches a breach of
//! this rule only when a later leader happens to overwrite the entry;
//! this checker catches the breach itself, at the step where a leader's
//! commit index moves.

use raftgres::core::{LogIndex, NodeId, Term};

/// Checks that leader `node` of `term`, whose commit index moved up to
/// `commit`, holds an entry of `term` there (`entry_term`).
pub fn check_leader_commit(
    node: NodeId,
    term: Term,
    commit: LogIndex,
    entry_term: Option<Term>,
) -> Result<(), String> {
    if entry_term == Some(term) {
        return Ok(());
    }
    Err(format!(
        "leader {node} of term {term} moved its commit index to {commit}, whose entry has term \
         {entry_term:?}: an entry of an earlier term was committed by counting replicas"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committing_an_entry_of_the_leaders_term_passes() {
        assert!(check_leader_commit(NodeId(1), Term(4), LogIndex(9), Some(Term(4))).is_ok());
    }

    #[test]
    fn committing_an_entry_of_an_earlier_term_is_a_violation() {
        let error =
            check_leader_commit(NodeId(1), Term(4), LogIndex(9), Some(Term(2))).unwrap_err();
        assert!(error.contains("earlier term"), "{error}");
    }
}
