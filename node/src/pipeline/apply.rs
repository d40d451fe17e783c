//! Applying committed entries: one apply batch in flight, later committed
//! entries gathered into the next, and what each batch reports back.

use super::clock::Instant;
use crate::core::{Entry, LogIndex, Term};

/// How a committed command ended, for the client that proposed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// Applied: the state machine's response.
    Response(Vec<u8>),
    /// A retry of a command already applied at `first_index`: its response.
    Repeated {
        /// The first application's response.
        response: Vec<u8>,
        /// Where the command was first applied.
        first_index: LogIndex,
    },
    /// Refused deterministically (a stale session sequence).
    Refused(String),
    /// Applied before a reconnect lost its response; retry with the same
    /// session to get it.
    Unknown,
}

/// Committed entries to apply in one transaction, on the applier's own
/// connection (`Output::Apply`) or inside a log write (`WriteJob::apply`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyBatch {
    /// Consecutive committed entries, durable on this node. Never empty.
    pub entries: Vec<Entry>,
}

/// What the storage reports after a committed apply transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyDone {
    /// The applied index now durable (or, for asynchronous commits,
    /// committed) with the state machine's changes.
    pub applied: LogIndex,
    /// One outcome per entry of the batch, in order; none when they were
    /// reported before the COMMIT (`Input::Outcomes`).
    pub outcomes: Vec<(LogIndex, Term, ApplyOutcome)>,
}

/// Whether an apply transaction commits without waiting for its WAL to be
/// flushed (`synchronous_commit = off`): when the node is configured so
/// (`apply_async_commit`), and always for the first attempt at a batch a
/// leader applied ahead of its commit (`Output::ApplyAhead`: a lone
/// client's write, never one of a busy leader's stream). Its clients are
/// answered before its COMMIT anyway, and its flush would hold up the
/// leader's next log write, whose own flush queues behind it. The entries
/// it applies are durable in the log, so a Postgres crash that loses it
/// has them applied again, and reads refuse until then
/// ([`super::check_read_covered`]). A retry commits as configured.
pub fn commits_without_flush(configured: bool, first_attempt_ahead: bool) -> bool {
    configured || first_attempt_ahead
}

/// A batch a leader handed its applier ahead of the batch's commit
/// (`Output::ApplyAhead`): the applier computes its outcomes while the
/// entries replicate, and reports or commits nothing until the pipeline
/// confirms it (`Output::ConfirmApply`) once the commit reached its last
/// entry, or abandons it (`Output::AbandonApply`) when leadership was
/// lost first.
#[derive(Debug)]
pub(super) struct Ahead {
    /// Its last entry's index and term. A leader never changes its own
    /// log, so the entry committed at `last` with this term is the batch's
    /// last, and by log matching so are the ones before it.
    pub(super) last: (LogIndex, Term),
    /// The entries of the batch the core handed out as committed since,
    /// in order: applied by the batch once confirmed, queued for the next
    /// batch if it is abandoned.
    pub(super) committed: Vec<Entry>,
    /// Whether `Output::ConfirmApply` went out.
    pub(super) confirmed: bool,
    /// Whether `Output::AbandonApply` went out.
    pub(super) abandoning: bool,
}

/// The apply side of the pipeline: at most one batch in flight, whether the
/// applier carries it or a log write does.
#[derive(Debug, Default)]
pub(super) struct Applies {
    /// When the batch in flight was handed out, or for a batch handed out
    /// ahead, confirmed (its wait for the commit is not storage's).
    /// Invariant: at most one batch is being applied.
    pub(super) started_at: Option<Instant>,
    /// Committed entries not yet handed out, in order.
    pub(super) next: Vec<Entry>,
    /// The batch handed out ahead of its commit, until it is applied or
    /// abandoned. Invariant: while it is, no other batch is in flight.
    pub(super) ahead: Option<Ahead>,
    /// Until when a follower's entries in `next` wait before a log write
    /// carries them or they get a transaction of their own (see
    /// `Pipeline::apply_due`); set while they wait.
    pub(super) due_at: Option<Instant>,
    /// Batches that waited so: then carried by a write, or applied alone.
    pub(super) waits: [u64; 2],
}

impl Applies {
    /// A snapshot replaced everything up to `index`: entries gathered
    /// before it arrived are covered by it.
    pub(super) fn covered_by_snapshot(&mut self, index: LogIndex) {
        self.next.retain(|entry| entry.index > index);
        if self.next.is_empty() {
            self.due_at = None;
        }
        if let Some(ahead) = &mut self.ahead {
            ahead.committed.retain(|entry| entry.index > index);
        }
    }

    /// Whether a batch is being applied (or waits for its confirmation).
    pub(super) fn in_flight(&self) -> bool {
        self.started_at.is_some() || self.ahead.is_some()
    }

    /// The core handed out `entries` as committed: a batch handed out
    /// ahead holds those it covers, the rest wait for the next batch.
    pub(super) fn committed(&mut self, entries: Vec<Entry>) {
        match &mut self.ahead {
            Some(ahead) => {
                for entry in entries {
                    if entry.index <= ahead.last.0 {
                        ahead.committed.push(entry);
                    } else {
                        self.next.push(entry);
                    }
                }
            }
            None => self.next.extend(entries),
        }
    }

    /// The batch handed out ahead, if the commit reached its last entry
    /// (`early`: its first, a planted bug) and it was neither confirmed
    /// nor abandoned: confirmed now.
    pub(super) fn confirm_ahead(&mut self, now: Instant, early: bool) -> bool {
        let Some(ahead) = &mut self.ahead else {
            return false;
        };
        if ahead.confirmed || ahead.abandoning {
            return false;
        }
        let reached = match ahead.committed.last() {
            Some(entry) if early => entry.index <= ahead.last.0,
            Some(entry) => (entry.index, entry.term) == ahead.last,
            None => false,
        };
        if reached {
            ahead.confirmed = true;
            self.started_at = Some(now);
        }
        reached
    }

    /// The batch handed out ahead is to be abandoned, if there is one that
    /// was not confirmed (nor abandoned already).
    pub(super) fn abandon_ahead(&mut self) -> bool {
        match &mut self.ahead {
            Some(ahead) if !ahead.confirmed && !ahead.abandoning => {
                ahead.abandoning = true;
                true
            }
            _ => false,
        }
    }

    /// The applier rolled the batch handed out ahead back: the committed
    /// entries it held go first in the next batch.
    pub(super) fn abandoned(&mut self) {
        let ahead = self
            .ahead
            .take()
            .expect("an abandoned apply was handed out ahead");
        self.started_at = None;
        let mut next = ahead.committed;
        next.append(&mut self.next);
        self.next = next;
    }

    /// The next batch, if no batch is in flight and there is one, for a
    /// log write to carry (`by_write`) or alone.
    pub(super) fn start(&mut self, now: Instant, by_write: bool) -> Option<ApplyBatch> {
        if self.in_flight() || self.next.is_empty() {
            return None;
        }
        if self.due_at.take().is_some() {
            self.waits[usize::from(!by_write)] += 1;
        }
        self.started_at = Some(now);
        Some(ApplyBatch {
            entries: std::mem::take(&mut self.next),
        })
    }

    /// The batch in flight is applied.
    pub(super) fn done(&mut self) {
        assert!(
            self.ahead.as_ref().is_none_or(|ahead| ahead.confirmed),
            "an apply handed out ahead was reported done before its confirmation"
        );
        self.started_at = None;
        self.ahead = None;
    }
}
