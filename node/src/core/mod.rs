//! The pure Raft core: no clock, no I/O, no async, no randomness that was
//! not handed in. The same code runs in the production node and in the
//! deterministic simulator.
//!
//! Events in, commands out:
//!
//! ```text
//!           tick / step(message) / propose / read_index /
//!           transfer_leadership / persisted / applied
//!  driver ------------------------------------------------> Raft
//!    ^                                                        |
//!    |   Ready { hard_state, snapshot, entries,               |
//!    |           messages, messages_after_persist,            |
//!    |           committed_entries, reads, reads_dropped }    |
//!    +--------------------------------------------------------+
//! ```
//!
//! The driver's obligations, for every `Ready` it takes, in order:
//!
//! 1. Send `messages` right away (a leader replicates while its own write
//!    is in flight).
//! 2. Persist, in one atomic write, `snapshot` (state machine and log
//!    reset), then `entries` (first deleting any stored entries at or
//!    after `entries[0].index`) and `hard_state`. Writes of successive
//!    batches complete in the order the batches were taken.
//! 3. Once that write and every earlier one is durable, call
//!    `persisted(index, term)` with `Ready::persist_point()`, then send
//!    `messages_after_persist` (vote grants and append acknowledgements
//!    claim durability).
//! 4. Apply `committed_entries` in order, recording the applied index in
//!    the same transaction as the state machine's changes, then call
//!    `applied(index)`.
//! 5. Serve `reads` against the state machine; fail `reads_dropped`.
//!
//! A failed write must not be followed by step 3: the node then stays
//! silent (it neither votes nor acknowledges) until it restarts from
//! what is durable.
//!
//! Peer messages are untrusted input. `step` first runs
//! [`validate_message`] and then checks the message against this node's
//! state; a message no honest peer could have sent changes nothing and is
//! reported instead. The driver takes those reports with
//! `Raft::take_implausible` (log each one) and counts them with
//! `Raft::implausible_total` (a metric). The gRPC boundary may call
//! `validate_message` itself to refuse a message before it is queued.
//!
//! Modules: [`types`] (terms, indexes, entries), [`message`], [`config`],
//! [`log`] (the log and its not-yet-durable tail), [`progress`] (per-follower
//! flow control), [`quorum`] (majority arithmetic), [`read_only`] (ReadIndex),
//! [`ready`] (the output batch and reports of implausible messages),
//! [`validate`] (the stateless check of every peer message), and the roles in `raft.rs`, `leader.rs`,
//! `candidate.rs`, `follower.rs`.

mod candidate;
pub mod config;
mod follower;
mod leader;
pub mod log;
pub mod message;
pub mod progress;
pub mod quorum;
mod raft;
pub mod read_only;
pub mod ready;
pub mod rng;
pub mod types;
pub mod validate;

#[cfg(feature = "planted-bugs")]
pub use config::PlantedBug;
pub use config::{Config, ConfigError};
pub use leader::{LeaseRounds, MembershipChange, MembershipError, ReadError};
pub use message::{Message, MessageBody, SnapshotChunk};
pub use raft::{heard_from_outside, DurableState, ProposeError, Raft, TransferError};
pub use ready::{ImplausibleMessage, ImplausibleReason, PeerStatus, ReadState, Ready, Status};
pub use types::{
    Entry, EntryPayload, HardState, LogIndex, Membership, NodeId, Role, Snapshot, SnapshotMeta,
    Term,
};
pub use validate::{validate_message, InvalidMessage, LOG_INDEX_MAX, TERM_MAX};

#[cfg(test)]
mod adversary_tests;
#[cfg(test)]
mod membership_tests;
#[cfg(test)]
mod test_cluster;
#[cfg(test)]
mod tests;
