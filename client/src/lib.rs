//! A gRPC client for a raftgres cluster that finds the leader by itself.
//!
//! Given the addresses of one or more nodes, a [`Client`] sends each request
//! to the leader it last talked to (or to the first address), and reacts to
//! the status codes of `proto/raftgres/v1/client.proto`:
//!
//! ```text
//!   FAILED_PRECONDITION + leader hint  -> follow the hint (no wait the first time)
//!   FAILED_PRECONDITION, no hint       -> next address, after a backoff
//!   UNAVAILABLE / cannot connect       -> next address, after a backoff
//!   DEADLINE_EXCEEDED / call cut off   -> next address, after a backoff, same session
//!   no answer, and another node leads  -> the new leader at once, same session
//!   anything else                      -> fail now (retrying cannot help)
//! ```
//!
//! Attempts and total time are bounded by [`ClientOptions`]; giving up names
//! every address tried and the last status.
//!
//! An attempt at the leader that has no answer after
//! [`ClientOptions::leader_check_interval`] makes the client ask the other
//! nodes who leads; when another node does, the attempt is abandoned rather
//! than left to wait out `request_timeout` at a leader that may be stopped
//! (module `leader_check` says when and why). Only requests that may be
//! sent twice are sent again after an attempt whose outcome is unknown:
//! reads, writes carrying a session, and membership changes. A write
//! without a session (an empty `client_id` given to [`Client::submit`])
//! whose attempt timed out, was cut off or was abandoned ends with
//! [`ClientError::OutcomeUnknown`].
//!
//! Every write carries a session: a random `client_id` and a sequence number
//! drawn once per call. Retries of one call reuse its (client_id, sequence),
//! so a write whose outcome was unknown (the deadline passed, the connection
//! dropped) is applied at most once by the cluster however many times it is
//! resent. The cluster remembers only the latest sequence of each client id
//! (Raft dissertation, section 6.3), so a session carries one write at a time:
//! a `Client` used sequentially keeps one client id for its whole life, and
//! concurrent writes (through clones) each take a session of their own from
//! a small pool.
//!
//! Membership changes ([`Client::member_add`], [`Client::member_promote`],
//! [`Client::member_remove`]) go to the leader and are retried like writes
//! with a session, although they carry none: each applies only in a state
//! that its first copy ends (add: the node is not a member yet; promote: it
//! is a learner; remove: it is a member), so a second copy is refused with
//! `INVALID_ARGUMENT` instead of changing anything twice. When such a
//! refusal follows an attempt whose outcome was unknown, the client asks
//! the leader for the membership and reports success if the change is
//! there (module `membership`).
//!
//! The decision logic (`RetryPlan` here, the leader check's rules in
//! `leader_check`, the membership checks in `membership`) is pure and
//! unit-tested at the bottom of each file with scripted failure sequences
//! and status answers.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod leader_check;
mod membership;

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, Either, FutureExt};
use futures::stream::{FuturesUnordered, StreamExt};

use raftgres_proto::v1::client_client::ClientClient;
use raftgres_proto::v1::cluster_client::ClusterClient;
use raftgres_proto::v1::kv_client::KvClient;
use raftgres_proto::v1::{
    CompareAndSwapRequest, DeleteRequest, GetRequest, MemberListRequest, PutRequest, RangeRequest,
    StatusRequest, SubmitRequest, TransferLeadershipRequest,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Status;

pub use raftgres_proto::v1::{
    CompareAndSwapResponse, DeleteResponse, KeyValue, Member, MemberChangeResponse,
    MemberListResponse, MemberRole, Membership, PutResponse, RangeResponse, ReadMode, Role,
    Session, StatusResponse, SubmitResponse, TransferLeadershipResponse,
};

pub use raftgres_proto::{LEADER_ADDRESS_KEY, LEADER_ID_KEY};
/// The gRPC status codes [`ClientError`] carries, for callers that do not
/// depend on tonic themselves.
pub use tonic::Code;

/// How hard a [`Client`] tries before giving up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientOptions {
    /// Most attempts for one call, redirects included (at least 1).
    pub attempts_max: u32,
    /// Wait before the first retry that backs off; doubles on each one.
    pub backoff_initial: Duration,
    /// Longest wait between two attempts.
    pub backoff_max: Duration,
    /// Longest a call may take across all its attempts; no attempt starts
    /// once waiting for it would pass this bound.
    pub retry_duration_max: Duration,
    /// Longest one attempt may take; sent to the server as the gRPC
    /// deadline too.
    pub request_timeout: Duration,
    /// Longest to wait for a TCP connection to a node.
    pub connect_timeout: Duration,
    /// How long an attempt at the leader may go unanswered before the
    /// client asks the nodes it was given who leads, and how often it asks
    /// again while the attempt waits (each node gets at most this long to
    /// answer). When another node leads at the newest term, the attempt is
    /// abandoned: a read or a write with a session is sent to the new
    /// leader at once, a write without a session ends with
    /// [`ClientError::OutcomeUnknown`]. `None`: never ask, and wait up to
    /// `request_timeout` for every attempt. Give the client every node's
    /// address: only nodes it was given are asked.
    pub leader_check_interval: Option<Duration>,
    /// TLS to the nodes (`None`: plain text).
    pub tls: Option<ClientTls>,
}

/// The shortest [`ClientOptions::leader_check_interval`]: each check sends
/// one `Cluster.Status` request to every node given, so a shorter interval
/// would load the nodes' event loops to save little (a new leader takes
/// tens of milliseconds to elect after its election timeout even on an idle
/// loopback cluster).
pub const LEADER_CHECK_INTERVAL_MIN: Duration = Duration::from_millis(10);

/// TLS settings of a [`Client`]: the CA that signed the nodes'
/// certificates, and this client's own certificate when the cluster
/// requires one (mutual TLS).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientTls {
    /// PEM of the CA certificate(s) the nodes' certificates chain to.
    pub ca_pem: Vec<u8>,
    /// PEM of this client's certificate and private key.
    pub identity_pem: Option<(Vec<u8>, Vec<u8>)>,
    /// The name the nodes' certificates must carry, when it is not the
    /// host of the address dialled (for example `raftgres-node-1`).
    pub domain_name: Option<String>,
}

impl ClientTls {
    /// Reads the CA and, when given, this client's certificate and key.
    /// Errors name the file.
    pub fn from_files(
        ca: &std::path::Path,
        certificate_and_key: Option<(&std::path::Path, &std::path::Path)>,
    ) -> Result<ClientTls, ClientError> {
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|error| {
                ClientError::InvalidOptions(format!(
                    "cannot read TLS file {}: {error}",
                    path.display()
                ))
            })
        };
        let identity_pem = match certificate_and_key {
            Some((certificate, key)) => Some((read(certificate)?, read(key)?)),
            None => None,
        };
        Ok(ClientTls {
            ca_pem: read(ca)?,
            identity_pem,
            domain_name: None,
        })
    }

    fn config(&self) -> ClientTlsConfig {
        let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca_pem));
        if let Some((certificate, key)) = &self.identity_pem {
            config = config.identity(Identity::from_pem(certificate, key));
        }
        if let Some(name) = &self.domain_name {
            config = config.domain_name(name.clone());
        }
        config
    }
}

impl Default for ClientOptions {
    /// Sized for a cluster that elects a new leader within a few seconds:
    /// the backoffs of 16 attempts add up to about 10 s. The leader check
    /// runs every 500 ms, half the maximum election timeout of a node's
    /// default settings (`raft.election_ticks_max` 20 of `raft.tick_ms`
    /// 50): an attempt at a healthy leader is answered well within it, and
    /// a client learns of a new leader within half a second of its
    /// election.
    fn default() -> ClientOptions {
        ClientOptions {
            attempts_max: 16,
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_secs(1),
            retry_duration_max: Duration::from_secs(30),
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            leader_check_interval: Some(Duration::from_millis(500)),
            tls: None,
        }
    }
}

