//! The Raft node: its state, the inputs it accepts, the role transitions,
//! and the handling every role shares (terms and votes). Role-specific
//! handling lives in `leader.rs`, `candidate.rs` and `follower.rs`.

use std::collections::{BTreeMap, BTreeSet};

#[cfg(feature = "planted-bugs")]
use super::config::PlantedBug;
use super::config::{Config, ConfigError};
use super::log::RaftLog;
use super::message::{Message, MessageBody};
use super::progress::Progress;
use super::read_only::ReadQueue;
use super::ready::{ImplausibleMessage, ImplausibleReason, PeerStatus, Ready, Status};
use super::rng::SplitMix64;
use super::types::{
    Entry, EntryPayload, HardState, LogIndex, Membership, NodeId, Role, Snapshot, SnapshotMeta,
    Term,
};
use super::validate::validate_message;

/// What a node recovered from its disk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DurableState {
    /// Term and vote.
    pub hard_state: HardState,
    /// The compacted prefix.
    pub snapshot: SnapshotMeta,
    /// The membership in force at the snapshot index. Empty on a node
    /// that has never stored one: it starts with `Config::voters` (a new
    /// cluster's bootstrap; empty for a node that waits to be added).
    pub membership: Membership,
    /// Entries after the snapshot, contiguous.
    pub entries: Vec<Entry>,
    /// Highest index the state machine has applied (at least the snapshot
    /// index; the applied entries were committed).
    pub applied: LogIndex,
}

impl DurableState {
    /// Whether a node started with `serve --join` must first ask the
    /// cluster whether it was added (and refuse to start if not): it
    /// knows no membership, neither stored at its log start nor in a log
    /// entry. A node that joined and took the log from its start stores
    /// none at its log start (the bootstrap membership lives in the first
    /// nodes' configurations, not in the log), but its log holds the entry
    /// that added it: it restarts as a member, whoever answers.
    pub fn waits_to_be_added(&self) -> bool {
        self.membership.voters.is_empty()
            && !self
                .entries
                .iter()
                .any(|entry| matches!(entry.payload, EntryPayload::Membership(_)))
    }
}

/// Whether a node takes `message` from a sender it does not count a
/// member (section 4.1 of the Raft dissertation): a leader's traffic
/// (appends, heartbeats, snapshots) in the receiver's term or a later one,
/// since the receiver's log may lag behind the change that made the
/// sender a member and only that leader can bring it up to date; and
/// campaigns, which [`Raft::step`] ignores unless the candidate's log is
/// ahead (a voter the receiver does not know yet). A node outside every
/// membership cannot lead: voters elect leaders, and the log decides who
/// votes. Nothing else is taken: an answer, a read, a TimeoutNow from a
/// node that is no member comes from a removed node, or from one never
/// added.
pub fn heard_from_outside(message: &Message, own_term: Term) -> bool {
    match message.body {
        MessageBody::AppendRequest { .. }
        | MessageBody::HeartbeatRequest { .. }
        | MessageBody::InstallSnapshot { .. }
        | MessageBody::SnapshotChunk(_) => message.term >= own_term,
        MessageBody::VoteRequest { .. } => true,
        _ => false,
    }
}

/// "the leader is node N" or "no leader is known", for error messages.
pub fn describe_leader(leader: Option<NodeId>) -> String {
    match leader {
        Some(leader) => format!("the leader is node {leader}"),
        None => "no leader is known".to_string(),
    }
}

/// Why a proposal was refused. The driver turns these into answers a
/// client can act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// Only the leader accepts proposals; `leader` is the one this node
    /// knows of, if any.
    #[error("not the leader; {}", describe_leader(*leader))]
    NotLeader {
        /// The known leader.
        leader: Option<NodeId>,
    },
    /// Leadership is being handed to another node.
    #[error("leadership transfer in progress")]
    TransferInProgress,
    /// Too many entries wait for commit.
    #[error("too many uncommitted entries")]
    Backpressure,
}

/// Why a leadership transfer was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    /// Only the leader can hand over leadership.
    #[error("not the leader; {}", describe_leader(*leader))]
    NotLeader {
        /// The known leader.
        leader: Option<NodeId>,
    },
    /// The target is not a voter of this cluster.
    #[error("node {0} is not a voter")]
    UnknownNode(NodeId),
}

