//! A node's Postgres crashing under it: the node reports it, stays up,
//! and recovers when Postgres is back, while the cluster keeps serving.

use std::time::{Duration, Instant};

use raftgres::client::ReadMode;
use raftgres::server::NodeConfig;
use raftgres_proto::v1::{GetRequest, RangeRequest};
use raftgres_tests::{kv_client, BackgroundWriter, TestCluster, POLL_INTERVAL, WAIT_MAX};
use tonic::Code;

/// Proves that when one follower's Postgres is killed (SIGKILL) and
/// restarted, twice, writes through the leader keep succeeding throughout,
/// the follower reports storage_healthy = false while its Postgres is down
/// and true again after, its state machine ends up holding every
/// acknowledged write, and no node process exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_survives_its_postgres_crashing() {
    // Asynchronous apply commits are what a Postgres crash can lose: the
    // node processes inherit this setting, so the replay of lost applies is
    // exercised too. (nextest runs each test in its own process.)
    std::env::set_var("RAFTGRES_APPLY_ASYNC_COMMIT", "true");
    let mut cluster = TestCluster::start("pg-kill").await;
    let leader = cluster.wait_leader().await;
    let follower = cluster.others(leader)[0];
    let healthy = cluster.status(follower).await.expect("follower status");
    assert!(healthy.storage_healthy, "{healthy:?}");

    let writer = BackgroundWriter::start(
        cluster.client(),
        "pg-down/",
        600,
        Duration::from_secs(120),
        Duration::from_millis(25),
    );
    writer.wait_for_writes(5, "before the crash").await;

    // Two crashes, each landing at a random point of the follower's
    // append and apply transactions.
    for crash in 1..=2 {
        tokio::task::block_in_place(|| cluster.postgres(follower).kill())
            .expect("kill the follower's postgres");
        let down = cluster
            .wait_for_status(follower, "to report its storage unhealthy", |status| {
                !status.storage_healthy
            })
            .await;
        println!("crash {crash}: follower {follower} with Postgres down: {down:?}");
        writer
            .wait_for_writes(20, "while a follower's postgres was down")
            .await;

        tokio::task::block_in_place(|| cluster.postgres(follower).start_again())
            .expect("restart the follower's postgres");
        cluster
            .wait_for_status(follower, "to report its storage healthy again", |status| {
                status.storage_healthy
            })
            .await;
        writer.wait_for_writes(5, "after postgres came back").await;
    }
    let outcome = writer.finish().await;
    println!(
        "writer: {} acknowledged, slowest {:?}",
        outcome.acknowledged.len(),
        outcome.latency_max
    );
    assert!(
        outcome.failed.is_empty(),
        "writes failed while only a follower's storage was down: {:?}",
        outcome.failed
    );

    let commit = cluster.wait_caught_up(follower).await;
    println!("follower {follower} caught up to index {commit}");
    assert_follower_has_every_write(&cluster, follower, &outcome.acknowledged).await;
    let value = cluster
        .client()
        .get("pg-down/0000", ReadMode::Linearizable)
        .await
        .expect("linearizable read");
    assert_eq!(value.as_deref(), Some(b"value-0".as_slice()));
    cluster.assert_no_node_exited();
}