impl ClientOptions {
    /// Checks the options, with a message a person can act on.
    pub fn validate(&self) -> Result<(), ClientError> {
        let invalid = |message: &str| Err(ClientError::InvalidOptions(message.to_string()));
        if self.attempts_max == 0 {
            return invalid("attempts_max must be at least 1");
        }
        if self.backoff_initial > self.backoff_max {
            return invalid("backoff_initial must not exceed backoff_max");
        }
        if self.request_timeout.is_zero() || self.connect_timeout.is_zero() {
            return invalid("request_timeout and connect_timeout must be greater than 0");
        }
        if let Some(interval) = self.leader_check_interval {
            if interval < LEADER_CHECK_INTERVAL_MIN {
                return Err(ClientError::InvalidOptions(format!(
                    "leader_check_interval must be at least {LEADER_CHECK_INTERVAL_MIN:?} \
                     (None turns the leader check off)"
                )));
            }
        }
        Ok(())
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The client was given no address.
    #[error("no node addresses given")]
    NoEndpoints,
    /// An address is not a valid URI.
    #[error("invalid node address {address:?}: {message}")]
    InvalidAddress {
        /// The address as given.
        address: String,
        /// Why it was refused.
        message: String,
    },
    /// The options are inconsistent.
    #[error("invalid client options: {0}")]
    InvalidOptions(String),
    /// A request failed in a way that retrying cannot fix (invalid
    /// argument, too large, ...), or the single attempt of
    /// [`Client::status`] failed.
    #[error("request to {address} failed: {code:?}: {message}")]
    Rejected {
        /// The node that answered.
        address: String,
        /// The gRPC status code.
        code: Code,
        /// The status message.
        message: String,
    },
    /// Every attempt failed with a retryable error.
    #[error(
        "gave up after {attempts} attempt(s) in {elapsed:?}; tried {}; last error from {last_address}: {last_code:?}: {last_message}{}",
        addresses_tried.join(", "),
        if *outcome_unknown { " (a write may still have been applied)" } else { "" }
    )]
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// Time spent.
        elapsed: Duration,
        /// Every address tried, in order of first use.
        addresses_tried: Vec<String>,
        /// The address of the last attempt.
        last_address: String,
        /// The code of the last failure.
        last_code: Code,
        /// The message of the last failure.
        last_message: String,
        /// Whether some attempt ended without knowing if it was applied.
        outcome_unknown: bool,
    },
    /// A write without a session ended without an answer: its attempt timed
    /// out, its connection broke, or it was abandoned because another node
    /// leads. It may or may not be applied, and it was not sent again,
    /// since nothing would stop a second copy from applying too. Writes
    /// with a session are sent again instead.
    #[error(
        "the outcome of the write sent to {address} is unknown (it may or may not be applied; \
         it carries no session, so it was not sent again): {code:?}: {message}"
    )]
    OutcomeUnknown {
        /// The node the last attempt went to.
        address: String,
        /// The code the attempt ended with (`DEADLINE_EXCEEDED` for an
        /// attempt that timed out or was abandoned).
        code: Code,
        /// Why the attempt ended.
        message: String,
    },
}

impl ClientError {
    /// The gRPC code of the (last) failure, if a node or the transport
    /// produced one.
    pub fn code(&self) -> Option<Code> {
        match self {
            ClientError::Rejected { code, .. } | ClientError::OutcomeUnknown { code, .. } => {
                Some(*code)
            }
            ClientError::GaveUp { last_code, .. } => Some(*last_code),
            _ => None,
        }
    }
}

/// The answer of one node to `Status`, or why it did not answer.
#[derive(Debug)]
pub struct NodeStatus {
    /// The address asked.
    pub address: String,
    /// What it said.
    pub status: Result<StatusResponse, ClientError>,
}

/// Where a call is sent first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    /// The cached leader, else the first address.
    Leader,
    /// The first address given, whoever leads (stale reads at followers).
    FirstAddress,
}

/// Whether a request whose attempt ended with its outcome unknown may be
/// sent again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Resend {
    /// Reads, writes carrying a session (the cluster applies a session's
    /// sequence at most once and answers a copy with the first result),
    /// leadership transfers (a second request for the same target asks for
    /// what the first did), and membership changes (a copy arriving after
    /// the first applied is refused, since the state it applies from is
    /// gone; the caller then checks the membership, module `membership`).
    Safe,
    /// A write without a session: a second copy could apply twice.
    Unsafe,
}

/// How one call is routed and retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct CallKind {
    route: Route,
    resend: Resend,
    /// Whether an attempt that waits is abandoned when another node leads
    /// (module `leader_check`). Off for a leadership transfer, whose answer
    /// comes only once another node leads.
    leader_check: bool,
}

impl CallKind {
    const WRITE_WITH_SESSION: CallKind = CallKind {
        route: Route::Leader,
        resend: Resend::Safe,
        leader_check: true,
    };
    const TRANSFER: CallKind = CallKind {
        route: Route::Leader,
        resend: Resend::Safe,
        leader_check: false,
    };
    /// A question only the leader answers fully (the member list: match
    /// indexes are the leader's). Followers would answer too, so each
    /// attempt asks the node's status first and turns a follower's answer
    /// into a redirect.
    const LEADER_VIEW: CallKind = CallKind::WRITE_WITH_SESSION;
    /// A membership change: answered by the leader once applied there, so
    /// an attempt at a leader that stopped is abandoned like a write's.
    const MEMBERSHIP_CHANGE: CallKind = CallKind::WRITE_WITH_SESSION;

    /// A write submitted with `client_id`: an empty one opts out of the
    /// session, and so of being sent again once its outcome is unknown.
    fn submit(client_id: &str) -> CallKind {
        let resend = if client_id.is_empty() {
            Resend::Unsafe
        } else {
            Resend::Safe
        };
        CallKind {
            resend,
            ..CallKind::WRITE_WITH_SESSION
        }
    }

    /// Stale reads may be served by any node, so they go to the first
    /// address given (a caller that lists a follower first reads from it);
    /// other reads need the leader.
    fn read(mode: ReadMode) -> CallKind {
        let route = match mode {
            ReadMode::Stale => Route::FirstAddress,
            ReadMode::Linearizable | ReadMode::Lease => Route::Leader,
        };
        CallKind {
            route,
            resend: Resend::Safe,
            leader_check: route == Route::Leader,
        }
    }
}

/// A client of one cluster. Cheap to clone; clones share the session, the
/// cached leader and the connections.
#[derive(Clone, Debug)]
pub struct Client {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    endpoints: Vec<String>,
    options: ClientOptions,
    /// Sessions with no write in flight, each holding the sequence of its
    /// last write. Invariant: a session is either here or leased to exactly
    /// one call, and its sequence only grows, so the cluster can deduplicate
    /// retries by (client_id, sequence).
    sessions_idle: Mutex<Vec<Session>>,
    connections: Mutex<Connections>,
    /// The latest leader check, shared by every call that needs one while
    /// it is recent (module `leader_check`).
    leader_check: Mutex<Option<LeaderCheck>>,
}

/// The answers of one leader check, shared between calls.
type StatusAnswers = Arc<Vec<StatusResponse>>;

/// One leader check, in flight or done.
struct LeaderCheck {
    started: Instant,
    answers: futures::future::Shared<BoxFuture<'static, StatusAnswers>>,
}

impl std::fmt::Debug for LeaderCheck {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("LeaderCheck")
            .field("started", &self.started)
            .finish_non_exhaustive()
    }
}

/// How one call ended.
struct CallEnd<T> {
    result: Result<T, ClientError>,
    /// Whether some attempt ended without an answer (timed out, cut off,
    /// abandoned): a request sent again may then meet the effect of its
    /// own first copy.
    outcome_unknown: bool,
}

/// How one attempt ended.
enum AttemptEnd<T> {
    /// The node answered (or the transport failed the call).
    Answered(Result<tonic::Response<T>, Status>),
    /// No answer within the request timeout.
    TimedOut,
    /// No answer yet, and the node at `leader` leads at the newest term.
    Abandoned { leader: String, waited: Duration },
}

/// A session leased to one write; returned to the pool when dropped, even
/// if the call was abandoned (a late copy of its request then arrives with
/// a sequence lower than the next write's, which the cluster ignores).
struct SessionLease<'a> {
    shared: &'a Shared,
    session: Option<Session>,
}

