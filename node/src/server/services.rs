//! The gRPC services a node serves: `Peer` (Raft messages between nodes),
//! `Client` (opaque commands), `Kv` (the built-in key-value API) and
//! `Cluster` (status, leadership transfer). Requests are checked here and
//! turned into driver events; refusals become statuses in `error.rs`.

use std::sync::Arc;

use prost::Message as _;
use raftgres_proto::v1 as wire;
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::config::NodeConfig;
use super::convert;
use super::driver::{request_timeout, Applied, Event, NodeStatus, ReadMode};
use super::error::ServiceError;
use super::metrics::Metrics;
use super::state_machine::{decode_kv_command, StateMachine};
use crate::core::{LogIndex, NodeId, Role};

/// What every service shares.
pub(crate) struct Shared<S> {
    pub(crate) config: Arc<NodeConfig>,
    pub(crate) events: mpsc::Sender<Event>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) state_machine: Arc<S>,
    pub(crate) reads: ReadConnection,
}

impl<S> Shared<S> {
    /// Sends an event that expects an answer and waits for it, bounded by
    /// the request timeout.
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, ServiceError>>) -> Event,
    ) -> Result<T, ServiceError> {
        let (reply, answer) = oneshot::channel();
        self.events
            .send(make(reply))
            .await
            .map_err(|_| ServiceError::Unavailable("the node is shutting down".into()))?;
        match tokio::time::timeout(request_timeout(&self.config), answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ServiceError::Unavailable(
                "the node is shutting down".into(),
            )),
            Err(_) => Err(ServiceError::DeadlineExceeded(
                "no answer in time; the outcome is unknown, retry with the same session".into(),
            )),
        }
    }

    /// Proposes a state machine command wrapped with its session.
    async fn submit(
        &self,
        command: Vec<u8>,
        session: Option<&wire::Session>,
    ) -> Result<Applied, ServiceError> {
        if command.len() > self.config.limits.command_bytes_max {
            return Err(ServiceError::ResourceExhausted(format!(
                "command of {} bytes exceeds the limit of {} bytes",
                command.len(),
                self.config.limits.command_bytes_max
            )));
        }
        let (client_id, sequence) = match session {
            Some(session) if !session.client_id.is_empty() => {
                if session.sequence == 0 {
                    return Err(ServiceError::InvalidArgument(
                        "session sequence numbers start at 1".into(),
                    ));
                }
                (session.client_id.clone(), session.sequence)
            }
            _ => (String::new(), 0),
        };
        let envelope = wire::LogCommand {
            client_id,
            sequence,
            command,
        }
        .encode_to_vec();
        self.ask(|reply| Event::Propose {
            command: envelope,
            reply,
        })
        .await
    }

    /// Waits until the local state machine may serve a read in `mode`;
    /// returns the index the read observes at least (0 for stale reads).
    async fn read_barrier(&self, mode: i32) -> Result<LogIndex, ServiceError> {
        match wire::ReadMode::try_from(mode) {
            Ok(wire::ReadMode::Linearizable) => {
                self.ask(|reply| Event::Read {
                    mode: ReadMode::Linearizable,
                    reply,
                })
                .await
            }
            Ok(wire::ReadMode::Lease) => {
                self.ask(|reply| Event::Read {
                    mode: ReadMode::Lease,
                    reply,
                })
                .await
            }
            Ok(wire::ReadMode::Stale) => Ok(LogIndex(0)),
            Err(_) => Err(ServiceError::InvalidArgument(format!(
                "unknown read mode {mode}"
            ))),
        }
    }

    fn check_key(&self, key: &[u8]) -> Result<(), ServiceError> {
        if key.is_empty() {
            return Err(ServiceError::InvalidArgument(
                "the key must not be empty".into(),
            ));
        }
        if key.len() > self.config.limits.key_bytes_max {
            return Err(ServiceError::InvalidArgument(format!(
                "key of {} bytes exceeds the limit of {} bytes",
                key.len(),
                self.config.limits.key_bytes_max
            )));
        }
        Ok(())
    }

    fn refused(&self, error: ServiceError) -> Status {
        self.metrics.client_requests.refused.increment();
        Status::from(error)
    }
}

