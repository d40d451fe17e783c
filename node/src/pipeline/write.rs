//! The log write: one in flight, later work merged into the next one
//! (group commit), and the messages that wait for it to be durable.

use super::apply::{ApplyBatch, ApplyDone};
use super::clock::Instant;
use crate::core::{Entry, HardState, LogIndex, Membership, Message, Snapshot, SnapshotMeta, Term};

/// One ordered write: everything the core asked to persist since the last
/// write started, and the messages that wait for it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteJob {
    /// The hard state to store, when it changed.
    pub hard_state: Option<HardState>,
    /// A leader's snapshot to install before `entries` (state machine, log
    /// reset and applied index together).
    pub snapshot: Option<Snapshot>,
    /// Contiguous; replaces the stored log from `entries[0].index` on.
    pub entries: Vec<Entry>,
    /// Messages that may leave only once this write is durable.
    pub messages_after_persist: Vec<Message>,
    /// The (index, term) to report to the core once durable.
    pub persist_point: Option<(LogIndex, Term)>,
    /// Delete stored entries up to here (the node's own snapshot covers
    /// them), and store the membership in force there with it.
    /// Invariant: never above the applied index.
    pub compact_to: Option<(SnapshotMeta, Box<Membership>)>,
    /// Committed entries to apply in the same transaction (one COMMIT for
    /// the log and the state machine). Attached when the write starts, so
    /// never part of a queued job; never with `snapshot`.
    pub apply: Option<ApplyBatch>,
}

impl WriteJob {
    /// Folds a later job into this one, keeping the result equal to
    /// writing both in order.
    pub fn merge(&mut self, later: WriteJob) {
        debug_assert!(
            self.apply.is_none() && later.apply.is_none(),
            "applies are attached when a write starts, never to a queued job"
        );
        if later.snapshot.is_some() {
            self.entries.clear();
            self.snapshot = later.snapshot;
        }
        if let Some(first) = later.entries.first() {
            let first_index = first.index;
            self.entries.retain(|entry| entry.index < first_index);
            self.entries.extend(later.entries);
        }
        self.hard_state = later.hard_state.or(self.hard_state);
        self.messages_after_persist
            .extend(later.messages_after_persist);
        self.persist_point = later.persist_point.or(self.persist_point);
        // The later compaction point covers the earlier one.
        self.compact_to = [self.compact_to.take(), later.compact_to]
            .into_iter()
            .flatten()
            .max_by_key(|(point, _)| point.index);
    }

    /// Whether the job changes anything durable besides the applies a
    /// starting write carries.
    pub fn writes_anything(&self) -> bool {
        self.hard_state.is_some()
            || self.snapshot.is_some()
            || !self.entries.is_empty()
            || self.compact_to.is_some()
    }
}

/// What the storage reports after a durable write.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteDone {
    /// The job's persist point.
    pub persist_point: Option<(LogIndex, Term)>,
    /// The job's messages, now free to leave.
    pub messages_after_persist: Vec<Message>,
    /// The leader's snapshot this write installed.
    pub installed: Option<Snapshot>,
    /// The report of the job's apply batch, committed with it.
    pub applied: Option<ApplyDone>,
}

impl WriteDone {
    /// The report of carrying out `job` in full; `applied` reports its
    /// apply batch, when it carried one.
    pub fn of(job: WriteJob, applied: Option<ApplyDone>) -> WriteDone {
        debug_assert_eq!(
            job.apply.is_some(),
            applied.is_some(),
            "a write reports its apply batch exactly when it carried one"
        );
        WriteDone {
            persist_point: job.persist_point,
            messages_after_persist: job.messages_after_persist,
            installed: job.snapshot,
            applied,
        }
    }
}

/// The write side of the pipeline: at most one job in flight.
#[derive(Debug)]
pub(super) struct Writes {
    /// When the job in flight was handed out; `None` when none is.
    /// Invariant: at most one job is being carried out.
    pub(super) started_at: Option<Instant>,
    /// Everything produced since the job in flight started.
    pub(super) next: Option<WriteJob>,
    /// Whether the job in flight carries an apply batch.
    pub(super) carries_apply: bool,
    /// Most entries one job hands out (see `PipelineConfig`).
    pub(super) entries_max: usize,
    /// Planted bug: a snapshot install goes out without the hard state of
    /// its job, which follows in the next write.
    pub(super) install_before_hard_state: bool,
}

