//! The replicated state machine the simulated clients talk to: the
//! product's key-value store (`raftgres::mvcc::MvccStore`, etcd's MVCC
//! rules: revisions, per-key versions, history, compaction, the very
//! `mvcc::apply` the Postgres state machine runs) behind the simulator's
//! small command set (put, compare-and-swap, compaction, probe), and
//! client sessions that apply each (client id, sequence) at most once, as
//! the production node's Postgres state machine does
//! (`node/src/server/storage.rs`, `apply_segment`): a retry of the latest
//! sequence is answered with the first application's response and index,
//! an older sequence is refused, and sessions expire at the log positions
//! `raftgres::pipeline::sessions` names, whatever the apply batches
//! (`tests/tests/kv_contract/` holds the model to the Postgres state
//! machine). Gets are served from the store after the pipeline releases
//! them, never through the log.
//!
//! Keys and values are `u64`s, stored as their 8 big-endian bytes; a put
//! and a compare-and-swap become the mvcc commands the product makes of
//! `raftgres.v1` put and compare-and-swap (`KvCommand::to_mvcc` in
//! `node/src/server/kv/mod.rs`): a put that answers the previous value,
//! and a transaction that compares the value (or, for `VALUE_ABSENT`, that
//! the key was never created) and puts. `VALUE_ABSENT` (0) stands for a
//! missing key, and the workload never writes it. Leases are etcd's: a
//! grant and a revoke are the product's `mvcc::Command::LeaseGrant` and
//! `LeaseRevoke` (a revoke deletes every key attached to the lease, at one
//! revision), and a put may attach its key to a lease.

use std::collections::BTreeMap;

use raftgres::core::{Entry, EntryPayload, LogIndex};
use raftgres::mvcc::{
    self, Answer, Event, KeyValue, KvError, MvccStore, ResponseOp, Revision, Revisions,
};
use raftgres::pipeline::ApplyOutcome;

use crate::trace::Fnv1a;

/// The value a key has before anyone writes it.
pub const VALUE_ABSENT: u64 = 0;

/// A command carried in a log entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Sets `key` to `value`, attached to lease `lease` (0: none).
    Put {
        /// The key.
        key: u64,
        /// The new value (never `VALUE_ABSENT`).
        value: u64,
        /// The lease the key is attached to (0: none); refused when the
        /// store holds no such lease.
        lease: i64,
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
    /// Forgets the history below `revision` (etcd's compaction): refused
    /// at or below the compaction point and beyond the current revision.
    Compact {
        /// The new compaction point.
        revision: Revision,
    },
    /// Creates lease `id` (positive) of `ttl` seconds: refused when it
    /// exists.
    LeaseGrant {
        /// The lease.
        id: i64,
        /// Its time to live, in seconds (positive).
        ttl: i64,
    },
    /// Ends lease `id` and deletes every key attached to it: refused when
    /// it does not exist.
    LeaseRevoke {
        /// The lease.
        id: i64,
    },
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
    /// A compaction: done, or why it was refused.
    Compaction(Result<(), CompactionRefused>),
    /// A lease grant: whether it created the lease (refused when it
    /// existed).
    LeaseGrant(bool),
    /// A lease revoke: `None` when the lease did not exist, otherwise
    /// whether it deleted keys (and so advanced the revision).
    LeaseRevoke(Option<bool>),
    /// A put refused because its lease does not exist.
    LeaseNotFound,
}

/// Why a compaction was refused (etcd's errors), changing nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompactionRefused {
    /// At or below the compaction point.
    Compacted,
    /// Beyond the current revision.
    FutureRevision,
}

impl CommandOutput {
    /// The response bytes a client receives.
    pub fn to_bytes(self) -> Vec<u8> {
        match self {
            CommandOutput::Done => vec![0],
            CommandOutput::Swapped(swapped) => vec![1, u8::from(swapped)],
            CommandOutput::Compaction(result) => vec![2, compaction_code(result)],
            CommandOutput::LeaseGrant(granted) => vec![3, u8::from(granted)],
            CommandOutput::LeaseRevoke(revoked) => vec![4, revoke_code(revoked)],
            CommandOutput::LeaseNotFound => vec![5],
        }
    }

    /// Decodes what `to_bytes` produced.
    pub fn from_bytes(bytes: &[u8]) -> Option<CommandOutput> {
        match bytes {
            [0] => Some(CommandOutput::Done),
            [1, swapped] if *swapped <= 1 => Some(CommandOutput::Swapped(*swapped == 1)),
            [2, code] => compaction_result(*code).map(CommandOutput::Compaction),
            [3, granted] if *granted <= 1 => Some(CommandOutput::LeaseGrant(*granted == 1)),
            [4, code] => revoke_result(*code).map(CommandOutput::LeaseRevoke),
            [5] => Some(CommandOutput::LeaseNotFound),
            _ => None,
        }
    }
}

impl CommandOutput {
    /// One word that tells outputs apart, for digests.
    fn code(self) -> u64 {
        match self {
            CommandOutput::Done => 0,
            CommandOutput::Swapped(swapped) => 1 + u64::from(swapped),
            CommandOutput::Compaction(result) => 3 + u64::from(compaction_code(result)),
            CommandOutput::LeaseGrant(granted) => 6 + u64::from(granted),
            CommandOutput::LeaseRevoke(revoked) => 8 + u64::from(revoke_code(revoked)),
            CommandOutput::LeaseNotFound => 11,
        }
    }

    /// The tag and detail a snapshot's session row stores.
    fn session_code(self) -> (u64, u64) {
        match self {
            CommandOutput::Done => (0, 0),
            CommandOutput::Swapped(swapped) => (1, u64::from(swapped)),
            CommandOutput::Compaction(result) => (2, u64::from(compaction_code(result))),
            CommandOutput::LeaseGrant(granted) => (3, u64::from(granted)),
            CommandOutput::LeaseRevoke(revoked) => (4, u64::from(revoke_code(revoked))),
            CommandOutput::LeaseNotFound => (5, 0),
        }
    }

