//! Membership changes as the client sends them, and how it reads their
//! refusals.
//!
//! A change carries no session, yet sending it again is safe: each applies
//! only in a state its first copy ends, so a copy arriving after the first
//! applied is refused (`INVALID_ARGUMENT`) and changes nothing:
//!
//! ```text
//!   change         applies when the node is   a copy after it applied meets
//!   add N ADDR     not a member               "node N is already a member"
//!   promote N      a learner                  "node N is not a learner"
//!   remove N       a voter or a learner       "node N is not a member"
//! ```
//!
//! So when an attempt ended without an answer and a later one is refused,
//! the refusal may be the first copy's own effect. The client then reads
//! the leader's membership: if it shows the change made
//! ([`MemberChange::made_in`]), the call succeeds. Another operator's
//! change to the same node between the two copies (removing a node just
//! added, say) is not told apart from this call's: the call reports the
//! state it asked for, which is the state the cluster is in.

use std::time::Duration;

use raftgres_proto::v1::cluster_client::ClusterClient;
use raftgres_proto::v1::{
    MemberAddRequest, MemberChangeResponse, MemberPromoteRequest, MemberRemoveRequest, Membership,
    StatusResponse,
};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Status};

use super::{with_timeout, ClientError, LEADER_ADDRESS_KEY, LEADER_ID_KEY};

/// One change of the membership, as asked of the leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum MemberChange {
    /// Add `node_id` as a learner whose peer API listens at `address`.
    Add { node_id: u64, address: String },
    /// Make learner `node_id` a voter.
    Promote { node_id: u64 },
    /// Remove voter or learner `node_id`.
    Remove { node_id: u64 },
}

impl std::fmt::Display for MemberChange {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MemberChange::Add { node_id, address } => {
                write!(formatter, "add node {node_id} at {address}")
            }
            MemberChange::Promote { node_id } => write!(formatter, "promote node {node_id}"),
            MemberChange::Remove { node_id } => write!(formatter, "remove node {node_id}"),
        }
    }
}

impl MemberChange {
    /// One attempt: the change's request to the node behind `channel`.
    pub(crate) async fn send(
        &self,
        channel: Channel,
        timeout: Duration,
    ) -> Result<tonic::Response<MemberChangeResponse>, Status> {
        let mut cluster = ClusterClient::new(channel);
        match self {
            MemberChange::Add { node_id, address } => {
                let request = MemberAddRequest {
                    node_id: *node_id,
                    address: address.clone(),
                };
                cluster.member_add(with_timeout(request, timeout)).await
            }
            MemberChange::Promote { node_id } => {
                let request = MemberPromoteRequest { node_id: *node_id };
                cluster.member_promote(with_timeout(request, timeout)).await
            }
            MemberChange::Remove { node_id } => {
                let request = MemberRemoveRequest { node_id: *node_id };
                cluster.member_remove(with_timeout(request, timeout)).await
            }
        }
    }

    /// Whether `membership` (the leader's latest, joint or not) shows this
    /// change made: the node added at this address (whatever its role
    /// since), voting in the configuration being moved to, or neither
    /// voting there nor learning (a joint membership still counting it
    /// among the outgoing voters is a removal the leader finishes by
    /// itself).
    pub(crate) fn made_in(&self, membership: Option<&Membership>) -> bool {
        let Some(membership) = membership else {
            return false;
        };
        match self {
            MemberChange::Add { node_id, address } => {
                let member =
                    membership.voters.contains(node_id) || membership.learners.contains(node_id);
                member && membership.addresses.get(node_id) == Some(address)
            }
            MemberChange::Promote { node_id } => membership.voters.contains(node_id),
            MemberChange::Remove { node_id } => {
                !membership.voters.contains(node_id) && !membership.learners.contains(node_id)
            }
        }
    }
}

/// Whether `error`, ending a change after some attempt's outcome was
/// unknown, may be the first copy's own effect (see the module doc).
pub(crate) fn may_be_own_effect(error: &ClientError, outcome_unknown: bool) -> bool {
    outcome_unknown
        && matches!(
            error,
            ClientError::Rejected {
                code: Code::InvalidArgument,
                ..
            }
        )
}

