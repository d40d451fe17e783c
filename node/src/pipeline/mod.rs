//! The pipeline: every decision between the consensus core and the world,
//! in pure code (no I/O, no async, no clock of its own) that the tokio node
//! drives against Postgres and gRPC, and that a simulator can drive against
//! simulated ones.
//!
//! The core decides *what* Raft must do; the pipeline decides *how the node
//! carries it out*: one write in flight and later work merged into the next
//! one, the persist point and the messages that wait for it, apply batches
//! and their order against snapshot installs, compaction policy, which
//! client gets which answer, reads waiting for ReadIndex or the applier,
//! leadership transfers and their deadline, snapshots streamed to and
//! staged from peers, and how elapsed time becomes ticks.
//!
//! ```text
//!   now ───────────────> clock ──> ticks ──┐
//!   Input::Peer, Propose, Read, Transfer ──┼──> Raft ──> Ready
//!   Input::WriteDone, ApplyDone, Outcomes, ┘               │
//!         ApplyAbandoned
//!                                                           v
//!   Output::Send ............ messages (now, or after their write is durable)
//!   Output::Write ........... one WriteJob at a time (group commit), with
//!                             the committed entries it applies
//!   Output::Apply ........... committed entries, alone, when no write waits
//!   Output::ApplyAhead ...... a leader's entries, ahead of their commit;
//!   Output::ConfirmApply .... then committed, or
//!   Output::AbandonApply .... never to be confirmed (leadership lost)
//!   Output::Reply ........... a client's answer
//!   Output::OpenView, ReadChunk, CloseView
//!                             a snapshot streamed from an MVCC view
//!   Output::Stage ........... snapshot chunks received, to stage
//!   Output::Implausible ..... a peer message the core ignored (for logs)
//! ```
//!
//! The driver's obligations:
//! 1. Before handling anything at instant `now`, call [`Pipeline::handle`]
//!    (or [`Pipeline::advance`]) with it: elapsed ticks reach the core first.
//!    Call [`Pipeline::advance`] by [`Pipeline::wake_at`] at the latest.
//! 2. Carry out every `Output::Write` atomically and durably, in order, then
//!    report it with `Input::WriteDone` (built by [`WriteDone::of`]). A
//!    write that cannot be carried out is retried; it is never reported
//!    done when it is not durable. A write that carries an apply batch
//!    (`WriteJob::apply`) applies it in the same transaction, as in
//!    obligation 3, and reports it in `WriteDone::applied`.
//! 3. Apply every `Output::Apply` batch in one transaction that also records
//!    the applied index, then report it with `Input::ApplyDone`. Outcomes
//!    computed before the COMMIT may be reported first with
//!    `Input::Outcomes` (for a carried batch too), never outcomes computed
//!    on a wrong idea of the applied index.
//!
//! One transaction per batch: committed entries wait for the next write
//! and commit with it (log rows, state machine rows, sessions and applied
//! index under one COMMIT); they get a transaction of their own only when
//! no write waits to start. A follower's wait `follower_apply_wait` first
//! either way (unless a read waits for them, or the write that starts
//! waited behind another). At most one batch is applied at a time,
//! whichever carries it.
//!
//! 3a. On `Output::ApplyAhead`, apply the batch as in obligation 3 up to
//!    its outcomes, on the assumption that the applied index stands right
//!    below it, and then wait: neither report the outcomes nor COMMIT
//!    before `Output::ConfirmApply` (the commit reached the batch's last
//!    entry, which is durable here), then go on as in obligation 3. On
//!    `Output::AbandonApply`, or if anything fails or surprises before the
//!    confirmation (an error, the applied index elsewhere), roll back and
//!    report `Input::ApplyAbandoned`; a confirmation that arrives after
//!    that is ignored. A leader hands a batch out ahead when its applier
//!    is idle and nothing committed waits, so the apply's round trips run
//!    while the entries replicate instead of after.
//! 4. Send every `Output::Send` (dropping it is allowed: Raft retransmits).
//! 5. Deliver every `Output::Reply` to the request it names.
//! 6. On shutdown, call [`Pipeline::fail_all`] and deliver its replies.
//! 7. On `Output::OpenView`, open a REPEATABLE READ view of the state
//!    machine (its rows, sessions and applied index) and report the applied
//!    index and term it sees with `Input::ViewOpened`; read each
//!    `Output::ReadChunk` from that view and report it with
//!    `Input::ChunkRead`; release the view on `Output::CloseView`. A view
//!    that fails is reported with `Input::ViewLost`.
//! 8. Stage every `Output::Stage` job durably in one transaction (retried
//!    until it commits, never reported before), then report its transfer
//!    with `Input::Staged`. A write that installs a snapshot
//!    (`WriteJob::snapshot`) installs the staged chunks and empties the
//!    staging in the same transaction.

