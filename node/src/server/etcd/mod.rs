//! etcd's v3 API (`etcdserverpb`), served by nodes that run the built-in
//! KV state machine, on the client port next to `raftgres.v1`: KV (range,
//! put, delete-range, txn, compact), Watch (`watch.rs`), Lease
//! (`lease.rs`), Lock and Election (`concurrency.rs`), Maintenance (status,
//! alarms) and Cluster (member list). The keyspace is the one `raftgres.v1.Kv` serves.
//!
//! Writes go through the log as `KvCommand`s carrying etcd's request; the
//! answer is the state machine's. Reads wait for the same barrier as
//! `raftgres.v1.Kv` (a quorum round, or none for a serializable read) and
//! read the tables in one statement. Refusals are worded as etcd words
//! them, so that etcd's clients recognize them.

mod concurrency;
pub(crate) mod convert;
mod lease;
mod watch;

use std::sync::Arc;

use prost::Message as _;
use raftgres_proto::etcdserverpb as etcd;
use raftgres_proto::v1 as wire;
use tonic::{Code, Request, Response, Status};

use super::error::ServiceError;
use super::kv::{range_at, KvStateMachine};
use super::services::{member_address, node_status, NodeApi, Shared};
use super::transport::connect_channel;
use crate::core::NodeId;
use crate::mvcc;
use raftgres_proto::etcdserverpb::kv_client::KvClient;
use tonic::transport::Channel;

/// The etcd services, added to `routes`.
pub(crate) fn routes(
    node: &NodeApi<KvStateMachine>,
    routes: tonic::service::Routes,
) -> tonic::service::Routes {
    let shared = node.shared().clone();
    let command_bytes_max = shared.config.limits.command_bytes_max;
    let leader = Arc::new(LeaderChannel::default());
    let leases = lease::Leases::new(shared.clone(), leader.clone());
    // Revokes expired leases while this node leads; ends when the node
    // stops (the driver's applied index closes).
    tokio::spawn(leases.clone().expire());
    let kv = etcd::kv_server::KvServer::new(EtcdKv {
        shared: shared.clone(),
        leader: leader.clone(),
    })
    .max_decoding_message_size(command_bytes_max + 64 * 1024);
    routes
        .add_service(node.admit(kv))
        .add_service(node.admit(etcd::maintenance_server::MaintenanceServer::new(
            EtcdMaintenance {
                shared: shared.clone(),
            },
        )))
        .add_service(
            node.admit(etcd::cluster_server::ClusterServer::new(EtcdCluster {
                shared: shared.clone(),
            })),
        )
        .add_service(
            node.admit(etcd::watch_server::WatchServer::new(watch::EtcdWatch {
                shared,
            })),
        )
        .add_service(
            node.admit(etcd::lease_server::LeaseServer::new(lease::EtcdLease {
                leases,
            })),
        )
        .add_service(
            node.admit(raftgres_proto::v3lockpb::lock_server::LockServer::new(
                concurrency::EtcdLock::new(node.shared().clone(), leader.clone()),
            )),
        )
        .add_service(node.admit(
            raftgres_proto::v3electionpb::election_server::ElectionServer::new(
                concurrency::EtcdElection::new(node.shared().clone(), leader),
            ),
        ))
}

/// A response header: etcd's cluster id for ours, this node, the store's
/// revision and the node's term.
fn header(shared: &Shared<KvStateMachine>, revision: i64) -> Option<etcd::ResponseHeader> {
    Some(etcd::ResponseHeader {
        cluster_id: convert::etcd_cluster_id(&shared.config.cluster_id),
        member_id: shared.config.node_id,
        revision,
        raft_term: shared.metrics.term.get(),
    })
}

/// A refusal as etcd words it (`etcdserver: ...`), with etcd's codes where
/// its clients look at them.
fn etcd_status(shared: &Shared<KvStateMachine>, error: ServiceError) -> Status {
    let status = shared.refused(error.clone());
    let message = match &error {
        ServiceError::NotLeader { .. } => return Status::unavailable("etcdserver: not leader"),
        ServiceError::InvalidArgument(reason) => reason.clone(),
        _ => status.message().to_string(),
    };
    Status::new(status.code(), format!("etcdserver: {message}"))
}