/// Polls a stale range on `follower` (its own applied state, read from its
/// own Postgres) until it holds exactly the acknowledged writes; on
/// timeout names the missing ones.
async fn assert_follower_has_every_write(cluster: &TestCluster, follower: u64, written: &[usize]) {
    let expected: Vec<(String, String)> = written
        .iter()
        .map(|i| (format!("pg-down/{i:04}"), format!("value-{i}")))
        .collect();
    let mut kv = kv_client(cluster.node_address(follower)).await;
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        let answer = kv
            .range(RangeRequest {
                prefix: b"pg-down/".to_vec(),
                limit: 1000,
                mode: ReadMode::Stale as i32,
            })
            .await;
        let found: Result<Vec<(String, String)>, String> = match answer {
            Ok(range) => Ok(range
                .into_inner()
                .kvs
                .into_iter()
                .map(|pair| {
                    (
                        String::from_utf8_lossy(&pair.key).into_owned(),
                        String::from_utf8_lossy(&pair.value).into_owned(),
                    )
                })
                .collect()),
            Err(status) => Err(status.to_string()),
        };
        if found.as_ref() == Ok(&expected) {
            return;
        }
        if Instant::now() >= deadline {
            let status = cluster.status(follower).await;
            let missing: Vec<&(String, String)> = match &found {
                Ok(found) => expected
                    .iter()
                    .filter(|pair| !found.contains(pair))
                    .collect(),
                Err(_) => Vec::new(),
            };
            panic!(
                "follower {follower} does not hold the {} acknowledged writes; missing {missing:?}; \
                 read {:?} pairs; its status: {status:?}",
                expected.len(),
                found.map(|found| found.len()),
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Proves that a leader whose Postgres stops does not hold the cluster
/// hostage: within about an election timeout it hands leadership to an
/// up-to-date follower, a write issued after the stop is acknowledged by
/// the two healthy nodes while the old leader's Postgres is still down,
/// reads on the stalled node are refused at once rather than at their
/// deadline, and the old leader catches up once its Postgres is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_go_on_when_the_leaders_postgres_stops() {
    let mut cluster = TestCluster::start("leader-pg-stop").await;
    let leader = cluster.wait_leader().await;
    cluster
        .client()
        .put("before", "1")
        .await
        .expect("a write before the stop");
    tokio::task::block_in_place(|| cluster.postgres(leader).kill())
        .expect("kill the leader's postgres");
    let stopped = Instant::now();
    cluster
        .client()
        .put("during", "2")
        .await
        .expect("a write while the leader's postgres is down");
    println!(
        "first write acknowledged {:?} after the leader's postgres stopped",
        stopped.elapsed()
    );
    let new_leader = cluster.wait_leader().await;
    assert_ne!(
        new_leader, leader,
        "leadership left the node without storage"
    );

    let mut reads = kv_client(cluster.node_address(leader)).await;
    let asked = Instant::now();
    let refused = reads
        .range(RangeRequest {
            prefix: b"d".to_vec(),
            limit: 10,
            mode: ReadMode::Linearizable as i32,
        })
        .await;
    assert!(
        refused.is_err(),
        "a read on a node without storage: {refused:?}"
    );
    println!(
        "a read on the stalled node was refused after {:?}",
        asked.elapsed()
    );

    tokio::task::block_in_place(|| cluster.postgres(leader).start_again())
        .expect("restart the old leader's postgres");
    let commit = cluster.wait_caught_up(leader).await;
    println!("the old leader caught up to index {commit}");
    let value = cluster
        .client()
        .get("during", ReadMode::Linearizable)
        .await
        .expect("a read after recovery");
    assert_eq!(value.as_deref(), Some(b"2".as_slice()));
}

/// Proves a node serves no read its stored state machine does not cover.
/// With asynchronous apply commits, a Postgres crash can lose applies the
/// node already counted; the node learns of it only at its next apply,
/// which replays them. Here the follower's stored applied index is set
/// back three entries behind the node's back (what such a crash leaves):
/// reads on it are refused as UNAVAILABLE, naming both indexes, instead of
/// being served from rows behind the read index; the refusal has the node
/// replay the gap at once, without waiting for a write, and reads are
/// served again, with every acknowledged value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_wait_for_applies_a_postgres_crash_lost() {
    let mut cluster = TestCluster::start("applies-lost").await;
    let leader = cluster.wait_leader().await;
    let follower = cluster.others(leader)[0];
    let client = cluster.client();
    for i in 0..5 {
        client
            .put(format!("lost/{i}"), format!("v{i}"))
            .await
            .expect("a write");
    }
    let commit = cluster.wait_caught_up(follower).await;
    let conninfo = NodeConfig::from_file(&cluster.config_path(follower))
        .expect("the follower's config")
        .postgres;
    let database = connect(&conninfo).await;
    applier_leaves_its_transaction_when_idle(&database, follower).await;
    let mut reads = kv_client(cluster.node_address(follower)).await;
    // Once for Get, once for Range: each reads the rows and the applied
    // index its own way.
    for read in ["get", "range"] {
        database
            .batch_execute(
                "UPDATE raftgres_applied SET applied_index = applied_index - 3,
                     applied_term = (SELECT term FROM raftgres_log
                                     WHERE log_index = raftgres_applied.applied_index - 3)",
            )
            .await
            .expect("set the stored applied index back");
        let refused = match read {
            "get" => reads
                .get(GetRequest {
                    key: b"lost/4".to_vec(),
                    mode: ReadMode::Linearizable as i32,
                })
                .await
                .map(|_| ()),
            _ => reads.range(lost_keys()).await.map(|_| ()),
        }
        .expect_err("a read the stored state machine does not cover");
        println!("{read} at commit index {commit} refused: {refused}");
        assert_eq!(refused.code(), Code::Unavailable, "{refused}");
        assert!(
            refused.message().contains("behind the read index"),
            "{refused}"
        );

        // No write comes: the refused read told the node, which has its
        // applier replay the lost applies, and reads are served again.
        let asked = Instant::now();
        let served = loop {
            match reads.range(lost_keys()).await {
                Ok(served) => break served.into_inner(),
                Err(refused)
                    if refused.code() == Code::Unavailable && asked.elapsed() < WAIT_MAX =>
                {
                    tokio::time::sleep(POLL_INTERVAL).await;
                }
                Err(refused) => {
                    panic!("reads still refused after {:?}: {refused}", asked.elapsed())
                }
            }
        };
        println!(
            "reads served again {:?} after the first refusal",
            asked.elapsed()
        );
        let values: Vec<_> = served.kvs.iter().map(|kv| kv.value.clone()).collect();
        let expected: Vec<_> = (0..5).map(|i| format!("v{i}").into_bytes()).collect();
        assert_eq!(values, expected);
        assert!(served.read_index >= commit);
    }
    cluster.assert_no_node_exited();
}

/// The applier begins its next transaction while it waits for a batch;
/// with no batch for a second it ends it, so an idle node sits in no
/// transaction ("idle", not "idle in transaction", in pg_stat_activity).
async fn applier_leaves_its_transaction_when_idle(database: &tokio_postgres::Client, node: u64) {
    let started = Instant::now();
    loop {
        let state: Option<String> = database
            .query_opt(
                "SELECT state FROM pg_stat_activity WHERE application_name = $1",
                &[&format!("raftgres-node-{node}-apply")],
            )
            .await
            .expect("read pg_stat_activity")
            .map(|row| row.get(0));
        if state.as_deref() == Some("idle") {
            println!("node {node}'s applier idle after {:?}", started.elapsed());
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "node {node}'s applier still {state:?} after {:?} without writes",
            started.elapsed()
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

fn lost_keys() -> RangeRequest {
    RangeRequest {
        prefix: b"lost/".to_vec(),
        limit: 10,
        mode: ReadMode::Linearizable as i32,
    }
}

async fn connect(conninfo: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(conninfo, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|error| panic!("cannot connect to {conninfo}: {error}"));
    tokio::spawn(connection);
    client
}
