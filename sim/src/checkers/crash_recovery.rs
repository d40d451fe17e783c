//! Every crash point restarts (Raft paper, Figure 2: currentTerm, votedFor
//! and log[] are persistent state, and a server's term is never behind the
//! terms in its own log, since it adopted each entry's term before storing
//! it). Whatever transactions a crash cut short, what the store holds must
//! be a state the node can start from: the stored term at least the term
//! of the last stored entry and of the compaction point, and the state
//! machine not behind the compacted prefix it can no longer replay.

use raftgres::core::NodeId;

use crate::store::Store;

/// Checks that `node` can restart from `store`.
pub fn check_restartable(node: NodeId, store: &Store) -> Result<(), String> {
    let term = store.hard_state.term;
    let (last_index, last_term) = store.last();
    if last_term > term {
        return Err(format!(
            "node {node} cannot restart: its log ends at index {last_index} in term {last_term}, beyond its stored term {term}"
        ));
    }
    let applied = store.state_machine.applied_index();
    if applied < store.log_start.index {
        return Err(format!(
            "node {node} cannot restart: its state machine is at {applied}, below its compacted log start {}",
            store.log_start.index
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftgres::core::{HardState, LogIndex, SnapshotMeta, Term};

    #[test]
    fn a_consistent_store_restarts() {
        assert!(check_restartable(NodeId(1), &Store::default()).is_ok());
    }

    #[test]
    fn a_snapshot_term_above_the_stored_term_does_not() {
        let mut store = Store::default();
        store.hard_state = HardState {
            term: Term(2),
            voted_for: None,
        };
        store.log_start = SnapshotMeta {
            index: LogIndex(0),
            term: Term(3),
        };
        let error = check_restartable(NodeId(2), &store).unwrap_err();
        assert!(error.contains("beyond its stored term 2"), "{error}");
    }
}
