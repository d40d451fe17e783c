//! The key-value store's semantics as etcd's v3 API defines them, in pure
//! code: revisions, per-key versions, ranges, puts, deletes, transactions
//! and compaction. No I/O: the Postgres state machine
//! (`server::KvStateMachine`) reads the rows a batch of
//! commands touches, runs them through [`apply`] here and writes back the
//! changes; the simulator's model ([`MvccStore`]) runs the same code over a
//! map. One definition of what a command does, wherever it runs.
//!
//! ```text
//!   Command ──> apply(keyspace, revisions) ──> Outcome (the client's answer)
//!                    │   reads rows in ranges      + Events (the history,
//!                    │   puts and deletes rows       one per changed key)
//!                    v
//!               Keyspace: the current rows (a map, or the rows a batch
//!                         prefetched from Postgres)
//! ```
//!
//! Revisions (etcd's MVCC):
//! - The store has one revision, 1 when empty. Every command that changes
//!   at least one key advances it by exactly one; a transaction is one
//!   revision whatever it changes, and its changes are told apart by a
//!   sub-revision (their order inside it).
//! - A key carries `create_revision` (the revision that created it since
//!   it last did not exist), `mod_revision` (the last change) and `version`
//!   (changes since creation, 1 after the first put; a delete ends it).
//! - History (every change, kept until compacted) serves reads at past
//!   revisions and watches; compaction at `r` forgets what no read or
//!   watch at `r` or later needs, and reads below `r` are refused from
//!   then on.

mod apply;
pub mod lease;
mod range;
pub mod single_key;
mod store;
#[cfg(test)]
mod tests;
pub mod watch;

pub use apply::{apply, check_command, footprint, lease_footprint, Keyspace};
pub use range::{check_read_revision, rows_needed, shape_range};
#[cfg(feature = "server")]
pub(crate) use store::rows_in;
pub use store::MvccStore;

/// A store revision (etcd's `int64` revisions).
pub type Revision = i64;

/// The revision of an empty store.
pub const REVISION_INITIAL: Revision = 1;

/// At most this many compares, and this many operations in each branch,
/// in one transaction (etcd's default `--max-txn-ops`).
pub const TXN_OPERATIONS_MAX: usize = 128;

/// One key's current version.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyValue {
    /// The key (never empty).
    pub key: Vec<u8>,
    /// Its value.
    pub value: Vec<u8>,
    /// The revision that created the key since it last did not exist.
    pub create_revision: Revision,
    /// The revision of its last change. Invariant: `create_revision <=
    /// mod_revision`.
    pub mod_revision: Revision,
    /// Changes since creation (1 after the creating put).
    pub version: i64,
    /// The lease the key is attached to (0: none).
    pub lease: i64,
}

/// The keys a request names, in etcd's encoding: `range_end` empty is the
/// single key `key`; `range_end` `[0]` is every key from `key` on; any
/// other `range_end` is `[key, range_end)` (empty when `key >=
/// range_end`).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct KeyRange {
    /// The first key.
    pub key: Vec<u8>,
    /// Where the range ends, as above.
    pub range_end: Vec<u8>,
}

impl KeyRange {
    /// The single key `key`.
    pub fn single(key: impl Into<Vec<u8>>) -> KeyRange {
        KeyRange {
            key: key.into(),
            range_end: Vec::new(),
        }
    }

    /// Whether the range is one key.
    pub fn is_single(&self) -> bool {
        self.range_end.is_empty()
    }

    /// The exclusive end, or `None` for every key from `key` on. A single
    /// key `k` ends at `k` followed by a zero byte.
    pub fn end_exclusive(&self) -> Option<Vec<u8>> {
        if self.range_end.is_empty() {
            let mut end = self.key.clone();
            end.push(0);
            return Some(end);
        }
        if self.range_end == [0] {
            return None;
        }
        Some(self.range_end.clone())
    }