/// The refusal a `KvResult` reports.
fn kv_error(error: wire::KvError) -> Option<mvcc::KvError> {
    match error {
        wire::KvError::None => None,
        wire::KvError::KeyNotFound => Some(mvcc::KvError::KeyNotFound),
        wire::KvError::LeaseNotFound => Some(mvcc::KvError::LeaseNotFound),
        wire::KvError::Compacted => Some(mvcc::KvError::Compacted),
        wire::KvError::FutureRevision => Some(mvcc::KvError::FutureRevision),
        wire::KvError::LeaseExists => Some(mvcc::KvError::LeaseExists),
    }
}

fn kv_error_status(error: mvcc::KvError) -> Status {
    let code = match error {
        mvcc::KvError::KeyNotFound => Code::InvalidArgument,
        mvcc::KvError::LeaseNotFound => Code::NotFound,
        mvcc::KvError::LeaseExists => Code::FailedPrecondition,
        mvcc::KvError::Compacted | mvcc::KvError::FutureRevision => Code::OutOfRange,
    };
    Status::new(code, format!("etcdserver: {error}"))
}

/// `etcdserverpb.KV`.
struct EtcdKv {
    shared: Arc<Shared<KvStateMachine>>,
    leader: Arc<LeaderChannel>,
}

/// A channel to the leader for the requests a follower forwards, made as
/// peer connections are (mutual TLS when configured) and kept while the
/// leader stays.
#[derive(Default)]
pub(super) struct LeaderChannel {
    /// The leader's id and client address, and the channel to it.
    cached: tokio::sync::Mutex<Option<(u64, String, Channel)>>,
}

impl LeaderChannel {
    pub(super) async fn get(
        &self,
        shared: &Shared<KvStateMachine>,
        leader_id: u64,
        address: String,
    ) -> Result<Channel, Status> {
        let mut cached = self.cached.lock().await;
        if let Some((id, cached_address, channel)) = cached.as_ref() {
            if *id == leader_id && *cached_address == address {
                return Ok(channel.clone());
            }
        }
        let channel = connect_channel(NodeId(leader_id), &address, &shared.peer_connect)
            .await
            .map_err(|error| {
                Status::unavailable(format!(
                    "etcdserver: not leader; the leader (node {leader_id} at {address}) is unreachable: {error}"
                ))
            })?;
        *cached = Some((leader_id, address, channel.clone()));
        Ok(channel)
    }
}

/// The request forwarded to the leader: marked, so that a node that is
/// not the leader refuses it rather than forwarding it again.
pub(super) fn forwarded<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        FORWARDED_KEY,
        tonic::metadata::MetadataValue::from_static("1"),
    );
    request
}

/// Whether `request` was forwarded here by a follower.
pub(super) fn was_forwarded<T>(request: &Request<T>) -> bool {
    request.metadata().contains_key(FORWARDED_KEY)
}

/// Metadata on a write a follower forwards to the leader: a node that is
/// not the leader refuses it rather than forwarding it again.
const FORWARDED_KEY: &str = "raftgres-forwarded";

/// Why a write was not served here.
pub(super) enum Refused {
    /// This node is not the leader, and the leader is known: the request
    /// goes there.
    NotLeader { leader_id: u64, address: String },
    /// The state machine refused it (the same on every replica).
    Kv(mvcc::KvError),
    /// Answered with this status.
    Status(Status),
}

/// Proposes a KV command (checked first, so that a malformed one never
/// reaches the log) and waits until its apply here has computed its
/// outcome (the answer leaves before that apply's COMMIT): the store's
/// revision after it and the answer's etcd response (none for commands
/// that answer none), or why it was refused (a refusal of the state
/// machine's, such as a missing lease, is [`Refused::Kv`]).
pub(super) async fn propose(
    shared: &Shared<KvStateMachine>,
    operation: wire::kv_command::Operation,
) -> Result<(i64, Option<etcd::response_op::Response>), Refused> {
    propose_at(shared, operation)
        .await
        .map(|(_, revision, response)| (revision, response))
}

/// [`propose`], with the log index the command was applied at. The answer
/// leaves before the apply's COMMIT: a caller that then reads this node's
/// tables must first wait for the applied index to reach it.
pub(super) async fn propose_at(
    shared: &Shared<KvStateMachine>,
    operation: wire::kv_command::Operation,
) -> Result<
    (
        crate::core::LogIndex,
        i64,
        Option<etcd::response_op::Response>,
    ),
    Refused,