    /// What [`CommandOutput::session_code`] stored.
    fn from_session_code(tag: u64, detail: u64) -> Option<CommandOutput> {
        let detail = u8::try_from(detail).ok()?;
        match (tag, detail) {
            (0, 0) => Some(CommandOutput::Done),
            (1, swapped) if swapped <= 1 => Some(CommandOutput::Swapped(swapped == 1)),
            (2, code) => compaction_result(code).map(CommandOutput::Compaction),
            (3, granted) if granted <= 1 => Some(CommandOutput::LeaseGrant(granted == 1)),
            (4, code) => revoke_result(code).map(CommandOutput::LeaseRevoke),
            (5, 0) => Some(CommandOutput::LeaseNotFound),
            _ => None,
        }
    }
}

fn revoke_code(revoked: Option<bool>) -> u8 {
    match revoked {
        None => 0,
        Some(deleted_keys) => 1 + u8::from(deleted_keys),
    }
}

fn revoke_result(code: u8) -> Option<Option<bool>> {
    match code {
        0 => Some(None),
        1 => Some(Some(false)),
        2 => Some(Some(true)),
        _ => None,
    }
}

fn compaction_code(result: Result<(), CompactionRefused>) -> u8 {
    match result {
        Ok(()) => 0,
        Err(CompactionRefused::Compacted) => 1,
        Err(CompactionRefused::FutureRevision) => 2,
    }
}

fn compaction_result(code: u8) -> Option<Result<(), CompactionRefused>> {
    match code {
        0 => Some(Ok(())),
        1 => Some(Err(CompactionRefused::Compacted)),
        2 => Some(Err(CompactionRefused::FutureRevision)),
        _ => None,
    }
}

const ENCODED_BYTES: usize = 57;
/// The first byte of an encoded compaction.
const COMPACT_TAG: u8 = 4;
/// The first byte of an encoded lease grant.
const LEASE_GRANT_TAG: u8 = 5;
/// The first byte of an encoded lease revoke.
const LEASE_REVOKE_TAG: u8 = 6;

