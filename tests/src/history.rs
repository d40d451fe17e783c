//! What the nemesis workload's clients did and were told: one [`Record`]
//! per operation, with its invocation and completion times (nanoseconds
//! since the campaign started) and its outcome.
//!
//! Every put and compare-and-swap writes a value unique in the campaign,
//! so a value read names the one write that produced it; a missing key
//! reads as [`VALUE_ABSENT`] and a delete is recorded as a write of it.

use std::time::Instant;

pub use raftgres_lincheck::VALUE_ABSENT;
use raftgres_proto::v1::ReadMode;

/// What an operation asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// Set the key to `value`.
    Put {
        /// The value (unique, never [`VALUE_ABSENT`]).
        value: u64,
    },
    /// Remove the key.
    Delete,
    /// Set the key to `new` if it holds `expected` ([`VALUE_ABSENT`]: the
    /// key must be missing).
    CompareAndSwap {
        /// The value the key must hold.
        expected: u64,
        /// The value to store (unique).
        new: u64,
    },
    /// Read the key in `mode`.
    Get {
        /// The read mode.
        mode: ReadMode,
    },
}

impl Request {
    /// Whether the request may change the key.
    pub fn is_write(&self) -> bool {
        !matches!(self, Request::Get { .. })
    }

    /// The value the write stores, if it stores one.
    pub fn written_value(&self) -> Option<u64> {
        match self {
            Request::Put { value } => Some(*value),
            Request::CompareAndSwap { new, .. } => Some(*new),
            Request::Delete => Some(VALUE_ABSENT),
            Request::Get { .. } => None,
        }
    }

    /// A short name for reports: put, delete, cas, get-linearizable, ...
    pub fn kind_name(&self) -> &'static str {
        match self {
            Request::Put { .. } => "put",
            Request::Delete => "delete",
            Request::CompareAndSwap { .. } => "cas",
            Request::Get {
                mode: ReadMode::Linearizable,
            } => "get-linearizable",
            Request::Get {
                mode: ReadMode::Lease,
            } => "get-lease",
            Request::Get {
                mode: ReadMode::Stale,
            } => "get-stale",
        }
    }
}

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// Answered.
    Ok,
    /// Refused in a way that says it was not applied (not the leader,
    /// invalid, too large).
    Failed,
    /// No answer that says either way: a write may or may not apply.
    Unknown,
}

impl Outcome {
    /// A short name for reports.
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::Unknown => "unknown",
        }
    }
}

/// One operation as a client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The worker that issued it (workers issue one operation at a time).
    pub worker: u64,
    /// The key (a number; the campaign names it `nemesis-{key}`).
    pub key: u64,
    /// The request.
    pub request: Request,
    /// Whether the write carried a client session (retries apply once).
    pub session: bool,
    /// The node a stale read was sent to.
    pub node: Option<u64>,
    /// How it ended.
    pub outcome: Outcome,
    /// When it was invoked, in ns since the campaign started.
    pub invoked_ns: u64,
    /// When the client stopped waiting for it, in ns.
    pub completed_ns: u64,
    /// For a read answered: the value ([`VALUE_ABSENT`] when missing).
    pub value_read: Option<u64>,
    /// For a compare-and-swap answered: whether it swapped.
    pub swapped: Option<bool>,
    /// For a write answered: the log index it was applied at; for a read
    /// that found the key: the index that wrote the value (`mod_index`).
    pub index: Option<u64>,
    /// The error, when it did not succeed.
    pub error: Option<String>,
}

impl Record {
    /// A record of `request` by `worker` on `key`, still to be completed.
    pub fn invoked(worker: u64, key: u64, request: Request, clock: &Clock) -> Record {
        let now = clock.now_ns();
        Record {
            worker,
            key,
            request,
            session: false,
            node: None,
            outcome: Outcome::Unknown,
            invoked_ns: now,
            completed_ns: now,
            value_read: None,
            swapped: None,
            index: None,
            error: None,
        }
    }

    /// Whether this is an answered write that took effect.
    pub fn acknowledged_write(&self) -> bool {
        self.outcome == Outcome::Ok
            && match self.request {
                Request::CompareAndSwap { .. } => self.swapped == Some(true),
                request => request.is_write(),
            }
    }
}

/// The campaign's clock: nanoseconds since it started.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    started: Instant,
}

impl Clock {
    /// A clock starting now.
    pub fn start() -> Clock {
        Clock {
            started: Instant::now(),
        }
    }

    /// Nanoseconds since the start.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The instant `ns` after the start.
    pub fn instant_at(&self, ns: u64) -> Instant {
        self.started + std::time::Duration::from_nanos(ns)
    }
}

/// Parses a value as the workload writes it (decimal); anything else
/// becomes `u64::MAX`, a value no write stores, so the checks flag it.
pub fn parse_value(bytes: &[u8]) -> u64 {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| text.parse::<u64>().ok())
        .filter(|value| *value != VALUE_ABSENT)
        .unwrap_or(u64::MAX)
}

/// The bytes the workload stores for `value`.
pub fn value_bytes(value: u64) -> Vec<u8> {
    value.to_string().into_bytes()
}

/// The key name of key number `key`.
pub fn key_name(key: u64) -> String {
    format!("nemesis-{key:06}")
}