> {
    let command = wire::KvCommand {
        operation: Some(operation),
    }
    .encode_to_vec();
    super::kv::decode_kv_command(&command).map_err(|reason| {
        Refused::Status(etcd_status(shared, ServiceError::InvalidArgument(reason)))
    })?;
    let applied = shared
        .submit(command, None)
        .await
        .map_err(|error| match error {
            ServiceError::NotLeader {
                leader_id: Some(leader_id),
                leader_address: Some(address),
            } => Refused::NotLeader { leader_id, address },
            error => Refused::Status(etcd_status(shared, error)),
        })?;
    let undecodable = |error: prost::DecodeError| {
        Refused::Status(Status::internal(format!(
            "undecodable state machine response: {error}"
        )))
    };
    let result = wire::KvResult::decode(applied.response.as_slice()).map_err(undecodable)?;
    if let Some(error) = kv_error(result.error()) {
        return Err(Refused::Kv(error));
    }
    let response = etcd::ResponseOp::decode(result.etcd_response.as_slice())
        .map_err(undecodable)?
        .response;
    Ok((applied.index, result.revision, response))
}

/// The leader's id and client address when this node is not the leader,
/// for a request it forwards; `None` when this node leads.
pub(super) async fn leader_elsewhere(
    shared: &Shared<KvStateMachine>,
) -> Result<Option<(u64, String)>, Status> {
    if shared.metrics.is_leader.get() == 1 {
        return Ok(None);
    }
    let status = node_status(shared).await?;
    let leader = status
        .core
        .leader
        .filter(|leader| leader.0 != shared.config.node_id)
        .ok_or_else(|| Status::unavailable("etcdserver: no leader"))?;
    let address = shared
        .peers
        .borrow()
        .client_address(&shared.config, leader)
        .ok_or_else(|| Status::unavailable("etcdserver: no leader"))?;
    Ok(Some((leader.0, address)))
}

impl Refused {
    /// The status a client gets when the request is not forwarded.
    fn status(self) -> Status {
        match self {
            Refused::NotLeader { .. } => Status::unavailable("etcdserver: not leader"),
            Refused::Kv(error) => kv_error_status(error),
            Refused::Status(status) => status,
        }
    }
}

impl EtcdKv {
    /// Proposes an etcd command and waits for its answer here.
    async fn write(
        &self,
        operation: wire::kv_command::Operation,
    ) -> Result<(i64, Option<etcd::response_op::Response>), Refused> {
        self.shared.metrics.client_requests.write.inc();
        propose(&self.shared, operation).await
    }

    /// The leader's KV service, for a write this follower forwards.
    async fn leader_kv(
        &self,
        leader_id: u64,
        address: String,
    ) -> Result<KvClient<Channel>, Status> {
        let channel = self.leader.get(&self.shared, leader_id, address).await?;
        let bytes_max = self.shared.config.limits.command_bytes_max + 64 * 1024;
        Ok(KvClient::new(channel)
            .max_decoding_message_size(bytes_max)
            .max_encoding_message_size(bytes_max))
    }

    /// Answers a write from the state machine's response, or forwards it
    /// to the leader once (never a write that was forwarded here).
    async fn answer<T: Clone, R>(
        &self,
        request: Request<T>,
        write: impl std::future::Future<
            Output = Result<(i64, Option<etcd::response_op::Response>), Refused>,
        >,
        take: impl FnOnce(
            Option<etcd::response_op::Response>,
            Option<etcd::ResponseHeader>,
        ) -> Option<R>,
        forward: impl AsyncFnOnce(KvClient<Channel>, Request<T>) -> Result<Response<R>, Status>,
    ) -> Result<Response<R>, Status> {
        let arrived_forwarded = was_forwarded(&request);
        match write.await {
            Ok((revision, response)) => take(response, header(&self.shared, revision))
                .map(Response::new)
                .ok_or_else(|| {
                    Status::internal("the state machine answered another kind of request")
                }),
            Err(Refused::NotLeader { leader_id, address }) if !arrived_forwarded => {
                let client = self.leader_kv(leader_id, address).await?;
                forward(client, forwarded(request.into_inner())).await
            }
            Err(refused) => Err(refused.status()),
        }
    }