mod apply;
mod clock;
mod compaction;
pub mod link;
mod planted;
mod requests;
pub mod sessions;
#[cfg(test)]
mod tests;
pub mod transfer;
mod write;

use std::time::Duration;

pub use apply::{commits_without_flush, ApplyBatch, ApplyDone, ApplyOutcome};
pub use clock::Instant;
pub use requests::{check_read_covered, ReadMode, ReadNotCovered, Refusal, Reply, RequestId};
pub use transfer::{ChunkRead, ReadChunk, StageJob, StagedTransfer, TransferConfig};
pub use write::{WriteDone, WriteJob};

/// The most log entries one write carries unless configured otherwise:
/// storage-pg's `ENTRIES_PER_APPEND_MAX_DEFAULT`, beyond which it refuses
/// an append.
pub const WRITE_ENTRIES_MAX_DEFAULT: usize = 8192;

/// How long a follower's committed entries wait before they are applied,
/// unless configured otherwise: then the next log write carries them, or
/// a transaction of their own when no write waits to start. A follower's
/// log write is what its leader's commit waits for; one that carries an
/// apply takes three round trips and the apply's statements instead of
/// one, so at a low write rate most of them should carry none, and the
/// applies they carry are fewer and larger. A write that waited behind
/// another carries them at once: the writer is busy back to back, and
/// the apply then makes its appends larger rather than adding
/// transactions. Far below what a follower lags anyway at a low write
/// rate, when it learns of commits from heartbeats.
pub const FOLLOWER_APPLY_WAIT_DEFAULT: Duration = Duration::from_millis(10);

use crate::core::{
    HardState, ImplausibleMessage, ImplausibleReason, LogIndex, MembershipChange, MembershipError,
    Message, MessageBody, NodeId, ProposeError, Raft, ReadError, Role, SnapshotMeta, Term,
    TransferError,
};

/// What the pipeline needs beyond the core's configuration.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// Wall-clock length of one core tick (non-zero).
    pub tick: Duration,
    /// A leadership transfer that has not completed after this long is
    /// answered as failed.
    pub transfer_timeout: Duration,
    /// The first read context this incarnation uses. Different on every
    /// start, so that a forwarded read's answer from before a restart can
    /// never release a new read. Snapshot views are numbered from it too.
    pub read_context_first: u64,
    /// A write that has not completed after this long means this node's
    /// storage is failing: a leader hands leadership to its most
    /// up-to-date follower, and reads and proposals are refused at once
    /// (about an election timeout).
    pub storage_stall_timeout: Duration,
    /// Every this many applied entries the log is compacted (to the
    /// point this many entries before).
    pub compaction_entries: u64,
    /// Most log entries one write carries (the storage's bound on one
    /// append, [`WRITE_ENTRIES_MAX_DEFAULT`] for storage-pg): a longer run
    /// (a follower catching up merges many appends while a write is in
    /// flight) is written in parts, in order. At least 1.
    pub write_entries_max: usize,
    /// Whether a leader applies ahead of the commit (obligation 3a).
    pub apply_ahead: bool,
    /// How long a follower's committed entries wait before they are
    /// applied, by the next log write or alone
    /// ([`FOLLOWER_APPLY_WAIT_DEFAULT`] in the product; zero: no wait).
    pub follower_apply_wait: Duration,
    /// How snapshots are streamed.
    pub transfer: TransferConfig,
    /// The snapshot transfer the staging held at start, if any.
    pub staged: Option<StagedTransfer>,
}