/// A connection for state machine reads, reopened after a failure.
pub(crate) struct ReadConnection {
    connector: raftgres_storage_pg::PgConnector,
    client: Mutex<Option<Arc<tokio_postgres::Client>>>,
}

/// How long a read waits for a new connection to Postgres before it
/// answers UNAVAILABLE.
const READ_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

impl ReadConnection {
    pub(crate) fn new(connector: raftgres_storage_pg::PgConnector) -> ReadConnection {
        ReadConnection {
            connector,
            client: Mutex::new(None),
        }
    }

    /// A connected client (connecting if needed), over TLS when the
    /// conninfo's `sslmode` asks for it.
    pub(crate) async fn client(&self) -> Result<Arc<tokio_postgres::Client>, ServiceError> {
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref().filter(|client| !client.is_closed()) {
            return Ok(client.clone());
        }
        let (client, _connection) = self
            .connector
            .connect(READ_CONNECT_TIMEOUT, "raftgres-reads")
            .await
            .map_err(|error| {
                ServiceError::Unavailable(format!("postgres is unavailable: {error}"))
            })?;
        let client = Arc::new(client);
        *slot = Some(client.clone());
        Ok(client)
    }
}

fn database_error(error: tokio_postgres::Error) -> ServiceError {
    ServiceError::Unavailable(format!("reading from postgres failed: {error}"))
}

/// Why a peer message was refused.
#[derive(Debug)]
enum PeerRejection {
    /// Not decodable, or breaking the protocol's invariants.
    Malformed(String),
    /// From another cluster, for another node, or from a non-peer.
    Foreign(String),
    /// The sender did not prove who it is.
    Unauthenticated(String),
    /// The sender proved an identity that may not send this message.
    Forbidden(String),
    /// A limit is reached.
    Exhausted(String),
}

impl From<PeerRejection> for Status {
    fn from(rejection: PeerRejection) -> Status {
        match rejection {
            PeerRejection::Malformed(message) => Status::invalid_argument(message),
            PeerRejection::Foreign(message) => Status::failed_precondition(message),
            PeerRejection::Unauthenticated(message) => Status::unauthenticated(message),
            PeerRejection::Forbidden(message) => Status::permission_denied(message),
            PeerRejection::Exhausted(message) => Status::resource_exhausted(message),
        }
    }
}

/// Who is on the other end of a peer RPC, as far as the transport proves.
enum PeerCredentials {
    /// A TLS client certificate chain, verified against the CA during the
    /// handshake; its leaf must name the sending node.
    Certificate(Arc<Vec<rustls::pki_types::CertificateDer<'static>>>),
    /// Plain text from an address this node admits (loopback, or any with
    /// `insecure_peers`): nothing is proven beyond the header.
    Plaintext,
}

/// Checks every peer message of one RPC: the sender's identity once, the
/// header and the protocol's invariants for each message. A stream speaks
/// for one node: the first message's sender is pinned.
struct PeerGate<'a, S> {
    service: &'a PeerService<S>,
    credentials: PeerCredentials,
    sender: Option<NodeId>,
}