impl Default for Writes {
    fn default() -> Writes {
        Writes {
            started_at: None,
            next: None,
            carries_apply: false,
            entries_max: super::WRITE_ENTRIES_MAX_DEFAULT,
            install_before_hard_state: false,
        }
    }
}

impl Writes {
    /// Queues `job` behind the one in flight, merging it into the next.
    pub(super) fn queue(&mut self, job: WriteJob) {
        match &mut self.next {
            Some(next) => next.merge(job),
            None => self.next = Some(job),
        }
    }

    /// Whether a write is being carried out.
    pub(super) fn in_flight(&self) -> bool {
        self.started_at.is_some()
    }

    /// Whether every write handed out so far is durable and nothing waits.
    pub(super) fn idle(&self) -> bool {
        !self.in_flight() && self.next.is_none()
    }

    /// The next job to carry out, if the writer is free and the job may
    /// start: a snapshot install replaces the state machine, so it waits
    /// until no apply transaction runs against it. A job of more than
    /// `entries_max` entries goes out in parts: the first `entries_max`
    /// (with the hard state, snapshot and compaction) durable up to their
    /// last entry, the rest queued with the messages that wait for all of
    /// it, and later work merged behind it.
    pub(super) fn start(&mut self, apply_in_flight: bool, now: Instant) -> Option<WriteJob> {
        let installs = self.next.as_ref().is_some_and(|job| job.snapshot.is_some());
        if self.in_flight() || (installs && apply_in_flight) {
            return None;
        }
        let mut job = self.next.take()?;
        if self.install_before_hard_state && job.snapshot.is_some() && job.hard_state.is_some() {
            // Planted bug: everything but the hard state now, the hard state
            // (with the persist point and the messages waiting on it) next.
            let rest = WriteJob {
                hard_state: job.hard_state.take(),
                entries: std::mem::take(&mut job.entries),
                messages_after_persist: std::mem::take(&mut job.messages_after_persist),
                persist_point: job.persist_point.take(),
                compact_to: job.compact_to.take(),
                snapshot: None,
                apply: None,
            };
            self.next = Some(rest);
        }
        if job.entries.len() > self.entries_max {
            let rest = WriteJob {
                entries: job.entries.split_off(self.entries_max),
                messages_after_persist: std::mem::take(&mut job.messages_after_persist),
                persist_point: job.persist_point.take(),
                ..WriteJob::default()
            };
            let last = job.entries.last().expect("entries_max is at least 1");
            job.persist_point = Some((last.index, last.term));
            debug_assert!(self.next.is_none(), "the job was taken from next");
            self.next = Some(rest);
        }
        self.started_at = Some(now);
        Some(job)
    }

    /// The write in flight is durable; returns whether it carried an
    /// apply batch.
    pub(super) fn done(&mut self) -> bool {
        self.started_at = None;
        std::mem::take(&mut self.carries_apply)
    }

