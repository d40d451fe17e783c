//! The pipeline hands the core every tick its clock has run through, no
//! more and no fewer, before anything else at that instant (the driver's
//! obligation 1 in `node/src/core/mod.rs`): a tick delivered late lets a
//! leader's lease, counted in ticks, outlast wall-clock time; a tick
//! dropped (an event loop that stalled) does the same for longer. After
//! every step, the core's tick count is the number of whole tick lengths
//! the node's clock has advanced since its pipeline started.

use raftgres::core::NodeId;

/// Checks node `node`'s core, which has been given `ticks`, against its
/// clock: `elapsed_micros` since the pipeline started, ticks of
/// `tick_micros`.
pub fn check(
    node: NodeId,
    ticks: u64,
    elapsed_micros: u64,
    tick_micros: u64,
) -> Result<(), String> {
    let due = elapsed_micros / tick_micros;
    if ticks == due {
        return Ok(());
    }
    Err(format!(
        "node {node}'s core was given {ticks} ticks, but its clock ran through {due} \
         ({elapsed_micros} us at {tick_micros} us a tick)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_or_dropped_tick_fails() {
        assert_eq!(check(NodeId(1), 3, 30_000, 10_000), Ok(()));
        assert_eq!(check(NodeId(1), 2, 29_999, 10_000), Ok(()));
        let late = check(NodeId(1), 2, 30_000, 10_000).unwrap_err();
        assert!(
            late.contains("given 2 ticks, but its clock ran through 3"),
            "{late}"
        );
        assert!(
            check(NodeId(1), 4, 30_000, 10_000).is_err(),
            "a tick too many"
        );
    }
}
