//! Messages between nodes. They map one to one onto `raftgres.v1.RaftMessage`
//! in the proto crate; the core itself knows nothing of the wire.

use super::types::{Entry, LogIndex, Membership, NodeId, Snapshot, SnapshotMeta, Term};

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
    /// Never on the wire: a leader's core emits it to say that `to` needs a
    /// snapshot (its pipeline then streams one, see `SnapshotChunk`), and a
    /// follower's pipeline hands it to its core once every chunk of the
    /// snapshot is durably staged.
    InstallSnapshot {
        /// What the snapshot covers.
        snapshot: Snapshot,
    },
    /// One chunk of a snapshot the leader streams from an MVCC view of its
    /// state machine. Handled by the pipelines, never by the core.
    SnapshotChunk(Box<SnapshotChunk>),
    /// A follower's answer to snapshot chunks: every chunk of the transfer
    /// below `next_seq` is durably staged (0: start the transfer over).
    /// Handled by the pipelines, never by the core.
    SnapshotChunkAck {
        /// The transfer: the leader's view.
        view: u64,
        /// The snapshot's index.
        index: LogIndex,
        /// The first chunk the follower still needs.
        next_seq: u64,
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
            MessageBody::SnapshotChunk(_) => "Chunk",
            MessageBody::SnapshotChunkAck { .. } => "ChunkAck",
            MessageBody::ReadIndexRequest { .. } => "ReadIndex",
            MessageBody::ReadIndexResponse { .. } => "ReadIndexResp",
        }
    }
}

/// One chunk of a streamed snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SnapshotChunk {
    /// The transfer: the leader's view of its state machine, unique to
    /// the leader's incarnation. Chunks of one view make one snapshot.
    pub view: u64,
    /// What the snapshot covers: the applied index (and its term) the
    /// view saw.
    pub meta: SnapshotMeta,
    /// The membership in force at `meta.index`.
    pub membership: Membership,
    /// Position in the transfer, from 0.
    pub seq: u64,
    /// Rows of the view, as the node's exporter encodes them.
    pub data: Vec<u8>,
    /// The snapshot's last chunk.
    pub last: bool,
    /// CRC-32 of `data`.
    pub checksum: u32,
    /// CRC-32 of the data of every chunk of the transfer through this one
    /// (on the last chunk, of the whole snapshot).
    pub running: u32,
}

impl SnapshotChunk {
    /// CRC-32 (IEEE) of `data`, continuing from `running` (0 to start).
    pub fn crc(running: u32, data: &[u8]) -> u32 {
        let mut hasher = crc32fast::Hasher::new_with_initial(running);
        hasher.update(data);
        hasher.finalize()
    }
}
