//! `raftgres.v1.Cluster`: status, leadership transfer and membership
//! changes.

use std::sync::Arc;

use raftgres_proto::v1 as wire;
use tonic::{Request, Response, Status};

use super::{node_status, Shared};
use crate::core::MembershipChange;
use crate::core::{NodeId, Role};
use crate::server::config::NodeConfig;
use crate::server::convert;
use crate::server::driver::Event;
use crate::server::error::ServiceError;
use crate::server::peers::PeerDirectory;
use crate::server::state_machine::StateMachine;

/// `raftgres.v1.Cluster`.
pub(crate) struct ClusterService<S> {
    pub(crate) shared: Arc<Shared<S>>,
}

fn role_to_wire(role: Role) -> wire::Role {
    match role {
        Role::Follower => wire::Role::Follower,
        Role::PreCandidate => wire::Role::PreCandidate,
        Role::Candidate => wire::Role::Candidate,
        Role::Leader => wire::Role::Leader,
    }
}

/// A member's peer address as this node knows it (empty when it knows
/// none).
pub(crate) fn member_address(directory: &PeerDirectory, config: &NodeConfig, id: NodeId) -> String {
    if id.0 == config.node_id {
        return config.peer_listener().to_string();
    }
    directory.address(id).unwrap_or_default().to_string()
}

/// The node id of a membership request, refused when zero.
fn member_id(id: u64) -> Result<NodeId, ServiceError> {
    if id == 0 {
        return Err(ServiceError::InvalidArgument(
            "node_id must be a node id (non-zero)".into(),
        ));
    }
    Ok(NodeId(id))
}

impl<S: StateMachine> ClusterService<S> {
    /// Proposes `change` and waits until it is applied here.
    async fn change(
        &self,
        change: MembershipChange,
    ) -> Result<Response<wire::MemberChangeResponse>, Status> {
        let shared = &self.shared;
        shared.metrics.client_requests.cluster.inc();
        tracing::info!(?change, "changing the membership");
        let applied = shared
            .ask(|reply| Event::ChangeMembership { change, reply })
            .await
            .map_err(|error| shared.refused(error))?;
        let membership = node_status(shared).await?.core.membership;
        Ok(Response::new(wire::MemberChangeResponse {
            index: applied.index.0,
            membership: Some(convert::membership_to_wire(&membership)),
        }))
    }
}

#[tonic::async_trait]
impl<S: StateMachine> wire::cluster_server::Cluster for ClusterService<S> {
    async fn status(
        &self,
        _request: Request<wire::StatusRequest>,
    ) -> Result<Response<wire::StatusResponse>, Status> {
        let shared = &self.shared;
        shared.metrics.client_requests.cluster.inc();
        let node_status = node_status(shared).await?;
        let storage_healthy = node_status.storage_healthy;
        let status = node_status.core;
        let config = &shared.config;
        let directory = shared.peers.borrow().clone();
        let address = |id: u64| {
            directory
                .client_address(config, NodeId(id))
                .unwrap_or_default()
        };
        let peers = status
            .membership
            .members()
            .into_iter()
            .map(|id| {
                let progress = status.peers.iter().find(|progress| progress.id == id);
                wire::PeerStatus {
                    id: id.0,
                    address: member_address(&directory, config, id),
                    match_index: progress.map_or(0, |progress| progress.match_index.0),
                    next_index: progress.map_or(0, |progress| progress.next_index.0),
                }
            })
            .collect();
        let leader_id = status.leader.map_or(0, |leader| leader.0);
        Ok(Response::new(wire::StatusResponse {
            cluster_id: config.cluster_id.clone(),
            node_id: config.node_id,
            role: role_to_wire(status.role) as i32,
            term: status.term.0,
            leader_id,
            leader_address: if leader_id == 0 {
                String::new()
            } else {
                address(leader_id)
            },
            commit_index: status.commit_index.0,
            applied_index: status.applied_index.0,
            last_log_index: status.last_index.0,
            peers,
            storage_healthy,
            membership: Some(convert::membership_to_wire(&status.membership)),
        }))
    }

    async fn member_list(
        &self,
        _request: Request<wire::MemberListRequest>,
    ) -> Result<Response<wire::MemberListResponse>, Status> {
        let shared = &self.shared;
        shared.metrics.client_requests.cluster.inc();
        let status = node_status(shared).await?.core;
        let directory = shared.peers.borrow().clone();
        let membership = &status.membership;
        let members = membership
            .members()
            .into_iter()
            .map(|id| {
                let role = if membership.voters.contains(&id) {
                    wire::MemberRole::Voter
                } else if membership.learners.contains(&id) {
                    wire::MemberRole::Learner
                } else {
                    wire::MemberRole::OutgoingVoter
                };
                let match_index = if id == status.id {
                    status.durable_index
                } else {
                    status
                        .peers
                        .iter()
                        .find(|progress| progress.id == id)
                        .map_or(crate::core::LogIndex(0), |progress| progress.match_index)
                };
                wire::Member {
                    id: id.0,
                    address: member_address(&directory, &shared.config, id),
                    role: role as i32,
                    match_index: if status.role == Role::Leader {
                        match_index.0
                    } else {
                        0
                    },
                }
            })
            .collect();
        Ok(Response::new(wire::MemberListResponse {
            members,
            membership: Some(convert::membership_to_wire(membership)),
            membership_index: status.membership_index.0,
            committed: status.commit_index >= status.membership_index,
            leader_id: status.leader.map_or(0, |leader| leader.0),
        }))
    }

    async fn member_add(
        &self,
        request: Request<wire::MemberAddRequest>,
    ) -> Result<Response<wire::MemberChangeResponse>, Status> {
        let request = request.into_inner();
        let address = request.address.trim().to_string();
        if address.is_empty() || !address.contains(':') {
            return Err(self.shared.refused(ServiceError::InvalidArgument(format!(
                "the new member's address {:?} is not host:port",
                request.address
            ))));
        }
        let node = member_id(request.node_id).map_err(|error| self.shared.refused(error))?;
        self.change(MembershipChange::AddLearner {
            node,
            address: Some(address),
        })
        .await
    }

    async fn member_promote(
        &self,
        request: Request<wire::MemberPromoteRequest>,
    ) -> Result<Response<wire::MemberChangeResponse>, Status> {
        let node =
            member_id(request.into_inner().node_id).map_err(|error| self.shared.refused(error))?;
        self.change(MembershipChange::Promote(node)).await
    }

    async fn member_remove(
        &self,
        request: Request<wire::MemberRemoveRequest>,
    ) -> Result<Response<wire::MemberChangeResponse>, Status> {
        let node =
            member_id(request.into_inner().node_id).map_err(|error| self.shared.refused(error))?;
        self.change(MembershipChange::Remove(node)).await
    }

    async fn transfer_leadership(
        &self,
        request: Request<wire::TransferLeadershipRequest>,
    ) -> Result<Response<wire::TransferLeadershipResponse>, Status> {
        let shared = &self.shared;
        shared.metrics.client_requests.cluster.inc();
        let target = request.into_inner().target_id;
        if target == 0 {
            return Err(shared.refused(ServiceError::InvalidArgument(
                "target_id must be a node id".into(),
            )));
        }
        let leader = shared
            .ask(|reply| Event::Transfer {
                target: NodeId(target),
                reply,
            })
            .await
            .map_err(|error| shared.refused(error))?;
        let term = node_status(shared).await?.core.term.0;
        Ok(Response::new(wire::TransferLeadershipResponse {
            leader_id: leader.0,
            term,
        }))
    }
}
