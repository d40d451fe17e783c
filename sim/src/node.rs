//! One simulated node: the production pipeline around its core (absent
//! while the node is down), its store, the transactions it has in flight,
//! its monotonic clock and the client requests waiting for the pipeline.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use raftgres::core::{LogIndex, NodeId, Raft, Role, Term};
use raftgres::pipeline::{
    ApplyBatch, Input, Instant, Pipeline, PipelineConfig, RequestId, StageJob, TransferConfig,
    WriteJob,
};

use crate::config::SimConfig;
use crate::store::{ApplySettings, Store, Transaction};

/// The wall-clock length of one simulated tick, and of one core tick.
pub const TICK: Duration = Duration::from_millis(10);

/// Who waits for a pipeline request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waiting {
    /// A client's attempt at its request.
    Client {
        /// The client.
        client: usize,
        /// The attempt (a client ignores answers to earlier attempts).
        attempt: u64,
        /// The operation, for a write (the outcome checker judges every
        /// answer the pipeline gives, even one its client stopped waiting
        /// for).
        write_operation: Option<u64>,
    },
    /// A request whose answer nobody waits for (a leadership transfer
    /// the fault injector asked for, a liveness probe).
    Nobody,
    /// A membership change the fault injector asked for: its answer is
    /// counted.
    MembershipChange,
    /// A request of the lease client or of a node's lessor
    /// (`crate::leases`).
    Lease(crate::leases::LeaseAsk),
}

/// A client request that reached a paused node: handled when it resumes.
#[derive(Clone, Debug)]
pub struct Queued {
    /// Who waits.
    pub waiting: Waiting,
    /// The pipeline input, without its request id.
    pub input: QueuedInput,
}

/// The inputs a client sends.
#[derive(Clone, Debug)]
pub enum QueuedInput {
    /// A command.
    Propose(Vec<u8>),
    /// A read.
    Read(raftgres::pipeline::ReadMode),
    /// A leadership transfer to this node.
    Transfer(NodeId),
    /// A membership change.
    ChangeMembership(raftgres::core::MembershipChange),
}

/// A simulated node.
#[derive(Debug)]
pub struct SimNode {
    /// The node's id (1-based).
    pub id: NodeId,
    /// The pipeline around the core; `None` while the node is down.
    pub pipeline: Option<Pipeline>,
    /// The node's database; survives crashes of the node.
    pub store: Store,
    /// The node was started to be added to a running cluster (`serve
    /// --join`): its configuration bootstraps no membership, and it knows
    /// one only once the log or a snapshot brings it.
    pub joining: bool,
    /// The log write in flight (the pipeline hands out one at a time).
    pub write: Option<Transaction<WriteJob>>,
    /// The apply transaction in flight (one at a time).
    pub apply: Option<Transaction<ApplyBatch>>,
    /// A batch handed out ahead of its commit (`Output::ApplyAhead`),
    /// waiting for the pipeline's word. Its work shows nowhere until it
    /// is confirmed, when it becomes the apply transaction in flight.
    pub ahead: Option<ApplyBatch>,
    /// The last index of the batch confirmed ahead whose first attempt is
    /// the apply transaction in flight: it commits without waiting for
    /// the WAL flush, as the node's applier commits it.
    pub ahead_committing: Option<LogIndex>,
    /// The stage transaction in flight (one at a time).
    pub stage: Option<Transaction<StageJob>>,
    /// When the write in flight was first attempted (retries keep it).
    pub write_since: Option<u64>,
    /// When the apply in flight was first attempted (retries keep it).
    pub apply_since: Option<u64>,
    /// The tick of this incarnation's latest storage hand-off.
    pub handed_off_at: Option<u64>,
    /// Open views of the state machine (REPEATABLE READ transactions on
    /// connections of their own: lost with the process or Postgres):
    /// view -> the rows it sees, encoded.
    pub views: BTreeMap<u64, Vec<u8>>,
    /// Answers due at a tick: of view operations (a read takes a round
    /// trip to Postgres), and of an abandoned apply's rollback.
    pub view_answers: Vec<(u64, Input)>,
    /// Down until this tick, then restarted from what the store holds.
    pub down_until: Option<u64>,
    /// Paused (a stopped process or a stalled event loop: nothing is
    /// handled, the clock runs on) until this tick.
    pub paused_until: Option<u64>,
    /// Requests that reached the node while it was paused.
    pub inbox: Vec<Queued>,
    /// Starts so far (each numbers its forwarded reads differently).
    pub incarnation: u64,
    /// The node's monotonic clock, in microseconds since the run began.
    pub clock_micros: u64,
    /// The clock when the running incarnation started (see
    /// `checkers::clock_ticks`).
    pub started_micros: u64,
    /// Microseconds the clock advances per world tick, in thousandths of
    /// a tick (clock drift).
    pub tick_rate_permille: u64,
    /// Requests the pipeline has not answered yet, with the tick each arrived.
    pub waiting: BTreeMap<RequestId, (Waiting, u64)>,
    /// Which of `waiting` are proposals (see `checkers::gauges`).
    pub proposals: BTreeSet<RequestId>,
    /// The next request id.
    pub next_request: u64,
    /// Role and term last reported to the checkers and the trace.
    pub observed_role: Role,
    /// See `observed_role`.
    pub observed_term: Term,
    /// Commit index last reported to the checkers.
    pub observed_commit: LogIndex,
    /// Everything the checkers last looked at (role, term, vote, commit
    /// index, applied index, durable applied index): unchanged means
    /// nothing to check.
    pub observed: Option<(Role, Term, Option<NodeId>, LogIndex, LogIndex, LogIndex)>,
}

