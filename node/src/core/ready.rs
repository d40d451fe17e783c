//! What the core hands back to its driver, and what it reports about itself.

use std::fmt;

use super::message::Message;
use super::progress::ProgressState;
use super::types::{
    Entry, HardState, LogIndex, Membership, NodeId, Role, Snapshot, SnapshotMeta, Term,
};
use super::validate::InvalidMessage;

/// A read that is now safe to serve: the state machine has applied at least
/// `index`, which a quorum confirmed was the commit index when the read
/// was requested.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReadState {
    /// The id the driver gave the read.
    pub context: u64,
    /// The read must observe the state machine at or after this index.
    pub index: LogIndex,
}

/// One batch of work for the driver. See the driver's obligations in the
/// module documentation of [`crate::core`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ready {
    /// The hard state, when it changed; persist it with `entries`.
    pub hard_state: Option<HardState>,
    /// A leader's snapshot to install (state machine and log reset) before
    /// persisting `entries`.
    pub snapshot: Option<Snapshot>,
    /// Entries to persist. If the log already holds entries at or after
    /// `entries[0].index`, delete them first, in the same transaction.
    pub entries: Vec<Entry>,
    /// Messages that may be sent right away.
    pub messages: Vec<Message>,
    /// Messages that may be sent only once this batch and every earlier one
    /// is durable (vote grants, append acknowledgements).
    pub messages_after_persist: Vec<Message>,
    /// Committed entries to apply, in order.
    pub committed_entries: Vec<Entry>,
    /// Reads that are safe to serve now.
    pub reads: Vec<ReadState>,
    /// Reads that will never become safe here (leadership changed): fail
    /// them so the client retries.
    pub reads_dropped: Vec<u64>,
}

impl Ready {
    /// The (index, term) to report with `Raft::persisted` once this batch is
    /// durable: its last entry, or the installed snapshot.
    pub fn persist_point(&self) -> Option<(LogIndex, Term)> {
        if let Some(last) = self.entries.last() {
            return Some((last.index, last.term));
        }
        self.snapshot
            .as_ref()
            .map(|snapshot| (snapshot.meta.index, snapshot.meta.term))
    }
}

/// A peer message the core dropped because no honest peer could have sent
/// it: either it broke the protocol's invariants on its own (see
/// [`crate::core::validate`]) or it contradicted what this node knows (an
/// acknowledgement of an index this leader never sent, a second leader in
/// one term). The message changed nothing; the driver logs the report and
/// counts it, since it means a bug in a peer or someone forging messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImplausibleMessage {
    /// The sender the message claims.
    pub from: NodeId,
    /// The term the message claims.
    pub term: Term,
    /// The message kind, as `MessageBody::kind` names it.
    pub kind: &'static str,
    /// Why it cannot have come from an honest peer.
    pub reason: ImplausibleReason,
}

impl fmt::Display for ImplausibleMessage {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "dropped a {} message from node {} at term {}: {}",
            self.kind, self.from, self.term, self.reason
        )
    }
}

