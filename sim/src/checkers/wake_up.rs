//! The driver sleeps until the pipeline's next wake-up
//! (`Pipeline::wake_at`: the next tick, or the end of a follower's wait
//! for a write to carry its committed entries) and then advances it. A
//! wake-up at or before the instant the pipeline just handled is due
//! again as soon as the driver sleeps: it spins a core until something
//! else changes. After every step, the next wake-up lies after the node's
//! instant.

use raftgres::core::NodeId;
use raftgres::pipeline::Instant;

/// Checks that node `node`'s pipeline, having handled instant `now`, next
/// wakes at `wake_at`, later.
pub fn check(node: NodeId, now: Instant, wake_at: Instant) -> Result<(), String> {
    if wake_at > now {
        return Ok(());
    }
    Err(format!(
        "node {node} handled instant {now:?} and asks to be woken at {wake_at:?}: \
         its driver would wake at once, again and again"
    ))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_wake_up_already_due_fails() {
        let at = |milliseconds| Instant(Duration::from_millis(milliseconds));
        assert_eq!(check(NodeId(2), at(10), at(15)), Ok(()));
        let error = check(NodeId(2), at(10), at(10)).unwrap_err();
        assert!(error.contains("again and again"), "{error}");
        assert!(check(NodeId(2), at(10), at(5)).is_err());
    }
}
