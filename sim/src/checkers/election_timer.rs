//! Election timeouts are drawn from the configured range (Raft paper,
//! section 5.2: "election timeouts are chosen randomly from a fixed
//! interval"). A timeout beyond the range delays every election after a
//! leader fails (a liveness bound then breaks only when the draw is
//! unlucky); one below it lets a follower campaign while its leader is
//! still heartbeating. After every step, the timeout a node runs on lies
//! in `election_ticks_min..election_ticks_max`.

use raftgres::core::NodeId;

/// Checks node `node`'s current election timeout against its range.
pub fn check(node: NodeId, timeout: u64, min: u64, max: u64) -> Result<(), String> {
    if (min..max).contains(&timeout) {
        return Ok(());
    }
    Err(format!(
        "node {node} runs on an election timeout of {timeout} ticks, outside {min}..{max}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_outside_the_range_fails() {
        assert!(check(NodeId(2), 35, 10, 20)
            .unwrap_err()
            .contains("35 ticks, outside 10..20"));
        assert!(
            check(NodeId(2), 20, 10, 20).is_err(),
            "the maximum is excluded"
        );
        assert!(check(NodeId(2), 9, 10, 20).is_err());
        assert_eq!(check(NodeId(2), 10, 10, 20), Ok(()));
        assert_eq!(check(NodeId(2), 19, 10, 20), Ok(()));
    }
}
