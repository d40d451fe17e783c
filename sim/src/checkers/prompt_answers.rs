//! A proposal is answered as soon as its fate is known here: when the
//! state machine holds its entry (applied, or installed with a snapshot
//! that covers it), the step that put it there answers the client. A
//! proposal left waiting below the state machine's index is answered
//! only by its client's deadline, as "outcome unknown" although the
//! outcome was there to tell. After every step, every proposal a node
//! still holds waits for an index beyond what its state machine holds.

use raftgres::core::{LogIndex, NodeId};

/// Checks that node `node`'s lowest waiting proposal, if any, waits for
/// an index beyond `state_machine_index`.
pub fn check(
    node: NodeId,
    lowest_waiting: Option<LogIndex>,
    state_machine_index: LogIndex,
) -> Result<(), String> {
    match lowest_waiting {
        Some(index) if index <= state_machine_index => Err(format!(
            "node {node} still holds the proposal at index {index}, which its state machine \
             holds (through index {state_machine_index}): the client was not told"
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proposal_left_waiting_below_the_state_machine_fails() {
        let error = check(NodeId(1), Some(LogIndex(7)), LogIndex(7)).unwrap_err();
        assert!(error.contains("proposal at index 7"), "{error}");
        assert_eq!(check(NodeId(1), Some(LogIndex(8)), LogIndex(7)), Ok(()));
        assert_eq!(check(NodeId(1), None, LogIndex(7)), Ok(()));
    }
}
