//! State Machine Safety (Raft paper, section 5.4.3 and Figure 3): if a
//! server has applied a log entry at a given index to its state machine,
//! no other server will ever apply a different log entry for the same
//! index.

use raftgres::core::{Entry, LogIndex, NodeId, SnapshotMeta, Term};

use super::payload_hash;

/// The first entry applied at each index, by any node: (term, payload
/// digest), indexed by log index.
#[derive(Debug, Default)]
pub struct StateMachineSafety {
    applied: Vec<Option<(Term, u64)>>,
}

impl StateMachineSafety {
    fn slot(&mut self, index: LogIndex) -> &mut Option<(Term, u64)> {
        let position = index.0 as usize;
        if self.applied.len() <= position {
            self.applied.resize(position + 1, None);
        }
        &mut self.applied[position]
    }

    /// `node` applied `entry`.
    pub fn on_apply(&mut self, node: NodeId, entry: &Entry) -> Result<(), String> {
        let applied = (entry.term, payload_hash(&entry.payload));
        let slot = self.slot(entry.index);
        match *slot {
            None => {
                *slot = Some(applied);
                Ok(())
            }
            Some(first) if first == applied => Ok(()),
            Some((term, _)) => Err(format!(
                "node {node} applied index {} from term {} but another node applied a different entry (term {term}) there",
                entry.index, entry.term
            )),
        }
    }

    /// `node` replaced its state machine with a snapshot through `meta`:
    /// the entry it stands for must be the one applied elsewhere.
    pub fn on_snapshot(&mut self, node: NodeId, meta: SnapshotMeta) -> Result<(), String> {
        match *self.slot(meta.index) {
            Some((term, _)) if term != meta.term => Err(format!(
                "node {node} installed a snapshot through index {} term {} but index {} was applied from term {term}",
                meta.index, meta.term, meta.index
            )),
            _ => Ok(()),
        }
    }

    /// The (term, payload digest) applied at `index`, if any node applied it.
    pub fn applied_at(&self, index: LogIndex) -> Option<(Term, u64)> {
        self.applied.get(index.0 as usize).copied().flatten()
    }

    /// The highest index any node applied.
    pub fn applied_index_max(&self) -> LogIndex {
        LogIndex(self.applied.len().saturating_sub(1) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftgres::core::EntryPayload;

    fn entry(index: u64, term: u64, command: u8) -> Entry {
        Entry {
            term: Term(term),
            index: LogIndex(index),
            payload: EntryPayload::Command(vec![command]),
        }
    }

    #[test]
    fn applying_a_different_entry_at_an_index_is_a_violation() {
        let mut checker = StateMachineSafety::default();
        checker.on_apply(NodeId(1), &entry(1, 1, 7)).unwrap();
        checker.on_apply(NodeId(2), &entry(1, 1, 7)).unwrap();
        assert!(checker.on_apply(NodeId(3), &entry(1, 1, 8)).is_err());
        assert!(checker.on_apply(NodeId(3), &entry(1, 2, 7)).is_err());
        let snapshot = |term| SnapshotMeta {
            index: LogIndex(1),
            term: Term(term),
        };
        assert!(checker.on_snapshot(NodeId(3), snapshot(1)).is_ok());
        assert!(checker.on_snapshot(NodeId(3), snapshot(2)).is_err());
        assert_eq!(checker.applied_index_max(), LogIndex(1));
    }
}
