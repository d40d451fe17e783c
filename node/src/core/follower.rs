//! The follower's side of replication: AppendEntries (Figure 2, receiver
//! implementation), heartbeats, snapshots, forwarded reads and TimeoutNow.

use super::message::{Message, MessageBody};
use super::raft::Raft;
use super::ready::{ImplausibleReason, ReadState};
use super::types::{LogIndex, NodeId, Snapshot, Term};

impl Raft {
    /// Handles a message in the follower role.
    pub(super) fn step_follower(&mut self, message: Message) {
        if let Some(reason) = self.implausible_at_follower(&message) {
            self.report_implausible(&message, reason);
            return;
        }
        let from = message.from;
        match message.body {
            MessageBody::AppendRequest {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
            } => {
                self.heard_from_leader(from);
                self.handle_append(from, prev_log_index, prev_log_term, entries, leader_commit);
            }
            MessageBody::HeartbeatRequest {
                leader_commit,
                read_round,
            } => {
                self.heard_from_leader(from);
                // The leader never sends a commit index beyond what this
                // follower is known to hold; clamp anyway.
                self.log.commit_to(leader_commit.min(self.log.last_index()));
                self.send(from, MessageBody::HeartbeatResponse { read_round });
            }
            MessageBody::InstallSnapshot { snapshot } => {
                self.heard_from_leader(from);
                self.handle_snapshot(from, snapshot);
            }
            MessageBody::TimeoutNow => {
                // The leader hands over: campaign now, skipping pre-vote and
                // letting voters skip stickiness.
                self.campaign(true);
            }
            MessageBody::ReadIndexResponse {
                context,
                index,
                refused,
            } => {
                if let Some(position) = self
                    .reads
                    .forwarded
                    .iter()
                    .position(|pending| pending.context == context)
                {
                    self.reads.forwarded.swap_remove(position);
                    if refused {
                        self.reads.dropped.push(context);
                    } else {
                        self.reads
                            .waiting_for_apply
                            .push(ReadState { context, index });
                        self.release_reads();
                    }
                }
            }
            MessageBody::ReadIndexRequest { context } => self.refuse_forwarded_read(from, context),
            _ => {}
        }
    }

    /// Why `message`, of this node's term, cannot come from an honest peer,
    /// if it cannot. Once this follower knows the leader of its term, only
    /// that leader sends leader messages in it (Election Safety, section
    /// 5.2), and answers to forwarded reads come from the node they were
    /// forwarded to: the current leader, since a change of leader drops
    /// them. When no leader is known (after a restart, say) any node may
    /// still be the term's leader.
    fn implausible_at_follower(&self, message: &Message) -> Option<ImplausibleReason> {
        let leader = self.leader?;
        if leader == message.from {
            return None;
        }
        match message.body {
            MessageBody::AppendRequest { .. }
            | MessageBody::HeartbeatRequest { .. }
            | MessageBody::InstallSnapshot { .. } => {
                Some(ImplausibleReason::SecondLeader { leader })
            }
            MessageBody::TimeoutNow => Some(ImplausibleReason::TimeoutNowFromNonLeader { leader }),
            MessageBody::ReadIndexResponse { context, .. } if self.reads.is_forwarded(context) => {
                Some(ImplausibleReason::ReadAnswerFromNonLeader { context, leader })
            }
            _ => None,
        }
    }

    fn heard_from_leader(&mut self, leader: NodeId) {
        self.election_elapsed = 0;
        if self.leader != Some(leader) {
            self.reads.drop_unconfirmed(self.id);
            self.leader = Some(leader);
        }
    }

    fn handle_append(
        &mut self,
        leader: NodeId,
        prev_log_index: LogIndex,
        prev_log_term: Term,
        entries: Vec<super::types::Entry>,
        leader_commit: LogIndex,
    ) {
        if prev_log_index < self.log.commit_index() {
            // Everything up to the commit index already matches the leader.
            let index = self.log.commit_index();
            self.send_after_persist(leader, Self::append_success(index));
            return;
        }
        let skip_truncate = self.bug_skip_truncate();
        match self
            .log
            .try_append(prev_log_index, prev_log_term, entries, skip_truncate)
        {
            Some(last_new) => {
                self.log.commit_to(leader_commit.min(last_new));
                // Rule 2: acknowledge only once the entries are durable.
                self.send_after_persist(leader, Self::append_success(last_new));
            }
            None => {
                let (hint_index, hint_term) = self.log.find_conflict_by_term(
                    prev_log_index.min(self.log.last_index()),
                    prev_log_term,
                );
                let body = MessageBody::AppendResponse {
                    index: prev_log_index,
                    rejected: true,
                    reject_hint_index: hint_index,
                    reject_hint_term: hint_term,
                };
                self.send(leader, body);
            }
        }
    }

    fn append_success(index: LogIndex) -> MessageBody {
        MessageBody::AppendResponse {
            index,
            rejected: false,
            reject_hint_index: LogIndex(0),
            reject_hint_term: Term(0),
        }
    }

    fn handle_snapshot(&mut self, leader: NodeId, snapshot: Snapshot) {
        let meta = snapshot.meta;
        if meta.index <= self.log.commit_index() {
            let index = self.log.commit_index();
            self.send_after_persist(leader, Self::append_success(index));
            return;
        }
        if self.log.matches(meta.index, meta.term) {
            // The log already holds the snapshot's last entry: no need to
            // throw the state machine away.
            self.log.commit_to(meta.index);
        } else {
            // Reads waiting for the snapshot's index are released only once
            // it is durable (see `release_reads`).
            self.log
                .install_snapshot(meta, (*snapshot.membership).clone());
            self.pending_snapshot = Some(snapshot);
        }
        self.send_after_persist(leader, Self::append_success(meta.index));
    }

    /// Answers a read forwarded to a node that cannot serve it.
    pub(super) fn refuse_forwarded_read(&mut self, requester: NodeId, context: u64) {
        let body = MessageBody::ReadIndexResponse {
            context,
            index: LogIndex(0),
            refused: true,
        };
        self.send(requester, body);
    }
}