impl SessionLease<'_> {
    fn session(&self) -> Session {
        self.session
            .clone()
            .expect("a lease holds its session until dropped")
    }
}

impl Drop for SessionLease<'_> {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            lock(&self.shared.sessions_idle).push(session);
        }
    }
}

/// A panic while holding one of the client's locks cannot leave the data
/// inconsistent (every update is a single push, pop, insert or
/// assignment), so a poisoned lock is still safe to use.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[derive(Debug, Default)]
struct Connections {
    /// Lazily connected channels by address; tonic reconnects them.
    channels: BTreeMap<String, Channel>,
    /// The address that last served a leader-only call.
    leader: Option<String>,
}

impl Client {
    /// A client of the nodes at `addresses` (`host:port`, or a URI), with
    /// default [`ClientOptions`]. Connects lazily.
    pub fn new<I, S>(addresses: I) -> Result<Client, ClientError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Client::with_options(addresses, ClientOptions::default())
    }

    /// A client with explicit options.
    pub fn with_options<I, S>(addresses: I, options: ClientOptions) -> Result<Client, ClientError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        options.validate()?;
        let mut endpoints: Vec<String> = Vec::new();
        for address in addresses {
            let address = normalise_address(&address.into());
            if address.is_empty() {
                continue;
            }
            endpoint_for(&address, &options)?;
            if !endpoints.contains(&address) {
                endpoints.push(address);
            }
        }
        if endpoints.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        let shared = Shared {
            endpoints,
            options,
            sessions_idle: Mutex::new(vec![Session {
                client_id: random_client_id(),
                sequence: 0,
            }]),
            connections: Mutex::new(Connections::default()),
            leader_check: Mutex::new(None),
        };
        Ok(Client {
            shared: Arc::new(shared),
        })
    }

    /// The addresses this client was given.
    pub fn endpoints(&self) -> &[String] {
        &self.shared.endpoints
    }

    /// The client id the next write will carry (when no other write of
    /// this client is in flight).
    pub fn client_id(&self) -> String {
        let idle = lock(&self.shared.sessions_idle);
        idle.last()
            .map(|session| session.client_id.clone())
            .unwrap_or_default()
    }

    /// The address of the leader that last answered, if any.
    pub fn cached_leader(&self) -> Option<String> {
        self.connections().leader.clone()
    }

    /// Takes an idle session (or opens a new one) and advances its
    /// sequence for one write.
    fn lease_session(&self) -> SessionLease<'_> {
        let idle = lock(&self.shared.sessions_idle).pop();
        let mut session = idle.unwrap_or_else(|| Session {
            client_id: random_client_id(),
            sequence: 0,
        });
        session.sequence += 1;
        SessionLease {
            shared: &self.shared,
            session: Some(session),
        }
    }

    /// Sets `key` to `value`; returns the log index and the previous value.
    pub async fn put(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> Result<PutResponse, ClientError> {
        let lease = self.lease_session();
        let request = PutRequest {
            key: key.into(),
            value: value.into(),
            session: Some(lease.session()),
        };
        self.call(CallKind::WRITE_WITH_SESSION, move |channel, timeout| {
            let request = with_timeout(request.clone(), timeout);
            async move { KvClient::new(channel).put(request).await }
        })
        .await
    }

    /// The value of `key`, or `None` when it does not exist.
    pub async fn get(
        &self,
        key: impl Into<Vec<u8>>,
        mode: ReadMode,
    ) -> Result<Option<Vec<u8>>, ClientError> {
        Ok(self.get_key_value(key, mode).await?.map(|pair| pair.value))
    }

    /// The pair stored at `key` (with the index that wrote it), or `None`.
    pub async fn get_key_value(
        &self,
        key: impl Into<Vec<u8>>,
        mode: ReadMode,
    ) -> Result<Option<KeyValue>, ClientError> {
        let request = GetRequest {
            key: key.into(),
            mode: mode.into(),
        };
        let response = self
            .call(CallKind::read(mode), move |channel, timeout| {
                let request = with_timeout(request.clone(), timeout);
                async move { KvClient::new(channel).get(request).await }
            })
            .await?;
        Ok(response.kv)
    }

    /// Deletes `key`; the response says whether it existed.
    pub async fn delete(&self, key: impl Into<Vec<u8>>) -> Result<DeleteResponse, ClientError> {
        let lease = self.lease_session();
        let request = DeleteRequest {
            key: key.into(),
            session: Some(lease.session()),
        };
        self.call(CallKind::WRITE_WITH_SESSION, move |channel, timeout| {
            let request = with_timeout(request.clone(), timeout);
            async move { KvClient::new(channel).delete(request).await }
        })
        .await
    }

    /// Sets `key` to `value` (deletes it when `value` is `None`) if its
    /// current value is `expected` (`None`: the key must not exist).
    pub async fn compare_and_swap(
        &self,
        key: impl Into<Vec<u8>>,
        expected: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
    ) -> Result<CompareAndSwapResponse, ClientError> {
        let lease = self.lease_session();
        let request = CompareAndSwapRequest {
            key: key.into(),
            expected,
            value,
            session: Some(lease.session()),
        };
        self.call(CallKind::WRITE_WITH_SESSION, move |channel, timeout| {
            let request = with_timeout(request.clone(), timeout);
            async move { KvClient::new(channel).compare_and_swap(request).await }
        })
        .await
    }

    /// Pairs whose key starts with `prefix`, in key order; `limit` 0 means
    /// the server's default.
    pub async fn range(
        &self,
        prefix: impl Into<Vec<u8>>,
        limit: u32,
        mode: ReadMode,
    ) -> Result<RangeResponse, ClientError> {
        let request = RangeRequest {
            prefix: prefix.into(),
            limit,
            mode: mode.into(),
        };
        self.call(CallKind::read(mode), move |channel, timeout| {
            let request = with_timeout(request.clone(), timeout);
            async move { KvClient::new(channel).range(request).await }
        })
        .await
    }

    /// Submits an opaque command to the state machine with this client's
    /// automatic session.
    pub async fn submit_command(
        &self,
        command: impl Into<Vec<u8>>,
    ) -> Result<SubmitResponse, ClientError> {
        let lease = self.lease_session();
        let session = lease.session();
        self.submit(command, &session.client_id, session.sequence)
            .await
    }

    /// Submits an opaque command to the state machine with an explicit
    /// session: one write at a time per `client_id`, with a growing
    /// `sequence`; an empty `client_id` opts out of deduplication.
    pub async fn submit(
        &self,
        command: impl Into<Vec<u8>>,
        client_id: &str,
        sequence: u64,
    ) -> Result<SubmitResponse, ClientError> {
        let request = SubmitRequest {
            command: command.into(),
            client_id: client_id.to_string(),
            sequence,
        };
        self.call(CallKind::submit(client_id), move |channel, timeout| {
            let request = with_timeout(request.clone(), timeout);
            async move { ClientClient::new(channel).submit(request).await }
        })
        .await
    }

    /// Asks the leader to hand leadership to `target_id`; waits until the
    /// target leads or the attempt times out.
    pub async fn transfer_leadership(
        &self,
        target_id: u64,
    ) -> Result<TransferLeadershipResponse, ClientError> {
        self.call(CallKind::TRANSFER, move |channel, timeout| {
            let request = with_timeout(TransferLeadershipRequest { target_id }, timeout);
            async move {
                ClusterClient::new(channel)
                    .transfer_leadership(request)
                    .await
            }
        })
        .await
    }

    /// The cluster's members as the leader knows them: roles, addresses,
    /// how far each has replicated (`match_index`, the leader's own being
    /// its last durable index), whether the latest membership is committed
    /// and, while a change of voters is in flight, the joint membership.
    /// Found and retried like a linearizable read; a follower's view is
    /// [`Client::member_list_at`].
    pub async fn member_list(&self) -> Result<MemberListResponse, ClientError> {
        self.call(CallKind::LEADER_VIEW, move |channel, timeout| async move {
            let mut cluster = ClusterClient::new(channel);
            let status = cluster
                .status(with_timeout(StatusRequest {}, timeout))
                .await?
                .into_inner();
            if status.role != Role::Leader as i32 {
                return Err(membership::redirect(&status));
            }
            cluster
                .member_list(with_timeout(MemberListRequest {}, timeout))
                .await
        })
        .await
    }

    /// The members as the one node at `address` knows them (its latest
    /// membership, committed or not; match indexes are 0 unless it
    /// leads): one attempt, no redirect.
    pub async fn member_list_at(&self, address: &str) -> Result<MemberListResponse, ClientError> {
        let address = normalise_address(address);
        let channel = self.channel(&address)?;
        let timeout = self.shared.options.request_timeout;
        let request = with_timeout(MemberListRequest {}, timeout);
        let mut cluster = ClusterClient::new(channel);
        let result = match tokio::time::timeout(timeout, cluster.member_list(request)).await {
            Ok(result) => result.map(tonic::Response::into_inner),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "no answer within {timeout:?}"
            ))),
        };
        result.map_err(|status| ClientError::Rejected {
            address,
            code: status.code(),
            message: status.message().to_string(),
        })
    }

    /// Adds node `node_id` as a learner reached by its peers at `address`
    /// (its peer API, `host:port`): it receives the log but does not vote
    /// until [`Client::member_promote`]. Answered once the leader applied
    /// the change.
    ///
    /// Refused with [`ClientError::Rejected`] (`INVALID_ARGUMENT`) when the
    /// node is already a member. Retried while another change is in flight
    /// (`UNAVAILABLE`), within [`ClientOptions`]' bounds. After an attempt
    /// whose outcome was unknown, a copy sent again that is refused because
    /// the node is already a member, at the same address, counts as
    /// success: the leader's membership then fills the answer, and `index`
    /// is the index of the entry that set that membership (this change's
    /// or a later one). When the membership cannot be read, the refusal
    /// is returned; [`Client::member_list`] then says whether it applied.
    pub async fn member_add(
        &self,
        node_id: u64,
        address: impl Into<String>,
    ) -> Result<MemberChangeResponse, ClientError> {
        let address = address.into().trim().to_string();
        self.change_membership(membership::MemberChange::Add { node_id, address })
            .await
    }

    /// Makes learner `node_id` a voter, through a joint membership (the
    /// answer's `index` is the joint entry's; the leader then moves on to
    /// the new voters by itself). The leader refuses (`UNAVAILABLE`, retried
    /// within [`ClientOptions`]' bounds) while the learner is more than one
    /// append message behind its log; a node that is not a learner is
    /// refused with `INVALID_ARGUMENT`. Sent again after an unknown outcome
    /// as [`Client::member_add`] is: a refusal then counts as success when
    /// the node votes.
    pub async fn member_promote(&self, node_id: u64) -> Result<MemberChangeResponse, ClientError> {
        self.change_membership(membership::MemberChange::Promote { node_id })
            .await
    }

    /// Removes member `node_id`: a learner at once, a voter through a joint
    /// membership. Removing the leader makes it step down once the change
    /// commits; the others then elect a leader among themselves. The last
    /// voter, and a node that is not a member, are refused with
    /// `INVALID_ARGUMENT`. Sent again after an unknown outcome as
    /// [`Client::member_add`] is: a refusal then counts as success when the
    /// node is no longer a voter or learner.
    pub async fn member_remove(&self, node_id: u64) -> Result<MemberChangeResponse, ClientError> {
        self.change_membership(membership::MemberChange::Remove { node_id })
            .await
    }

    /// Sends `change` to the leader; reads a refusal that follows an
    /// unknown outcome against the leader's membership.
    async fn change_membership(
        &self,
        change: membership::MemberChange,
    ) -> Result<MemberChangeResponse, ClientError> {
        let sent = &change;
        let end = self
            .call_reporting(CallKind::MEMBERSHIP_CHANGE, move |channel, timeout| {
                sent.send(channel, timeout)
            })
            .await;
        let error = match end.result {
            Err(error) if membership::may_be_own_effect(&error, end.outcome_unknown) => error,
            other => return other,
        };
        match self.member_list().await {
            Ok(listing) if change.made_in(listing.membership.as_ref()) => {
                tracing::info!(%change, %error, "refused after an unknown outcome, but the change is in the membership");
                Ok(MemberChangeResponse {
                    index: listing.membership_index,
                    membership: listing.membership,
                })
            }
            Ok(_) => Err(error),
            Err(listing_error) => {
                tracing::warn!(%change, %listing_error, "cannot check whether a change whose outcome was unknown applied");
                Err(error)
            }
        }
    }

    /// The status of the one node at `address` (any node, not necessarily
    /// one given to this client): one attempt, no redirect.
    pub async fn status(&self, address: &str) -> Result<StatusResponse, ClientError> {
        let address = normalise_address(address);
        let channel = self.channel(&address)?;
        status_within(channel, self.shared.options.request_timeout)
            .await
            .map_err(|status| ClientError::Rejected {
                address,
                code: status.code(),
                message: status.message().to_string(),
            })
    }

    /// The status of every node this client knows of: the addresses it was
    /// given and every peer those nodes report. Ordered by node id; nodes
    /// that did not answer come last, by address.
    pub async fn cluster_status(&self) -> Vec<NodeStatus> {
        let mut asked: BTreeSet<String> = BTreeSet::new();
        let mut results: Vec<NodeStatus> = Vec::new();
        let mut to_ask: Vec<String> = self.shared.endpoints.clone();
        while !to_ask.is_empty() {
            asked.extend(to_ask.iter().cloned());
            let answers = futures::future::join_all(to_ask.iter().map(|address| async move {
                NodeStatus {
                    address: address.clone(),
                    status: self.status(address).await,
                }
            }))
            .await;
            let mut discovered: BTreeSet<String> = BTreeSet::new();
            for answer in &answers {
                if let Ok(status) = &answer.status {
                    let peers = status.peers.iter().map(|peer| peer.address.as_str());
                    for address in peers.chain(std::iter::once(status.leader_address.as_str())) {
                        let address = normalise_address(address);
                        if !address.is_empty() && !asked.contains(&address) {
                            discovered.insert(address);
                        }
                    }
                }
            }
            results.extend(answers);
            to_ask = discovered.into_iter().collect();
        }
        results.sort_by_key(|node| match &node.status {
            Ok(status) => (0, status.node_id, node.address.clone()),
            Err(_) => (1, 0, node.address.clone()),
        });
        results
    }

    /// Runs `operation` against the leader (or the first address for
    /// [`Route::FirstAddress`]) until it succeeds, fails for good, or the
    /// retry budget is spent.
    async fn call<T, F, Fut>(&self, kind: CallKind, operation: F) -> Result<T, ClientError>
    where
        F: FnMut(Channel, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.call_reporting(kind, operation).await.result
    }

    /// [`Client::call`], also saying whether some attempt ended without
    /// knowing whether the request was applied: what a membership change
    /// needs to read a refusal of a later attempt correctly.
    async fn call_reporting<T, F, Fut>(&self, kind: CallKind, mut operation: F) -> CallEnd<T>
    where
        F: FnMut(Channel, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let end = |plan: &RetryPlan, result| CallEnd {
            result,
            outcome_unknown: plan.outcome_unknown,
        };
        let options = &self.shared.options;
        let started = Instant::now();
        let preferred = match kind.route {
            Route::Leader => self.cached_leader(),
            Route::FirstAddress => None,
        };
        let mut plan = RetryPlan::new(self.shared.endpoints.clone(), options, random_seed());
        let mut address = plan.first_address(preferred);
        loop {
            let channel = match self.channel(&address) {
                Ok(channel) => channel,
                Err(error) => return end(&plan, Err(error)),
            };
            let attempt = operation(channel, options.request_timeout);
            let (status, failure) = match self.attempt(kind, &address, attempt).await {
                AttemptEnd::Answered(Ok(response)) => {
                    if kind.route == Route::Leader {
                        self.connections().leader = Some(address);
                    }
                    return end(&plan, Ok(response.into_inner()));
                }
                AttemptEnd::Answered(Err(status)) => {
                    let failure = Failure::from_status(&status);
                    (status, failure)
                }
                AttemptEnd::TimedOut => (
                    Status::deadline_exceeded(format!(
                        "no answer within the request timeout of {:?}",
                        options.request_timeout
                    )),
                    Failure::OutcomeUnknown,
                ),
                AttemptEnd::Abandoned { leader, waited } => (
                    Status::deadline_exceeded(format!(
                        "no answer after {waited:?}, and node {leader} leads now: attempt abandoned"
                    )),
                    Failure::LeaderMoved { leader },
                ),
            };
            self.forget_leader(&address);
            if let Failure::LeaderMoved { leader } = &failure {
                self.connections().leader = Some(leader.clone());
            }
            tracing::debug!(%address, code = ?status.code(), message = status.message(), "attempt failed");
            match plan.after_failure(&address, &failure, kind.resend, started.elapsed()) {
                Decision::Retry {
                    address: next,
                    delay,
                } => {
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    address = next;
                }
                Decision::Stop => {
                    let error = ClientError::Rejected {
                        address,
                        code: status.code(),
                        message: status.message().to_string(),
                    };
                    return end(&plan, Err(error));
                }
                Decision::OutcomeUnknown => {
                    let error = ClientError::OutcomeUnknown {
                        address,
                        code: status.code(),
                        message: status.message().to_string(),
                    };
                    return end(&plan, Err(error));
                }
                Decision::GiveUp => {
                    let error = ClientError::GaveUp {
                        attempts: plan.attempts,
                        elapsed: started.elapsed(),
                        addresses_tried: plan.addresses_tried.clone(),
                        last_address: address,
                        last_code: status.code(),
                        last_message: status.message().to_string(),
                        outcome_unknown: plan.outcome_unknown,
                    };
                    return end(&plan, Err(error));
                }
            }
        }
    }

    /// Waits for one attempt at `address`, at most the request timeout;
    /// while it waits, checks on the schedule of module `leader_check`
    /// whether another node leads, and abandons the attempt if one does.
    async fn attempt<T>(
        &self,
        kind: CallKind,
        address: &str,
        attempt: impl Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> AttemptEnd<T> {
        let options = &self.shared.options;
        let started = Instant::now();
        let mut attempt = pin!(tokio::time::timeout(options.request_timeout, attempt));
        let ended = |result: Result<Result<tonic::Response<T>, Status>, _>| match result {
            Ok(answer) => AttemptEnd::Answered(answer),
            Err(tokio::time::error::Elapsed { .. }) => AttemptEnd::TimedOut,
        };
        let mut schedule = leader_check::CheckSchedule::new(
            kind.route == Route::Leader && kind.leader_check,
            self.shared.endpoints.len(),
            options.leader_check_interval,
            options.request_timeout,
        );
        // Bounded: each turn waits an interval, and the schedule hands out
        // at most request_timeout / interval checks.
        while let Some(wait) = schedule.next_wait(started.elapsed()) {
            let sleep = pin!(tokio::time::sleep(wait));
            if let Either::Left((result, _)) =
                futures::future::select(attempt.as_mut(), sleep).await
            {
                return ended(result);
            }
            let check = self.leader_check();
            match futures::future::select(attempt.as_mut(), check).await {
                Either::Left((result, _)) => return ended(result),
                Either::Right((answers, _)) => {
                    if let Some(leader) = leader_check::leader_elsewhere(address, &answers) {
                        tracing::debug!(%address, %leader, "another node leads; abandoning the attempt");
                        return AttemptEnd::Abandoned {
                            leader,
                            waited: started.elapsed(),
                        };
                    }
                }
            }
        }
        ended(attempt.await)
    }

    /// The answers of a leader check: a check started within the last
    /// quarter interval if there is one (in flight or done), else a new
    /// one that asks every node given, each for at most one interval, and
    /// ends once enough have answered (module `leader_check`, rule 2).
    fn leader_check(&self) -> futures::future::Shared<BoxFuture<'static, StatusAnswers>> {
        let interval = self
            .shared
            .options
            .leader_check_interval
            .unwrap_or(LEADER_CHECK_INTERVAL_MIN);
        let mut latest = lock(&self.shared.leader_check);
        if let Some(check) = latest.as_ref() {
            if check.started.elapsed() < interval / 4 {
                return check.answers.clone();
            }
        }
        // The future holds channels, not the client, so that a check nobody
        // waits for does not keep the client alive.
        let mut channels = Vec::new();
        for address in &self.shared.endpoints {
            if let Ok(channel) = self.channel(address) {
                channels.push(channel);
            }
        }
        let answers = ask_who_leads(channels, interval).boxed().shared();
        *latest = Some(LeaderCheck {
            started: Instant::now(),
            answers: answers.clone(),
        });
        answers
    }

    fn connections(&self) -> std::sync::MutexGuard<'_, Connections> {
        lock(&self.shared.connections)
    }

    fn forget_leader(&self, address: &str) {
        let mut connections = self.connections();
        if connections.leader.as_deref() == Some(address) {
            connections.leader = None;
        }
    }

    fn channel(&self, address: &str) -> Result<Channel, ClientError> {
        let mut connections = self.connections();
        if let Some(channel) = connections.channels.get(address) {
            return Ok(channel.clone());
        }
        let channel = endpoint_for(address, &self.shared.options)?.connect_lazy();
        connections
            .channels
            .insert(address.to_string(), channel.clone());
        Ok(channel)
    }
}

