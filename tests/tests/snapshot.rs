//! Log compaction and snapshot installation between real nodes.

use raftgres_proto::v1::{RangeRequest, ReadMode};
use raftgres_tests::{bounded, kv_client, TestCluster, WAIT_MAX};

const COMPACTION_ENTRIES: &str = "20";
const KEYS: usize = 120;

async fn stale_keys(cluster: &TestCluster, id: u64) -> Vec<(String, String)> {
    let mut kv = kv_client(cluster.node_address(id)).await;
    let request = RangeRequest {
        prefix: b"key-".to_vec(),
        limit: 0,
        mode: ReadMode::Stale as i32,
    };
    let response = kv
        .range(request)
        .await
        .expect("a stale range read")
        .into_inner();
    response
        .kvs
        .into_iter()
        .map(|pair| {
            (
                String::from_utf8_lossy(&pair.key).into_owned(),
                String::from_utf8_lossy(&pair.value).into_owned(),
            )
        })
        .collect()
}

fn expected_keys() -> Vec<(String, String)> {
    let mut keys: Vec<(String, String)> = (0..KEYS)
        .map(|number| (format!("key-{number:04}"), format!("value-{number}")))
        .collect();
    keys.sort();
    keys
}

/// Proves that a follower that was down while the leader compacted its log
/// past the follower's last entry catches up by installing a snapshot (state
/// machine and sessions), and that a whole cluster restarted on compacted
/// logs keeps every key and keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_follower_catches_up_from_a_snapshot() {
    let mut cluster = TestCluster::start_with("snapshot", 3, |options| {
        options
            .raft_extra
            .push(("compaction_entries".into(), COMPACTION_ENTRIES.into()));
    })
    .await;
    let leader = cluster.wait_leader().await;
    let follower = cluster.others(leader)[0];
    cluster.kill_node(follower).expect("kill the follower");

    let client = cluster.client();
    for (key, value) in expected_keys() {
        bounded(
            "a put",
            WAIT_MAX,
            client.put(key.into_bytes(), value.into_bytes()),
        )
        .await
        .expect("a put with a quorum of two");
    }

    cluster.start_node(follower).expect("restart the follower");
    let commit = cluster.wait_caught_up(follower).await;
    assert!(
        commit as usize > KEYS,
        "every put committed (commit index {commit})"
    );
    assert_eq!(
        stale_keys(&cluster, follower).await,
        expected_keys(),
        "the follower's state after the snapshot"
    );

    cluster.restart_all().await;
    cluster.wait_leader().await;
    let client = cluster.client();
    bounded(
        "a put after the restart",
        WAIT_MAX,
        client.put(b"key-9999".to_vec(), b"after".to_vec()),
    )
    .await
    .expect("the restarted cluster serves writes");
    let mut expected = expected_keys();
    expected.push(("key-9999".into(), "after".into()));
    for id in [1, 2, 3] {
        cluster.wait_caught_up(id).await;
        assert_eq!(
            stale_keys(&cluster, id).await,
            expected,
            "node {id} after a full restart on compacted logs"
        );
    }
}