/// A Raft node's consensus state machine. Pure: it never reads a clock,
/// touches I/O or draws randomness it was not given.
#[derive(Clone, Debug)]
pub struct Raft {
    pub(super) config: Config,
    pub(super) id: NodeId,
    /// Latest term seen. Invariant: never decreases.
    pub(super) term: Term,
    /// Vote in `term`. Invariant: once set in a term, never changes in it.
    pub(super) voted_for: Option<NodeId>,
    /// Term or vote changed since the last `Ready`.
    pub(super) hard_state_dirty: bool,
    /// A leader that won its term alone (the only voter): no vote request
    /// carried the term out after it was durable, so until an entry of
    /// the term is (with the term and vote written before or with it) every
    /// message waits for the write in flight. After a crash before that
    /// write, the node would otherwise lead the same term again with
    /// another log, while a learner holds the first one's entries.
    pub(super) term_durable_pending: bool,
    pub(super) role: Role,
    /// The leader of `term`, once known.
    pub(super) leader: Option<NodeId>,
    pub(super) log: RaftLog,
    pub(super) rng: SplitMix64,
    /// Ticks since the last reset: election timer for followers and
    /// candidates, check-quorum timer for leaders.
    pub(super) election_elapsed: u64,
    /// Leader: ticks since the last heartbeat.
    pub(super) heartbeat_elapsed: u64,
    /// This term's election timeout, in `election_ticks_min..election_ticks_max`.
    pub(super) randomized_election_ticks: u64,
    /// Ticks since this core was created; only ever compared with itself.
    pub(super) ticks: u64,
    /// The node restarted with history (term > 0): it may have heard from a
    /// leader just before it went down.
    pub(super) restarted: bool,
    /// Candidate and pre-candidate: the votes received.
    pub(super) votes: BTreeMap<NodeId, bool>,
    /// Leader: every other voter's progress.
    pub(super) progress: BTreeMap<NodeId, Progress>,
    /// Leader: a transfer to this node is under way.
    pub(super) transfer_target: Option<NodeId>,
    /// Leader: ticks since the transfer began or, once its target was told
    /// to campaign, since the latest TimeoutNow; the transfer is abandoned
    /// when this reaches `election_ticks_min`.
    pub(super) transfer_elapsed: u64,
    /// Leader: a TimeoutNow went out during this leadership. However late
    /// it arrives, it lets its target win an election without waiting for
    /// this leader's lease to run out, so no lease reads for the rest of
    /// this leadership (the term).
    pub(super) timeout_now_sent: bool,
    /// Leader: the latest heartbeat round sent.
    pub(super) read_round: u64,
    /// Leader: when each recent round was sent, oldest first, for leases.
    pub(super) round_sent_ticks: std::collections::VecDeque<(u64, u64)>,
    pub(super) reads: ReadQueue,
    /// Leader: new entries wait to be sent to followers.
    pub(super) replication_pending: bool,
    /// Leader: reads wait for a heartbeat round not sent yet (it leaves
    /// once the round out is acknowledged: see `read_round_due`).
    pub(super) read_round_pending: bool,
    pub(super) messages: Vec<Message>,
    pub(super) messages_after_persist: Vec<Message>,
    pub(super) pending_snapshot: Option<Snapshot>,
    /// Reports of dropped implausible messages, until the driver takes
    /// them. Invariant: at most `config.implausible_reports_max` long.
    pub(super) implausible: Vec<ImplausibleMessage>,
    /// Every implausible message dropped since this core was created,
    /// reported or not.
    pub(super) implausible_total: u64,
}

