//! The simulated disk of one node. It distinguishes what was written from
//! what is durable: each write (one `Ready`'s snapshot, entries and hard
//! state, which the core requires to be atomic) completes after a simulated
//! latency, and writes complete in the order they were issued. A crash
//! keeps a random prefix of the writes still in flight and loses the rest;
//! a write can also fail, after which the node must stay silent until it
//! restarts from what is durable.

use std::collections::VecDeque;

use raftgres::core::{
    DurableState, Entry, HardState, LogIndex, Message, Snapshot, SnapshotMeta, Term,
};

use crate::kv::KvStore;

/// Everything a node's disk holds durably.
#[derive(Clone, Debug)]
pub struct DurableImage {
    /// Term and vote.
    pub hard_state: HardState,
    /// The latest snapshot: the state machine as of `snapshot.meta.index`.
    /// Invariant: `snapshot.data` decodes to a store whose applied index is
    /// `snapshot.meta.index`.
    pub snapshot: Snapshot,
    /// Entries after the snapshot, contiguous.
    pub entries: Vec<Entry>,
    /// The state machine with its applied index, updated in the same
    /// (simulated) transaction as each apply.
    pub state_machine: KvStore,
}

impl DurableImage {
    /// A fresh disk: term 0, no entries, an empty state machine.
    pub fn empty() -> DurableImage {
        DurableImage {
            hard_state: HardState::default(),
            snapshot: Snapshot {
                meta: SnapshotMeta::default(),
                data: KvStore::default().to_bytes(),
            },
            entries: Vec::new(),
            state_machine: KvStore::default(),
        }
    }

    /// What the core restarts from.
    pub fn durable_state(&self) -> DurableState {
        DurableState {
            hard_state: self.hard_state,
            snapshot: self.snapshot.meta,
            entries: self.entries.clone(),
            applied: self.state_machine.applied_index(),
        }
    }

    /// Applies one completed write, in the order the core requires:
    /// snapshot, then entries (truncating the stored suffix), then hard state.
    fn apply(&mut self, write: &Write) {
        if let Some(snapshot) = &write.snapshot {
            self.entries.clear();
            self.state_machine = KvStore::from_bytes(&snapshot.data);
            self.snapshot = snapshot.clone();
        }
        if let Some(first) = write.entries.first() {
            let snapshot_index = self.snapshot.meta.index.0;
            let keep = first.index.0.saturating_sub(snapshot_index + 1) as usize;
            self.entries.truncate(keep);
            let new = write
                .entries
                .iter()
                .filter(|entry| entry.index.0 > snapshot_index)
                .cloned();
            self.entries.extend(new);
        }
        if let Some(hard_state) = write.hard_state {
            self.hard_state = hard_state;
        }
    }

    /// Compacts the stored log through `index`, keeping `data` (the state
    /// machine as of `index`) as the snapshot.
    pub fn compact(&mut self, meta: SnapshotMeta, data: Vec<u8>) {
        let drop = (meta.index.0 - self.snapshot.meta.index.0) as usize;
        self.entries.drain(..drop.min(self.entries.len()));
        self.snapshot = Snapshot { meta, data };
    }
}

/// One atomic write and what waits on it.
#[derive(Debug)]
pub struct Write {
    /// When it becomes durable.
    pub complete_at: u64,
    /// A leader's snapshot to install.
    pub snapshot: Option<Snapshot>,
    /// Entries to append (after truncating from the first one's index).
    pub entries: Vec<Entry>,
    /// Term and vote.
    pub hard_state: Option<HardState>,
    /// What to report with `Raft::persisted` once durable.
    pub persist_point: Option<(LogIndex, Term)>,
    /// Messages that may go out only once this write is durable.
    pub messages_after_persist: Vec<Message>,
    /// The write fails instead of completing.
    pub fails: bool,
}

/// The outcome of polling the disk.
#[derive(Debug)]
pub enum Completion {
    /// A write became durable.
    Durable(Write),
    /// A write failed: the node must halt.
    Failed,
}