/// Encodes `envelope` as an entry's payload.
pub fn encode(envelope: Envelope) -> Vec<u8> {
    // Lease ids and TTLs are never negative (the workload's, and
    // `decode` refuses them), so they fit a word as they are.
    let (tag, key, first, second) = match envelope.command {
        Command::Put { key, value, lease } => (1u8, key, value, lease as u64),
        Command::CompareAndSwap { key, expected, new } => (2u8, key, expected, new),
        Command::Probe => (3u8, 0, 0, 0),
        // Compaction points are never negative (`mvcc::check_command`).
        Command::Compact { revision } => (COMPACT_TAG, 0, revision as u64, 0),
        Command::LeaseGrant { id, ttl } => (LEASE_GRANT_TAG, 0, id as u64, ttl as u64),
        Command::LeaseRevoke { id } => (LEASE_REVOKE_TAG, 0, id as u64, 0),
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
    let lease_word = |word: u64| i64::try_from(word).ok();
    let command = match bytes[0] {
        1 => Command::Put {
            key,
            value: first,
            lease: lease_word(second)?,
        },
        2 => Command::CompareAndSwap {
            key,
            expected: first,
            new: second,
        },
        3 => Command::Probe,
        COMPACT_TAG => Command::Compact {
            revision: Revision::try_from(first).ok()?,
        },
        LEASE_GRANT_TAG => Command::LeaseGrant {
            id: lease_word(first)?,
            ttl: lease_word(second)?,
        },
        LEASE_REVOKE_TAG => Command::LeaseRevoke {
            id: lease_word(first)?,
        },
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
    /// The store's revision after the entry.
    pub revision: Revision,
}

/// The key-value store (rows, history, revisions), the session rows and
/// the applied index, as the production node keeps them in Postgres.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvStore {
    /// The rows, their history, the revisions and the leases. Invariant:
    /// keys and values are 8 bytes (a `u64`, big-endian).
    mvcc: MvccStore,
    /// The history's digest (`history_digest`), kept as changes are
    /// applied, since `rows_hash` runs after every apply segment and the
    /// history is dozens of changes long. Invariant: equals
    /// `history_digest(&mvcc)`.
    history_digest: u64,
    sessions: BTreeMap<u64, Session>,
    /// Highest applied index. Invariant: only grows, except when a leader's
    /// snapshot replaces the whole store or Postgres loses an asynchronous
    /// commit.
    applied_index: LogIndex,
}

/// The stored form of a key or value.
fn bytes_of(word: u64) -> Vec<u8> {
    word.to_be_bytes().to_vec()
}

/// The `u64` a stored key or value holds.
fn word_of(bytes: &[u8]) -> u64 {
    u64::from_be_bytes(
        bytes
            .try_into()
            .unwrap_or_else(|_| panic!("the store holds {bytes:?}, not an 8-byte word")),
    )
}

impl KvStore {
    /// The value of `key` (`VALUE_ABSENT` when never written).
    pub fn get(&self, key: u64) -> u64 {
        self.mvcc
            .get(&key.to_be_bytes())
            .map_or(VALUE_ABSENT, |row| word_of(&row.value))
    }

    /// The key-value rows (a key the workload never wrote has none).
    pub fn values(&self) -> BTreeMap<u64, u64> {
        self.mvcc
            .rows()
            .values()
            .map(|row| (word_of(&row.key), word_of(&row.value)))
            .collect()
    }

    /// The store's revisions (current and compaction point).
    pub fn revisions(&self) -> Revisions {
        self.mvcc.revisions()
    }

    /// The rows with their revisions and versions, and the history.
    pub fn mvcc(&self) -> &MvccStore {
        &self.mvcc
    }

    /// Highest applied index.
    pub fn applied_index(&self) -> LogIndex {
        self.applied_index
    }

    /// The leases the store holds, with their granted TTLs in seconds.
    pub fn leases(&self) -> &BTreeMap<i64, i64> {
        self.mvcc.leases()
    }

    /// The session rows.
    pub fn sessions(&self) -> &BTreeMap<u64, Session> {
        &self.sessions
    }

    /// A digest of the rows (current rows with their revisions and
    /// versions, the history, the revisions, and the sessions): replicas
    /// at the same applied index must agree on it.
    pub fn rows_hash(&self) -> u64 {
        debug_assert_eq!(
            self.history_digest,
            history_digest(&self.mvcc),
            "the kept history digest is the history's"
        );
        let mut hash = Fnv1a::default();
        for row in self.mvcc.rows().values() {
            hash_row(&mut hash, row);
        }
        hash.write_u64(u64::MAX);
        hash.write_u64(self.history_digest);
        let revisions = self.mvcc.revisions();
        hash.write_u64(revisions.current as u64);
        hash.write_u64(revisions.compacted as u64);
        for (client, session) in &self.sessions {
            hash.write_u64(*client);
            hash.write_u64(session.sequence);
            hash.write_u64(session.output.code());
            hash.write_u64(session.index.0);
        }
        if !self.mvcc.leases().is_empty() {
            hash.write_u64(u64::MAX);
            for (id, ttl) in self.mvcc.leases() {
                hash.write_u64(*id as u64);
                hash.write_u64(*ttl as u64);
            }
        }
        hash.finish()
    }

    /// Applies one committed entry, the next after the applied index, and
    /// returns what the proposing client is told, what happened, and the
    /// changes it made to the keys (the history's new events, in order).
    pub fn apply(&mut self, entry: &Entry) -> (ApplyOutcome, Applied, Vec<Event>) {
        assert_eq!(
            entry.index,
            self.applied_index.next(),
            "state machine at {} handed entry {} out of order",
            self.applied_index,
            entry.index
        );
        self.applied_index = entry.index;
        let mut applied = Applied {
            envelope: None,
            fresh: false,
            output: None,
            revision: self.mvcc.revisions().current,
        };
        let EntryPayload::Command(bytes) = &entry.payload else {
            return (ApplyOutcome::Response(Vec::new()), applied, Vec::new());
        };
        let envelope = decode(bytes).expect("the simulator only proposes encoded commands");
        applied.envelope = Some(envelope);
        if envelope.client_id != 0 {
            if let Some(last) = self.sessions.get(&envelope.client_id) {
                if envelope.sequence == last.sequence {
                    let outcome = ApplyOutcome::Repeated {
                        response: last.output.to_bytes(),
                        first_index: last.index,
                    };
                    return (outcome, applied, Vec::new());
                }
                if envelope.sequence < last.sequence {
                    let reason = format!(
                        "sequence {} of client {} is older than its latest applied sequence {}",
                        envelope.sequence, envelope.client_id, last.sequence
                    );
                    return (ApplyOutcome::Refused(reason), applied, Vec::new());
                }
            }
        }
        let (output, changes) = self.execute(envelope.command, entry.index);
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
        applied.revision = self.mvcc.revisions().current;
        (ApplyOutcome::Response(output.to_bytes()), applied, changes)
    }

    /// Runs `command` through the product's MVCC rules. A refusal other
    /// than a compaction's or a lease's cannot happen to the simulator's
    /// commands (no kept values): one is a broken invariant.
    fn execute(&mut self, command: Command, index: LogIndex) -> (CommandOutput, Vec<Event>) {
        let Some(applied) = to_mvcc(command) else {
            return (CommandOutput::Done, Vec::new());
        };
        let (outcome, changes) = self.mvcc.apply(&applied);
        for change in &changes {
            self.history_digest = self.history_digest.wrapping_add(change_digest(change));
        }
        if matches!(outcome.result, Ok(Answer::Compacted)) {
            self.history_digest = history_digest(&self.mvcc);
        }
        let output = match (command, outcome.result) {
            (Command::Put { .. }, Ok(Answer::Op(ResponseOp::Put(_)))) => CommandOutput::Done,
            (Command::Put { .. }, Err(KvError::LeaseNotFound)) => CommandOutput::LeaseNotFound,
            (Command::CompareAndSwap { .. }, Ok(Answer::Op(ResponseOp::Txn(txn)))) => {
                CommandOutput::Swapped(txn.succeeded)
            }
            (Command::Compact { .. }, Ok(Answer::Compacted)) => CommandOutput::Compaction(Ok(())),
            (Command::Compact { .. }, Err(KvError::Compacted)) => {
                CommandOutput::Compaction(Err(CompactionRefused::Compacted))
            }
            (Command::Compact { .. }, Err(KvError::FutureRevision)) => {
                CommandOutput::Compaction(Err(CompactionRefused::FutureRevision))
            }
            (Command::LeaseGrant { .. }, Ok(Answer::LeaseGranted)) => {
                CommandOutput::LeaseGrant(true)
            }
            (Command::LeaseGrant { .. }, Err(KvError::LeaseExists)) => {
                CommandOutput::LeaseGrant(false)
            }
            (Command::LeaseRevoke { .. }, Ok(Answer::LeaseRevoked)) => {
                CommandOutput::LeaseRevoke(Some(!changes.is_empty()))
            }
            (Command::LeaseRevoke { .. }, Err(KvError::LeaseNotFound)) => {
                CommandOutput::LeaseRevoke(None)
            }
            (command, result) => {
                panic!("the store answered {command:?} at index {index} with {result:?}")
            }
        };
        (output, changes)
    }

    /// Forgets the sessions last used before `index`.
    pub fn expire_sessions_before(&mut self, index: LogIndex) {
        self.sessions.retain(|_, session| session.index >= index);
    }

    /// Where the store is now, to roll back to (see
    /// [`KvStore::rolled_back`]): cheaper than a copy, since the history
    /// is only appended to until the next compaction.
    pub fn mark(&self) -> Mark {
        Mark {
            applied_index: self.applied_index,
            revisions: self.mvcc.revisions(),
            sessions: self.sessions.clone(),
            leases: self.mvcc.leases().clone(),
        }
    }

    /// The store as it was at `mark`: the changes after the mark's
    /// revision undone, the sessions, leases and applied index it kept (a
    /// grant changes no revision, so the history cannot tell). `None` when
    /// a compaction ran since the mark (the history no longer holds what
    /// it dropped).
    pub fn rolled_back(&self, mark: &Mark) -> Option<KvStore> {
        if self.mvcc.revisions().compacted != mark.revisions.compacted {
            return None;
        }
        let mut rows = Vec::new();
        let mut history = Vec::new();
        for (_, changes) in self.mvcc.history_by_key() {
            let kept = changes.partition_point(|change| change.revision <= mark.revisions.current);
            let kept = &changes[..kept];
            rows.extend(kept.last().and_then(|change| change.kv.clone()));
            history.extend(kept.iter().cloned());
        }
        let leases = mark.leases.iter().map(|(id, ttl)| (*id, *ttl));
        let mvcc = MvccStore::from_parts(rows, history, leases, mark.revisions)
            .expect("a store rolled back to an earlier revision holds together");
        Some(KvStore {
            history_digest: history_digest(&mvcc),
            mvcc,
            sessions: mark.sessions.clone(),
            applied_index: mark.applied_index,
        })
    }
}

/// Where a store was: its applied index, revisions, sessions and leases.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mark {
    applied_index: LogIndex,
    revisions: Revisions,
    sessions: BTreeMap<u64, Session>,
    leases: BTreeMap<i64, i64>,
}

