//! The simulated store of one node: what the production node keeps in its
//! Postgres database (term and vote, log, state machine rows, session rows,
//! applied index) and the transactions that change it, each atomic, as
//! `node/src/server/storage.rs` carries out the pipeline's operations:
//!
//! - [`Store::write`]: one `WriteJob` (snapshot install, log append with
//!   truncation, hard state, compaction) in one synchronous transaction,
//!   which [`Store::apply`] continues when the job carries an apply batch;
//! - [`Store::apply`]: one apply batch (state machine rows, session rows
//!   with expiry at the pipeline's positions, applied index) in one
//!   transaction, committed synchronously or, when the node is so
//!   configured, asynchronously;
//! - [`Store::view`]: a REPEATABLE READ view of the state machine, which
//!   a leader streams to a follower in chunks;
//! - [`Store::stage`]: snapshot chunks a follower received, staged in one
//!   transaction; a write that installs a snapshot installs the staged
//!   chunks and empties the staging.
//!
//! What Postgres and the operating system may do to it is modelled here
//! and in [`Transaction`]: a transaction that fails before COMMIT changes
//! nothing; one whose connection drops during COMMIT may or may not have
//! happened; an asynchronous commit is visible at once but durable only
//! once the WAL is flushed (by the WAL writer or by any later synchronous
//! commit), so a Postgres crash loses it; after a crash of the node
//! process alone, everything committed stays.

use raftgres::core::{DurableState, Entry, HardState, LogIndex, Membership, SnapshotMeta, Term};
use raftgres::mvcc::Event;
use raftgres::pipeline::sessions::{apply_segments, ApplySegment};
use raftgres::pipeline::{
    ApplyBatch, ApplyDone, ApplyOutcome, ChunkRead, ReadChunk, StageJob, StagedTransfer, WriteJob,
};

use crate::kv::{self, Applied, KvStore};

/// The largest number Postgres keeps in a `bigint` column: the bound of
/// every term, index and node id the product stores (storage-pg's
/// `raftgres_hard_state`, `raftgres_log`).
pub const BIGINT_MAX: u64 = i64::MAX as u64;

/// Why storage-pg would refuse `job` for a value its columns cannot hold
/// (a term or a vote beyond [`BIGINT_MAX`], which its conversion turns
/// negative and its checks refuse), if it would. The node then stops.
pub fn beyond_postgres_columns(job: &WriteJob) -> Option<String> {
    if let Some(hard_state) = job.hard_state {
        if hard_state.term.0 > BIGINT_MAX {
            return Some(format!("a term of {}", hard_state.term));
        }
        if let Some(vote) = hard_state.voted_for.filter(|vote| vote.0 > BIGINT_MAX) {
            return Some(format!("a vote for node {vote}"));
        }
    }
    job.entries
        .iter()
        .find(|entry| entry.index.0 > BIGINT_MAX || entry.term.0 > BIGINT_MAX)
        .map(|entry| format!("an entry at index {} of term {}", entry.index, entry.term))
}

/// How the applier commits and when sessions expire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApplySettings {
    /// Commit applies with synchronous_commit off.
    pub asynchronous_commit: bool,
    /// Sessions unused for this many entries are forgotten.
    pub session_expiry_entries: u64,
    /// Sessions expire after every entry whose index is a multiple of this
    /// (the product's is 1024; the simulator uses short strides).
    pub session_expiry_stride: u64,
    /// The pipeline compacts the log every this many applied entries.
    pub compaction_entries: u64,
    /// Most entries one log write may carry (see
    /// `FaultProfile::entries_per_write_max`).
    pub entries_per_write_max: usize,
    /// Planted bug `session-expiry-at-batch-end`.
    pub expiry_at_batch_end: bool,
    /// Leaders apply ahead of the commit (the product does).
    pub apply_ahead: bool,
    /// How long a follower's committed entries wait before a log write
    /// carries them or they are applied alone (the product's
    /// `FOLLOWER_APPLY_WAIT_DEFAULT`).
    pub follower_apply_wait: std::time::Duration,
}

