//! A node's term and vote go to its storage in the step that changes them
//! (Raft paper, Figure 2: "updated on stable storage before responding to
//! RPCs"; DESIGN.md rule 1). A change the core holds back waits for some
//! unrelated event: meanwhile a vote or a new term that should be durable
//! is not on its way to the disk, and whatever waits for it (the vote's
//! answer, the candidate's requests) waits too. After every step, the term
//! and vote the core holds are the ones its pipeline last handed out for
//! writing.

use raftgres::core::{HardState, NodeId};

/// Checks that node `node`'s core hard state `held` is the one its
/// pipeline last handed out, `handed`.
pub fn check(node: NodeId, held: HardState, handed: HardState) -> Result<(), String> {
    if held == handed {
        return Ok(());
    }
    Err(format!(
        "node {node} holds term {} vote {:?}, but handed out term {} vote {:?} for writing last",
        held.term, held.voted_for, handed.term, handed.voted_for
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftgres::core::Term;

    #[test]
    fn a_hard_state_held_back_fails() {
        let handed = HardState {
            term: Term(3),
            voted_for: Some(NodeId(1)),
        };
        let held = HardState {
            term: Term(4),
            voted_for: Some(NodeId(2)),
        };
        let error = check(NodeId(2), held, handed).unwrap_err();
        assert!(error.contains("holds term 4"), "{error}");
        assert_eq!(check(NodeId(2), handed, handed), Ok(()));
    }
}
