//! The tokio driver of the pure pipeline (`crate::pipeline`), which owns
//! the core. The driver decides nothing: it turns wall-clock time into
//! pipeline instants, hands the pipeline peer messages, client requests
//! and storage reports, and carries out what the pipeline asks (the
//! pipeline's obligations, numbered in its module documentation):
//!
//! ```text
//!   peers, clients, timer ──> Pipeline ──> Output::Send ───> transport
//!                                │     ├─> Output::Write ──> log writer ─┐
//!                                │     ├─> Output::Apply ──> applier ────┤
//!                                │     ├─> Output::Stage ──> stager ─────┤
//!                                │     ├─> Output::*View ──> view tasks ─┤
//!                                │     └─> Output::Reply ──> client      │
//!                                └── WriteDone, ApplyDone, Staged, ──────┘
//!                                    ViewOpened, ChunkRead, ViewLost
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use raftgres_storage_pg::StoreError;
use tokio::sync::{mpsc, oneshot, watch};

use super::config::NodeConfig;
use super::error::ServiceError;
use super::metrics::Metrics;
use super::peers::PeerDirectory;
use super::round_trip::RoundTrips;
use super::snapshots::{TransferReport, ViewOpener};
use super::storage::{ApplierJob, ApplierReport};
use super::transport::Transport;
use crate::core::{
    LogIndex, MembershipChange, Message, MessageBody, NodeId, Raft, Role, Status, Term,
};
pub(crate) use crate::pipeline::ReadMode;
use crate::pipeline::{
    ApplyOutcome, Input, Instant, Output, Pipeline, PipelineConfig, ReadChunk, Refusal,
    Reply as PipelineReply, RequestId, StageJob, StagedTransfer, TransferConfig, WriteDone,
    WriteJob, FOLLOWER_APPLY_WAIT_DEFAULT,
};

/// A committed and applied proposal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Applied {
    pub(crate) index: LogIndex,
    pub(crate) response: Vec<u8>,
}

type Reply<T> = oneshot::Sender<Result<T, ServiceError>>;

/// Everything that reaches the driver.
pub(crate) enum Event {
    /// A message from a peer.
    Peer(Message),
    /// A peer refused this node's messages: it does not count this node
    /// as a member, and is at `term`.
    NotHeard { by: NodeId, term: crate::core::Term },
    /// A client command (an encoded `LogCommand`).
    Propose {
        command: Vec<u8>,
        reply: Reply<Applied>,
    },
    /// A read: answered once the local state machine may serve it.
    Read {
        mode: ReadMode,
        reply: Reply<LogIndex>,
    },
    /// Change the cluster's membership; answered once the change's entry
    /// is applied here.
    ChangeMembership {
        change: MembershipChange,
        reply: Reply<Applied>,
    },
    /// Hand leadership to another node.
    Transfer {
        target: NodeId,
        reply: Reply<NodeId>,
    },
    /// Report the node's state.
    Status { reply: oneshot::Sender<NodeStatus> },
    /// A read found the stored state machine at `stored_applied`, behind
    /// the applied index the pipeline counted (applies lost in a Postgres
    /// crash): the pipeline has them replayed.
    StateMachineBehind { stored_applied: LogIndex },
}

/// The core's status plus what only the driver knows.
#[derive(Clone, Debug)]
pub(crate) struct NodeStatus {
    pub(crate) core: Status,
    pub(crate) storage_healthy: bool,
}