impl Raft {
    /// A node recovered from `durable` state; `seed` drives its election
    /// timeouts.
    pub fn new(config: Config, durable: DurableState, seed: u64) -> Result<Raft, ConfigError> {
        config.validate()?;
        let id = config.id;
        let membership = if durable.membership.voters.is_empty() {
            Membership::new(config.voters.iter().copied())
        } else {
            durable.membership
        };
        #[allow(unused_mut)]
        let mut log = RaftLog::restore(
            id,
            durable.snapshot,
            membership,
            durable.entries,
            durable.applied,
        );
        #[cfg(feature = "planted-bugs")]
        {
            log.bug_apply_before_durable =
                config.planted_bug == Some(PlantedBug::ApplyBeforeDurable);
        }
        assert!(
            log.last_term() <= durable.hard_state.term,
            "node {id}: log ends in term {} beyond the stored term {}",
            log.last_term(),
            durable.hard_state.term
        );
        let mut raft = Raft {
            id,
            term: durable.hard_state.term,
            voted_for: durable.hard_state.voted_for,
            hard_state_dirty: false,
            term_durable_pending: false,
            role: Role::Follower,
            leader: None,
            log,
            rng: SplitMix64::new(seed),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            transfer_elapsed: 0,
            randomized_election_ticks: 0,
            ticks: 0,
            restarted: durable.hard_state.term > Term(0),
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            transfer_target: None,
            timeout_now_sent: false,
            read_round: 0,
            round_sent_ticks: Default::default(),
            reads: ReadQueue::default(),
            replication_pending: false,
            read_round_pending: false,
            messages: Vec::new(),
            messages_after_persist: Vec::new(),
            pending_snapshot: None,
            implausible: Vec::new(),
            implausible_total: 0,
            config,
        };
        raft.reset_election_timer();
        Ok(raft)
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The cluster's membership in force: the latest in this node's log,
    /// committed or not.
    pub fn membership(&self) -> &Membership {
        self.log.membership()
    }

    /// Whether this node counts `node` a member: of its latest membership
    /// or of the one it knows committed (a leader whose removal has not
    /// committed yet still leads). A node that knows no membership yet
    /// (started to join a running cluster) counts every node of its
    /// cluster: the leader that added it is not in its log yet.
    pub fn knows_member(&self, node: NodeId) -> bool {
        let latest = self.log.membership();
        latest.voters.is_empty()
            || latest.contains(node)
            || self
                .log
                .membership_at(self.log.commit_index())
                .contains(node)
    }

    /// Whether this node takes `message` at all: everything from a node
    /// it counts a member ([`Raft::knows_member`]), and from any other
    /// only what [`heard_from_outside`] admits. The transport refuses
    /// the rest before the core sees it, and tells the sender this node's
    /// term ([`Raft::not_heard_by`]): a removed node, or one never added,
    /// cannot make the cluster answer, forward reads or hand over
    /// leadership.
    pub fn hears(&self, message: &Message) -> bool {
        self.knows_member(message.from) || heard_from_outside(message, self.term)
    }

    /// Node `by` dropped a message of this node unread, because it does
    /// not count this node as a member ([`Raft::hears`]), and said its
    /// term is `term`. A node removed while cut off learns this way that
    /// the cluster moved on: at a higher term it steps down, so it no
    /// longer holds clients as a leader no one follows. It raises no one
    /// else's term: nobody hears it.
    pub fn not_heard_by(&mut self, by: NodeId, term: Term) {
        if term > self.term && term <= super::validate::TERM_MAX && by != self.id {
            self.become_follower(term, None);
        }
    }

    /// The nodes [`Raft::knows_member`] counts, this one left out; `None`
    /// while it knows no membership.
    pub fn peer_set(&self) -> Option<BTreeSet<NodeId>> {
        let latest = self.log.membership();
        if latest.voters.is_empty() {
            return None;
        }
        let mut peers = latest.members();
        peers.extend(self.log.membership_at(self.log.commit_index()).members());
        peers.remove(&self.id);
        Some(peers)
    }

    /// The election timeout drawn for the current period, in ticks.
    pub fn election_timeout(&self) -> u64 {
        self.randomized_election_ticks
    }

    /// Current role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Current term.
    pub fn term(&self) -> Term {
        self.term
    }

    /// Ticks this core has been given since it was created.
    pub fn ticks(&self) -> u64 {
        self.ticks
    }

    /// The leader this node knows of in its term.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    /// The log, read-only.
    pub fn log(&self) -> &RaftLog {
        &self.log
    }

    /// Advances logical time by one tick.
    pub fn tick(&mut self) {
        self.ticks += 1;
        // An answer to a forwarded read normally takes a heartbeat round
        // trip; after an election timeout it is not coming.
        self.reads
            .expire_forwarded(self.ticks, self.config.election_ticks_max);
        if self.role == Role::Leader {
            self.tick_leader();
        } else {
            self.election_elapsed += 1;
            if self.election_elapsed >= self.randomized_election_ticks {
                self.election_elapsed = 0;
                // No leader was heard from for an election timeout: reads
                // that wait for entries this node does not have may wait
                // for ever (it may have been removed from the cluster).
                self.reads.drop_waiting_beyond(self.log.commit_index());
                if self.may_campaign() {
                    self.campaign(false);
                } else if self.leader.is_some() {
                    // Learners, nodes removed and nodes waiting to be added
                    // never campaign; one that stopped hearing from its
                    // leader stops naming it (to clients, and as the target
                    // of forwarded reads).
                    self.become_follower(self.term, None);
                }
            }
        }
    }

    /// Starts an election now (as if the election timer had fired), if
    /// this node votes.
    pub fn campaign_now(&mut self) {
        if self.role != Role::Leader && self.may_campaign() {
            self.campaign(false);
        }
    }

    /// Whether this node may start an election: it votes in the
    /// membership in force, or that membership removes it but is not
    /// known committed and it voted in the one before. Section 4.1 of the
    /// dissertation: such a node may still be needed to commit its own
    /// removal (it may hold the only copy a majority of the new voters
    /// lacks); its own vote then does not count, since the tally counts
    /// voters of its latest membership only. Learners, nodes whose removal
    /// is committed and nodes waiting to be added never campaign.
    fn may_campaign(&self) -> bool {
        let log = &self.log;
        log.membership().is_voter(self.id)
            || (log.membership_index() > log.commit_index()
                && log
                    .membership_at(log.membership_index().prev())
                    .is_voter(self.id))
    }

    /// Proposes a command; returns the index it will have if committed.
    pub fn propose(&mut self, command: Vec<u8>) -> Result<LogIndex, ProposeError> {
        self.propose_payload(EntryPayload::Command(command))
    }

    pub(super) fn propose_payload(
        &mut self,
        payload: EntryPayload,
    ) -> Result<LogIndex, ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        // A leader removing itself takes no new proposals: it hands over
        // once its removal commits (see `membership_committed`).
        if self.transfer_target.is_some() || !self.membership().voters.contains(&self.id) {
            return Err(ProposeError::TransferInProgress);
        }
        let uncommitted = self.log.last_index().0 - self.log.commit_index().0;
        if uncommitted >= self.config.uncommitted_entries_max as u64 {
            return Err(ProposeError::Backpressure);
        }
        let index = self.log.last_index().next();
        self.log.append(vec![Entry {
            term: self.term,
            index,
            payload,
        }]);
        self.replication_pending = true;
        Ok(index)
    }

