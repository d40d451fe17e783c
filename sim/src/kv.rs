//! The replicated state machine the simulated clients talk to: a small
//! key-value store with put and compare-and-swap (gets are served through
//! `read_index`, never through the log). Values are `u64`; `VALUE_ABSENT`
//! (0) stands for a missing key, and the workload never writes it.

use std::collections::BTreeMap;

use raftgres::core::{Entry, EntryPayload, LogIndex};

/// The value a key has before anyone writes it.
pub const VALUE_ABSENT: u64 = 0;

/// A command carried in a log entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Sets `key` to `value`.
    Put {
        /// The key.
        key: u64,
        /// The new value (never `VALUE_ABSENT`).
        value: u64,
    },
    /// Sets `key` to `new` if it holds `expected`.
    CompareAndSwap {
        /// The key.
        key: u64,
        /// The value the key must hold.
        expected: u64,
        /// The value to store.
        new: u64,
    },
    /// Changes nothing; the liveness checker commits one after faults heal.
    Probe,
}

/// What applying a command produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandOutput {
    /// A put or probe took effect.
    Done,
    /// A compare-and-swap, and whether it swapped.
    Swapped(bool),
}

const ENCODED_BYTES: usize = 33;

/// Encodes `command` with the id of the client operation it belongs to.
pub fn encode(operation_id: u64, command: Command) -> Vec<u8> {
    let (tag, key, first, second) = match command {
        Command::Put { key, value } => (1u8, key, value, 0),
        Command::CompareAndSwap { key, expected, new } => (2u8, key, expected, new),
        Command::Probe => (3u8, 0, 0, 0),
    };
    let mut bytes = Vec::with_capacity(ENCODED_BYTES);
    bytes.push(tag);
    for word in [operation_id, key, first, second] {
        bytes.extend_from_slice(&word.to_le_bytes());
    }
    bytes
}

/// Decodes what `encode` produced.
pub fn decode(bytes: &[u8]) -> Option<(u64, Command)> {
    if bytes.len() != ENCODED_BYTES {
        return None;
    }
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let (operation_id, key, first, second) = (word(1), word(9), word(17), word(25));
    let command = match bytes[0] {
        1 => Command::Put { key, value: first },
        2 => Command::CompareAndSwap {
            key,
            expected: first,
            new: second,
        },
        3 => Command::Probe,
        _ => return None,
    };
    Some((operation_id, command))
}

/// The key-value store and the index it has applied up to. In the
/// simulation applying is durable at once (the production node commits the
/// state machine's changes and the applied index in one transaction).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvStore {
    values: BTreeMap<u64, u64>,
    /// Highest applied index. Invariant: only grows, except when a leader's
    /// snapshot replaces the whole store.
    applied_index: LogIndex,
}

impl KvStore {
    /// The value of `key` (`VALUE_ABSENT` when never written).
    pub fn get(&self, key: u64) -> u64 {
        self.values.get(&key).copied().unwrap_or(VALUE_ABSENT)
    }

    /// Highest applied index.
    pub fn applied_index(&self) -> LogIndex {
        self.applied_index
    }

    /// Applies one committed entry; returns the operation id and output of
    /// a client command.
    pub fn apply(&mut self, entry: &Entry) -> Option<(u64, CommandOutput)> {
        assert_eq!(
            entry.index,
            self.applied_index.next(),
            "state machine at {} handed entry {} out of order",
            self.applied_index,
            entry.index
        );
        self.applied_index = entry.index;
        let EntryPayload::Command(bytes) = &entry.payload else {
            return None;
        };
        let (operation_id, command) =
            decode(bytes).expect("the simulator only proposes encoded commands");
        let output = match command {
            Command::Put { key, value } => {
                self.values.insert(key, value);
                CommandOutput::Done
            }
            Command::CompareAndSwap { key, expected, new } => {
                let swapped = self.get(key) == expected;
                if swapped {
                    self.values.insert(key, new);
                }
                CommandOutput::Swapped(swapped)
            }
            Command::Probe => CommandOutput::Done,
        };
        Some((operation_id, output))
    }

    /// Serializes the store for a snapshot.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(8 + 16 * self.values.len());
        bytes.extend_from_slice(&self.applied_index.0.to_le_bytes());
        for (key, value) in &self.values {
            bytes.extend_from_slice(&key.to_le_bytes());
            bytes.extend_from_slice(&value.to_le_bytes());
        }
        bytes
    }

    /// Restores what `to_bytes` produced.
    pub fn from_bytes(bytes: &[u8]) -> KvStore {
        assert!(
            bytes.len() >= 8 && bytes[8..].chunks_exact(16).remainder().is_empty(),
            "corrupt snapshot of {} bytes",
            bytes.len()
        );
        let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let values = (8..bytes.len())
            .step_by(16)
            .map(|at| (word(at), word(at + 8)))
            .collect();
        KvStore {
            values,
            applied_index: LogIndex(word(0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftgres::core::Term;

    fn entry(index: u64, operation_id: u64, command: Command) -> Entry {
        Entry {
            term: Term(1),
            index: LogIndex(index),
            payload: EntryPayload::Command(encode(operation_id, command)),
        }
    }

    #[test]
    fn commands_round_trip_through_their_encoding() {
        for command in [
            Command::Put { key: 3, value: 9 },
            Command::CompareAndSwap {
                key: 1,
                expected: 2,
                new: 5,
            },
            Command::Probe,
        ] {
            assert_eq!(decode(&encode(77, command)), Some((77, command)));
        }
        assert_eq!(decode(b"short"), None);
    }

    #[test]
    fn compare_and_swap_swaps_only_on_the_expected_value_and_snapshots_restore() {
        let mut store = KvStore::default();
        assert_eq!(
            store.apply(&entry(1, 1, Command::Put { key: 1, value: 10 })),
            Some((1, CommandOutput::Done))
        );
        let failed = Command::CompareAndSwap {
            key: 1,
            expected: 11,
            new: 12,
        };
        assert_eq!(
            store.apply(&entry(2, 2, failed)),
            Some((2, CommandOutput::Swapped(false)))
        );
        let swapped = Command::CompareAndSwap {
            key: 1,
            expected: 10,
            new: 13,
        };
        assert_eq!(
            store.apply(&entry(3, 3, swapped)),
            Some((3, CommandOutput::Swapped(true)))
        );
        assert_eq!(store.get(1), 13);
        assert_eq!(KvStore::from_bytes(&store.to_bytes()), store);
    }
}