    /// Whether `key` is in the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        if self.range_end.is_empty() {
            return key == self.key.as_slice();
        }
        key >= self.key.as_slice() && (self.range_end == [0] || key < self.range_end.as_slice())
    }

    /// Whether the two ranges share a key.
    pub fn overlaps(&self, other: &KeyRange) -> bool {
        let starts_before_end = |range: &KeyRange, key: &[u8]| match range.end_exclusive() {
            None => true,
            Some(end) => key < end.as_slice(),
        };
        starts_before_end(self, &other.key) && starts_before_end(other, &self.key)
    }
}

/// How a range sorts its answer (etcd's `SortOrder`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortOrder {
    /// Key order, unless a sort target other than the key is named (then
    /// ascending).
    #[default]
    None,
    /// Ascending.
    Ascend,
    /// Descending.
    Descend,
}

/// What a range sorts by (etcd's `SortTarget`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortTarget {
    /// The key.
    #[default]
    Key,
    /// The version.
    Version,
    /// The create revision.
    Create,
    /// The mod revision.
    Mod,
    /// The value.
    Value,
}

/// A read of the keys in a range.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeRequest {
    /// The keys.
    pub range: KeyRange,
    /// At most this many pairs (0: all).
    pub limit: i64,
    /// The revision to read at (0 or less: the current one).
    pub revision: Revision,
    /// How the answer is sorted.
    pub sort_order: SortOrder,
    /// What the answer is sorted by.
    pub sort_target: SortTarget,
    /// Answer keys without values.
    pub keys_only: bool,
    /// Answer only the count.
    pub count_only: bool,
    /// Drop pairs whose `mod_revision` is below this (0: no bound).
    pub min_mod_revision: Revision,
    /// Drop pairs whose `mod_revision` is above this (0: no bound).
    pub max_mod_revision: Revision,
    /// Drop pairs whose `create_revision` is below this (0: no bound).
    pub min_create_revision: Revision,
    /// Drop pairs whose `create_revision` is above this (0: no bound).
    pub max_create_revision: Revision,
}

/// The longest lease etcd grants, in seconds.
pub const LEASE_TTL_MAX: i64 = 9_000_000_000;

/// The answer to a range.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeResponse {
    /// The revision the range saw: inside a transaction, one more than
    /// the store's once an earlier operation changed something (etcd
    /// reports it in the operation's own header).
    pub header_revision: Revision,
    /// The pairs, sorted and limited as asked.
    pub kvs: Vec<KeyValue>,
    /// Whether the limit cut pairs off.
    pub more: bool,
    /// How many keys the range holds (before the revision filters and the
    /// limit), as etcd counts.
    pub count: i64,
}

/// Sets a key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutRequest {
    /// The key (never empty).
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// The lease to attach the key to (0: none).
    pub lease: i64,
    /// Answer the key's previous version.
    pub prev_kv: bool,
    /// Keep the current value (the key must exist; `value` empty).
    pub ignore_value: bool,
    /// Keep the current lease (the key must exist; `lease` 0).
    pub ignore_lease: bool,
}

/// The answer to a put.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutResponse {
    /// The revision of the put.
    pub header_revision: Revision,
    /// The key's previous version, when asked for and the key existed.
    pub prev_kv: Option<KeyValue>,
}

/// Deletes the keys in a range.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteRangeRequest {
    /// The keys.
    pub range: KeyRange,
    /// Answer the deleted versions.
    pub prev_kv: bool,
}

/// The answer to a delete.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteRangeResponse {
    /// The revision after the delete (as the range's).
    pub header_revision: Revision,
    /// How many keys were deleted.
    pub deleted: i64,
    /// The deleted versions, when asked for.
    pub prev_kvs: Vec<KeyValue>,
}

/// The relation a compare asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CompareResult {
    /// Equal.
    #[default]
    Equal,
    /// The key's field is greater.
    Greater,
    /// The key's field is less.
    Less,
    /// Not equal.
    NotEqual,
}

/// The field a compare looks at, and the operand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompareTarget {
    /// `version` against this.
    Version(i64),
    /// `create_revision` against this.
    Create(Revision),
    /// `mod_revision` against this.
    Mod(Revision),
    /// The value against these bytes.
    Value(Vec<u8>),
    /// The lease against this.
    Lease(i64),
}

