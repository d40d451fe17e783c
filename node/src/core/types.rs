//! The paper's vocabulary as types: terms, log indexes, node ids, entries
//! and the hard state that must survive a crash.

use std::fmt;

macro_rules! newtype_u64 {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub u64);

        impl $name {
            /// The raw number.
            pub fn get(self) -> u64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(formatter)
            }
        }
    };
}

newtype_u64!(
    /// A Raft term (section 5.1). Term 0 precedes every election.
    Term
);
newtype_u64!(
    /// A position in the log. The first entry ever is at index 1; index 0
    /// stands for "before the log".
    LogIndex
);
newtype_u64!(
    /// A node's identity within its cluster. 0 is never a valid node id.
    NodeId
);

impl Term {
    /// The next term.
    pub fn next(self) -> Term {
        Term(self.0 + 1)
    }
}

impl LogIndex {
    /// The index after this one.
    pub fn next(self) -> LogIndex {
        LogIndex(self.0 + 1)
    }

    /// The index before this one (0 stays 0).
    pub fn prev(self) -> LogIndex {
        LogIndex(self.0.saturating_sub(1))
    }
}

/// What a log entry carries.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum EntryPayload {
    /// The empty entry a new leader appends so that it can commit entries
    /// of earlier terms (section 5.4.2, section 8).
    Blank,
    /// An opaque command for the state machine.
    Command(Vec<u8>),
}

/// One log entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Entry {
    /// Term of the leader that created the entry.
    pub term: Term,
    /// Position of the entry in the log.
    pub index: LogIndex,
    /// What the entry carries.
    pub payload: EntryPayload,
}

impl Entry {
    /// Bytes the entry counts against `message_bytes_max`: its payload plus
    /// a fixed overhead for index, term and framing.
    pub fn size_bytes(&self) -> usize {
        const OVERHEAD_BYTES: usize = 24;
        OVERHEAD_BYTES
            + match &self.payload {
                EntryPayload::Blank => 0,
                EntryPayload::Command(data) => data.len(),
            }
    }
}

/// The state that must be durable before a node answers anyone
/// (Figure 2, "persistent state on all servers").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HardState {
    /// Latest term this node has seen.
    pub term: Term,
    /// Candidate that received this node's vote in `term`, if any.
    pub voted_for: Option<NodeId>,
}

/// Where the compacted prefix of the log ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SnapshotMeta {
    /// Last index covered by the snapshot (0 when nothing is compacted).
    pub index: LogIndex,
    /// Term of the entry at `index` (0 when nothing is compacted).
    pub term: Term,
}

/// A state machine snapshot travelling to a follower whose needed entries
/// were compacted away.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Snapshot {
    /// What the snapshot covers.
    pub meta: SnapshotMeta,
    /// The state machine's serialized state, attached by the leader's
    /// driver; the core never looks inside.
    pub data: Vec<u8>,
}

/// A node's role (section 5.1, plus the pre-vote phase of section 9.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Asks whether it could win an election, without disturbing the term.
    PreCandidate,
    /// Campaigns in a new term.
    Candidate,
    /// Leads its term.
    Leader,
}

impl fmt::Display for Role {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Role::Follower => "follower",
            Role::PreCandidate => "pre-candidate",
            Role::Candidate => "candidate",
            Role::Leader => "leader",
        };
        formatter.write_str(name)
    }
}