/// One node's database.
#[derive(Clone, Debug, Default)]
pub struct Store {
    /// Term and vote.
    pub hard_state: HardState,
    /// Where the stored log starts: the compaction point or the installed
    /// snapshot. Invariant: at most the state machine's applied index,
    /// unless an asynchronous apply was lost (see `lost_applies`).
    pub log_start: SnapshotMeta,
    /// The membership in force at `log_start` (empty until a compaction
    /// or an installed snapshot stores one: the node then starts from its
    /// configuration's voters, as a new cluster does).
    pub membership: Membership,
    /// Entries after `log_start`, contiguous.
    pub entries: Vec<Entry>,
    /// The state machine as committed (what a read sees).
    pub state_machine: KvStore,
    /// The state machine as flushed to the WAL (what survives a Postgres
    /// crash), when it differs from `state_machine`.
    flushed: Option<Flushed>,
    /// The snapshot transfer being received, as staged.
    pub staged: Option<StagedTransfer>,
    /// Its chunks: seq -> data.
    pub staged_chunks: std::collections::BTreeMap<u64, Vec<u8>>,
}

/// The state machine as flushed, while asynchronous applies are not. One
/// is taken at every asynchronous apply after a flush, so it is not a
/// copy (a deep copy of the history cost 6 % of a sweep, its encoding
/// 1 %) unless it must be.
#[derive(Clone, Debug)]
enum Flushed {
    /// What `state_machine` was at this mark; what came since is rolled
    /// back (nothing was compacted since).
    Mark(kv::Mark),
    /// A copy: a compaction ran since the flush, and the history no
    /// longer holds what it dropped.
    Copy(Box<KvStore>),
}

/// What an apply transaction did, for the pipeline and the checkers.
#[derive(Debug)]
pub struct ApplyReport {
    /// The pipeline's report.
    pub done: ApplyDone,
    /// Every entry applied for the first time by this transaction (a lost
    /// asynchronous apply replayed from the log included), in order.
    pub applied: Vec<(Entry, Applied)>,
    /// The rows' digest after each segment: (applied index, digest).
    pub digests: Vec<(LogIndex, u64)>,
    /// The changes those entries made to the keys, in order.
    pub changes: Vec<Event>,
}

impl Store {
    /// What the core restarts from.
    pub fn durable_state(&self) -> DurableState {
        DurableState {
            hard_state: self.hard_state,
            snapshot: self.log_start,
            membership: self.membership.clone(),
            entries: self.entries.clone(),
            applied: self.state_machine.applied_index(),
        }
    }

    /// The stored log's last (index, term).
    pub fn last(&self) -> (LogIndex, Term) {
        self.entries
            .last()
            .map_or((self.log_start.index, self.log_start.term), |entry| {
                (entry.index, entry.term)
            })
    }

    /// The stored entry at `index`, if held.
    pub fn entry(&self, index: LogIndex) -> Option<&Entry> {
        let position = index.0.checked_sub(self.log_start.index.0 + 1)?;
        self.entries.get(position as usize)
    }

    /// Carries out `job` in one transaction: the snapshot (state machine,
    /// sessions, applied index, log reset), the entries (truncating the
    /// stored suffix from the first one), the hard state, the compaction.
    /// Synchronous: everything committed before is flushed with it. An
    /// error (no complete staged snapshot for the install, corrupt staged
    /// bytes) changes nothing and stops the node.
    pub fn write(&mut self, job: &WriteJob) -> Result<(), String> {
        // Decoded first: a refused transaction changes nothing.
        let installed = match &job.snapshot {
            // A retry of an install whose commit had an unknown outcome
            // and happened: the staging is gone, the log starts there.
            Some(snapshot) if self.staged.is_none() && self.log_start == snapshot.meta => None,
            Some(snapshot) => Some(self.staged_snapshot(snapshot.meta)?),
            None => None,
        };
        if let (Some(snapshot), Some(state_machine)) = (&job.snapshot, installed) {
            self.state_machine = state_machine;
            self.log_start = snapshot.meta;
            self.membership = (*snapshot.membership).clone();
            self.entries.clear();
            self.staged = None;
            self.staged_chunks.clear();
        }
        if let Some(first) = job.entries.first() {
            let start = self.log_start.index.0;
            let keep = first.index.0.saturating_sub(start + 1) as usize;
            self.entries.truncate(keep);
            let new = job.entries.iter().filter(|entry| entry.index.0 > start);
            self.entries.extend(new.cloned());
        }
        if let Some(hard_state) = job.hard_state {
            self.hard_state = hard_state;
        }
        if let Some((point, membership)) = &job.compact_to {
            let point = *point;
            // Never beyond the stored applied index: an asynchronous apply
            // the snapshot was taken from may have been lost, and the log
            // must keep the entries that replay it (as the product's
            // compaction does, storage-pg `send_compact`).
            let applied = self.state_machine.applied_index();
            if point.index > self.log_start.index && point.index <= applied {
                let drop = (point.index.0 - self.log_start.index.0) as usize;
                self.entries.drain(..drop.min(self.entries.len()));
                self.log_start = point;
                self.membership = (**membership).clone();
            }
        }
        self.flush();
        Ok(())
    }

