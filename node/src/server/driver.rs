//! The tokio driver of the pure core. It owns the `Raft`, turns wall-clock
//! intervals into ticks, feeds it peer messages and client requests, and
//! carries out every `Ready` in the order `crate::core` prescribes:
//!
//! ```text
//!   peers, clients, ticks ──> Raft ──> Ready
//!                                       ├─ messages ─────────────> transport (now)
//!                                       ├─ hard state, entries ──> log writer ──┐
//!                                       │                                        │ durable
//!                                       │   persisted(index, term) <─────────────┤
//!                                       │   messages_after_persist ──> transport ┘
//!                                       ├─ committed entries ────> applier ──> applied(index)
//!                                       └─ reads ────────────────> waiting clients
//! ```
//!
//! One write and one apply batch are in flight at a time; whatever the
//! core produces meanwhile is merged into the next one (group commit).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use raftgres_storage_pg::StoreError;
use tokio::sync::{mpsc, oneshot, watch};

use super::config::NodeConfig;
use super::error::ServiceError;
use super::metrics::Metrics;
use super::storage::{ApplyDone, ApplyOutcome, WriteDone, WriteJob};
use super::transport::Transport;
use crate::core::{
    LogIndex, Message, MessageBody, NodeId, ProposeError, Raft, ReadError, Role, Snapshot, Status,
    Term, TransferError,
};

/// How a read is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReadMode {
    /// ReadIndex: a quorum confirms leadership.
    Linearizable,
    /// The leader's lease, without a quorum round.
    Lease,
}

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
    /// Hand leadership to another node.
    Transfer {
        target: NodeId,
        reply: Reply<NodeId>,
    },
    /// Report the node's state.
    Status { reply: oneshot::Sender<NodeStatus> },
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
    pub(crate) apply_batches: mpsc::Sender<Vec<crate::core::Entry>>,
    pub(crate) apply_done: mpsc::Receiver<Result<ApplyDone, StoreError>>,
}

/// The driver's state.
pub(crate) struct Driver {
    raft: Raft,
    config: Arc<NodeConfig>,
    transport: Transport,
    storage: StorageChannels,
    metrics: Arc<Metrics>,
    write_in_flight: bool,
    next_write: Option<WriteJob>,
    apply_in_flight: bool,
    next_apply: Vec<crate::core::Entry>,
    /// Proposals waiting for their entry to be applied, by index.
    proposals: BTreeMap<LogIndex, (Term, Reply<Applied>)>,
    /// Linearizable reads waiting for the core, by read context.
    reads: BTreeMap<u64, Reply<LogIndex>>,
    next_read_context: u64,
    /// Lease reads waiting for the applier to reach their index.
    lease_reads: Vec<(LogIndex, Reply<LogIndex>)>,
    transfers: Vec<(NodeId, Instant, Reply<NodeId>)>,
    applied: LogIndex,
    last_role: Role,
    /// The latest state machine snapshot, not yet the compaction point.
    snapshot_latest: Option<Snapshot>,
    /// The snapshot at the log's compacted prefix: what a follower that
    /// needs compacted entries receives.
    snapshot_sendable: Option<Snapshot>,
}

impl Driver {
    pub(crate) fn new(
        raft: Raft,
        config: Arc<NodeConfig>,
        transport: Transport,
        storage: StorageChannels,
        metrics: Arc<Metrics>,
    ) -> Driver {
        let applied = raft.log().applied_index();
        let last_role = raft.role();
        Driver {
            raft,
            config,
            transport,
            storage,
            metrics,
            write_in_flight: false,
            next_write: None,
            apply_in_flight: false,
            next_apply: Vec::new(),
            proposals: BTreeMap::new(),
            reads: BTreeMap::new(),
            next_read_context: 1,
            lease_reads: Vec::new(),
            transfers: Vec::new(),
            applied,
            last_role,
            snapshot_latest: None,
            snapshot_sendable: None,
        }
    }

    /// The applier takes a snapshot before its first batch (after a restart
    /// on a compacted log): hold batches back until it reports.
    pub(crate) fn expect_start_up_snapshot(&mut self) {
        self.apply_in_flight = true;
    }