impl Mark {
    /// The applied index the store was at.
    pub fn applied_index(&self) -> LogIndex {
        self.applied_index
    }
}

/// Whether `entry` carries a compaction of the store's history (asked of
/// every entry applied while asynchronous applies are unflushed: the tag
/// alone answers).
pub fn compacts(entry: &Entry) -> bool {
    matches!(&entry.payload, EntryPayload::Command(bytes)
        if bytes.len() == ENCODED_BYTES && bytes[0] == COMPACT_TAG)
}

/// The mvcc command the product makes of `command` (`None` for the probe,
/// which the product's log carries as a blank entry): the product's own
/// mapping of its single-key operations (`raftgres::mvcc::single_key`).
fn to_mvcc(command: Command) -> Option<mvcc::Command> {
    let applied = match command {
        Command::Put {
            key,
            value,
            lease: 0,
        } => mvcc::single_key::put(&bytes_of(key), &bytes_of(value)),
        // The product's etcd put with a lease (`prev_kv` as the single-key
        // put asks it).
        Command::Put { key, value, lease } => {
            mvcc::Command::Op(mvcc::RequestOp::Put(mvcc::PutRequest {
                key: bytes_of(key),
                value: bytes_of(value),
                lease,
                prev_kv: true,
                ..mvcc::PutRequest::default()
            }))
        }
        Command::CompareAndSwap { key, expected, new } => {
            let expected = (expected != VALUE_ABSENT).then(|| bytes_of(expected));
            mvcc::single_key::compare_and_swap(
                &bytes_of(key),
                expected.as_deref(),
                Some(&bytes_of(new)),
            )
        }
        Command::Compact { revision } => mvcc::Command::Compact(revision),
        Command::LeaseGrant { id, ttl } => mvcc::Command::LeaseGrant { id, ttl },
        Command::LeaseRevoke { id } => mvcc::Command::LeaseRevoke(id),
        Command::Probe => return None,
    };
    Some(applied)
}

/// A digest of the whole history: the wrapping sum of its changes'
/// digests (no two changes share a revision and sub), so that a change
/// applied adds its own, whatever the order.
fn history_digest(mvcc: &MvccStore) -> u64 {
    mvcc.history_by_key()
        .flat_map(|(_, changes)| changes)
        .fold(0, |digest, change| {
            digest.wrapping_add(change_digest(change))
        })
}

fn change_digest(change: &Event) -> u64 {
    let mut hash = Fnv1a::default();
    hash.write_u64(change.revision as u64);
    hash.write_u64(change.sub as u64);
    hash.write_u64(word_of(&change.key));
    match &change.kv {
        Some(row) => hash_row(&mut hash, row),
        None => hash.write_u64(u64::MAX),
    }
    hash.finish()
}

fn hash_row(hash: &mut Fnv1a, row: &KeyValue) {
    hash.write_u64(word_of(&row.key));
    hash.write_u64(word_of(&row.value));
    hash.write_u64(row.create_revision as u64);
    hash.write_u64(row.mod_revision as u64);
    hash.write_u64(row.version as u64);
    hash.write_u64(row.lease as u64);
}

/// A snapshot is a sequence of LEB128 varints (the simulator streams it
/// in chunks of 16 bytes and up, so it is kept about as short as the
/// model's state was before it had a history): the applied index, the
/// current revision, the compaction point, the number of rows (times 2,
/// plus 1 when leases follow the sessions), the numbers of changes and
/// sessions; each row (key, value, create revision, mod revision,
/// version); each change (revision, sub, key, then 0 for a delete, or 1
/// and the put's value, create revision, version); each session (client,
/// sequence, output tag and detail, index). Then, only when the store
/// holds a lease or a key attached to one (so that a store without leases
/// is written as long as before): the number of leases and each (id, TTL); the
/// number of attached rows and each (position among the rows, lease); the
/// number of attached changes and each (position among the changes,
/// lease), positions ascending.
struct SnapshotWriter(Vec<u8>);

impl SnapshotWriter {
    fn word(&mut self, mut word: u64) {
        while word >= 0x80 {
            self.0.push(word as u8 | 0x80);
            word >>= 7;
        }
        self.0.push(word as u8);
    }

    fn revision(&mut self, revision: Revision) {
        self.word(u64::try_from(revision).expect("revisions are never negative"));
    }
}

/// Reads what [`SnapshotWriter`] wrote; `None` at corrupt bytes.
struct SnapshotReader<'a> {
    bytes: &'a [u8],
}

