//! No node process panics. A panic is a broken invariant or a bug in the
//! node, never an answer to a fault (DESIGN.md: a storage error the node
//! cannot interpret stops it with an error, not a panic), and a node that
//! dies of one during a campaign is started again by the healing, so
//! without this check it would pass unseen. Read from every node's log,
//! the logs of nodes removed during the campaign included.

use std::collections::BTreeMap;

use super::Violation;

/// How a Rust panic begins in a process's standard error.
const PANIC_MARKER: &str = "panicked at ";

/// Lines of the log shown after the panic's first line.
const CONTEXT_LINES_MAX: usize = 2;

/// One violation per node whose log (`logs`: node id -> log text) shows a
/// panic, naming its first panic.
pub fn check(logs: &BTreeMap<u64, String>) -> Vec<Violation> {
    logs.iter()
        .filter_map(|(node, log)| {
            let lines: Vec<&str> = log.lines().collect();
            let first = lines.iter().position(|line| line.contains(PANIC_MARKER))?;
            let count = lines[first..]
                .iter()
                .filter(|line| line.contains(PANIC_MARKER))
                .count();
            let shown = lines[first..]
                .iter()
                .take(1 + CONTEXT_LINES_MAX)
                .map(|line| line.trim())
                .collect::<Vec<_>>()
                .join(" | ");
            Some(Violation {
                check: "panics",
                message: format!("node {node} panicked ({count} time(s)); first: {shown}"),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_in_any_node_log_is_a_violation_and_clean_logs_are_not() {
        let logs = BTreeMap::from([
            (1, "INFO starting node\nINFO serving\n".to_string()),
            (
                4,
                "INFO joining\n\nthread 'main' (9707) panicked at tokio/src/runtime/task/core.rs:427:22:\nJoinHandle polled after completion\nstack backtrace:\n".to_string(),
            ),
        ]);
        let violations = check(&logs);
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert!(violations[0]
            .message
            .starts_with("node 4 panicked (1 time(s))"));
        assert!(violations[0]
            .message
            .contains("JoinHandle polled after completion"));
        assert_eq!(check(&BTreeMap::from([(1, logs[&1].clone())])), []);
    }
}
