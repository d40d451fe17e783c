//! raftgres-storage-pg: the durable state of a raftgres node in PostgreSQL.
//!
//! Where things live:
//!
//! - [`types`]: the data the store persists ([`HardState`], [`LogEntry`],
//!   [`SnapshotMeta`], [`AppliedState`], [`LoadedState`], [`AppendBatch`]).
//! - [`store`]: the [`LogStore`] contract and the validation rules every
//!   implementation shares.
//! - [`memory`]: [`MemStore`], the contract in memory (not durable).
//! - [`pg`]: [`PgStore`], the contract in Postgres: schema and migrations,
//!   start-up safety checks (durability settings, fencing lock, identity),
//!   single-round-trip bulk appends, reconnection, and the apply API
//!   ([`PgStore::begin_apply`], or [`PgApplier`] on a second connection) for
//!   state machines whose tables live in the same database.
//!   A [`StatementCache`] keeps the statements a connection prepared, so
//!   that statements sent on every apply or read are parsed and planned
//!   once per connection.
//! - [`connector`]: [`PgConnector`], the one way this crate (and the node,
//!   for its own extra connections) connects to Postgres, with TLS as
//!   libpq's `sslmode` and `sslrootcert` ask for (rustls with the ring
//!   provider).
//! - [`error`]: [`StoreError`], split into retriable and fatal.
//!
//! Throw-away Postgres servers for tests and dev clusters live in the
//! `raftgres-devcluster` crate, not here.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod connector;
pub mod error;
pub mod memory;
pub mod pg;
pub mod store;
pub mod types;

pub use connector::{PgConnector, SslMode};
pub use error::StoreError;
pub use memory::MemStore;
pub use pg::{
    applied_in, connect_view, ApplyOptions, ApplyTransaction, BegunApply, FirstStatements,
    OpeningApply, PgApplier, PgStager, PgStore, PgStoreConfig, Prepared, StagedHeader,
    StatementCache, CACHED_STATEMENTS_MAX, SCHEMA_VERSION_SUPPORTED,
};
pub use store::LogStore;
pub use types::{
    AppendBatch, AppliedState, EntryKind, HardState, LoadedState, LogEntry, SnapshotMeta,
};

/// Default for `entries_per_append_max`: large enough for any sensible
/// replication batch, small enough that one append stays a few megabytes.
pub const ENTRIES_PER_APPEND_MAX_DEFAULT: usize = 8192;
