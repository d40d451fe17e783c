//! Elections (section 5.2), with the pre-vote phase of section 9.6: a node
//! first asks whether it could win without raising its term, so a node that
//! was cut off cannot force the cluster into a new term when it returns.

use super::message::{Message, MessageBody};
use super::quorum::{membership_vote_result, VoteResult};
use super::raft::Raft;
use super::types::{Entry, EntryPayload, Role};

impl Raft {
    /// Starts a campaign: a pre-vote round first unless disabled or the
    /// campaign follows a leadership transfer.
    pub(super) fn campaign(&mut self, leadership_transfer: bool) {
        if self.config.pre_vote && !leadership_transfer {
            self.become_pre_candidate();
        } else {
            self.become_candidate(leadership_transfer);
        }
    }

    fn become_pre_candidate(&mut self) {
        self.reads.drop_unconfirmed(self.id);
        self.role = Role::PreCandidate;
        self.leader = None;
        self.reset_role_state();
        self.votes.insert(self.id, true);
        if self.tally() == VoteResult::Won {
            self.become_candidate(false);
            return;
        }
        let body = self.vote_request(true, false);
        for peer in self.voting_peers() {
            // Pre-votes change no state, so they need not wait for a write.
            self.send_with_term(peer, self.term.next(), body.clone());
        }
    }

    fn become_candidate(&mut self, leadership_transfer: bool) {
        self.reads.drop_unconfirmed(self.id);
        self.term = self.term.next();
        self.voted_for = None;
        self.set_vote(self.id);
        self.role = Role::Candidate;
        self.leader = None;
        self.reset_role_state();
        self.votes.insert(self.id, true);
        if self.tally() == VoteResult::Won {
            self.term_durable_pending = true;
            self.become_leader();
            return;
        }
        let body = self.vote_request(false, leadership_transfer);
        for peer in self.voting_peers() {
            // The candidate's own term and vote must be durable before it
            // asks: after a crash it must not vote for someone else in it.
            self.send_after_persist(peer, body.clone());
        }
    }

    fn vote_request(&self, pre_vote: bool, leadership_transfer: bool) -> MessageBody {
        MessageBody::VoteRequest {
            pre_vote,
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
            leadership_transfer,
        }
    }

    fn tally(&self) -> VoteResult {
        membership_vote_result(self.membership(), &self.votes)
    }

    /// Becomes leader of the current term and appends a blank entry, whose
    /// commit commits everything before it (section 5.4.2 and 8).
    pub(super) fn become_leader(&mut self) {
        assert_eq!(
            self.role,
            Role::Candidate,
            "node {} term {}: only a candidate can win",
            self.id,
            self.term
        );
        self.role = Role::Leader;
        self.leader = Some(self.id);
        self.reset_role_state();
        let last_index = self.log.last_index();
        self.sync_progress();
        // Appended directly rather than proposed: `uncommitted_entries_max`
        // pushes back on clients, and a node that followed a leader far
        // ahead of the commit index it heard of may hold more uncommitted
        // entries than that, yet must still be able to lead.
        self.log.append(vec![Entry {
            term: self.term,
            index: last_index.next(),
            payload: EntryPayload::Blank,
        }]);
        self.replication_pending = true;
        // A single-node cluster may already hold a quorum.
        self.maybe_commit();
    }

    /// Handles a message in the pre-candidate or candidate role.
    pub(super) fn step_candidate(&mut self, message: Message) {
        match message.body {
            MessageBody::AppendRequest { .. }
            | MessageBody::HeartbeatRequest { .. }
            | MessageBody::InstallSnapshot { .. } => {
                // Someone won this term: follow it.
                self.become_follower(self.term, Some(message.from));
                self.step_follower(message);
            }
            MessageBody::VoteResponse { pre_vote, granted } => {
                let expected_pre_vote = self.role == Role::PreCandidate;
                if pre_vote != expected_pre_vote {
                    return;
                }
                self.votes.entry(message.from).or_insert(granted);
                match self.tally() {
                    VoteResult::Won if pre_vote => self.become_candidate(false),
                    VoteResult::Won => self.become_leader(),
                    VoteResult::Lost => self.become_follower(self.term, None),
                    VoteResult::Pending => {}
                }
            }
            MessageBody::ReadIndexRequest { context } => {
                self.refuse_forwarded_read(message.from, context)
            }
            _ => {}
        }
    }
}
