//! Replicas agree on their rows (Raft paper, section 5.4.3 and Figure 3:
//! state machine safety, read as what a client can observe). Applying the
//! same entries must leave the same state machine rows *and* the same
//! session rows on every replica, whatever the apply batches or snapshots
//! each replica went through: a session one replica forgot and another
//! kept turns the same retry into a new command on one and a repeat on
//! the other.

use std::collections::BTreeMap;

use raftgres::core::{LogIndex, NodeId};

/// The digest of the rows some replica held at each applied index.
#[derive(Debug, Default)]
pub struct ReplicaRows {
    digests: BTreeMap<LogIndex, (u64, NodeId)>,
}

impl ReplicaRows {
    /// `node`'s rows digest `digest` with everything through `applied`.
    pub fn on_rows(&mut self, node: NodeId, applied: LogIndex, digest: u64) -> Result<(), String> {
        let (first, first_node) = *self.digests.entry(applied).or_insert((digest, node));
        if first != digest {
            return Err(format!(
                "node {node} holds other rows (state machine or sessions) than node {first_node} at applied index {applied}"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_rows_at_one_index_pass() {
        let mut checker = ReplicaRows::default();
        assert!(checker.on_rows(NodeId(1), LogIndex(5), 11).is_ok());
        assert!(checker.on_rows(NodeId(2), LogIndex(5), 11).is_ok());
        assert!(checker.on_rows(NodeId(2), LogIndex(6), 12).is_ok());
    }

    #[test]
    fn different_rows_at_one_index_are_a_violation() {
        let mut checker = ReplicaRows::default();
        checker.on_rows(NodeId(1), LogIndex(5), 11).unwrap();
        let error = checker.on_rows(NodeId(3), LogIndex(5), 13).unwrap_err();
        assert!(error.contains("node 3"), "{error}");
    }
}