    /// Applies `batch` in one transaction, as the production applier does:
    /// entries at or below the stored applied index are answered with an
    /// unknown outcome (a retry of a commit whose outcome was lost), a gap
    /// below the batch (an asynchronous apply lost in a Postgres crash) is
    /// replayed from the log first, and sessions expire at the pipeline's
    /// positions.
    pub fn apply(
        &mut self,
        batch: &ApplyBatch,
        settings: ApplySettings,
    ) -> Result<ApplyReport, String> {
        let batch = batch.entries.as_slice();
        let applied_before = self.state_machine.applied_index();
        let last = batch.last().expect("apply batches are never empty");
        let first = batch[0].index;
        // The entries a lost asynchronous apply left unapplied below the
        // batch, then the batch's.
        let mut replayed = Vec::new();
        if first > applied_before.next() {
            for index in applied_before.0 + 1..first.0 {
                let entry = self.entry(LogIndex(index)).ok_or_else(|| {
                    format!(
                        "applies through {} were lost and the log no longer holds entry {index} to replay them (log starts after {})",
                        first.0 - 1,
                        self.log_start.index
                    )
                })?;
                replayed.push(entry.clone());
            }
        }
        let first_index = replayed.first().map_or(first, |entry: &Entry| entry.index);
        let entry_at = |index: u64| {
            let position = (index - first_index.0) as usize;
            replayed
                .get(position)
                .unwrap_or_else(|| &batch[position - replayed.len()])
        };
        if settings.asynchronous_commit && self.flushed.is_none() {
            // Committed but not yet flushed: what a Postgres crash leaves.
            self.flushed = Some(Flushed::Mark(self.state_machine.mark()));
        }
        let mut report = ApplyReport {
            done: ApplyDone {
                applied: last.index,
                outcomes: Vec::with_capacity(replayed.len() + batch.len()),
            },
            applied: Vec::new(),
            digests: Vec::new(),
            changes: Vec::new(),
        };
        for segment in self.segments(first_index, last.index, settings) {
            for index in segment.indexes.clone() {
                let entry = entry_at(index);
                if entry.index <= applied_before {
                    let outcome = ApplyOutcome::Unknown;
                    report
                        .done
                        .outcomes
                        .push((entry.index, entry.term, outcome));
                    continue;
                }
                self.keep_flushed_copy_before(entry);
                let (outcome, applied, changes) = self.state_machine.apply(entry);
                report.changes.extend(changes);
                report
                    .done
                    .outcomes
                    .push((entry.index, entry.term, outcome));
                report.applied.push((entry.clone(), applied));
            }
            if let Some(before) = segment.expire_before {
                self.state_machine.expire_sessions_before(before);
            }
            let at = LogIndex(*segment.indexes.end());
            if at > applied_before {
                report.digests.push((at, self.state_machine.rows_hash()));
            }
        }
        if !settings.asynchronous_commit {
            self.flush();
        }
        Ok(report)
    }

    /// Before `entry` is applied while asynchronous applies are not
    /// flushed: a compaction makes the flushed state a copy, since rolling
    /// back needs the history it drops.
    fn keep_flushed_copy_before(&mut self, entry: &Entry) {
        let Some(Flushed::Mark(mark)) = &self.flushed else {
            return;
        };
        if kv::compacts(entry) {
            let flushed = self
                .state_machine
                .rolled_back(mark)
                .expect("nothing was compacted since the flush");
            self.flushed = Some(Flushed::Copy(Box::new(flushed)));
        }
    }

