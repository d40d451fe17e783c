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

/// The apply side of the pipeline: at most one batch in flight, whether the
/// applier carries it or a log write does.
#[derive(Debug, Default)]
pub(super) struct Applies {
    /// When the batch in flight was handed out. Invariant: at most one
    /// batch is being applied.
    pub(super) started_at: Option<Instant>,
    /// Committed entries not yet handed out, in order.
    pub(super) next: Vec<Entry>,
}

impl Applies {
    /// A snapshot replaced everything up to `index`: entries gathered
    /// before it arrived are covered by it.
    pub(super) fn covered_by_snapshot(&mut self, index: LogIndex) {
        self.next.retain(|entry| entry.index > index);
    }

    /// Whether a batch is being applied.
    pub(super) fn in_flight(&self) -> bool {
        self.started_at.is_some()
    }

    /// The next batch, if no batch is in flight and there is one.
    pub(super) fn start(&mut self, now: Instant) -> Option<ApplyBatch> {
        if self.in_flight() || self.next.is_empty() {
            return None;
        }
        self.started_at = Some(now);
        Some(ApplyBatch {
            entries: std::mem::take(&mut self.next),
        })
    }

    /// The batch in flight is applied.
    pub(super) fn done(&mut self) {
        self.started_at = None;
    }
}
