//! One simulated node: its core (absent while the node is down), its disk,
//! its state machine, its clock and the client requests it is serving.

use std::collections::BTreeMap;

use raftgres::core::{LogIndex, NodeId, Raft, Role, Snapshot, Term};

use crate::config::SimConfig;
use crate::disk::Disk;
use crate::kv::KvStore;

/// A simulated node.
#[derive(Debug)]
pub struct SimNode {
    /// The node's id (1-based).
    pub id: NodeId,
    /// The core; `None` while the node is down (crashed, or halted after a
    /// failed write).
    pub raft: Option<Raft>,
    /// The node's disk; survives crashes.
    pub disk: Disk,
    /// The state machine in memory. Equal to the durable one except while
    /// a leader's snapshot is being written.
    pub kv: KvStore,
    /// The latest snapshot this node holds (compacted or installed), whose
    /// bytes a leader attaches to `InstallSnapshot`.
    pub snapshot: Snapshot,
    /// Down until this tick, then restarted from durable state.
    pub down_until: Option<u64>,
    /// Paused (no ticks, messages or disk callbacks) until this tick.
    pub paused_until: Option<u64>,
    /// Ticks delivered per 1000 simulated ticks (clock drift).
    pub tick_rate_permille: u64,
    /// Accumulated fraction of a tick, in thousandths.
    pub tick_phase_permille: u64,
    /// Client proposals waiting for their index to apply: index -> operation id.
    pub pending_proposals: BTreeMap<LogIndex, u64>,
    /// Client reads waiting for `Ready::reads` or, for lease reads, for
    /// the state machine to reach their index: context (operation id) -> key.
    pub pending_reads: BTreeMap<u64, u64>,
    /// Lease reads waiting for the state machine to reach their index:
    /// context -> index. Invariant: every context is in `pending_reads`.
    pub pending_lease_reads: BTreeMap<u64, LogIndex>,
    /// Role and term last reported to the checkers and the trace.
    pub observed_role: Role,
    /// See `observed_role`.
    pub observed_term: Term,
    /// Commit index last reported to the checkers.
    pub observed_commit: LogIndex,
}

impl SimNode {
    /// A fresh node with an empty disk, not yet started.
    pub fn new(id: NodeId) -> SimNode {
        let disk = Disk::new();
        SimNode {
            id,
            raft: None,
            kv: disk.durable.state_machine.clone(),
            snapshot: disk.durable.snapshot.clone(),
            disk,
            down_until: None,
            paused_until: None,
            tick_rate_permille: 1000,
            tick_phase_permille: 0,
            pending_proposals: BTreeMap::new(),
            pending_reads: BTreeMap::new(),
            pending_lease_reads: BTreeMap::new(),
            observed_role: Role::Follower,
            observed_term: Term(0),
            observed_commit: LogIndex(0),
        }
    }

    /// Starts (or restarts) the core from what is durable.
    pub fn start(&mut self, config: &SimConfig, raft_seed: u64) {
        let durable = self.disk.durable.durable_state();
        let applied = durable.applied;
        let raft = Raft::new(config.raft_config(self.id), durable, raft_seed)
            .expect("the simulator's config is valid");
        self.observed_role = raft.role();
        self.observed_term = raft.term();
        self.observed_commit = applied;
        self.raft = Some(raft);
        self.kv = self.disk.durable.state_machine.clone();
        self.snapshot = self.disk.durable.snapshot.clone();
        self.down_until = None;
        self.paused_until = None;
        self.tick_phase_permille = 0;
    }

    /// Whether the node runs and is not paused.
    pub fn is_running(&self) -> bool {
        self.raft.is_some() && self.paused_until.is_none()
    }

    /// Whether the node is up and leads.
    pub fn is_leader(&self) -> bool {
        self.is_running()
            && self
                .raft
                .as_ref()
                .is_some_and(|raft| raft.role() == Role::Leader)
    }
}