/// The leader that every one of `statuses` names, provided it is among
/// them and says it leads; `None` while nodes disagree or an election runs.
pub fn agreed_leader<'a>(statuses: impl IntoIterator<Item = &'a StatusResponse>) -> Option<u64> {
    let statuses: Vec<&StatusResponse> = statuses.into_iter().collect();
    let leader = statuses.first()?.leader_id;
    if leader == 0 || statuses.iter().any(|status| status.leader_id != leader) {
        return None;
    }
    let leader_says_so = statuses
        .iter()
        .any(|status| status.node_id == leader && status.role == Role::Leader as i32);
    leader_says_so.then_some(leader)
}

/// `Cluster.Status` of one node, at most `timeout`.
async fn status_within(channel: Channel, timeout: Duration) -> Result<StatusResponse, Status> {
    let request = with_timeout(StatusRequest {}, timeout);
    let mut cluster = ClusterClient::new(channel);
    match tokio::time::timeout(timeout, cluster.status(request)).await {
        Ok(result) => result.map(tonic::Response::into_inner),
        Err(_) => Err(Status::deadline_exceeded(format!(
            "no answer within {timeout:?}"
        ))),
    }
}

/// The statuses of the nodes behind `channels`, asked at once, each given
/// at most `timeout`; returns once enough have answered (module
/// `leader_check`, rule 2).
async fn ask_who_leads(channels: Vec<Channel>, timeout: Duration) -> StatusAnswers {
    let asked = channels.len();
    let mut pending: FuturesUnordered<_> = channels
        .into_iter()
        .map(|channel| status_within(channel, timeout))
        .collect();
    let mut answers = Vec::new();
    let mut failed = 0;
    // Bounded: one turn per node asked, each within `timeout`.
    while let Some(result) = pending.next().await {
        match result {
            Ok(status) => answers.push(status),
            Err(_) => failed += 1,
        }
        if leader_check::enough_answers(asked, answers.len(), failed) {
            break;
        }
    }
    Arc::new(answers)
}

