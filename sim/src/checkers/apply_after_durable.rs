//! Nothing is applied before it is durable on the node that applies it
//! (Raft paper, Figure 2: persistent state is updated on stable storage
//! before it is acted on; the core's driver obligation 4). A node that
//! applied an entry its disk does not hold would, after a crash, have a
//! state machine ahead of its own log, and could acknowledge a client for
//! an entry that a later leader overwrites.

use raftgres::core::{LogIndex, NodeId, Term};

use crate::store::Store;

/// Checks that the entry at (`index`, `term`) that `node` is about to
/// apply is on its disk: in its durable log, or covered by its durable
/// snapshot.
pub fn check_apply(
    node: NodeId,
    index: LogIndex,
    term: Term,
    durable: &Store,
) -> Result<(), String> {
    let snapshot = durable.log_start;
    if index <= snapshot.index {
        return Ok(());
    }
    let position = (index.0 - snapshot.index.0 - 1) as usize;
    match durable.entries.get(position) {
        Some(entry) if entry.index == index && entry.term == term => Ok(()),
        Some(entry) => Err(format!(
            "node {node} applied ({index}, term {term}) while its disk holds term {} there",
            entry.term
        )),
        None => Err(format!(
            "node {node} applied index {index} (term {term}) before it was durable: its disk ends at {}",
            LogIndex(snapshot.index.0 + durable.entries.len() as u64)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftgres::core::{Entry, EntryPayload};

    fn disk_with_terms(terms: &[u64]) -> Store {
        let mut image = Store::default();
        image.entries = terms
            .iter()
            .enumerate()
            .map(|(offset, term)| Entry {
                term: Term(*term),
                index: LogIndex(offset as u64 + 1),
                payload: EntryPayload::Blank,
            })
            .collect();
        image
    }

    #[test]
    fn applying_a_durable_entry_passes() {
        let disk = disk_with_terms(&[1, 1, 2]);
        assert!(check_apply(NodeId(1), LogIndex(3), Term(2), &disk).is_ok());
    }

    #[test]
    fn applying_beyond_the_durable_log_is_a_violation() {
        let disk = disk_with_terms(&[1, 1]);
        let error = check_apply(NodeId(1), LogIndex(3), Term(1), &disk).unwrap_err();
        assert!(error.contains("before it was durable"), "{error}");
    }

    #[test]
    fn applying_an_entry_the_disk_holds_in_another_term_is_a_violation() {
        let disk = disk_with_terms(&[1, 1]);
        assert!(check_apply(NodeId(1), LogIndex(2), Term(2), &disk).is_err());
    }
}