/// Everything that reaches the pipeline, besides time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A message from a peer (already checked at the transport).
    Peer(Message),
    /// Node `by` dropped a message of this node unread: it does not count
    /// this node as a member (see `Raft::not_heard_by`).
    NotHeard {
        /// The node that refused.
        by: NodeId,
        /// Its term.
        term: Term,
    },
    /// A client command (an encoded state machine command in its session
    /// envelope).
    Propose {
        /// Echoed in the reply.
        request: RequestId,
        /// The command.
        command: Vec<u8>,
    },
    /// A read: answered once the local state machine may serve it.
    Read {
        /// Echoed in the reply.
        request: RequestId,
        /// How to confirm it.
        mode: ReadMode,
    },
    /// Hand leadership to `target`.
    Transfer {
        /// Echoed in the reply.
        request: RequestId,
        /// The node that should lead.
        target: NodeId,
    },
    /// Change the cluster's membership (leader only): answered
    /// `Applied` once the change's entry is applied here (for a change of
    /// voters, the joint membership's entry; the leader then moves on to
    /// the new voters alone by itself).
    ChangeMembership {
        /// Echoed in the reply.
        request: RequestId,
        /// The change.
        change: MembershipChange,
    },
    /// The write handed out last is durable.
    WriteDone(WriteDone),
    /// The apply batch handed out last is committed.
    ApplyDone(ApplyDone),
    /// The batch handed out ahead (`Output::ApplyAhead`) was rolled back
    /// without committing anything: abandoned as asked, or failed before
    /// its confirmation.
    ApplyAbandoned,
    /// The apply in flight (of its own, or carried by the write in
    /// flight) computed these outcomes and has not committed yet. They are
    /// final: the entries are committed in the log, and applying them
    /// again (a retry after a failed or lost COMMIT) gives the same
    /// outcomes, or reports entries that a lost COMMIT did apply as
    /// unknown. Their clients are answered now, as etcd answers once it
    /// has applied in memory, instead of after the COMMIT and its fsync;
    /// reads still wait for the applied index, which moves only with
    /// `ApplyDone` or `WriteDone`.
    Outcomes(Vec<(LogIndex, Term, ApplyOutcome)>),
    /// A read found the stored state machine behind the applied index
    /// this pipeline counted (see [`check_read_covered`]: applies lost in
    /// a Postgres crash). The applier replays lost applies with its next
    /// batch; when none is coming (an idle cluster), the pipeline hands it
    /// the last applied entry again, which makes it replay the gap now.
    StateMachineBehind {
        /// The applied index the state machine's rows are at.
        stored_applied: LogIndex,
    },
    /// The view `Output::OpenView` asked for is open and sees the state
    /// machine at `at` (its applied index and that entry's term).
    ViewOpened {
        /// The view.
        view: u64,
        /// What it sees.
        at: SnapshotMeta,
    },
    /// A view could not be opened or read further.
    ViewLost {
        /// The view.
        view: u64,
    },
    /// A chunk read from a view.
    ChunkRead(ChunkRead),
    /// The stage job handed out last committed; its transfer as stored.
    Staged(StagedTransfer),
}

/// What the driver must carry out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send a message to a peer.
    Send(Message),
    /// Carry out a write (obligation 2).
    Write(WriteJob),
    /// Apply committed entries (obligation 3).
    Apply(ApplyBatch),
    /// Apply entries ahead of their commit, holding the outcomes and the
    /// COMMIT until confirmed (obligation 3a).
    ApplyAhead(ApplyBatch),
    /// The batch handed out ahead is committed: report its outcomes and
    /// commit it (obligation 3a).
    ConfirmApply,
    /// The batch handed out ahead will not be confirmed: roll it back and
    /// report `Input::ApplyAbandoned` (obligation 3a).
    AbandonApply,
    /// Open a view of the state machine (obligation 7).
    OpenView {
        /// Its id, for the reads and the close.
        view: u64,
    },
    /// Read a chunk from a view (obligation 7).
    ReadChunk(ReadChunk),
    /// Release a view (obligation 7).
    CloseView {
        /// The view.
        view: u64,
    },
    /// Stage snapshot chunks durably (obligation 8).
    Stage(StageJob),
    /// Answer a request.
    Reply {
        /// The request.
        request: RequestId,
        /// Its answer.
        reply: Reply,
    },
    /// The core ignored a peer message no honest peer could send.
    Implausible(ImplausibleMessage),
    /// This leader's storage stalled: leadership is being handed to
    /// `target`.
    HandingOff {
        /// The follower that should lead.
        target: NodeId,
        /// How long the write in flight has waited.
        stalled_for: Duration,
    },
    /// The node's role changed.
    RoleChanged {
        /// The role before.
        from: Role,
        /// The role now.
        to: Role,
        /// The term now.
        term: Term,
        /// The leader now, if known.
        leader: Option<NodeId>,
    },
}

/// The pipeline around one node's core.
#[derive(Debug)]
pub struct Pipeline {
    raft: Raft,
    clock: clock::TickClock,
    transfer_timeout: Duration,
    storage_stall_timeout: Duration,
    /// When this node last handed off leadership because of a stall; a
    /// hand-off that did not work is retried after another timeout.
    handed_off_at: Option<Instant>,
    writes: write::Writes,
    applies: apply::Applies,
    apply_ahead: bool,
    follower_apply_wait: Duration,
    requests: requests::Requests,
    compaction: compaction::Compaction,
    transfers: transfer::Transfers,
    next_read_context: u64,
    /// Highest index the state machine holds (applied or installed).
    /// Invariant: never decreases.
    applied: LogIndex,
    last_role: Role,
    /// The term and vote last handed out for writing (the recovered ones
    /// at first).
    hard_state_handed: HardState,
    outputs: Vec<Output>,
    /// Planted bugs (simulator only; all off in a product build).
    planted: planted::Planted,
}

