//! etcd's Lock and Election services (`v3lockpb`, `v3electionpb`) on a
//! real 3-node raftgres cluster, driven by gRPC clients generated from
//! the protos: one lock holder at a time, handed on by an unlock or by the
//! holder's lease being revoked, with fencing tokens (create revisions)
//! that grow; one elected leader at a time, its proclamations seen by an
//! observer, handed on when it resigns. Requests go to followers and to
//! the leader alike (followers forward them). And gRPC reflection lists
//! the etcd services.

use std::time::Duration;

use raftgres_proto::etcdserverpb::{self as etcd, kv_client::KvClient, lease_client::LeaseClient};
use raftgres_proto::v3electionpb::{self as election, election_client::ElectionClient};
use raftgres_proto::v3lockpb::{self as lock, lock_client::LockClient};
use raftgres_tests::{try_channel, TestCluster};
use tonic::transport::Channel;

async fn channel(address: &str) -> Channel {
    try_channel(address, None)
        .await
        .unwrap_or_else(|error| panic!("cannot connect to {address}: {error}"))
}

/// A fresh cluster, and channels to its leader and to a follower.
async fn leader_and_follower(name: &str) -> (TestCluster, Channel, Channel) {
    let mut cluster = TestCluster::start(name).await;
    let leader = cluster.wait_leader().await;
    let follower = cluster
        .node_ids()
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    let at_leader = channel(cluster.node_address(leader)).await;
    let at_follower = channel(cluster.node_address(follower)).await;
    (cluster, at_leader, at_follower)
}

async fn grant(channel: &Channel, ttl: i64) -> i64 {
    LeaseClient::new(channel.clone())
        .lease_grant(etcd::LeaseGrantRequest { ttl, id: 0 })
        .await
        .expect("a lease")
        .into_inner()
        .id
}

/// The create revision of `key` (its fencing token).
async fn create_revision(channel: &Channel, key: &[u8]) -> i64 {
    let response = KvClient::new(channel.clone())
        .range(etcd::RangeRequest {
            key: key.to_vec(),
            ..etcd::RangeRequest::default()
        })
        .await
        .expect("a read")
        .into_inner();
    response.kvs.first().map_or(0, |kv| kv.create_revision)
}

/// A request still waiting after a while is waiting for the holder.
const STILL_WAITING: Duration = Duration::from_millis(1500);
/// A handed-on lock or leadership arrives within this.
const HANDED_ON_WITHIN: Duration = Duration::from_secs(10);

/// Proves that a lock has one holder at a time: a second locker waits
/// until the first unlocks, a third until the second's lease is revoked,
/// and each holder's key has a larger create revision (fencing token) than
/// the one before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_has_one_holder_and_fencing_tokens_grow() {
    let (_cluster, at_leader, at_follower) = leader_and_follower("etcd-lock").await;
    let leases = [
        grant(&at_follower, 60).await,
        grant(&at_leader, 60).await,
        grant(&at_follower, 60).await,
    ];
    let lock_request = |lease| lock::LockRequest {
        name: b"jobs".to_vec(),
        lease,
    };

    let first = LockClient::new(at_follower.clone())
        .lock(lock_request(leases[0]))
        .await
        .expect("the free lock")
        .into_inner();
    assert_eq!(first.key, format!("jobs/{:x}", leases[0]).into_bytes());
    let first_token = create_revision(&at_leader, &first.key).await;
    assert!(first_token > 0);

    let mut second_client = LockClient::new(at_leader.clone());
    let second = tokio::spawn(async move { second_client.lock(lock_request(leases[1])).await });
    tokio::time::sleep(STILL_WAITING).await;
    assert!(!second.is_finished(), "two holders of one lock");

    LockClient::new(at_follower.clone())
        .unlock(lock::UnlockRequest {
            key: first.key.clone(),
        })
        .await
        .expect("an unlock");
    let second = tokio::time::timeout(HANDED_ON_WITHIN, second)
        .await
        .expect("the unlock handed the lock on")
        .expect("the task")
        .expect("the lock")
        .into_inner();
    let second_token = create_revision(&at_leader, &second.key).await;
    assert!(
        second_token > first_token,
        "{second_token} <= {first_token}"
    );

    let mut third_client = LockClient::new(at_follower.clone());
    let third = tokio::spawn(async move { third_client.lock(lock_request(leases[2])).await });
    tokio::time::sleep(STILL_WAITING).await;
    assert!(!third.is_finished(), "two holders of one lock");
    // The holder's lease ends (as when it expires): the lock moves on.
    LeaseClient::new(at_leader.clone())
        .lease_revoke(etcd::LeaseRevokeRequest { id: leases[1] })
        .await
        .expect("a revoke");
    let third = tokio::time::timeout(HANDED_ON_WITHIN, third)
        .await
        .expect("the revoke handed the lock on")
        .expect("the task")
        .expect("the lock")
        .into_inner();
    assert!(create_revision(&at_leader, &third.key).await > second_token);
    assert_eq!(
        create_revision(&at_leader, &second.key).await,
        0,
        "the revoked holder's key is gone"
    );
}

