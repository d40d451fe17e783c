//! Snapshot and compaction policy: which snapshot a leader sends, and how
//! far the log is compacted.
//!
//! The applier takes a snapshot every `compaction_entries` applied entries.
//! The log is compacted only up to the *previous* snapshot, so between one
//! and two times `compaction_entries` entries stay available to followers
//! that lag a little; a follower further behind receives the snapshot at
//! the compaction point, whose bytes are kept for that.

use crate::core::{LogIndex, Message, MessageBody, Snapshot};

/// The snapshots a node holds.
#[derive(Debug, Default)]
pub(super) struct Snapshots {
    /// The latest snapshot, not yet the compaction point.
    latest: Option<Snapshot>,
    /// The snapshot at the log's compacted prefix: what a follower that
    /// needs compacted entries receives. Invariant: when present, its index
    /// is the log's snapshot index.
    sendable: Option<Snapshot>,
}

impl Snapshots {
    /// The applier took `snapshot`; returns the compaction point, if the log
    /// should now be compacted (to the previous snapshot, or at once to this
    /// one when the log's compacted prefix has no bytes in memory, after a
    /// restart). `log_snapshot_index` is where the log starts now.
    pub(super) fn taken(
        &mut self,
        snapshot: Snapshot,
        log_snapshot_index: LogIndex,
    ) -> Option<Snapshot> {
        let prefix_without_bytes = self.sendable.is_none() && log_snapshot_index > LogIndex(0);
        let point = if prefix_without_bytes {
            Some(snapshot)
        } else {
            self.latest.replace(snapshot)
        }?;
        if point.meta.index < log_snapshot_index {
            return None;
        }
        self.sendable = Some(point.clone());
        // A snapshot exactly at the log's start (a restart right after
        // compacting to the applied index) compacts nothing, but it is the
        // prefix's bytes: without them no lagging follower could catch up.
        (point.meta.index > log_snapshot_index).then_some(point)
    }

    /// A leader's snapshot was installed: the log now starts after it.
    pub(super) fn installed(&mut self, snapshot: Snapshot) {
        self.sendable = Some(snapshot);
        self.latest = None;
    }

    /// `message` ready to leave: an InstallSnapshot (which the core emits
    /// without bytes) gets the bytes of the compacted prefix, or is not
    /// sent when they are not at hand (the core retries later).
    pub(super) fn attach(&self, message: Message) -> Option<Message> {
        let MessageBody::InstallSnapshot { snapshot } = &message.body else {
            return Some(message);
        };
        let sendable = self
            .sendable
            .as_ref()
            .filter(|sendable| sendable.meta == snapshot.meta)?;
        // The core's membership for the snapshot, with the bytes kept here.
        Some(Message {
            body: MessageBody::InstallSnapshot {
                snapshot: Snapshot {
                    data: sendable.data.clone(),
                    ..snapshot.clone()
                },
            },
            ..message
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{NodeId, SnapshotMeta, Term};

    fn snapshot(index: u64) -> Snapshot {
        Snapshot {
            membership: Default::default(),
            meta: SnapshotMeta {
                index: LogIndex(index),
                term: Term(1),
            },
            data: vec![index as u8],
        }
    }

    /// An InstallSnapshot for `index` as the core emits it: no bytes.
    fn install(index: u64) -> Message {
        Message {
            from: NodeId(1),
            to: NodeId(2),
            term: Term(1),
            body: MessageBody::InstallSnapshot {
                snapshot: Snapshot {
                    data: Vec::new(),
                    ..snapshot(index)
                },
            },
        }
    }

    #[test]
    fn the_log_is_compacted_to_the_previous_snapshot() {
        let mut snapshots = Snapshots::default();
        assert_eq!(snapshots.taken(snapshot(100), LogIndex(0)), None);
        assert_eq!(
            snapshots.taken(snapshot(200), LogIndex(0)),
            Some(snapshot(100))
        );
        assert_eq!(
            snapshots.taken(snapshot(300), LogIndex(100)),
            Some(snapshot(200))
        );
    }

    #[test]
    fn after_a_restart_on_a_compacted_log_the_first_snapshot_is_the_point() {
        let mut snapshots = Snapshots::default();
        assert_eq!(
            snapshots.taken(snapshot(150), LogIndex(100)),
            Some(snapshot(150))
        );
    }

    /// Simulator seed 4477 (5 nodes, swarm): a leader restarted on a log
    /// compacted exactly to its applied index took its start-up snapshot
    /// there, but kept no bytes for it, so the follower that needed the
    /// prefix was never sent it.
    #[test]
    fn a_start_up_snapshot_at_the_log_start_becomes_sendable() {
        let mut snapshots = Snapshots::default();
        assert_eq!(snapshots.taken(snapshot(100), LogIndex(100)), None);
        assert_eq!(
            snapshots.attach(install(100)).map(|message| message.body),
            Some(MessageBody::InstallSnapshot {
                snapshot: snapshot(100)
            })
        );
    }

    #[test]
    fn install_snapshot_messages_carry_the_compacted_prefix_or_wait() {
        let mut snapshots = Snapshots::default();
        assert_eq!(snapshots.attach(install(100)), None, "no bytes at hand");
        snapshots.installed(snapshot(100));
        let sent = snapshots.attach(install(100)).unwrap();
        assert_eq!(
            sent.body,
            MessageBody::InstallSnapshot {
                snapshot: snapshot(100)
            }
        );
        assert_eq!(
            snapshots.attach(install(90)),
            None,
            "bytes of another point"
        );
    }
}
