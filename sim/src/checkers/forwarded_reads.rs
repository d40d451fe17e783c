//! A node that does not lead refuses a read forwarded to it at once
//! (Raft paper, section 8: only the leader can confirm a read; the
//! dissertation's section 6.4: a follower asks its leader for the read
//! index). The follower that forwarded the read then drops it and its
//! client retries, a round trip later, instead of holding the read until
//! the follower gives up on an answer that is not coming (an election
//! timeout later): a latency no safety checker sees, and one the read
//! liveness bound forgives, since the read is dropped either way.
//!
//! Checked on every delivery of a ReadIndex request of the receiver's term
//! or later, from a member, that the receiver does not drop as implausible:
//! if the receiver does not lead after taking it, it sent the refusal in
//! that step.

use raftgres::core::NodeId;

/// Checks a step in which `receiver` took the read `context` forwarded by
/// `forwarder`: `leads_after` whether it leads after the step, `refused`
/// whether it sent the forwarder a refusal for `context` in the step.
pub fn check(
    receiver: NodeId,
    forwarder: NodeId,
    context: u64,
    leads_after: bool,
    refused: bool,
) -> Result<(), String> {
    if leads_after || refused {
        return Ok(());
    }
    Err(format!(
        "node {receiver} does not lead, yet took read {context} forwarded by node {forwarder} \
         without refusing it"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follower_that_keeps_a_forwarded_read_unanswered_fails() {
        let error = check(NodeId(2), NodeId(3), 7, false, false).unwrap_err();
        assert!(error.contains("read 7 forwarded by node 3"), "{error}");
    }

    #[test]
    fn a_refusal_or_a_leader_passes() {
        assert_eq!(check(NodeId(2), NodeId(3), 7, false, true), Ok(()));
        assert_eq!(check(NodeId(2), NodeId(3), 7, true, false), Ok(()));
    }
}
