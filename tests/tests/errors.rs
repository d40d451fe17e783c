//! Every kind of refusal reaches the client as its documented gRPC status
//! code, and a refused request changes nothing.

use std::time::Duration;

use prost::Message as _;
use raftgres::client::{ReadMode, Role, LEADER_ADDRESS_KEY, LEADER_ID_KEY};
use raftgres_proto::v1::kv_command::Operation;
use raftgres_proto::v1::raft_message::Body;
use raftgres_proto::v1::{
    GetRequest, HeartbeatRequest, KvCommand, KvPut, PeerHeader, PutRequest, RaftMessage, Session,
    SubmitRequest, VoteRequest,
};
use raftgres_tests::{expect_code, kv_client, peer_client, submit_client, TestCluster};
use tonic::Code;

fn put(key: &[u8], value: Vec<u8>, session: Option<Session>) -> PutRequest {
    PutRequest {
        key: key.to_vec(),
        value,
        session,
    }
}

fn put_command(key: &[u8], value: &[u8]) -> Vec<u8> {
    KvCommand {
        operation: Some(Operation::Put(KvPut {
            key: key.to_vec(),
            value: value.to_vec(),
        })),
    }
    .encode_to_vec()
}

/// Proves that a write sent to a follower gets FAILED_PRECONDITION with
/// metadata naming the actual leader and its address, and is not applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_refuses_writes_and_names_the_leader() {
    let mut cluster = TestCluster::start("not-leader").await;
    let (leader, before) = cluster.leader_status().await;
    for follower in cluster.others(leader) {
        let mut kv = kv_client(cluster.node_address(follower)).await;
        let status = expect_code(
            kv.put(put(b"k", b"v".to_vec(), None)).await,
            Code::FailedPrecondition,
            &format!("put at follower {follower}"),
        );
        let metadata = |key: &str| {
            status
                .metadata()
                .get(key)
                .and_then(|value| value.to_str().ok())
                .map(str::to_string)
        };
        assert_eq!(metadata(LEADER_ID_KEY), Some(leader.to_string()));
        assert_eq!(
            metadata(LEADER_ADDRESS_KEY).as_deref(),
            Some(cluster.node_address(leader))
        );

        let mut submit = submit_client(cluster.node_address(follower)).await;
        expect_code(
            submit
                .submit(SubmitRequest {
                    command: put_command(b"k", b"v"),
                    client_id: String::new(),
                    sequence: 0,
                })
                .await,
            Code::FailedPrecondition,
            &format!("submit at follower {follower}"),
        );
    }
    let value = cluster
        .client()
        .get("k", ReadMode::Linearizable)
        .await
        .expect("read k");
    assert_eq!(value, None, "a refused write was applied");
    let (_, after) = cluster.leader_status().await;
    assert_eq!(after.last_log_index, before.last_log_index);
}

/// Proves that an oversized command gets RESOURCE_EXHAUSTED and malformed
/// requests (empty key, undecodable Submit bytes, session sequence 0) get
/// INVALID_ARGUMENT, at the leader, without appending anything to the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_their_codes_and_append_nothing() {
    let mut cluster = TestCluster::start("bad-requests").await;
    let (leader, before) = cluster.leader_status().await;
    let address = cluster.node_address(leader).to_string();
    let mut kv = kv_client(&address).await;
    let mut submit = submit_client(&address).await;

    // Over the default limits.command_bytes_max of 1 MiB.
    let oversized = vec![b'x'; (1 << 20) + 1];
    expect_code(
        kv.put(put(b"big", oversized.clone(), None)).await,
        Code::ResourceExhausted,
        "put of a value over 1 MiB",
    );
    expect_code(
        submit
            .submit(SubmitRequest {
                command: put_command(b"big", &oversized),
                client_id: String::new(),
                sequence: 0,
            })
            .await,
        Code::ResourceExhausted,
        "submit of a command over 1 MiB",
    );

    expect_code(
        kv.put(put(b"", b"v".to_vec(), None)).await,
        Code::InvalidArgument,
        "put with an empty key",
    );
    expect_code(
        kv.get(GetRequest {
            key: Vec::new(),
            mode: ReadMode::Linearizable as i32,
        })
        .await,
        Code::InvalidArgument,
        "get with an empty key",
    );
    for garbage in [
        vec![0xff, 0xff, 0xff],
        Vec::new(),
        b"not a command".to_vec(),
    ] {
        expect_code(
            submit
                .submit(SubmitRequest {
                    command: garbage.clone(),
                    client_id: "bad-client".into(),
                    sequence: 1,
                })
                .await,
            Code::InvalidArgument,
            &format!("submit of undecodable bytes {garbage:?}"),
        );
    }
    expect_code(
        submit
            .submit(SubmitRequest {
                command: put_command(b"seq", b"v"),
                client_id: "bad-client".into(),
                sequence: 0,
            })
            .await,
        Code::InvalidArgument,
        "submit with session sequence 0",
    );
    let session = Session {
        client_id: "bad-client".into(),
        sequence: 0,
    };
    expect_code(
        kv.put(put(b"seq", b"v".to_vec(), Some(session))).await,
        Code::InvalidArgument,
        "put with session sequence 0",
    );

    let (_, after) = cluster.leader_status().await;
    assert_eq!(
        after.last_log_index, before.last_log_index,
        "a refused request reached the log"
    );
    let client = cluster.client();
    for key in ["big", "seq"] {
        let value = client.get(key, ReadMode::Linearizable).await.expect("get");
        assert_eq!(value, None, "refused write of {key} was applied");
    }
    // The node still takes good requests on the same connection.
    let put = kv
        .put(put(b"good", b"v".to_vec(), None))
        .await
        .expect("good put");
    assert!(put.into_inner().index > after.last_log_index);
}

