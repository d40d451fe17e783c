//! The storage contract every implementation honours, and the rules that
//! decide whether a request is valid. Both [`crate::MemStore`] and
//! [`crate::PgStore`] check requests with the same functions here before
//! writing anything, so they reject exactly the same inputs.

use std::future::Future;

use crate::error::StoreError;
use crate::types::{AppendBatch, AppliedState, HardState, LoadedState, LogEntry, SnapshotMeta};

/// Durable storage for one Raft node: hard state, log, snapshot marker and
/// applied marker.
///
/// Every method takes `&mut self` because a store has exactly one owner, the
/// node's storage task, and operations are ordered.
pub trait LogStore {
    /// Reads the whole durable state.
    fn load(&mut self) -> impl Future<Output = Result<LoadedState, StoreError>> + Send;

    /// Atomically truncates the log from `batch.entries[0].index`, appends
    /// the entries and saves the hard state. On error nothing is written.
    fn append(&mut self, batch: AppendBatch)
        -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Saves term and vote.
    fn save_hard_state(
        &mut self,
        hard_state: HardState,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Entries with `low <= index < high_exclusive`. Requires
    /// `snapshot_index < low <= high_exclusive <= last_index + 1`.
    fn entries(
        &mut self,
        low: u64,
        high_exclusive: u64,
    ) -> impl Future<Output = Result<Vec<LogEntry>, StoreError>> + Send;

    /// Deletes entries `<= up_to` and records `(up_to, term)` as the
    /// snapshot marker. A no-op when `up_to` is at or below the current
    /// snapshot index; `term` must match the stored entry at `up_to`.
    fn compact(
        &mut self,
        up_to: u64,
        term: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// A follower received a snapshot: deletes all entries and sets both the
    /// snapshot marker and the applied marker to `meta`, atomically.
    fn install_snapshot(
        &mut self,
        meta: SnapshotMeta,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Moves the applied marker forward without state machine changes
    /// (state machines that live in Postgres use `PgStore::begin_apply`).
    fn save_applied(
        &mut self,
        applied: AppliedState,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The part of the durable state needed to validate a request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct LogBounds {
    pub(crate) hard_state: HardState,
    pub(crate) snapshot: SnapshotMeta,
    /// Invariant: `last_index >= snapshot.index`.
    pub(crate) last_index: u64,
    pub(crate) applied: AppliedState,
}

/// Checks an append batch against the log it will be applied to: its
/// shape ([`StoreError::InvalidBatch`]), the hard state it carries, and the
/// term rule of [`check_append_terms`]. The applied-entries rule needs the
/// stored entries and is checked by each store
/// ([`check_append_keeps_applied`]; in Postgres by `raftgres_append`).
pub(crate) fn check_append(
    bounds: &LogBounds,
    batch: &AppendBatch,
    entries_per_append_max: usize,
) -> Result<(), StoreError> {
    if let Some(hard_state) = batch.hard_state {
        check_hard_state(&bounds.hard_state, &hard_state)?;
    }
    let Some(first) = batch.entries.first() else {
        return Ok(());
    };
    let invalid = |reason: String| Err(StoreError::InvalidBatch { reason });
    if batch.entries.len() > entries_per_append_max {
        return invalid(format!(
            "{} entries exceed entries_per_append_max = {entries_per_append_max}",
            batch.entries.len()
        ));
    }
    if first.index <= bounds.snapshot.index {
        return invalid(format!(
            "first entry index {} is at or below the snapshot index {}",
            first.index, bounds.snapshot.index
        ));
    }
    if first.index > bounds.last_index + 1 {
        return invalid(format!(
            "first entry index {} leaves a gap after the last index {}",
            first.index, bounds.last_index
        ));
    }
    for pair in batch.entries.windows(2) {
        if pair[1].index != pair[0].index + 1 {
            return invalid(format!(
                "entries are not contiguous: index {} follows index {}",
                pair[1].index, pair[0].index
            ));
        }
        if pair[1].term < pair[0].term {
            return invalid(format!(
                "terms decrease within the batch: term {} at index {} follows term {}",
                pair[1].term, pair[1].index, pair[0].term
            ));
        }
    }
    let last = batch.entries.last().expect("batch is not empty");
    if last.index > i64::MAX as u64 || last.term > i64::MAX as u64 {
        return invalid(format!(
            "index {} or term {} does not fit in a signed 64-bit integer",
            last.index, last.term
        ));
    }
    check_append_terms(bounds, batch)
}

/// No entry may carry a term above the hard state's term as it stands after
/// the append: on restart the node would find its log ending in a term it
/// never recorded, and refuse to start.
pub(crate) fn check_append_terms(
    bounds: &LogBounds,
    batch: &AppendBatch,
) -> Result<(), StoreError> {
    let term_after = batch
        .hard_state
        .map_or(bounds.hard_state.term, |hard_state| hard_state.term);
    match batch.entries.iter().find(|entry| entry.term > term_after) {
        Some(entry) => Err(StoreError::AppendRefused {
            reason: format!(
                "the entry at index {} has term {}, above the hard state term {term_after}; a node could not restart from this log",
                entry.index, entry.term
            ),
        }),
        None => Ok(()),
    }
}

/// Applied entries are decided: an append may neither delete nor change an
/// entry at or below the applied index. Rewriting one with an identical
/// entry is allowed so that repeating an append stays harmless.
/// `stored_entry` looks an entry up in the log the batch is applied to.
pub(crate) fn check_append_keeps_applied<'a>(
    applied_index: u64,
    batch: &AppendBatch,
    stored_entry: impl Fn(u64) -> Option<&'a LogEntry>,
) -> Result<(), StoreError> {
    let (Some(first), Some(last)) = (batch.entries.first(), batch.entries.last()) else {
        return Ok(());
    };
    if first.index > applied_index {
        return Ok(());
    }
    if last.index < applied_index {
        return Err(StoreError::AppendRefused {
            reason: format!(
                "entries {} to {} would replace the log from index {}, deleting applied entries up to the applied index {applied_index}",
                first.index, last.index, first.index
            ),
        });
    }
    let changed = batch
        .entries
        .iter()
        .take_while(|entry| entry.index <= applied_index)
        .find(|entry| stored_entry(entry.index) != Some(*entry));
    match changed {
        Some(entry) => Err(StoreError::AppendRefused {
            reason: format!(
                "it would change the entry at index {}, at or below the applied index {applied_index}",
                entry.index
            ),
        }),
        None => Ok(()),
    }
}

/// Term never decreases; a vote, once cast in a term, never changes; both
/// fit the bigint columns that keep them.
pub(crate) fn check_hard_state(
    current: &HardState,
    requested: &HardState,
) -> Result<(), StoreError> {
    let term_regresses = requested.term < current.term;
    let vote_changes = requested.term == current.term
        && current.voted_for.is_some()
        && requested.voted_for != current.voted_for;
    if term_regresses || vote_changes {
        return Err(StoreError::HardStateRegression {
            current: *current,
            requested: *requested,
        });
    }
    let beyond_columns = requested.term > i64::MAX as u64
        || requested
            .voted_for
            .is_some_and(|node| node > i64::MAX as u64);
    if beyond_columns {
        return Err(StoreError::AppendRefused {
            reason: format!(
                "hard state {requested:?} does not fit the bigint columns of raftgres_hard_state \
                 (terms and node ids are at most {})",
                i64::MAX
            ),
        });
    }
    Ok(())
}

/// Checks an `entries(low, high_exclusive)` request.
pub(crate) fn check_range(
    bounds: &LogBounds,
    low: u64,
    high_exclusive: u64,
) -> Result<(), StoreError> {
    if low <= bounds.snapshot.index
        || low > high_exclusive
        || high_exclusive > bounds.last_index + 1
    {
        return Err(StoreError::OutOfRange {
            low,
            high_exclusive,
            first_index: bounds.snapshot.index + 1,
            last_index: bounds.last_index,
        });
    }
    Ok(())
}

/// What a compaction request means for a given log.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CompactPlan {
    /// Already compacted at least this far.
    Nothing,
    /// Delete entries up to and including `up_to`.
    DeleteThrough,
}

/// Checks a compaction request; `stored_term` is the term of the entry at
/// `up_to` when it is in the log.
pub(crate) fn check_compact(
    bounds: &LogBounds,
    up_to: u64,
    term: u64,
    stored_term: Option<u64>,
) -> Result<CompactPlan, StoreError> {
    if up_to <= bounds.snapshot.index {
        return Ok(CompactPlan::Nothing);
    }
    if up_to > bounds.last_index {
        return Err(StoreError::OutOfRange {
            low: up_to,
            high_exclusive: up_to + 1,
            first_index: bounds.snapshot.index + 1,
            last_index: bounds.last_index,
        });
    }
    if stored_term != Some(term) {
        return Err(StoreError::InvalidBatch {
            reason: format!(
                "compaction through index {up_to} with term {term}, but the entry there has term {stored_term:?}"
            ),
        });
    }
    Ok(CompactPlan::DeleteThrough)
}

/// An installed snapshot must not move the snapshot or applied marker back.
pub(crate) fn check_install_snapshot(
    bounds: &LogBounds,
    meta: &SnapshotMeta,
) -> Result<(), StoreError> {
    if meta.index < bounds.snapshot.index {
        return Err(StoreError::Regression {
            what: "snapshot index",
            current: bounds.snapshot.index,
            requested: meta.index,
        });
    }
    if meta.index < bounds.applied.index {
        return Err(StoreError::Regression {
            what: "applied index",
            current: bounds.applied.index,
            requested: meta.index,
        });
    }
    if meta.index > i64::MAX as u64 || meta.term > i64::MAX as u64 {
        return Err(StoreError::InvalidBatch {
            reason: format!("snapshot {meta:?} does not fit in signed 64-bit integers"),
        });
    }
    Ok(())
}

/// The applied marker only moves forward.
pub(crate) fn check_applied(bounds: &LogBounds, applied: &AppliedState) -> Result<(), StoreError> {
    if applied.index <= bounds.applied.index || applied.index > i64::MAX as u64 {
        return Err(StoreError::Regression {
            what: "applied index",
            current: bounds.applied.index,
            requested: applied.index,
        });
    }
    Ok(())
}

/// Verifies a loaded log is contiguous right after the snapshot; used after
/// every load so that corruption stops the node instead of spreading.
pub(crate) fn check_loaded(state: &LoadedState) -> Result<(), StoreError> {
    for (expected, entry) in (state.snapshot.index + 1..).zip(&state.entries) {
        if entry.index != expected {
            return Err(StoreError::Corrupt {
                reason: format!(
                    "log is not contiguous: expected index {expected}, found {} (snapshot index {})",
                    entry.index, state.snapshot.index
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::EntryKind;

    fn entry(index: u64, term: u64) -> LogEntry {
        LogEntry {
            index,
            term,
            kind: EntryKind::Command,
            data: vec![],
        }
    }

    fn bounds(snapshot_index: u64, last_index: u64) -> LogBounds {
        LogBounds {
            snapshot: SnapshotMeta {
                index: snapshot_index,
                term: 1,
            },
            last_index,
            // High enough for every entry these tests append.
            hard_state: HardState {
                term: 9,
                voted_for: None,
            },
            ..LogBounds::default()
        }
    }

    #[test]
    fn append_must_follow_the_log() {
        let log = bounds(5, 10);
        let batch = |entries| AppendBatch {
            hard_state: None,
            entries,
        };
        assert!(check_append(&log, &batch(vec![entry(11, 1)]), 8).is_ok());
        assert!(check_append(&log, &batch(vec![entry(6, 1)]), 8).is_ok());
        assert!(check_append(&log, &batch(vec![entry(12, 1)]), 8).is_err());
        assert!(check_append(&log, &batch(vec![entry(5, 1)]), 8).is_err());
        assert!(check_append(&log, &batch(vec![entry(7, 1), entry(9, 1)]), 8).is_err());
        assert!(check_append(&log, &batch(vec![entry(7, 2), entry(8, 1)]), 8).is_err());
        assert!(check_append(&log, &batch(vec![entry(7, 1), entry(8, 1)]), 1).is_err());
    }

    #[test]
    fn entries_may_not_outrun_the_hard_state_term() {
        let log = LogBounds {
            hard_state: HardState {
                term: 2,
                voted_for: None,
            },
            ..bounds(0, 0)
        };
        let batch = |hard_state, entries| AppendBatch {
            hard_state,
            entries,
        };
        assert!(check_append(&log, &batch(None, vec![entry(1, 2)]), 8).is_ok());
        assert!(matches!(
            check_append(&log, &batch(None, vec![entry(1, 2), entry(2, 3)]), 8),
            Err(StoreError::AppendRefused { .. })
        ));
        let term_3 = Some(HardState {
            term: 3,
            voted_for: None,
        });
        assert!(check_append(&log, &batch(term_3, vec![entry(1, 3)]), 8).is_ok());
    }

    #[test]
    fn applied_entries_are_neither_deleted_nor_changed() {
        let stored: Vec<LogEntry> = (1..=6).map(|index| entry(index, 1)).collect();
        let lookup = |index: u64| stored.get(index as usize - 1);
        let batch = |entries| AppendBatch {
            hard_state: None,
            entries,
        };
        let refused = |result: Result<(), StoreError>| {
            matches!(result, Err(StoreError::AppendRefused { .. }))
        };
        // Above the applied index anything goes; identical rewrites below it
        // are harmless.
        assert!(check_append_keeps_applied(4, &batch(vec![entry(5, 2)]), lookup).is_ok());
        assert!(
            check_append_keeps_applied(4, &batch(vec![entry(4, 1), entry(5, 2)]), lookup).is_ok()
        );
        // Ending below the applied index would delete applied entries.
        assert!(refused(check_append_keeps_applied(
            4,
            &batch(vec![entry(3, 1)]),
            lookup
        )));
        // A different term at an applied index changes a decided entry.
        assert!(refused(check_append_keeps_applied(
            4,
            &batch(vec![entry(4, 2), entry(5, 2)]),
            lookup
        )));
        let mut changed_data = entry(4, 1);
        changed_data.data = vec![1];
        assert!(refused(check_append_keeps_applied(
            4,
            &batch(vec![changed_data]),
            lookup
        )));
    }

    #[test]
    fn hard_state_never_regresses() {
        let current = HardState {
            term: 3,
            voted_for: Some(2),
        };
        let with = |term, voted_for| HardState { term, voted_for };
        assert!(check_hard_state(&current, &with(3, Some(2))).is_ok());
        assert!(check_hard_state(&current, &with(4, None)).is_ok());
        assert!(check_hard_state(&current, &with(2, Some(2))).is_err());
        assert!(check_hard_state(&current, &with(3, Some(1))).is_err());
        assert!(check_hard_state(&current, &with(3, None)).is_err());
        assert!(check_hard_state(&with(3, None), &with(3, Some(1))).is_ok());
        // Beyond the bigint columns: refused before Postgres would see a
        // negative number.
        for beyond in [with(3, Some(1 << 63)), with(1 << 63, None)] {
            assert!(matches!(
                check_hard_state(&with(3, None), &beyond),
                Err(StoreError::AppendRefused { reason }) if reason.contains("bigint")
            ));
        }
    }

    #[test]
    fn ranges_stay_inside_the_log() {
        let log = bounds(5, 10);
        assert!(check_range(&log, 6, 11).is_ok());
        assert!(check_range(&log, 8, 8).is_ok());
        assert!(check_range(&log, 5, 7).is_err());
        assert!(check_range(&log, 6, 12).is_err());
        assert!(check_range(&log, 9, 8).is_err());
    }

    #[test]
    fn loaded_log_with_a_gap_is_corrupt() {
        let mut state = LoadedState {
            entries: vec![entry(1, 1), entry(2, 1)],
            ..LoadedState::default()
        };
        assert!(check_loaded(&state).is_ok());
        state.entries.push(entry(4, 1));
        assert!(matches!(
            check_loaded(&state),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
