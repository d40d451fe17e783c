//! Monotonic indexes (Raft paper, Figure 2: commitIndex and lastApplied
//! "increase monotonically"; section 5.4.3 relies on applied entries never
//! being un-applied). Within one incarnation a node's commit index and
//! applied index never go back. Across restarts both are volatile in the
//! core, but the state machine is durable together with its applied index,
//! so the applied index a node restarts from never goes below the highest
//! applied index its disk ever held.
//!
//! (The core counts a follower's snapshot as applied as soon as it hands
//! it to the driver, before the write is durable; a crash in between
//! legitimately lowers the volatile applied index, so the cross-restart
//! rule is stated on the durable one.)

use raftgres::core::{LogIndex, NodeId};

/// Per node (indexed by node id).
#[derive(Debug, Default)]
pub struct IndexMonotonicity {
    commit: Vec<LogIndex>,
    applied: Vec<LogIndex>,
    durable_applied_max: Vec<LogIndex>,
}

impl IndexMonotonicity {
    fn ensure(&mut self, node: NodeId) -> usize {
        let position = node.0 as usize;
        if self.commit.len() <= position {
            self.commit.resize(position + 1, LogIndex(0));
            self.applied.resize(position + 1, LogIndex(0));
            self.durable_applied_max.resize(position + 1, LogIndex(0));
        }
        position
    }

    /// `node` restarted from its durable state, which has `applied`.
    pub fn on_restart(&mut self, node: NodeId, applied: LogIndex) -> Result<(), String> {
        let position = self.ensure(node);
        self.commit[position] = LogIndex(0);
        self.applied[position] = applied;
        if applied < self.durable_applied_max[position] {
            return Err(format!(
                "node {node} restarted with applied index {applied} below the {} its disk held",
                self.durable_applied_max[position]
            ));
        }
        Ok(())
    }

    /// `node` now reports `commit` and `applied`; its disk holds a state
    /// machine applied through `durable_applied`.
    pub fn on_observe(
        &mut self,
        node: NodeId,
        commit: LogIndex,
        applied: LogIndex,
        durable_applied: LogIndex,
    ) -> Result<(), String> {
        let position = self.ensure(node);
        if commit < self.commit[position] {
            return Err(format!(
                "node {node} commit index went back from {} to {commit}",
                self.commit[position]
            ));
        }
        if applied < self.applied[position] {
            return Err(format!(
                "node {node} applied index went back from {} to {applied}",
                self.applied[position]
            ));
        }
        if durable_applied < self.durable_applied_max[position] {
            return Err(format!(
                "node {node} durable applied index went back from {} to {durable_applied}",
                self.durable_applied_max[position]
            ));
        }
        self.commit[position] = commit;
        self.applied[position] = applied;
        self.durable_applied_max[position] = durable_applied;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_may_restart_lower_but_durable_applied_may_never_go_back() {
        let mut checker = IndexMonotonicity::default();
        let node = NodeId(1);
        checker
            .on_observe(node, LogIndex(5), LogIndex(4), LogIndex(4))
            .unwrap();
        assert!(checker
            .on_observe(node, LogIndex(4), LogIndex(4), LogIndex(4))
            .is_err());
        assert!(checker
            .on_observe(node, LogIndex(5), LogIndex(3), LogIndex(4))
            .is_err());
        checker.on_restart(node, LogIndex(4)).unwrap();
        checker
            .on_observe(node, LogIndex(4), LogIndex(4), LogIndex(4))
            .unwrap();
        assert!(checker.on_restart(node, LogIndex(3)).is_err());
    }
}
