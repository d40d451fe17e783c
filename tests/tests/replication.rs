//! A healthy cluster: election, reads and writes over gRPC, and
//! exactly-once application of retried commands.

use std::time::Duration;

use prost::Message as _;
use raftgres::client::{ReadMode, Role};
use raftgres_proto::v1::kv_command::Operation;
use raftgres_proto::v1::{
    GetRequest, KvCommand, KvCompareAndSwap, KvPut, KvResult, PutRequest, Session, SubmitRequest,
};
use raftgres_tests::{kv_client, submit_client, TestCluster};

/// Proves that a 3-node cluster elects exactly one leader: every node
/// answers, exactly one says it leads, all name it and share its term, and
/// the leadership stays put over several election timeouts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_cluster_elects_exactly_one_leader() {
    let mut cluster = TestCluster::start("one-leader").await;
    let leader = cluster.wait_leader().await;
    let mut first_term = None;
    for round in 0..2 {
        let mut leaders = Vec::new();
        let mut terms = Vec::new();
        for id in cluster.node_ids() {
            let status = cluster
                .status(id)
                .await
                .unwrap_or_else(|error| panic!("node {id} did not answer: {error}"));
            assert_eq!(status.node_id, id);
            // The bootstrap membership, stored at the first start.
            let membership = status.membership.clone().expect("a membership");
            assert_eq!(membership.voters, [1, 2, 3], "node {id}: {membership:?}");
            assert!(membership.voters_outgoing.is_empty() && membership.learners.is_empty());
            assert_eq!(
                status.leader_id, leader,
                "node {id} names another leader: {status:?}"
            );
            if status.role == Role::Leader as i32 {
                leaders.push(id);
            }
            terms.push(status.term);
        }
        assert_eq!(leaders, [leader], "exactly one node must report LEADER");
        assert!(
            terms.iter().all(|term| *term == terms[0]),
            "nodes disagree on the term: {terms:?}"
        );
        // The same leader and term after 3 s (3 to 6 election timeouts)
        // shows the election settled instead of churning.
        if let Some(term) = first_term {
            assert_eq!(term, terms[0], "the term changed: leadership churned");
        }
        first_term = Some(terms[0]);
        if round == 0 {
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
    }
}

/// Proves that puts and gets work over gRPC, and that a linearizable read
/// sent straight to a follower returns a write the leader has just
/// acknowledged (the follower must not answer from its possibly older
/// applied state).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_are_readable_and_follower_reads_are_linearizable() {
    let mut cluster = TestCluster::start("put-get").await;
    let client = cluster.client();

    let first = client.put("greeting", "hello").await.expect("first put");
    assert!(first.index > 0);
    assert_eq!(first.previous, None);
    let second = client.put("greeting", "bonjour").await.expect("second put");
    assert!(second.index > first.index);
    assert_eq!(second.previous.as_deref(), Some(b"hello".as_slice()));
    let value = client
        .get("greeting", ReadMode::Linearizable)
        .await
        .expect("get");
    assert_eq!(value.as_deref(), Some(b"bonjour".as_slice()));
    let deleted = client.delete("greeting").await.expect("delete");
    assert!(deleted.deleted);
    let gone = client
        .get("greeting", ReadMode::Linearizable)
        .await
        .expect("get after delete");
    assert_eq!(gone, None);

    let leader = cluster.wait_leader().await;
    let follower = cluster.others(leader)[0];
    let mut follower_kv = kv_client(cluster.node_address(follower)).await;
    let mut leader_kv = kv_client(cluster.node_address(leader)).await;
    // Each round writes a new value through the leader and reads it back
    // from the follower at once; a follower serving from its own applied
    // state would return the previous value in some round.
    for round in 0..25u32 {
        let value = format!("v{round}").into_bytes();
        let put = leader_kv
            .put(PutRequest {
                key: b"register".to_vec(),
                value: value.clone(),
                session: None,
            })
            .await
            .unwrap_or_else(|status| panic!("put {round} at leader {leader}: {status}"))
            .into_inner();
        let read = follower_kv
            .get(GetRequest {
                key: b"register".to_vec(),
                mode: ReadMode::Linearizable as i32,
            })
            .await
            .unwrap_or_else(|status| panic!("read {round} at follower {follower}: {status}"))
            .into_inner();
        let pair = read.kv.expect("the register exists");
        assert_eq!(
            pair.value, value,
            "round {round}: follower {follower} returned a stale value"
        );
        assert_eq!(pair.mod_index, put.index);
        assert!(read.read_index >= put.index);
    }
}

fn encode(operation: Operation) -> Vec<u8> {
    KvCommand {
        operation: Some(operation),
    }
    .encode_to_vec()
}

