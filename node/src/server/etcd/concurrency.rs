//! etcd's `v3lockpb.Lock` and `v3electionpb.Election`, served as etcd
//! serves them: recipes over the KV, with keys attached to the client's
//! lease.
//!
//! A lock or a campaign on `name` creates the key `name/<lease in hex>`
//! (once: a second request with the same lease finds it) and waits until
//! every key under `name/` created before it is gone; the holder is the
//! oldest key, and its create revision is the fencing token (docs/ETCD.md
//! shows a client guarding writes with it). The client keeps its lease
//! alive; when the lease expires the leader revokes it and the key goes,
//! which hands the lock on.
//!
//! The writes are transactions proposed on the leader; a follower forwards
//! the whole request there. Waiting reads the node's own tables whenever
//! its applied index moves.

use std::pin::Pin;
use std::sync::Arc;

use prost::Message as _;
use raftgres_proto::etcdserverpb as etcd;
use raftgres_proto::v1 as wire;
use raftgres_proto::v3electionpb as election;
use raftgres_proto::v3lockpb as lock;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status};

use super::{
    etcd_status, forwarded, header, leader_elsewhere, propose_at, was_forwarded, LeaderChannel,
    Refused,
};
use crate::core::LogIndex;
use crate::mvcc::{self, KeyRange, KeyValue, SortOrder, SortTarget};
use crate::server::kv::KvStateMachine;
use crate::server::services::Shared;

/// Leader changes queued for one Observe stream's client.
const OBSERVE_RESPONSES_QUEUED_MAX: usize = 16;

/// What the recipes do with the node: transactions through the log,
/// reads of its own tables, and waiting for the next apply.
struct Recipes {
    shared: Arc<Shared<KvStateMachine>>,
    leader: Arc<LeaderChannel>,
}

/// The key a lock or a campaign on `name` holds with `lease`.
fn owner_key(name: &[u8], lease: i64) -> Vec<u8> {
    let mut key = name.to_vec();
    key.push(b'/');
    key.extend(format!("{lease:x}").into_bytes());
    key
}

fn prefix_range(name: &[u8]) -> KeyRange {
    let mut key = name.to_vec();
    key.push(b'/');
    let mut end = name.to_vec();
    end.push(b'/' + 1);
    KeyRange {
        key,
        range_end: end,
    }
}

fn put_op(key: &[u8], value: &[u8], lease: i64) -> etcd::RequestOp {
    etcd::RequestOp {
        request: Some(etcd::request_op::Request::RequestPut(etcd::PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            lease,
            ..etcd::PutRequest::default()
        })),
    }
}

fn get_op(key: &[u8]) -> etcd::RequestOp {
    etcd::RequestOp {
        request: Some(etcd::request_op::Request::RequestRange(
            etcd::RangeRequest {
                key: key.to_vec(),
                ..etcd::RangeRequest::default()
            },
        )),
    }
}

fn delete_op(key: &[u8]) -> etcd::RequestOp {
    etcd::RequestOp {
        request: Some(etcd::request_op::Request::RequestDeleteRange(
            etcd::DeleteRangeRequest {
                key: key.to_vec(),
                ..etcd::DeleteRangeRequest::default()
            },
        )),
    }
}

fn create_revision_is(key: &[u8], revision: i64) -> etcd::Compare {
    etcd::Compare {
        result: etcd::compare::CompareResult::Equal as i32,
        target: etcd::compare::CompareTarget::Create as i32,
        key: key.to_vec(),
        target_union: Some(etcd::compare::TargetUnion::CreateRevision(revision)),
        range_end: Vec::new(),
    }
}

/// etcd's recipe errors (plain errors on etcd's server: code UNKNOWN).
fn recipe_error(message: &str) -> Status {
    Status::new(Code::Unknown, message.to_string())
}