    fn segments(
        &self,
        first: LogIndex,
        last: LogIndex,
        settings: ApplySettings,
    ) -> Vec<ApplySegment> {
        #[cfg(feature = "planted-bugs")]
        if settings.expiry_at_batch_end {
            return raftgres::pipeline::sessions::apply_segments_at_batch_end(
                first,
                last,
                settings.session_expiry_stride,
                settings.session_expiry_entries,
            );
        }
        apply_segments(
            first,
            last,
            settings.session_expiry_stride,
            settings.session_expiry_entries,
        )
    }

    /// A REPEATABLE READ view of the state machine: what it covers (the
    /// applied index and its term) and its rows, encoded as a snapshot.
    /// `None` when the applied entry's term is no longer known (the view
    /// could not name its snapshot).
    pub fn view(&self) -> Option<(SnapshotMeta, Vec<u8>)> {
        let index = self.state_machine.applied_index();
        let term = self.term_at(index)?;
        Some((SnapshotMeta { index, term }, self.state_machine.to_bytes()))
    }

    /// Reads `read` from a view that sees `rows`: `after` is the byte
    /// offset the chunk before ended at (the product's cursors are keys;
    /// offsets model them).
    pub fn read_view(rows: &[u8], read: &ReadChunk) -> ChunkRead {
        let start = match read.after.as_slice() {
            [] => 0,
            after => u64::from_le_bytes(after.try_into().expect("8-byte offsets")) as usize,
        };
        let end = (start + read.bytes_max.max(1)).min(rows.len());
        ChunkRead {
            view: read.view,
            seq: read.seq,
            data: rows[start..end].to_vec(),
            next: (end < rows.len()).then(|| (end as u64).to_le_bytes().to_vec()),
        }
    }

    /// Stages `job`'s chunks in one transaction (a job that starts a new
    /// transfer first deletes what was staged). Staging a chunk again
    /// replaces it: a retried job changes nothing more.
    pub fn stage(&mut self, job: &StageJob) {
        if job.restart {
            self.staged_chunks.clear();
        }
        for (seq, data) in &job.chunks {
            self.staged_chunks.insert(*seq, data.clone());
        }
        self.staged = Some(job.transfer.clone());
        self.flush();
    }

    /// The complete staged snapshot covering `meta`, decoded.
    fn staged_snapshot(&self, meta: SnapshotMeta) -> Result<KvStore, String> {
        let staged = self
            .staged
            .as_ref()
            .filter(|staged| staged.meta == meta && staged.complete)
            .ok_or_else(|| {
                format!(
                    "asked to install the snapshot through {}, but the staging holds {:?}",
                    meta.index,
                    self.staged
                        .as_ref()
                        .map(|staged| (staged.meta, staged.complete))
                )
            })?;
        let mut bytes = Vec::new();
        for seq in 0..staged.next_seq {
            let chunk = self.staged_chunks.get(&seq).ok_or_else(|| {
                format!(
                    "the staged snapshot through {} lacks chunk {seq}",
                    meta.index
                )
            })?;
            bytes.extend_from_slice(chunk);
        }
        let state_machine = KvStore::from_bytes(&bytes)?;
        if state_machine.applied_index() != meta.index {
            return Err(format!(
                "the staged snapshot through {} holds a state machine at {}",
                meta.index,
                state_machine.applied_index()
            ));
        }
        Ok(state_machine)
    }

    /// The term of the entry at the applied index (from the log, or the
    /// log's start when the applied index is the compaction point).
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index == self.log_start.index {
            return Some(self.log_start.term);
        }
        self.entry(index).map(|entry| entry.term)
    }

    /// The WAL is flushed: every asynchronous commit is durable.
    pub fn flush(&mut self) {
        self.flushed = None;
    }

    /// The applied index that survives a Postgres crash.
    pub fn flushed_applied(&self) -> LogIndex {
        match &self.flushed {
            None => self.state_machine.applied_index(),
            Some(Flushed::Mark(mark)) => mark.applied_index(),
            Some(Flushed::Copy(flushed)) => flushed.applied_index(),
        }
    }

    /// Whether an asynchronous commit is not yet durable.
    pub fn unflushed(&self) -> bool {
        self.flushed.is_some()
    }

    /// Postgres crashed: asynchronous commits not yet flushed are lost.
    /// Returns the applied index lost, if any.
    pub fn postgres_crash(&mut self) -> Option<(LogIndex, LogIndex)> {
        let flushed = match self.flushed.take()? {
            Flushed::Mark(mark) => self
                .state_machine
                .rolled_back(&mark)
                .expect("nothing was compacted since the mark"),
            Flushed::Copy(flushed) => *flushed,
        };
        let before = self.state_machine.applied_index();
        self.state_machine = flushed;
        let after = self.state_machine.applied_index();
        (after != before).then_some((after, before))
    }
}

