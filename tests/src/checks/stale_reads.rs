//! Stale reads are served from a node's own state machine without asking
//! the leader, so they may lag; what they promise (the client API's
//! READ_MODE_STALE) is that they return only values that were written, and,
//! since a node applies its log in order and keeps what it applied in
//! Postgres, that one node's answers never go back in time: once a read at
//! node N returned the value written at index i, a later read of that key
//! at N returns a value written at i or after.

use std::collections::BTreeMap;

use raftgres_proto::v1::ReadMode;

use super::Violation;
use crate::history::{Outcome, Record, Request, VALUE_ABSENT};

/// Checks every answered Stale read of `history`.
pub fn check(history: &[Record]) -> Vec<Violation> {
    let mut violations = only_written_values(history);
    violations.extend(never_back_in_time(history));
    violations
}

fn stale_reads(history: &[Record]) -> Vec<&Record> {
    history
        .iter()
        .filter(|record| {
            record.outcome == Outcome::Ok
                && record.request
                    == Request::Get {
                        mode: ReadMode::Stale,
                    }
        })
        .collect()
}

/// Each value read was the value of some write invoked before the read
/// returned (and not refused).
fn only_written_values(history: &[Record]) -> Vec<Violation> {
    let mut first_invoked: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    for record in history {
        if record.outcome == Outcome::Failed {
            continue;
        }
        if let Some(value) = record.request.written_value() {
            let entry = first_invoked
                .entry((record.key, value))
                .or_insert(record.invoked_ns);
            *entry = (*entry).min(record.invoked_ns);
        }
    }
    let mut violations = Vec::new();
    for read in stale_reads(history) {
        let Some(value) = read.value_read.filter(|value| *value != VALUE_ABSENT) else {
            continue;
        };
        let written_in_time = first_invoked
            .get(&(read.key, value))
            .is_some_and(|invoked| *invoked <= read.completed_ns);
        if !written_in_time {
            violations.push(Violation {
                check: "stale_reads",
                message: format!(
                    "a stale read of key {} at node {:?} (invoked at {} ns) returned {value}, which no write of that key had been asked to store",
                    read.key, read.node, read.invoked_ns
                ),
            });
        }
    }
    violations
}

/// For each node and key: a read invoked after another returned sees a
/// value written at the same index or a later one.
fn never_back_in_time(history: &[Record]) -> Vec<Violation> {
    let mut reads = stale_reads(history);
    reads.retain(|read| read.index.is_some() && read.node.is_some());
    let mut by_completion = reads.clone();
    by_completion.sort_by_key(|read| read.completed_ns);
    reads.sort_by_key(|read| read.invoked_ns);
    // (node, key) -> the highest index returned by reads completed so far,
    // and the read that returned it.
    let mut newest: BTreeMap<(u64, u64), (u64, &Record)> = BTreeMap::new();
    let mut completed = by_completion.into_iter().peekable();
    let mut violations = Vec::new();
    for read in reads {
        while let Some(earlier) =
            completed.next_if(|earlier| earlier.completed_ns < read.invoked_ns)
        {
            let slot = (earlier.node.unwrap_or(0), earlier.key);
            let index = earlier.index.unwrap_or(0);
            if newest.get(&slot).is_none_or(|(seen, _)| *seen < index) {
                newest.insert(slot, (index, earlier));
            }
        }
        let slot = (read.node.unwrap_or(0), read.key);
        if let (Some((seen, earlier)), Some(index)) = (newest.get(&slot), read.index) {
            if index < *seen {
                violations.push(Violation {
                    check: "stale_reads",
                    message: format!(
                        "node {} went back in time on key {}: a read returned the value written at index {seen} ({:?}), a later one (invoked at {} ns) the value written at index {index} ({:?})",
                        slot.0, read.key, earlier.value_read, read.invoked_ns, read.value_read
                    ),
                });
            }
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::test_records::{get, put};

    fn stale(node: u64, value: u64, mod_index: u64, at: (u64, u64)) -> Record {
        Record {
            node: Some(node),
            ..get(1, ReadMode::Stale, value, Some(mod_index), at)
        }
    }

    #[test]
    fn lagging_reads_are_fine_when_each_node_moves_forward() {
        let history = [
            put(1, 5, 10, (0, 10)),
            put(1, 6, 11, (20, 30)),
            // Node 2 lags behind node 1 but never goes back.
            stale(1, 6, 11, (40, 50)),
            stale(2, 5, 10, (60, 70)),
            stale(2, 6, 11, (80, 90)),
        ];
        assert_eq!(check(&history), []);
    }

    #[test]
    fn a_value_nobody_wrote_is_a_violation() {
        let history = [put(1, 5, 10, (0, 10)), stale(1, 9, 12, (20, 30))];
        let violations = check(&history);
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert!(violations[0].message.contains("returned 9"));
        // Reading a value before its write was even invoked is as bad.
        let early = [stale(1, 5, 10, (0, 5)), put(1, 5, 10, (20, 30))];
        assert_eq!(check(&early).len(), 1);
    }

    #[test]
    fn one_node_going_back_in_time_is_a_violation() {
        let history = [
            put(1, 5, 10, (0, 10)),
            put(1, 6, 11, (20, 30)),
            stale(1, 6, 11, (40, 50)),
            stale(1, 5, 10, (60, 70)),
        ];
        let violations = check(&history);
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert!(violations[0].message.contains("node 1 went back in time"));
        // Overlapping reads may see either order.
        let overlapping = [
            put(1, 5, 10, (0, 10)),
            put(1, 6, 11, (20, 30)),
            stale(1, 6, 11, (40, 70)),
            stale(1, 5, 10, (50, 60)),
        ];
        assert_eq!(check(&overlapping), []);
    }
}
