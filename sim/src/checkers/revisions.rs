//! Store revisions (etcd's MVCC, as the "etcd API guarantees" define
//! them: "An etcd operation that modifies the key value store is assigned
//! a single increasing revision. A transaction operation might modify the
//! key value store multiple times, but only one revision is assigned. The
//! revision attribute of a key value pair that was modified by the
//! operation has the same value as the revision of the operation"; and
//! the Raft paper's section 5.4.3, state machine safety, for replicas at
//! one index).
//!
//! Counted by this checker as each node applies, from what the commands
//! are rather than from what the store says they did:
//! 1. a node's revision is 1 plus the commands it applied that changed a
//!    key: a fresh put unless refused for a lease the store does not
//!    hold, a compare-and-swap when it swapped, a lease revoke when it
//!    deleted keys (a revoke deletes every key attached to its lease at
//!    one revision; `replica_rows` holds replicas to the same rows); a
//!    probe, a compaction, a lease grant, a blank entry, a repeat or a
//!    refusal never;
//! 2. it never goes down, except when the store is replaced: by an
//!    installed snapshot (it then holds the snapshot's revision) or by
//!    what Postgres kept of it after losing asynchronous applies;
//! 3. every current row has `create_revision <= mod_revision <=
//!    revision`;
//! 4. replicas at the same applied index hold the same revision (a
//!    replaced store included: the revision the replicas held there).

use raftgres::core::{LogIndex, NodeId};
use raftgres::mvcc::{KeyValue, Revision, REVISION_INITIAL};

use crate::kv::{Applied, Command, CommandOutput};

/// Per node, the revision it must hold; per index, the revision replicas
/// hold there.
#[derive(Debug, Default)]
pub struct Revisions {
    /// Rule 1's count, by node id. A node beyond it holds an empty store.
    expected: Vec<Revision>,
    /// Rule 4: the revision after each applied index, as the first replica
    /// to reach it held it (revision 0: no replica reached it yet). Indexed
    /// by log index: every entry is applied by some replica, and this is
    /// looked at after every apply.
    at_index: Vec<(Revision, NodeId)>,
}

/// Whether applying `applied` changed a key (rule 1).
pub fn changes_a_key(applied: &Applied) -> bool {
    let Some(envelope) = applied.envelope.filter(|_| applied.fresh) else {
        return false;
    };
    match (envelope.command, applied.output) {
        (Command::Put { .. }, output) => output != Some(CommandOutput::LeaseNotFound),
        (Command::CompareAndSwap { .. }, Some(CommandOutput::Swapped(swapped))) => swapped,
        (Command::LeaseRevoke { .. }, Some(CommandOutput::LeaseRevoke(revoked))) => {
            revoked == Some(true)
        }
        (
            Command::CompareAndSwap { .. }
            | Command::Probe
            | Command::Compact { .. }
            | Command::LeaseGrant { .. }
            | Command::LeaseRevoke { .. },
            _,
        ) => false,
    }
}

impl Revisions {
    fn expected(&self, node: NodeId) -> Revision {
        self.expected
            .get(node.0 as usize)
            .copied()
            .unwrap_or(REVISION_INITIAL)
    }

    fn set_expected(&mut self, node: NodeId, revision: Revision) {
        let position = node.0 as usize;
        if self.expected.len() <= position {
            self.expected.resize(position + 1, REVISION_INITIAL);
        }
        self.expected[position] = revision;
    }

    /// `node` applied the entry at `index` (`applied` says how), and its
    /// store then held `revision` (rules 1, 2 and 4).
    pub fn on_apply(
        &mut self,
        node: NodeId,
        index: LogIndex,
        applied: &Applied,
        revision: Revision,
    ) -> Result<(), String> {
        let before = self.expected(node);
        let expected = before + Revision::from(changes_a_key(applied));
        if revision < before {
            return Err(format!(
                "node {node}'s revision went down from {before} to {revision} applying entry {index}"
            ));
        }
        if revision != expected {
            return Err(format!(
                "node {node} holds revision {revision} after entry {index} ({:?}), \
                 but the commands it applied that changed a key make it {expected}",
                applied.envelope.map(|envelope| envelope.command)
            ));
        }
        self.set_expected(node, revision);
        self.agree(node, index, revision)
    }

