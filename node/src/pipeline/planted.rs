//! The pipeline's planted bugs: deliberately wrong decisions that only the
//! simulator enables (feature `planted-bugs`), to prove its checkers find
//! them. Without the feature every flag is false.

use crate::core::Raft;

/// Which of the pipeline's planted bugs are on.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Planted {
    /// Drop the ticks a stall missed.
    pub(super) lease_by_tick_count: bool,
    /// Install a snapshot in one write and its hard state in the next.
    pub(super) snapshot_before_hard_state: bool,
    /// Keep proposals waiting across a step-down; report covered ones lost.
    pub(super) covered_proposals_lost: bool,
    /// Number forwarded reads from 1 in every incarnation.
    pub(super) read_contexts_restart: bool,
    /// Label a streamed snapshot with the log's start, not the view's
    /// applied index.
    pub(super) snapshot_labelled_at_log_start: bool,
    /// Confirm a batch applied ahead once the commit reaches its first
    /// entry instead of its last.
    pub(super) confirm_ahead_early: bool,
    /// Wake when a follower's apply wait ends though a queued write will
    /// carry its entries.
    pub(super) wake_while_write_queued: bool,
}

impl Planted {
    /// The planted bugs `raft`'s configuration enables.
    pub(super) fn of(raft: &Raft) -> Planted {
        #[cfg(feature = "planted-bugs")]
        {
            use crate::core::PlantedBug;
            Planted {
                lease_by_tick_count: raft.planted(PlantedBug::LeaseByTickCount),
                snapshot_before_hard_state: raft.planted(PlantedBug::SnapshotBeforeHardState),
                covered_proposals_lost: raft.planted(PlantedBug::CoveredProposalsLost),
                read_contexts_restart: raft.planted(PlantedBug::ReadContextsRestart),
                snapshot_labelled_at_log_start: raft
                    .planted(PlantedBug::SnapshotLabelledAtLogStart),
                confirm_ahead_early: raft.planted(PlantedBug::ConfirmAheadEarly),
                wake_while_write_queued: raft.planted(PlantedBug::WakeWhileWriteQueued),
            }
        }
        #[cfg(not(feature = "planted-bugs"))]
        {
            let _ = raft;
            Planted::default()
        }
    }
}
