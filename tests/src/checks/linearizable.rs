//! Writes, Linearizable reads and Lease reads are linearizable (Herlihy and
//! Wing; the Raft paper's section 8): judged by `raftgres-lincheck`, the
//! very checker the simulator runs. A write whose outcome is unknown may
//! have taken effect at any point after its invocation, or never; one that
//! failed in a way that says it was not applied is left out; Stale reads
//! promise less and have their own check ([`super::stale_reads`]).

use raftgres_lincheck::{check as check_history, Input, Operation, Output, Verdict};
use raftgres_proto::v1::ReadMode;

use super::Violation;
use crate::history::{Outcome, Record, Request, VALUE_ABSENT};

/// What the search concluded, beyond the violations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Coverage {
    /// Operations given to the checker.
    pub operations: usize,
    /// The key whose search ran out of budget, if one did: the history was
    /// not judged (reported, not a violation).
    pub too_expensive_key: Option<u64>,
}

/// Checks `history` with at most `steps_max` search steps per key.
pub fn check(history: &[Record], steps_max: u64) -> (Vec<Violation>, Coverage) {
    let operations: Vec<Operation> = history.iter().filter_map(operation_of).collect();
    let mut coverage = Coverage {
        operations: operations.len(),
        too_expensive_key: None,
    };
    let violations = match check_history(&operations, steps_max) {
        Verdict::Linearizable => Vec::new(),
        Verdict::TooExpensive { key } => {
            coverage.too_expensive_key = Some(key);
            Vec::new()
        }
        Verdict::NotLinearizable { key, operations } => {
            let described: Vec<String> = operations.iter().map(describe).collect();
            vec![Violation {
                check: "linearizable",
                message: format!(
                    "no order of the {} operations on key {key} explains their answers:\n  {}",
                    operations.len(),
                    described.join("\n  ")
                ),
            }]
        }
    };
    (violations, coverage)
}

/// The checker's view of a record, or `None` when it constrains nothing
/// (a Stale read, a read without an answer, a write refused outright).
fn operation_of(record: &Record) -> Option<Operation> {
    let returned_at = match record.outcome {
        Outcome::Ok => Some(record.completed_ns),
        Outcome::Unknown => None,
        Outcome::Failed => return None,
    };
    let (input, output) = match record.request {
        Request::Get {
            mode: ReadMode::Stale,
        } => return None,
        Request::Get { .. } => {
            let value = record.value_read.filter(|_| returned_at.is_some())?;
            (Input::Get, Output::Value(value))
        }
        Request::Put { value } => (Input::Put { value }, Output::Done),
        Request::Delete => (
            Input::Put {
                value: VALUE_ABSENT,
            },
            Output::Done,
        ),
        Request::CompareAndSwap { expected, new } => (
            Input::CompareAndSwap { expected, new },
            match record.swapped {
                Some(swapped) if returned_at.is_some() => Output::Swapped(swapped),
                _ => Output::Unknown,
            },
        ),
    };
    let output = if returned_at.is_none() {
        Output::Unknown
    } else {
        output
    };
    Some(Operation {
        client: record.worker,
        key: record.key,
        input,
        output,
        invoked_at: record.invoked_ns,
        returned_at,
    })
}

fn describe(operation: &Operation) -> String {
    let returned = operation.returned_at.map_or("never".to_string(), |at| {
        format!("{:.3} ms", at as f64 / 1e6)
    });
    format!(
        "worker {} {:?} -> {:?}, invoked {:.3} ms, returned {returned}",
        operation.client,
        operation.input,
        operation.output,
        operation.invoked_at as f64 / 1e6
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::test_records::{delete, get, put, put_unknown};

    const BUDGET: u64 = 1_000_000;

    #[test]
    fn a_lease_read_that_misses_a_completed_write_is_a_violation() {
        let history = [
            put(1, 5, 10, (0, 10)),
            put(1, 6, 11, (20, 30)),
            get(1, ReadMode::Lease, 5, Some(10), (40, 50)),
        ];
        let (violations, coverage) = check(&history, BUDGET);
        assert_eq!(coverage.operations, 3);
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert!(violations[0].message.contains("key 1"), "{violations:?}");
    }

    #[test]
    fn stale_reads_and_refused_writes_are_left_to_other_checks() {
        let mut refused = put(1, 7, 0, (60, 70));
        refused.outcome = Outcome::Failed;
        let history = [
            put(1, 5, 10, (0, 10)),
            put(1, 6, 11, (20, 30)),
            get(1, ReadMode::Stale, 5, Some(10), (40, 50)),
            refused,
            get(1, ReadMode::Linearizable, 6, Some(11), (80, 90)),
        ];
        assert_eq!(check(&history, BUDGET).0, []);
    }

    #[test]
    fn an_unknown_write_may_appear_later_and_a_delete_empties_the_key() {
        let history = [
            put(1, 5, 10, (0, 10)),
            put_unknown(1, 6, (20, 30)),
            get(1, ReadMode::Linearizable, 6, Some(12), (40, 50)),
            delete(1, 13, (60, 70)),
            get(1, ReadMode::Linearizable, VALUE_ABSENT, None, (80, 90)),
        ];
        assert_eq!(check(&history, BUDGET).0, []);
        let resurrected = [
            put(1, 5, 10, (0, 10)),
            delete(1, 13, (60, 70)),
            get(1, ReadMode::Linearizable, 5, Some(10), (80, 90)),
        ];
        assert_eq!(check(&resurrected, BUDGET).0.len(), 1);
    }
}
