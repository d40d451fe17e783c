//! The log write: one in flight, later work merged into bounded jobs
//! (group commit), and the messages that wait for it to be durable.

use std::collections::VecDeque;

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
    /// Everything produced since the job in flight started, in order:
    /// later work merges into the last job while the two together carry
    /// at most `entries_max` entries, and starts a new one beyond, so
    /// that the acknowledgements of a follower catching up leave after
    /// each bounded write rather than after all of them.
    pub(super) queued: VecDeque<WriteJob>,
    /// Whether the job in flight carries an apply batch.
    pub(super) carries_apply: bool,
    /// Whether what is queued was queued while a write was in flight.
    pub(super) queued_while_busy: bool,
    /// Whether the job in flight waited behind another: the writer is
    /// busy back to back.
    pub(super) started_behind: bool,
    /// Whether the job in flight compacts the log: its check of the
    /// stored applied index waits for any apply transaction that moved it.
    pub(super) compacting: bool,
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
            queued: VecDeque::new(),
            carries_apply: false,
            queued_while_busy: false,
            started_behind: false,
            compacting: false,
            entries_max: super::WRITE_ENTRIES_MAX_DEFAULT,
            install_before_hard_state: false,
        }
    }
}

impl Writes {
    /// Queues `job` behind the one in flight: merged into the last
    /// queued job while the two carry at most `entries_max` entries, a
    /// job of its own beyond.
    pub(super) fn queue(&mut self, job: WriteJob) {
        self.queued_while_busy |= self.in_flight();
        match self.queued.back_mut() {
            Some(last) if last.entries.len() + job.entries.len() <= self.entries_max => {
                last.merge(job)
            }
            _ => self.queued.push_back(job),
        }
    }

    /// Whether nothing waits to be written.
    pub(super) fn nothing_queued(&self) -> bool {
        self.queued.is_empty()
    }

    /// Whether a write is being carried out.
    pub(super) fn in_flight(&self) -> bool {
        self.started_at.is_some()
    }

    /// Whether every write handed out so far is durable and nothing waits.
    pub(super) fn idle(&self) -> bool {
        !self.in_flight() && self.queued.is_empty()
    }

    /// The next job to carry out, if the writer is free and the job may
    /// start: a snapshot install replaces the state machine, so it waits
    /// until no apply transaction runs against it. A single job of more
    /// than `entries_max` entries (one append message can carry more)
    /// goes out in parts: the first `entries_max` (with the hard state,
    /// snapshot and compaction) durable up to their last entry, the rest
    /// queued first with the messages that wait for all of it.
    pub(super) fn start(&mut self, apply_in_flight: bool, now: Instant) -> Option<WriteJob> {
        let installs = self
            .queued
            .front()
            .is_some_and(|job| job.snapshot.is_some());
        if self.in_flight() || (installs && apply_in_flight) {
            return None;
        }
        let mut job = self.queued.pop_front()?;
        self.started_behind = self.queued_while_busy;
        self.queued_while_busy &= !self.queued.is_empty();
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
            self.queued.push_front(rest);
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
            self.queued.push_front(rest);
        }
        self.started_at = Some(now);
        self.compacting = job.compact_to.is_some();
        Some(job)
    }

    /// The write in flight is durable; returns whether it carried an
    /// apply batch.
    pub(super) fn done(&mut self) -> bool {
        self.started_at = None;
        self.compacting = false;
        std::mem::take(&mut self.carries_apply)
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

    /// A follower catching up receives appends faster than one write
    /// completes; storage takes at most `entries_max` entries in one
    /// append (storage-pg refuses more and the node stops). Queued work
    /// forms jobs of at most that many entries, each with the
    /// acknowledgements of its own appends, so they leave after each
    /// bounded write rather than after the whole run.
    #[test]
    fn queued_appends_form_bounded_jobs_each_with_its_acknowledgements() {
        let mut writes = Writes {
            entries_max: 4,
            ..Writes::default()
        };
        let now = Instant::default();
        writes.queue(WriteJob {
            entries: entries(1, 1, 2),
            persist_point: Some((LogIndex(1), Term(2))),
            ..WriteJob::default()
        });
        let first = writes.start(false, now).unwrap();
        assert_eq!(first.entries, entries(1, 1, 2));
        // Three appends of two entries each arrive while it is written.
        for (from, to) in [(2, 3), (4, 5), (6, 7)] {
            writes.queue(WriteJob {
                entries: entries(from, to, 2),
                messages_after_persist: vec![acknowledgement(to)],
                persist_point: Some((LogIndex(to), Term(2))),
                ..WriteJob::default()
            });
        }
        writes.done();
        let second = writes.start(false, now).unwrap();
        assert_eq!(second.entries, entries(2, 5, 2));
        assert_eq!(second.persist_point, Some((LogIndex(5), Term(2))));
        assert_eq!(
            second.messages_after_persist,
            vec![acknowledgement(3), acknowledgement(5)],
            "the acknowledgements of the appends this write holds, no more"
        );
        writes.done();
        let third = writes.start(false, now).unwrap();
        assert_eq!(third.entries, entries(6, 7, 2));
        assert_eq!(third.messages_after_persist, vec![acknowledgement(7)]);
        writes.done();
        assert!(writes.idle());
    }

    /// One job can still carry more than `entries_max` entries (a single
    /// append message may); it goes out in parts, each durable up to its
    /// own last entry, and the messages that claim the whole job wait for
    /// its last part.
    #[test]
    fn a_job_beyond_the_bound_is_written_in_parts() {
        let mut writes = Writes {
            entries_max: 3,
            ..Writes::default()
        };
        let hard_state = HardState {
            term: Term(2),
            voted_for: None,
        };
        writes.queue(WriteJob {
            hard_state: Some(hard_state),
            entries: entries(1, 7, 2),
            messages_after_persist: vec![acknowledgement(7)],
            persist_point: Some((LogIndex(7), Term(2))),
            ..WriteJob::default()
        });
        let now = Instant::default();
        let mut parts = Vec::new();
        while let Some(part) = writes.start(false, now) {
            parts.push(part);
            writes.done();
        }
        let spans: Vec<(u64, u64)> = parts
            .iter()
            .map(|part| {
                (
                    part.entries[0].index.0,
                    part.entries.last().unwrap().index.0,
                )
            })
            .collect();
        assert_eq!(spans, vec![(1, 3), (4, 6), (7, 7)]);
        let persisted: Vec<Option<(LogIndex, Term)>> =
            parts.iter().map(|part| part.persist_point).collect();
        assert_eq!(
            persisted,
            vec![
                Some((LogIndex(3), Term(2))),
                Some((LogIndex(6), Term(2))),
                Some((LogIndex(7), Term(2))),
            ]
        );
        let messages: Vec<usize> = parts
            .iter()
            .map(|part| part.messages_after_persist.len())
            .collect();
        assert_eq!(
            messages,
            vec![0, 0, 1],
            "the acknowledgement waits for the last part"
        );
        assert_eq!(parts[0].hard_state, Some(hard_state));
        assert!(parts[1..].iter().all(|part| part.hard_state.is_none()));
    }

    fn acknowledgement(index: u64) -> Message {
        Message {
            from: NodeId(2),
            to: NodeId(1),
            term: Term(2),
            body: crate::core::MessageBody::AppendResponse {
                index: LogIndex(index),
                rejected: false,
                reject_hint_index: LogIndex(0),
                reject_hint_term: Term(0),
            },
        }
    }
}
