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

use raftgres::core::{ImplausibleMessage, NodeId, Term};

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

/// A forged message handed to a node: what its report must name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forged {
    /// The sender it claims.
    pub from: NodeId,
    /// The term it claims.
    pub term: Term,
    /// Its kind, as `MessageBody::kind` names it.
    pub kind: &'static str,
}

impl Forged {
    /// Whether `report` is about this message.
    pub fn reported_by(&self, report: &ImplausibleMessage) -> bool {
        (self.from, self.term, self.kind) == (report.from, report.term, report.kind)
    }
}

/// Checks that node `node` reported the forged message `forged` (`None`
/// once a report matched it).
pub fn check_forged_reported(node: NodeId, forged: Option<Forged>) -> Result<(), String> {
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
            reason: ImplausibleReason::SecondLeader { leader: NodeId(1) },
        };
        let error = check_reports(NodeId(1), &[report]).unwrap_err();
        assert!(error.contains("node 1"), "{error}");
    }

    #[test]
    fn a_forged_message_left_unreported_is_a_violation() {
        let forged = Forged {
            from: NodeId(2),
            term: Term(3),
            kind: "AppResp",
        };
        let error = check_forged_reported(NodeId(1), Some(forged)).unwrap_err();
        assert!(error.contains("without reporting"), "{error}");
        assert!(check_forged_reported(NodeId(1), None).is_ok());
        let report = |kind| ImplausibleMessage {
            from: NodeId(2),
            term: Term(3),
            kind,
            reason: ImplausibleReason::SecondLeader { leader: NodeId(1) },
        };
        assert!(forged.reported_by(&report("AppResp")));
        assert!(!forged.reported_by(&report("App")));
    }
}
