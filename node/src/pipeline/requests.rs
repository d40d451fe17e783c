//! Client requests in flight, and what each client is told.
//!
//! A proposal is answered once its entry is applied (with the state
//! machine's response), or refused when another leader's entry took its
//! place; a proposal whose fate cannot be known (a snapshot covered its
//! index) is answered "outcome unknown", never "lost": it may be committed
//! inside that snapshot. Reads are answered with the index the state
//! machine must have applied before serving them.

use std::collections::BTreeMap;

use super::apply::ApplyOutcome;
use super::clock::Instant;
use crate::core::{LogIndex, NodeId, Term};

/// The driver's name for one client request; the pipeline echoes it in
/// the reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// How a read is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReadMode {
    /// ReadIndex: a quorum confirms leadership.
    Linearizable,
    /// The leader's lease, without a quorum round (falls back to ReadIndex
    /// when no lease is held).
    Lease,
}

/// What a client is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// The command was applied at `index` (for a retry: where it was first
    /// applied) with this response.
    Applied {
        /// Where the command took effect.
        index: LogIndex,
        /// The state machine's response.
        response: Vec<u8>,
    },
    /// The read may be served once the state machine has applied `index`
    /// (it already has when this reply leaves).
    ReadReady {
        /// The index the read observes at least.
        index: LogIndex,
    },
    /// Leadership is now with `leader`.
    Transferred {
        /// The new leader.
        leader: NodeId,
    },
    /// Not served; see the refusal.
    Refused(Refusal),
}

/// Why a request was not served, in terms a client can act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// This node does not lead; `leader` when it knows who does.
    NotLeader {
        /// The leader, if known.
        leader: Option<NodeId>,
    },
    /// Not now (no quorum, leadership changing, shutting down): retry.
    Unavailable(String),
    /// The request can never succeed.
    InvalidArgument(String),
    /// The command may or may not have been applied: retry with the same
    /// session to learn which.
    OutcomeUnknown(String),
}

/// Whether a read released at `read_index` may be served from a state
/// machine whose stored applied index is `stored_applied`. The pipeline
/// releases reads at the applied index it counted; with asynchronous apply
/// commits a Postgres crash can lose applies it counted, and until the
/// applier replays them a read served there would miss acknowledged
/// writes. Such a read is refused as retryable (`UNAVAILABLE`).
pub fn check_read_covered(
    read_index: LogIndex,
    stored_applied: LogIndex,
) -> Result<(), ReadNotCovered> {
    if stored_applied >= read_index {
        return Ok(());
    }
    Err(ReadNotCovered {
        read_index,
        stored_applied,
    })
}

/// A read the stored state machine does not cover yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadNotCovered {
    /// The index the read must observe.
    pub read_index: LogIndex,
    /// The applied index the state machine's rows are at.
    pub stored_applied: LogIndex,
}

impl std::fmt::Display for ReadNotCovered {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "the state machine is at index {}, behind the read index {} \
             (applies lost in a Postgres crash; they are being replayed); retry",
            self.stored_applied, self.read_index
        )
    }
}

/// Requests waiting for the core or the applier.
#[derive(Debug, Default)]
pub(super) struct Requests {
    /// Proposals waiting for their entry to be applied: index -> (term of
    /// the entry proposed, request).
    proposals: BTreeMap<LogIndex, (Term, RequestId)>,
    /// Linearizable reads waiting for the core, by read context.
    reads: BTreeMap<u64, RequestId>,
    /// Lease reads waiting for the applier to reach their index.
    lease_reads: Vec<(LogIndex, RequestId)>,
    /// Transfers waiting for the target to lead, with their deadline.
    transfers: Vec<(NodeId, Instant, RequestId)>,
    /// Planted bug: proposals outlive a step-down, and those a snapshot
    /// covers are reported lost.
    pub(super) covered_reported_lost: bool,
}

impl Requests {
    /// No request waiting; `covered_reported_lost` plants bug 6.
    pub(super) fn new(covered_reported_lost: bool) -> Requests {
        Requests {
            covered_reported_lost,
            ..Requests::default()
        }
    }

    pub(super) fn add_proposal(&mut self, index: LogIndex, term: Term, request: RequestId) {
        self.proposals.insert(index, (term, request));
    }

    pub(super) fn add_read(&mut self, context: u64, request: RequestId) {
        self.reads.insert(context, request);
    }

    pub(super) fn add_lease_read(&mut self, index: LogIndex, request: RequestId) {
        self.lease_reads.push((index, request));
    }