fn with_timeout<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    // Sent as grpc-timeout, so the server stops waiting when we do.
    request.set_timeout(timeout);
    request
}

/// `host:port` for display and as the cache key; a scheme given by the
/// caller is kept.
fn normalise_address(address: &str) -> String {
    address.trim().trim_end_matches('/').to_string()
}

/// Whether two normalised addresses name the same node, whether or not
/// either carries a scheme.
fn same_address(one: &str, other: &str) -> bool {
    let bare = |address: &str| {
        address
            .split_once("://")
            .map_or(address, |(_, rest)| rest)
            .to_string()
    };
    bare(one) == bare(other)
}

fn endpoint_for(address: &str, options: &ClientOptions) -> Result<Endpoint, ClientError> {
    let scheme = if options.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let uri = if address.contains("://") {
        address.to_string()
    } else {
        format!("{scheme}://{address}")
    };
    let invalid = |error: tonic::transport::Error| ClientError::InvalidAddress {
        address: address.to_string(),
        message: error.to_string(),
    };
    let mut endpoint = Endpoint::from_shared(uri)
        .map_err(invalid)?
        .connect_timeout(options.connect_timeout)
        .tcp_nodelay(true);
    if let Some(tls) = &options.tls {
        endpoint = endpoint.tls_config(tls.config()).map_err(invalid)?;
    }
    Ok(endpoint)
}