impl Pipeline {
    /// A pipeline around `raft`, starting at instant `start`.
    pub fn new(raft: Raft, config: PipelineConfig, start: Instant) -> Pipeline {
        let applied = raft.log().applied_index();
        let last_role = raft.role();
        let hard_state_handed = raft.hard_state();
        let log_start = raft.log().snapshot().index;
        let planted = planted::Planted::of(&raft);
        let read_context_first = if planted.read_contexts_restart {
            1
        } else {
            config.read_context_first
        };
        Pipeline {
            raft,
            clock: clock::TickClock::new(config.tick, start),
            transfer_timeout: config.transfer_timeout,
            storage_stall_timeout: config.storage_stall_timeout,
            handed_off_at: None,
            writes: write::Writes {
                entries_max: config.write_entries_max.max(1),
                install_before_hard_state: planted.snapshot_before_hard_state,
                ..write::Writes::default()
            },
            applies: apply::Applies::default(),
            apply_ahead: config.apply_ahead,
            follower_apply_wait: config.follower_apply_wait,
            requests: requests::Requests::new(planted.covered_proposals_lost),
            compaction: compaction::Compaction::new(config.compaction_entries, log_start),
            transfers: transfer::Transfers::new(
                config.transfer,
                config.read_context_first,
                config.staged,
            ),
            next_read_context: read_context_first,
            applied,
            last_role,
            hard_state_handed,
            outputs: Vec::new(),
            planted,
        }
    }

    /// The core, for status and metrics.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Proposals waiting for their entry to be applied.
    pub fn proposals_pending(&self) -> usize {
        self.requests.proposals_pending()
    }

    /// The lowest log index a waiting proposal waits for, if one waits.
    pub fn lowest_waiting_proposal(&self) -> Option<LogIndex> {
        self.requests.lowest_proposal()
    }

    /// The term and vote last handed out for writing.
    pub fn hard_state_handed_out(&self) -> HardState {
        self.hard_state_handed
    }

    /// Highest index the state machine holds, applied or installed.
    pub fn state_machine_index(&self) -> LogIndex {
        self.applied
    }

    /// The node's status as `Cluster.Status` and the metrics give it: the
    /// core's, with the applied index of the state machine. The core
    /// counts a snapshot applied as soon as it takes it, while its install
    /// (rows, sessions, applied index in one transaction) may take seconds
    /// longer; a client that waits for a node to catch up must not see it
    /// caught up before its state is.
    pub fn status(&self) -> crate::core::Status {
        crate::core::Status {
            applied_index: self.applied,
            ..self.raft.status()
        }
    }

    /// Linearizable reads handed to the core and not yet answered.
    pub fn reads_pending(&self) -> usize {
        self.requests.reads_pending()
    }

    /// When the next tick is due: the driver wakes then even if nothing
    /// else happens.
    pub fn next_tick_at(&self) -> Instant {
        self.clock.next_tick_at()
    }

    /// When the driver calls [`Pipeline::advance`] at the latest: the next
    /// tick, or sooner when a follower's committed entries stop waiting.
    /// Not while a write is queued: it carries them when it starts, on a
    /// write's report, and a wake-up due then would come again and again
    /// until it does.
    pub fn wake_at(&self) -> Instant {
        let tick = self.clock.next_tick_at();
        match self.applies.due_at {
            Some(at) if self.writes.nothing_queued() || self.planted.wake_while_write_queued => {
                tick.min(at)
            }
            _ => tick,
        }
    }

    /// Apply batches of this node's that waited (as a follower): then
    /// carried by a log write, or applied alone when none was queued.
    pub fn follower_apply_waits(&self) -> [u64; 2] {
        self.applies.waits
    }

    /// Delivers the ticks elapsed until `now` (obligation 1) and carries
    /// out what they caused.
    pub fn advance(&mut self, now: Instant) {
        self.deliver_ticks(now);
        self.process_ready();
    }

    /// Handles `input` at instant `now`, after the ticks elapsed until then.
    pub fn handle(&mut self, now: Instant, input: Input) {
        self.deliver_ticks(now);
        match input {
            Input::Peer(message) => self.peer(message),
            Input::NotHeard { by, term } => self.raft.not_heard_by(by, term),
            Input::Propose { request, command } => self.propose(request, command),
            Input::Read { request, mode } => self.read(request, mode),
            Input::Transfer { request, target } => self.transfer(request, target),
            Input::ChangeMembership { request, change } => self.change_membership(request, change),
            Input::WriteDone(done) => self.write_done(done),
            Input::ApplyDone(done) => {
                assert!(
                    !self.writes.carries_apply,
                    "node {}: the applier reported the batch the write in flight carries",
                    self.raft.id()
                );
                self.apply_done(done)
            }
            Input::ApplyAbandoned => {
                assert!(
                    self.applies.ahead.is_some(),
                    "node {}: an apply was reported abandoned while none was handed out ahead",
                    self.raft.id()
                );
                self.applies.abandoned();
            }
            Input::Outcomes(outcomes) => self.answer(outcomes),
            Input::StateMachineBehind { stored_applied } => {
                self.state_machine_behind(stored_applied)
            }
            Input::ViewOpened { view, at } => {
                let log = self.raft.log();
                let at = if self.planted.snapshot_labelled_at_log_start {
                    log.snapshot()
                } else {
                    at
                };
                let membership = (at.index >= log.snapshot().index
                    && log.term_at(at.index) == Some(at.term))
                .then(|| log.membership_at(at.index).clone());
                let now = self.clock.now();
                let outputs = &mut self.outputs;
                self.transfers
                    .view_opened(view, at, membership, now, outputs);
            }
            Input::ViewLost { view } => self.transfers.view_lost(view),
            Input::ChunkRead(read) => {
                let sender = self.sender();
                self.transfers.chunk_read(read, sender, &mut self.outputs);
            }
            Input::Staged(staged) => self.staged(staged),
        }
        self.process_ready();
    }

