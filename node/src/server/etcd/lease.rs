//! `etcdserverpb.Lease`: grant, revoke, keep-alive, time-to-live and the
//! lease list, and the leader's expiry of leases.
//!
//! Grants and revokes are commands in the log. Deadlines are the leader's
//! alone ([`crate::mvcc::lease::Lessor`]): a task on every node follows
//! the node's role and, while it leads, reads the lease table every
//! [`LESSOR_TICK`] and proposes a revoke for every lease past its deadline,
//! so keys attached to an expired lease are deleted at one place in the
//! log on every replica. Keep-alives and time-to-live answers need the
//! deadlines, so a follower forwards them to the leader.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use raftgres_proto::etcdserverpb as etcd;
use raftgres_proto::etcdserverpb::lease_client::LeaseClient;
use raftgres_proto::v1 as wire;
use tokio::sync::{mpsc, Mutex};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt as _;
use tonic::{Request, Response, Status, Streaming};

use super::{
    current_revision, etcd_status, forwarded, header, kv_error_status, leader_elsewhere, propose,
    was_forwarded, LeaderChannel, Refused,
};
use crate::mvcc::lease::Lessor;
use crate::mvcc::{self, LEASE_TTL_MAX};
use crate::pipeline::Instant;
use crate::server::error::ServiceError;
use crate::server::kv::KvStateMachine;
use crate::server::services::{database_error, Shared};

/// How often the lessor looks at the node's role and the leases.
pub(super) const LESSOR_TICK: Duration = Duration::from_millis(250);
/// Keep-alive answers queued for one stream's client.
const KEEP_ALIVE_RESPONSES_QUEUED_MAX: usize = 16;

/// The lessor and what it needs, shared by the service and the expiry
/// task.
pub(super) struct Leases {
    shared: Arc<Shared<KvStateMachine>>,
    lessor: Mutex<Lessor>,
    /// The origin of the lessor's instants.
    started: tokio::time::Instant,
    leader: Arc<LeaderChannel>,
}

impl Leases {
    pub(super) fn new(
        shared: Arc<Shared<KvStateMachine>>,
        leader: Arc<LeaderChannel>,
    ) -> Arc<Leases> {
        Arc::new(Leases {
            shared,
            lessor: Mutex::new(Lessor::default()),
            started: tokio::time::Instant::now(),
            leader,
        })
    }

    fn now(&self) -> Instant {
        Instant(self.started.elapsed())
    }

    /// A new leader keeps leases alive this much longer than their TTL:
    /// one election timeout, as etcd does.
    fn extension(&self) -> Duration {
        self.shared.config.tick() * self.shared.config.raft.election_ticks_max as u32
    }

    /// The shortest TTL granted: one and a half election timeouts, rounded
    /// up to whole seconds (etcd's rule), so that a lease outlives a
    /// leader change.
    fn ttl_min(&self) -> i64 {
        (self.extension().as_secs_f64() * 1.5).ceil().max(1.0) as i64
    }

    fn leading(&self) -> bool {
        self.shared.metrics.is_leader.get() == 1
    }

    async fn stored_leases(&self) -> Result<BTreeMap<i64, i64>, ServiceError> {
        let client = self.shared.reads.client().await?;
        let rows = client
            .query_typed("SELECT id, ttl FROM raftgres_leases", &[])
            .await
            .map_err(database_error)?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
    }

    /// The stored leases once this node's tables hold every write answered
    /// before now (a grant's answer leaves before its apply's COMMIT): a
    /// ReadIndex round, as etcd's leader would answer from its lessor.
    async fn stored_leases_covering_answers(&self) -> Result<BTreeMap<i64, i64>, Status> {
        self.shared
            .read_barrier(wire::ReadMode::Linearizable as i32)
            .await
            .map_err(|error| etcd_status(&self.shared, error))?;
        self.stored_leases()
            .await
            .map_err(|error| etcd_status(&self.shared, error))
    }