/// Proves that an election has one leader at a time: the first candidate
/// wins at once and `Leader` names it, a second waits; an observer sees the
/// winner, its proclamation, and after it resigns the second candidate; a
/// proclamation by a candidate that no longer leads is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_election_has_one_leader_and_observers_follow_it() {
    let (_cluster, at_leader, at_follower) = leader_and_follower("etcd-election").await;
    let name = b"scheduler".to_vec();
    let mut elections = ElectionClient::new(at_follower.clone());
    let no_leader = elections
        .leader(election::LeaderRequest { name: name.clone() })
        .await
        .expect_err("nobody campaigned yet");
    assert_eq!(no_leader.message(), "election: no leader");

    let (alice_lease, bob_lease) = (grant(&at_leader, 60).await, grant(&at_follower, 60).await);
    let campaign = |lease, value: &str| election::CampaignRequest {
        name: name.clone(),
        lease,
        value: value.as_bytes().to_vec(),
    };
    let alice = elections
        .campaign(campaign(alice_lease, "alice"))
        .await
        .expect("the first candidate wins")
        .into_inner()
        .leader
        .expect("a leader key");
    let mut observer = ElectionClient::new(at_leader.clone())
        .observe(election::LeaderRequest { name: name.clone() })
        .await
        .expect("an observer")
        .into_inner();
    let mut next_observed = async || {
        let response = tokio::time::timeout(HANDED_ON_WITHIN, observer.message())
            .await
            .expect("the observer heard in time")
            .expect("the stream")
            .expect("a message");
        response.kv.expect("a leader's key-value").value
    };
    assert_eq!(next_observed().await, b"alice");

    let mut bob_client = ElectionClient::new(at_leader.clone());
    let bob_campaign = campaign(bob_lease, "bob");
    let bob = tokio::spawn(async move { bob_client.campaign(bob_campaign).await });
    tokio::time::sleep(STILL_WAITING).await;
    assert!(!bob.is_finished(), "two leaders of one election");

    elections
        .proclaim(election::ProclaimRequest {
            leader: Some(alice.clone()),
            value: b"alice-2".to_vec(),
        })
        .await
        .expect("the leader proclaims");
    assert_eq!(next_observed().await, b"alice-2");
    let named = elections
        .leader(election::LeaderRequest { name: name.clone() })
        .await
        .expect("a leader")
        .into_inner()
        .kv
        .expect("its key-value");
    assert_eq!(
        (named.key.as_slice(), named.value.as_slice()),
        (alice.key.as_slice(), &b"alice-2"[..])
    );

    elections
        .resign(election::ResignRequest {
            leader: Some(alice.clone()),
        })
        .await
        .expect("a resignation");
    let bob = tokio::time::timeout(HANDED_ON_WITHIN, bob)
        .await
        .expect("the resignation handed the leadership on")
        .expect("the task")
        .expect("the campaign")
        .into_inner()
        .leader
        .expect("a leader key");
    assert!(bob.rev > alice.rev, "the new leader's revision is newer");
    assert_eq!(next_observed().await, b"bob");
    let refused = elections
        .proclaim(election::ProclaimRequest {
            leader: Some(alice),
            value: b"usurper".to_vec(),
        })
        .await
        .expect_err("a resigned leader cannot proclaim");
    assert_eq!(refused.message(), "election: not leader");
}

/// Proves that gRPC reflection lists the etcd services a node serves, so
/// that tools that discover services (grpcurl and the like) find them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_etcd_services() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let mut cluster = TestCluster::start("etcd-reflection").await;
    let leader = cluster.wait_leader().await;
    let mut reflection = ServerReflectionClient::new(channel(cluster.node_address(leader)).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("a reflection stream")
        .into_inner();
    let response = responses
        .message()
        .await
        .expect("an answer")
        .expect("a message");
    let Some(MessageResponse::ListServicesResponse(listed)) = response.message_response else {
        panic!("not a service list: {response:?}");
    };
    let names: Vec<String> = listed
        .service
        .into_iter()
        .map(|service| service.name)
        .collect();
    for served in [
        "etcdserverpb.KV",
        "etcdserverpb.Watch",
        "etcdserverpb.Lease",
        "etcdserverpb.Cluster",
        "etcdserverpb.Maintenance",
        "v3lockpb.Lock",
        "v3electionpb.Election",
        "raftgres.v1.Kv",
    ] {
        assert!(
            names.iter().any(|name| name == served),
            "{served} is not listed: {names:?}"
        );
    }
}