impl Recipes {
    /// A transaction through the log (this node leads): the store's
    /// revision after it and the answer.
    async fn txn(&self, txn: etcd::TxnRequest) -> Result<(i64, etcd::TxnResponse), Status> {
        let operation = etcd::RequestOp {
            request: Some(etcd::request_op::Request::RequestTxn(txn)),
        };
        let (index, revision, response) = propose_at(
            &self.shared,
            wire::kv_command::Operation::EtcdOperation(operation.encode_to_vec()),
        )
        .await
        .map_err(Refused::status)?;
        // The answer left before the apply's COMMIT, and the recipes read
        // this node's tables next (their own key among them).
        self.shared
            .applied
            .clone()
            .wait_for(|applied| *applied >= index)
            .await
            .map_err(|_| Status::unavailable("the node is shutting down"))?;
        match (revision, response) {
            (revision, Some(etcd::response_op::Response::ResponseTxn(txn))) => Ok((revision, txn)),
            _ => Err(Status::internal(
                "the state machine answered another request",
            )),
        }
    }

    /// Reads `range` from this node's tables (at least as recent as
    /// `read_index`).
    async fn read(
        &self,
        range: mvcc::RangeRequest,
        read_index: LogIndex,
    ) -> Result<(i64, Vec<KeyValue>), Status> {
        let (revision, answer) = super::read(&self.shared, &range, read_index).await?;
        Ok((revision, answer.kvs))
    }

    /// The oldest key under `name/` (the holder), read linearizably.
    async fn holder(&self, name: &[u8]) -> Result<(i64, Option<KeyValue>), Status> {
        let read_index = self
            .shared
            .read_barrier(wire::ReadMode::Linearizable as i32)
            .await
            .map_err(|error| etcd_status(&self.shared, error))?;
        let (revision, mut kvs) = self.read(first_created(name), read_index).await?;
        Ok((revision, kvs.pop()))
    }

    /// Waits until no key under `name/` created at or before `revision`
    /// is left (etcd's waitDeletes), then checks that `own` still exists
    /// (its lease may have expired meanwhile).
    async fn wait_for_predecessors(
        &self,
        name: &[u8],
        revision: i64,
        own: &[u8],
    ) -> Result<i64, Status> {
        let mut applied = self.shared.applied.clone();
        loop {
            let last_before = mvcc::RangeRequest {
                sort_order: SortOrder::Descend,
                max_create_revision: revision,
                ..first_created(name)
            };
            let (_, kvs) = self.read(last_before, LogIndex(0)).await?;
            if kvs.is_empty() {
                break;
            }
            // Something is applied before the next look.
            applied
                .changed()
                .await
                .map_err(|_| Status::unavailable("the node is shutting down"))?;
        }
        let (current, kvs) = self.read(exact(own), LogIndex(0)).await?;
        if kvs.is_empty() {
            return Err(recipe_error(
                "etcdserver: session expired: the lease's key is gone",
            ));
        }
        Ok(current)
    }

    /// Creates `key` with `value` on `lease` unless it exists: its create
    /// revision, and its value when it existed.
    async fn create_once(
        &self,
        key: &[u8],
        value: &[u8],
        lease: i64,
    ) -> Result<(i64, Option<Vec<u8>>), Status> {
        let txn = etcd::TxnRequest {
            compare: vec![create_revision_is(key, 0)],
            success: vec![put_op(key, value, lease)],
            failure: vec![get_op(key)],
        };
        let (revision, response) = self.txn(txn).await?;
        if response.succeeded {
            return Ok((revision, None));
        }
        let existing = match response
            .responses
            .into_iter()
            .next()
            .and_then(|op| op.response)
        {
            Some(etcd::response_op::Response::ResponseRange(range)) => range.kvs.into_iter().next(),
            _ => None,
        };
        // Gone between the compare and now is impossible: the get ran in
        // the same transaction.
        let existing =
            existing.ok_or_else(|| Status::internal("the key vanished inside a transaction"))?;
        Ok((existing.create_revision, Some(existing.value)))
    }

    /// The leader, when this node is not it, for a request to forward;
    /// `None` when this node leads (or the request was forwarded here).
    async fn forward_to<T>(
        &self,
        request: &Request<T>,
    ) -> Result<Option<tonic::transport::Channel>, Status> {
        if was_forwarded(request) {
            return Ok(None);
        }
        let Some((leader_id, address)) = leader_elsewhere(&self.shared).await? else {
            return Ok(None);
        };
        Ok(Some(
            self.leader.get(&self.shared, leader_id, address).await?,
        ))
    }
}

/// The oldest key under `name/`.
fn first_created(name: &[u8]) -> mvcc::RangeRequest {
    mvcc::RangeRequest {
        range: prefix_range(name),
        limit: 1,
        sort_order: SortOrder::Ascend,
        sort_target: SortTarget::Create,
        ..mvcc::RangeRequest::default()
    }
}

