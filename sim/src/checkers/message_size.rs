//! Messages stay within the size bound (the node's
//! `raft.message_bytes_max`, under gRPC's message limit): an AppendEntries
//! request carries entries whose sizes add up to at most the bound, except
//! that a single entry larger than the bound travels alone (otherwise it
//! could never be replicated). An entry's size is its payload plus a fixed
//! 24 bytes for index, term and framing, the rule the configuration
//! documents; the checker counts it from the payload itself, so a core
//! that miscounts or ignores sizes fails here.

use raftgres::core::{Entry, EntryPayload, NodeId};

/// Bytes an entry counts against the bound, counted from its payload.
fn entry_bytes(entry: &Entry) -> usize {
    const OVERHEAD_BYTES: usize = 24;
    OVERHEAD_BYTES
        + match &entry.payload {
            EntryPayload::Blank => 0,
            EntryPayload::Command(data) => data.len(),
            EntryPayload::Membership(membership) => membership.size_bytes(),
        }
}

/// Checks the entries of an AppendEntries request `from` -> `to` against
/// `bytes_max`.
pub fn check_append(
    from: NodeId,
    to: NodeId,
    entries: &[Entry],
    bytes_max: usize,
) -> Result<(), String> {
    let bytes: usize = entries.iter().map(entry_bytes).sum();
    if entries.len() <= 1 || bytes <= bytes_max {
        return Ok(());
    }
    Err(format!(
        "node {from} sent node {to} {} entries ({}..={}) of {bytes} bytes in one message, \
         above the bound of {bytes_max}",
        entries.len(),
        entries[0].index,
        entries[entries.len() - 1].index
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftgres::core::{LogIndex, Term};

    fn entries(payload_bytes: &[usize]) -> Vec<Entry> {
        payload_bytes
            .iter()
            .enumerate()
            .map(|(offset, bytes)| Entry {
                term: Term(1),
                index: LogIndex(offset as u64 + 1),
                payload: EntryPayload::Command(vec![7; *bytes]),
            })
            .collect()
    }

    #[test]
    fn entries_within_the_bound_pass() {
        // 2 x (24 + 26) = 100 bytes.
        assert!(check_append(NodeId(1), NodeId(2), &entries(&[26, 26]), 100).is_ok());
    }

    #[test]
    fn one_entry_above_the_bound_travels_alone() {
        assert!(check_append(NodeId(1), NodeId(2), &entries(&[500]), 100).is_ok());
    }

    #[test]
    fn entries_above_the_bound_together_are_a_violation() {
        let error = check_append(NodeId(1), NodeId(2), &entries(&[26, 27]), 100).unwrap_err();
        assert!(error.contains("101 bytes"), "{error}");
        // Blank entries count their overhead: five of them are 120 bytes.
        let blanks: Vec<Entry> = (1..=5)
            .map(|index| Entry {
                term: Term(1),
                index: LogIndex(index),
                payload: EntryPayload::Blank,
            })
            .collect();
        assert!(check_append(NodeId(1), NodeId(2), &blanks, 100).is_err());
    }
}
