//! Exactly-once application of session commands (Raft paper, section 8:
//! "the state machine tracks the latest serial number processed for each
//! client, along with the associated response. If it receives a command
//! whose serial number has already been executed, it responds immediately
//! without re-executing the request"). Every replica applies the same log,
//! so a command with a (client id, sequence) takes effect at one index,
//! the same on every replica; a second first application anywhere means a
//! retry was executed twice.

use std::collections::BTreeMap;

use raftgres::core::{LogIndex, NodeId};

/// Where each (client id, sequence) took effect.
#[derive(Debug, Default)]
pub struct ExactlyOnce {
    applied_at: BTreeMap<(u64, u64), LogIndex>,
}

impl ExactlyOnce {
    /// `node` executed the command (`client_id`, `sequence`) at `index`.
    pub fn on_fresh_apply(
        &mut self,
        node: NodeId,
        client_id: u64,
        sequence: u64,
        index: LogIndex,
    ) -> Result<(), String> {
        let first = *self
            .applied_at
            .entry((client_id, sequence))
            .or_insert(index);
        if first != index {
            return Err(format!(
                "node {node} executed client {client_id}'s sequence {sequence} at index {index}, but it was executed at index {first} already"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_command_at_one_index_on_every_replica_passes() {
        let mut checker = ExactlyOnce::default();
        for node in 1..=3 {
            assert!(checker
                .on_fresh_apply(NodeId(node), 7, 1, LogIndex(4))
                .is_ok());
        }
        assert!(checker.on_fresh_apply(NodeId(1), 7, 2, LogIndex(9)).is_ok());
    }

    #[test]
    fn a_retry_executed_again_is_a_violation() {
        let mut checker = ExactlyOnce::default();
        checker
            .on_fresh_apply(NodeId(1), 7, 1, LogIndex(4))
            .unwrap();
        let error = checker
            .on_fresh_apply(NodeId(2), 7, 1, LogIndex(12))
            .unwrap_err();
        assert!(error.contains("executed at index 4 already"), "{error}");
    }
}