impl SimNode {
    /// A fresh node with an empty store, not yet started.
    pub fn new(id: NodeId) -> SimNode {
        SimNode {
            id,
            pipeline: None,
            store: Store::default(),
            joining: false,
            write: None,
            apply: None,
            ahead: None,
            ahead_committing: None,
            stage: None,
            write_since: None,
            apply_since: None,
            handed_off_at: None,
            views: BTreeMap::new(),
            view_answers: Vec::new(),
            down_until: None,
            paused_until: None,
            inbox: Vec::new(),
            incarnation: 0,
            clock_micros: 0,
            started_micros: 0,
            tick_rate_permille: 1000,
            waiting: BTreeMap::new(),
            proposals: BTreeSet::new(),
            next_request: 0,
            observed_role: Role::Follower,
            observed_term: Term(0),
            observed_commit: LogIndex(0),
            observed: None,
        }
    }

    /// The node's monotonic instant.
    pub fn now(&self) -> Instant {
        Instant(Duration::from_micros(self.clock_micros))
    }

    /// Advances the node's clock by one world tick.
    pub fn advance_clock(&mut self) {
        self.clock_micros += TICK.as_micros() as u64 * self.tick_rate_permille / 1000;
    }

    /// Starts (or restarts) the node from what its store holds, compacting
    /// as `settings` say and streaming snapshots as `transfer` says. The
    /// caller has checked that the store can be restarted from.
    pub fn start(
        &mut self,
        config: &SimConfig,
        raft_seed: u64,
        settings: &ApplySettings,
        transfer: TransferConfig,
    ) {
        let durable = self.store.durable_state();
        let applied = durable.applied;
        let mut raft_config = config.raft_config(self.id);
        if self.joining {
            raft_config.voters.clear();
        }
        let raft =
            Raft::new(raft_config, durable, raft_seed).expect("the simulator's config is valid");
        self.observed_role = raft.role();
        self.observed_term = raft.term();
        self.observed_commit = applied;
        self.observed = None;
        self.incarnation += 1;
        let election_ticks_max = config.election_ticks_max as u32;
        let pipeline_config = PipelineConfig {
            tick: TICK,
            transfer_timeout: TICK * election_ticks_max * 2,
            // Far apart per incarnation, as the product's (which starts
            // from the wall clock) are.
            read_context_first: self.incarnation << 40,
            storage_stall_timeout: TICK * election_ticks_max,
            compaction_entries: settings.compaction_entries,
            write_entries_max: settings.entries_per_write_max,
            apply_ahead: settings.apply_ahead,
            follower_apply_wait: settings.follower_apply_wait,
            transfer,
            staged: self.store.staged.clone(),
        };
        self.pipeline = Some(Pipeline::new(raft, pipeline_config, self.now()));
        self.started_micros = self.clock_micros;
        self.write = None;
        self.apply = None;
        self.ahead = None;
        self.ahead_committing = None;
        self.stage = None;
        self.write_since = None;
        self.apply_since = None;
        self.handed_off_at = None;
        self.views.clear();
        self.view_answers.clear();
        self.down_until = None;
        self.paused_until = None;
        self.inbox.clear();
        self.waiting.clear();
        self.proposals.clear();
    }

    /// Feeds `input`, or only the passing of time, to the pipeline at the
    /// node's instant (obligation 1: the elapsed ticks reach the core
    /// first). False when the node is down. The caller then carries out
    /// what the pipeline asks (`Pipeline::take_outputs`).
    pub fn handle(&mut self, input: Option<Input>) -> bool {
        let now = self.now();
        let Some(pipeline) = self.pipeline.as_mut() else {
            return false;
        };
        match input {
            Some(input) => pipeline.handle(now, input),
            None => pipeline.advance(now),
        }
        true
    }

    /// The core, when the node runs.
    pub fn raft(&self) -> Option<&Raft> {
        self.pipeline.as_ref().map(Pipeline::raft)
    }

    /// Whether the node is a spare machine not started yet (see
    /// `World::new`): it is no member and nobody waits for it.
    pub fn is_spare(&self) -> bool {
        self.incarnation == 0 && self.down_until.is_none()
    }

    /// Whether the node runs and is not paused.
    pub fn is_running(&self) -> bool {
        self.pipeline.is_some() && self.paused_until.is_none()
    }

    /// Whether the node is up and leads.
    pub fn is_leader(&self) -> bool {
        self.is_running() && self.raft().is_some_and(|raft| raft.role() == Role::Leader)
    }

    /// A new request id for a request that arrived at tick `now`, and who
    /// waits for it.
    pub fn wait(&mut self, waiting: Waiting, now: u64) -> RequestId {
        self.next_request += 1;
        let request = RequestId(self.next_request);
        self.waiting.insert(request, (waiting, now));
        request
    }
}
