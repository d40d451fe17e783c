//! What a client is told is never contradicted by the log (Raft paper,
//! section 8: a client is told a command succeeded only once it is
//! committed and applied, and a command whose fate the leader cannot know
//! must not be reported as failed, or a client without a session retries
//! it and it executes twice). An attempt told "applied at index i" must be
//! the command executed at i; an attempt told "not applied" must never be
//! applied anywhere; "outcome unknown" is never contradicted.

use std::collections::{BTreeMap, BTreeSet};

use raftgres::core::{LogIndex, NodeId};

/// One attempt of one client operation: (operation id, attempt).
pub type Attempt = (u64, u64);

/// What the clients were told and what was applied.
#[derive(Debug, Default)]
pub struct ClientOutcomes {
    /// The operation first executed at each index.
    executed_at: BTreeMap<LogIndex, u64>,
    /// Attempts some node applied (as a new command or a repeat).
    applied: BTreeSet<Attempt>,
    /// Attempts a client was told were not applied.
    told_failed: BTreeSet<Attempt>,
}

impl ClientOutcomes {
    /// `node` applied `attempt`'s entry at `index`; `fresh` when it
    /// executed the command (not a repeat answered from its session).
    pub fn on_apply(
        &mut self,
        node: NodeId,
        attempt: Attempt,
        index: LogIndex,
        fresh: bool,
    ) -> Result<(), String> {
        if fresh {
            self.executed_at.entry(index).or_insert(attempt.0);
        }
        self.applied.insert(attempt);
        if self.told_failed.contains(&attempt) {
            return Err(format!(
                "node {node} applied attempt {} of operation {} at index {index}, but its client was told it was not applied",
                attempt.1, attempt.0
            ));
        }
        Ok(())
    }

    /// A client was told `attempt` was not applied.
    pub fn on_told_failed(&mut self, attempt: Attempt) -> Result<(), String> {
        self.told_failed.insert(attempt);
        if self.applied.contains(&attempt) {
            return Err(format!(
                "the client of operation {} was told attempt {} was not applied, but it was",
                attempt.0, attempt.1
            ));
        }
        Ok(())
    }

    /// A client was told `operation` was applied at `index`.
    pub fn on_told_applied(&self, operation: u64, index: LogIndex) -> Result<(), String> {
        match self.executed_at.get(&index) {
            Some(executed) if *executed == operation => Ok(()),
            Some(executed) => Err(format!(
                "the client of operation {operation} was told it was applied at index {index}, where operation {executed} was executed"
            )),
            None => Err(format!(
                "the client of operation {operation} was told it was applied at index {index}, where no command was executed"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truthful_answers_pass() {
        let mut checker = ClientOutcomes::default();
        checker
            .on_apply(NodeId(1), (5, 1), LogIndex(3), true)
            .unwrap();
        assert!(checker.on_told_applied(5, LogIndex(3)).is_ok());
        assert!(checker.on_told_failed((5, 2)).is_ok());
        assert!(checker
            .on_apply(NodeId(2), (5, 1), LogIndex(3), true)
            .is_ok());
    }

    #[test]
    fn an_attempt_told_failed_that_was_applied_is_a_violation_either_way_round() {
        let mut checker = ClientOutcomes::default();
        checker
            .on_apply(NodeId(1), (5, 1), LogIndex(3), true)
            .unwrap();
        assert!(checker.on_told_failed((5, 1)).is_err());
        let mut later = ClientOutcomes::default();
        later.on_told_failed((6, 1)).unwrap();
        assert!(later
            .on_apply(NodeId(2), (6, 1), LogIndex(4), false)
            .is_err());
    }

    #[test]
    fn applied_at_the_wrong_index_is_a_violation() {
        let mut checker = ClientOutcomes::default();
        checker
            .on_apply(NodeId(1), (5, 1), LogIndex(3), true)
            .unwrap();
        assert!(checker.on_told_applied(6, LogIndex(3)).is_err());
        assert!(checker.on_told_applied(5, LogIndex(4)).is_err());
    }
}