    /// `node`'s store was replaced (rule 2): by a snapshot installed, or by
    /// what Postgres kept after losing asynchronous applies; it is now at
    /// `applied` and holds `revision`.
    pub fn on_replaced(
        &mut self,
        node: NodeId,
        applied: LogIndex,
        revision: Revision,
    ) -> Result<(), String> {
        self.set_expected(node, revision);
        self.agree(node, applied, revision)
    }

    /// Rule 4 at `index`.
    fn agree(&mut self, node: NodeId, index: LogIndex, revision: Revision) -> Result<(), String> {
        if index == LogIndex(0) && revision != REVISION_INITIAL {
            return Err(format!(
                "node {node} holds revision {revision} with nothing applied (an empty store's is {REVISION_INITIAL})"
            ));
        }
        let position = index.0 as usize;
        if self.at_index.len() <= position {
            self.at_index.resize(position + 1, (0, node));
        }
        if self.at_index[position].0 == 0 {
            self.at_index[position] = (revision, node);
        }
        let at = self.at_index[position];
        if at.0 != revision {
            return Err(format!(
                "node {node} holds revision {revision} at applied index {index}, node {} held {}",
                at.1, at.0
            ));
        }
        Ok(())
    }

    /// After a transaction on `node`'s store, which holds `revision` and
    /// `rows` (rules 1 and 3).
    pub fn check_store<'a>(
        &self,
        node: NodeId,
        revision: Revision,
        rows: impl IntoIterator<Item = &'a KeyValue>,
    ) -> Result<(), String> {
        let expected = self.expected(node);
        if revision != expected {
            return Err(format!(
                "node {node}'s store holds revision {revision}, but the commands it applied make it {expected}"
            ));
        }
        for row in rows {
            if !(row.create_revision <= row.mod_revision && row.mod_revision <= revision) {
                return Err(format!(
                    "node {node} at revision {revision} holds key {:?} created at {} and changed at {}",
                    row.key, row.create_revision, row.mod_revision
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::Envelope;

    fn applied(command: Command, fresh: bool, output: Option<CommandOutput>) -> Applied {
        Applied {
            envelope: Some(Envelope {
                client_id: 0,
                sequence: 0,
                operation_id: 1,
                attempt: 1,
                command,
            }),
            fresh,
            output,
            revision: 0,
        }
    }

    fn put() -> Applied {
        applied(
            Command::Put {
                key: 1,
                value: 2,
                lease: 0,
            },
            true,
            Some(CommandOutput::Done),
        )
    }

    fn swap(swapped: bool) -> Applied {
        let command = Command::CompareAndSwap {
            key: 1,
            expected: 2,
            new: 3,
        };
        applied(command, true, Some(CommandOutput::Swapped(swapped)))
    }

    fn row(create_revision: Revision, mod_revision: Revision) -> KeyValue {
        KeyValue {
            key: vec![1],
            create_revision,
            mod_revision,
            version: 1,
            ..KeyValue::default()
        }
    }

    #[test]
    fn changes_are_counted_from_the_commands() {
        assert!(changes_a_key(&put()));
        assert!(changes_a_key(&swap(true)));
        assert!(!changes_a_key(&swap(false)));
        let repeated = Applied {
            fresh: false,
            ..put()
        };
        assert!(!changes_a_key(&repeated));
        let compaction = applied(
            Command::Compact { revision: 1 },
            true,
            Some(CommandOutput::Compaction(Ok(()))),
        );
        assert!(!changes_a_key(&compaction));
        assert!(!changes_a_key(&applied(Command::Probe, true, None)));
        let grant = applied(
            Command::LeaseGrant { id: 7, ttl: 2 },
            true,
            Some(CommandOutput::LeaseGrant(true)),
        );
        assert!(!changes_a_key(&grant));
        let revoke = |revoked| {
            applied(
                Command::LeaseRevoke { id: 7 },
                true,
                Some(CommandOutput::LeaseRevoke(revoked)),
            )
        };
        assert!(changes_a_key(&revoke(Some(true))));
        assert!(!changes_a_key(&revoke(Some(false))));
        assert!(!changes_a_key(&revoke(None)));
        let put_without_its_lease = applied(
            Command::Put {
                key: 1,
                value: 2,
                lease: 9,
            },
            true,
            Some(CommandOutput::LeaseNotFound),
        );
        assert!(!changes_a_key(&put_without_its_lease));
    }

    #[test]
    fn a_store_that_counts_its_changes_passes() {
        let mut checker = Revisions::default();
        let node = NodeId(1);
        checker.on_apply(node, LogIndex(1), &put(), 2).unwrap();
        checker
            .on_apply(node, LogIndex(2), &swap(false), 2)
            .unwrap();
        checker.on_apply(node, LogIndex(3), &swap(true), 3).unwrap();
        checker.check_store(node, 3, [&row(2, 3)]).unwrap();
        checker.on_apply(NodeId(2), LogIndex(1), &put(), 2).unwrap();
    }

    #[test]
    fn a_revision_for_a_failed_swap_is_a_violation() {
        let mut checker = Revisions::default();
        let node = NodeId(1);
        checker.on_apply(node, LogIndex(1), &put(), 2).unwrap();
        let error = checker
            .on_apply(node, LogIndex(2), &swap(false), 3)
            .unwrap_err();
        assert!(error.contains("make it 2"), "{error}");
    }

    #[test]
    fn a_put_without_a_revision_is_a_violation() {
        let mut checker = Revisions::default();
        let error = checker
            .on_apply(NodeId(1), LogIndex(1), &put(), 1)
            .unwrap_err();
        assert!(error.contains("make it 2"), "{error}");
    }

    #[test]
    fn a_revision_going_down_is_a_violation_unless_the_store_was_replaced() {
        let mut checker = Revisions::default();
        let node = NodeId(1);
        checker.on_apply(node, LogIndex(1), &put(), 2).unwrap();
        checker.on_apply(node, LogIndex(2), &put(), 3).unwrap();
        let error = checker
            .on_apply(node, LogIndex(3), &swap(false), 2)
            .unwrap_err();
        assert!(error.contains("went down"), "{error}");
        // Postgres lost the apply of entry 2: the store is back at 1.
        checker.on_replaced(node, LogIndex(1), 2).unwrap();
        checker.on_apply(node, LogIndex(2), &put(), 3).unwrap();
    }

    #[test]
    fn replicas_disagreeing_at_one_index_are_a_violation() {
        let mut checker = Revisions::default();
        checker.on_apply(NodeId(1), LogIndex(1), &put(), 2).unwrap();
        checker.on_apply(NodeId(1), LogIndex(2), &put(), 3).unwrap();
        // Node 2 installs a snapshot at 2 claiming another revision.
        let error = checker.on_replaced(NodeId(2), LogIndex(2), 5).unwrap_err();
        assert!(error.contains("node 1 held 3"), "{error}");
        let error = checker.on_replaced(NodeId(3), LogIndex(0), 2).unwrap_err();
        assert!(error.contains("nothing applied"), "{error}");
    }

    #[test]
    fn rows_beyond_the_revision_or_changed_before_created_are_violations() {
        let mut checker = Revisions::default();
        let node = NodeId(1);
        checker.on_apply(node, LogIndex(1), &put(), 2).unwrap();
        let error = checker.check_store(node, 2, [&row(2, 3)]).unwrap_err();
        assert!(error.contains("changed at 3"), "{error}");
        let error = checker.check_store(node, 2, [&row(3, 2)]).unwrap_err();
        assert!(error.contains("created at 3"), "{error}");
        let error = checker.check_store(node, 4, [&row(2, 2)]).unwrap_err();
        assert!(error.contains("make it 2"), "{error}");
    }
}
