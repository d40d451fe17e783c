//! Proves what docs/OPERATIONS.md says of backing a node up with
//! `pg_dump`: a transaction holding what a long dump holds (one
//! REPEATABLE READ snapshot, ACCESS SHARE on every raftgres table) does not
//! stop the node from appending and applying; `pg_dump --format=custom` of
//! the running node's database restores with `pg_restore` into a database
//! that holds the state machine as of the applied index it records, with
//! the node's identity and hard state.

use std::process::Command;

use raftgres::server::NodeConfig;
use raftgres_devcluster::postgres::find_bin_dir;
use raftgres_tests::TestCluster;
use tokio_postgres::NoTls;

const KEYS_BEFORE: usize = 40;
const KEYS_TOTAL: usize = 80;
/// Every table a node with the KV state machine keeps.
const TABLES: &str = "raftgres_identity, raftgres_hard_state, raftgres_log, raftgres_snapshot, \
                      raftgres_applied, raftgres_kv, raftgres_sessions";

async fn connect(conninfo: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(conninfo, NoTls)
        .await
        .unwrap_or_else(|error| panic!("cannot connect to {conninfo}: {error}"));
    tokio::spawn(connection);
    client
}

async fn put_keys(cluster: &TestCluster, keys: std::ops::Range<usize>) {
    let client = cluster.client();
    for index in keys {
        client
            .put(format!("key-{index:03}"), format!("value-{index}"))
            .await
            .unwrap_or_else(|error| panic!("put key-{index:03}: {error}"));
    }
}

fn run(program: &std::path::Path, arguments: &[&str]) {
    let output = Command::new(program)
        .args(arguments)
        .output()
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", program.display()));
    assert!(
        output.status.success(),
        "{} {arguments:?} failed: {}",
        program.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_dump_copies_a_running_node_without_stopping_it() {
    let mut cluster = TestCluster::start("backup").await;
    put_keys(&cluster, 0..KEYS_BEFORE).await;
    let commit_before = cluster.wait_caught_up(1).await;
    let conninfo = NodeConfig::from_file(&cluster.config_path(1))
        .expect("node 1's config")
        .postgres;

    // What a dump holds, for as long as the node takes to replicate and
    // apply more writes.
    let dump_like = connect(&conninfo).await;
    dump_like
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; \
             LOCK TABLE {TABLES} IN ACCESS SHARE MODE"
        ))
        .await
        .expect("a dump's locks");
    // The snapshot is taken at the first query, as pg_dump's is.
    let count_keys = "SELECT count(*) FROM raftgres_kv";
    let seen: i64 = dump_like.query_one(count_keys, &[]).await.unwrap().get(0);
    assert_eq!(seen, KEYS_BEFORE as i64);
    put_keys(&cluster, KEYS_BEFORE..KEYS_TOTAL).await;
    let commit_after = cluster.wait_caught_up(1).await;
    assert!(commit_after > commit_before);
    let seen: i64 = dump_like.query_one(count_keys, &[]).await.unwrap().get(0);
    assert_eq!(
        seen, KEYS_BEFORE as i64,
        "the snapshot stays at the state it began with while the node moves on"
    );
    dump_like.batch_execute("COMMIT").await.unwrap();

    // The documented dump, then a restore into a new database.
    let bin = find_bin_dir().expect("the Postgres binaries");
    let dump = cluster.dir().join("node-1.dump");
    let dump_path = dump.display().to_string();
    run(
        &bin.join("pg_dump"),
        &[
            "--format=custom",
            "--file",
            &dump_path,
            "--dbname",
            &conninfo,
        ],
    );
    assert!(
        conninfo.contains("dbname=postgres"),
        "the dev cluster's conninfo changed: {conninfo}"
    );
    let admin = connect(&conninfo).await;
    admin
        .batch_execute("CREATE DATABASE raftgres_restored")
        .await
        .unwrap();
    let restored_conninfo = conninfo.replace("dbname=postgres", "dbname=raftgres_restored");
    run(
        &bin.join("pg_restore"),
        &["--dbname", &restored_conninfo, &dump_path],
    );

    let restored = connect(&restored_conninfo).await;
    let applied: i64 = restored
        .query_one("SELECT applied_index FROM raftgres_applied", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        applied >= commit_after as i64,
        "the copy's applied index {applied} is behind what node 1 had applied ({commit_after})"
    );
    let keys: i64 = restored
        .query_one("SELECT count(*) FROM raftgres_kv", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(keys, KEYS_TOTAL as i64);
    let last = format!("key-{:03}", KEYS_TOTAL - 1);
    let value: Vec<u8> = restored
        .query_one(
            "SELECT value FROM raftgres_kv WHERE key = $1",
            &[&last.as_bytes()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(value, format!("value-{}", KEYS_TOTAL - 1).into_bytes());
    let identity = restored
        .query_one("SELECT cluster_id, node_id FROM raftgres_identity", &[])
        .await
        .unwrap();
    assert_eq!(
        identity.get::<_, i64>(1),
        1,
        "the copy carries node 1's identity"
    );
    let term: i64 = restored
        .query_one("SELECT term FROM raftgres_hard_state", &[])
        .await
        .unwrap()
        .get(0);
    assert!(term >= 1, "the copy carries node 1's term");
    cluster.assert_no_node_exited();
}