    /// Follows the node's role and revokes expired leases while it leads,
    /// until the node stops.
    pub(super) async fn expire(self: Arc<Leases>) {
        let mut ticker = tokio::time::interval(LESSOR_TICK);
        let mut applied = self.shared.applied.clone();
        let mut led_term = None;
        loop {
            let ticked = tokio::select! {
                _ = ticker.tick() => true,
                changed = applied.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    false
                }
            };
            let (leading, term) = (self.leading(), self.shared.metrics.term.get());
            if !mvcc::lease::expiry_task_looks(ticked, leading.then_some(term), led_term) {
                continue;
            }
            if !leading {
                if led_term.take().is_some() {
                    self.lessor.lock().await.demote();
                }
                continue;
            }
            // The table is read before the lock is taken: a read that
            // fails (Postgres down) leaves the deadlines as they were.
            let Ok(leases) = self.stored_leases().await else {
                continue;
            };
            let now = self.now();
            let due = {
                let mut lessor = self.lessor.lock().await;
                lessor.reconcile(&leases, now);
                if led_term != Some(term) {
                    lessor.promote(now, self.extension());
                    led_term = Some(term);
                }
                lessor.to_revoke(now, self.extension() * 2)
            };
            for id in due {
                tracing::info!(lease = id, "revoking an expired lease");
                let leases = self.clone();
                tokio::spawn(async move {
                    if let Err(refused) = propose(&leases.shared, revoke(id)).await {
                        let status = refused.status();
                        tracing::warn!(lease = id, %status, "revoking an expired lease failed; retried later");
                    }
                });
            }
        }
    }

    /// The leader's Lease service, for a request this follower forwards.
    async fn leader_lease(
        &self,
        leader_id: u64,
        address: String,
    ) -> Result<LeaseClient<tonic::transport::Channel>, Status> {
        Ok(LeaseClient::new(
            self.leader.get(&self.shared, leader_id, address).await?,
        ))
    }

    /// Renews lease `id` on this leader: its TTL, 0 when it does not
    /// exist (etcd's answer), `None` when this node no longer leads.
    ///
    /// The leadership is confirmed by a quorum round (ReadIndex) first, and
    /// the new deadline counts from before that round: a leader deposed
    /// without knowing it answers no keep-alive, so it never promises a
    /// client time that its successor (which gives every lease a whole TTL
    /// from its election on) does not grant.
    async fn renew(&self, id: i64) -> Result<Option<i64>, Status> {
        let now = self.now();
        match self
            .shared
            .read_barrier(wire::ReadMode::Linearizable as i32)
            .await
        {
            Ok(_) => {}
            Err(ServiceError::NotLeader { .. }) => return Ok(None),
            Err(error) => return Err(etcd_status(&self.shared, error)),
        }
        // The leases as the store holds them after the round: a lease
        // revoked (or granted) since the lessor last looked must not be
        // answered from what it saw then (the simulator found a leader
        // renewing a lease its store had already revoked).
        let leases = self
            .stored_leases()
            .await
            .map_err(|error| etcd_status(&self.shared, error))?;
        let mut lessor = self.lessor.lock().await;
        if !lessor.leading() {
            return Ok(None);
        }
        lessor.reconcile(&leases, now);
        Ok(Some(lessor.renew(id, now).unwrap_or(0)))
    }
}

fn revoke(id: i64) -> wire::kv_command::Operation {
    wire::kv_command::Operation::EtcdLeaseRevoke(id)
}

/// `etcdserverpb.Lease`.
pub(super) struct EtcdLease {
    pub(super) leases: Arc<Leases>,
}

/// A lease id for a grant that names none: positive, and unlikely to be
/// any other node's (the node id in the high bits, the time below).
fn lease_id(node_id: u64, attempt: u64) -> i64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64);
    let id = ((node_id & 0xffff) << 47) ^ (nanos.wrapping_add(attempt) & ((1 << 47) - 1));
    (id & (i64::MAX as u64)).max(1) as i64
}

type KeepAliveStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<etcd::LeaseKeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl etcd::lease_server::Lease for EtcdLease {
    async fn lease_grant(
        &self,
        request: Request<etcd::LeaseGrantRequest>,
    ) -> Result<Response<etcd::LeaseGrantResponse>, Status> {
        let leases = &self.leases;
        let shared = &leases.shared;
        shared.metrics.client_requests.write.inc();
        let arrived_forwarded = was_forwarded(&request);
        let grant = request.into_inner();
        if grant.ttl > LEASE_TTL_MAX {
            return Err(Status::out_of_range("etcdserver: too large lease TTL"));
        }
        let ttl = grant.ttl.max(leases.ttl_min());
        for attempt in 0..3 {
            let id = if grant.id != 0 {
                grant.id
            } else {
                lease_id(shared.config.node_id, attempt)
            };
            let operation =
                wire::kv_command::Operation::EtcdLeaseGrant(wire::KvLeaseGrant { id, ttl });
            match propose(shared, operation).await {
                Ok((revision, _)) => {
                    leases.lessor.lock().await.granted(id, ttl, leases.now());
                    return Ok(Response::new(etcd::LeaseGrantResponse {
                        header: header(shared, revision),
                        id,
                        ttl,
                        error: String::new(),
                    }));
                }
                Err(Refused::Kv(mvcc::KvError::LeaseExists)) if grant.id == 0 => continue,
                Err(Refused::NotLeader { leader_id, address }) if !arrived_forwarded => {
                    let mut client = leases.leader_lease(leader_id, address).await?;
                    return client.lease_grant(forwarded(grant)).await;
                }
                Err(refused) => return Err(refused.status()),
            }
        }
        Err(Status::unavailable(
            "etcdserver: could not pick a free lease id; retry",
        ))
    }

    async fn lease_revoke(
        &self,
        request: Request<etcd::LeaseRevokeRequest>,
    ) -> Result<Response<etcd::LeaseRevokeResponse>, Status> {
        let leases = &self.leases;
        let shared = &leases.shared;
        shared.metrics.client_requests.write.inc();
        let arrived_forwarded = was_forwarded(&request);
        let id = request.get_ref().id;
        if id <= 0 {
            return Err(kv_error_status(mvcc::KvError::LeaseNotFound));
        }
        match propose(shared, revoke(id)).await {
            Ok((revision, _)) => Ok(Response::new(etcd::LeaseRevokeResponse {
                header: header(shared, revision),
            })),
            Err(Refused::NotLeader { leader_id, address }) if !arrived_forwarded => {
                let mut client = leases.leader_lease(leader_id, address).await?;
                client.lease_revoke(forwarded(request.into_inner())).await
            }
            Err(refused) => Err(refused.status()),
        }
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<etcd::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let leases = self.leases.clone();
        leases.shared.metrics.client_requests.write.inc();
        let arrived_forwarded = was_forwarded(&request);
        if !arrived_forwarded {
            if let Some((leader_id, address)) = leader_elsewhere(&leases.shared).await? {
                // The leader holds the deadlines: the stream goes there.
                let mut client = leases.leader_lease(leader_id, address).await?;
                let requests = request.into_inner().filter_map(Result::ok);
                let responses = client
                    .lease_keep_alive(forwarded(requests))
                    .await?
                    .into_inner();
                return Ok(Response::new(Box::pin(responses)));
            }
        }
        let (sender, receiver) = mpsc::channel(KEEP_ALIVE_RESPONSES_QUEUED_MAX);
        let mut requests = request.into_inner();
        tokio::spawn(async move {
            while let Ok(Some(keep_alive)) = requests.message().await {
                let answer = match leases.renew(keep_alive.id).await {
                    Ok(Some(ttl)) => {
                        let revision = current_revision(&leases.shared).await.unwrap_or(0);
                        Ok(etcd::LeaseKeepAliveResponse {
                            header: header(&leases.shared, revision),
                            id: keep_alive.id,
                            ttl,
                        })
                    }
                    Ok(None) => Err(Status::unavailable("etcdserver: not leader")),
                    Err(status) => Err(status),
                };
                let ended = answer.is_err();
                if sender.send(answer).await.is_err() || ended {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<etcd::LeaseTimeToLiveRequest>,
    ) -> Result<Response<etcd::LeaseTimeToLiveResponse>, Status> {
        let leases = &self.leases;
        let shared = &leases.shared;
        shared.metrics.client_requests.read.inc();
        if !was_forwarded(&request) {
            if let Some((leader_id, address)) = leader_elsewhere(&leases.shared).await? {
                let mut client = leases.leader_lease(leader_id, address).await?;
                return client
                    .lease_time_to_live(forwarded(request.into_inner()))
                    .await;
            }
        }
        let asked = request.into_inner();
        let stored = leases.stored_leases_covering_answers().await?;
        let revision = current_revision(shared).await?;
        let Some(granted_ttl) = stored.get(&asked.id).copied() else {
            // etcd's answer for a lease that does not exist.
            return Ok(Response::new(etcd::LeaseTimeToLiveResponse {
                header: header(shared, revision),
                id: asked.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            }));
        };
        let now = leases.now();
        let remaining = {
            let mut lessor = leases.lessor.lock().await;
            lessor.reconcile(&stored, now);
            lessor.remaining(asked.id, now)
        };
        let ttl = match remaining {
            Some((_, left)) => left,
            None => return Err(Status::unavailable("etcdserver: not leader")),
        };
        let keys = if asked.keys {
            let client = shared
                .reads
                .client()
                .await
                .map_err(|error| etcd_status(shared, error))?;
            client
                .query(
                    "SELECT key FROM raftgres_kv WHERE lease = $1 ORDER BY key",
                    &[&asked.id],
                )
                .await
                .map_err(|error| etcd_status(shared, database_error(error)))?
                .iter()
                .map(|row| row.get(0))
                .collect()
        } else {
            Vec::new()
        };
        Ok(Response::new(etcd::LeaseTimeToLiveResponse {
            header: header(shared, revision),
            id: asked.id,
            ttl,
            granted_ttl,
            keys,
        }))
    }

    async fn lease_leases(
        &self,
        _request: Request<etcd::LeaseLeasesRequest>,
    ) -> Result<Response<etcd::LeaseLeasesResponse>, Status> {
        let leases = &self.leases;
        let shared = &leases.shared;
        shared.metrics.client_requests.read.inc();
        let stored = leases.stored_leases_covering_answers().await?;
        let revision = current_revision(shared).await?;
        Ok(Response::new(etcd::LeaseLeasesResponse {
            header: header(shared, revision),
            leases: stored
                .keys()
                .map(|id| etcd::LeaseStatus { id: *id })
                .collect(),
        }))
    }
}