impl<S: StateMachine> PeerGate<'_, S> {
    fn check(&mut self, message: wire::RaftMessage) -> Result<crate::core::Message, PeerRejection> {
        let config = &self.service.shared.config;
        let Some(header) = &message.header else {
            return Err(PeerRejection::Malformed(
                "peer message without a header".into(),
            ));
        };
        if header.cluster_id != config.cluster_id {
            return Err(PeerRejection::Foreign(format!(
                "message for cluster {:?} reached node {} of cluster {:?}",
                header.cluster_id, config.node_id, config.cluster_id
            )));
        }
        if header.to != config.node_id {
            return Err(PeerRejection::Foreign(format!(
                "message for node {} reached node {} (is an address reused?)",
                header.to, config.node_id
            )));
        }
        if header.from == config.node_id || config.peer_address(header.from).is_none() {
            return Err(PeerRejection::Foreign(format!(
                "node {} is not a peer of node {}",
                header.from, config.node_id
            )));
        }
        self.check_sender(NodeId(header.from))?;
        let message = convert::message_from_wire(message)
            .map_err(|error| PeerRejection::Malformed(error.to_string()))?;
        crate::core::validate_message(&message)
            .map_err(|error| PeerRejection::Malformed(error.to_string()))?;
        if let crate::core::MessageBody::AppendRequest { entries, .. } = &message.body {
            for entry in entries {
                self.check_command(entry)?;
            }
        }
        if let crate::core::MessageBody::InstallSnapshot { snapshot } = &message.body {
            let decoded =
                wire::NodeSnapshot::decode(snapshot.data.as_slice()).map_err(|error| {
                    PeerRejection::Malformed(format!("the snapshot does not decode: {error}"))
                })?;
            validate_node_snapshot(&*self.service.shared.state_machine, &decoded)
                .map_err(PeerRejection::Malformed)?;
        }
        Ok(message)
    }

    /// A replicated command must be what a leader proposes: a session
    /// envelope. The command inside is not checked against the state
    /// machine's `validate` here: the leader checked it before proposing,
    /// and a stricter `validate` in a newer version would otherwise make
    /// followers refuse their leader's log for good during an upgrade.
    fn check_command(&self, entry: &crate::core::Entry) -> Result<(), PeerRejection> {
        let crate::core::EntryPayload::Command(data) = &entry.payload else {
            return Ok(());
        };
        wire::LogCommand::decode(data.as_slice())
            .map(|_| ())
            .map_err(|error| {
                PeerRejection::Malformed(format!(
                    "entry {} holds no command envelope: {error}",
                    entry.index
                ))
            })
    }

    /// The message's sender must be the node the credentials prove, and
    /// the same node for a whole stream.
    fn check_sender(&mut self, from: NodeId) -> Result<(), PeerRejection> {
        if let Some(sender) = self.sender {
            if sender != from {
                return Err(PeerRejection::Forbidden(format!(
                    "a stream opened by node {sender} carried a message from node {from}"
                )));
            }
            return Ok(());
        }
        if let PeerCredentials::Certificate(chain) = &self.credentials {
            let names_sender = chain
                .first()
                .is_some_and(|leaf| super::tls::certificate_names_node(leaf, from));
            if !names_sender {
                return Err(PeerRejection::Forbidden(format!(
                    "the client certificate does not name {}, the node the message claims to come from",
                    super::tls::node_name(from)
                )));
            }
        }
        self.sender = Some(from);
        Ok(())
    }
}

/// Checks a node snapshot's parts: the state machine's bytes and the
/// sessions.
pub(crate) fn validate_node_snapshot<S: StateMachine>(
    state_machine: &S,
    snapshot: &wire::NodeSnapshot,
) -> Result<(), String> {
    state_machine.validate_snapshot(&snapshot.state_machine)?;
    for session in &snapshot.sessions {
        if session.client_id.is_empty() || session.sequence == 0 {
            return Err(format!(
                "the snapshot holds a session without a client id or sequence ({:?}, {})",
                session.client_id, session.sequence
            ));
        }
    }
    Ok(())
}

/// `raftgres.v1.Peer`.
pub(crate) struct PeerService<S> {
    pub(crate) shared: Arc<Shared<S>>,
    /// Bounds concurrent inbound `Peer.Stream` calls.
    pub(crate) streams: Arc<tokio::sync::Semaphore>,
}

