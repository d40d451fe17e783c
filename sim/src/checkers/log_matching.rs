//! Log Matching (Raft paper, section 5.3 and Figure 3): if two logs contain
//! an entry with the same index and term, the logs are identical in all
//! entries up through that index.
//!
//! Checked incrementally on every append, by induction on the index: the
//! checker remembers, for each (index, term) ever written by any node, the
//! entry's payload and the term of the entry before it. If every node that
//! writes (index, term) agrees on both, then equal (index, term) implies
//! equal (index - 1, term'), and so on down to the start of the log. A
//! node whose log held a different predecessor, or a different command,
//! under the same (index, term) breaks the property at that append.

use std::collections::HashMap;

use raftgres::core::{Entry, NodeId, Term};

use super::payload_hash;

/// (payload digest, term of the previous entry) for each (index, term).
/// The map is only looked up, never iterated, so its order cannot reach the
/// run's behaviour.
#[derive(Debug, Default)]
pub struct LogMatching {
    entries: HashMap<(u64, u64), (u64, u64)>,
}

impl LogMatching {
    /// `node` wrote `entries`, contiguous, after an entry of `previous_term`.
    pub fn on_append(
        &mut self,
        node: NodeId,
        previous_term: Term,
        entries: &[Entry],
    ) -> Result<(), String> {
        let mut previous_term = previous_term;
        for entry in entries {
            let recorded = (payload_hash(&entry.payload), previous_term.0);
            let existing = *self
                .entries
                .entry((entry.index.0, entry.term.0))
                .or_insert(recorded);
            if existing != recorded {
                let what = if existing.0 != recorded.0 {
                    "a different command"
                } else {
                    "a different history"
                };
                return Err(format!(
                    "node {node} wrote index {} term {} with {what}: previous entry's term {} where another log has {}",
                    entry.index, entry.term, recorded.1, existing.1
                ));
            }
            previous_term = entry.term;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftgres::core::{EntryPayload, LogIndex};

    fn entry(index: u64, term: u64, command: u8) -> Entry {
        Entry {
            term: Term(term),
            index: LogIndex(index),
            payload: EntryPayload::Command(vec![command]),
        }
    }

    #[test]
    fn same_index_and_term_must_mean_same_entry_and_same_predecessor() {
        let mut checker = LogMatching::default();
        checker
            .on_append(
                NodeId(1),
                Term(0),
                &[entry(1, 1, 1), entry(2, 1, 2), entry(3, 2, 3)],
            )
            .unwrap();
        // A follower receiving the same entries, one at a time, agrees.
        checker
            .on_append(NodeId(2), Term(1), &[entry(2, 1, 2)])
            .unwrap();
        checker
            .on_append(NodeId(2), Term(1), &[entry(3, 2, 3)])
            .unwrap();
        // Same (index, term), different command.
        assert!(checker
            .on_append(NodeId(3), Term(1), &[entry(3, 2, 9)])
            .is_err());
        // Same (index, term), kept after a stale entry of another term.
        let error = checker
            .on_append(NodeId(3), Term(3), &[entry(3, 2, 3)])
            .unwrap_err();
        assert!(
            error.contains("node 3") && error.contains("index 3"),
            "{error}"
        );
    }
}
