//! After the faults heal and the clients stop, every node converges (Raft
//! paper, section 5.3: the leader brings every follower's log into
//! agreement with its own, and state machines apply logs in order): the
//! same applied index, the same rows in the state machine table
//! (`raftgres_kv`) and the same client sessions (`raftgres_sessions`), read
//! from each node's own Postgres, not through the node.
//!
//! Session rows are checked by [`check_sessions`], apart from the state
//! machine rows so that a report says which table diverged; sessions
//! expire at log positions every replica agrees on, so both are asserted.
//!
//! Convergence is owed by the final members only (section 6: a node
//! removed from the configuration no longer receives entries), and by
//! every one of them, a node that joined during the campaign included:
//! [`of_members`] keeps the members' states and names every member whose
//! state is missing.

use std::collections::{BTreeMap, BTreeSet};

use super::Violation;

/// What one node's Postgres holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DatabaseState {
    /// `raftgres_applied.applied_index`.
    pub applied_index: u64,
    /// `raftgres_kv`: key -> (value, mod_index).
    pub rows: BTreeMap<Vec<u8>, (Vec<u8>, u64)>,
    /// `raftgres_sessions`: client id -> (sequence, response, last_index).
    pub sessions: BTreeMap<String, (u64, Vec<u8>, u64)>,
}

/// Reads node state from the Postgres at `conninfo`, in one REPEATABLE
/// READ transaction so the three tables agree with each other.
pub async fn read_database_state(conninfo: &str) -> anyhow::Result<DatabaseState> {
    let (mut client, connection) = tokio_postgres::connect(conninfo, tokio_postgres::NoTls).await?;
    let connection = tokio::spawn(connection);
    let transaction = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let applied: i64 = transaction
        .query_one("SELECT applied_index FROM raftgres_applied", &[])
        .await?
        .get(0);
    let mut state = DatabaseState {
        applied_index: u64::try_from(applied)?,
        ..DatabaseState::default()
    };
    for row in transaction
        .query("SELECT key, value, mod_index FROM raftgres_kv", &[])
        .await?
    {
        let mod_index: i64 = row.get(2);
        state
            .rows
            .insert(row.get(0), (row.get(1), u64::try_from(mod_index)?));
    }
    let sessions_exist: bool = transaction
        .query_one("SELECT to_regclass('raftgres_sessions') IS NOT NULL", &[])
        .await?
        .get(0);
    if sessions_exist {
        for row in transaction
            .query(
                "SELECT client_id, sequence, response, last_index FROM raftgres_sessions",
                &[],
            )
            .await?
        {
            let (sequence, last_index): (i64, i64) = (row.get(1), row.get(3));
            state.sessions.insert(
                row.get(0),
                (
                    u64::try_from(sequence)?,
                    row.get(2),
                    u64::try_from(last_index)?,
                ),
            );
        }
    }
    transaction.commit().await?;
    drop(client);
    let _ = connection.await;
    Ok(state)
}

/// The states of `members` alone (a removed node's state says nothing),
/// and a violation for each member whose state was not read.
pub fn of_members(
    mut states: BTreeMap<u64, DatabaseState>,
    members: &BTreeSet<u64>,
) -> (BTreeMap<u64, DatabaseState>, Vec<Violation>) {
    states.retain(|node, _| members.contains(node));
    let violations = members
        .iter()
        .filter(|member| !states.contains_key(member))
        .map(|member| Violation {
            check: "convergence",
            message: format!(
                "node {member} is a member at the end, but its state was not read (members {members:?})"
            ),
        })
        .collect();
    (states, violations)
}

/// The applied index and the state machine rows agree on every node.
pub fn check(states: &BTreeMap<u64, DatabaseState>) -> Vec<Violation> {
    let mut violations = Vec::new();
    let Some((first_node, first)) = states.iter().next() else {
        return violations;
    };
    for (node, state) in states.iter().skip(1) {
        if state.applied_index != first.applied_index {
            violations.push(Violation {
                check: "convergence",
                message: format!(
                    "node {first_node} applied up to index {}, node {node} up to {}",
                    first.applied_index, state.applied_index
                ),
            });
        }
        if let Some(difference) = first_difference(&first.rows, &state.rows) {
            let difference = String::from_utf8_lossy(&difference).into_owned();
            violations.push(Violation {
                check: "convergence",
                message: format!(
                    "the state machines of nodes {first_node} and {node} differ ({} and {} rows); first difference at key {difference:?}",
                    first.rows.len(),
                    state.rows.len()
                ),
            });
        }
    }
    violations
}

/// The session rows agree on every node.
pub fn check_sessions(states: &BTreeMap<u64, DatabaseState>) -> Vec<Violation> {
    let mut violations = Vec::new();
    let Some((first_node, first)) = states.iter().next() else {
        return violations;
    };
    for (node, state) in states.iter().skip(1) {
        if let Some(difference) = first_difference(&first.sessions, &state.sessions) {
            violations.push(Violation {
                check: "convergence_sessions",
                message: format!(
                    "the session tables of nodes {first_node} and {node} differ ({} and {} sessions); first difference at client {difference:?}",
                    first.sessions.len(),
                    state.sessions.len()
                ),
            });
        }
    }
    violations
}

