//! raftgres: a Raft consensus log whose nodes keep their durable state in
//! PostgreSQL.
//!
//! - [`core`]: the pure consensus state machine (always compiled; no I/O).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod core;
