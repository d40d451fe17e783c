//! A linearizable read observes every entry committed before it began
//! (Raft paper, section 8: a read must not return stale data; the leader
//! first commits an entry of its term, then confirms with a majority that
//! it is still the leader after the read arrived; a lease stands in for
//! that confirmation only while no other leader can exist). The simulator
//! knows the highest commit index any node had reached when a read was
//! invoked; the index the read is served at must not be lower. This is
//! stricter than the linearizability of the client history, which sees a
//! stale read only when a client write happened to land in between.

use raftgres::core::{LogIndex, NodeId};

/// Checks that `node` serving read `context` at `read_index` covers
/// `committed_at_invocation`, the highest commit index any node had when
/// the read was invoked.
pub fn check_read(
    node: NodeId,
    context: u64,
    read_index: LogIndex,
    committed_at_invocation: LogIndex,
) -> Result<(), String> {
    if read_index >= committed_at_invocation {
        return Ok(());
    }
    Err(format!(
        "node {node} served read {context} at index {read_index}, but index \
         {committed_at_invocation} was already committed when the read was invoked"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_at_or_beyond_the_commit_index_at_invocation_passes() {
        assert!(check_read(NodeId(1), 7, LogIndex(5), LogIndex(5)).is_ok());
        assert!(check_read(NodeId(1), 7, LogIndex(6), LogIndex(5)).is_ok());
    }

    #[test]
    fn a_read_below_an_entry_committed_before_it_began_is_a_violation() {
        let error = check_read(NodeId(2), 7, LogIndex(4), LogIndex(5)).unwrap_err();
        assert!(error.contains("already committed"), "{error}");
    }
}