/// The first key at which two maps differ.
fn first_difference<K: Ord + Clone, V: PartialEq>(
    left: &BTreeMap<K, V>,
    right: &BTreeMap<K, V>,
) -> Option<K> {
    left.iter()
        .find(|(key, value)| right.get(key) != Some(value))
        .map(|(key, _)| key)
        .or_else(|| right.keys().find(|key| !left.contains_key(key)))
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(
        applied_index: u64,
        rows: &[(&str, &str, u64)],
        sessions: &[(&str, u64)],
    ) -> DatabaseState {
        DatabaseState {
            applied_index,
            rows: rows
                .iter()
                .map(|(key, value, index)| {
                    (key.as_bytes().to_vec(), (value.as_bytes().to_vec(), *index))
                })
                .collect(),
            sessions: sessions
                .iter()
                .map(|(client, sequence)| (client.to_string(), (*sequence, Vec::new(), 7)))
                .collect(),
        }
    }

    #[test]
    fn identical_nodes_converge() {
        let one = state(9, &[("a", "1", 4), ("b", "2", 9)], &[("c1", 3)]);
        let states = BTreeMap::from([(1, one.clone()), (2, one.clone()), (3, one)]);
        assert_eq!(check(&states), []);
        assert_eq!(check_sessions(&states), []);
    }

    #[test]
    fn a_differing_row_or_applied_index_is_a_violation() {
        let one = state(9, &[("a", "1", 4), ("b", "2", 9)], &[]);
        let other_value = state(9, &[("a", "1", 4), ("b", "3", 9)], &[]);
        let behind = state(8, &[("a", "1", 4), ("b", "2", 9)], &[]);
        let extra_row = state(9, &[("a", "1", 4), ("b", "2", 9), ("c", "1", 5)], &[]);
        let states = BTreeMap::from([(1, one), (2, other_value), (3, behind), (4, extra_row)]);
        let violations = check(&states);
        assert_eq!(violations.len(), 3, "{violations:?}");
        assert!(
            violations[0].message.contains("key \"b\""),
            "{violations:?}"
        );
        assert!(
            violations[1].message.contains("node 3 up to 8"),
            "{violations:?}"
        );
        assert!(
            violations[2].message.contains("key \"c\""),
            "{violations:?}"
        );
    }

    #[test]
    fn a_removed_node_owes_no_convergence_but_a_new_member_does() {
        let one = state(9, &[("a", "1", 4), ("b", "2", 9)], &[("c1", 3)]);
        let removed_behind = state(5, &[("a", "1", 4)], &[]);
        let mut states = BTreeMap::from([
            (1, one.clone()),
            (2, one.clone()),
            (3, removed_behind.clone()),
            (4, one.clone()),
        ]);
        let members = BTreeSet::from([1, 2, 4]);
        let (kept, missing) = of_members(states.clone(), &members);
        assert_eq!(missing, []);
        assert_eq!(kept.keys().copied().collect::<Vec<_>>(), [1, 2, 4]);
        assert_eq!(check(&kept), []);
        assert_eq!(check_sessions(&kept), []);

        // The new member 4 with a row the others lack, and one session
        // short: both are violations, and node 3 is still not named.
        states.insert(
            4,
            state(9, &[("a", "1", 4), ("b", "2", 9), ("z", "1", 8)], &[]),
        );
        let (kept, _) = of_members(states.clone(), &members);
        let violations = check(&kept);
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert!(
            violations[0].message.contains("nodes 1 and 4")
                && violations[0].message.contains("\"z\""),
            "{violations:?}"
        );
        assert_eq!(check_sessions(&kept).len(), 1);
        assert!(violations
            .iter()
            .all(|violation| !violation.message.contains("node 3")));
    }

    #[test]
    fn a_member_whose_state_is_missing_is_a_violation() {
        let one = state(9, &[("a", "1", 4)], &[]);
        let states = BTreeMap::from([(1, one.clone()), (2, one)]);
        let (kept, missing) = of_members(states, &BTreeSet::from([1, 2, 5]));
        assert_eq!(kept.len(), 2);
        assert_eq!(missing.len(), 1, "{missing:?}");
        assert!(
            missing[0].message.starts_with("node 5 is a member"),
            "{missing:?}"
        );
    }

    #[test]
    fn differing_sessions_are_reported_apart() {
        let states = BTreeMap::from([
            (1, state(9, &[], &[("c1", 3)])),
            (2, state(9, &[], &[("c1", 4)])),
        ]);
        assert_eq!(check(&states), []);
        let violations = check_sessions(&states);
        assert_eq!(violations.len(), 1);
        assert!(violations[0].message.contains("\"c1\""));
    }
}