    pub(super) fn add_transfer(&mut self, target: NodeId, deadline: Instant, request: RequestId) {
        self.transfers.push((target, deadline, request));
    }

    /// Proposals waiting for their apply.
    pub(super) fn proposals_pending(&self) -> usize {
        self.proposals.len()
    }

    /// The lowest index a waiting proposal waits for.
    pub(super) fn lowest_proposal(&self) -> Option<LogIndex> {
        self.proposals.keys().next().copied()
    }

    /// Reads handed to the core and not yet answered.
    pub(super) fn reads_pending(&self) -> usize {
        self.reads.len()
    }

    /// The read with this context, if it is still waiting.
    pub(super) fn take_read(&mut self, context: u64) -> Option<RequestId> {
        self.reads.remove(&context)
    }

    /// The answer for the proposal at `index`, given what applying it did.
    pub(super) fn applied(
        &mut self,
        index: LogIndex,
        term: Term,
        outcome: ApplyOutcome,
    ) -> Option<(RequestId, Reply)> {
        let (proposed_term, request) = self.proposals.remove(&index)?;
        let reply = if proposed_term != term {
            Reply::Refused(Refusal::Unavailable(format!(
                "the command at index {index} was replaced after a leadership change; it was not applied"
            )))
        } else {
            match outcome {
                ApplyOutcome::Response(response) => Reply::Applied { index, response },
                ApplyOutcome::Repeated {
                    response,
                    first_index,
                } => Reply::Applied {
                    index: first_index,
                    response,
                },
                ApplyOutcome::Refused(reason) => Reply::Refused(Refusal::InvalidArgument(reason)),
                ApplyOutcome::Unknown => Reply::Refused(Refusal::OutcomeUnknown(
                    "the command was applied but its response was lost; retry with the same session".into(),
                )),
            }
        };
        Some((request, reply))
    }

    /// Proposals at or below `index` that applying never answered: a new
    /// leader's entries replaced them.
    pub(super) fn replaced_up_to(&mut self, index: LogIndex) -> Vec<(RequestId, Reply)> {
        self.proposals_up_to(index, || {
            Refusal::Unavailable("the command was lost in a leadership change".into())
        })
    }

    /// Proposals at or below `index`, which an installed snapshot covers:
    /// they may be committed inside it, so their outcome is unknown.
    pub(super) fn covered_up_to(&mut self, index: LogIndex) -> Vec<(RequestId, Reply)> {
        if self.covered_reported_lost {
            return self.replaced_up_to(index);
        }
        self.proposals_up_to(index, || {
            Refusal::OutcomeUnknown(
                "a snapshot from the leader covered the command; it may have been applied: retry with the same session".into(),
            )
        })
    }

    fn proposals_up_to(
        &mut self,
        index: LogIndex,
        refusal: impl Fn() -> Refusal,
    ) -> Vec<(RequestId, Reply)> {
        let mut answered = Vec::new();
        while let Some(entry) = self.proposals.first_entry() {
            if *entry.key() > index {
                break;
            }
            let (_, request) = entry.remove();
            answered.push((request, Reply::Refused(refusal())));
        }
        answered
    }

    /// Every waiting proposal, when this node stopped leading: whether each
    /// commits is up to the next leader, so the outcome is unknown, and
    /// the client learns it now rather than at its deadline (it retries
    /// with the same session, which applies the command at most once).
    pub(super) fn leadership_lost(&mut self) -> Vec<(RequestId, Reply)> {
        if self.covered_reported_lost {
            return Vec::new();
        }
        self.proposals_up_to(LogIndex(u64::MAX), || {
            Refusal::OutcomeUnknown(
                "this node stopped leading before the command was applied; it may still be: retry with the same session".into(),
            )
        })
    }

