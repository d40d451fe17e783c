//! What a node's core counts durable is in its stored log (DESIGN.md rule
//! 2; Raft paper, Figure 2: a node answers only once entries are on
//! stable storage). The core learns durability from the driver's reports
//! of completed writes; a report about a write the log has since
//! truncated must be ignored, or entries that never reached the disk count
//! as durable (and are acknowledged, committed and applied as such), and
//! a late report must never move the durable index back. After every
//! step, the entry at the core's durable index is the stored entry at
//! that index, same term, or lies in the stored snapshot.

use raftgres::core::{LogIndex, NodeId, Term};

/// Checks node `node`, whose core counts durable through `durable` (that
/// entry of term `core_term` in its log; `core_start` is the core's
/// snapshot index), against its store: the term of the stored entry at
/// `durable` (`stored_term`, `None` when the store holds none there) and
/// the stored snapshot's index `stored_start`.
pub fn check(
    node: NodeId,
    durable: LogIndex,
    core_term: Option<Term>,
    core_start: LogIndex,
    stored_term: Option<Term>,
    stored_start: LogIndex,
) -> Result<(), String> {
    if durable <= stored_start
        || durable <= core_start
        || (stored_term.is_some() && stored_term == core_term)
    {
        return Ok(());
    }
    Err(format!(
        "node {node} counts its log durable through index {durable} (term {}), but its store \
         holds {} there",
        core_term.map_or("unknown".to_string(), |term| term.to_string()),
        stored_term.map_or("no entry".to_string(), |term| format!(
            "an entry of term {term}"
        ))
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(core_start: u64, stored: Option<Term>, stored_start: u64) -> Result<(), String> {
        check(
            NodeId(2),
            LogIndex(9),
            Some(Term(3)),
            LogIndex(core_start),
            stored,
            LogIndex(stored_start),
        )
    }

    #[test]
    fn durability_the_store_does_not_hold_fails() {
        let error = at(0, None, 0).unwrap_err();
        assert!(error.contains("holds no entry there"), "{error}");
        let error = at(0, Some(Term(2)), 0).unwrap_err();
        assert!(error.contains("an entry of term 2"), "{error}");
        assert_eq!(at(0, Some(Term(3)), 0), Ok(()));
        assert_eq!(at(0, None, 9), Ok(()), "in the stored snapshot");
        assert_eq!(at(9, None, 0), Ok(()), "in a snapshot being installed");
    }
}