    fn sender(&self) -> transfer::Sender {
        transfer::Sender {
            me: self.raft.id(),
            term: self.raft.term(),
        }
    }

    /// A peer's message: snapshot chunks and their acknowledgements are
    /// this pipeline's, the rest the core's.
    fn peer(&mut self, message: Message) {
        let in_term = message.term == self.raft.term() && message.to == self.raft.id();
        match message.body {
            MessageBody::SnapshotChunk(_) | MessageBody::SnapshotChunkAck { .. }
                if crate::core::validate_message(&message).is_err() =>
            {
                // The core reports why.
                self.raft.step(message)
            }
            MessageBody::SnapshotChunk(chunk) => {
                let from_leader =
                    self.raft.role() == Role::Follower && self.raft.leader() == Some(message.from);
                if in_term && from_leader {
                    let sender = self.sender();
                    self.transfers
                        .chunk(message.from, *chunk, sender, &mut self.outputs);
                }
            }
            MessageBody::SnapshotChunkAck {
                view,
                index,
                next_seq,
            } => {
                if in_term && self.raft.role() == Role::Leader {
                    let now = self.clock.now();
                    let ack = (view, index, next_seq);
                    self.transfers
                        .acknowledged(message.from, ack, now, &mut self.outputs);
                }
            }
            MessageBody::AppendResponse {
                index,
                rejected: false,
                ..
            } if in_term => {
                self.transfers.caught_up(message.from, index);
                self.raft.step(message)
            }
            MessageBody::InstallSnapshot { .. } => {
                // Snapshots arrive only as chunks.
                self.outputs.push(Output::Implausible(ImplausibleMessage {
                    from: message.from,
                    term: message.term,
                    kind: message.body.kind(),
                    reason: ImplausibleReason::SnapshotNotStreamed,
                }));
            }
            _ => self.raft.step(message),
        }
    }

    /// Chunks are staged; a complete snapshot goes to the core.
    fn staged(&mut self, staged: StagedTransfer) {
        let sender = self.sender();
        let leader = self.raft.leader();
        let Some(install) = self
            .transfers
            .staged(staged, leader, sender, &mut self.outputs)
        else {
            return;
        };
        let MessageBody::InstallSnapshot { snapshot } = &install.body else {
            unreachable!("transfers hand over an InstallSnapshot");
        };
        let meta = snapshot.meta;
        let before = self.raft.log().snapshot();
        self.raft.step(install);
        let installing = self.raft.log().snapshot() == meta && before != meta;
        self.transfers.handed_over(installing);
    }

    fn deliver_ticks(&mut self, now: Instant) {
        let mut ticks = self.clock.advance(now);
        if self.planted.lease_by_tick_count {
            ticks = ticks.min(1);
        }
        for _ in 0..ticks {
            self.raft.tick();
        }
    }