impl<S: StateMachine> PeerService<S> {
    /// What the transport proves about the caller. With TLS, a client
    /// certificate is required (whatever `require_client_certificate`
    /// says for clients); without, the caller must be admitted by address.
    fn authenticate<T>(&self, request: &Request<T>) -> Result<PeerGate<'_, S>, PeerRejection> {
        let config = &self.shared.config;
        let credentials = if config.tls.is_some() {
            match request.peer_certs() {
                Some(chain) if !chain.is_empty() => PeerCredentials::Certificate(chain),
                _ => {
                    return Err(PeerRejection::Unauthenticated(
                        "peer RPCs need a client certificate signed by the cluster's CA and naming the sending node".into(),
                    ))
                }
            }
        } else if config.admits_plaintext_peer(request.remote_addr()) {
            PeerCredentials::Plaintext
        } else {
            return Err(PeerRejection::Forbidden(format!(
                "without TLS, node {} serves peer RPCs only to loopback connections (see insecure_peers)",
                config.node_id
            )));
        };
        Ok(PeerGate {
            service: self,
            credentials,
            sender: None,
        })
    }

    fn refused(&self, rejection: PeerRejection, remote: Option<std::net::SocketAddr>) -> Status {
        self.shared.metrics.peer_messages_refused.increment();
        tracing::warn!(?remote, reason = ?rejection, "refused a peer message");
        Status::from(rejection)
    }

    async fn deliver(&self, message: crate::core::Message) -> Result<(), Status> {
        self.shared
            .events
            .send(Event::Peer(message))
            .await
            .map_err(|_| Status::unavailable("shutting down"))
    }
}

#[tonic::async_trait]
impl<S: StateMachine> wire::peer_server::Peer for PeerService<S> {
    async fn stream(
        &self,
        request: Request<Streaming<wire::RaftMessage>>,
    ) -> Result<Response<wire::StreamAck>, Status> {
        let remote = request.remote_addr();
        let mut gate = self
            .authenticate(&request)
            .map_err(|rejection| self.refused(rejection, remote))?;
        let Ok(_slot) = self.streams.clone().try_acquire_owned() else {
            return Err(self.refused(
                PeerRejection::Exhausted(format!(
                    "limits.peer_streams_max ({}) peer streams are open",
                    self.shared.config.limits.peer_streams_max
                )),
                remote,
            ));
        };
        let mut stream = request.into_inner();
        let mut accepted = 0;
        while let Some(message) = stream.next().await {
            let message = gate
                .check(message?)
                .map_err(|rejection| self.refused(rejection, remote))?;
            self.deliver(message).await?;
            accepted += 1;
        }
        Ok(Response::new(wire::StreamAck { accepted }))
    }

    async fn send(
        &self,
        request: Request<wire::RaftMessage>,
    ) -> Result<Response<wire::SendAck>, Status> {
        let remote = request.remote_addr();
        let mut gate = self
            .authenticate(&request)
            .map_err(|rejection| self.refused(rejection, remote))?;
        let message = gate
            .check(request.into_inner())
            .map_err(|rejection| self.refused(rejection, remote))?;
        self.deliver(message).await?;
        Ok(Response::new(wire::SendAck {}))
    }
}

/// `raftgres.v1.Client`.
pub(crate) struct ClientService<S> {
    pub(crate) shared: Arc<Shared<S>>,
}

#[tonic::async_trait]
impl<S: StateMachine> wire::client_server::Client for ClientService<S> {
    async fn submit(
        &self,
        request: Request<wire::SubmitRequest>,
    ) -> Result<Response<wire::SubmitResponse>, Status> {
        let shared = &self.shared;
        shared.metrics.client_requests.submit.increment();
        let request = request.into_inner();
        if request.command.len() <= shared.config.limits.command_bytes_max {
            shared
                .state_machine
                .validate(&request.command)
                .map_err(|reason| shared.refused(ServiceError::InvalidArgument(reason)))?;
        }
        let session = wire::Session {
            client_id: request.client_id,
            sequence: request.sequence,
        };
        let applied = shared
            .submit(request.command, Some(&session))
            .await
            .map_err(|error| shared.refused(error))?;
        Ok(Response::new(wire::SubmitResponse {
            index: applied.index.0,
            response: applied.response,
        }))
    }
}