    async fn write_op(
        &self,
        request: etcd::request_op::Request,
    ) -> Result<(i64, Option<etcd::response_op::Response>), Refused> {
        let operation = etcd::RequestOp {
            request: Some(request),
        };
        self.write(wire::kv_command::Operation::EtcdOperation(
            operation.encode_to_vec(),
        ))
        .await
    }
}

#[tonic::async_trait]
impl etcd::kv_server::Kv for EtcdKv {
    async fn range(
        &self,
        request: Request<etcd::RangeRequest>,
    ) -> Result<Response<etcd::RangeResponse>, Status> {
        let shared = &self.shared;
        shared.metrics.client_requests.read.inc();
        let request = request.into_inner();
        let mode = if request.serializable {
            wire::ReadMode::Stale
        } else {
            wire::ReadMode::Linearizable
        };
        let range = convert::range_request(request)
            .map_err(|reason| etcd_status(shared, ServiceError::InvalidArgument(reason)))?;
        let read_index = shared
            .read_barrier(mode as i32)
            .await
            .map_err(|error| etcd_status(shared, error))?;
        let (revision, answer) = read(shared, &range, read_index).await?;
        Ok(Response::new(convert::range_response(
            answer,
            header(shared, revision),
        )))
    }

    async fn put(
        &self,
        request: Request<etcd::PutRequest>,
    ) -> Result<Response<etcd::PutResponse>, Status> {
        let put = request.get_ref().clone();
        let write = self.write_op(etcd::request_op::Request::RequestPut(put));
        let take = |response, header| match response {
            Some(etcd::response_op::Response::ResponsePut(put)) => {
                Some(etcd::PutResponse { header, ..put })
            }
            _ => None,
        };
        self.answer(request, write, take, async |mut client, request| {
            client.put(request).await
        })
        .await
    }

    async fn delete_range(
        &self,
        request: Request<etcd::DeleteRangeRequest>,
    ) -> Result<Response<etcd::DeleteRangeResponse>, Status> {
        let delete = request.get_ref().clone();
        let write = self.write_op(etcd::request_op::Request::RequestDeleteRange(delete));
        let take = |response, header| match response {
            Some(etcd::response_op::Response::ResponseDeleteRange(delete)) => {
                Some(etcd::DeleteRangeResponse { header, ..delete })
            }
            _ => None,
        };
        self.answer(request, write, take, async |mut client, request| {
            client.delete_range(request).await
        })
        .await
    }

    async fn txn(
        &self,
        request: Request<etcd::TxnRequest>,
    ) -> Result<Response<etcd::TxnResponse>, Status> {
        let txn = request.get_ref().clone();
        let write = self.write_op(etcd::request_op::Request::RequestTxn(txn));
        let take = |response, header| match response {
            Some(etcd::response_op::Response::ResponseTxn(txn)) => {
                Some(etcd::TxnResponse { header, ..txn })
            }
            _ => None,
        };
        self.answer(request, write, take, async |mut client, request| {
            client.txn(request).await
        })
        .await
    }

    async fn compact(
        &self,
        request: Request<etcd::CompactionRequest>,
    ) -> Result<Response<etcd::CompactionResponse>, Status> {
        // `physical` asks etcd to wait until its background compaction is
        // done; here the history is gone when the command is applied.
        let write = self.write(wire::kv_command::Operation::EtcdCompactRevision(
            request.get_ref().revision,
        ));
        let take = |_, header| Some(etcd::CompactionResponse { header });
        self.answer(request, write, take, async |mut client, request| {
            client.compact(request).await
        })
        .await
    }
}

/// Reads `range` from this node's tables once they cover `read_index`:
/// the store's revision and the answer, refusals as etcd words them.
async fn read(
    shared: &Shared<KvStateMachine>,
    range: &mvcc::RangeRequest,
    read_index: crate::core::LogIndex,
) -> Result<(i64, mvcc::RangeResponse), Status> {
    let client = shared
        .reads
        .client()
        .await
        .map_err(|error| etcd_status(shared, error))?;
    let (revision, answer) = range_at(&client, range, read_index, &shared.events)
        .await
        .map_err(|error| etcd_status(shared, error))?;
    Ok((revision, answer.map_err(kv_error_status)?))
}

