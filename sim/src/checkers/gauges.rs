//! The pipeline's gauges tell the truth: an operator reads them to see
//! what a node holds (`raftgres_proposals_pending` is the pipeline's
//! `proposals_pending`). After every step, the proposals a node reports
//! waiting for their apply are exactly the proposals the node was handed
//! and has not answered. And the bound on reads holds: a node never has
//! more linearizable reads in its core than `pending_reads_max` (its
//! core counts them with the reads other nodes forwarded to it).

use raftgres::core::NodeId;

/// Checks node `node`'s gauge `reported` against the `held` proposals the
/// world handed it and has no answer for.
pub fn check_proposals_pending(node: NodeId, reported: usize, held: usize) -> Result<(), String> {
    if reported == held {
        return Ok(());
    }
    Err(format!(
        "node {node} reports {reported} proposals pending but holds {held} unanswered"
    ))
}

/// Checks that node `node`, holding `reads` linearizable reads in its
/// core, keeps within `pending_reads_max`.
pub fn check_reads_bound(
    node: NodeId,
    reads: usize,
    pending_reads_max: usize,
) -> Result<(), String> {
    if reads <= pending_reads_max {
        return Ok(());
    }
    Err(format!(
        "node {node} holds {reads} reads in its core, beyond pending_reads_max {pending_reads_max}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gauge_that_differs_from_what_the_node_holds_fails() {
        assert!(check_proposals_pending(NodeId(1), 0, 2)
            .unwrap_err()
            .contains("reports 0 proposals pending but holds 2"));
        assert_eq!(check_proposals_pending(NodeId(1), 2, 2), Ok(()));
    }

    #[test]
    fn reads_beyond_the_bound_fail() {
        assert!(check_reads_bound(NodeId(1), 3, 2)
            .unwrap_err()
            .contains("3 reads in its core, beyond pending_reads_max 2"));
        assert_eq!(check_reads_bound(NodeId(1), 2, 2), Ok(()));
    }
}
