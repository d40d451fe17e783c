//! The plain data the store persists: hard state, log entries, snapshot and
//! applied markers. Terms, indexes and node ids are plain `u64` here so that
//! this crate stays independent of the consensus core; the node wraps them in
//! its own newtypes at the boundary.

/// The Raft state that must be durable before a node votes or answers:
/// the current term and the candidate it voted for in that term.
///
/// Invariant (enforced by the store and by a trigger in Postgres): `term`
/// never decreases, and within one term `voted_for` never changes once set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HardState {
    /// The latest term this node has seen.
    pub term: u64,
    /// The node this node voted for in `term`, if any.
    pub voted_for: Option<u64>,
}

/// What a log entry carries, stored as a small integer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// An empty entry a new leader appends to commit entries of older terms.
    Blank = 1,
    /// A command for the replicated state machine.
    Command = 2,
    /// A membership configuration change.
    Config = 3,
}

impl EntryKind {
    /// The stored representation (`raftgres_log.kind`).
    pub fn to_code(self) -> i16 {
        self as i16
    }

    /// Decodes the stored representation, `None` for an unknown code.
    pub fn from_code(code: i16) -> Option<EntryKind> {
        match code {
            1 => Some(EntryKind::Blank),
            2 => Some(EntryKind::Command),
            3 => Some(EntryKind::Config),
            _ => None,
        }
    }
}

/// One entry of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LogEntry {
    /// Position in the log, starting at 1.
    pub index: u64,
    /// The term of the leader that created the entry.
    pub term: u64,
    /// What the entry carries.
    pub kind: EntryKind,
    /// Opaque payload.
    pub data: Vec<u8>,
}

/// The last log position covered by the snapshot; `(0, 0)` when there is
/// no snapshot. Invariant: every entry with `index <= self.index` is gone
/// from the log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SnapshotMeta {
    /// Last index included in the snapshot.
    pub index: u64,
    /// Term of the entry at `index`.
    pub term: u64,
}

/// How far the state machine has applied the log; `(0, 0)` initially.
/// Invariant: only moves forward.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AppliedState {
    /// Last applied index.
    pub index: u64,
    /// Term of the entry at `index`.
    pub term: u64,
}

/// Everything a node needs to restart, as read by `LogStore::load`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadedState {
    /// Durable term and vote.
    pub hard_state: HardState,
    /// The snapshot the log starts after, `(0, 0)` when none.
    pub snapshot: SnapshotMeta,
    /// The log after the snapshot. Invariant: contiguous, starting at
    /// `snapshot.index + 1`.
    pub entries: Vec<LogEntry>,
    /// How far the state machine has applied.
    pub applied: AppliedState,
}

impl LoadedState {
    /// The index of the last entry, or the snapshot index when the log is
    /// empty.
    pub fn last_index(&self) -> u64 {
        self.entries
            .last()
            .map_or(self.snapshot.index, |entry| entry.index)
    }
}

/// One durable write: an optional new hard state and entries that replace
/// the log from `entries[0].index` on, committed atomically.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppendBatch {
    /// Saved in the same transaction as the entries when present.
    pub hard_state: Option<HardState>,
    /// Contiguous entries; the first must satisfy
    /// `snapshot_index < entries[0].index <= last_index + 1`.
    pub entries: Vec<LogEntry>,
}