/// The store's current revision, as the last applied command left it.
async fn current_revision(shared: &Shared<KvStateMachine>) -> Result<i64, Status> {
    let client = shared
        .reads
        .client()
        .await
        .map_err(|error| etcd_status(shared, error))?;
    let row = client
        .query_one("SELECT revision FROM raftgres_kv_revision", &[])
        .await
        .map_err(|error| etcd_status(shared, super::services::database_error(error)))?;
    Ok(row.get(0))
}

/// `etcdserverpb.Maintenance`: what `etcdctl endpoint status` and clients'
/// health checks ask.
struct EtcdMaintenance {
    shared: Arc<Shared<KvStateMachine>>,
}

#[tonic::async_trait]
impl etcd::maintenance_server::Maintenance for EtcdMaintenance {
    async fn status(
        &self,
        _request: Request<etcd::StatusRequest>,
    ) -> Result<Response<etcd::StatusResponse>, Status> {
        let shared = &self.shared;
        shared.metrics.client_requests.cluster.inc();
        let status = node_status(shared).await?.core;
        let revision = current_revision(shared).await?;
        let client = shared
            .reads
            .client()
            .await
            .map_err(|error| etcd_status(shared, error))?;
        let size = client
            .query_one("SELECT pg_database_size(current_database())", &[])
            .await
            .map_err(|error| etcd_status(shared, super::services::database_error(error)))?;
        let db_size: i64 = size.get(0);
        Ok(Response::new(etcd::StatusResponse {
            header: header(shared, revision),
            version: ETCD_API_VERSION.to_string(),
            db_size,
            leader: status.leader.map_or(0, |leader| leader.0),
            raft_index: status.last_index.0,
            raft_term: status.term.0,
            raft_applied_index: status.applied_index.0,
            errors: Vec::new(),
            db_size_in_use: db_size,
            is_learner: status
                .membership
                .learners
                .contains(&NodeId(shared.config.node_id)),
        }))
    }

    async fn alarm(
        &self,
        request: Request<etcd::AlarmRequest>,
    ) -> Result<Response<etcd::AlarmResponse>, Status> {
        // raftgres raises no alarms (Postgres reports its own space and
        // corruption); a request to list them answers none, and raising
        // or clearing one is refused.
        let request = request.into_inner();
        if request.action != etcd::alarm_request::AlarmAction::Get as i32 {
            return Err(Status::invalid_argument(
                "etcdserver: raftgres keeps no alarms to activate or deactivate",
            ));
        }
        let revision = current_revision(&self.shared).await?;
        Ok(Response::new(etcd::AlarmResponse {
            header: header(&self.shared, revision),
            alarms: Vec::new(),
        }))
    }
}

/// The etcd API version `Maintenance.Status` reports: the etcd release
/// whose v3 API this matches, so that clients enable what it has.
const ETCD_API_VERSION: &str = "3.4.0";

/// `etcdserverpb.Cluster`: the member list.
struct EtcdCluster {
    shared: Arc<Shared<KvStateMachine>>,
}

#[tonic::async_trait]
impl etcd::cluster_server::Cluster for EtcdCluster {
    async fn member_list(
        &self,
        _request: Request<etcd::MemberListRequest>,
    ) -> Result<Response<etcd::MemberListResponse>, Status> {
        let shared = &self.shared;
        shared.metrics.client_requests.cluster.inc();
        let status = node_status(shared).await?.core;

        let directory = shared.peers.borrow().clone();
        let config = &shared.config;
        let members = status
            .membership
            .members()
            .into_iter()
            .map(|id| {
                let peer = member_address(&directory, config, id);
                let client = directory.client_address(config, id);
                etcd::Member {
                    id: id.0,
                    name: format!("node-{}", id.0),
                    peer_ur_ls: vec![format!("http://{peer}")],
                    client_ur_ls: client
                        .map(|address| format!("http://{address}"))
                        .into_iter()
                        .collect(),
                    is_learner: status.membership.learners.contains(&id),
                }
            })
            .collect();
        Ok(Response::new(etcd::MemberListResponse {
            // etcd's member list header names no revision.
            header: header(shared, 0),
            members,
        }))
    }
}
