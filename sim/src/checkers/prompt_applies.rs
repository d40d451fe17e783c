//! Committed entries are handed for applying without delay (Raft paper,
//! Figure 2: "if commitIndex > lastApplied: increment lastApplied, apply
//! log[lastApplied] to state machine"). An entry that is committed and
//! durable on a node but left in its core waits for some unrelated event
//! to be applied, and every client of it waits too. After every step, the
//! core has handed out every entry up to the lower of its commit index and
//! its durable index.

use raftgres::core::{LogIndex, NodeId};

/// Checks that node `node` handed out (`handed`) everything up to the
/// lower of `commit` and `durable`.
pub fn check(
    node: NodeId,
    handed: LogIndex,
    commit: LogIndex,
    durable: LogIndex,
) -> Result<(), String> {
    let due = commit.min(durable);
    if handed >= due {
        return Ok(());
    }
    Err(format!(
        "node {node} holds entries through index {due} committed and durable, but handed \
         only through {handed} for applying"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_durable_entries_left_in_the_core_fail() {
        let error = check(NodeId(3), LogIndex(4), LogIndex(6), LogIndex(9)).unwrap_err();
        assert!(error.contains("through index 6"), "{error}");
        assert_eq!(
            check(NodeId(3), LogIndex(6), LogIndex(6), LogIndex(9)),
            Ok(())
        );
        assert_eq!(
            check(NodeId(3), LogIndex(4), LogIndex(6), LogIndex(4)),
            Ok(()),
            "not durable beyond 4 yet"
        );
    }
}