/// 128 random bits from the standard library's per-process hash keys, the
/// clock and the process id: unique enough to tell client sessions apart
/// without another dependency.
fn random_client_id() -> String {
    format!("{:016x}{:016x}", random_seed(), random_seed())
}

fn random_seed() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    hasher.write_u128(now.map(|since| since.as_nanos()).unwrap_or_default());
    hasher.finish()
}

/// What one failed attempt means for the next one.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Failure {
    /// The node is not the leader; it may know who is.
    NotLeader {
        /// The leader's address, when the node knows it.
        leader_address: Option<String>,
    },
    /// The node cannot serve now (no quorum, no leader, shutting down) or
    /// could not be reached: the request was not applied there.
    Unavailable,
    /// The attempt ended without an answer; a write may or may not apply.
    OutcomeUnknown,
    /// The attempt was abandoned without an answer because the node at
    /// `leader` leads now; a write may or may not apply.
    LeaderMoved {
        /// The new leader's address.
        leader: String,
    },
    /// Retrying cannot help.
    Permanent,
}

impl Failure {
    fn from_status(status: &Status) -> Failure {
        match status.code() {
            Code::FailedPrecondition => {
                let leader_address = status
                    .metadata()
                    .get(LEADER_ADDRESS_KEY)
                    .and_then(|value| value.to_str().ok())
                    .map(normalise_address)
                    .filter(|address| !address.is_empty());
                Failure::NotLeader { leader_address }
            }
            Code::Unavailable => Failure::Unavailable,
            // Cancelled and Unknown are what tonic reports when a connection
            // breaks mid-call; Aborted is a transient conflict.
            Code::DeadlineExceeded | Code::Cancelled | Code::Unknown | Code::Aborted => {
                Failure::OutcomeUnknown
            }
            // tonic turns HTTP/2 resets of a dying connection into Internal.
            Code::Internal if status.message().starts_with("h2 protocol error") => {
                Failure::OutcomeUnknown
            }
            _ => Failure::Permanent,
        }
    }
}

/// What to do after a failed attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Decision {
    /// Try `address` after waiting `delay`.
    Retry { address: String, delay: Duration },
    /// The retry budget is spent.
    GiveUp,
    /// The failure is permanent.
    Stop,
    /// The outcome is unknown and the request must not be sent again.
    OutcomeUnknown,
}

/// The retry state of one call. Pure: time comes in as `elapsed`, and the
/// jitter comes from a seeded generator.
#[derive(Debug)]
struct RetryPlan {
    endpoints: Vec<String>,
    attempts_max: u32,
    backoff_initial: Duration,
    backoff_max: Duration,
    retry_duration_max: Duration,
    /// Attempts started so far.
    attempts: u32,
    /// Index in `endpoints` of the next address to rotate to.
    rotation_next: usize,
    /// The base of the next backoff; invariant: <= backoff_max.
    backoff_next: Duration,
    /// Whether the previous failure was a redirect that was followed
    /// without waiting: two nodes pointing at each other during an
    /// election must not spin.
    previous_was_redirect: bool,
    /// Whether some attempt ended with its outcome unknown.
    outcome_unknown: bool,
    /// Every address tried, in order of first use.
    addresses_tried: Vec<String>,
    jitter_state: u64,
}

impl RetryPlan {
    fn new(endpoints: Vec<String>, options: &ClientOptions, seed: u64) -> RetryPlan {
        assert!(
            !endpoints.is_empty(),
            "a retry plan needs at least one address"
        );
        RetryPlan {
            endpoints,
            attempts_max: options.attempts_max,
            backoff_initial: options.backoff_initial,
            backoff_max: options.backoff_max,
            retry_duration_max: options.retry_duration_max,
            attempts: 0,
            rotation_next: 0,
            backoff_next: options.backoff_initial,
            previous_was_redirect: false,
            outcome_unknown: false,
            addresses_tried: Vec::new(),
            // xorshift must not start at zero.
            jitter_state: seed | 1,
        }
    }

    /// The address of the first attempt: the cached leader if any, else
    /// the first endpoint.
    fn first_address(&mut self, preferred: Option<String>) -> String {
        let address = preferred.unwrap_or_else(|| {
            self.rotation_next = 1 % self.endpoints.len();
            self.endpoints[0].clone()
        });
        self.start_attempt(&address);
        address
    }

    fn after_failure(
        &mut self,
        address: &str,
        failure: &Failure,
        resend: Resend,
        elapsed: Duration,
    ) -> Decision {
        let redirect = match failure {
            Failure::Permanent => return Decision::Stop,
            Failure::NotLeader {
                leader_address: Some(leader),
            } if !same_address(leader, address) => Some(leader.clone()),
            Failure::OutcomeUnknown | Failure::LeaderMoved { .. } => {
                self.outcome_unknown = true;
                if resend == Resend::Unsafe {
                    return Decision::OutcomeUnknown;
                }
                None
            }
            Failure::NotLeader { .. } | Failure::Unavailable => None,
        };
        if self.attempts >= self.attempts_max {
            return Decision::GiveUp;
        }
        let (next, delay) = match (failure, redirect) {
            // The attempt already waited a leader check interval, and the
            // new leader answered the check: no reason to wait more.
            (Failure::LeaderMoved { leader }, _) => {
                self.previous_was_redirect = false;
                (leader.clone(), Duration::ZERO)
            }
            (_, Some(leader)) if !self.previous_was_redirect => {
                self.previous_was_redirect = true;
                (leader, Duration::ZERO)
            }
            (_, Some(leader)) => {
                self.previous_was_redirect = false;
                (leader, self.backoff())
            }
            (_, None) => {
                self.previous_was_redirect = false;
                (self.rotate(address), self.backoff())
            }
        };
        if elapsed + delay > self.retry_duration_max {
            return Decision::GiveUp;
        }
        self.start_attempt(&next);
        Decision::Retry {
            address: next,
            delay,
        }
    }

    fn start_attempt(&mut self, address: &str) {
        self.attempts += 1;
        if !self.addresses_tried.iter().any(|tried| tried == address) {
            self.addresses_tried.push(address.to_string());
        }
    }

    /// The next endpoint in rotation, skipping the one that just failed
    /// when there is another.
    fn rotate(&mut self, failed: &str) -> String {
        let count = self.endpoints.len();
        for _ in 0..count {
            let candidate = self.endpoints[self.rotation_next].clone();
            self.rotation_next = (self.rotation_next + 1) % count;
            if candidate != failed || count == 1 {
                return candidate;
            }
        }
        unreachable!("with two or more distinct endpoints one differs from the failed address")
    }

    /// Exponential backoff with "equal jitter": a wait in [base/2, base],
    /// so clients that failed together do not retry together.
    fn backoff(&mut self) -> Duration {
        let base = self.backoff_next;
        self.backoff_next = (base * 2).min(self.backoff_max).max(self.backoff_initial);
        let half = base / 2;
        let spread = (base - half).as_micros() as u64;
        half + Duration::from_micros(self.next_random() % (spread + 1))
    }

