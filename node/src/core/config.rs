//! The core's configuration, validated once at construction.

use super::types::NodeId;

/// A bug planted on purpose so the simulator can prove its checkers fail.
/// Compiled only with the `planted-bugs` feature, which only the simulator
/// enables.
#[cfg(feature = "planted-bugs")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PlantedBug {
    /// Grant votes without the up-to-date-log check (breaks section 5.4.1).
    VoteWithoutLogCheck,
    /// Commit entries of an earlier term by counting replicas (breaks
    /// section 5.4.2, Figure 8).
    CommitPreviousTerm,
    /// Send vote grants before the vote is durable (breaks the rule that
    /// persistent state is updated before responding).
    VoteBeforeDurable,
    /// Append new entries without truncating a conflicting suffix (breaks
    /// step 3 of AppendEntries in Figure 2).
    SkipTruncate,
    /// Serve linearizable reads without confirming leadership (breaks
    /// section 8's read rule).
    ReadWithoutConfirmation,
    /// Forget the vote when stepping down to follower within a term, so
    /// the node may vote again in that term (breaks section 5.2: at most
    /// one vote per term, and Figure 2's persistent `votedFor`).
    ForgetVoteOnStepDown,
    /// Hand committed entries to the state machine before they are durable
    /// on this node (breaks the driver's obligation 4 and Figure 2's rule
    /// that state is persisted before it is acted on).
    ApplyBeforeDurable,
    /// Confirm a read with the latest heartbeat round a quorum already
    /// acknowledged, instead of a round sent after the read arrived (breaks
    /// section 8: the leader must exchange heartbeats with a majority after
    /// the read arrives).
    ReadConfirmedByOldRound,
    /// A peer link stops for good when its stream ends instead of
    /// connecting again (the pipeline's link policy, driven by the
    /// simulator's network; the core itself ignores it).
    PeerLinkGivesUp,
    /// The pipeline drops the ticks a stalled or paused event loop missed
    /// (as a timer with `MissedTickBehavior::Delay` does), so a leader's
    /// lease, counted in ticks, outlives wall-clock time (issue 9, item 1).
    LeaseByTickCount,
    /// Serve lease reads in a term in which a TimeoutNow was sent: a late
    /// TimeoutNow elects its target while the old leader still believes
    /// its lease (issue 9, item 2).
    LeaseAfterTimeoutNow,
    /// Expire sessions only when an apply batch crosses an expiry point,
    /// with the cutoff taken from the batch's last index, so replicas with
    /// different batches expire different sessions (issue 9, item 3).
    SessionExpiryAtBatchEnd,
    /// Snapshot install and the hard state of the same write carried out
    /// as two writes, the snapshot first: a crash between them leaves a
    /// snapshot term above the stored term (issue 9, item 5).
    SnapshotBeforeHardState,
    /// Proposals a leader was waiting on stay waiting when it steps down,
    /// and those an installed snapshot covers are reported as lost, though
    /// they may be committed inside it (issue 9, item 6).
    CoveredProposalsLost,
    /// Every incarnation numbers its forwarded reads from 1, so an answer
    /// to a read from before a restart can release a new read at an old
    /// index (issue 9, item 7).
    ReadContextsRestart,
    /// The read service serves a read released at the applied index the
    /// pipeline counted from a state machine that lost applies in a
    /// Postgres crash (issue 9, item 4). Planted in the simulator's model
    /// of the read service, which makes the service's check
    /// (`pipeline::check_read_covered`).
    ReadBeyondStoredApplied,
    /// A leader labels the snapshot it streams with its log's compaction
    /// point (the index the core asked for) instead of the applied index
    /// its view sees: the follower installs a later state under an earlier
    /// index, and applies the entries between them again.
    SnapshotLabelledAtLogStart,
    /// Confirm a batch a leader applies ahead of its commit once the
    /// commit reaches its first entry instead of its last: the later
    /// entries commit with the state machine before they are committed.
    ConfirmAheadEarly,
    /// Ask to be woken when a follower's wait for a write to carry its
    /// committed entries ends even while a write that will carry them is
    /// queued: the wake-up is due again and again, and the driver spins.
    WakeWhileWriteQueued,
}

