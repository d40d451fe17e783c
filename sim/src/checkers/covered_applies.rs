//! What a snapshot covers is never applied again (Raft paper, section 7:
//! the follower "discards the entire log" the snapshot covers and "resets
//! the state machine using snapshot contents"). Entries a node gathered for
//! applying before a snapshot replaced its state up to index I are
//! dropped up to I: handed to the applier anyway, the entry at or below I
//! would run against state the snapshot replaces (and, were it applied
//! before the install, need entries its log no longer holds to replay
//! what comes before it). Every apply batch a node hands out holds only
//! entries beyond its log's snapshot index.

use raftgres::core::{LogIndex, NodeId};

/// Checks node `node`'s apply batch starting at `first` against its log's
/// snapshot index `snapshot`.
pub fn check(node: NodeId, first: LogIndex, snapshot: LogIndex) -> Result<(), String> {
    if first > snapshot {
        return Ok(());
    }
    Err(format!(
        "node {node} handed entry {first} for applying, though its snapshot covers \
         through index {snapshot}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_holding_a_covered_entry_fails() {
        let error = check(NodeId(2), LogIndex(40), LogIndex(40)).unwrap_err();
        assert!(error.contains("handed entry 40"), "{error}");
        assert_eq!(check(NodeId(2), LogIndex(41), LogIndex(40)), Ok(()));
    }
}