impl SnapshotReader<'_> {
    fn word(&mut self) -> Option<u64> {
        let mut word = 0u64;
        for (position, byte) in self.bytes.iter().enumerate().take(10) {
            let bits = u64::from(byte & 0x7f);
            if position == 9 && bits > 1 {
                return None;
            }
            word |= bits << (7 * position);
            if byte & 0x80 == 0 {
                self.bytes = &self.bytes[position + 1..];
                return Some(word);
            }
        }
        None
    }

    fn revision(&mut self) -> Option<Revision> {
        Revision::try_from(self.word()?).ok()
    }

    /// A count of items of at least `bytes_each` bytes that the rest can
    /// hold.
    fn count(&mut self, bytes_each: usize) -> Option<usize> {
        usize::try_from(self.word()?)
            .ok()
            .filter(|count| count.saturating_mul(bytes_each) <= self.bytes.len())
    }

    /// A put's row for `key` at `mod_revision`: value, create revision,
    /// version.
    fn row(&mut self, key: u64, mod_revision: Revision) -> Option<KeyValue> {
        Some(KeyValue {
            key: bytes_of(key),
            value: bytes_of(self.word()?),
            create_revision: self.revision()?,
            mod_revision,
            version: i64::try_from(self.word()?).ok()?,
            lease: 0,
        })
    }

    fn change(&mut self) -> Option<Event> {
        let revision = self.revision()?;
        let sub = i64::try_from(self.word()?).ok()?;
        let key = self.word()?;
        let kv = match self.word()? {
            0 => None,
            1 => Some(self.row(key, revision)?),
            _ => return None,
        };
        Some(Event {
            revision,
            sub,
            kv,
            key: bytes_of(key),
        })
    }

    fn session(&mut self) -> Option<(u64, Session)> {
        let client = self.word()?;
        let sequence = self.word()?;
        let (tag, detail) = (self.word()?, self.word()?);
        let output = CommandOutput::from_session_code(tag, detail)?;
        let index = LogIndex(self.word()?);
        Some((
            client,
            Session {
                sequence,
                output,
                index,
            },
        ))
    }
}

impl KvStore {
    /// Serializes the store for a snapshot: the applied index, the
    /// revisions, the current rows, the history and the sessions (see
    /// [`SnapshotWriter`]).
    pub fn to_bytes(&self) -> Vec<u8> {
        let revisions = self.mvcc.revisions();
        let rows = self.mvcc.rows();
        let mut writer = SnapshotWriter(Vec::new());
        writer.word(self.applied_index.0);
        writer.revision(revisions.current);
        writer.revision(revisions.compacted);
        let leases = self.lease_parts();
        writer.word(rows.len() as u64 * 2 + u64::from(leases.is_some()));
        writer.word(self.mvcc.history_len() as u64);
        writer.word(self.sessions.len() as u64);
        for row in rows.values() {
            writer.word(word_of(&row.key));
            writer.word(word_of(&row.value));
            writer.revision(row.create_revision);
            writer.revision(row.mod_revision);
            writer.revision(row.version);
        }
        for (_, changes) in self.mvcc.history_by_key() {
            for change in changes {
                writer.revision(change.revision);
                writer.revision(change.sub);
                writer.word(word_of(&change.key));
                match &change.kv {
                    None => writer.word(0),
                    Some(row) => {
                        writer.word(1);
                        writer.word(word_of(&row.value));
                        writer.revision(row.create_revision);
                        writer.revision(row.version);
                    }
                }
            }
        }
        for (client, session) in &self.sessions {
            let (tag, detail) = session.output.session_code();
            for word in [*client, session.sequence, tag, detail, session.index.0] {
                writer.word(word);
            }
        }
        if let Some((leases, attached_rows, attached_changes)) = leases {
            writer.word(leases.len() as u64);
            for (id, ttl) in leases {
                writer.word(u64::try_from(*id).expect("lease ids are positive"));
                writer.word(u64::try_from(*ttl).expect("lease TTLs are never negative"));
            }
            for attached in [attached_rows, attached_changes] {
                writer.word(attached.len() as u64);
                for (position, lease) in attached {
                    writer.word(position as u64);
                    writer.word(u64::try_from(lease).expect("lease ids are positive"));
                }
            }
        }
        writer.0
    }

    /// The leases and the attachments of rows and changes (position,
    /// lease), when there are any (see [`SnapshotWriter`]).
    #[allow(clippy::type_complexity)]
    fn lease_parts(&self) -> Option<(&BTreeMap<i64, i64>, Vec<(usize, i64)>, Vec<(usize, i64)>)> {
        let leases = self.mvcc.leases();
        let attached_rows: Vec<(usize, i64)> = (self.mvcc.rows().values())
            .enumerate()
            .filter(|(_, row)| row.lease != 0)
            .map(|(position, row)| (position, row.lease))
            .collect();
        let attached_changes: Vec<(usize, i64)> = (self.mvcc.history_by_key())
            .flat_map(|(_, changes)| changes)
            .enumerate()
            .filter_map(|(position, change)| {
                let lease = change.kv.as_ref().map_or(0, |row| row.lease);
                (lease != 0).then_some((position, lease))
            })
            .collect();
        let none = leases.is_empty() && attached_rows.is_empty() && attached_changes.is_empty();
        (!none).then_some((leases, attached_rows, attached_changes))
    }

    /// Restores what `to_bytes` produced. Corrupt bytes are an error, never
    /// an empty store (issue 9, item 9), and so are rows, history and
    /// revisions that do not hold together (`MvccStore::from_parts`).
    pub fn from_bytes(bytes: &[u8]) -> Result<KvStore, String> {
        let corrupt = || format!("corrupt snapshot of {} bytes", bytes.len());
        let mut reader = SnapshotReader { bytes };
        let parts = reader
            .parts()
            .filter(|_| reader.bytes.is_empty())
            .ok_or_else(corrupt)?;
        let mvcc = MvccStore::from_parts(parts.rows, parts.history, parts.leases, parts.revisions)
            .map_err(|error| format!("{}: {error}", corrupt()))?;
        Ok(KvStore {
            history_digest: history_digest(&mvcc),
            mvcc,
            sessions: parts.sessions,
            applied_index: parts.applied_index,
        })
    }
}

/// What a snapshot holds, decoded.
struct SnapshotParts {
    applied_index: LogIndex,
    revisions: Revisions,
    rows: Vec<KeyValue>,
    history: Vec<Event>,
    sessions: BTreeMap<u64, Session>,
    leases: Vec<(i64, i64)>,
}