/// `raftgres.v1.Kv`.
pub(crate) struct KvService<S> {
    pub(crate) shared: Arc<Shared<S>>,
}

impl<S: StateMachine> KvService<S> {
    /// Checks, proposes and awaits one KV write; refusals are counted and
    /// turned into statuses here.
    async fn write(
        &self,
        operation: wire::kv_command::Operation,
        session: Option<&wire::Session>,
    ) -> Result<(LogIndex, wire::KvResult), Status> {
        let shared = &self.shared;
        shared.metrics.client_requests.write.increment();
        let write = async {
            let command = wire::KvCommand {
                operation: Some(operation),
            }
            .encode_to_vec();
            let operation = decode_kv_command(&command).map_err(ServiceError::InvalidArgument)?;
            let key = match &operation {
                wire::kv_command::Operation::Put(put) => &put.key,
                wire::kv_command::Operation::Delete(delete) => &delete.key,
                wire::kv_command::Operation::CompareAndSwap(swap) => &swap.key,
            };
            shared.check_key(key)?;
            let applied = shared.submit(command, session).await?;
            let result = wire::KvResult::decode(applied.response.as_slice()).map_err(|error| {
                ServiceError::Unavailable(format!("undecodable state machine response: {error}"))
            })?;
            Ok((applied.index, result))
        };
        write.await.map_err(|error| shared.refused(error))
    }

    async fn get(&self, request: wire::GetRequest) -> Result<wire::GetResponse, ServiceError> {
        let shared = &self.shared;
        shared.check_key(&request.key)?;
        let read_index = shared.read_barrier(request.mode).await?;
        let client = shared.reads.client().await?;
        let row = client
            .query_opt(
                "SELECT value, mod_index FROM raftgres_kv WHERE key = $1",
                &[&request.key],
            )
            .await
            .map_err(database_error)?;
        let kv = row.map(|row| wire::KeyValue {
            key: request.key.clone(),
            value: row.get(0),
            mod_index: row.get::<_, i64>(1) as u64,
        });
        Ok(wire::GetResponse {
            kv,
            read_index: read_index.0,
        })
    }

    async fn range(
        &self,
        request: wire::RangeRequest,
    ) -> Result<wire::RangeResponse, ServiceError> {
        let shared = &self.shared;
        let limit_max = shared.config.limits.range_limit_max;
        let limit = if request.limit == 0 {
            limit_max
        } else {
            request.limit.min(limit_max)
        };
        let read_index = shared.read_barrier(request.mode).await?;
        let client = shared.reads.client().await?;
        let upper = prefix_upper_bound(&request.prefix);
        let rows = client
            .query(
                "SELECT key, value, mod_index FROM raftgres_kv
                 WHERE key >= $1 AND ($2::bytea IS NULL OR key < $2) ORDER BY key LIMIT $3",
                &[&request.prefix, &upper, &(i64::from(limit) + 1)],
            )
            .await
            .map_err(database_error)?;
        let more = rows.len() > limit as usize;
        let kvs = rows
            .iter()
            .take(limit as usize)
            .map(|row| wire::KeyValue {
                key: row.get(0),
                value: row.get(1),
                mod_index: row.get::<_, i64>(2) as u64,
            })
            .collect();
        Ok(wire::RangeResponse {
            kvs,
            more,
            read_index: read_index.0,
        })
    }
}

/// The smallest key greater than every key starting with `prefix`, or
/// `None` when there is none (an empty prefix or all 0xFF bytes).
pub(crate) fn prefix_upper_bound(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut upper = prefix.to_vec();
    while let Some(last) = upper.pop() {
        if last < u8::MAX {
            upper.push(last + 1);
            return Some(upper);
        }
    }
    None
}