/// Channels to the storage tasks.
pub(crate) struct StorageChannels {
    pub(crate) write_jobs: mpsc::Sender<WriteJob>,
    pub(crate) write_done: mpsc::Receiver<Result<WriteDone, StoreError>>,
    pub(crate) apply_batches: mpsc::Sender<ApplierJob>,
    pub(crate) apply_done: mpsc::Receiver<Result<ApplierReport, StoreError>>,
    /// Outcomes the log writer's and the applier's applies computed
    /// before their COMMIT (`Input::Outcomes`).
    pub(crate) outcomes: mpsc::UnboundedReceiver<Vec<(LogIndex, Term, ApplyOutcome)>>,
    pub(crate) stage_jobs: mpsc::Sender<StageJob>,
    /// What the stager and the view tasks report.
    pub(crate) transfer_reports: mpsc::Receiver<TransferReport>,
    pub(crate) open_view: ViewOpener,
    /// Most entries the store takes in one append (its
    /// `entries_per_append_max`): the pipeline writes longer runs in parts.
    pub(crate) entries_per_append_max: usize,
}

/// A client waiting for the pipeline's reply.
enum Waiting {
    Proposal(Reply<Applied>),
    Read(Reply<LogIndex>),
    Transfer(Reply<NodeId>),
}

/// Events taken in one turn beyond the one that woke the driver, so that
/// proposals arriving together share one Ready (and one write), while a
/// flood of events still lets the timer and storage reports in.
const EVENTS_PER_TURN_MAX: usize = 4096;

/// The driver's state.
pub(crate) struct Driver {
    pipeline: Pipeline,
    config: Arc<NodeConfig>,
    transport: Transport,
    storage: StorageChannels,
    metrics: Arc<Metrics>,
    /// Heartbeats and appends awaiting their answers, for the round-trip
    /// metric (observation only).
    round_trips: RoundTrips,
    /// The wall-clock origin of the pipeline's instants.
    started: tokio::time::Instant,
    next_request: u64,
    waiting: BTreeMap<RequestId, Waiting>,
    /// Open snapshot views: their read queues.
    views: BTreeMap<u64, mpsc::Sender<ReadChunk>>,
    /// The log indexes of the latest and of the committed membership the
    /// directory was made from: it is made again when either moves.
    directory_made_at: (LogIndex, LogIndex),
    /// The state machine's applied index, published as it moves (watches
    /// look for new history then).
    applied: tokio::sync::watch::Sender<LogIndex>,
}

impl Driver {
    /// The state machine's applied index, as the driver publishes it after
    /// every turn that moved it.
    pub(crate) fn applied(&self) -> tokio::sync::watch::Receiver<LogIndex> {
        self.applied.subscribe()
    }

    /// A driver around `raft`. `read_context_first` must differ between
    /// starts of the node (see `PipelineConfig`); `staged` is the snapshot
    /// transfer the staging holds.
    pub(crate) fn new(
        raft: Raft,
        config: Arc<NodeConfig>,
        transport: Transport,
        storage: StorageChannels,
        metrics: Arc<Metrics>,
        read_context_first: u64,
        staged: Option<StagedTransfer>,
    ) -> Driver {
        let election_timeout = config.tick() * config.raft.election_ticks_max as u32;
        let pipeline_config = PipelineConfig {
            tick: config.tick(),
            transfer_timeout: election_timeout * 2,
            read_context_first,
            storage_stall_timeout: election_timeout,
            compaction_entries: config.raft.compaction_entries,
            write_entries_max: storage.entries_per_append_max,
            apply_ahead: true,
            follower_apply_wait: FOLLOWER_APPLY_WAIT_DEFAULT,
            transfer: TransferConfig {
                chunk_bytes: config.raft.message_bytes_max,
                chunks_in_flight: config.raft.snapshot_chunks_in_flight,
                resend_after: election_timeout * 2,
                view_ttl: Duration::from_millis(config.raft.snapshot_view_idle_ms),
            },
            staged,
        };
        let mut driver = Driver {
            pipeline: Pipeline::new(raft, pipeline_config, Instant::default()),
            config,
            transport,
            storage,
            metrics,
            round_trips: RoundTrips::new(),
            started: tokio::time::Instant::now(),
            next_request: 0,
            waiting: BTreeMap::new(),
            views: BTreeMap::new(),
            applied: tokio::sync::watch::channel(LogIndex(0)).0,
            directory_made_at: (LogIndex(0), LogIndex(0)),
        };
        driver.publish_directory();
        driver
    }