/// Why a message was judged implausible.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ImplausibleReason {
    /// The message breaks the protocol's invariants on its own.
    #[error(transparent)]
    Invalid(#[from] InvalidMessage),
    /// The message is addressed to another node.
    #[error("it is addressed to node {to}, not to this node {node}")]
    WrongRecipient {
        /// The addressee.
        to: NodeId,
        /// This node.
        node: NodeId,
    },
    /// The sender acts as leader of a term that already has a different
    /// leader (Election Safety, section 5.2: at most one per term).
    #[error("the sender acts as leader of a term whose leader is node {leader}; one term never has two leaders")]
    SecondLeader {
        /// The leader this node knows for the term.
        leader: NodeId,
    },
    /// A TimeoutNow from a node other than the term's leader.
    #[error("the sender asks this node to campaign, but only the term's leader, node {leader}, hands over leadership")]
    TimeoutNowFromNonLeader {
        /// The leader this node knows for the term.
        leader: NodeId,
    },
    /// A whole snapshot in one message: snapshots travel only as chunks
    /// streamed from the leader's view, staged before they are installed.
    #[error("it carries a whole snapshot, but snapshots travel only as chunks")]
    SnapshotNotStreamed,
    /// An append acknowledgement beyond this leader's log.
    #[error("the sender acknowledges index {index}, beyond this leader's last index {last_index}; no request of this leader covered it")]
    AcknowledgedBeyondLog {
        /// The acknowledged index.
        index: LogIndex,
        /// This leader's last index.
        last_index: LogIndex,
    },
    /// An append rejection for an index this leader never sent.
    #[error("the sender rejects an append after index {index}, beyond this leader's last index {last_index}; this leader never sent it")]
    RejectedBeyondLog {
        /// The rejected index.
        index: LogIndex,
        /// This leader's last index.
        last_index: LogIndex,
    },
    /// A heartbeat acknowledgement for a round this leader has not sent.
    #[error("the sender acknowledges heartbeat round {read_round}, but this leader has sent rounds only up to {sent_round}")]
    FutureReadRound {
        /// The acknowledged round.
        read_round: u64,
        /// The latest round this leader sent.
        sent_round: u64,
    },
    /// An answer to a forwarded read from a node it was not forwarded to.
    #[error(
        "the sender answers read {context}, which this node forwarded to its leader, node {leader}"
    )]
    ReadAnswerFromNonLeader {
        /// The read's id.
        context: u64,
        /// The leader the read was forwarded to.
        leader: NodeId,
    },
}

/// A leader's view of one peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    /// The peer.
    pub id: NodeId,
    /// Highest index known replicated on it.
    pub match_index: LogIndex,
    /// Next index to send it.
    pub next_index: LogIndex,
    /// How the leader sends to it.
    pub state: ProgressState,
    /// Whether it answered since the last check-quorum round.
    pub recent_active: bool,
    /// Whether flow control holds back further appends to it (a probe
    /// unanswered, a full window of messages in flight, or a snapshot on
    /// its way).
    pub paused: bool,
}

/// A snapshot of the core's state, for status APIs, tests and checkers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// This node.
    pub id: NodeId,
    /// Current role.
    pub role: Role,
    /// Current term.
    pub term: Term,
    /// Vote in the current term.
    pub voted_for: Option<NodeId>,
    /// Known leader of the current term.
    pub leader: Option<NodeId>,
    /// Highest committed index.
    pub commit_index: LogIndex,
    /// Highest applied index.
    pub applied_index: LogIndex,
    /// Highest durable index.
    pub durable_index: LogIndex,
    /// Last log index.
    pub last_index: LogIndex,
    /// Last log term.
    pub last_term: Term,
    /// The compacted prefix.
    pub snapshot: SnapshotMeta,
    /// The membership in force (the latest in the log).
    pub membership: Membership,
    /// Index of the entry that set `membership` (the snapshot's index when
    /// no entry did); committed once `commit_index` reaches it.
    pub membership_index: LogIndex,
    /// Peers' progress (leader only; empty otherwise).
    pub peers: Vec<PeerStatus>,
    /// Ticks this core has been given since it was created.
    pub ticks: u64,
    /// The election timeout drawn for the current period, in ticks.
    /// Invariant: in `election_ticks_min..election_ticks_max`.
    pub election_timeout: u64,
    /// Ticks since this node last heard from its leader, granted a vote or
    /// started a campaign (a leader: since its last check-quorum round).
    pub election_elapsed: u64,
    /// Leader: the latest heartbeat round sent (0 otherwise).
    pub read_round: u64,
    /// Leader: the latest heartbeat round a quorum acknowledged (0
    /// otherwise). A read waits for a round not sent yet only while
    /// this is below `read_round`.
    pub read_round_acknowledged: u64,
    /// Leader: the latest heartbeat round a waiting read needs acknowledged
    /// (0 when no read waits for a round).
    pub read_round_awaited: u64,
}
