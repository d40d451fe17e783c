//! The leader: replication (section 5.3) with per-follower flow control,
//! the commit rule (section 5.4.2), heartbeats and check-quorum,
//! ReadIndex reads and leases (section 8), and leadership transfer.

use super::message::{Message, MessageBody};
use super::progress::{Progress, ProgressState};
use super::quorum;
use super::raft::Raft;
use super::read_only::{ForwardedRead, PendingRead};
use super::ready::{ImplausibleReason, ReadState};
use super::types::{EntryPayload, LogIndex, Membership, NodeId, Role, Snapshot, Term};

/// Why a read was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// No leader is known to confirm the read with.
    #[error("cannot serve the read here; {}", super::raft::describe_leader(*leader))]
    NoLeader {
        /// The known leader, if any.
        leader: Option<NodeId>,
    },
    /// Too many reads are pending.
    #[error("too many pending reads")]
    Backpressure,
}

/// One change of the cluster's membership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipChange {
    /// Add `node` as a learner: it receives the log but does not vote.
    AddLearner {
        /// The new member.
        node: NodeId,
        /// Where its peer API listens, if its peers' configuration files
        /// do not say.
        address: Option<String>,
    },
    /// Make learner `node` a voter.
    Promote(NodeId),
    /// Remove `node`, voter or learner.
    Remove(NodeId),
}

impl MembershipChange {
    /// The next step of `node`'s way through the cluster given
    /// `membership`: added as a learner when it is no member, promoted
    /// when it is a learner, removed when it votes. What the simulator and
    /// the tests walk nodes through.
    pub fn next_step(membership: &Membership, node: NodeId) -> MembershipChange {
        if membership.learners.contains(&node) {
            MembershipChange::Promote(node)
        } else if membership.contains(node) {
            MembershipChange::Remove(node)
        } else {
            MembershipChange::AddLearner {
                node,
                address: None,
            }
        }
    }

    /// The membership `current` (not joint) becomes: plain when only
    /// learners change, joint when the voters do.
    pub fn apply_to(&self, current: &Membership) -> Result<Membership, MembershipError> {
        let invalid = |reason: String| Err(MembershipError::Invalid(reason));
        let mut target = current.clone();
        match self {
            MembershipChange::AddLearner { node, address } => {
                if !node.is_valid() {
                    return invalid(format!(
                        "node id {node} cannot be a member: node ids run from 1 to {}",
                        NodeId::MAX
                    ));
                }
                if current.contains(*node) {
                    return invalid(format!("node {node} is already a member"));
                }
                target.learners.insert(*node);
                if let Some(address) = address {
                    target.addresses.insert(*node, address.clone());
                }
                return Ok(target);
            }
            MembershipChange::Promote(node) => {
                if !current.learners.contains(node) {
                    return invalid(format!("node {node} is not a learner: add it as one first"));
                }
                target.learners.remove(node);
                target.voters.insert(*node);
            }
            MembershipChange::Remove(node) => {
                if current.learners.contains(node) {
                    target.learners.remove(node);
                    target.addresses.remove(node);
                    return Ok(target);
                }
                if !current.voters.contains(node) {
                    return invalid(format!("node {node} is not a member"));
                }
                if current.voters.len() == 1 {
                    return invalid(format!("node {node} is the last voter"));
                }
                target.voters.remove(node);
            }
        }
        target.voters_outgoing = current.voters.clone();
        Ok(target)
    }
}

/// Why a membership change was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// Only the leader changes the membership.
    #[error("not the leader; {}", super::raft::describe_leader(*leader))]
    NotLeader {
        /// The known leader.
        leader: Option<NodeId>,
    },
    /// An earlier change is not committed yet, or still joint, or this
    /// leader has not committed an entry of its term yet.
    #[error("a membership change is in progress; retry when it has committed")]
    ChangeInProgress,
    /// Leadership is being handed over, or too many entries wait for
    /// commit.
    #[error("the leader is busy (a transfer or too many uncommitted entries); retry")]
    Busy,
    /// The learner to promote is further behind the leader's log than one
    /// append message.
    #[error("learner {node} is {behind} entries behind the leader; retry once it has caught up")]
    LearnerBehind {
        /// The learner.
        node: NodeId,
        /// Entries it lacks.
        behind: u64,
    },
    /// The change does not fit the membership.
    #[error("invalid membership change: {0}")]
    Invalid(String),
}