    /// Makes the peer directory again and hands it to the transport and
    /// the peer gate, when the membership it was made from changed.
    fn follow_membership(&mut self) {
        let log = self.pipeline.raft().log();
        let commit = log.commit_index();
        let committed_at = log
            .membership_entries()
            .iter()
            .rev()
            .find(|(index, _)| *index <= commit)
            .map_or(log.snapshot().index, |(index, _)| *index);
        if (log.membership_index(), committed_at) != self.directory_made_at {
            self.directory_made_at = (log.membership_index(), committed_at);
            self.publish_directory();
        }
    }

    fn publish_directory(&mut self) {
        let directory = PeerDirectory::of(self.pipeline.raft(), &self.config);
        for peer in directory.unreachable() {
            tracing::warn!(
                peer = peer.0,
                "no address is known for a member: neither the membership nor this node's [[peer]] list gives one"
            );
        }
        self.transport.follow(directory);
    }

    fn now(&self) -> Instant {
        Instant(self.started.elapsed())
    }

    /// Runs until shutdown or a fatal storage error.
    pub(crate) async fn run(
        mut self,
        mut events: mpsc::Receiver<Event>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), StoreError> {
        loop {
            let wake_at = self.started + self.pipeline.wake_at().0;
            tokio::select! {
                _ = shutdown.changed() => break,
                () = tokio::time::sleep_until(wake_at) => {
                    let now = self.now();
                    self.pipeline.advance(now);
                }
                event = events.recv() => match event {
                    Some(event) => self.handle(event),
                    None => break,
                },
                Some(outcomes) = self.storage.outcomes.recv() => {
                    let now = self.now();
                    self.pipeline.handle(now, Input::Outcomes(outcomes));
                }
                done = self.storage.write_done.recv() => {
                    let done = received(done, "the log writer")?;
                    self.early_outcomes();
                    let now = self.now();
                    self.pipeline.handle(now, Input::WriteDone(done));
                }
                done = self.storage.apply_done.recv() => {
                    let input = match received(done, "the applier")? {
                        ApplierReport::Applied(done) => Input::ApplyDone(done),
                        ApplierReport::Abandoned => Input::ApplyAbandoned,
                    };
                    self.early_outcomes();
                    let now = self.now();
                    self.pipeline.handle(now, input);
                }
                report = self.storage.transfer_reports.recv() => {
                    let input = received(report, "the stager")?;
                    let now = self.now();
                    self.pipeline.handle(now, input);
                }
            }
            for _ in 0..EVENTS_PER_TURN_MAX {
                match events.try_recv() {
                    Ok(event) => self.handle(event),
                    Err(_) => break,
                }
            }
            self.carry_out();
        }
        self.pipeline.fail_all("the node is shutting down");
        self.carry_out();
        Ok(())
    }

    /// Outcomes reported before the COMMIT whose report is being handled:
    /// the pipeline gets them first, as they were sent.
    fn early_outcomes(&mut self) {
        while let Ok(outcomes) = self.storage.outcomes.try_recv() {
            let now = self.now();
            self.pipeline.handle(now, Input::Outcomes(outcomes));
        }
    }

    fn handle(&mut self, event: Event) {
        let now = self.now();
        let input = match event {
            Event::Peer(message) => {
                self.metrics.peer_messages_received.inc();
                self.round_trips
                    .received(&message, std::time::Instant::now());
                Input::Peer(message)
            }
            Event::NotHeard { by, term } => {
                tracing::warn!(
                    peer = by.0,
                    term = term.0,
                    "a peer does not count this node as a member and refuses its messages"
                );
                Input::NotHeard { by, term }
            }
            Event::Propose { command, reply } => Input::Propose {
                request: self.wait(Waiting::Proposal(reply)),
                command,
            },
            Event::Read { mode, reply } => Input::Read {
                request: self.wait(Waiting::Read(reply)),
                mode,
            },
            Event::ChangeMembership { change, reply } => Input::ChangeMembership {
                request: self.wait(Waiting::Proposal(reply)),
                change,
            },
            Event::Transfer { target, reply } => Input::Transfer {
                request: self.wait(Waiting::Transfer(reply)),
                target,
            },
            Event::Status { reply } => {
                let storage_healthy = self.metrics.storage_healthy.get() == 1;
                let _ = reply.send(NodeStatus {
                    core: self.pipeline.status(),
                    storage_healthy,
                });
                return;
            }
            Event::StateMachineBehind { stored_applied } => {
                Input::StateMachineBehind { stored_applied }
            }
        };
        self.pipeline.handle(now, input);
    }