    fn next_random(&mut self) -> u64 {
        let mut x = self.jitter_state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.jitter_state = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataValue;

    fn options() -> ClientOptions {
        ClientOptions {
            attempts_max: 6,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_millis(400),
            retry_duration_max: Duration::from_secs(10),
            request_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            leader_check_interval: Some(Duration::from_millis(500)),
            tls: None,
        }
    }

    fn endpoints() -> Vec<String> {
        vec!["n1:1".into(), "n2:2".into(), "n3:3".into()]
    }

    fn not_leader(hint: Option<&str>) -> Failure {
        Failure::NotLeader {
            leader_address: hint.map(str::to_string),
        }
    }

    /// Feeds `failures` in order and returns the addresses attempted and
    /// the final decision.
    fn run(plan: &mut RetryPlan, failures: &[Failure]) -> (Vec<String>, Vec<Duration>, Decision) {
        let mut address = plan.first_address(None);
        let mut addresses = vec![address.clone()];
        let mut delays = Vec::new();
        let mut elapsed = Duration::ZERO;
        for failure in failures {
            match plan.after_failure(&address, failure, Resend::Safe, elapsed) {
                Decision::Retry {
                    address: next,
                    delay,
                } => {
                    elapsed += delay;
                    delays.push(delay);
                    addresses.push(next.clone());
                    address = next;
                }
                other => return (addresses, delays, other),
            }
        }
        (
            addresses,
            delays,
            Decision::Retry {
                address,
                delay: Duration::ZERO,
            },
        )
    }

    #[test]
    fn a_leader_hint_is_followed_at_once() {
        let mut plan = RetryPlan::new(endpoints(), &options(), 7);
        let (addresses, delays, _) = run(&mut plan, &[not_leader(Some("n3:3"))]);
        assert_eq!(addresses, ["n1:1", "n3:3"]);
        assert_eq!(delays, [Duration::ZERO]);
    }

    #[test]
    fn nodes_pointing_at_each_other_are_slowed_down() {
        let mut plan = RetryPlan::new(endpoints(), &options(), 7);
        let failures = [
            not_leader(Some("n2:2")),
            not_leader(Some("n1:1")),
            not_leader(Some("n2:2")),
        ];
        let (addresses, delays, _) = run(&mut plan, &failures);
        assert_eq!(addresses, ["n1:1", "n2:2", "n1:1", "n2:2"]);
        assert_eq!(delays[0], Duration::ZERO);
        assert!(delays[1] >= Duration::from_millis(50), "{delays:?}");
        assert_eq!(delays[2], Duration::ZERO);
    }

    #[test]
    fn a_hint_naming_the_node_itself_counts_as_no_hint() {
        let mut plan = RetryPlan::new(endpoints(), &options(), 7);
        let (addresses, delays, _) = run(&mut plan, &[not_leader(Some("n1:1"))]);
        assert_eq!(addresses, ["n1:1", "n2:2"]);
        assert!(delays[0] > Duration::ZERO);
    }

    #[test]
    fn unavailable_rotates_with_growing_bounded_backoff() {
        let mut plan = RetryPlan::new(endpoints(), &options(), 42);
        let failures = vec![Failure::Unavailable; 5];
        let (addresses, delays, _) = run(&mut plan, &failures);
        assert_eq!(addresses, ["n1:1", "n2:2", "n3:3", "n1:1", "n2:2", "n3:3"]);
        let bases = [100, 200, 400, 400, 400];
        for (delay, base) in delays.iter().zip(bases) {
            let base = Duration::from_millis(base);
            assert!(
                *delay >= base / 2 && *delay <= base,
                "{delay:?} outside [{:?}, {base:?}]",
                base / 2
            );
        }
    }

    #[test]
    fn rotation_skips_the_address_that_just_failed() {
        // The first attempt went to a cached leader that is also n2.
        let mut plan = RetryPlan::new(endpoints(), &options(), 1);
        let first = plan.first_address(Some("n2:2".into()));
        assert_eq!(first, "n2:2");
        let Decision::Retry { address, .. } =
            plan.after_failure("n2:2", &Failure::Unavailable, Resend::Safe, Duration::ZERO)
        else {
            panic!("should retry");
        };
        assert_eq!(address, "n1:1");
        let Decision::Retry { address, .. } =
            plan.after_failure("n1:1", &Failure::Unavailable, Resend::Safe, Duration::ZERO)
        else {
            panic!("should retry");
        };
        assert_eq!(address, "n2:2");
    }

    #[test]
    fn a_single_endpoint_is_retried() {
        let mut plan = RetryPlan::new(vec!["only:1".into()], &options(), 3);
        let (addresses, _, _) = run(&mut plan, &[Failure::Unavailable, Failure::OutcomeUnknown]);
        assert_eq!(addresses, ["only:1", "only:1", "only:1"]);
    }

    #[test]
    fn permanent_failures_stop_at_once() {
        let mut plan = RetryPlan::new(endpoints(), &options(), 3);
        let (addresses, _, decision) = run(&mut plan, &[Failure::Unavailable, Failure::Permanent]);
        assert_eq!(addresses, ["n1:1", "n2:2"]);
        assert_eq!(decision, Decision::Stop);
    }

    #[test]
    fn attempts_are_bounded_and_redirects_count() {
        let mut plan = RetryPlan::new(endpoints(), &options(), 3);
        // n1 and n2 keep naming each other, as during an election.
        let failures: Vec<Failure> = (0..10)
            .map(|attempt| not_leader(Some(if attempt % 2 == 0 { "n2:2" } else { "n1:1" })))
            .collect();
        let (addresses, _, decision) = run(&mut plan, &failures);
        assert_eq!(decision, Decision::GiveUp);
        assert_eq!(addresses.len(), options().attempts_max as usize);
        assert_eq!(plan.attempts, options().attempts_max);
        assert_eq!(plan.addresses_tried, ["n1:1", "n2:2"]);
    }

    #[test]
    fn total_time_is_bounded() {
        let mut plan = RetryPlan::new(endpoints(), &options(), 3);
        plan.first_address(None);
        let decision = plan.after_failure(
            "n1:1",
            &Failure::Unavailable,
            Resend::Safe,
            Duration::from_millis(9_990),
        );
        assert_eq!(decision, Decision::GiveUp);
    }

    #[test]
    fn unknown_outcomes_are_retried_and_remembered() {
        let mut plan = RetryPlan::new(endpoints(), &options(), 3);
        let failures = [Failure::OutcomeUnknown, Failure::Unavailable];
        let (addresses, _, _) = run(&mut plan, &failures);
        assert_eq!(addresses, ["n1:1", "n2:2", "n3:3"]);
        assert!(plan.outcome_unknown);
    }

    fn leader_moved(leader: &str) -> Failure {
        Failure::LeaderMoved {
            leader: leader.to_string(),
        }
    }

    #[test]
    fn an_abandoned_attempt_is_sent_again_at_once_to_the_new_leader() {
        let mut plan = RetryPlan::new(endpoints(), &options(), 7);
        let (addresses, delays, _) = run(&mut plan, &[leader_moved("n3:3")]);
        assert_eq!(addresses, ["n1:1", "n3:3"]);
        assert_eq!(delays, [Duration::ZERO]);
        assert!(plan.outcome_unknown);
    }

    #[test]
    fn an_abandoned_attempt_after_a_redirect_is_not_slowed_down() {
        // A hint led to n2, which then stopped; the check names n3.
        let mut plan = RetryPlan::new(endpoints(), &options(), 7);
        let failures = [not_leader(Some("n2:2")), leader_moved("n3:3")];
        let (addresses, delays, _) = run(&mut plan, &failures);
        assert_eq!(addresses, ["n1:1", "n2:2", "n3:3"]);
        assert_eq!(delays, [Duration::ZERO, Duration::ZERO]);
    }

    #[test]
    fn abandoned_attempts_count_against_the_attempt_budget() {
        let mut plan = RetryPlan::new(endpoints(), &options(), 7);
        let failures: Vec<Failure> = (0..10)
            .map(|attempt| leader_moved(if attempt % 2 == 0 { "n2:2" } else { "n1:1" }))
            .collect();
        let (addresses, _, decision) = run(&mut plan, &failures);
        assert_eq!(decision, Decision::GiveUp);
        assert_eq!(addresses.len(), options().attempts_max as usize);
    }

    #[test]
    fn a_write_without_a_session_is_never_sent_again_once_its_outcome_is_unknown() {
        for failure in [Failure::OutcomeUnknown, leader_moved("n3:3")] {
            let mut plan = RetryPlan::new(endpoints(), &options(), 7);
            plan.first_address(None);
            let decision = plan.after_failure("n1:1", &failure, Resend::Unsafe, Duration::ZERO);
            assert_eq!(decision, Decision::OutcomeUnknown, "{failure:?}");
            assert_eq!(plan.attempts, 1);
            assert!(plan.outcome_unknown);
        }
    }

    #[test]
    fn a_write_without_a_session_is_still_redirected_when_it_was_refused() {
        // A refusal says the write was not proposed there: sending it to
        // the leader cannot apply it twice.
        let mut plan = RetryPlan::new(endpoints(), &options(), 7);
        plan.first_address(None);
        let decision = plan.after_failure(
            "n1:1",
            &not_leader(Some("n2:2")),
            Resend::Unsafe,
            Duration::ZERO,
        );
        assert_eq!(
            decision,
            Decision::Retry {
                address: "n2:2".into(),
                delay: Duration::ZERO
            }
        );
        assert!(!plan.outcome_unknown);
    }

    #[test]
    fn call_kinds_say_what_may_be_sent_again() {
        let with_session = CallKind::submit("0123abcd");
        let without_session = CallKind::submit("");
        assert_eq!(with_session.resend, Resend::Safe);
        assert_eq!(without_session.resend, Resend::Unsafe);
        // Both leave a stopped leader; only the first is sent again.
        assert!(with_session.leader_check && without_session.leader_check);
        for mode in [ReadMode::Linearizable, ReadMode::Lease] {
            let kind = CallKind::read(mode);
            assert_eq!((kind.route, kind.resend), (Route::Leader, Resend::Safe));
            assert!(kind.leader_check);
        }
        let stale = CallKind::read(ReadMode::Stale);
        assert_eq!(stale.route, Route::FirstAddress);
        assert!(!stale.leader_check);
    }

    #[test]
    fn membership_calls_go_to_the_leader_are_sent_again_and_leave_a_stopped_one() {
        // A copy of a change that already applied is refused, never applied
        // twice (module `membership`), so an unknown outcome is retried.
        for kind in [CallKind::MEMBERSHIP_CHANGE, CallKind::LEADER_VIEW] {
            assert_eq!((kind.route, kind.resend), (Route::Leader, Resend::Safe));
            assert!(kind.leader_check);
        }
    }

    #[test]
    fn addresses_with_and_without_a_scheme_are_the_same_node() {
        assert!(same_address("http://127.0.0.1:7001", "127.0.0.1:7001"));
        assert!(same_address("127.0.0.1:7001", "https://127.0.0.1:7001"));
        assert!(!same_address("127.0.0.1:7001", "127.0.0.1:7002"));
    }

    #[test]
    fn statuses_are_classified_by_code_and_hint() {
        let mut not_leader = Status::failed_precondition("not the leader");
        not_leader.metadata_mut().insert(
            LEADER_ADDRESS_KEY,
            MetadataValue::from_static("127.0.0.1:7003"),
        );
        not_leader
            .metadata_mut()
            .insert(LEADER_ID_KEY, MetadataValue::from_static("3"));
        assert_eq!(
            Failure::from_status(&not_leader),
            Failure::NotLeader {
                leader_address: Some("127.0.0.1:7003".into())
            }
        );
        let cases = [
            (
                Status::failed_precondition("no leader"),
                Failure::NotLeader {
                    leader_address: None,
                },
            ),
            (
                Status::unavailable("tcp connect error"),
                Failure::Unavailable,
            ),
            (Status::deadline_exceeded("slow"), Failure::OutcomeUnknown),
            (
                Status::cancelled("timeout expired"),
                Failure::OutcomeUnknown,
            ),
            (Status::unknown("transport error"), Failure::OutcomeUnknown),
            (
                Status::internal("h2 protocol error: connection reset"),
                Failure::OutcomeUnknown,
            ),
            (Status::internal("bug"), Failure::Permanent),
            (Status::invalid_argument("empty key"), Failure::Permanent),
            (Status::resource_exhausted("too big"), Failure::Permanent),
        ];
        for (status, expected) in cases {
            assert_eq!(Failure::from_status(&status), expected, "{status:?}");
        }
    }

    #[test]
    fn sessions_carry_one_write_at_a_time_and_never_repeat_a_sequence() {
        let client = Client::new(["127.0.0.1:1", "127.0.0.1:1", " "]).unwrap();
        assert_eq!(client.endpoints(), ["127.0.0.1:1"]);
        let client_id = client.client_id();
        assert_eq!(client_id.len(), 32);
        let first = client.lease_session().session();
        let second = client.clone().lease_session().session();
        assert_eq!(
            (first.client_id.as_str(), first.sequence),
            (client_id.as_str(), 1)
        );
        assert_eq!(
            (second.client_id.as_str(), second.sequence),
            (client_id.as_str(), 2)
        );
        // Two writes in flight at once get different sessions; both return
        // to the pool afterwards and keep their sequences.
        let one = client.lease_session();
        let two = client.lease_session();
        assert_ne!(one.session().client_id, two.session().client_id);
        assert_eq!(one.session().sequence, 3);
        assert_eq!(two.session().sequence, 1);
        drop((one, two));
        let mut sequences: Vec<u64> = [client.lease_session(), client.lease_session()]
            .iter()
            .map(|lease| lease.session().sequence)
            .collect();
        sequences.sort_unstable();
        assert_eq!(sequences, [2, 4]);
        let other = Client::new(["127.0.0.1:1"]).unwrap();
        assert_ne!(other.client_id(), client.client_id());
    }

    #[test]
    fn a_leader_is_agreed_only_by_all_and_itself() {
        let status = |node_id, role: Role, leader_id| StatusResponse {
            node_id,
            role: role as i32,
            leader_id,
            ..StatusResponse::default()
        };
        let agreeing = [
            status(1, Role::Follower, 2),
            status(2, Role::Leader, 2),
            status(3, Role::Follower, 2),
        ];
        assert_eq!(agreed_leader(&agreeing), Some(2));
        let split = [
            status(1, Role::Follower, 2),
            status(2, Role::Leader, 2),
            status(3, Role::Follower, 1),
        ];
        assert_eq!(agreed_leader(&split), None);
        let electing = [status(1, Role::Candidate, 0), status(2, Role::Follower, 0)];
        assert_eq!(agreed_leader(&electing), None);
        // A killed leader is still named by the others for a while, but it
        // cannot say that it leads.
        let leader_gone = [status(1, Role::Follower, 2), status(3, Role::Follower, 2)];
        assert_eq!(agreed_leader(&leader_gone), None);
        assert_eq!(agreed_leader(&[]), None);
    }

    #[test]
    fn bad_input_is_refused() {
        assert!(matches!(
            Client::new(Vec::<String>::new()),
            Err(ClientError::NoEndpoints)
        ));
        assert!(matches!(
            Client::new(["not a uri"]),
            Err(ClientError::InvalidAddress { .. })
        ));
        let options = ClientOptions {
            attempts_max: 0,
            ..ClientOptions::default()
        };
        assert!(matches!(
            Client::with_options(["a:1"], options),
            Err(ClientError::InvalidOptions(_))
        ));
        let options = ClientOptions {
            leader_check_interval: Some(Duration::from_millis(1)),
            ..ClientOptions::default()
        };
        assert!(matches!(
            Client::with_options(["a:1"], options),
            Err(ClientError::InvalidOptions(message)) if message.contains("leader_check_interval")
        ));
    }

    #[test]
    fn giving_up_names_the_addresses_and_the_last_status() {
        let error = ClientError::GaveUp {
            attempts: 4,
            elapsed: Duration::from_millis(1500),
            addresses_tried: vec!["n1:1".into(), "n2:2".into()],
            last_address: "n2:2".into(),
            last_code: Code::Unavailable,
            last_message: "no quorum".into(),
            outcome_unknown: true,
        };
        let message = error.to_string();
        for expected in [
            "4 attempt",
            "n1:1, n2:2",
            "Unavailable",
            "no quorum",
            "may still have been applied",
        ] {
            assert!(
                message.contains(expected),
                "{message:?} should mention {expected:?}"
            );
        }
    }
}