#[cfg(feature = "planted-bugs")]
impl PlantedBug {
    /// Every planted bug, in a stable order.
    pub const ALL: [PlantedBug; 19] = [
        PlantedBug::VoteWithoutLogCheck,
        PlantedBug::CommitPreviousTerm,
        PlantedBug::VoteBeforeDurable,
        PlantedBug::SkipTruncate,
        PlantedBug::ReadWithoutConfirmation,
        PlantedBug::ForgetVoteOnStepDown,
        PlantedBug::ApplyBeforeDurable,
        PlantedBug::ReadConfirmedByOldRound,
        PlantedBug::PeerLinkGivesUp,
        PlantedBug::LeaseByTickCount,
        PlantedBug::LeaseAfterTimeoutNow,
        PlantedBug::SessionExpiryAtBatchEnd,
        PlantedBug::SnapshotBeforeHardState,
        PlantedBug::CoveredProposalsLost,
        PlantedBug::ReadContextsRestart,
        PlantedBug::ReadBeyondStoredApplied,
        PlantedBug::SnapshotLabelledAtLogStart,
        PlantedBug::ConfirmAheadEarly,
        PlantedBug::WakeWhileWriteQueued,
    ];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            PlantedBug::VoteWithoutLogCheck => "vote-without-log-check",
            PlantedBug::CommitPreviousTerm => "commit-previous-term",
            PlantedBug::VoteBeforeDurable => "vote-before-durable",
            PlantedBug::SkipTruncate => "skip-truncate",
            PlantedBug::ReadWithoutConfirmation => "read-without-confirmation",
            PlantedBug::ForgetVoteOnStepDown => "forget-vote-on-step-down",
            PlantedBug::ApplyBeforeDurable => "apply-before-durable",
            PlantedBug::ReadConfirmedByOldRound => "read-confirmed-by-old-round",
            PlantedBug::PeerLinkGivesUp => "peer-link-gives-up",
            PlantedBug::LeaseByTickCount => "lease-by-tick-count",
            PlantedBug::LeaseAfterTimeoutNow => "lease-after-timeout-now",
            PlantedBug::SessionExpiryAtBatchEnd => "session-expiry-at-batch-end",
            PlantedBug::SnapshotBeforeHardState => "snapshot-before-hard-state",
            PlantedBug::CoveredProposalsLost => "covered-proposals-lost",
            PlantedBug::ReadContextsRestart => "read-contexts-restart",
            PlantedBug::ReadBeyondStoredApplied => "read-beyond-stored-applied",
            PlantedBug::SnapshotLabelledAtLogStart => "snapshot-labelled-at-log-start",
            PlantedBug::ConfirmAheadEarly => "confirm-ahead-early",
            PlantedBug::WakeWhileWriteQueued => "wake-while-write-queued",
        }
    }

    /// Parses a command-line name.
    pub fn from_name(name: &str) -> Option<PlantedBug> {
        PlantedBug::ALL.into_iter().find(|bug| bug.name() == name)
    }
}

/// Configuration of one node's Raft core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This node's id. Invariant: non-zero, and one of `voters` unless
    /// `voters` is empty.
    pub id: NodeId,
    /// The voters a new cluster starts with (its bootstrap membership),
    /// this node included; empty for a node that waits to be added to a
    /// running cluster. Used only while the node's storage holds no
    /// membership: after that the log decides. Invariant: no duplicates.
    pub voters: Vec<NodeId>,
    /// Lower bound (inclusive) of the randomized election timeout, in ticks.
    /// Also the leader lease and the check-quorum interval.
    pub election_ticks_min: u64,
    /// Upper bound (exclusive) of the randomized election timeout, in ticks.
    pub election_ticks_max: u64,
    /// Ticks between heartbeats. Invariant: below `election_ticks_min`.
    pub heartbeat_ticks: u64,
    /// Run a pre-vote round before a real election (section 9.6), so a
    /// partitioned node cannot disrupt the cluster when it returns.
    pub pre_vote: bool,
    /// A leader that has not heard from a quorum within
    /// `election_ticks_min` steps down, and a node that restarts ignores
    /// vote requests for its first `election_ticks_min` (its leader may
    /// hold a lease). Leader stickiness (no vote while hearing from a
    /// live leader) holds either way.
    pub check_quorum: bool,
    /// Most entries in one AppendEntries message.
    pub entries_per_message_max: usize,
    /// Most entry bytes in one AppendEntries message (a single larger entry
    /// is still sent alone).
    pub message_bytes_max: usize,
    /// Most AppendEntries messages in flight to one follower in the
    /// replicate state.
    pub inflight_messages_max: usize,
    /// Most entries the leader holds that are not yet committed; beyond it
    /// proposals are refused with `ProposeError::Backpressure`.
    pub uncommitted_entries_max: usize,
    /// Most entries handed to the driver for applying in one `Ready`.
    pub apply_batch_entries_max: usize,
    /// Most read requests waiting for confirmation or apply, forwarded
    /// reads included.
    pub pending_reads_max: usize,
    /// Most reports of implausible messages kept until the driver takes
    /// them; beyond it reports are only counted, so a flood of forged
    /// messages cannot grow memory when the driver drains slowly.
    pub implausible_reports_max: usize,
    /// A bug to plant (simulator only).
    #[cfg(feature = "planted-bugs")]
    pub planted_bug: Option<PlantedBug>,
}

