//! The paper's vocabulary as types: terms, log indexes, node ids, entries
//! and the hard state that must survive a crash.

use std::collections::{BTreeMap, BTreeSet};
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

impl NodeId {
    /// The largest node id: Postgres keeps node ids (a node's own, its
    /// vote) in `bigint` columns. A larger id is refused wherever one
    /// enters, in the configuration, a membership change or a peer
    /// message, rather than failing the node's storage when it votes.
    pub const MAX: NodeId = NodeId(i64::MAX as u64);

    /// Whether this can be a node's id: from 1 to [`NodeId::MAX`].
    pub fn is_valid(self) -> bool {
        self.0 != 0 && self <= NodeId::MAX
    }
}

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
    /// The cluster's membership from this entry on (section 6 of the
    /// paper, joint consensus; it takes effect when appended, committed
    /// or not). The state machine never sees it. Boxed: entries and
    /// messages are moved and copied a lot, and a membership is large.
    Membership(Box<Membership>),
}

/// Who the cluster's members are: the voters whose majorities decide,
/// and learners that receive the log without voting. While a change of
/// voters is in flight the configuration is joint (the Raft
/// dissertation, section 4.3): every decision (an election, a commit, a
/// read's confirmation, a lease, check-quorum) then needs a majority of
/// `voters` and a majority of `voters_outgoing`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Membership {
    /// The voters of the configuration being moved to (or of the only
    /// configuration).
    pub voters: BTreeSet<NodeId>,
    /// The voters being moved from, while a change is in flight; empty
    /// otherwise.
    pub voters_outgoing: BTreeSet<NodeId>,
    /// Members that receive the log but neither vote nor count towards a
    /// majority. Invariant: disjoint from both voter sets.
    pub learners: BTreeSet<NodeId>,
    /// Where members' peer APIs listen, as the operator gave them when
    /// adding each (carried, never interpreted, by the core). A member
    /// without one is reached at the address its peers' configuration
    /// files give.
    pub addresses: BTreeMap<NodeId, String>,
}

impl Membership {
    /// A plain (not joint) membership of `voters`, without learners.
    pub fn new(voters: impl IntoIterator<Item = NodeId>) -> Membership {
        Membership {
            voters: voters.into_iter().collect(),
            ..Membership::default()
        }
    }

    /// Whether a change of voters is in flight.
    pub fn is_joint(&self) -> bool {
        !self.voters_outgoing.is_empty()
    }

    /// Whether `id` votes (in either configuration while joint).
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.voters_outgoing.contains(&id)
    }

    /// Whether `id` is a member: a voter of either configuration or a
    /// learner.
    pub fn contains(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.learners.contains(&id)
    }

    /// Every member, in id order, each once.
    pub fn members(&self) -> BTreeSet<NodeId> {
        let mut members = self.voters.clone();
        members.extend(self.voters_outgoing.iter().copied());
        members.extend(self.learners.iter().copied());
        members
    }

    /// Every voter of either configuration, in id order, each once.
    pub fn all_voters(&self) -> BTreeSet<NodeId> {
        let mut voters = self.voters.clone();
        voters.extend(self.voters_outgoing.iter().copied());
        voters
    }

    /// Why this membership cannot be in force, if it cannot: no voters,
    /// a node id 0, a learner that also votes, or an address for a node
    /// that is not a member.
    pub fn invalid_reason(&self) -> Option<String> {
        if self.voters.is_empty() {
            return Some("a membership needs at least one voter".into());
        }
        if self.members().contains(&NodeId(0)) {
            return Some("node id 0 cannot be a member".into());
        }
        if let Some(id) = self.members().into_iter().find(|id| *id > NodeId::MAX) {
            return Some(format!(
                "node id {id} is above the largest node id {}",
                NodeId::MAX
            ));
        }
        if let Some(learner) = self.learners.iter().find(|id| self.is_voter(**id)) {
            return Some(format!("node {learner} is both a voter and a learner"));
        }
        if let Some(id) = self.addresses.keys().find(|id| !self.contains(**id)) {
            return Some(format!(
                "an address is given for node {id}, which is not a member"
            ));
        }
        None
    }

    /// Bytes the membership counts against `message_bytes_max`.
    pub fn size_bytes(&self) -> usize {
        8 * (self.voters.len() + self.voters_outgoing.len() + self.learners.len())
            + self
                .addresses
                .values()
                .map(|address| 8 + address.len())
                .sum::<usize>()
    }
}

impl fmt::Display for Membership {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |set: &BTreeSet<NodeId>| {
            set.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        write!(formatter, "voters {{{}}}", list(&self.voters))?;
        if self.is_joint() {
            write!(formatter, " joint with {{{}}}", list(&self.voters_outgoing))?;
        }
        if !self.learners.is_empty() {
            write!(formatter, " learners {{{}}}", list(&self.learners))?;
        }
        Ok(())
    }
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
                EntryPayload::Membership(membership) => membership.size_bytes(),
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

/// A snapshot of the state machine for a follower whose needed entries
/// were compacted away: what the core knows of it. The rows themselves
/// never pass through the core: the leader's pipeline streams them in
/// chunks from an MVCC view of its state machine, the follower's stages
/// them durably and hands its core the snapshot once all are staged.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Snapshot {
    /// What the snapshot covers.
    pub meta: SnapshotMeta,
    /// The membership in force at `meta.index` (boxed, as in
    /// `EntryPayload::Membership`).
    pub membership: Box<Membership>,
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
