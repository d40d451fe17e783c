//! Honest peers send only plausible messages. The core drops and reports
//! every message no honest peer could have sent (`Raft::take_implausible`,
//! checked against Figure 2's message fields and the receiver's state);
//! every node in the simulator is honest, so a report about one of their
//! messages means either the validation refuses something Raft
//! legitimately does (a lost message, a duplicate, a reordering, a
//! restart) or a node sent something it should not have. The fault
//! injector also forges messages no honest peer sends (`World::forge`):
//! each of those must be reported, and a forged message the node takes
//! without a report is a violation too.

use raftgres::core::{ImplausibleMessage, NodeId};

/// Checks that `node` reported no implausible message.
pub fn check_reports(node: NodeId, reports: &[ImplausibleMessage]) -> Result<(), String> {
    match reports.first() {
        None => Ok(()),
        Some(report) => Err(format!(
            "node {node} dropped {} implausible message(s) from honest peers, first: {report:?}",
            reports.len()
        )),
    }
}

/// Checks that node `node` reported the forged message `forged` (`None`
/// once a report matched it).
pub fn check_forged_reported(
    node: NodeId,
    forged: Option<&ImplausibleMessage>,
) -> Result<(), String> {
    match forged {
        None => Ok(()),
        Some(forged) => Err(format!(
            "node {node} took a forged message without reporting it: {forged:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftgres::core::{ImplausibleReason, Term};

    #[test]
    fn no_report_passes() {
        assert!(check_reports(NodeId(1), &[]).is_ok());
    }

    #[test]
    fn any_report_is_a_violation() {
        let report = ImplausibleMessage {
            from: NodeId(2),
            term: Term(3),
            kind: "App",
            reason: ImplausibleReason::UnknownSender,
        };
        let error = check_reports(NodeId(1), &[report]).unwrap_err();
        assert!(error.contains("node 1"), "{error}");
    }

    #[test]
    fn a_forged_message_left_unreported_is_a_violation() {
        let forged = ImplausibleMessage {
            from: NodeId(2),
            term: Term(3),
            kind: "AppResp",
            reason: ImplausibleReason::UnknownSender,
        };
        let error = check_forged_reported(NodeId(1), Some(&forged)).unwrap_err();
        assert!(error.contains("without reporting"), "{error}");
        assert!(check_forged_reported(NodeId(1), None).is_ok());
    }
}