/// How a transaction ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// It commits.
    Commit,
    /// A statement fails (or Postgres is away): nothing happened, the node
    /// retries.
    Fail,
    /// The connection drops during COMMIT: it happened or not (`happened`),
    /// and the node cannot tell; it retries.
    Unknown {
        /// Whether the commit took effect.
        happened: bool,
    },
    /// An error the node cannot interpret: it stops.
    Fatal,
}

/// A transaction in flight.
#[derive(Clone, Debug)]
pub struct Transaction<J> {
    /// What it carries out.
    pub job: J,
    /// When it ends (in world ticks).
    pub complete_at: u64,
    /// How it ends.
    pub fate: Fate,
    /// Earlier attempts of the same job.
    pub attempts: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftgres::core::{EntryPayload, NodeId};

    use crate::kv::{encode, Command, Envelope};

    fn entry(index: u64, term: u64, client_id: u64, sequence: u64) -> Entry {
        let envelope = Envelope {
            client_id,
            sequence,
            operation_id: index,
            attempt: 1,
            command: Command::Put {
                key: 1,
                value: index,
                lease: 0,
            },
        };
        Entry {
            term: Term(term),
            index: LogIndex(index),
            payload: EntryPayload::Command(encode(envelope)),
        }
    }

    fn settings(asynchronous_commit: bool) -> ApplySettings {
        ApplySettings {
            asynchronous_commit,
            session_expiry_entries: 4,
            session_expiry_stride: 4,
            compaction_entries: 1000,
            entries_per_write_max: raftgres::pipeline::WRITE_ENTRIES_MAX_DEFAULT,
            expiry_at_batch_end: false,
            apply_ahead: false,
            follower_apply_wait: std::time::Duration::ZERO,
        }
    }

    fn batch(entries: &[Entry]) -> ApplyBatch {
        ApplyBatch {
            entries: entries.to_vec(),
        }
    }

    fn append(store: &mut Store, entries: Vec<Entry>, term: u64) {
        let job = WriteJob {
            hard_state: Some(HardState {
                term: Term(term),
                voted_for: Some(NodeId(1)),
            }),
            entries,
            ..WriteJob::default()
        };
        store.write(&job).unwrap();
    }

    #[test]
    fn a_write_truncates_the_stored_suffix_and_compacts() {
        let mut store = Store::default();
        append(
            &mut store,
            (1..=3).map(|index| entry(index, 1, 0, 0)).collect(),
            1,
        );
        append(&mut store, vec![entry(3, 2, 0, 0)], 2);
        let terms: Vec<u64> = store.entries.iter().map(|entry| entry.term.0).collect();
        assert_eq!(terms, vec![1, 1, 2]);
        assert_eq!(store.hard_state.term, Term(2));
        let applied = store.entries[..2].to_vec();
        store.apply(&batch(&applied), settings(false)).unwrap();
        let point = SnapshotMeta {
            index: LogIndex(2),
            term: Term(1),
        };
        store
            .write(&WriteJob {
                compact_to: Some((point, Box::new(Membership::new([NodeId(1), NodeId(2)])))),
                ..WriteJob::default()
            })
            .unwrap();
        assert_eq!(store.log_start, point);
        assert_eq!(store.membership, Membership::new([NodeId(1), NodeId(2)]));
        assert_eq!(store.last(), (LogIndex(3), Term(2)));
    }