#[tonic::async_trait]
impl<S: StateMachine> wire::kv_server::Kv for KvService<S> {
    async fn put(
        &self,
        request: Request<wire::PutRequest>,
    ) -> Result<Response<wire::PutResponse>, Status> {
        let request = request.into_inner();
        let operation = wire::kv_command::Operation::Put(wire::KvPut {
            key: request.key,
            value: request.value,
        });
        let (index, result) = self.write(operation, request.session.as_ref()).await?;
        Ok(Response::new(wire::PutResponse {
            index: index.0,
            previous: result.previous,
        }))
    }

    async fn get(
        &self,
        request: Request<wire::GetRequest>,
    ) -> Result<Response<wire::GetResponse>, Status> {
        let shared = &self.shared;
        shared.metrics.client_requests.read.increment();
        let response = KvService::get(self, request.into_inner())
            .await
            .map_err(|error| shared.refused(error))?;
        Ok(Response::new(response))
    }

    async fn delete(
        &self,
        request: Request<wire::DeleteRequest>,
    ) -> Result<Response<wire::DeleteResponse>, Status> {
        let request = request.into_inner();
        let operation = wire::kv_command::Operation::Delete(wire::KvDelete { key: request.key });
        let (index, result) = self.write(operation, request.session.as_ref()).await?;
        Ok(Response::new(wire::DeleteResponse {
            index: index.0,
            deleted: result.previous.is_some(),
        }))
    }

    async fn compare_and_swap(
        &self,
        request: Request<wire::CompareAndSwapRequest>,
    ) -> Result<Response<wire::CompareAndSwapResponse>, Status> {
        let request = request.into_inner();
        let operation = wire::kv_command::Operation::CompareAndSwap(wire::KvCompareAndSwap {
            key: request.key,
            expected: request.expected,
            value: request.value,
        });
        let (index, result) = self.write(operation, request.session.as_ref()).await?;
        Ok(Response::new(wire::CompareAndSwapResponse {
            index: index.0,
            succeeded: result.succeeded,
            current: result.previous,
        }))
    }

    async fn range(
        &self,
        request: Request<wire::RangeRequest>,
    ) -> Result<Response<wire::RangeResponse>, Status> {
        let shared = &self.shared;
        shared.metrics.client_requests.read.increment();
        let response = KvService::range(self, request.into_inner())
            .await
            .map_err(|error| shared.refused(error))?;
        Ok(Response::new(response))
    }
}

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

#[tonic::async_trait]
impl<S: StateMachine> wire::cluster_server::Cluster for ClusterService<S> {
    async fn status(
        &self,
        _request: Request<wire::StatusRequest>,
    ) -> Result<Response<wire::StatusResponse>, Status> {
        let shared = &self.shared;
        shared.metrics.client_requests.cluster.increment();
        let (reply, answer) = oneshot::channel::<NodeStatus>();
        shared
            .events
            .send(Event::Status { reply })
            .await
            .map_err(|_| Status::unavailable("shutting down"))?;
        let node_status = answer
            .await
            .map_err(|_| Status::unavailable("shutting down"))?;
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
        }))
    }

    async fn transfer_leadership(
        &self,
        request: Request<wire::TransferLeadershipRequest>,
    ) -> Result<Response<wire::TransferLeadershipResponse>, Status> {
        let shared = &self.shared;
        shared.metrics.client_requests.cluster.increment();
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
        let (reply, answer) = oneshot::channel::<NodeStatus>();
        shared
            .events
            .send(Event::Status { reply })
            .await
            .map_err(|_| Status::unavailable("shutting down"))?;
        let term = answer
            .await
            .map_err(|_| Status::unavailable("shutting down"))?
            .core
            .term
            .0;
        Ok(Response::new(wire::TransferLeadershipResponse {
            leader_id: leader.0,
            term,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_upper_bounds() {
        assert_eq!(prefix_upper_bound(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_upper_bound(&[b'a', 0xFF]), Some(b"b".to_vec()));
        assert_eq!(prefix_upper_bound(&[0xFF, 0xFF]), None);
        assert_eq!(prefix_upper_bound(b""), None);
    }
}
