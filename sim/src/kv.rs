//! The replicated state machine the simulated clients talk to: a small
//! key-value store with put and compare-and-swap, and client sessions that
//! apply each (client id, sequence) at most once, as the production node's
//! Postgres state machine does (`node/src/server/storage.rs`,
//! `apply_segment`): a retry of the latest sequence is answered with the
//! first application's response and index, an older sequence is refused,
//! and sessions expire at the log positions `raftgres::pipeline::sessions`
//! names, whatever the apply batches (`tests/tests/kv_contract/` holds the
//! model to the Postgres state machine). Gets are served from the store after
//! the pipeline releases them, never through the log. Values are `u64`;
//! `VALUE_ABSENT` (0) stands for a missing key, and the workload never
//! writes it.

use std::collections::BTreeMap;

use raftgres::core::{Entry, EntryPayload, LogIndex};
use raftgres::pipeline::ApplyOutcome;

use crate::trace::Fnv1a;

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

/// A command in its session envelope, as a client proposes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The client's session; 0 for a write without a session.
    pub client_id: u64,
    /// The command's sequence in its session (0 without a session).
    pub sequence: u64,
    /// The client operation (the simulator's bookkeeping; ignored by the
    /// state machine).
    pub operation_id: u64,
    /// Which attempt of the operation proposed this entry (bookkeeping).
    pub attempt: u64,
    /// The command.
    pub command: Command,
}

/// What applying a command produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandOutput {
    /// A put or probe took effect.
    Done,
    /// A compare-and-swap, and whether it swapped.
    Swapped(bool),
}

impl CommandOutput {
    /// The response bytes a client receives.
    pub fn to_bytes(self) -> Vec<u8> {
        match self {
            CommandOutput::Done => vec![0],
            CommandOutput::Swapped(swapped) => vec![1, u8::from(swapped)],
        }
    }

    /// Decodes what `to_bytes` produced.
    pub fn from_bytes(bytes: &[u8]) -> Option<CommandOutput> {
        match bytes {
            [0] => Some(CommandOutput::Done),
            [1, swapped] => Some(CommandOutput::Swapped(*swapped == 1)),
            _ => None,
        }
    }
}

const ENCODED_BYTES: usize = 57;

/// Encodes `envelope` as an entry's payload.
pub fn encode(envelope: Envelope) -> Vec<u8> {
    let (tag, key, first, second) = match envelope.command {
        Command::Put { key, value } => (1u8, key, value, 0),
        Command::CompareAndSwap { key, expected, new } => (2u8, key, expected, new),
        Command::Probe => (3u8, 0, 0, 0),
    };
    let mut bytes = Vec::with_capacity(ENCODED_BYTES);
    bytes.push(tag);
    let words = [
        envelope.client_id,
        envelope.sequence,
        envelope.operation_id,
        envelope.attempt,
        key,
        first,
        second,
    ];
    for word in words {
        bytes.extend_from_slice(&word.to_le_bytes());
    }
    bytes
}

/// Decodes what `encode` produced.
pub fn decode(bytes: &[u8]) -> Option<Envelope> {
    if bytes.len() != ENCODED_BYTES {
        return None;
    }
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let (key, first, second) = (word(33), word(41), word(49));
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
    Some(Envelope {
        client_id: word(1),
        sequence: word(9),
        operation_id: word(17),
        attempt: word(25),
        command,
    })
}

/// A client's session: its latest applied sequence, that command's
/// response and where it was applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Session {
    /// The latest sequence applied.
    pub sequence: u64,
    /// Its response.
    pub output: CommandOutput,
    /// Where it was applied.
    pub index: LogIndex,
}

/// How one entry was applied, for the checkers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The entry's command, when it carries one.
    pub envelope: Option<Envelope>,
    /// Whether the command changed the state machine (a first
    /// application), rather than being answered as a repeat or refused.
    pub fresh: bool,
    /// The state machine's output, for a first application.
    pub output: Option<CommandOutput>,
}

/// The key-value rows, the session rows and the applied index, as the
/// production node keeps them in Postgres.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvStore {
    values: BTreeMap<u64, u64>,
    sessions: BTreeMap<u64, Session>,
    /// Highest applied index. Invariant: only grows, except when a leader's
    /// snapshot replaces the whole store or Postgres loses an asynchronous
    /// commit.
    applied_index: LogIndex,
}