    #[test]
    fn a_lost_asynchronous_apply_is_replayed_from_the_log() {
        let mut store = Store::default();
        let entries: Vec<Entry> = (1..=4).map(|index| entry(index, 1, 0, 0)).collect();
        append(&mut store, entries.clone(), 1);
        store.apply(&batch(&entries[..2]), settings(true)).unwrap();
        assert!(store.unflushed());
        assert_eq!(store.postgres_crash(), Some((LogIndex(0), LogIndex(2))));
        let report = store.apply(&batch(&entries[2..]), settings(true)).unwrap();
        assert_eq!(report.applied.len(), 4, "the gap is replayed first");
        assert_eq!(store.state_machine.applied_index(), LogIndex(4));
    }

    #[test]
    fn a_postgres_crash_loses_the_unflushed_applies_a_compaction_included() {
        let compaction = Entry {
            term: Term(1),
            index: LogIndex(3),
            payload: EntryPayload::Command(encode(Envelope {
                client_id: 0,
                sequence: 0,
                operation_id: 3,
                attempt: 1,
                command: Command::Compact { revision: 3 },
            })),
        };
        let entries = vec![
            entry(1, 1, 0, 0),
            entry(2, 1, 0, 0),
            compaction,
            entry(4, 1, 0, 0),
        ];
        for flushed_through in [1, 2, 3] {
            let mut store = Store::default();
            append(&mut store, entries.clone(), 1);
            store
                .apply(&batch(&entries[..flushed_through]), settings(false))
                .unwrap();
            let flushed = store.state_machine.clone();
            for part in entries[flushed_through..].chunks(1) {
                store.apply(&batch(part), settings(true)).unwrap();
            }
            assert_eq!(store.state_machine.revisions().compacted, 3);
            assert_eq!(store.flushed_applied(), LogIndex(flushed_through as u64));
            store.postgres_crash();
            assert_eq!(
                store.state_machine, flushed,
                "flushed through {flushed_through}"
            );
        }
    }

    #[test]
    fn compaction_keeps_the_entries_of_applies_a_postgres_crash_lost() {
        let mut store = Store::default();
        let entries: Vec<Entry> = (1..=4).map(|index| entry(index, 1, 0, 0)).collect();
        append(&mut store, entries.clone(), 1);
        store.apply(&batch(&entries), settings(true)).unwrap();
        store.postgres_crash();
        let point = SnapshotMeta {
            index: LogIndex(4),
            term: Term(1),
        };
        store
            .write(&WriteJob {
                compact_to: Some((point, Box::new(Membership::new([NodeId(1)])))),
                ..WriteJob::default()
            })
            .unwrap();
        assert_eq!(store.log_start, SnapshotMeta::default(), "not compacted");
        assert_eq!(store.membership, Membership::default());
        let report = store.apply(&batch(&entries[3..]), settings(true)).unwrap();
        assert_eq!(report.applied.len(), 4, "the lost applies are replayed");
    }

    #[test]
    fn a_retried_apply_that_already_committed_answers_unknown() {
        let mut store = Store::default();
        let entries: Vec<Entry> = (1..=2).map(|index| entry(index, 1, 3, index)).collect();
        append(&mut store, entries.clone(), 1);
        store.apply(&batch(&entries), settings(false)).unwrap();
        let again = store.apply(&batch(&entries), settings(false)).unwrap();
        assert!(again.applied.is_empty());
        assert!(again
            .done
            .outcomes
            .iter()
            .all(|(_, _, outcome)| *outcome == ApplyOutcome::Unknown));
    }

    #[test]
    fn sessions_expire_at_the_same_entries_whatever_the_batches() {
        let entries: Vec<Entry> = (1..=12)
            .map(|index| entry(index, 1, index % 3 + 1, index))
            .collect();
        let mut one = Store::default();
        let mut many = Store::default();
        append(&mut one, entries.clone(), 1);
        append(&mut many, entries.clone(), 1);
        let one_report = one.apply(&batch(&entries), settings(false)).unwrap();
        let mut many_digests = Vec::new();
        for part in [&entries[..3], &entries[3..5], &entries[5..]] {
            let report = many.apply(&batch(part), settings(false)).unwrap();
            many_digests.extend(report.digests);
        }
        assert_eq!(one.state_machine, many.state_machine);
        for (index, digest) in one_report.digests {
            if let Some((_, other)) = many_digests.iter().find(|(at, _)| *at == index) {
                assert_eq!(digest, *other, "rows differ at {index}");
            }
        }
    }
}
