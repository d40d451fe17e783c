//! raftgres-sim: a deterministic simulator for the raftgres consensus core.
//!
//! It drives the very same `raftgres::pipeline::Pipeline` (and the
//! `raftgres::core::Raft` inside it) the production node runs (compiled
//! without the `server` feature, so no runtime comes along)
//! through simulated clocks, networks and disks, all drawn from one seed,
//! injects faults, and checks Raft's safety properties on every step and
//! linearizability and liveness on every run. A run is a function of
//! (seed, configuration): a failing seed replays bit for bit.
//!
//! Modules, from the bottom up:
//! - [`trace`]: the event trace and its stable FNV-1a hash.
//! - [`profile`]: fault profiles (`none`, `default`, `heavy`, `crashy`,
//!   `figure8`) and the swarm, which draws a fault mix and core settings.
//! - [`kv`]: the key-value state machine: the product's MVCC store
//!   (`raftgres::mvcc`: rows, history, revisions, compaction) behind the
//!   workload's commands, and client sessions.
//! - [`network`], [`store`]: the simulated network and per-node Postgres
//!   store (atomic transactions, unknown commits, lost async commits).
//! - [`node`]: one simulated node (the production pipeline around the
//!   core, its store, its transactions in flight, its clock).
//! - [`config`]: what a run depends on besides its seed.
//! - [`world`]: one run and its tick loop; [`driver`] carries out the
//!   pipeline's outputs; [`faults`], [`clients`], [`observe`]: fault
//!   injection, the workload, what the checkers see; [`leases`]: every
//!   node's lessor (the product's) and the lease client.
//! - [`checkers`]: one property per file, each citing the Raft paper.
//! - [`stats`], [`sweep`]: counters and multi-threaded seed sweeps.
//! - [`elections`]: leader replacement times (the paper's section 9.3).
//!
//! The scenario scripts (`tests/scenarios.rs`) drive [`node::SimNode`]s
//! step by step, the script deciding what the seeded world decides here.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod checkers;
mod clients;
pub mod config;
mod driver;
pub mod elections;
mod faults;
pub mod kv;
pub mod leases;
pub mod network;
pub mod node;
mod observe;
pub mod profile;
pub mod stats;
mod steps;
pub mod store;
pub mod sweep;
pub mod trace;
mod watches;
pub mod world;

/// The names of the planted bugs this build can enable (empty without the
/// `planted-bugs` feature).
pub fn planted_bug_names() -> Vec<&'static str> {
    #[cfg(feature = "planted-bugs")]
    return raftgres::core::PlantedBug::ALL
        .iter()
        .map(|bug| bug.name())
        .collect();
    #[cfg(not(feature = "planted-bugs"))]
    Vec::new()
}