    /// Lease reads whose index the applier has reached.
    pub(super) fn lease_reads_up_to(&mut self, applied: LogIndex) -> Vec<(RequestId, Reply)> {
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.lease_reads)
            .into_iter()
            .partition(|(index, _)| *index <= applied);
        self.lease_reads = waiting;
        ready
            .into_iter()
            .map(|(index, request)| (request, Reply::ReadReady { index }))
            .collect()
    }

    /// Transfers that succeeded (the target leads) or ran out of time.
    pub(super) fn transfers_settled(
        &mut self,
        leader: Option<NodeId>,
        now: Instant,
    ) -> Vec<(RequestId, Reply)> {
        let mut settled = Vec::new();
        self.transfers.retain(|(target, deadline, request)| {
            if leader == Some(*target) {
                settled.push((*request, Reply::Transferred { leader: *target }));
                false
            } else if now >= *deadline {
                let reply = Reply::Refused(Refusal::Unavailable(format!(
                    "leadership did not move to node {target} in time; the leader is {:?}",
                    leader.map(|leader| leader.0)
                )));
                settled.push((*request, reply));
                false
            } else {
                true
            }
        });
        settled
    }

    /// Every waiting request, refused with `reason` (the node is shutting
    /// down). A waiting proposal may still commit through the next leader,
    /// so its outcome is unknown, never "not applied".
    pub(super) fn fail_all(&mut self, reason: &str) -> Vec<(RequestId, Reply)> {
        let refused = || Reply::Refused(Refusal::Unavailable(reason.to_string()));
        let unknown = || {
            Reply::Refused(Refusal::OutcomeUnknown(format!(
                "{reason}; the command may still be applied: retry with the same session"
            )))
        };
        let proposals = std::mem::take(&mut self.proposals)
            .into_values()
            .map(|(_, request)| (request, unknown()));
        let reads = std::mem::take(&mut self.reads).into_values();
        let lease_reads = std::mem::take(&mut self.lease_reads)
            .into_iter()
            .map(|(_, request)| request);
        let transfers = std::mem::take(&mut self.transfers)
            .into_iter()
            .map(|(_, _, request)| request);
        let others = reads
            .chain(lease_reads)
            .chain(transfers)
            .map(|request| (request, refused()));
        proposals.chain(others).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proposals_covered_by_a_snapshot_have_an_unknown_outcome_not_a_lost_one() {
        let mut requests = Requests::default();
        requests.add_proposal(LogIndex(5), Term(2), RequestId(1));
        requests.add_proposal(LogIndex(9), Term(2), RequestId(2));
        let answered = requests.covered_up_to(LogIndex(7));
        assert!(
            matches!(
                answered.as_slice(),
                [(RequestId(1), Reply::Refused(Refusal::OutcomeUnknown(_)))]
            ),
            "{answered:?}"
        );
        let answered = requests.replaced_up_to(LogIndex(9));
        assert!(
            matches!(
                answered.as_slice(),
                [(RequestId(2), Reply::Refused(Refusal::Unavailable(_)))]
            ),
            "{answered:?}"
        );
    }

    #[test]
    fn proposals_waiting_when_leadership_is_lost_have_an_unknown_outcome() {
        let mut requests = Requests::default();
        requests.add_proposal(LogIndex(5), Term(2), RequestId(1));
        requests.add_proposal(LogIndex(6), Term(2), RequestId(2));
        let answered = requests.leadership_lost();
        assert_eq!(answered.len(), 2);
        assert!(answered
            .iter()
            .all(|(_, reply)| matches!(reply, Reply::Refused(Refusal::OutcomeUnknown(_)))));
        assert!(requests
            .applied(LogIndex(5), Term(2), ApplyOutcome::Unknown)
            .is_none());
    }

    #[test]
    fn proposals_waiting_at_shutdown_have_an_unknown_outcome_and_reads_are_refused() {
        let mut requests = Requests::default();
        requests.add_proposal(LogIndex(5), Term(2), RequestId(1));
        requests.add_read(7, RequestId(2));
        let answered = requests.fail_all("the node is shutting down");
        assert!(
            matches!(
                answered.as_slice(),
                [
                    (RequestId(1), Reply::Refused(Refusal::OutcomeUnknown(_))),
                    (RequestId(2), Reply::Refused(Refusal::Unavailable(_)))
                ]
            ),
            "{answered:?}"
        );
    }

    #[test]
    fn a_transfer_is_settled_by_the_new_leader_or_its_deadline() {
        let mut requests = Requests::default();
        let deadline = Instant(std::time::Duration::from_secs(1));
        requests.add_transfer(NodeId(2), deadline, RequestId(1));
        requests.add_transfer(NodeId(3), deadline, RequestId(2));
        assert!(requests
            .transfers_settled(Some(NodeId(1)), Instant::default())
            .is_empty());
        let settled = requests.transfers_settled(Some(NodeId(2)), Instant::default());
        assert_eq!(
            settled,
            vec![(RequestId(1), Reply::Transferred { leader: NodeId(2) })]
        );
        let settled = requests.transfers_settled(Some(NodeId(2)), deadline);
        assert!(
            matches!(
                settled.as_slice(),
                [(RequestId(2), Reply::Refused(Refusal::Unavailable(_)))]
            ),
            "{settled:?}"
        );
    }
}
