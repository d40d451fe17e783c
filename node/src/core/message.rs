//! Messages between nodes. They map one to one onto `raftgres.v1.RaftMessage`
//! in the proto crate; the core itself knows nothing of the wire.

use super::types::{Entry, LogIndex, NodeId, Snapshot, Term};

/// One Raft message.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Message {
    /// Sender.
    pub from: NodeId,
    /// Receiver.
    pub to: NodeId,
    /// The sender's current term. For a pre-vote request (and a granted
    /// pre-vote response) the term the sender would campaign in.
    pub term: Term,
    /// What the message says.
    pub body: MessageBody,
}

/// The kinds of Raft messages.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MessageBody {
    /// RequestVote (section 5.2) or PreVote (section 9.6).
    VoteRequest {
        /// A pre-vote: the receiver changes no state.
        pre_vote: bool,
        /// Index of the candidate's last log entry.
        last_log_index: LogIndex,
        /// Term of the candidate's last log entry.
        last_log_term: Term,
        /// The campaign follows a TimeoutNow: voters skip leader stickiness.
        leadership_transfer: bool,
    },
    /// Answer to a `VoteRequest`.
    VoteResponse {
        /// Answers a pre-vote.
        pre_vote: bool,
        /// Whether the vote is granted.
        granted: bool,
    },
    /// AppendEntries (section 5.3).
    AppendRequest {
        /// Index of the entry just before `entries`.
        prev_log_index: LogIndex,
        /// Term of the entry at `prev_log_index`.
        prev_log_term: Term,
        /// Entries to append, contiguous from `prev_log_index + 1`.
        entries: Vec<Entry>,
        /// The leader's commit index.
        leader_commit: LogIndex,
    },
    /// Answer to an `AppendRequest` or `InstallSnapshot`.
    AppendResponse {
        /// On success, the index up to which the follower's log matches the
        /// leader's and is durable. On rejection, the refused `prev_log_index`.
        index: LogIndex,
        /// Whether the request was refused because the logs did not match.
        rejected: bool,
        /// On rejection: the last index whose term is at most
        /// `reject_hint_term` in the follower's log, for fast backtracking.
        reject_hint_index: LogIndex,
        /// On rejection: the term at `reject_hint_index`.
        reject_hint_term: Term,
    },
    /// Keeps followers from campaigning, carries the commit index and
    /// confirms leadership for a read round.
    HeartbeatRequest {
        /// `min(leader commit, follower's match index)`: never beyond what
        /// the follower is known to hold.
        leader_commit: LogIndex,
        /// The read round this heartbeat confirms.
        read_round: u64,
    },
    /// Answer to a heartbeat.
    HeartbeatResponse {
        /// Echo of the heartbeat's read round.
        read_round: u64,
    },
    /// Start an election now (leadership transfer, section 3.10 of the
    /// Raft dissertation).
    TimeoutNow,
    /// The leader's snapshot, for a follower that needs compacted entries.
    InstallSnapshot {
        /// The snapshot; the core emits it with empty `data` and the leader's
        /// driver attaches the state machine bytes for `snapshot.meta`.
        snapshot: Snapshot,
    },
    /// A follower forwards a linearizable read to its leader.
    ReadIndexRequest {
        /// The follower's read id, echoed back.
        context: u64,
    },
    /// The leader's answer: serve the read once applied reaches `index`.
    ReadIndexResponse {
        /// The follower's read id.
        context: u64,
        /// The leader's commit index confirmed by a quorum (0 if refused).
        index: LogIndex,
        /// The leader could not serve the read (it is stepping down).
        refused: bool,
    },
}

impl MessageBody {
    /// A short name for traces.
    pub fn kind(&self) -> &'static str {
        match self {
            MessageBody::VoteRequest { pre_vote: true, .. } => "PreVote",
            MessageBody::VoteRequest { .. } => "Vote",
            MessageBody::VoteResponse { pre_vote: true, .. } => "PreVoteResp",
            MessageBody::VoteResponse { .. } => "VoteResp",
            MessageBody::AppendRequest { .. } => "App",
            MessageBody::AppendResponse { .. } => "AppResp",
            MessageBody::HeartbeatRequest { .. } => "Heartbeat",
            MessageBody::HeartbeatResponse { .. } => "HeartbeatResp",
            MessageBody::TimeoutNow => "TimeoutNow",
            MessageBody::InstallSnapshot { .. } => "Snapshot",
            MessageBody::ReadIndexRequest { .. } => "ReadIndex",
            MessageBody::ReadIndexResponse { .. } => "ReadIndexResp",
        }
    }
}
