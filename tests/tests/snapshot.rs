//! Log compaction and snapshots streamed between real nodes.

use std::time::{Duration, Instant};

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

/// The largest peer message in the streaming test: the state the follower
/// receives is over 16 times this.
const PEER_MESSAGE_BYTES_MAX: usize = 64 << 10;
/// Keys and value size of that state: 400 x 4 KiB, about 1.6 MiB.
const LARGE_KEYS: usize = 400;
const LARGE_VALUE_BYTES: usize = 4096;
const _: () = assert!(
    LARGE_KEYS * LARGE_VALUE_BYTES > 16 * PEER_MESSAGE_BYTES_MAX,
    "the state is over 16 times the message limit"
);

fn large_value(number: usize) -> Vec<u8> {
    let mut value = format!("large-{number}-").into_bytes();
    value.resize(LARGE_VALUE_BYTES, b'a' + (number % 26) as u8);
    value
}

/// How far node `conninfo`'s staging of a snapshot has come:
/// `(next_seq, complete)`, or `None` when nothing is staged.
async fn staged(conninfo: &str) -> Option<(i64, bool)> {
    let (client, connection) = tokio_postgres::connect(conninfo, tokio_postgres::NoTls)
        .await
        .expect("connect to the follower's Postgres");
    let connection = tokio::spawn(connection);
    let row = client
        .query_opt(
            "SELECT next_seq, complete FROM raftgres_snapshot_staged",
            &[],
        )
        .await
        .expect("read the staging");
    connection.abort();
    row.map(|row| (row.get(0), row.get(1)))
}

/// A follower that missed far more than the leader's log keeps catches up
/// from a snapshot of a state over 16 times the peer message limit,
/// streamed in chunks while clients keep writing. The follower is killed
/// in the middle of the stream; restarted, it resumes from the chunks it
/// staged (its staging never goes back), and no acknowledged write is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_beyond_the_message_limit_streams_and_resumes_after_a_crash() {
    let mut cluster = TestCluster::start_with("snapshot-stream", 3, |options| {
        options.raft_extra.extend([
            ("compaction_entries".to_string(), "50".to_string()),
            ("message_bytes_max".to_string(), (16 << 10).to_string()),
            ("snapshot_chunks_in_flight".to_string(), "1".to_string()),
        ]);
        options.limits_extra.extend([
            (
                "peer_message_bytes_max".to_string(),
                PEER_MESSAGE_BYTES_MAX.to_string(),
            ),
            ("command_bytes_max".to_string(), (8 << 10).to_string()),
        ]);
    })
    .await;
    let leader = cluster.wait_leader().await;
    let follower = cluster.others(leader)[0];
    cluster.kill_node(follower).expect("kill the follower");
    let client = cluster.client();
    for number in 0..LARGE_KEYS {
        let key = format!("large-{number:04}").into_bytes();
        bounded(
            "a large put",
            WAIT_MAX,
            client.put(key, large_value(number)),
        )
        .await
        .expect("a put with a quorum of two");
    }

    let writer = raftgres_tests::BackgroundWriter::start(
        cluster.client(),
        "during-",
        2_000,
        Duration::from_secs(60),
        Duration::from_millis(5),
    );
    let conninfo = cluster.postgres(follower).conninfo();
    cluster.start_node(follower).expect("start the follower");
    // Cut the stream once a part of it is staged.
    let deadline = Instant::now() + WAIT_MAX;
    let cut_at = loop {
        assert!(
            Instant::now() < deadline,
            "the follower staged no part of a snapshot"
        );
        if let Some((next_seq, false)) = staged(&conninfo).await {
            if next_seq >= 10 {
                break next_seq;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    cluster
        .kill_node(follower)
        .expect("kill the follower mid-stream");
    let (kept, _) = staged(&conninfo).await.expect("the staging survives");
    assert!(
        kept >= cut_at,
        "staged chunks are durable: {kept} < {cut_at}"
    );
    cluster.start_node(follower).expect("restart the follower");
    // Until the install empties it, the staging only grows: the transfer
    // resumed rather than starting over.
    let mut lowest = kept;
    let deadline = Instant::now() + WAIT_MAX;
    while let Some((next_seq, _)) = staged(&conninfo).await {
        lowest = lowest.min(next_seq);
        assert!(
            Instant::now() < deadline,
            "the snapshot was never installed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        lowest >= kept,
        "the transfer started over: staging went from {kept} chunks back to {lowest}"
    );
    cluster.wait_caught_up(follower).await;
    writer.wait_for_writes(20, "after the install").await;
    let outcome = writer.finish().await;
    cluster.wait_caught_up(follower).await;

    let mut kv = kv_client(cluster.node_address(follower)).await;
    let stored = kv
        .range(RangeRequest {
            prefix: Vec::new(),
            limit: 0,
            mode: ReadMode::Stale as i32,
        })
        .await
        .expect("a stale range read on the follower")
        .into_inner()
        .kvs;
    let stored: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = stored
        .into_iter()
        .map(|pair| (pair.key, pair.value))
        .collect();
    for number in 0..LARGE_KEYS {
        let key = format!("large-{number:04}").into_bytes();
        assert_eq!(
            stored.get(&key),
            Some(&large_value(number)),
            "large key {number} on the follower"
        );
    }
    assert!(!outcome.acknowledged.is_empty(), "writes went on");
    for number in &outcome.acknowledged {
        let key = format!("during-{number:04}").into_bytes();
        assert_eq!(
            stored.get(&key),
            Some(&format!("value-{number}").into_bytes()),
            "acknowledged write {number} on the follower"
        );
    }
    cluster.assert_no_node_exited();
}