fn exact(key: &[u8]) -> mvcc::RangeRequest {
    mvcc::RangeRequest {
        range: KeyRange::single(key),
        ..mvcc::RangeRequest::default()
    }
}

/// `v3lockpb.Lock`.
pub(super) struct EtcdLock {
    recipes: Recipes,
}

impl EtcdLock {
    pub(super) fn new(shared: Arc<Shared<KvStateMachine>>, leader: Arc<LeaderChannel>) -> EtcdLock {
        EtcdLock {
            recipes: Recipes { shared, leader },
        }
    }
}

#[tonic::async_trait]
impl lock::lock_server::Lock for EtcdLock {
    async fn lock(
        &self,
        request: Request<lock::LockRequest>,
    ) -> Result<Response<lock::LockResponse>, Status> {
        let recipes = &self.recipes;
        recipes.shared.metrics.client_requests.write.inc();
        if let Some(channel) = recipes.forward_to(&request).await? {
            return lock::lock_client::LockClient::new(channel)
                .lock(forwarded(request.into_inner()))
                .await;
        }
        let asked = request.into_inner();
        if asked.name.is_empty() {
            return Err(Status::invalid_argument("etcdserver: key is not provided"));
        }
        let key = owner_key(&asked.name, asked.lease);
        let (created, _) = recipes.create_once(&key, b"", asked.lease).await?;
        let revision = recipes
            .wait_for_predecessors(&asked.name, created - 1, &key)
            .await?;
        Ok(Response::new(lock::LockResponse {
            header: header(&recipes.shared, revision),
            key,
        }))
    }

    async fn unlock(
        &self,
        request: Request<lock::UnlockRequest>,
    ) -> Result<Response<lock::UnlockResponse>, Status> {
        let recipes = &self.recipes;
        recipes.shared.metrics.client_requests.write.inc();
        if let Some(channel) = recipes.forward_to(&request).await? {
            return lock::lock_client::LockClient::new(channel)
                .unlock(forwarded(request.into_inner()))
                .await;
        }
        let txn = etcd::TxnRequest {
            success: vec![delete_op(&request.get_ref().key)],
            ..etcd::TxnRequest::default()
        };
        let (revision, _) = recipes.txn(txn).await?;
        Ok(Response::new(lock::UnlockResponse {
            header: header(&recipes.shared, revision),
        }))
    }
}

/// `v3electionpb.Election`.
pub(super) struct EtcdElection {
    recipes: Arc<Recipes>,
}

impl EtcdElection {
    pub(super) fn new(
        shared: Arc<Shared<KvStateMachine>>,
        leader: Arc<LeaderChannel>,
    ) -> EtcdElection {
        EtcdElection {
            recipes: Arc::new(Recipes { shared, leader }),
        }
    }
}

type ObserveStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<election::LeaderResponse, Status>> + Send>>;

#[tonic::async_trait]
impl election::election_server::Election for EtcdElection {
    async fn campaign(
        &self,
        request: Request<election::CampaignRequest>,
    ) -> Result<Response<election::CampaignResponse>, Status> {
        let recipes = &self.recipes;
        recipes.shared.metrics.client_requests.write.inc();
        if let Some(channel) = recipes.forward_to(&request).await? {
            return election::election_client::ElectionClient::new(channel)
                .campaign(forwarded(request.into_inner()))
                .await;
        }
        let asked = request.into_inner();
        if asked.name.is_empty() {
            return Err(Status::invalid_argument("etcdserver: key is not provided"));
        }
        let key = owner_key(&asked.name, asked.lease);
        let (created, existing) = recipes.create_once(&key, &asked.value, asked.lease).await?;
        if existing.is_some_and(|value| value != asked.value) {
            // Campaigning again with another value proclaims it.
            let proclaim = etcd::TxnRequest {
                compare: vec![create_revision_is(&key, created)],
                success: vec![put_op(&key, &asked.value, asked.lease)],
                failure: Vec::new(),
            };
            recipes.txn(proclaim).await?;
        }
        let revision = recipes
            .wait_for_predecessors(&asked.name, created - 1, &key)
            .await?;
        Ok(Response::new(election::CampaignResponse {
            header: header(&recipes.shared, revision),
            leader: Some(election::LeaderKey {
                name: asked.name,
                key,
                rev: created,
                lease: asked.lease,
            }),
        }))
    }