/// Proves that a command submitted twice with the same (client id,
/// sequence) is applied once: the retry returns the first answer and
/// index, and a state change that a second application would cause (or
/// undo) does not happen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_submit_is_applied_once() {
    let mut cluster = TestCluster::start("dedup").await;
    let leader = cluster.wait_leader().await;
    let mut submit = submit_client(cluster.node_address(leader)).await;
    let client = cluster.client();

    // Compare-and-swap "create if absent": applied twice, the second copy
    // would fail (the key exists) and answer succeeded = false.
    let create = SubmitRequest {
        command: encode(Operation::CompareAndSwap(KvCompareAndSwap {
            key: b"lock".to_vec(),
            expected: None,
            value: Some(b"owner-a".to_vec()),
        })),
        client_id: "dedup-client-a".into(),
        sequence: 1,
    };
    let first = submit
        .submit(create.clone())
        .await
        .expect("first submit")
        .into_inner();
    let retry = submit
        .submit(create.clone())
        .await
        .expect("retried submit")
        .into_inner();
    assert_eq!(
        retry.response, first.response,
        "the retry was answered differently"
    );
    let result = KvResult::decode(first.response.as_slice()).expect("a KvResult");
    assert!(result.succeeded, "the first create must succeed");
    assert_eq!(result.previous, None);
    let stored = client
        .get_key_value("lock", ReadMode::Linearizable)
        .await
        .expect("read the lock")
        .expect("the lock exists");
    assert_eq!(stored.value, b"owner-a");
    assert_eq!(stored.mod_index, first.index);

    // The same command under a new sequence is a new command: it applies
    // and fails, which shows the retry above really was deduplicated.
    let mut fresh = create.clone();
    fresh.sequence = 2;
    let fresh = submit
        .submit(fresh)
        .await
        .expect("new sequence")
        .into_inner();
    assert!(fresh.index > first.index);
    let fresh_result = KvResult::decode(fresh.response.as_slice()).expect("a KvResult");
    assert!(!fresh_result.succeeded);
    assert_eq!(
        fresh_result.previous.as_deref(),
        Some(b"owner-a".as_slice())
    );

    // A put retried after another client overwrote the key: applied again,
    // it would put its old value back.
    let put_a = SubmitRequest {
        command: encode(Operation::Put(KvPut {
            key: b"config".to_vec(),
            value: b"from-a".to_vec(),
        })),
        client_id: "dedup-client-b".into(),
        sequence: 1,
    };
    let applied_a = submit
        .submit(put_a.clone())
        .await
        .expect("put a")
        .into_inner();
    client.put("config", "from-c").await.expect("put c");
    let retried_a = submit.submit(put_a).await.expect("retry a").into_inner();
    assert_eq!(retried_a.response, applied_a.response);
    let value = client
        .get("config", ReadMode::Linearizable)
        .await
        .expect("read config");
    assert_eq!(
        value.as_deref(),
        Some(b"from-c".as_slice()),
        "the retried put was applied a second time"
    );

    // The KV service's own sessions deduplicate the same way.
    let mut kv = kv_client(cluster.node_address(leader)).await;
    let session = Some(Session {
        client_id: "dedup-client-d".into(),
        sequence: 1,
    });
    let put_d = PutRequest {
        key: b"config".to_vec(),
        value: b"from-d".to_vec(),
        session,
    };
    let applied_d = kv.put(put_d.clone()).await.expect("put d").into_inner();
    client.put("config", "from-e").await.expect("put e");
    let retried_d = kv.put(put_d).await.expect("retry d").into_inner();
    assert_eq!(retried_d.previous, applied_d.previous);
    let value = client
        .get("config", ReadMode::Linearizable)
        .await
        .expect("read config");
    assert_eq!(value.as_deref(), Some(b"from-e".as_slice()));
}

/// Proves that a retried command reports the log index of its first (and
/// only) application, as `SubmitResponse.index` and `PutResponse.index`
/// promise ("the first result"), so that it matches the key's mod_index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_submit_reports_the_first_index() {
    let mut cluster = TestCluster::start("dedup-index").await;
    let leader = cluster.wait_leader().await;
    let mut submit = submit_client(cluster.node_address(leader)).await;
    let request = SubmitRequest {
        command: encode(Operation::Put(KvPut {
            key: b"key".to_vec(),
            value: b"value".to_vec(),
        })),
        client_id: "dedup-index-client".into(),
        sequence: 1,
    };
    let first = submit
        .submit(request.clone())
        .await
        .expect("first")
        .into_inner();
    let retry = submit.submit(request).await.expect("retry").into_inner();
    let stored = cluster
        .client()
        .get_key_value("key", ReadMode::Linearizable)
        .await
        .expect("read")
        .expect("the key exists");
    assert_eq!(stored.mod_index, first.index);
    assert_eq!(
        retry.index, first.index,
        "the retry reported index {} but the command was applied at {}",
        retry.index, first.index
    );
}
