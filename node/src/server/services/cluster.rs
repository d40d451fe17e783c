//! `raftgres.v1.Cluster`: status and leadership transfer.

use std::sync::Arc;

use raftgres_proto::v1 as wire;
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

use super::Shared;
use crate::core::{NodeId, Role};
use crate::server::convert;
use crate::server::driver::{Event, NodeStatus};
use crate::server::error::ServiceError;
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

/// The driver's view of the node.
async fn node_status<S>(shared: &Shared<S>) -> Result<NodeStatus, Status> {
    let (reply, answer) = oneshot::channel::<NodeStatus>();
    shared
        .events
        .send(Event::Status { reply })
        .await
        .map_err(|_| Status::unavailable("shutting down"))?;
    answer
        .await
        .map_err(|_| Status::unavailable("shutting down"))
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
        let address = |id: u64| config.client_address(id).unwrap_or_default().to_string();
        let peers = config
            .peers
            .iter()
            .map(|peer| {
                let progress = status
                    .peers
                    .iter()
                    .find(|progress| progress.id == NodeId(peer.id));
                wire::PeerStatus {
                    id: peer.id,
                    address: peer.address.clone(),
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