/// The refusal a node that does not lead would send for a leader-only
/// request, built from its `status`: `FAILED_PRECONDITION`, naming the
/// leader it knows in the metadata, so that the retry logic follows it.
pub(crate) fn redirect(status: &StatusResponse) -> Status {
    let known = if status.leader_id == 0 {
        "no leader is known".to_string()
    } else {
        format!("the leader is node {}", status.leader_id)
    };
    let mut refusal =
        Status::failed_precondition(format!("node {} does not lead; {known}", status.node_id));
    if status.leader_id != 0 {
        refusal
            .metadata_mut()
            .insert(LEADER_ID_KEY, MetadataValue::from(status.leader_id));
    }
    if let Ok(address) = MetadataValue::try_from(status.leader_address.as_str()) {
        if !status.leader_address.is_empty() {
            refusal.metadata_mut().insert(LEADER_ADDRESS_KEY, address);
        }
    }
    refusal
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Failure, Role};
    use std::collections::HashMap;

    fn membership(voters: &[u64], outgoing: &[u64], learners: &[u64]) -> Membership {
        Membership {
            voters: voters.to_vec(),
            voters_outgoing: outgoing.to_vec(),
            learners: learners.to_vec(),
            addresses: HashMap::from([(4, "127.0.0.1:7004".to_string())]),
        }
    }

    fn add_4(address: &str) -> MemberChange {
        MemberChange::Add {
            node_id: 4,
            address: address.to_string(),
        }
    }

    #[test]
    fn an_add_is_made_once_the_node_is_a_member_at_the_address_asked() {
        let learner = membership(&[1, 2, 3], &[], &[4]);
        assert!(add_4("127.0.0.1:7004").made_in(Some(&learner)));
        let promoted = membership(&[1, 2, 3, 4], &[1, 2, 3], &[]);
        assert!(add_4("127.0.0.1:7004").made_in(Some(&promoted)));
        // Someone else's node 4, elsewhere: this add did not happen.
        assert!(!add_4("127.0.0.1:9999").made_in(Some(&learner)));
        assert!(!add_4("127.0.0.1:7004").made_in(Some(&membership(&[1, 2, 3], &[], &[]))));
        assert!(!add_4("127.0.0.1:7004").made_in(None));
    }

    #[test]
    fn a_promotion_is_made_once_the_node_votes_in_the_configuration_moved_to() {
        let promote = MemberChange::Promote { node_id: 4 };
        assert!(promote.made_in(Some(&membership(&[1, 2, 3, 4], &[1, 2, 3], &[]))));
        assert!(promote.made_in(Some(&membership(&[1, 2, 3, 4], &[], &[]))));
        assert!(!promote.made_in(Some(&membership(&[1, 2, 3], &[], &[4]))));
    }

    #[test]
    fn a_removal_is_made_once_the_node_neither_votes_ahead_nor_learns() {
        let remove = MemberChange::Remove { node_id: 3 };
        // Joint: 3 votes only in the configuration being left.
        assert!(remove.made_in(Some(&membership(&[1, 2], &[1, 2, 3], &[]))));
        assert!(remove.made_in(Some(&membership(&[1, 2], &[], &[]))));
        assert!(!remove.made_in(Some(&membership(&[1, 2, 3], &[], &[]))));
        assert!(!remove.made_in(Some(&membership(&[1, 2], &[], &[3]))));
    }

    #[test]
    fn only_an_invalid_argument_after_an_unknown_outcome_is_checked() {
        let refused = |code| ClientError::Rejected {
            address: "n1:1".into(),
            code,
            message: "node 4 is already a member".into(),
        };
        assert!(may_be_own_effect(&refused(Code::InvalidArgument), true));
        // Without an unknown outcome the refusal is the caller's mistake.
        assert!(!may_be_own_effect(&refused(Code::InvalidArgument), false));
        assert!(!may_be_own_effect(&refused(Code::PermissionDenied), true));
        let gave_up = ClientError::GaveUp {
            attempts: 3,
            elapsed: Duration::from_secs(1),
            addresses_tried: vec!["n1:1".into()],
            last_address: "n1:1".into(),
            last_code: Code::Unavailable,
            last_message: "a membership change is in progress".into(),
            outcome_unknown: true,
        };
        assert!(!may_be_own_effect(&gave_up, true));
    }

    #[test]
    fn a_follower_answer_becomes_a_redirect_to_the_leader_it_names() {
        let follower = StatusResponse {
            node_id: 2,
            role: Role::Follower as i32,
            leader_id: 1,
            leader_address: "127.0.0.1:7001".into(),
            ..StatusResponse::default()
        };
        let refusal = redirect(&follower);
        assert_eq!(refusal.code(), Code::FailedPrecondition);
        assert_eq!(
            Failure::from_status(&refusal),
            Failure::NotLeader {
                leader_address: Some("127.0.0.1:7001".into())
            }
        );
        let electing = StatusResponse {
            node_id: 2,
            role: Role::Candidate as i32,
            ..StatusResponse::default()
        };
        let refusal = redirect(&electing);
        assert!(
            refusal.message().contains("no leader is known"),
            "{refusal:?}"
        );
        assert_eq!(
            Failure::from_status(&refusal),
            Failure::NotLeader {
                leader_address: None
            }
        );
    }
}