    /// Runs until shutdown or a fatal storage error.
    pub(crate) async fn run(
        mut self,
        mut events: mpsc::Receiver<Event>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), StoreError> {
        let mut ticker = tokio::time::interval(self.config.tick());
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let events_per_turn_max = 4096;
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = ticker.tick() => self.raft.tick(),
                event = events.recv() => match event {
                    Some(event) => self.handle(event),
                    None => break,
                },
                done = self.storage.write_done.recv() => self.write_done(done)?,
                done = self.storage.apply_done.recv() => self.apply_done(done)?,
            }
            // Take whatever else is already waiting, so that proposals that
            // arrive together share one Ready (and one write).
            for _ in 0..events_per_turn_max {
                match events.try_recv() {
                    Ok(event) => self.handle(event),
                    Err(_) => break,
                }
            }
            self.process_ready();
        }
        self.fail_everything("the node is shutting down");
        Ok(())
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Peer(message) => {
                self.metrics.peer_messages_received.increment();
                self.raft.step(message);
                for report in self.raft.take_implausible() {
                    self.metrics.peer_messages_implausible.increment();
                    tracing::warn!(
                        peer = report.from.0,
                        term = report.term.0,
                        %report,
                        "ignored a peer message no honest peer could send"
                    );
                }
            }
            Event::Propose { command, reply } => self.propose(command, reply),
            Event::Read { mode, reply } => self.read(mode, reply),
            Event::Transfer { target, reply } => match self.raft.transfer_leadership(target) {
                Ok(()) if target == self.raft.id() => {
                    let _ = reply.send(Ok(target));
                }
                Ok(()) => {
                    let deadline = Instant::now()
                        + self.config.tick() * self.config.raft.election_ticks_max as u32 * 2;
                    self.transfers.push((target, deadline, reply));
                }
                Err(TransferError::NotLeader { leader }) => {
                    let _ = reply.send(Err(self.not_leader(leader)));
                }
                Err(TransferError::UnknownNode(node)) => {
                    let _ = reply.send(Err(ServiceError::InvalidArgument(format!(
                        "node {node} is not a voter"
                    ))));
                }
            },
            Event::Status { reply } => {
                let storage_healthy = self.metrics.storage_healthy.get() == 1;
                let _ = reply.send(NodeStatus {
                    core: self.raft.status(),
                    storage_healthy,
                });
            }
        }
    }

    fn propose(&mut self, command: Vec<u8>, reply: Reply<Applied>) {
        match self.raft.propose(command) {
            Ok(index) => {
                self.proposals.insert(index, (self.raft.term(), reply));
            }
            Err(ProposeError::NotLeader { leader }) => {
                let _ = reply.send(Err(self.not_leader(leader)));
            }
            Err(ProposeError::TransferInProgress) => {
                let _ = reply.send(Err(ServiceError::Unavailable(
                    "leadership transfer in progress; retry".into(),
                )));
            }
            Err(ProposeError::Backpressure) => {
                let _ = reply.send(Err(ServiceError::Unavailable(
                    "too many uncommitted commands; retry".into(),
                )));
            }
        }
    }

    fn read(&mut self, mode: ReadMode, reply: Reply<LogIndex>) {
        if mode == ReadMode::Lease {
            if let Some(index) = self.raft.lease_read_index() {
                if index <= self.applied {
                    let _ = reply.send(Ok(index));
                } else {
                    self.lease_reads.push((index, reply));
                }
                return;
            }
            // No lease right now (new leader, or not leader): fall back to
            // a linearizable read, which is never wrong.
        }
        let context = self.next_read_context;
        self.next_read_context += 1;
        match self.raft.read_index(context) {
            Ok(()) => {
                self.reads.insert(context, reply);
            }
            Err(ReadError::NoLeader { leader }) => {
                let _ = reply.send(Err(self.not_leader(leader)));
            }
            Err(ReadError::Backpressure) => {
                let _ = reply.send(Err(ServiceError::Unavailable(
                    "too many pending reads; retry".into(),
                )));
            }
        }
    }

    fn not_leader(&self, leader: Option<NodeId>) -> ServiceError {
        match leader {
            Some(leader) => ServiceError::NotLeader {
                leader_id: Some(leader.0),
                leader_address: self.config.client_address(leader.0).map(str::to_string),
            },
            None => ServiceError::Unavailable("no leader is known; retry".into()),
        }
    }

    fn process_ready(&mut self) {
        while self.raft.has_ready() {
            let ready = self.raft.ready();
            for message in &ready.messages {
                self.send(message);
            }
            if let Some(snapshot) = &ready.snapshot {
                // The snapshot replaces everything up to its index; entries
                // handed out for applying before it arrived are covered.
                let covered = snapshot.meta.index;
                self.next_apply.retain(|entry| entry.index > covered);
            }
            let persist_point = ready.persist_point();
            let job = WriteJob {
                hard_state: ready.hard_state,
                snapshot: ready.snapshot,
                entries: ready.entries,
                messages_after_persist: ready.messages_after_persist,
                persist_point,
                compact_to: None,
            };
            if !job.writes_anything() && !self.write_in_flight && self.next_write.is_none() {
                // Nothing to write and every earlier write is durable: these
                // messages claim nothing that is not already on disk.
                for message in &job.messages_after_persist {
                    self.transport.send(message);
                }
            } else if job.writes_anything() || !job.messages_after_persist.is_empty() {
                match &mut self.next_write {
                    Some(next) => next.merge(job),
                    None => self.next_write = Some(job),
                }
            }
            self.next_apply.extend(ready.committed_entries);
            for read in ready.reads {
                if let Some(reply) = self.reads.remove(&read.context) {
                    let _ = reply.send(Ok(read.index));
                }
            }
            for context in ready.reads_dropped {
                if let Some(reply) = self.reads.remove(&context) {
                    let _ = reply.send(Err(ServiceError::Unavailable(
                        "leadership changed during the read; retry".into(),
                    )));
                }
            }
        }
        self.dispatch_write();
        self.dispatch_apply();
        self.finish_transfers();
        self.observe_role();
    }

    /// Sends a message, attaching the snapshot's bytes to InstallSnapshot
    /// (the core emits it without them).
    fn send(&self, message: &Message) {
        let MessageBody::InstallSnapshot { snapshot } = &message.body else {
            self.transport.send(message);
            return;
        };
        match &self.snapshot_sendable {
            Some(sendable) if sendable.meta == snapshot.meta => {
                let body = MessageBody::InstallSnapshot {
                    snapshot: sendable.clone(),
                };
                self.transport.send(&Message {
                    body,
                    ..message.clone()
                });
            }
            _ => tracing::warn!(
                index = snapshot.meta.index.0,
                "no snapshot data for the compacted prefix; not sent"
            ),
        }
    }

    fn dispatch_write(&mut self) {
        // Installing a snapshot replaces the state machine: wait until no
        // apply transaction is running against it.
        let installs = self
            .next_write
            .as_ref()
            .is_some_and(|job| job.snapshot.is_some());
        if self.write_in_flight || (installs && self.apply_in_flight) {
            return;
        }
        if let Some(job) = self.next_write.take() {
            self.write_in_flight = true;
            // The writer is idle, so its one-slot queue is empty.
            if self.storage.write_jobs.try_send(job).is_err() {
                panic!("node {}: the log writer stopped", self.raft.id());
            }
        }
    }

    fn dispatch_apply(&mut self) {
        if self.apply_in_flight || self.next_apply.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.next_apply);
        self.apply_in_flight = true;
        if self.storage.apply_batches.try_send(batch).is_err() {
            panic!("node {}: the applier stopped", self.raft.id());
        }
    }

    fn write_done(
        &mut self,
        done: Option<Result<WriteDone, StoreError>>,
    ) -> Result<(), StoreError> {
        let done = received(done, "the log writer")?;
        self.write_in_flight = false;
        if let Some((index, term)) = done.persist_point {
            self.raft.persisted(index, term);
        }
        if let Some(installed) = done.installed {
            let covered = installed.meta.index;
            self.applied = self.applied.max(covered);
            self.fail_proposals_up_to(covered);
            // The log now starts after this snapshot: it is what this node
            // sends when it leads and a follower needs the prefix.
            self.snapshot_sendable = Some(installed);
            self.snapshot_latest = None;
        }
        for message in &done.messages_after_persist {
            self.transport.send(message);
        }
        Ok(())
    }

    fn apply_done(
        &mut self,
        done: Option<Result<ApplyDone, StoreError>>,
    ) -> Result<(), StoreError> {
        let done = received(done, "the applier")?;
        self.apply_in_flight = false;
        for (index, term, outcome) in done.outcomes {
            let Some((proposed_term, reply)) = self.proposals.remove(&index) else {
                continue;
            };
            let result = if proposed_term != term {
                Err(ServiceError::Unavailable(format!(
                    "the command at index {index} was replaced after a leadership change; it was not applied"
                )))
            } else {
                match outcome {
                    ApplyOutcome::Response(response) => Ok(Applied { index, response }),
                    ApplyOutcome::Repeated { response, first_index } => {
                        Ok(Applied { index: first_index, response })
                    }
                    ApplyOutcome::Refused(reason) => Err(ServiceError::InvalidArgument(reason)),
                    ApplyOutcome::Unknown => Err(ServiceError::DeadlineExceeded(
                        "the command was applied but its response was lost; retry with the same session".into(),
                    )),
                }
            };
            let _ = reply.send(result);
        }
        self.fail_proposals_up_to(done.applied);
        self.applied = done.applied;
        self.raft.applied(done.applied);
        if let Some(snapshot) = done.snapshot {
            self.snapshot_taken(snapshot);
        }
        let applied = self.applied;
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.lease_reads)
            .into_iter()
            .partition(|(index, _)| *index <= applied);
        self.lease_reads = waiting;
        for (index, reply) in ready {
            let _ = reply.send(Ok(index));
        }
        Ok(())
    }

    /// Proposals at or below `index` that were never reported applied were
    /// truncated away by a new leader (or covered by a snapshot).
    fn fail_proposals_up_to(&mut self, index: LogIndex) {
        while let Some(entry) = self.proposals.first_entry() {
            if *entry.key() > index {
                break;
            }
            let (_, reply) = entry.remove();
            let _ = reply.send(Err(ServiceError::Unavailable(
                "the command was lost in a leadership change".into(),
            )));
        }
    }

    /// Keeps the new snapshot and compacts the log up to the previous one,
    /// so that between one and two times `compaction_entries` entries stay
    /// available to followers that lag a little. After a restart the log's
    /// prefix has no snapshot bytes in memory: compact to the new one at once.
    fn snapshot_taken(&mut self, snapshot: Snapshot) {
        let prefix_without_bytes =
            self.snapshot_sendable.is_none() && self.raft.log().snapshot().index > LogIndex(0);
        let compaction_point = if prefix_without_bytes {
            Some(snapshot)
        } else {
            self.snapshot_latest.replace(snapshot)
        };
        let Some(point) = compaction_point else {
            return;
        };
        if point.meta.index <= self.raft.log().snapshot().index {
            return;
        }
        self.raft.compact(point.meta.index);
        let job = WriteJob {
            compact_to: Some(point.meta),
            ..WriteJob::default()
        };
        match &mut self.next_write {
            Some(next) => next.merge(job),
            None => self.next_write = Some(job),
        }
        tracing::debug!(index = point.meta.index.0, "compacted the log");
        self.snapshot_sendable = Some(point);
    }

    fn finish_transfers(&mut self) {
        if self.transfers.is_empty() {
            return;
        }
        let leader = self.raft.leader();
        let now = Instant::now();
        let mut waiting = Vec::new();
        for (target, deadline, reply) in std::mem::take(&mut self.transfers) {
            if leader == Some(target) {
                let _ = reply.send(Ok(target));
            } else if now >= deadline {
                let _ = reply.send(Err(ServiceError::Unavailable(format!(
                    "leadership did not move to node {target} in time; the leader is {:?}",
                    leader.map(|leader| leader.0)
                ))));
            } else {
                waiting.push((target, deadline, reply));
            }
        }
        self.transfers = waiting;
    }

    fn observe_role(&mut self) {
        let role = self.raft.role();
        if role != self.last_role {
            let leader = self.raft.leader().map(|id| id.0);
            tracing::info!(node = %self.raft.id(), term = %self.raft.term(), from = %self.last_role, to = %role, ?leader, "role changed");
            if role == Role::Candidate {
                self.metrics.elections.increment();
            }
            if role == Role::Leader {
                self.metrics.leader_changes.increment();
            }
            self.last_role = role;
        }
        let log = self.raft.log();
        self.metrics.term.set(self.raft.term().0);
        self.metrics.is_leader.set(u64::from(role == Role::Leader));
        self.metrics.commit_index.set(log.commit_index().0);
        self.metrics.applied_index.set(log.applied_index().0);
        self.metrics.last_index.set(log.last_index().0);
    }

    fn fail_everything(&mut self, reason: &str) {
        for (_, (_, reply)) in std::mem::take(&mut self.proposals) {
            let _ = reply.send(Err(ServiceError::Unavailable(reason.into())));
        }
        for (_, reply) in std::mem::take(&mut self.reads) {
            let _ = reply.send(Err(ServiceError::Unavailable(reason.into())));
        }
        for (_, reply) in std::mem::take(&mut self.lease_reads) {
            let _ = reply.send(Err(ServiceError::Unavailable(reason.into())));
        }
        for (_, _, reply) in std::mem::take(&mut self.transfers) {
            let _ = reply.send(Err(ServiceError::Unavailable(reason.into())));
        }
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