    /// Hands leadership to `target` (leader only): the leader stops taking
    /// proposals, brings the target up to date and tells it to campaign.
    /// The attempt is abandoned, and proposals are taken again, when the
    /// target is not up to date within `election_ticks_min` ticks, or has
    /// not taken over within `election_ticks_min` ticks of being told to
    /// campaign. (Counting the second wait from the request instead, as
    /// the dissertation's section 3.10 does, let a slow catch-up leave the
    /// target a tick or two to win: the leader took a proposal while the
    /// target's vote requests were on the way, the target lost for a log
    /// one entry short, and the cluster went through an election: the
    /// simulator's transfer check, seed 14 on 3 nodes.)
    pub fn transfer_leadership(&mut self, target: NodeId) -> Result<(), TransferError> {
        if self.role != Role::Leader {
            return Err(TransferError::NotLeader {
                leader: self.leader,
            });
        }
        if !self.membership().voters.contains(&target) {
            return Err(TransferError::UnknownNode(target));
        }
        if target == self.id {
            return Ok(());
        }
        self.transfer_target = Some(target);
        self.transfer_elapsed = 0;
        // As in etcd: the check-quorum period restarts too, so that the
        // leader does not step down in the middle of handing over.
        self.election_elapsed = 0;
        self.send_timeout_now_if_caught_up(target);
        Ok(())
    }

    /// The driver made everything up to (`index`, `term`) durable.
    pub fn persisted(&mut self, index: LogIndex, term: Term) {
        if term == self.term {
            self.term_durable_pending = false;
        }
        if self.log.persisted(index, term) {
            if self.role == Role::Leader {
                self.maybe_commit();
            }
            self.release_reads();
        }
    }

    /// Releases reads whose index the state machine reached durably. Entries
    /// are applied only once durable, but an installed snapshot counts as
    /// applied as soon as it is taken: its reads wait for its write.
    pub(super) fn release_reads(&mut self) {
        let safe = self.log.applied_index().min(self.log.durable_index());
        self.reads.release_applied(safe);
    }

    /// The driver applied every committed entry up to `index`.
    pub fn applied(&mut self, index: LogIndex) {
        self.log.applied_to(index);
        self.release_reads();
    }

    /// Drops the log prefix up to `index`, which the driver has captured in
    /// a state machine snapshot (and persisted the compaction).
    pub fn compact(&mut self, index: LogIndex) {
        self.log.compact(index);
    }