    fn wait(&mut self, waiting: Waiting) -> RequestId {
        self.next_request += 1;
        let request = RequestId(self.next_request);
        self.waiting.insert(request, waiting);
        request
    }

    /// Carries out everything the pipeline asked for.
    fn carry_out(&mut self) {
        loop {
            let outputs = self.pipeline.take_outputs();
            if outputs.is_empty() {
                break;
            }
            for output in outputs {
                self.carry_out_one(output);
            }
        }
        self.follow_membership();
        self.observe();
    }

    fn carry_out_one(&mut self, output: Output) {
        match output {
            Output::Send(message) => {
                if let MessageBody::SnapshotChunk(chunk) = &message.body {
                    self.metrics.snapshot_chunks_sent.inc();
                    if chunk.last {
                        self.metrics.snapshots_sent.inc();
                    }
                }
                self.round_trips
                    .sent(&message, std::time::Instant::now(), &self.metrics);
                self.transport.send(&message);
            }
            Output::Write(job) => {
                // The pipeline keeps one write in flight, so the
                // writer's one-slot queue is empty.
                if self.storage.write_jobs.try_send(job).is_err() {
                    panic!("node {}: the log writer stopped", self.pipeline.raft().id());
                }
            }
            Output::Apply(batch) => self.hand_applier(ApplierJob::Apply(batch)),
            Output::ApplyAhead(batch) => {
                self.metrics.applies_ahead.inc();
                self.hand_applier(ApplierJob::Ahead(batch))
            }
            Output::ConfirmApply => self.hand_applier(ApplierJob::Confirm),
            Output::AbandonApply => self.hand_applier(ApplierJob::Abandon),
            Output::Reply { request, reply } => self.answer(request, reply),
            Output::OpenView { view } => {
                let (reads, queue) = mpsc::channel(1);
                (self.storage.open_view)(view, queue);
                self.views.insert(view, reads);
            }
            Output::ReadChunk(read) => {
                let view = read.view;
                // The pipeline reads one chunk of a view at a time.
                let sent = self
                    .views
                    .get(&view)
                    .is_some_and(|reads| reads.try_send(read).is_ok());
                if !sent {
                    self.views.remove(&view);
                    let now = self.now();
                    self.pipeline.handle(now, Input::ViewLost { view });
                }
            }
            Output::CloseView { view } => {
                self.views.remove(&view);
            }
            Output::Stage(job) => {
                if self.storage.stage_jobs.try_send(job).is_err() {
                    panic!("node {}: the stager stopped", self.pipeline.raft().id());
                }
            }
            Output::Implausible(report) => {
                self.metrics.peer_messages_implausible.inc();
                tracing::warn!(
                    peer = report.from.0,
                    term = report.term.0,
                    %report,
                    "ignored a peer message no honest peer could send"
                );
            }
            Output::HandingOff {
                target,
                stalled_for,
            } => tracing::warn!(
                target = target.0,
                ?stalled_for,
                "this node's storage stalled; handing leadership to the most up-to-date follower"
            ),
            Output::RoleChanged {
                from,
                to,
                term,
                leader,
            } => {
                let leader = leader.map(|id| id.0);
                tracing::info!(node = %self.pipeline.raft().id(), %term, %from, %to, ?leader, "role changed");
                if to == Role::Candidate {
                    self.metrics.elections.inc();
                }
                if to == Role::Leader {
                    self.metrics.leader_changes.inc();
                }
            }
        }
    }