/// Why a configuration was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A setting is out of range.
    #[error("invalid raft config: {0}")]
    Invalid(String),
}

impl Config {
    /// A configuration with sensible defaults for node `id` among `voters`:
    /// election timeout 10..20 ticks, heartbeat every 2 ticks, pre-vote
    /// and check-quorum on.
    pub fn new(id: NodeId, voters: Vec<NodeId>) -> Config {
        Config {
            id,
            voters,
            election_ticks_min: 10,
            election_ticks_max: 20,
            heartbeat_ticks: 2,
            pre_vote: true,
            check_quorum: true,
            entries_per_message_max: 512,
            message_bytes_max: 1 << 20,
            inflight_messages_max: 64,
            uncommitted_entries_max: 65_536,
            apply_batch_entries_max: 1024,
            pending_reads_max: 16_384,
            implausible_reports_max: 1024,
            #[cfg(feature = "planted-bugs")]
            planted_bug: None,
        }
    }

    /// Checks every setting, with a message a person can act on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid(message));
        if !self.id.is_valid() {
            return invalid(format!(
                "node id must be non-zero and at most {}",
                NodeId::MAX
            ));
        }
        if self.voters.iter().any(|voter| !voter.is_valid()) {
            return invalid(format!(
                "voter ids must be non-zero and at most {}",
                NodeId::MAX
            ));
        }
        let mut sorted = self.voters.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != self.voters.len() {
            return invalid(format!("voters {:?} contain a duplicate id", self.voters));
        }
        if !self.voters.is_empty() && !self.voters.contains(&self.id) {
            return invalid(format!(
                "node {} is not among the voters {:?}",
                self.id, self.voters
            ));
        }
        if self.heartbeat_ticks == 0 {
            return invalid("heartbeat_ticks must be at least 1".into());
        }
        if self.election_ticks_min <= self.heartbeat_ticks {
            return invalid(format!(
                "election_ticks_min ({}) must exceed heartbeat_ticks ({}): followers would campaign between heartbeats",
                self.election_ticks_min, self.heartbeat_ticks
            ));
        }
        if self.election_ticks_max <= self.election_ticks_min {
            return invalid(format!(
                "election_ticks_max ({}) must exceed election_ticks_min ({}) so that timeouts are randomized",
                self.election_ticks_max, self.election_ticks_min
            ));
        }
        let limits = [
            ("entries_per_message_max", self.entries_per_message_max),
            ("message_bytes_max", self.message_bytes_max),
            ("inflight_messages_max", self.inflight_messages_max),
            ("uncommitted_entries_max", self.uncommitted_entries_max),
            ("apply_batch_entries_max", self.apply_batch_entries_max),
            ("pending_reads_max", self.pending_reads_max),
            ("implausible_reports_max", self.implausible_reports_max),
        ];
        for (name, value) in limits {
            if value == 0 {
                return invalid(format!("{name} must be greater than 0"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> Config {
        Config::new(NodeId(1), vec![NodeId(1), NodeId(2), NodeId(3)])
    }

    #[test]
    fn defaults_are_valid() {
        valid().validate().unwrap();
    }

    #[test]
    fn each_bad_setting_is_refused_with_its_name() {
        type BreakConfig = fn(&mut Config);
        let cases: Vec<(BreakConfig, &str)> = vec![
            (|config| config.id = NodeId(0), "node id"),
            (|config| config.id = NodeId(9), "not among the voters"),
            (|config| config.voters.push(NodeId(2)), "duplicate"),
            (|config| config.voters.push(NodeId(0)), "non-zero"),
            (|config| config.heartbeat_ticks = 0, "heartbeat_ticks"),
            (|config| config.election_ticks_min = 2, "election_ticks_min"),
            (
                |config| config.election_ticks_max = 10,
                "election_ticks_max",
            ),
            (
                |config| config.entries_per_message_max = 0,
                "entries_per_message_max",
            ),
            (|config| config.message_bytes_max = 0, "message_bytes_max"),
            (
                |config| config.inflight_messages_max = 0,
                "inflight_messages_max",
            ),
            (
                |config| config.uncommitted_entries_max = 0,
                "uncommitted_entries_max",
            ),
            (
                |config| config.apply_batch_entries_max = 0,
                "apply_batch_entries_max",
            ),
            (|config| config.pending_reads_max = 0, "pending_reads_max"),
            (
                |config| config.implausible_reports_max = 0,
                "implausible_reports_max",
            ),
        ];
        for (break_it, expected) in cases {
            let mut config = valid();
            break_it(&mut config);
            let error = config.validate().expect_err(expected).to_string();
            assert!(
                error.contains(expected),
                "{error:?} should mention {expected:?}"
            );
        }
    }
}