    /// Whether the write in flight has been waiting for at least `limit`.
    pub(super) fn stalled(&self, now: Instant, limit: std::time::Duration) -> bool {
        self.started_at
            .is_some_and(|started| now.0.saturating_sub(started.0) >= limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{EntryPayload, NodeId};

    fn entries(first: u64, last: u64, term: u64) -> Vec<Entry> {
        (first..=last)
            .map(|index| Entry {
                term: Term(term),
                index: LogIndex(index),
                payload: EntryPayload::Blank,
            })
            .collect()
    }

    #[test]
    fn merging_keeps_the_effect_of_writing_in_order() {
        let mut job = WriteJob {
            hard_state: Some(HardState {
                term: Term(1),
                voted_for: Some(NodeId(1)),
            }),
            entries: entries(1, 5, 1),
            persist_point: Some((LogIndex(5), Term(1))),
            ..WriteJob::default()
        };
        job.merge(WriteJob {
            hard_state: Some(HardState {
                term: Term(2),
                voted_for: None,
            }),
            entries: entries(4, 6, 2),
            persist_point: Some((LogIndex(6), Term(2))),
            ..WriteJob::default()
        });
        job.merge(WriteJob::default());
        let terms: Vec<(u64, u64)> = job
            .entries
            .iter()
            .map(|entry| (entry.index.0, entry.term.0))
            .collect();
        assert_eq!(terms, vec![(1, 1), (2, 1), (3, 1), (4, 2), (5, 2), (6, 2)]);
        assert_eq!(
            job.hard_state,
            Some(HardState {
                term: Term(2),
                voted_for: None
            })
        );
        assert_eq!(job.persist_point, Some((LogIndex(6), Term(2))));
    }

    #[test]
    fn merging_keeps_the_later_compaction_point() {
        let point = |index| {
            let meta = SnapshotMeta {
                index: LogIndex(index),
                term: Term(1),
            };
            (meta, Box::new(Membership::new([NodeId(index)])))
        };
        let mut job = WriteJob::default();
        job.merge(WriteJob {
            compact_to: Some(point(10)),
            ..WriteJob::default()
        });
        assert_eq!(job.compact_to, Some(point(10)));
        job.merge(WriteJob {
            compact_to: Some(point(20)),
            ..WriteJob::default()
        });
        assert_eq!(job.compact_to, Some(point(20)), "the later point is kept");
        job.merge(WriteJob::default());
        assert_eq!(
            job.compact_to,
            Some(point(20)),
            "a job without one keeps it"
        );
    }

    #[test]
    fn a_snapshot_install_waits_for_the_apply_in_flight() {
        let mut writes = Writes::default();
        writes.queue(WriteJob {
            snapshot: Some(Snapshot {
                membership: Default::default(),
                meta: SnapshotMeta {
                    index: LogIndex(5),
                    term: Term(1),
                },
            }),
            ..WriteJob::default()
        });
        assert_eq!(writes.start(true, Instant::default()), None);
        assert!(writes.start(false, Instant::default()).is_some());
        assert!(writes.in_flight());
        writes.queue(WriteJob {
            entries: entries(6, 6, 1),
            ..WriteJob::default()
        });
        assert_eq!(
            writes.start(false, Instant::default()),
            None,
            "one write at a time"
        );
    }

    /// A catching-up follower merges many appends behind the write in
    /// flight; storage takes at most `entries_max` entries in one append
    /// (storage-pg refuses more and the node stops), so the run goes out
    /// in parts, each durable up to its own last entry, and the messages
    /// that claim the whole run wait for its last part.
    #[test]
    fn a_long_run_of_entries_is_written_in_parts() {
        let mut writes = Writes {
            entries_max: 3,
            ..Writes::default()
        };
        let acknowledgement = Message {
            from: NodeId(2),
            to: NodeId(1),
            term: Term(2),
            body: crate::core::MessageBody::AppendResponse {
                index: LogIndex(7),
                rejected: false,
                reject_hint_index: LogIndex(0),
                reject_hint_term: Term(0),
            },
        };
        let hard_state = HardState {
            term: Term(2),
            voted_for: None,
        };
        writes.queue(WriteJob {
            hard_state: Some(hard_state),
            entries: entries(1, 7, 2),
            messages_after_persist: vec![acknowledgement.clone()],
            persist_point: Some((LogIndex(7), Term(2))),
            ..WriteJob::default()
        });
        let now = Instant::default();
        let first = writes.start(false, now).unwrap();
        assert_eq!(first.entries, entries(1, 3, 2));
        assert_eq!(first.hard_state, Some(hard_state));
        assert_eq!(first.persist_point, Some((LogIndex(3), Term(2))));
        assert!(first.messages_after_persist.is_empty());
        // Work arriving meanwhile merges behind the rest.
        writes.queue(WriteJob {
            entries: entries(8, 8, 2),
            persist_point: Some((LogIndex(8), Term(2))),
            ..WriteJob::default()
        });
        writes.done();
        let second = writes.start(false, now).unwrap();
        assert_eq!(second.entries, entries(4, 6, 2));
        assert_eq!(second.hard_state, None);
        assert_eq!(second.persist_point, Some((LogIndex(6), Term(2))));
        assert!(second.messages_after_persist.is_empty());
        writes.done();
        let last = writes.start(false, now).unwrap();
        assert_eq!(last.entries, entries(7, 8, 2));
        assert_eq!(last.persist_point, Some((LogIndex(8), Term(2))));
        assert_eq!(last.messages_after_persist, vec![acknowledgement]);
        writes.done();
        assert!(writes.idle());
    }
}
