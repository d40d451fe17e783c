//! The gRPC services a node serves, one file each, and what they share:
//!
//! - `peer`: `raftgres.v1.Peer`, Raft messages between nodes, checked
//!   (identity, header, protocol invariants) before they reach the driver;
//! - `client`: `raftgres.v1.Client`, opaque commands for the state machine;
//! - `kv`: `raftgres.v1.Kv`, the built-in key-value API;
//! - `cluster`: `raftgres.v1.Cluster`, status and leadership transfer.
//!
//! Requests become driver events here; refusals become statuses in
//! `error.rs`.

mod client;
mod cluster;
mod kv;
mod peer;

use std::sync::Arc;

use prost::Message as _;
use raftgres_proto::v1 as wire;
use tokio::sync::{mpsc, oneshot, Mutex};
use tonic::Status;

use super::config::NodeConfig;
use super::driver::{request_timeout, Applied, Event, NodeStatus, ReadMode};
use super::error::ServiceError;
use super::metrics::Metrics;
use crate::core::LogIndex;

pub(crate) use client::ClientService;
pub(crate) use cluster::{member_address, ClusterService};
pub(crate) use kv::KvService;
pub(crate) use peer::{PeerService, NOT_MEMBER_TERM};

/// What a state machine's own gRPC services may do with the node: propose
/// commands, wait until a read may be served, and query the state
/// machine's tables. Handed to [`StateMachine::client_routes`].
///
/// [`StateMachine::client_routes`]: crate::server::StateMachine::client_routes
pub struct NodeApi<S> {
    shared: Arc<Shared<S>>,
    admission: super::admission::Admission,
}

impl<S> Clone for NodeApi<S> {
    fn clone(&self) -> Self {
        NodeApi {
            shared: self.shared.clone(),
            admission: self.admission.clone(),
        }
    }
}

impl<S> NodeApi<S> {
    pub(crate) fn new(shared: Arc<Shared<S>>, admission: super::admission::Admission) -> Self {
        NodeApi { shared, admission }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared<S>> {
        &self.shared
    }

    /// `service`, counted against `limits.client_requests_max` like the
    /// node's own client services. Wrap every service you return.
    pub fn admit<T>(&self, service: T) -> super::admission::Admitted<T> {
        self.admission.wrap(service)
    }

    /// Proposes `command` (the state machine's encoding) with an optional
    /// session and waits until its apply here has computed the response:
    /// its log index and the state machine's response. The answer leaves
    /// before that apply's COMMIT, so read the tables afterwards only
    /// through [`Self::read_barrier`] (which waits for the COMMIT). Errors
    /// are the statuses of `proto/raftgres/v1/client.proto`.
    pub async fn submit(
        &self,
        command: Vec<u8>,
        session: Option<&wire::Session>,
    ) -> Result<(u64, Vec<u8>), Status> {
        self.shared
            .submit(command, session)
            .await
            .map(|applied| (applied.index.0, applied.response))
            .map_err(|error| self.shared.refused(error))
    }

    /// Waits until this node's state machine may serve a read in `mode`
    /// (a `raftgres.v1.ReadMode`); the index the read observes at least.
    pub async fn read_barrier(&self, mode: i32) -> Result<u64, Status> {
        self.shared
            .read_barrier(mode)
            .await
            .map(|index| index.0)
            .map_err(|error| self.shared.refused(error))
    }

    /// A connection to this node's Postgres for reads of the state
    /// machine's tables (after [`Self::read_barrier`]).
    pub async fn postgres(&self) -> Result<Arc<ReadClient>, Status> {
        self.shared
            .reads
            .client()
            .await
            .map_err(|error| self.shared.refused(error))
    }
}

pub(crate) struct Shared<S> {
    pub(crate) config: Arc<NodeConfig>,
    pub(crate) events: mpsc::Sender<Event>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) state_machine: Arc<S>,
    pub(crate) reads: ReadConnection,
    /// Whom the node talks to now (published by the driver).
    pub(crate) peers: tokio::sync::watch::Receiver<Arc<super::peers::PeerDirectory>>,
    /// How the node connects to other nodes (for requests a follower
    /// forwards to the leader).
    pub(crate) peer_connect: super::transport::PeerConnectSettings,
    /// The state machine's applied index as the driver last published it.
    pub(crate) applied: tokio::sync::watch::Receiver<LogIndex>,
}

impl<S> Shared<S> {
    /// Sends an event that expects an answer and waits for it, bounded by
    /// the request timeout.
    pub(crate) async fn ask<T>(
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
    pub(crate) async fn submit(
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
    pub(crate) async fn read_barrier(&self, mode: i32) -> Result<LogIndex, ServiceError> {
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

    pub(crate) fn check_key(&self, key: &[u8]) -> Result<(), ServiceError> {
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

    pub(crate) fn refused(&self, error: ServiceError) -> Status {
        self.metrics.client_requests.refused.inc();
        Status::from(error)
    }
}

/// A connection for state machine reads, reopened after a failure.
pub(crate) struct ReadConnection {
    connector: raftgres_storage_pg::PgConnector,
    client: Mutex<Option<Arc<ReadClient>>>,
}

/// The read connection's client (it dereferences to a
/// `tokio_postgres::Client`) and the statements it prepared: the
/// statements sent on every read are parsed and planned once per
/// connection.
pub struct ReadClient {
    client: tokio_postgres::Client,
    statements: raftgres_storage_pg::StatementCache,
}

impl ReadClient {
    /// The client with its prepared statements: prepare a statement sent
    /// on every read through it.
    pub fn prepared(&self) -> raftgres_storage_pg::Prepared<'_, tokio_postgres::Client> {
        self.statements.with(&self.client)
    }
}

impl std::ops::Deref for ReadClient {
    type Target = tokio_postgres::Client;

    fn deref(&self) -> &tokio_postgres::Client {
        &self.client
    }
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
    pub(crate) async fn client(&self) -> Result<Arc<ReadClient>, ServiceError> {
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
        // Reads are small and many: planning them for JIT compilation (as
        // Postgres may for a statement over tables it has not analyzed
        // yet) costs far more than it saves.
        client
            .batch_execute("SET jit = off")
            .await
            .map_err(|error| {
                ServiceError::Unavailable(format!("postgres is unavailable: {error}"))
            })?;
        let client = Arc::new(ReadClient {
            client,
            statements: raftgres_storage_pg::StatementCache::new(),
        });
        *slot = Some(client.clone());
        Ok(client)
    }
}

/// The driver's view of the node.
pub(crate) async fn node_status<S>(shared: &Shared<S>) -> Result<NodeStatus, Status> {
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

pub(crate) fn database_error(error: tokio_postgres::Error) -> ServiceError {
    ServiceError::Unavailable(format!("reading from postgres failed: {error}"))
}