    async fn proclaim(
        &self,
        request: Request<election::ProclaimRequest>,
    ) -> Result<Response<election::ProclaimResponse>, Status> {
        let recipes = &self.recipes;
        recipes.shared.metrics.client_requests.write.inc();
        if let Some(channel) = recipes.forward_to(&request).await? {
            return election::election_client::ElectionClient::new(channel)
                .proclaim(forwarded(request.into_inner()))
                .await;
        }
        let asked = request.into_inner();
        let leader = asked
            .leader
            .ok_or_else(|| recipe_error("election: not leader"))?;
        let txn = etcd::TxnRequest {
            compare: vec![create_revision_is(&leader.key, leader.rev)],
            success: vec![put_op(&leader.key, &asked.value, leader.lease)],
            failure: Vec::new(),
        };
        let (revision, response) = recipes.txn(txn).await?;
        if !response.succeeded {
            return Err(recipe_error("election: not leader"));
        }
        Ok(Response::new(election::ProclaimResponse {
            header: header(&recipes.shared, revision),
        }))
    }

    async fn leader(
        &self,
        request: Request<election::LeaderRequest>,
    ) -> Result<Response<election::LeaderResponse>, Status> {
        let recipes = &self.recipes;
        recipes.shared.metrics.client_requests.read.inc();
        let (revision, holder) = recipes.holder(&request.get_ref().name).await?;
        let kv = holder.ok_or_else(|| recipe_error("election: no leader"))?;
        Ok(Response::new(election::LeaderResponse {
            header: header(&recipes.shared, revision),
            kv: Some(super::convert::key_value(kv)),
        }))
    }

    type ObserveStream = ObserveStream;

    async fn observe(
        &self,
        request: Request<election::LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        let recipes = self.recipes.clone();
        recipes.shared.metrics.client_requests.read.inc();
        let name = request.into_inner().name;
        let (sender, receiver) = mpsc::channel(OBSERVE_RESPONSES_QUEUED_MAX);
        tokio::spawn(async move {
            let mut applied = recipes.shared.applied.clone();
            // The leader last sent, by key and mod revision.
            let mut sent: Option<(Vec<u8>, i64)> = None;
            loop {
                let observed = tokio::select! {
                    holder = recipes.holder(&name) => holder,
                    () = sender.closed() => return,
                };
                match observed {
                    Ok((revision, Some(kv))) => {
                        let seen = (kv.key.clone(), kv.mod_revision);
                        if sent.as_ref() != Some(&seen) {
                            sent = Some(seen);
                            let response = election::LeaderResponse {
                                header: header(&recipes.shared, revision),
                                kv: Some(super::convert::key_value(kv)),
                            };
                            if sender.send(Ok(response)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Ok((_, None)) => {}
                    Err(status) => {
                        let _ = sender.send(Err(status)).await;
                        return;
                    }
                }
                tokio::select! {
                    changed = applied.changed() => if changed.is_err() { return },
                    () = sender.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn resign(
        &self,
        request: Request<election::ResignRequest>,
    ) -> Result<Response<election::ResignResponse>, Status> {
        let recipes = &self.recipes;
        recipes.shared.metrics.client_requests.write.inc();
        if let Some(channel) = recipes.forward_to(&request).await? {
            return election::election_client::ElectionClient::new(channel)
                .resign(forwarded(request.into_inner()))
                .await;
        }
        let leader = request
            .into_inner()
            .leader
            .ok_or_else(|| recipe_error("election: not leader"))?;
        let txn = etcd::TxnRequest {
            compare: vec![create_revision_is(&leader.key, leader.rev)],
            success: vec![delete_op(&leader.key)],
            failure: Vec::new(),
        };
        let (revision, _) = recipes.txn(txn).await?;
        Ok(Response::new(election::ResignResponse {
            header: header(&recipes.shared, revision),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_keys_and_prefixes_follow_etcds_recipes() {
        assert_eq!(owner_key(b"job", 0x694d), b"job/694d".to_vec());
        let range = prefix_range(b"job");
        assert!(range.contains(b"job/694d"));
        assert!(!range.contains(b"job") && !range.contains(b"jobs/1"));
    }
}