impl SnapshotReader<'_> {
    /// Everything a snapshot holds, in [`SnapshotWriter`]'s order; `None`
    /// at corrupt bytes (sessions out of client order included).
    fn parts(&mut self) -> Option<SnapshotParts> {
        let applied_index = LogIndex(self.word()?);
        let revisions = Revisions {
            current: self.revision()?,
            compacted: self.revision()?,
        };
        let rows_word = self.word()?;
        let leases_follow = rows_word & 1 == 1;
        let rows_count = usize::try_from(rows_word >> 1)
            .ok()
            .filter(|count| count.saturating_mul(5) <= self.bytes.len())?;
        let changes_count = self.count(4)?;
        let sessions_count = self.count(5)?;
        let mut rows = Vec::with_capacity(rows_count);
        for _ in 0..rows_count {
            let key = self.word()?;
            let value = self.word()?;
            let create_revision = self.revision()?;
            let mod_revision = self.revision()?;
            let version = self.revision()?;
            rows.push(KeyValue {
                key: bytes_of(key),
                value: bytes_of(value),
                create_revision,
                mod_revision,
                version,
                lease: 0,
            });
        }
        let mut history = (0..changes_count)
            .map(|_| self.change())
            .collect::<Option<Vec<Event>>>()?;
        let mut sessions = BTreeMap::new();
        for _ in 0..sessions_count {
            let (client, session) = self.session()?;
            if sessions
                .last_key_value()
                .is_some_and(|(last, _)| *last >= client)
            {
                return None;
            }
            sessions.insert(client, session);
        }
        let leases = if leases_follow {
            self.leases(&mut rows, &mut history)?
        } else {
            Vec::new()
        };
        Some(SnapshotParts {
            applied_index,
            revisions,
            rows,
            history,
            sessions,
            leases,
        })
    }

    /// The leases, and the attachments of `rows` and `history` (see
    /// [`SnapshotWriter`]); `None` at corrupt bytes (positions out of
    /// order or beyond the rows or changes, a lease id of 0).
    fn leases(&mut self, rows: &mut [KeyValue], history: &mut [Event]) -> Option<Vec<(i64, i64)>> {
        let leases_count = self.count(2)?;
        let mut leases = Vec::with_capacity(leases_count);
        for _ in 0..leases_count {
            leases.push((
                i64::try_from(self.word()?).ok()?,
                i64::try_from(self.word()?).ok()?,
            ));
        }
        for (position, lease) in self.attachments(rows.len())? {
            rows[position].lease = lease;
        }
        for (position, lease) in self.attachments(history.len())? {
            history[position].kv.as_mut()?.lease = lease;
        }
        Some(leases)
    }

    /// (position, lease) pairs: positions ascending and below `len`,
    /// leases positive.
    fn attachments(&mut self, len: usize) -> Option<Vec<(usize, i64)>> {
        let count = self.count(2)?;
        let mut attached: Vec<(usize, i64)> = Vec::with_capacity(count);
        for _ in 0..count {
            let position = usize::try_from(self.word()?).ok().filter(|at| *at < len)?;
            let lease = i64::try_from(self.word()?)
                .ok()
                .filter(|lease| *lease > 0)?;
            if attached.last().is_some_and(|(last, _)| *last >= position) {
                return None;
            }
            attached.push((position, lease));
        }
        Some(attached)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftgres::core::Term;
    use raftgres::mvcc::{KeyRange, RangeRequest};

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
            Command::Put {
                key: 3,
                value: 9,
                lease: 0,
            },
            Command::CompareAndSwap {
                key: 1,
                expected: 2,
                new: 5,
            },
            Command::Probe,
            Command::Compact { revision: 12 },
            Command::Put {
                key: 4,
                value: 8,
                lease: 77,
            },
            Command::LeaseGrant { id: 77, ttl: 3 },
            Command::LeaseRevoke { id: 77 },
        ] {
            let sent = envelope(7, 3, command);
            assert_eq!(decode(&encode(sent)), Some(sent));
        }
        assert_eq!(decode(b"short"), None);
        for output in [
            CommandOutput::Done,
            CommandOutput::Swapped(true),
            CommandOutput::Compaction(Ok(())),
            CommandOutput::Compaction(Err(CompactionRefused::FutureRevision)),
            CommandOutput::LeaseGrant(false),
            CommandOutput::LeaseRevoke(None),
            CommandOutput::LeaseRevoke(Some(true)),
            CommandOutput::LeaseNotFound,
        ] {
            assert_eq!(CommandOutput::from_bytes(&output.to_bytes()), Some(output));
            let (tag, detail) = output.session_code();
            assert_eq!(CommandOutput::from_session_code(tag, detail), Some(output));
        }
        let negative_lease = envelope(0, 0, Command::LeaseRevoke { id: 1 });
        let mut bytes = encode(negative_lease);
        bytes[41 + 7] = 0x80;
        assert_eq!(decode(&bytes), None, "a negative lease id is corrupt");
        assert_eq!(CommandOutput::from_bytes(&[2, 3]), None);
    }

    #[test]
    fn compare_and_swap_swaps_only_on_the_expected_value_and_snapshots_restore() {
        let mut store = KvStore::default();
        let (outcome, _, _) = store.apply(&entry(
            1,
            envelope(
                0,
                0,
                Command::Put {
                    key: 1,
                    value: 10,
                    lease: 0,
                },
            ),
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
        let (_, applied, _) = store.apply(&entry(2, envelope(5, 1, failed)));
        assert_eq!(applied.output, Some(CommandOutput::Swapped(false)));
        let swapped = Command::CompareAndSwap {
            key: 1,
            expected: 10,
            new: 13,
        };
        let (_, applied, _) = store.apply(&entry(3, envelope(5, 2, swapped)));
        assert_eq!(applied.output, Some(CommandOutput::Swapped(true)));
        assert_eq!(store.get(1), 13);
        assert_eq!(KvStore::from_bytes(&store.to_bytes()), Ok(store));
    }

    #[test]
    fn a_retry_of_a_session_command_is_answered_not_applied_again() {
        let mut store = KvStore::default();
        let put = envelope(
            9,
            1,
            Command::Put {
                key: 1,
                value: 10,
                lease: 0,
            },
        );
        let (_, first, changes) = store.apply(&entry(1, put));
        assert!(first.fresh);
        assert_eq!(
            changes
                .iter()
                .map(|change| change.revision)
                .collect::<Vec<_>>(),
            vec![first.revision],
            "the put's one change, at its revision"
        );
        store.apply(&entry(
            2,
            envelope(
                0,
                0,
                Command::Put {
                    key: 1,
                    value: 11,
                    lease: 0,
                },
            ),
        ));
        let (outcome, again, changes) = store.apply(&entry(3, put));
        assert!(!again.fresh);
        assert!(changes.is_empty(), "a repeat changes nothing");
        assert_eq!(
            outcome,
            ApplyOutcome::Repeated {
                response: CommandOutput::Done.to_bytes(),
                first_index: LogIndex(1)
            }
        );
        assert_eq!(store.get(1), 11, "the retry changed nothing");
        let (outcome, _, _) = store.apply(&entry(4, envelope(9, 0, Command::Probe)));
        assert!(matches!(outcome, ApplyOutcome::Refused(_)), "{outcome:?}");
        store.expire_sessions_before(LogIndex(2));
        let (_, after_expiry, _) = store.apply(&entry(5, put));
        assert!(after_expiry.fresh, "an expired session forgets the command");
    }

    /// A store with a compacted history: puts of keys 1 and 2 at
    /// revisions 2 to 5, a failed swap, compaction to 4, a put at 6, and a
    /// session.
    fn store_with_history() -> KvStore {
        let mut store = KvStore::default();
        let commands = [
            Command::Put {
                key: 1,
                value: 10,
                lease: 0,
            },
            Command::Put {
                key: 2,
                value: 20,
                lease: 0,
            },
            Command::Put {
                key: 1,
                value: 11,
                lease: 0,
            },
            Command::CompareAndSwap {
                key: 2,
                expected: 99,
                new: 21,
            },
            Command::CompareAndSwap {
                key: 2,
                expected: 20,
                new: 22,
            },
            Command::Compact { revision: 4 },
            Command::Put {
                key: 1,
                value: 12,
                lease: 0,
            },
        ];
        for (position, command) in commands.into_iter().enumerate() {
            let index = position as u64 + 1;
            store.apply(&entry(index, envelope(3, index, command)));
        }
        store
    }

    #[test]
    fn writes_advance_the_revision_and_compaction_bounds_the_history() {
        let store = store_with_history();
        assert_eq!(
            store.revisions(),
            Revisions {
                current: 6,
                compacted: 4
            },
            "four puts and one swap changed a key; a failed swap and the compaction did not"
        );
        assert_eq!(store.values(), BTreeMap::from([(1, 12), (2, 22)]));
        let row = store.mvcc().get(&1u64.to_be_bytes()).unwrap();
        assert_eq!(
            (row.create_revision, row.mod_revision, row.version),
            (2, 6, 3)
        );
        // A read at 4 needs key 1's change at 4 and key 2's at 3; key 1's
        // at 2 is gone.
        let kept: Vec<Revision> = store
            .mvcc()
            .history()
            .iter()
            .map(|event| event.revision)
            .collect();
        assert_eq!(kept, vec![3, 4, 5, 6]);
        let mut refused = store.clone();
        let (_, again, _) =
            refused.apply(&entry(8, envelope(0, 0, Command::Compact { revision: 4 })));
        assert_eq!(
            again.output,
            Some(CommandOutput::Compaction(Err(CompactionRefused::Compacted)))
        );
        let (_, future, _) =
            refused.apply(&entry(9, envelope(0, 0, Command::Compact { revision: 7 })));
        assert_eq!(
            future.output,
            Some(CommandOutput::Compaction(Err(
                CompactionRefused::FutureRevision
            )))
        );
        assert_eq!(future.revision, 6);
    }

    #[test]
    fn a_snapshot_carries_the_revisions_and_the_history() {
        let store = store_with_history();
        let restored = KvStore::from_bytes(&store.to_bytes()).unwrap();
        assert_eq!(restored, store);
        assert_eq!(restored.rows_hash(), store.rows_hash());
        assert_eq!(store.history_digest, history_digest(store.mvcc()));
        let past = RangeRequest {
            range: KeyRange::single(bytes_of(1)),
            revision: 4,
            ..RangeRequest::default()
        };
        assert_eq!(restored.mvcc().range(&past), store.mvcc().range(&past));
        assert_eq!(
            word_of(&restored.mvcc().range(&past).unwrap().kvs[0].value),
            11
        );
    }

    #[test]
    fn a_store_rolls_back_to_a_mark_unless_it_compacted_since() {
        let mut store = KvStore::default();
        store.apply(&entry(
            1,
            envelope(
                3,
                1,
                Command::Put {
                    key: 1,
                    value: 10,
                    lease: 0,
                },
            ),
        ));
        let before = store.clone();
        let mark = store.mark();
        assert_eq!(mark.applied_index(), LogIndex(1));
        let mut after = store.clone();
        after.apply(&entry(
            2,
            envelope(
                3,
                2,
                Command::Put {
                    key: 1,
                    value: 11,
                    lease: 0,
                },
            ),
        ));
        after.apply(&entry(
            3,
            envelope(
                4,
                1,
                Command::Put {
                    key: 2,
                    value: 20,
                    lease: 0,
                },
            ),
        ));
        assert_eq!(after.rolled_back(&mark), Some(before));
        let compaction = entry(4, envelope(0, 0, Command::Compact { revision: 3 }));
        assert!(compacts(&compaction));
        assert!(!compacts(&entry(4, envelope(0, 0, Command::Probe))));
        after.apply(&compaction);
        assert_eq!(after.rolled_back(&mark), None);
    }

    #[test]
    fn the_digest_covers_revisions_and_history() {
        let store = store_with_history();
        let mut compacted = store.clone();
        compacted.apply(&entry(8, envelope(0, 0, Command::Compact { revision: 6 })));
        let mut probed = store.clone();
        probed.apply(&entry(8, envelope(0, 0, Command::Probe)));
        assert_eq!(compacted.values(), probed.values());
        assert_ne!(compacted.rows_hash(), probed.rows_hash());
    }

    #[test]
    fn corrupt_snapshot_bytes_are_an_error_not_an_empty_store() {
        assert!(KvStore::from_bytes(&[0x80, 0x80]).is_err());
        let mut bytes = KvStore::default().to_bytes();
        bytes[1] = 0;
        assert!(KvStore::from_bytes(&bytes).is_err(), "revision 0");
        let good = store_with_history().to_bytes();
        assert_eq!(KvStore::from_bytes(&good), Ok(store_with_history()));
        // Every single byte changed, and every cut, is refused, or decodes
        // to a store whose parts hold together.
        for position in 0..good.len() {
            let mut bytes = good.clone();
            bytes[position] ^= 0x04;
            if let Ok(store) = KvStore::from_bytes(&bytes) {
                assert_ne!(store, store_with_history());
                assert_eq!(KvStore::from_bytes(&store.to_bytes()), Ok(store));
            }
            assert!(KvStore::from_bytes(&good[..position]).is_err());
        }
        // The first row's mod revision (after six header bytes, a key and a
        // value of one byte each and a create revision of 1): 9 is not
        // the last change of key 1.
        let mut bytes = good.clone();
        assert_eq!(bytes[9], 6);
        bytes[9] = 9;
        let error = KvStore::from_bytes(&bytes).unwrap_err();
        assert!(error.contains("corrupt snapshot"), "{error}");
        let mut extra = good;
        extra.push(0);
        assert!(KvStore::from_bytes(&extra).is_err());
    }

    fn store_with_leases() -> KvStore {
        let mut store = KvStore::default();
        let commands = [
            Command::LeaseGrant { id: 5, ttl: 2 },
            Command::LeaseGrant { id: 6, ttl: 3 },
            Command::Put {
                key: 1,
                value: 10,
                lease: 5,
            },
            Command::Put {
                key: 2,
                value: 20,
                lease: 0,
            },
            Command::Put {
                key: 3,
                value: 30,
                lease: 6,
            },
            Command::Put {
                key: 1,
                value: 11,
                lease: 5,
            },
        ];
        for (position, command) in commands.into_iter().enumerate() {
            let index = position as u64 + 1;
            store.apply(&entry(index, envelope(0, 0, command)));
        }
        store
    }

    #[test]
    fn a_lease_revoke_deletes_its_keys_at_one_revision() {
        let mut store = store_with_leases();
        assert_eq!(store.revisions().current, 5, "grants change no revision");
        assert_eq!(store.leases(), &BTreeMap::from([(5, 2), (6, 3)]));
        let (_, applied, _) = store.apply(&entry(
            7,
            envelope(
                0,
                0,
                Command::Put {
                    key: 2,
                    value: 21,
                    lease: 9,
                },
            ),
        ));
        assert_eq!(applied.output, Some(CommandOutput::LeaseNotFound));
        assert_eq!((store.get(2), store.revisions().current), (20, 5));
        let (_, applied, _) = store.apply(&entry(
            8,
            envelope(0, 0, Command::LeaseGrant { id: 5, ttl: 9 }),
        ));
        assert_eq!(applied.output, Some(CommandOutput::LeaseGrant(false)));
        let (_, applied, _) =
            store.apply(&entry(9, envelope(0, 0, Command::LeaseRevoke { id: 5 })));
        assert_eq!(applied.output, Some(CommandOutput::LeaseRevoke(Some(true))));
        assert_eq!(applied.revision, 6);
        assert_eq!(store.values(), BTreeMap::from([(2, 20), (3, 30)]));
        assert_eq!(store.leases(), &BTreeMap::from([(6, 3)]));
        let (_, applied, _) =
            store.apply(&entry(10, envelope(0, 0, Command::LeaseRevoke { id: 5 })));
        assert_eq!(applied.output, Some(CommandOutput::LeaseRevoke(None)));
        store.apply(&entry(
            11,
            envelope(0, 0, Command::LeaseGrant { id: 7, ttl: 1 }),
        ));
        let (_, applied, _) =
            store.apply(&entry(12, envelope(0, 0, Command::LeaseRevoke { id: 7 })));
        assert_eq!(
            applied.output,
            Some(CommandOutput::LeaseRevoke(Some(false)))
        );
        assert_eq!(
            store.revisions().current,
            6,
            "a revoke without keys changes no revision"
        );
    }

    #[test]
    fn snapshots_and_marks_carry_the_leases_and_their_keys() {
        let store = store_with_leases();
        let bytes = store.to_bytes();
        assert_eq!(KvStore::from_bytes(&bytes), Ok(store.clone()));
        for position in 0..bytes.len() {
            assert!(
                KvStore::from_bytes(&bytes[..position]).is_err(),
                "cut at {position}"
            );
        }
        let mut other = store.clone();
        other.apply(&entry(7, envelope(0, 0, Command::LeaseRevoke { id: 6 })));
        assert_ne!(other.rows_hash(), store.rows_hash());
        let mut granted = store.clone();
        granted.apply(&entry(
            7,
            envelope(0, 0, Command::LeaseGrant { id: 8, ttl: 1 }),
        ));
        assert_ne!(
            granted.rows_hash(),
            store.rows_hash(),
            "the digest covers the leases"
        );
        // Postgres loses the unflushed grant, put and revoke after the mark.
        let mark = store.mark();
        let mut after = store.clone();
        for (index, command) in [
            (7, Command::LeaseGrant { id: 8, ttl: 1 }),
            (
                8,
                Command::Put {
                    key: 2,
                    value: 22,
                    lease: 8,
                },
            ),
            (9, Command::LeaseRevoke { id: 5 }),
        ] {
            after.apply(&entry(index, envelope(0, 0, command)));
        }
        assert_eq!(after.rolled_back(&mark), Some(store));
    }
}
