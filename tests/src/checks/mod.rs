//! The checks a nemesis campaign runs on its history and on the nodes'
//! databases, one property per file. Each returns the violations it found;
//! each file's tests feed it a history or a state with a known violation.
//!
//! - [`linearizable`]: writes, Linearizable and Lease reads admit one
//!   order consistent with real time (the simulator's checker).
//! - [`stale_reads`]: Stale reads return only written values and never go
//!   back in time on one node.
//! - [`lost_writes`]: no acknowledged write is missing at the end.
//! - [`applied_once`]: no write took effect at two log indexes.
//! - [`convergence`]: after healing, every final member holds the same
//!   applied index, state machine rows and session rows (read from its
//!   Postgres); removed nodes owe nothing.
//! - [`panics`]: no node process panicked (read from every node's log).

pub mod applied_once;
pub mod convergence;
pub mod linearizable;
pub mod lost_writes;
pub mod panics;
pub mod stale_reads;

/// A property that did not hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The check's name (its file's name).
    pub check: &'static str,
    /// What went wrong, naming keys, values, nodes and indexes.
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}: {}", self.check, self.message)
    }
}

/// Records for the checks' tests.
#[cfg(test)]
pub(crate) mod test_records {
    use crate::history::{Outcome, Record, Request, VALUE_ABSENT};
    use raftgres_proto::v1::ReadMode;

    fn record(key: u64, request: Request, invoked_ns: u64, completed_ns: u64) -> Record {
        Record {
            worker: 1,
            key,
            request,
            session: true,
            node: None,
            outcome: Outcome::Ok,
            invoked_ns,
            completed_ns,
            value_read: None,
            swapped: None,
            index: None,
            error: None,
        }
    }

    /// An acknowledged put of `value` at log `index`.
    pub(crate) fn put(key: u64, value: u64, index: u64, at: (u64, u64)) -> Record {
        Record {
            index: Some(index),
            ..record(key, Request::Put { value }, at.0, at.1)
        }
    }

    /// An acknowledged delete at log `index`.
    pub(crate) fn delete(key: u64, index: u64, at: (u64, u64)) -> Record {
        Record {
            index: Some(index),
            ..record(key, Request::Delete, at.0, at.1)
        }
    }

    /// A put whose outcome is unknown.
    pub(crate) fn put_unknown(key: u64, value: u64, at: (u64, u64)) -> Record {
        Record {
            outcome: Outcome::Unknown,
            ..record(key, Request::Put { value }, at.0, at.1)
        }
    }

    /// A read in `mode` that saw `value` written at `mod_index` (at `node`
    /// for a stale read).
    pub(crate) fn get(
        key: u64,
        mode: ReadMode,
        value: u64,
        mod_index: Option<u64>,
        at: (u64, u64),
    ) -> Record {
        let mut read = record(key, Request::Get { mode }, at.0, at.1);
        read.value_read = Some(value);
        read.index = if value == VALUE_ABSENT {
            None
        } else {
            mod_index
        };
        read
    }
}
