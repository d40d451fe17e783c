//! No acknowledged write is lost (Raft paper, section 5.4: a committed
//! entry is present in the logs of all later leaders, and so in every
//! state machine that applies that far). Checked against the state the
//! nodes converged to after healing: every node applied at least up to the
//! highest index a client was told, and each key's row was written at or
//! after every acknowledged write to it, or the key is missing because a
//! delete came last.

use std::collections::BTreeMap;

use super::convergence::DatabaseState;
use super::Violation;
use crate::history::{key_name, Outcome, Record, Request};

/// Checks `history` against each node's final database state.
pub fn check(history: &[Record], states: &BTreeMap<u64, DatabaseState>) -> Vec<Violation> {
    let mut violations = Vec::new();
    let acknowledged: Vec<&Record> = history
        .iter()
        .filter(|record| record.acknowledged_write() && record.index.is_some())
        .collect();
    let highest = acknowledged
        .iter()
        .filter_map(|record| record.index)
        .max()
        .unwrap_or(0);
    for (node, state) in states {
        if state.applied_index < highest {
            violations.push(Violation {
                check: "lost_writes",
                message: format!(
                    "node {node} applied up to index {} only, but a client was told a write was applied at index {highest}",
                    state.applied_index
                ),
            });
        }
        violations.extend(check_rows(&acknowledged, history, *node, state));
    }
    violations
}

/// Each key's final row against the acknowledged writes to it.
fn check_rows(
    acknowledged: &[&Record],
    history: &[Record],
    node: u64,
    state: &DatabaseState,
) -> Vec<Violation> {
    let mut last_by_key: BTreeMap<u64, &Record> = BTreeMap::new();
    for record in acknowledged {
        let entry = last_by_key.entry(record.key).or_insert(record);
        if entry.index < record.index {
            *entry = record;
        }
    }
    let mut violations = Vec::new();
    for (key, last) in last_by_key {
        let index = last.index.unwrap_or(0);
        let row = state.rows.get(key_name(key).as_bytes());
        let lost = match row {
            Some((_, mod_index)) => *mod_index < index,
            None => {
                // Missing is right when a delete came last, or may have: a
                // delete without an answer can land after any write.
                let deleted_maybe_later = history.iter().any(|record| {
                    record.key == key
                        && record.request == Request::Delete
                        && record.outcome == Outcome::Unknown
                });
                last.request != Request::Delete && !deleted_maybe_later
            }
        };
        if lost {
            violations.push(Violation {
                check: "lost_writes",
                message: format!(
                    "node {node}: the {} of key {key} acknowledged at index {index} is lost; the row is {:?}",
                    last.request.kind_name(),
                    row.map(|(value, mod_index)| (String::from_utf8_lossy(value).into_owned(), mod_index))
                ),
            });
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::test_records::{delete, put};
    use crate::history::value_bytes;

    fn state(applied_index: u64, rows: &[(u64, u64, u64)]) -> DatabaseState {
        DatabaseState {
            applied_index,
            rows: rows
                .iter()
                .map(|(key, value, mod_index)| {
                    (
                        key_name(*key).into_bytes(),
                        (value_bytes(*value), *mod_index),
                    )
                })
                .collect(),
            sessions: BTreeMap::new(),
        }
    }

    #[test]
    fn the_latest_acknowledged_writes_are_found() {
        let history = [
            put(1, 5, 10, (0, 10)),
            put(1, 6, 12, (20, 30)),
            put(2, 7, 11, (0, 10)),
            delete(2, 13, (40, 50)),
        ];
        let states = BTreeMap::from([(1, state(13, &[(1, 6, 12)])), (2, state(14, &[(1, 6, 12)]))]);
        assert_eq!(check(&history, &states), []);
    }

    #[test]
    fn an_acknowledged_write_missing_from_a_node_is_a_violation() {
        let history = [put(1, 5, 10, (0, 10)), put(1, 6, 12, (20, 30))];
        // Node 2 lost the second put: its row is still the first, and it
        // claims to have applied less than the client was told.
        let states = BTreeMap::from([(1, state(12, &[(1, 6, 12)])), (2, state(11, &[(1, 5, 10)]))]);
        let violations = check(&history, &states);
        assert_eq!(violations.len(), 2, "{violations:?}");
        assert!(violations
            .iter()
            .all(|violation| violation.message.starts_with("node 2")));
        // A row missing altogether is lost too.
        let states = BTreeMap::from([(1, state(12, &[]))]);
        assert_eq!(check(&history, &states).len(), 1);
    }
}
