//! No command is applied twice (Raft dissertation, section 6.3: sessions
//! make a retried command take effect once). Every write stores a value
//! unique in the campaign, and the state machine records the log index that
//! wrote each row (`mod_index`), so a value seen with two different indexes,
//! or acknowledged at one index and read back with another, was applied at
//! two log positions.

use std::collections::BTreeMap;

use super::Violation;
use crate::history::{Outcome, Record, Request, VALUE_ABSENT};

/// Checks every index the history reports for each value.
pub fn check(history: &[Record]) -> Vec<Violation> {
    // (key, value) -> the indexes it was reported at, with who reported it.
    let mut indexes: BTreeMap<(u64, u64), BTreeMap<u64, String>> = BTreeMap::new();
    for record in history {
        if record.outcome != Outcome::Ok {
            continue;
        }
        let Some(index) = record.index else {
            continue;
        };
        let value = match record.request {
            Request::Get { .. } => record.value_read,
            Request::Put { value } => Some(value),
            Request::CompareAndSwap { new, .. } if record.swapped == Some(true) => Some(new),
            Request::CompareAndSwap { .. } | Request::Delete => None,
        };
        let Some(value) = value.filter(|value| *value != VALUE_ABSENT) else {
            continue;
        };
        indexes
            .entry((record.key, value))
            .or_default()
            .entry(index)
            .or_insert_with(|| {
                format!(
                    "{} by worker {} at {} ns",
                    record.request.kind_name(),
                    record.worker,
                    record.invoked_ns
                )
            });
    }
    indexes
        .into_iter()
        .filter(|(_, seen)| seen.len() > 1)
        .map(|((key, value), seen)| {
            let seen: Vec<String> = seen
                .into_iter()
                .map(|(index, by)| format!("index {index} ({by})"))
                .collect();
            Violation {
                check: "applied_once",
                message: format!(
                    "value {value} of key {key} was written at more than one log index: {}",
                    seen.join(", ")
                ),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::test_records::{get, put};
    use raftgres_proto::v1::ReadMode;

    #[test]
    fn one_index_per_value_is_fine() {
        let history = [
            put(1, 5, 10, (0, 10)),
            get(1, ReadMode::Linearizable, 5, Some(10), (20, 30)),
            get(1, ReadMode::Stale, 5, Some(10), (20, 30)),
        ];
        assert_eq!(check(&history), []);
    }

    #[test]
    fn a_retried_put_applied_again_is_a_violation() {
        // Acknowledged at index 10, then read back as written by index 14:
        // a retry of the same put was applied a second time.
        let history = [
            put(1, 5, 10, (0, 10)),
            get(1, ReadMode::Linearizable, 5, Some(14), (20, 30)),
        ];
        let violations = check(&history);
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert!(violations[0].message.contains("index 10"));
        assert!(violations[0].message.contains("index 14"));
    }
}
