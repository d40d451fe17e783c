//! What the core hands back to its driver, and what it reports about itself.

use super::message::Message;
use super::progress::ProgressState;
use super::types::{Entry, HardState, LogIndex, NodeId, Role, Snapshot, SnapshotMeta, Term};

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
    /// Whether the batch holds nothing.
    pub fn is_empty(&self) -> bool {
        self == &Ready::default()
    }

    /// Whether the driver has anything to write before sending
    /// `messages_after_persist`.
    pub fn needs_persist(&self) -> bool {
        self.hard_state.is_some() || self.snapshot.is_some() || !self.entries.is_empty()
    }

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
    /// Peers' progress (leader only; empty otherwise).
    pub peers: Vec<PeerStatus>,
}