    /// The pipeline keeps one batch in flight and gives a batch applied
    /// ahead one word, so the applier's two-slot queue has room.
    fn hand_applier(&mut self, job: ApplierJob) {
        if self.storage.apply_batches.try_send(job).is_err() {
            panic!("node {}: the applier stopped", self.pipeline.raft().id());
        }
    }

    fn answer(&mut self, request: RequestId, reply: PipelineReply) {
        let Some(waiting) = self.waiting.remove(&request) else {
            return;
        };
        let (waiting, refusal) = match (waiting, reply) {
            (Waiting::Proposal(client), PipelineReply::Applied { index, response }) => {
                let _ = client.send(Ok(Applied { index, response }));
                return;
            }
            (Waiting::Read(client), PipelineReply::ReadReady { index }) => {
                let _ = client.send(Ok(index));
                return;
            }
            (Waiting::Transfer(client), PipelineReply::Transferred { leader }) => {
                let _ = client.send(Ok(leader));
                return;
            }
            (waiting, PipelineReply::Refused(refusal)) => (waiting, refusal),
            (waiting, reply) => {
                tracing::error!(
                    ?request,
                    ?reply,
                    "the pipeline answered a request with a reply of another kind"
                );
                (
                    waiting,
                    Refusal::Unavailable("internal error; retry".into()),
                )
            }
        };
        let error = self.service_error(refusal);
        match waiting {
            Waiting::Proposal(client) => {
                self.metrics.proposals_failed.inc();
                drop(client.send(Err(error)))
            }
            Waiting::Read(client) => drop(client.send(Err(error))),
            Waiting::Transfer(client) => drop(client.send(Err(error))),
        }
    }

    fn service_error(&self, refusal: Refusal) -> ServiceError {
        match refusal {
            Refusal::NotLeader {
                leader: Some(leader),
            } => ServiceError::NotLeader {
                leader_id: Some(leader.0),
                leader_address: self
                    .transport
                    .directory()
                    .client_address(&self.config, leader),
            },
            Refusal::NotLeader { leader: None } => {
                ServiceError::Unavailable("no leader is known; retry".into())
            }
            Refusal::Unavailable(reason) => ServiceError::Unavailable(reason),
            Refusal::InvalidArgument(reason) => ServiceError::InvalidArgument(reason),
            Refusal::OutcomeUnknown(reason) => ServiceError::DeadlineExceeded(reason),
        }
    }

    fn observe(&self) {
        let raft = self.pipeline.raft();
        let log = raft.log();
        self.metrics.term.set(raft.term().0);
        self.metrics
            .is_leader
            .set(u64::from(raft.role() == Role::Leader));
        self.metrics.commit_index.set(log.commit_index().0);
        let applied = self.pipeline.state_machine_index();
        self.metrics.applied_index.set(applied.0);
        self.applied.send_if_modified(|published| {
            let moved = *published != applied;
            *published = applied;
            moved
        });
        self.metrics
            .apply_lag_entries
            .set(log.commit_index().0.saturating_sub(applied.0));
        self.metrics.last_index.set(log.last_index().0);
        self.metrics
            .log_entries
            .set(log.last_index().0.saturating_sub(log.snapshot().index.0));
        self.metrics
            .proposals_pending
            .set(self.pipeline.proposals_pending() as u64);
    }
}

/// A storage task's report; its channel closing means it stopped.
fn received<T>(done: Option<Result<T, StoreError>>, task: &str) -> Result<T, StoreError> {
    done.unwrap_or_else(|| {
        Err(StoreError::Corrupt {
            reason: format!("{task} stopped"),
        })
    })
}

/// How long a client waits for its request before DEADLINE_EXCEEDED.
pub(crate) fn request_timeout(config: &NodeConfig) -> Duration {
    Duration::from_millis(config.limits.request_timeout_ms)
}