/// Proves that peer messages with a foreign cluster id or addressed to
/// another node id get FAILED_PRECONDITION and are ignored: a vote request
/// with a much higher term would otherwise depose the leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_peer_messages_are_refused_and_change_nothing() {
    let mut cluster = TestCluster::start("foreign-peer").await;
    let (leader, before) = cluster.leader_status().await;
    let follower = cluster.others(leader)[0];
    let mut peer = peer_client(cluster.node_address(leader)).await;
    let high_term = before.term + 100;
    let vote = |cluster_id: &str, to: u64| RaftMessage {
        header: Some(PeerHeader {
            cluster_id: cluster_id.into(),
            from: follower,
            to,
        }),
        term: high_term,
        body: Some(Body::VoteRequest(VoteRequest {
            pre_vote: false,
            last_log_index: before.last_log_index + 1000,
            last_log_term: high_term,
            leadership_transfer: true,
        })),
    };
    expect_code(
        peer.send(vote("another-cluster", leader)).await,
        Code::FailedPrecondition,
        "vote request from another cluster",
    );
    expect_code(
        peer.send(vote(&before.cluster_id, leader + 100)).await,
        Code::FailedPrecondition,
        "vote request addressed to another node id",
    );
    // A heartbeat from a "leader" of another cluster, sent to a follower.
    let mut follower_peer = peer_client(cluster.node_address(follower)).await;
    let heartbeat = RaftMessage {
        header: Some(PeerHeader {
            cluster_id: "another-cluster".into(),
            from: leader,
            to: follower,
        }),
        term: high_term,
        body: Some(Body::HeartbeatRequest(HeartbeatRequest {
            leader_commit: before.commit_index + 1000,
            read_round: 0,
        })),
    };
    expect_code(
        follower_peer.send(heartbeat).await,
        Code::FailedPrecondition,
        "heartbeat from another cluster",
    );

    // Give a wrongly accepted message time to take effect, then check
    // that no node moved to the intruder's term and the leader still leads.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (leader_after, after) = cluster.leader_status().await;
    assert_eq!(leader_after, leader);
    assert_eq!(after.term, before.term);
    for id in cluster.node_ids() {
        let status = cluster.status(id).await.expect("status");
        assert!(
            status.term < high_term,
            "node {id} adopted the foreign term: {status:?}"
        );
    }
    cluster
        .client()
        .put("still-working", "yes")
        .await
        .expect("the cluster still takes writes");
}

/// Proves that a leader cut off from its quorum (both followers killed)
/// steps down by check-quorum and then answers writes with UNAVAILABLE,
/// and a write it cannot commit is never reported as successful.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_quorum_writes_are_unavailable() {
    let mut cluster = TestCluster::start("no-quorum").await;
    let (leader, before) = cluster.leader_status().await;
    for follower in cluster.others(leader) {
        tokio::task::block_in_place(|| cluster.kill_node(follower)).expect("kill a follower");
    }
    let stepped_down = cluster
        .wait_for_status(leader, "to step down without a quorum", |status| {
            status.role != Role::Leader as i32
        })
        .await;
    assert_eq!(stepped_down.leader_id, 0, "{stepped_down:?}");

    let mut kv = kv_client(cluster.node_address(leader)).await;
    let status = expect_code(
        kv.put(put(b"lonely", b"v".to_vec(), None)).await,
        Code::Unavailable,
        "put at a node without a quorum",
    );
    assert!(
        status.metadata().get(LEADER_ID_KEY).is_none(),
        "no leader may be named: {status:?}"
    );
    let mut submit = submit_client(cluster.node_address(leader)).await;
    expect_code(
        submit
            .submit(SubmitRequest {
                command: put_command(b"lonely", b"v"),
                client_id: String::new(),
                sequence: 0,
            })
            .await,
        Code::Unavailable,
        "submit at a node without a quorum",
    );
    expect_code(
        kv.get(GetRequest {
            key: b"lonely".to_vec(),
            mode: ReadMode::Linearizable as i32,
        })
        .await,
        Code::Unavailable,
        "linearizable read at a node without a quorum",
    );
    let after = cluster.status(leader).await.expect("status");
    assert!(
        after.commit_index <= before.last_log_index,
        "something committed without a quorum: {after:?} after {before:?}"
    );
}
