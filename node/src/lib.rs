//! raftgres: a Raft consensus log whose nodes keep their durable state in
//! PostgreSQL.
//!
//! - [`core`]: the pure consensus state machine (always compiled; no I/O,
//!   no clock, no async). The simulator drives exactly this code.
//! - [`mvcc`]: the key-value store's semantics (etcd's revisions, ranges,
//!   transactions, compaction), pure like the core, for the Postgres state
//!   machine and the simulator's model alike.
//! - [`pipeline`]: every decision between the core and the world (writes,
//!   applies, snapshots, client replies, time), pure like the core.
//! - `server` (feature `server`): the node: the tokio driver of the core,
//!   Postgres storage, gRPC transport and services, state machines.
//! - `client` (feature `server`): the `raftgres-client` crate re-exported.
//!
//! The `raftgres` command lives in the `raftgres-cli` crate, and local dev
//! clusters with their own Postgres instances (`raftgres dev up`, `make
//! run`, the end-to-end tests) in `raftgres-devcluster`: neither is part of
//! this library.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod core;
pub mod mvcc;
pub mod pipeline;

/// The leader-finding client (the `raftgres-client` crate, which
/// applications can depend on without the node's storage and server).
#[cfg(feature = "server")]
pub use raftgres_client as client;
#[cfg(feature = "server")]
pub mod server;