/// One condition of a transaction: every key in `range` must satisfy it (a
/// missing key has version, revisions and lease 0, and never satisfies a
/// value compare).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    /// The keys.
    pub range: KeyRange,
    /// The relation.
    pub result: CompareResult,
    /// The field and operand.
    pub target: CompareTarget,
}

/// One operation of a transaction branch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestOp {
    /// A read (at the current revision).
    Range(RangeRequest),
    /// A put.
    Put(PutRequest),
    /// A delete.
    DeleteRange(DeleteRangeRequest),
    /// A nested transaction.
    Txn(TxnRequest),
}

/// The answer to one operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseOp {
    /// To a range.
    Range(RangeResponse),
    /// To a put.
    Put(PutResponse),
    /// To a delete.
    DeleteRange(DeleteRangeResponse),
    /// To a nested transaction.
    Txn(TxnResponse),
}

/// If every compare holds, the success operations, else the failure ones,
/// all at one revision. The compares of the transaction and of every
/// nested transaction on the taken path are judged against the state
/// before it (as etcd does); the operations then run in order, each seeing
/// the changes of the ones before.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnRequest {
    /// The conditions.
    pub compare: Vec<Compare>,
    /// Run when every condition holds.
    pub success: Vec<RequestOp>,
    /// Run otherwise.
    pub failure: Vec<RequestOp>,
}

/// The answer to a transaction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnResponse {
    /// Whether every compare held.
    pub succeeded: bool,
    /// One answer per operation of the branch taken.
    pub responses: Vec<ResponseOp>,
}

/// A command of the key-value state machine, as the log carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// A put, a delete or a transaction (a range here is read-only work
    /// done at the command's place in the log).
    Op(RequestOp),
    /// Forget the history below this revision.
    Compact(Revision),
    /// Create lease `id` (non-zero) of `ttl` seconds. Which lease expires
    /// when is the leader's decision ([`lease::Lessor`]), committed as a
    /// [`Command::LeaseRevoke`]; the store only knows the leases and their
    /// granted TTLs.
    LeaseGrant {
        /// The lease.
        id: i64,
        /// Its granted time to live, in seconds.
        ttl: i64,
    },
    /// End lease `id`: every key attached to it is deleted, at one
    /// revision.
    LeaseRevoke(i64),
}

/// Why a command changed nothing and was refused, on every replica alike.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// A put with `ignore_value` or `ignore_lease` of a key that does not
    /// exist.
    #[error("key not found")]
    KeyNotFound,
    /// A put names a lease that does not exist.
    #[error("requested lease not found")]
    LeaseNotFound,
    /// The revision asked for was compacted.
    #[error("mvcc: required revision has been compacted")]
    Compacted,
    /// The revision asked for is beyond the store's.
    #[error("mvcc: required revision is a future revision")]
    FutureRevision,
    /// A grant of a lease that exists.
    #[error("lease already exists")]
    LeaseExists,
}

/// What a command answered, and the store's revision after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The answer, or why nothing changed.
    pub result: Result<Answer, KvError>,
    /// The store's revision after the command (the response header's).
    pub revision: Revision,
}

/// A command's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// To an operation.
    Op(ResponseOp),
    /// To a compaction: the history below the revision is gone.
    Compacted,
    /// To a lease grant: the lease exists.
    LeaseGranted,
    /// To a lease revoke: the lease and its keys are gone.
    LeaseRevoked,
}

/// One change to one key, at a revision: etcd's watch event and the row of
/// the history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The revision of the command.
    pub revision: Revision,
    /// The change's place inside the command (0, 1, ...).
    pub sub: i64,
    /// The key's new version, or `None` for a delete of `key`.
    pub kv: Option<KeyValue>,
    /// The key.
    pub key: Vec<u8>,
}

/// The store's revision counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Revisions {
    /// The current revision. Invariant: `compacted <= current`.
    pub current: Revision,
    /// Reads below this are refused (0: never compacted).
    pub compacted: Revision,
}

impl Default for Revisions {
    fn default() -> Self {
        Revisions {
            current: REVISION_INITIAL,
            compacted: 0,
        }
    }
}