    /// What the driver must carry out now, in order.
    pub fn take_outputs(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.outputs)
    }

    /// Refuses every waiting request with `reason` (obligation 6).
    pub fn fail_all(&mut self, reason: &str) {
        let replies = self.requests.fail_all(reason);
        self.reply_all(replies);
    }

    fn reply(&mut self, request: RequestId, reply: Reply) {
        self.outputs.push(Output::Reply { request, reply });
    }

    fn reply_all(&mut self, replies: Vec<(RequestId, Reply)>) {
        for (request, reply) in replies {
            self.reply(request, reply);
        }
    }

    /// Since when this node's storage has been stalled: a write or an
    /// apply handed out `storage_stall_timeout` ago or more and not done
    /// (Postgres down or hung). The oldest of the two counts: a leader
    /// whose Postgres stops while only an apply is in flight writes
    /// nothing new (its clients wait for that apply), and must still
    /// notice.
    fn storage_stalled_since(&self) -> Option<Instant> {
        let now = self.clock.now();
        let oldest = [self.writes.started_at, self.applies.started_at]
            .into_iter()
            .flatten()
            .min()?;
        (now.0.saturating_sub(oldest.0) >= self.storage_stall_timeout).then_some(oldest)
    }

    /// The refusal for a request that needs this node's storage while it
    /// is stalled: answered at once, so the client tries another node
    /// instead of waiting for its deadline.
    fn storage_refusal(&self) -> Option<Refusal> {
        self.storage_stalled_since()?;
        Some(Refusal::Unavailable(format!(
            "this node's storage has not completed a write or an apply for over {} ms; retry on another node",
            self.storage_stall_timeout.as_millis()
        )))
    }

    /// A leader whose own storage has stalled hands leadership to its most
    /// up-to-date voter: the followers can go on committing without its
    /// disk (a leader counts itself only for what it made durable), while
    /// it could neither apply nor answer anyone.
    fn hand_off_if_storage_stalled(&mut self) {
        let now = self.clock.now();
        let limit = self.storage_stall_timeout;
        if self.raft.role() != Role::Leader {
            return;
        }
        let Some(stalled_since) = self.storage_stalled_since() else {
            return;
        };
        let retry_due = self
            .handed_off_at
            .is_none_or(|at| now.0.saturating_sub(at.0) >= limit);
        if !retry_due {
            return;
        }
        let me = self.raft.id();
        let voters = &self.raft.membership().voters;
        let Some(target) = self
            .raft
            .status()
            .peers
            .into_iter()
            .filter(|peer| peer.id != me && voters.contains(&peer.id))
            .max_by_key(|peer| (peer.match_index, std::cmp::Reverse(peer.id)))
            .map(|peer| peer.id)
        else {
            return;
        };
        if self.raft.transfer_leadership(target).is_ok() {
            self.handed_off_at = Some(now);
            self.outputs.push(Output::HandingOff {
                target,
                stalled_for: now.0.saturating_sub(stalled_since.0),
            });
        }
    }

    fn propose(&mut self, request: RequestId, command: Vec<u8>) {
        if let Some(refusal) = self.storage_refusal() {
            self.reply(request, Reply::Refused(refusal));
            return;
        }
        let refusal = match self.raft.propose(command) {
            Ok(index) => {
                self.requests.add_proposal(index, self.raft.term(), request);
                return;
            }
            Err(ProposeError::NotLeader { leader }) => Refusal::NotLeader { leader },
            Err(ProposeError::TransferInProgress) => {
                Refusal::Unavailable("leadership transfer in progress; retry".into())
            }
            Err(ProposeError::Backpressure) => {
                Refusal::Unavailable("too many uncommitted commands; retry".into())
            }
        };
        self.reply(request, Reply::Refused(refusal));
    }

    fn read(&mut self, request: RequestId, mode: ReadMode) {
        if let Some(refusal) = self.storage_refusal() {
            self.reply(request, Reply::Refused(refusal));
            return;
        }
        if mode == ReadMode::Lease {
            if let Some(index) = self.raft.lease_read_index() {
                if index <= self.applied {
                    self.reply(request, Reply::ReadReady { index });
                } else {
                    self.requests.add_lease_read(index, request);
                }
                return;
            }
            // No lease right now (new leader, or not leader): fall back to
            // a linearizable read, which is never wrong.
        }
        let context = self.next_read_context;
        self.next_read_context = self.next_read_context.wrapping_add(1);
        let refusal = match self.raft.read_index(context) {
            Ok(()) => {
                self.requests.add_read(context, request);
                return;
            }
            Err(ReadError::NoLeader { leader }) => Refusal::NotLeader { leader },
            Err(ReadError::Backpressure) => {
                Refusal::Unavailable("too many pending reads; retry".into())
            }
        };
        self.reply(request, Reply::Refused(refusal));
    }

    fn transfer(&mut self, request: RequestId, target: NodeId) {
        let refusal = match self.raft.transfer_leadership(target) {
            Ok(()) if target == self.raft.id() => {
                self.reply(request, Reply::Transferred { leader: target });
                return;
            }
            Ok(()) => {
                let deadline = self.clock.now().after(self.transfer_timeout);
                self.requests.add_transfer(target, deadline, request);
                return;
            }
            Err(TransferError::NotLeader { leader }) => Refusal::NotLeader { leader },
            Err(TransferError::UnknownNode(node)) => {
                Refusal::InvalidArgument(format!("node {node} is not a voter"))
            }
        };
        self.reply(request, Reply::Refused(refusal));
    }

    fn change_membership(&mut self, request: RequestId, change: MembershipChange) {
        if let Some(refusal) = self.storage_refusal() {
            self.reply(request, Reply::Refused(refusal));
            return;
        }
        let refusal = match self.raft.change_membership(change) {
            Ok(index) => {
                self.requests.add_proposal(index, self.raft.term(), request);
                return;
            }
            Err(MembershipError::NotLeader { leader }) => Refusal::NotLeader { leader },
            Err(
                error @ (MembershipError::ChangeInProgress
                | MembershipError::Busy
                | MembershipError::LearnerBehind { .. }),
            ) => Refusal::Unavailable(error.to_string()),
            Err(MembershipError::Invalid(reason)) => Refusal::InvalidArgument(reason),
        };
        self.reply(request, Reply::Refused(refusal));
    }

    fn process_ready(&mut self) {
        self.hand_off_if_storage_stalled();
        let leading = self.raft.role() == Role::Leader;
        let raft = &self.raft;
        let now = self.clock.now();
        self.transfers.tick(
            now,
            leading,
            |node| raft.knows_member(node),
            &mut self.outputs,
        );
        for report in self.raft.take_implausible() {
            self.outputs.push(Output::Implausible(report));
        }
        while self.raft.has_ready() {
            let mut ready = self.raft.ready();
            for message in std::mem::take(&mut ready.messages) {
                self.send(message);
            }
            if let Some(snapshot) = &ready.snapshot {
                self.applies.covered_by_snapshot(snapshot.meta.index);
            }
            let persist_point = ready.persist_point();
            if let Some(hard_state) = ready.hard_state {
                self.hard_state_handed = hard_state;
            }
            let job = WriteJob {
                hard_state: ready.hard_state,
                snapshot: ready.snapshot,
                entries: ready.entries,
                messages_after_persist: ready.messages_after_persist,
                persist_point,
                compact_to: None,
                apply: None,
            };
            if !job.writes_anything() && self.writes.idle() {
                // Nothing to write and every earlier write is durable: these
                // messages claim nothing that is not already on disk.
                for message in job.messages_after_persist {
                    self.send(message);
                }
            } else if job.writes_anything() || !job.messages_after_persist.is_empty() {
                self.writes.queue(job);
            }
            self.applies.committed(ready.committed_entries);
            let early = self.planted.confirm_ahead_early;
            if self.applies.confirm_ahead(self.clock.now(), early) {
                self.outputs.push(Output::ConfirmApply);
            }
            for read in ready.reads {
                if let Some(request) = self.requests.take_read(read.context) {
                    self.reply(request, Reply::ReadReady { index: read.index });
                }
            }
            for context in ready.reads_dropped {
                if let Some(request) = self.requests.take_read(context) {
                    let refusal =
                        Refusal::Unavailable("leadership changed during the read; retry".into());
                    self.reply(request, Reply::Refused(refusal));
                }
            }
        }
        let now = self.clock.now();
        if let Some(mut job) = self.writes.start(self.applies.in_flight(), now) {
            // A follower's write that waited behind another carries its
            // committed entries at once: its writer is busy back to back,
            // and the apply then makes fewer, larger log writes rather
            // than more transactions.
            let carry = self.writes.started_behind || self.apply_due(now);
            if job.snapshot.is_none() && carry {
                job.apply = self.applies.start(now, true);
                self.writes.carries_apply = job.apply.is_some();
            }
            self.outputs.push(Output::Write(job));
        }
        // Committed entries ride the next write; only when none waits to
        // start do they get a transaction of their own (a follower's after
        // a short wait either way).
        if self.writes.nothing_queued() && self.apply_due(now) {
            if let Some(batch) = self.applies.start(now, false) {
                self.outputs.push(Output::Apply(batch));
            }
        }
        self.apply_ahead();
        let settled = self
            .requests
            .transfers_settled(self.raft.leader(), self.clock.now());
        self.reply_all(settled);
        self.observe_role();
    }

    /// Whether committed entries may be applied now, by the write that
    /// starts or alone. A leader's may at once: its clients wait for their
    /// outcomes. A follower's wait `follower_apply_wait` first, unless a
    /// read waits on this node (the core answers it once they are
    /// applied): most of its log writes, which its leader's commit waits
    /// for, then carry no apply (one round trip instead of three), and
    /// the applies are fewer and larger. (A write that waited behind
    /// another carries them whatever this says; see `process_ready`.)
    fn apply_due(&mut self, now: Instant) -> bool {
        if self.applies.in_flight() || self.applies.next.is_empty() {
            return false;
        }
        let wait = self.follower_apply_wait;
        if wait.is_zero() || self.raft.role() == Role::Leader || self.requests.reads_pending() > 0 {
            return true;
        }
        now >= *self.applies.due_at.get_or_insert(now.after(wait))
    }

    fn send(&mut self, message: Message) {
        if let MessageBody::InstallSnapshot { .. } = message.body {
            let now = self.clock.now();
            self.transfers.wanted(message.to, now, &mut self.outputs);
            return;
        }
        self.outputs.push(Output::Send(message));
    }

    fn write_done(&mut self, done: WriteDone) {
        assert!(
            self.writes.in_flight(),
            "node {}: a write was reported done while none was in flight",
            self.raft.id()
        );
        let carried_apply = self.writes.done();
        assert_eq!(
            carried_apply,
            done.applied.is_some(),
            "node {}: a write reports its apply batch exactly when it carried one",
            self.raft.id()
        );
        if let Some((index, term)) = done.persist_point {
            self.raft.persisted(index, term);
        }
        if let Some(installed) = done.installed {
            let covered = installed.meta.index;
            self.applied = self.applied.max(covered);
            let replies = self.requests.covered_up_to(covered);
            self.reply_all(replies);
            self.transfers.installed();
        }
        for message in done.messages_after_persist {
            self.send(message);
        }
        if let Some(applied) = done.applied {
            self.apply_done(applied);
        }
    }

    fn apply_done(&mut self, done: ApplyDone) {
        assert!(
            self.applies.in_flight(),
            "node {}: an apply was reported done while none was in flight",
            self.raft.id()
        );
        self.applies.done();
        self.answer(done.outcomes);
        let replaced = self.requests.replaced_up_to(done.applied);
        self.reply_all(replaced);
        self.applied = self.applied.max(done.applied);
        self.raft.applied(done.applied);
        self.compact_if_due(done.applied);
        let ready = self.requests.lease_reads_up_to(self.applied);
        self.reply_all(ready);
    }

    /// Answers the proposals that `outcomes` settle; those answered
    /// already (by an earlier `Input::Outcomes`) are not held any more.
    fn answer(&mut self, outcomes: Vec<(LogIndex, Term, ApplyOutcome)>) {
        for (index, term, outcome) in outcomes {
            if let Some((request, reply)) = self.requests.applied(index, term, outcome) {
                self.reply(request, reply);
            }
        }
    }

    fn state_machine_behind(&mut self, stored_applied: LogIndex) {
        let batch_coming = self.applies.in_flight() || !self.applies.next.is_empty();
        if stored_applied >= self.applied || batch_coming {
            return;
        }
        // The entry at the applied index, if the log still holds it in
        // memory (a snapshot at exactly that index leaves the gap to the
        // next batch).
        if let Ok(entry) = self.raft.log().entries_from(self.applied, 1, usize::MAX) {
            self.applies.next = entry;
        }
    }

    /// A leader whose applier is idle, with nothing committed waiting and
    /// no write queued behind the one in flight (a single client's
    /// proposal, not a busy leader's stream, which its log writes apply
    /// in their own transactions), hands the entries after the applied
    /// index to the applier ahead of their commit (obligation 3a). Not
    /// while the write in flight compacts the log: the compaction reads
    /// the stored applied index under a lock the apply holds until its
    /// confirmation, which waits for that write.
    fn apply_ahead(&mut self) {
        if !self.apply_ahead
            || self.raft.role() != Role::Leader
            || self.applies.in_flight()
            || !self.applies.next.is_empty()
            || !self.writes.nothing_queued()
            || self.writes.compacting
        {
            return;
        }
        let log = self.raft.log();
        if log.commit_index() != self.applied || log.last_index() <= self.applied {
            return;
        }
        let Ok(entries) =
            log.entries_from(self.applied.next(), self.writes.entries_max, usize::MAX)
        else {
            return;
        };
        let Some(last) = entries.last() else {
            return;
        };
        self.applies.ahead = Some(apply::Ahead {
            last: (last.index, last.term),
            committed: Vec::new(),
            confirmed: false,
            abandoning: false,
        });
        self.outputs
            .push(Output::ApplyAhead(ApplyBatch { entries }));
    }

    fn compact_if_due(&mut self, applied: LogIndex) {
        let log = self.raft.log();
        let log_start = log.snapshot().index;
        let Some(mut point) = self.compaction.applied(applied, log_start) else {
            return;
        };
        if let Some(floor) = self.transfers.compaction_floor() {
            point = point.min(floor);
        }
        if point <= log_start {
            return;
        }
        let Some(term) = log.term_at(point) else {
            return;
        };
        let membership = Box::new(log.membership_at(point).clone());
        self.raft.compact(point);
        self.writes.queue(WriteJob {
            compact_to: Some((SnapshotMeta { index: point, term }, membership)),
            ..WriteJob::default()
        });
    }

    fn observe_role(&mut self) {
        let role = self.raft.role();
        if role != Role::Leader && self.applies.abandon_ahead() {
            // Entries of a leader that lost its leadership may never
            // commit, or commit with others in their place.
            self.outputs.push(Output::AbandonApply);
        }
        if role != self.last_role {
            if self.last_role == Role::Leader {
                let replies = self.requests.leadership_lost();
                self.reply_all(replies);
            }
            self.outputs.push(Output::RoleChanged {
                from: self.last_role,
                to: role,
                term: self.raft.term(),
                leader: self.raft.leader(),
            });
            self.last_role = role;
        }
    }
}
