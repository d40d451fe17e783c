//! [`MemStore`]: the log store in memory. It follows the same rules as the
//! Postgres store (the contract tests run on both), so code that needs a
//! store without a database can use it; it is not durable.

use crate::error::StoreError;
use crate::store::{self, CompactPlan, LogBounds, LogStore};
use crate::types::{AppendBatch, AppliedState, HardState, LoadedState, LogEntry, SnapshotMeta};

/// A non-durable [`LogStore`].
#[derive(Clone, Debug)]
pub struct MemStore {
    /// Invariant: `state.entries` is contiguous from `state.snapshot.index + 1`.
    state: LoadedState,
    entries_per_append_max: usize,
}

impl Default for MemStore {
    fn default() -> Self {
        MemStore::new()
    }
}

impl MemStore {
    /// An empty store with the default batch limit.
    pub fn new() -> MemStore {
        MemStore::with_entries_per_append_max(crate::ENTRIES_PER_APPEND_MAX_DEFAULT)
    }

    /// An empty store accepting at most `entries_per_append_max` entries per
    /// append.
    pub fn with_entries_per_append_max(entries_per_append_max: usize) -> MemStore {
        MemStore {
            state: LoadedState::default(),
            entries_per_append_max,
        }
    }

    fn bounds(&self) -> LogBounds {
        LogBounds {
            hard_state: self.state.hard_state,
            snapshot: self.state.snapshot,
            last_index: self.state.last_index(),
            applied: self.state.applied,
        }
    }

    /// Position of `index` in `state.entries`; requires `index > snapshot`.
    fn offset(&self, index: u64) -> usize {
        (index - self.state.snapshot.index - 1) as usize
    }
}

impl LogStore for MemStore {
    async fn load(&mut self) -> Result<LoadedState, StoreError> {
        Ok(self.state.clone())
    }

    async fn append(&mut self, batch: AppendBatch) -> Result<(), StoreError> {
        store::check_append(&self.bounds(), &batch, self.entries_per_append_max)?;
        store::check_append_keeps_applied(self.state.applied.index, &batch, |index| {
            (index > self.state.snapshot.index)
                .then(|| self.state.entries.get(self.offset(index)))
                .flatten()
        })?;
        if let Some(first) = batch.entries.first() {
            let offset = self.offset(first.index);
            self.state.entries.truncate(offset);
            self.state.entries.extend(batch.entries);
        }
        if let Some(hard_state) = batch.hard_state {
            self.state.hard_state = hard_state;
        }
        Ok(())
    }

    async fn save_hard_state(&mut self, hard_state: HardState) -> Result<(), StoreError> {
        store::check_hard_state(&self.state.hard_state, &hard_state)?;
        self.state.hard_state = hard_state;
        Ok(())
    }

    async fn entries(
        &mut self,
        low: u64,
        high_exclusive: u64,
    ) -> Result<Vec<LogEntry>, StoreError> {
        store::check_range(&self.bounds(), low, high_exclusive)?;
        let range = self.offset(low)..self.offset(high_exclusive);
        Ok(self.state.entries[range].to_vec())
    }

    async fn compact(&mut self, up_to: u64, term: u64) -> Result<(), StoreError> {
        let bounds = self.bounds();
        let stored_term = (up_to > bounds.snapshot.index && up_to <= bounds.last_index)
            .then(|| self.state.entries[self.offset(up_to)].term);
        if store::check_compact(&bounds, up_to, term, stored_term)? == CompactPlan::Nothing {
            return Ok(());
        }
        let keep_from = self.offset(up_to) + 1;
        self.state.entries.drain(..keep_from);
        self.state.snapshot = SnapshotMeta { index: up_to, term };
        Ok(())
    }

    async fn install_snapshot(&mut self, meta: SnapshotMeta) -> Result<(), StoreError> {
        store::check_install_snapshot(&self.bounds(), &meta)?;
        self.state.entries.clear();
        self.state.snapshot = meta;
        self.state.applied = AppliedState {
            index: meta.index,
            term: meta.term,
        };
        Ok(())
    }

    async fn save_applied(&mut self, applied: AppliedState) -> Result<(), StoreError> {
        store::check_applied(&self.bounds(), &applied)?;
        self.state.applied = applied;
        Ok(())
    }
}