impl KvStore {
    /// The value of `key` (`VALUE_ABSENT` when never written).
    pub fn get(&self, key: u64) -> u64 {
        self.values.get(&key).copied().unwrap_or(VALUE_ABSENT)
    }

    /// The key-value rows (a key the workload never wrote has none).
    pub fn values(&self) -> &BTreeMap<u64, u64> {
        &self.values
    }

    /// Highest applied index.
    pub fn applied_index(&self) -> LogIndex {
        self.applied_index
    }

    /// The session rows.
    pub fn sessions(&self) -> &BTreeMap<u64, Session> {
        &self.sessions
    }

    /// A digest of the rows (values and sessions): replicas at the same
    /// applied index must agree on it.
    pub fn rows_hash(&self) -> u64 {
        let mut hash = Fnv1a::default();
        for (key, value) in &self.values {
            hash.write_u64(*key);
            hash.write_u64(*value);
        }
        hash.write_u64(u64::MAX);
        for (client, session) in &self.sessions {
            hash.write_u64(*client);
            hash.write_u64(session.sequence);
            hash.write(&session.output.to_bytes());
            hash.write_u64(session.index.0);
        }
        hash.finish()
    }

    /// Applies one committed entry, the next after the applied index, and
    /// returns what the proposing client is told and what happened.
    pub fn apply(&mut self, entry: &Entry) -> (ApplyOutcome, Applied) {
        assert_eq!(
            entry.index,
            self.applied_index.next(),
            "state machine at {} handed entry {} out of order",
            self.applied_index,
            entry.index
        );
        self.applied_index = entry.index;
        let EntryPayload::Command(bytes) = &entry.payload else {
            let applied = Applied {
                envelope: None,
                fresh: false,
                output: None,
            };
            return (ApplyOutcome::Response(Vec::new()), applied);
        };
        let envelope = decode(bytes).expect("the simulator only proposes encoded commands");
        let mut applied = Applied {
            envelope: Some(envelope),
            fresh: false,
            output: None,
        };
        if envelope.client_id != 0 {
            if let Some(last) = self.sessions.get(&envelope.client_id) {
                if envelope.sequence == last.sequence {
                    let outcome = ApplyOutcome::Repeated {
                        response: last.output.to_bytes(),
                        first_index: last.index,
                    };
                    return (outcome, applied);
                }
                if envelope.sequence < last.sequence {
                    let reason = format!(
                        "sequence {} of client {} is older than its latest applied sequence {}",
                        envelope.sequence, envelope.client_id, last.sequence
                    );
                    return (ApplyOutcome::Refused(reason), applied);
                }
            }
        }
        let output = self.execute(envelope.command);
        if envelope.client_id != 0 {
            let session = Session {
                sequence: envelope.sequence,
                output,
                index: entry.index,
            };
            self.sessions.insert(envelope.client_id, session);
        }
        applied.fresh = true;
        applied.output = Some(output);
        (ApplyOutcome::Response(output.to_bytes()), applied)
    }

    fn execute(&mut self, command: Command) -> CommandOutput {
        match command {
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
        }
    }

    /// Forgets the sessions last used before `index`.
    pub fn expire_sessions_before(&mut self, index: LogIndex) {
        self.sessions.retain(|_, session| session.index >= index);
    }