/// One node's disk.
#[derive(Debug)]
pub struct Disk {
    /// What survives a crash.
    pub durable: DurableImage,
    in_flight: VecDeque<Write>,
}

impl Disk {
    /// A fresh, empty disk.
    pub fn new() -> Disk {
        Disk {
            durable: DurableImage::empty(),
            in_flight: VecDeque::new(),
        }
    }

    /// Issues `write`; it completes no earlier than every earlier write.
    pub fn submit(&mut self, mut write: Write) {
        if let Some(last) = self.in_flight.back() {
            write.complete_at = write.complete_at.max(last.complete_at);
        }
        self.in_flight.push_back(write);
    }

    /// The next write that is durable (or failed) by `now`.
    pub fn poll(&mut self, now: u64) -> Option<Completion> {
        if self.in_flight.front()?.complete_at > now {
            return None;
        }
        let write = self.in_flight.pop_front().expect("checked above");
        if write.fails {
            self.in_flight.clear();
            return Some(Completion::Failed);
        }
        self.durable.apply(&write);
        Some(Completion::Durable(write))
    }

    /// Makes every in-flight write succeed (faults have stopped).
    pub fn clear_failures(&mut self) {
        self.in_flight
            .iter_mut()
            .for_each(|write| write.fails = false);
    }

    /// Writes in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// A crash: the first `kept` in-flight writes reach the disk (a failing
    /// write and everything after it never do); the rest are lost.
    pub fn crash(&mut self, kept: usize) {
        for write in self.in_flight.drain(..).take(kept) {
            if write.fails {
                break;
            }
            self.durable.apply(&write);
        }
    }
}

impl Default for Disk {
    fn default() -> Self {
        Disk::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftgres::core::{EntryPayload, NodeId};

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            term: Term(term),
            index: LogIndex(index),
            payload: EntryPayload::Blank,
        }
    }

    fn write(complete_at: u64, entries: Vec<Entry>, term: u64) -> Write {
        Write {
            complete_at,
            snapshot: None,
            persist_point: entries.last().map(|last| (last.index, last.term)),
            entries,
            hard_state: Some(HardState {
                term: Term(term),
                voted_for: Some(NodeId(1)),
            }),
            messages_after_persist: Vec::new(),
            fails: false,
        }
    }

    #[test]
    fn writes_complete_in_order_and_truncate_the_stored_suffix() {
        let mut disk = Disk::new();
        disk.submit(write(5, vec![entry(1, 1), entry(2, 1), entry(3, 1)], 1));
        // Issued later with a shorter latency: still completes after the first.
        disk.submit(write(2, vec![entry(3, 2)], 2));
        assert!(disk.poll(4).is_none());
        assert!(matches!(disk.poll(5), Some(Completion::Durable(_))));
        assert!(matches!(disk.poll(5), Some(Completion::Durable(_))));
        let terms: Vec<u64> = disk
            .durable
            .entries
            .iter()
            .map(|entry| entry.term.0)
            .collect();
        assert_eq!(terms, vec![1, 1, 2]);
        assert_eq!(disk.durable.hard_state.term, Term(2));
    }

    #[test]
    fn a_crash_keeps_a_prefix_of_the_in_flight_writes() {
        let mut disk = Disk::new();
        disk.submit(write(5, vec![entry(1, 1)], 1));
        disk.submit(write(6, vec![entry(2, 1)], 1));
        disk.submit(write(7, vec![entry(3, 1)], 1));
        disk.crash(2);
        assert_eq!(disk.durable.entries.len(), 2);
        assert_eq!(disk.in_flight(), 0);
        let mut failing = Disk::new();
        let mut bad = write(5, vec![entry(1, 1)], 1);
        bad.fails = true;
        failing.submit(bad);
        failing.submit(write(6, vec![entry(2, 1)], 1));
        assert!(matches!(failing.poll(9), Some(Completion::Failed)));
        assert!(failing.durable.entries.is_empty());
    }
}