    /// Whether `ready` would return anything.
    pub fn has_ready(&self) -> bool {
        self.hard_state_dirty
            || self.pending_snapshot.is_some()
            || self.log.has_unpersisted()
            || !self.messages.is_empty()
            || !self.messages_after_persist.is_empty()
            || self.log.has_committed_to_apply()
            || !self.reads.ready.is_empty()
            || !self.reads.dropped.is_empty()
            || (self.role == Role::Leader && (self.replication_pending || self.read_round_due()))
    }

    /// Takes the next batch of work for the driver.
    pub fn ready(&mut self) -> Ready {
        if self.role == Role::Leader {
            self.flush_leader();
        }
        let hard_state = std::mem::take(&mut self.hard_state_dirty).then_some(self.hard_state());
        Ready {
            hard_state,
            snapshot: self.pending_snapshot.take(),
            entries: self.log.take_unpersisted(),
            messages: std::mem::take(&mut self.messages),
            messages_after_persist: std::mem::take(&mut self.messages_after_persist),
            committed_entries: self.log.take_committed(self.config.apply_batch_entries_max),
            reads: std::mem::take(&mut self.reads.ready),
            reads_dropped: std::mem::take(&mut self.reads.dropped),
        }
    }

    /// Term and vote as they must be persisted.
    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            voted_for: self.voted_for,
        }
    }

    /// A summary of this node's state.
    pub fn status(&self) -> Status {
        let peers = self
            .progress
            .iter()
            .map(|(id, progress)| PeerStatus {
                id: *id,
                match_index: progress.match_index,
                next_index: progress.next_index,
                state: progress.state,
                recent_active: progress.recent_active,
                paused: progress.is_paused(self.config.inflight_messages_max),
            })
            .collect();
        Status {
            id: self.id,
            role: self.role,
            term: self.term,
            voted_for: self.voted_for,
            leader: self.leader,
            commit_index: self.log.commit_index(),
            applied_index: self.log.applied_index(),
            durable_index: self.log.durable_index(),
            last_index: self.log.last_index(),
            last_term: self.log.last_term(),
            snapshot: self.log.snapshot(),
            membership: self.membership().clone(),
            membership_index: self.log.membership_index(),
            election_timeout: self.election_timeout(),
            peers,
            ticks: self.ticks(),
            election_elapsed: self.election_elapsed,
            read_round: self.read_round,
            read_round_acknowledged: if self.role == Role::Leader {
                self.quorum_acknowledged_round()
            } else {
                0
            },
            // Reads wait in round order: the last waits for the latest.
            read_round_awaited: self
                .reads
                .waiting_for_quorum
                .back()
                .map_or(0, |read| read.round),
        }
    }

    /// Feeds a message from a peer. A message that no honest peer could
    /// have sent (see [`validate_message`] and `ImplausibleReason`) changes
    /// nothing and is reported through [`Raft::take_implausible`].
    pub fn step(&mut self, message: Message) {
        if let Err(invalid) = validate_message(&message) {
            self.report_implausible(&message, invalid.into());
            return;
        }
        if message.to != self.id {
            let reason = ImplausibleReason::WrongRecipient {
                to: message.to,
                node: self.id,
            };
            self.report_implausible(&message, reason);
            return;
        }
        // Snapshot chunks and their acknowledgements are the pipelines'
        // business: the core sees a streamed snapshot only once it is
        // staged, as an InstallSnapshot.
        if matches!(
            message.body,
            MessageBody::SnapshotChunk(_) | MessageBody::SnapshotChunkAck { .. }
        ) {
            return;
        }
        // Messages are taken from any node, member or not (section 4.1 of
        // the dissertation): a node whose log lags behind the membership
        // change that added its leader must still follow it, and an answer
        // from a node removed since it was asked is honest. Only voters'
        // votes and acknowledgements count, and the transport drops what
        // comes from nodes `Raft::hears` does not admit.
        //
        // Except a campaign of a node that does not vote here, unless its
        // log is ahead of this one: that is ignored before its term is
        // looked at. A node removed from the cluster never hears of its
        // removal if it was cut off when it happened, and would otherwise
        // raise every member's term with each timeout (section 4.2.3 of
        // the dissertation); its log lacks the entry that removed it, so it
        // is behind every member that holds it. A voter this node does not
        // know yet (its log lags behind the change that added it) is ahead
        // and is heard: ignoring it could leave the cluster without a
        // leader that can win. Refusing a vote is always safe.
        if let MessageBody::VoteRequest {
            last_log_index,
            last_log_term,
            ..
        } = message.body
        {
            let ahead = last_log_term > self.log.last_term()
                || (last_log_term == self.log.last_term()
                    && last_log_index > self.log.last_index());
            if !ahead && !self.membership().is_voter(message.from) {
                return;
            }
        }
        if message.term > self.term {
            if !self.step_higher_term(&message) {
                return;
            }
        } else if message.term < self.term {
            self.step_lower_term(&message);
            return;
        }
        if let MessageBody::VoteRequest {
            pre_vote,
            last_log_index,
            last_log_term,
            ..
        } = message.body
        {
            self.handle_vote_request(
                message.from,
                message.term,
                pre_vote,
                last_log_index,
                last_log_term,
            );
            return;
        }
        match self.role {
            Role::Leader => self.step_leader(message),
            Role::Candidate | Role::PreCandidate => self.step_candidate(message),
            Role::Follower => self.step_follower(message),
        }
    }

    /// Records that `message` was dropped as implausible. Only the first
    /// `implausible_reports_max` reports between two takes are kept; the
    /// total counts them all.
    pub(super) fn report_implausible(&mut self, message: &Message, reason: ImplausibleReason) {
        self.implausible_total += 1;
        if self.implausible.len() < self.config.implausible_reports_max {
            self.implausible.push(ImplausibleMessage {
                from: message.from,
                term: message.term,
                kind: message.body.kind(),
                reason,
            });
        }
    }

    /// Takes the reports of implausible messages dropped since the last
    /// call, oldest first. The driver logs each one: it means a faulty peer
    /// or forged traffic on the peer port.
    pub fn take_implausible(&mut self) -> Vec<ImplausibleMessage> {
        std::mem::take(&mut self.implausible)
    }

    /// How many implausible messages this core has dropped since it was
    /// created, including those whose reports did not fit the bound; a
    /// counter for metrics.
    pub fn implausible_total(&self) -> u64 {
        self.implausible_total
    }

    /// A message from a later term. Returns whether to go on handling it.
    fn step_higher_term(&mut self, message: &Message) -> bool {
        match message.body {
            MessageBody::VoteRequest {
                pre_vote,
                leadership_transfer,
                ..
            } => {
                if self.ignores_campaigns() && !leadership_transfer {
                    // Leader stickiness (sections 4.2.3 and 9.6 of the
                    // dissertation): a node that hears from a live leader
                    // ignores campaigns, so neither a flapping node nor
                    // one removed from the membership (which may never
                    // learn it was removed) can depose it.
                    return false;
                }
                if !pre_vote {
                    self.learn_term(message.term);
                }
                true
            }
            // A granted pre-vote carries the term we would campaign in.
            MessageBody::VoteResponse {
                pre_vote: true,
                granted: true,
            } => true,
            _ => {
                let leader = match message.body {
                    MessageBody::AppendRequest { .. }
                    | MessageBody::HeartbeatRequest { .. }
                    | MessageBody::InstallSnapshot { .. } => Some(message.from),
                    _ => None,
                };
                if leader.is_none() && self.role != Role::Leader {
                    // A later term heard from a node that does not lead
                    // it (a vote refused in it, an answer): the election
                    // timer keeps running, as above. Restarted here, a
                    // candidate refused by a voter that had already voted
                    // in that term timed out a refusal's round trip after
                    // every campaign of the node that voter had voted for,
                    // and was beaten to every next term by it (seed 477 on
                    // three nodes, pre-vote and check-quorum off: that
                    // node, removed by a change the voter did not hold,
                    // could never win, and nobody else did).
                    self.learn_term(message.term);
                } else {
                    self.become_follower(message.term, leader);
                }
                true
            }
        }
    }

    /// A message from an earlier term: tell stale leaders, candidates and
    /// pre-candidates about the current term so they stop; ignore
    /// everything else.
    ///
    /// A candidate is refused in the current term (figure 2 of the paper)
    /// rather than left to learn it from other messages: it may hear from
    /// nobody else. A voter ignores the campaigns of a node it does not
    /// count as a voter, term unseen (`Raft::step`), so a node removed by
    /// a change it does not know committed can raise one voter's term with
    /// each timeout while the rightful candidate, which ignores it, never
    /// learns that term; without pre-vote and check-quorum its campaigns
    /// then went unanswered for good (the simulator's liveness checker,
    /// seed 635 on three nodes after the follower apply wait changed its
    /// schedules).
    fn step_lower_term(&mut self, message: &Message) {
        match message.body {
            MessageBody::AppendRequest { .. } | MessageBody::HeartbeatRequest { .. } => {
                let body = MessageBody::AppendResponse {
                    index: LogIndex(0),
                    rejected: false,
                    reject_hint_index: LogIndex(0),
                    reject_hint_term: Term(0),
                };
                self.send(message.from, body);
            }
            MessageBody::VoteRequest { pre_vote, .. } => {
                self.send(
                    message.from,
                    MessageBody::VoteResponse {
                        pre_vote,
                        granted: false,
                    },
                );
            }
            _ => {}
        }
    }

    /// Whether this node ignores vote requests (but for leadership
    /// transfers): it heard from a live leader within the minimum election
    /// timeout, whatever check-quorum says. With check-quorum, a node that
    /// restarted with history counts as such for its first election
    /// timeout: it may have heard from a leader just before it went down,
    /// and that leader may be serving lease reads.
    fn ignores_campaigns(&self) -> bool {
        let restarted_under_lease = self.config.check_quorum
            && self.restarted
            && self.ticks < self.config.election_ticks_min;
        self.election_elapsed < self.config.election_ticks_min
            && (self.leader.is_some() || restarted_under_lease)
    }

    /// Steps down to `term`, heard from a node that does not lead it,
    /// keeping the election timer: it restarts on granting a vote or on
    /// hearing from a leader (section 5.2), not on stepping down to a
    /// candidate that may not get the vote. Restarting it would line up
    /// every node's next timeout at the moment the request arrived, and a
    /// candidate that cannot win (its log is behind) would keep the
    /// cluster in step, splitting vote after vote.
    fn learn_term(&mut self, term: Term) {
        let timer = (self.election_elapsed, self.randomized_election_ticks);
        self.become_follower(term, None);
        (self.election_elapsed, self.randomized_election_ticks) = timer;
    }

    /// RequestVote and PreVote, section 5.2, 5.4.1 and 9.6.
    fn handle_vote_request(
        &mut self,
        candidate: NodeId,
        candidate_term: Term,
        pre_vote: bool,
        last_log_index: LogIndex,
        last_log_term: Term,
    ) {
        let free_to_vote = self.voted_for == Some(candidate)
            || (self.voted_for.is_none() && self.leader.is_none())
            || (pre_vote && candidate_term > self.term);
        let log_ok = self.log.is_up_to_date(last_log_index, last_log_term)
            || self.bug_vote_without_log_check();
        let granted = free_to_vote && log_ok;
        if pre_vote {
            let term = if granted { candidate_term } else { self.term };
            self.send_with_term(
                candidate,
                term,
                MessageBody::VoteResponse {
                    pre_vote: true,
                    granted,
                },
            );
            return;
        }
        if granted {
            self.election_elapsed = 0;
            self.set_vote(candidate);
        }
        let body = MessageBody::VoteResponse {
            pre_vote: false,
            granted,
        };
        if granted && self.bug_vote_before_durable() {
            self.send(candidate, body);
        } else {
            // Rule 1: a vote is not sent until the vote is durable.
            self.send_after_persist(candidate, body);
        }
    }

    pub(super) fn set_vote(&mut self, candidate: NodeId) {
        assert!(
            self.voted_for.is_none() || self.voted_for == Some(candidate),
            "node {} term {}: vote changing from {:?} to {}",
            self.id,
            self.term,
            self.voted_for,
            candidate
        );
        if self.voted_for != Some(candidate) {
            self.voted_for = Some(candidate);
            self.hard_state_dirty = true;
        }
    }

    /// Becomes a follower in `term` (a term never goes back).
    pub(super) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        assert!(
            term >= self.term,
            "node {}: term going back from {} to {}",
            self.id,
            self.term,
            term
        );
        if term > self.term {
            self.term = term;
            self.voted_for = None;
            self.hard_state_dirty = true;
        } else if self.bug_forget_vote_on_step_down() {
            self.voted_for = None;
            self.hard_state_dirty = true;
        }
        let leader_changed = self.leader != leader;
        if self.role == Role::Leader || leader_changed {
            self.reads.drop_unconfirmed(self.id);
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.term_durable_pending = false;
        self.reset_role_state();
    }

    /// Clears what belongs to the previous role and rearms the timers.
    pub(super) fn reset_role_state(&mut self) {
        self.votes.clear();
        self.progress.clear();
        self.transfer_target = None;
        self.timeout_now_sent = false;
        self.replication_pending = false;
        self.read_round_pending = false;
        self.round_sent_ticks.clear();
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.reset_election_timer();
    }

    fn reset_election_timer(&mut self) {
        self.randomized_election_ticks = self.rng.range(
            self.config.election_ticks_min,
            self.config.election_ticks_max,
        );
    }

    /// Queues a message to send right away, in the current term.
    pub(super) fn send(&mut self, to: NodeId, body: MessageBody) {
        self.send_with_term(to, self.term, body);
    }

    pub(super) fn send_with_term(&mut self, to: NodeId, term: Term, body: MessageBody) {
        if self.term_durable_pending {
            self.send_after_persist(to, body);
            return;
        }
        self.messages.push(Message {
            from: self.id,
            to,
            term,
            body,
        });
    }

    /// Queues a message to send once the current batch is durable.
    pub(super) fn send_after_persist(&mut self, to: NodeId, body: MessageBody) {
        self.messages_after_persist.push(Message {
            from: self.id,
            to,
            term: self.term,
            body,
        });
    }

    /// Every other member (voters of both configurations and learners),
    /// in id order: whom a leader replicates to.
    pub(super) fn peers(&self) -> Vec<NodeId> {
        let id = self.id;
        self.membership()
            .members()
            .into_iter()
            .filter(|member| *member != id)
            .collect()
    }

    /// Every other voter of either configuration, in id order: whom a
    /// candidate asks.
    pub(super) fn voting_peers(&self) -> Vec<NodeId> {
        let id = self.id;
        self.membership()
            .all_voters()
            .into_iter()
            .filter(|voter| *voter != id)
            .collect()
    }

    #[cfg(feature = "planted-bugs")]
    pub(super) fn bug(&self, bug: PlantedBug) -> bool {
        self.config.planted_bug == Some(bug)
    }

    fn bug_vote_without_log_check(&self) -> bool {
        #[cfg(feature = "planted-bugs")]
        return self.bug(PlantedBug::VoteWithoutLogCheck);
        #[cfg(not(feature = "planted-bugs"))]
        false
    }

    fn bug_vote_before_durable(&self) -> bool {
        #[cfg(feature = "planted-bugs")]
        return self.bug(PlantedBug::VoteBeforeDurable);
        #[cfg(not(feature = "planted-bugs"))]
        false
    }

    pub(super) fn bug_commit_previous_term(&self) -> bool {
        #[cfg(feature = "planted-bugs")]
        return self.bug(PlantedBug::CommitPreviousTerm);
        #[cfg(not(feature = "planted-bugs"))]
        false
    }

    pub(super) fn bug_skip_truncate(&self) -> bool {
        #[cfg(feature = "planted-bugs")]
        return self.bug(PlantedBug::SkipTruncate);
        #[cfg(not(feature = "planted-bugs"))]
        false
    }

    fn bug_forget_vote_on_step_down(&self) -> bool {
        #[cfg(feature = "planted-bugs")]
        return self.bug(PlantedBug::ForgetVoteOnStepDown);
        #[cfg(not(feature = "planted-bugs"))]
        false
    }

    pub(super) fn bug_read_confirmed_by_old_round(&self) -> bool {
        #[cfg(feature = "planted-bugs")]
        return self.bug(PlantedBug::ReadConfirmedByOldRound);
        #[cfg(not(feature = "planted-bugs"))]
        false
    }

    /// Whether the planted bug `bug` is enabled (always false without the
    /// `planted-bugs` feature); for the pipeline's planted bugs.
    #[cfg(feature = "planted-bugs")]
    pub fn planted(&self, bug: PlantedBug) -> bool {
        self.config.planted_bug == Some(bug)
    }

    pub(super) fn bug_lease_after_timeout_now(&self) -> bool {
        #[cfg(feature = "planted-bugs")]
        return self.bug(PlantedBug::LeaseAfterTimeoutNow);
        #[cfg(not(feature = "planted-bugs"))]
        false
    }

    pub(super) fn bug_read_without_confirmation(&self) -> bool {
        #[cfg(feature = "planted-bugs")]
        return self.bug(PlantedBug::ReadWithoutConfirmation);
        #[cfg(not(feature = "planted-bugs"))]
        false
    }
}
