//! Safety and liveness checkers, one property per file, each citing the
//! section of the Raft paper (Ongaro and Ousterhout, "In Search of an
//! Understandable Consensus Algorithm", extended version) it enforces.
//!
//! The per-step properties are checked incrementally: the world reports
//! each event (a node became leader, appended entries, advanced its commit
//! index, applied an entry, restarted) and each checker compares it with
//! what it has recorded so far. That is equivalent to re-checking every
//! node's whole state after every step, at a cost proportional to the
//! events instead of the state.

pub mod apply_after_durable;
pub mod check_quorum;
pub mod client_outcomes;
pub mod clock_ticks;
pub mod covered_applies;
pub mod crash_recovery;
pub mod durability;
pub mod durable_log;
pub mod election_safety;
pub mod election_timer;
pub mod exactly_once;
pub mod forwarded_reads;
pub mod gauges;
pub mod held_requests;
pub mod honest_peers;
pub mod idle_traffic;
pub mod index_monotonicity;
pub mod join_handshake;
pub mod leader_commit_rule;
pub mod leader_completeness;
pub mod leader_promptness;
pub mod leader_stickiness;
pub mod lease_exclusivity;
pub mod lease_expiry;
pub mod lease_rounds;
pub mod linearizability;
pub mod liveness;
pub mod log_matching;
pub mod membership_safety;
pub mod message_size;
pub mod prompt_answers;
pub mod prompt_applies;
pub mod prompt_persistence;
pub mod read_index_safety;
pub mod read_liveness;
pub mod replica_rows;
pub mod revisions;
pub mod single_vote;
pub mod stale_reads;
pub mod state_machine_safety;
pub mod storage_hand_off;
pub mod term_settling;
pub mod transfer_liveness;
pub mod wake_up;
pub mod watch_order;

use raftgres::core::EntryPayload;

use crate::trace::Fnv1a;

/// A property that did not hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The checker's name (its file's name).
    pub checker: &'static str,
    /// When it was detected.
    pub tick: u64,
    /// What went wrong, naming nodes, terms and indexes.
    pub message: String,
}

/// A stable digest of an entry's payload, so checkers compare entries
/// without keeping copies of them.
pub fn payload_hash(payload: &EntryPayload) -> u64 {
    match payload {
        EntryPayload::Blank => 0x0062_6c61_6e6b,
        EntryPayload::Command(bytes) => Fnv1a::hash_bytes(bytes),
        // Ordered sets and maps: the debug form is the same wherever the
        // membership is.
        EntryPayload::Membership(membership) => {
            Fnv1a::hash_bytes(format!("{membership:?}").as_bytes())
        }
    }
}

/// Logs for the checkers' unit tests.
#[cfg(test)]
pub(crate) mod test_logs {
    use raftgres::core::log::RaftLog;
    use raftgres::core::{Entry, EntryPayload, LogIndex, Membership, NodeId, SnapshotMeta, Term};

    /// Node 1's log whose entry terms are `terms`, everything applied when
    /// `all_applied`.
    pub(crate) fn log_with_terms(terms: &[u64], all_applied: bool) -> RaftLog {
        let entries = terms
            .iter()
            .enumerate()
            .map(|(offset, term)| Entry {
                term: Term(*term),
                index: LogIndex(offset as u64 + 1),
                payload: EntryPayload::Blank,
            })
            .collect();
        let applied = if all_applied {
            LogIndex(terms.len() as u64)
        } else {
            LogIndex(0)
        };
        RaftLog::restore(
            NodeId(1),
            SnapshotMeta::default(),
            Membership::new([NodeId(1)]),
            entries,
            applied,
        )
    }
}