    /// Serializes the store for a snapshot.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut words = vec![self.applied_index.0, self.values.len() as u64];
        for (key, value) in &self.values {
            words.extend([*key, *value]);
        }
        for (client, session) in &self.sessions {
            let (tag, swapped) = match session.output {
                CommandOutput::Done => (0, 0),
                CommandOutput::Swapped(swapped) => (1, u64::from(swapped)),
            };
            words.extend([*client, session.sequence, tag, swapped, session.index.0]);
        }
        words.iter().flat_map(|word| word.to_le_bytes()).collect()
    }

    /// Restores what `to_bytes` produced. Corrupt bytes are an error, never
    /// an empty store (issue 9, item 9).
    pub fn from_bytes(bytes: &[u8]) -> Result<KvStore, String> {
        let corrupt = || format!("corrupt snapshot of {} bytes", bytes.len());
        if !bytes.len().is_multiple_of(8) || bytes.len() < 16 {
            return Err(corrupt());
        }
        let words: Vec<u64> = bytes
            .chunks_exact(8)
            .map(|chunk| u64::from_le_bytes(chunk.try_into().expect("8 bytes")))
            .collect();
        let values_count = usize::try_from(words[1]).map_err(|_| corrupt())?;
        let values_end = values_count
            .checked_mul(2)
            .and_then(|count| count.checked_add(2))
            .filter(|end| *end <= words.len())
            .ok_or_else(corrupt)?;
        if !(words.len() - values_end).is_multiple_of(5) {
            return Err(corrupt());
        }
        let values = words[2..values_end]
            .chunks_exact(2)
            .map(|pair| (pair[0], pair[1]))
            .collect();
        let mut sessions = BTreeMap::new();
        for row in words[values_end..].chunks_exact(5) {
            let output = match (row[2], row[3]) {
                (0, 0) => CommandOutput::Done,
                (1, swapped) if swapped <= 1 => CommandOutput::Swapped(swapped == 1),
                _ => return Err(corrupt()),
            };
            let session = Session {
                sequence: row[1],
                output,
                index: LogIndex(row[4]),
            };
            sessions.insert(row[0], session);
        }
        Ok(KvStore {
            values,
            sessions,
            applied_index: LogIndex(words[0]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftgres::core::Term;

    fn envelope(client_id: u64, sequence: u64, command: Command) -> Envelope {
        Envelope {
            client_id,
            sequence,
            operation_id: 40 + sequence,
            attempt: 1,
            command,
        }
    }

    fn entry(index: u64, envelope: Envelope) -> Entry {
        Entry {
            term: Term(1),
            index: LogIndex(index),
            payload: EntryPayload::Command(encode(envelope)),
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
            let sent = envelope(7, 3, command);
            assert_eq!(decode(&encode(sent)), Some(sent));
        }
        assert_eq!(decode(b"short"), None);
    }

    #[test]
    fn compare_and_swap_swaps_only_on_the_expected_value_and_snapshots_restore() {
        let mut store = KvStore::default();
        let (outcome, _) = store.apply(&entry(
            1,
            envelope(0, 0, Command::Put { key: 1, value: 10 }),
        ));
        assert_eq!(
            outcome,
            ApplyOutcome::Response(CommandOutput::Done.to_bytes())
        );
        let failed = Command::CompareAndSwap {
            key: 1,
            expected: 11,
            new: 12,
        };
        let (_, applied) = store.apply(&entry(2, envelope(5, 1, failed)));
        assert_eq!(applied.output, Some(CommandOutput::Swapped(false)));
        let swapped = Command::CompareAndSwap {
            key: 1,
            expected: 10,
            new: 13,
        };
        let (_, applied) = store.apply(&entry(3, envelope(5, 2, swapped)));
        assert_eq!(applied.output, Some(CommandOutput::Swapped(true)));
        assert_eq!(store.get(1), 13);
        assert_eq!(KvStore::from_bytes(&store.to_bytes()), Ok(store));
    }

    #[test]
    fn a_retry_of_a_session_command_is_answered_not_applied_again() {
        let mut store = KvStore::default();
        let put = envelope(9, 1, Command::Put { key: 1, value: 10 });
        let (_, first) = store.apply(&entry(1, put));
        assert!(first.fresh);
        store.apply(&entry(
            2,
            envelope(0, 0, Command::Put { key: 1, value: 11 }),
        ));
        let (outcome, again) = store.apply(&entry(3, put));
        assert!(!again.fresh);
        assert_eq!(
            outcome,
            ApplyOutcome::Repeated {
                response: CommandOutput::Done.to_bytes(),
                first_index: LogIndex(1)
            }
        );
        assert_eq!(store.get(1), 11, "the retry changed nothing");
        let (outcome, _) = store.apply(&entry(4, envelope(9, 0, Command::Probe)));
        assert!(matches!(outcome, ApplyOutcome::Refused(_)), "{outcome:?}");
        store.expire_sessions_before(LogIndex(2));
        let (_, after_expiry) = store.apply(&entry(5, put));
        assert!(after_expiry.fresh, "an expired session forgets the command");
    }

    #[test]
    fn corrupt_snapshot_bytes_are_an_error_not_an_empty_store() {
        assert!(KvStore::from_bytes(&[1, 2, 3]).is_err());
        let mut bytes = KvStore::default().to_bytes();
        bytes[8] = 9;
        assert!(KvStore::from_bytes(&bytes).is_err());
    }
}