impl Raft {
    pub(super) fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.config.election_ticks_min {
            self.election_elapsed = 0;
            if self.config.check_quorum && !self.quorum_recently_active() {
                // Check-quorum: a leader cut off from a majority steps down,
                // so that clients stop waiting on it.
                self.become_follower(self.term, None);
                return;
            }
            for progress in self.progress.values_mut() {
                progress.recent_active = false;
            }
        }
        if self.transfer_target.is_some() {
            self.transfer_elapsed += 1;
            if self.transfer_elapsed >= self.config.election_ticks_min {
                self.transfer_target = None;
            }
        }
        if self.heartbeat_elapsed >= self.config.heartbeat_ticks {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
        }
        self.announce_commit();
        self.resend_lost_snapshots();
    }

    fn quorum_recently_active(&self) -> bool {
        quorum::membership_has_quorum(self.membership(), |voter| {
            voter == self.id
                || self
                    .progress
                    .get(&voter)
                    .is_some_and(|progress| progress.recent_active)
        })
    }

    /// Whether this node alone is a quorum (a one-voter cluster): it then
    /// confirms reads without waiting for anyone.
    fn alone_is_quorum(&self) -> bool {
        quorum::membership_has_quorum(self.membership(), |voter| voter == self.id)
    }

    fn resend_lost_snapshots(&mut self) {
        let ticks = self.ticks;
        let timeout = self.config.election_ticks_max;
        for progress in self.progress.values_mut() {
            if let ProgressState::Snapshot { sent_at_tick, .. } = progress.state {
                if ticks - sent_at_tick >= timeout {
                    progress.become_probe();
                    self.replication_pending = true;
                }
            }
        }
    }

    fn broadcast_heartbeat(&mut self) {
        self.read_round += 1;
        self.read_round_pending = false;
        self.round_sent_ticks
            .push_back((self.read_round, self.ticks));
        self.prune_round_sent_ticks(self.quorum_acknowledged_round());
        for peer in self.peers() {
            let progress = self.progress.get_mut(&peer).expect("peer has progress");
            let leader_commit = self.log.commit_index().min(progress.match_index);
            progress.commit_sent = progress.commit_sent.max(leader_commit);
            let body = MessageBody::HeartbeatRequest {
                leader_commit,
                read_round: self.read_round,
            };
            self.send(peer, body);
        }
        if self.alone_is_quorum() {
            self.confirm_reads();
        }
    }

    /// Sends what accumulated since the last `Ready`: new entries (which
    /// carry the commit index) and a heartbeat round for waiting reads once
    /// it is due (see [`Raft::read_round_due`]). A commit index that moved
    /// is not announced on its own here: the next append carries it, or
    /// the next tick (see `announce_commit`).
    pub(super) fn flush_leader(&mut self) {
        if self.read_round_due() {
            self.broadcast_heartbeat();
        }
        if !std::mem::take(&mut self.replication_pending) {
            return;
        }
        for peer in self.peers() {
            let mut sent = false;
            while self.send_append(peer, false) {
                sent = true;
            }
            if !sent && self.progress[&peer].state == ProgressState::Probe {
                // A follower whose match is unknown (new, or rejecting) is
                // probed at once even with nothing new to send.
                self.send_append(peer, true);
            }
        }
    }

    /// Tells every follower whose window is open the commit index that no
    /// message carried to it yet, up to what it holds: an empty append
    /// each. Done once a tick rather than whenever the commit index moves:
    /// under a steady load the next append carries it anyway, and an
    /// announcement of its own cost each follower a message and an answer
    /// for every write (half of all peer messages under a single client).
    /// A follower learns of a commit at most a tick late; it holds
    /// committed entries a while before applying them in any case
    /// (`pipeline::FOLLOWER_APPLY_WAIT_DEFAULT`), and a read on it asks
    /// the leader for the commit index.
    fn announce_commit(&mut self) {
        let commit = self.log.commit_index();
        for peer in self.peers() {
            let progress = &self.progress[&peer];
            let held = progress.match_index.max(progress.next_index.prev());
            if progress.commit_sent < commit.min(held) {
                self.send_append(peer, true);
            }
        }
    }

    /// Sends `peer` the entries it needs next, if its flow control allows.
    /// Returns whether a message went out.
    fn send_append(&mut self, peer: NodeId, send_if_empty: bool) -> bool {
        let inflight_max = self.config.inflight_messages_max;
        let progress = &self.progress[&peer];
        if progress.is_paused(inflight_max) {
            return false;
        }
        let next_index = progress.next_index;
        let prev_log_index = next_index.prev();
        let entries = self.log.entries_from(
            next_index,
            self.config.entries_per_message_max,
            self.config.message_bytes_max,
        );
        let (prev_log_term, entries) = match (self.log.term_at(prev_log_index), entries) {
            (Some(term), Ok(entries)) => (term, entries),
            _ => {
                self.send_snapshot(peer);
                return true;
            }
        };
        if entries.is_empty() && !send_if_empty {
            return false;
        }
        let last_sent = entries.last().map(|entry| entry.index);
        let progress = self.progress.get_mut(&peer).expect("peer has progress");
        match last_sent {
            Some(last) => progress.sent_entries(last),
            None if progress.state == ProgressState::Probe => progress.probe_sent = true,
            None => {}
        }
        let leader_commit = self.log.commit_index();
        progress.commit_sent = progress.commit_sent.max(leader_commit);
        let body = MessageBody::AppendRequest {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
        };
        self.send(peer, body);
        true
    }

    fn send_snapshot(&mut self, peer: NodeId) {
        let meta = self.log.snapshot();
        let ticks = self.ticks;
        self.progress
            .get_mut(&peer)
            .expect("peer has progress")
            .become_snapshot(meta.index, ticks);
        // The pipeline streams a snapshot of the state machine (at its
        // applied index, at or after `meta`) instead.
        self.send(
            peer,
            MessageBody::InstallSnapshot {
                snapshot: Snapshot {
                    meta,
                    membership: Box::new(self.log.snapshot_membership().clone()),
                },
            },
        );
    }

    /// Advances the commit index to the highest index a majority holds,
    /// counting this node only up to its durable index (rule 3), and only
    /// for an entry of the current term (rule 5, section 5.4.2).
    pub(super) fn maybe_commit(&mut self) -> bool {
        let durable = self.log.durable_index();
        let own_id = self.id;
        let progress = &self.progress;
        let candidate = quorum::membership_committed_index(self.membership(), |voter| {
            if voter == own_id {
                durable
            } else {
                progress
                    .get(&voter)
                    .map_or(LogIndex(0), |progress| progress.match_index)
            }
        });
        if candidate <= self.log.commit_index() {
            return false;
        }
        let of_current_term = self.log.term_at(candidate) == Some(self.term);
        if !of_current_term && !self.bug_commit_previous_term() {
            return false;
        }
        let first_commit_in_term = !self.committed_in_current_term();
        self.log.commit_to(candidate);
        if first_commit_in_term && self.committed_in_current_term() {
            self.start_reads_waiting_for_term_commit();
        }
        self.membership_committed();
        true
    }

    /// What a leader does once the membership in force is committed: a
    /// joint membership moves on to its new voters alone (the second
    /// phase of joint consensus, appended at once, as etcd does); a
    /// leader that is no longer a voter steps down (section 4.2.2 of the
    /// dissertation: it led the cluster while the change committed, not
    /// counting itself where it no longer votes).
    fn membership_committed(&mut self) {
        if self.log.membership_index() > self.log.commit_index() {
            return;
        }
        let membership = self.membership();
        if membership.is_joint() {
            let mut leave = membership.clone();
            leave.voters_outgoing.clear();
            leave
                .addresses
                .retain(|id, _| leave.voters.contains(id) || leave.learners.contains(id));
            let index = self.log.last_index().next();
            self.log.append(vec![super::types::Entry {
                term: self.term,
                index,
                payload: EntryPayload::Membership(Box::new(leave)),
            }]);
            self.sync_progress();
            self.replication_pending = true;
            // A one-voter configuration may commit it at once.
            self.maybe_commit();
        } else if !membership.is_voter(self.id) {
            // Hand over to the most up-to-date voter (TimeoutNow: it
            // campaigns at once), so that the cluster need not wait out an
            // election timeout for its next leader, nor split votes among
            // voters that time out together (simulator seeds 1130 on five
            // nodes and 170 on three, 2,000 ticks: the voters left did so
            // for over 100 ticks). It took no proposals since it appended
            // its removal, so the voters that acknowledged the change
            // hold its whole log, or nearly.
            let successor = self
                .progress
                .iter()
                .filter(|(id, _)| membership.is_voter(**id))
                .max_by_key(|(id, progress)| (progress.match_index, std::cmp::Reverse(**id)))
                .map(|(id, _)| *id);
            if let Some(successor) = successor {
                self.send(successor, MessageBody::TimeoutNow);
            }
            self.become_follower(self.term, None);
        }
    }

    /// Gives every member a progress and forgets those that left: after
    /// the leader's election and every membership it appends.
    pub(super) fn sync_progress(&mut self) {
        let last_index = self.log.last_index();
        let members = self.membership().members();
        self.progress.retain(|id, _| members.contains(id));
        for member in members {
            if member != self.id {
                self.progress
                    .entry(member)
                    .or_insert_with(|| Progress::new(last_index));
            }
        }
        // Fewer voters may make a later round the acknowledged one.
        self.prune_round_sent_ticks(self.quorum_acknowledged_round());
    }

    /// Proposes one change of membership (leader only) and returns the
    /// index of its entry. Adding or removing a learner takes one entry.
    /// Promoting a learner or removing a voter changes the voters: the
    /// entry is the joint membership (old and new voters), and once it
    /// commits the leader appends the new voters alone. Refused while an
    /// earlier change is not committed or still joint, and until the
    /// leader has committed an entry of its term (so that the membership
    /// it starts from is the cluster's, section 4.1 of the dissertation
    /// and its 2015 erratum).
    pub fn change_membership(
        &mut self,
        change: MembershipChange,
    ) -> Result<LogIndex, MembershipError> {
        if self.role != Role::Leader {
            return Err(MembershipError::NotLeader {
                leader: self.leader,
            });
        }
        if !self.committed_in_current_term()
            || self.log.membership_index() > self.log.commit_index()
            || self.membership().is_joint()
        {
            return Err(MembershipError::ChangeInProgress);
        }
        let target = change.apply_to(self.membership())?;
        if let MembershipChange::Promote(node) = &change {
            self.check_caught_up(*node)?;
        }
        let index = self
            .propose_payload(EntryPayload::Membership(Box::new(target)))
            .map_err(|error| match error {
                super::raft::ProposeError::NotLeader { leader } => {
                    MembershipError::NotLeader { leader }
                }
                super::raft::ProposeError::TransferInProgress
                | super::raft::ProposeError::Backpressure => MembershipError::Busy,
            })?;
        self.sync_progress();
        Ok(index)
    }

    /// A learner is promoted only once it has acknowledged entries and is
    /// within one append message of the leader's log: a voter that must
    /// first catch up (or that never answered: a wrong address, a node
    /// not started) could cost the new configuration its majority for as
    /// long as that takes.
    fn check_caught_up(&self, node: NodeId) -> Result<(), MembershipError> {
        let matched = self
            .progress
            .get(&node)
            .map_or(LogIndex(0), |progress| progress.match_index);
        let behind = self.log.last_index().0.saturating_sub(matched.0);
        if matched == LogIndex(0) || behind > self.config.entries_per_message_max as u64 {
            return Err(MembershipError::LearnerBehind { node, behind });
        }
        Ok(())
    }

    /// Whether the leader committed an entry of its own term, which makes
    /// its commit index current (section 8).
    pub(super) fn committed_in_current_term(&self) -> bool {
        self.log.term_at(self.log.commit_index()) == Some(self.term)
    }

    /// Handles a message in the leader role.
    pub(super) fn step_leader(&mut self, message: Message) {
        if let Some(reason) = self.implausible_at_leader(&message) {
            self.report_implausible(&message, reason);
            return;
        }
        let from = message.from;
        match message.body {
            MessageBody::AppendResponse {
                index,
                rejected,
                reject_hint_index,
                reject_hint_term,
            } => {
                let Some(progress) = self.progress.get_mut(&from) else {
                    return;
                };
                progress.recent_active = true;
                if rejected {
                    self.handle_append_rejection(from, index, reject_hint_index, reject_hint_term);
                } else {
                    self.handle_append_success(from, index);
                }
            }
            MessageBody::HeartbeatResponse { read_round } => {
                let last_index = self.log.last_index();
                let Some(progress) = self.progress.get_mut(&from) else {
                    return;
                };
                progress.recent_active = true;
                progress.probe_sent = false;
                progress.read_round_acked = progress.read_round_acked.max(read_round);
                if progress.is_paused(self.config.inflight_messages_max) {
                    // A full window of messages the follower never
                    // acknowledged (it was down, or they were lost): free one
                    // slot so the next append goes out and its answer
                    // resynchronizes the window.
                    progress.inflight.pop_front();
                }
                if progress.match_index < last_index {
                    // Even with nothing new to send: an append that the
                    // follower rejects reveals a lost message in the
                    // replicate window and restarts probing.
                    self.send_append(from, true);
                }
                self.confirm_reads();
            }
            MessageBody::ReadIndexRequest { context } => {
                // Forwarded reads count against the same bound as local
                // ones, so that a peer cannot grow the queue without limit.
                // A node that is not a member receives no entries, so it
                // could never apply the read's index.
                let accepted = self.reads.len() < self.config.pending_reads_max
                    && self.membership().contains(from)
                    && self.leader_read(from, context).is_ok();
                if !accepted {
                    self.refuse_forwarded_read(from, context);
                }
            }
            _ => {}
        }
    }

    /// Why `message`, of this leader's term, cannot come from an honest
    /// peer, if it cannot. Every index and round a follower answers with
    /// echoes a request of this leader, in this term, and this leader's log
    /// and rounds only grow while it leads.
    fn implausible_at_leader(&self, message: &Message) -> Option<ImplausibleReason> {
        let last_index = self.log.last_index();
        match message.body {
            MessageBody::AppendRequest { .. }
            | MessageBody::HeartbeatRequest { .. }
            | MessageBody::InstallSnapshot { .. } => {
                Some(ImplausibleReason::SecondLeader { leader: self.id })
            }
            MessageBody::TimeoutNow => {
                Some(ImplausibleReason::TimeoutNowFromNonLeader { leader: self.id })
            }
            MessageBody::AppendResponse {
                index,
                rejected: false,
                ..
            } if index > last_index => {
                Some(ImplausibleReason::AcknowledgedBeyondLog { index, last_index })
            }
            MessageBody::AppendResponse {
                index,
                rejected: true,
                ..
            } if index > last_index => {
                Some(ImplausibleReason::RejectedBeyondLog { index, last_index })
            }
            MessageBody::HeartbeatResponse { read_round } if read_round > self.read_round => {
                Some(ImplausibleReason::FutureReadRound {
                    read_round,
                    sent_round: self.read_round,
                })
            }
            _ => None,
        }
    }

    fn handle_append_rejection(
        &mut self,
        peer: NodeId,
        rejected: LogIndex,
        hint_index: LogIndex,
        hint_term: Term,
    ) {
        // Fast backtracking: skip every entry of the leader's log whose term
        // is above the follower's term at the hint. A follower behind the
        // leader's snapshot lands below it and is sent the snapshot.
        let next_probe = if hint_term.0 > 0 {
            self.log.last_possible_match(hint_index, hint_term)
        } else {
            hint_index
        };
        let progress = self.progress.get_mut(&peer).expect("peer has progress");
        if progress.reject(rejected, next_probe) {
            self.send_append(peer, false);
        }
    }

    fn handle_append_success(&mut self, peer: NodeId, index: LogIndex) {
        // `step_leader` dropped acknowledgements beyond the log as
        // implausible, so the match index never passes the last index.
        let progress = self.progress.get_mut(&peer).expect("peer has progress");
        if !progress.acknowledge(index) {
            return;
        }
        match progress.state {
            ProgressState::Probe => progress.become_replicate(),
            ProgressState::Snapshot { pending_index, .. }
                if progress.match_index >= pending_index =>
            {
                progress.become_replicate()
            }
            _ => {}
        }
        self.maybe_commit();
        self.replication_pending = true;
        self.send_timeout_now_if_caught_up(peer);
    }

    pub(super) fn send_timeout_now_if_caught_up(&mut self, peer: NodeId) {
        if self.transfer_target != Some(peer) {
            return;
        }
        if self.progress[&peer].match_index == self.log.last_index() {
            self.timeout_now_sent = true;
            self.transfer_elapsed = 0;
            self.send(peer, MessageBody::TimeoutNow);
        } else {
            self.replication_pending = true;
        }
    }

    /// Requests a linearizable read identified by `context`. It shows up in
    /// `Ready::reads` once safe (or in `Ready::reads_dropped`). A follower
    /// forwards it to its leader.
    pub fn read_index(&mut self, context: u64) -> Result<(), ReadError> {
        if self.reads.len() >= self.config.pending_reads_max {
            return Err(ReadError::Backpressure);
        }
        match (self.role, self.leader) {
            (Role::Leader, _) => self.leader_read(self.id, context),
            (Role::Follower, Some(leader)) => {
                self.reads.forwarded.push(ForwardedRead {
                    context,
                    forwarded_at: self.ticks,
                });
                self.send(leader, MessageBody::ReadIndexRequest { context });
                Ok(())
            }
            (_, leader) => Err(ReadError::NoLeader { leader }),
        }
    }

    fn leader_read(&mut self, requester: NodeId, context: u64) -> Result<(), ReadError> {
        if self.transfer_target.is_some() {
            return Err(ReadError::NoLeader {
                leader: self.leader,
            });
        }
        if self.bug_read_without_confirmation() {
            let index = self.log.commit_index();
            self.finish_read(PendingRead {
                requester,
                context,
                index,
                round: 0,
            });
            return Ok(());
        }
        if !self.committed_in_current_term() {
            self.reads
                .waiting_for_term_commit
                .push((requester, context));
            return Ok(());
        }
        self.queue_read_for_round(requester, context);
        Ok(())
    }

    fn queue_read_for_round(&mut self, requester: NodeId, context: u64) {
        let read = PendingRead {
            requester,
            context,
            index: self.log.commit_index(),
            round: if self.bug_read_confirmed_by_old_round() {
                self.quorum_acknowledged_round()
            } else {
                self.read_round + 1
            },
        };
        self.reads.waiting_for_quorum.push_back(read);
        if self.bug_read_confirmed_by_old_round() {
            self.confirm_reads();
        }
        self.read_round_pending = true;
        if self.alone_is_quorum() {
            self.broadcast_heartbeat();
        }
    }

    fn start_reads_waiting_for_term_commit(&mut self) {
        for (requester, context) in std::mem::take(&mut self.reads.waiting_for_term_commit) {
            self.queue_read_for_round(requester, context);
        }
    }

    /// Whether reads wait for a heartbeat round that should go out now:
    /// some do, and a quorum acknowledged every round sent so far. Reads
    /// that arrive while a round is out wait for the next one, which leaves
    /// when that round's answers are in (or with the next heartbeat tick,
    /// if they are lost): one round confirms every read that arrived during
    /// the previous one, as etcd's read loop does, instead of a round (two
    /// messages per follower) for every batch of reads. A read that arrives
    /// with no round out still leaves at once.
    pub(super) fn read_round_due(&self) -> bool {
        self.read_round_pending && self.quorum_acknowledged_round() >= self.read_round
    }

    /// The highest heartbeat round a quorum acknowledged (this node counts
    /// for every round it sent).
    pub(super) fn quorum_acknowledged_round(&self) -> u64 {
        let own_id = self.id;
        let own_round = self.read_round;
        let round = quorum::membership_committed_index(self.membership(), |voter| {
            if voter == own_id {
                LogIndex(own_round)
            } else {
                LogIndex(
                    self.progress
                        .get(&voter)
                        .map_or(0, |progress| progress.read_round_acked),
                )
            }
        });
        round.0
    }

    fn confirm_reads(&mut self) {
        let round = self.quorum_acknowledged_round();
        for read in self.reads.confirm_through(round) {
            self.finish_read(read);
        }
        self.prune_round_sent_ticks(round);
    }

    /// Forgets the send times of rounds before `acknowledged`, the latest
    /// round a quorum acknowledged: leases need only its own. Run when
    /// acknowledgements arrive, when a round is sent (a leader that is the
    /// only voter acknowledges its rounds itself) and when the voters
    /// change.
    fn prune_round_sent_ticks(&mut self, acknowledged: u64) {
        while self.round_sent_ticks.len() > 1 && self.round_sent_ticks[1].0 <= acknowledged {
            self.round_sent_ticks.pop_front();
        }
    }

    fn finish_read(&mut self, read: PendingRead) {
        if read.requester == self.id {
            self.reads.waiting_for_apply.push(ReadState {
                context: read.context,
                index: read.index,
            });
            self.release_reads();
        } else {
            let body = MessageBody::ReadIndexResponse {
                context: read.context,
                index: read.index,
                refused: false,
            };
            self.send(read.requester, body);
        }
    }

    /// A lease read: when this leader holds a lease, the index a read must
    /// observe, without a quorum round. The lease runs from the send time
    /// of the latest heartbeat round a quorum acknowledged, for three
    /// quarters of `election_ticks_min` (the margin tolerates followers'
    /// clocks running up to a third fast): until then no follower of that
    /// quorum votes for anyone else. Needs check-quorum. None once a
    /// TimeoutNow was sent in this term: its target may win an election
    /// at any time, lease or not.
    pub fn lease_read_index(&self) -> Option<LogIndex> {
        if self.lease_blocked() {
            return None;
        }
        let round = self.quorum_acknowledged_round();
        let sent_at = self
            .round_sent_ticks
            .iter()
            .find(|(sent_round, _)| *sent_round == round)?
            .1;
        let lease_ticks = self.config.election_ticks_min * 3 / 4;
        (self.ticks < sent_at + lease_ticks).then_some(self.log.commit_index())
    }

    /// Whether this node may not claim a lease whatever its rounds say:
    /// not a leader, no check-quorum, a transfer in progress or a
    /// TimeoutNow sent in this term, or no entry of its term committed.
    fn lease_blocked(&self) -> bool {
        self.role != Role::Leader
            || !self.config.check_quorum
            || self.transfer_target.is_some()
            || (self.timeout_now_sent && !self.bug_lease_after_timeout_now())
            || !self.committed_in_current_term()
    }

    /// What a leader keeps of its heartbeat rounds for leases, for the
    /// simulator's checks (see [`LeaseRounds`]).
    pub fn lease_rounds(&self) -> LeaseRounds {
        let acknowledged = self.quorum_acknowledged_round();
        LeaseRounds {
            held: self.round_sent_ticks.len(),
            latest: self.read_round,
            acknowledged,
            acknowledged_sent_at: self
                .round_sent_ticks
                .iter()
                .find(|(round, _)| *round == acknowledged)
                .map(|(_, sent_at)| *sent_at),
            blocked: self.lease_blocked(),
            ticks: self.ticks,
        }
    }
}

/// A leader's heartbeat rounds as its leases see them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseRounds {
    /// Rounds whose send tick it keeps.
    pub held: usize,
    /// The latest round sent.
    pub latest: u64,
    /// The latest round a quorum acknowledged.
    pub acknowledged: u64,
    /// When that round was sent (in the core's ticks), if it is kept.
    pub acknowledged_sent_at: Option<u64>,
    /// Whether leases are off whatever the rounds say.
    pub blocked: bool,
    /// The core's ticks now.
    pub ticks: u64,
}
