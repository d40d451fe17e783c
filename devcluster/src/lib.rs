//! raftgres-devcluster: local clusters and throw-away Postgres servers, for
//! `raftgres dev`, `make run`, the end-to-end tests and the benchmarks.
//! Nothing here is part of a production node; the `raftgres` library does
//! not depend on this crate.
//!
//! - [`postgres`]: [`postgres::PgInstance`], a local Postgres server in a
//!   directory of its own, started as the `postgres` OS user when this
//!   process is root (also the `raftgres-pg` binary).
//! - [`testing`]: [`testing::TestDatabase`], a fresh database per test, on
//!   the server named by `RAFTGRES_TEST_PG` or on a per-process instance;
//!   [`testing::ScratchInstance`], a private server for tests that crash it.
//! - `cluster` (feature `cluster`, on by default): N `raftgres serve`
//!   processes, each with its own Postgres, in one directory
//!   (`raftgres dev up`).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(feature = "cluster")]
pub mod cluster;
pub mod postgres;
pub mod testing;
