//! Linearizability of the clients' key-value history (Herlihy and Wing; the
//! Raft paper's section 8 makes it the client-visible contract: "each
//! operation appears to execute instantaneously, exactly once, at some
//! point between its invocation and its response").
//!
//! The checker lives in the `raftgres-lincheck` crate so that the
//! end-to-end nemesis suite (real processes, real Postgres) judges its
//! histories with the very same search; this module keeps the simulator's
//! `crate::checkers::linearizability` paths working.

pub use raftgres_lincheck::{check, Input, Operation, Output, Verdict};

// The simulated KV store and the checker's register model must agree on
// what a missing key reads as.
const _: () = assert!(crate::kv::VALUE_ABSENT == raftgres_lincheck::VALUE_ABSENT);
