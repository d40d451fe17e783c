//! Client sessions expire at the same log positions on every replica,
//! whatever the apply batches each node happened to form.

use std::time::Duration;

use raftgres_proto::v1::{PutRequest, Session};
use raftgres_storage_pg::PgConnector;
use raftgres_tests::{bounded, kv_client, TestCluster};

/// Session rows as stored in one node's Postgres.
async fn session_rows(cluster: &mut TestCluster, id: u64) -> Vec<(String, i64, i64)> {
    let conninfo = cluster.postgres(id).conninfo();
    let connector = PgConnector::new(&conninfo).expect("the node's conninfo");
    let (client, _connection) = connector
        .connect(Duration::from_secs(5), "raftgres-test")
        .await
        .expect("connecting to the node's postgres");
    client
        .query(
            "SELECT client_id, sequence, last_index FROM raftgres_sessions ORDER BY client_id",
            &[],
        )
        .await
        .expect("reading the sessions")
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect()
}

/// Proves that with a short session expiry, concurrent writers that carry
/// the log past an expiry point leave every node with the same session
/// rows, and that a session idle for longer than the expiry is gone on
/// every node. Every write uses a session of its own, so sessions were last
/// used at every index around the expiry horizon: a replica that drew the
/// horizon from its own batch boundaries would keep a different set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_expires_the_same_sessions() {
    const WRITERS: usize = 8;
    const WRITES_PER_WRITER: usize = 150;
    let mut cluster = TestCluster::start_with("session-expiry", 3, |options| {
        options
            .limits_extra
            .push(("session_expiry_entries".into(), "50".into()));
    })
    .await;
    let early = cluster.client();
    early.put("early", "1").await.expect("an early write");
    let early_id = early.client_id();

    let (leader, _) = cluster.leader_status().await;
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let mut kv = kv_client(cluster.node_address(leader)).await;
        writers.push(tokio::spawn(async move {
            for write in 0..WRITES_PER_WRITER {
                let session = Session {
                    client_id: format!("w{writer}-{write}"),
                    sequence: 1,
                };
                kv.put(PutRequest {
                    key: format!("w{writer}/{write}").into_bytes(),
                    value: b"v".to_vec(),
                    session: Some(session),
                })
                .await
                .expect("a write");
            }
        }));
    }
    bounded("the writers", Duration::from_secs(120), async {
        for writer in writers {
            writer.await.expect("a writer task");
        }
    })
    .await;

    let mut rows = Vec::new();
    for id in cluster.node_ids() {
        let commit = cluster.wait_caught_up(id).await;
        assert!(commit > 1024, "the log must pass an expiry point: {commit}");
        rows.push((id, session_rows(&mut cluster, id).await));
    }
    let (first_id, first_rows) = &rows[0];
    for (id, node_rows) in &rows[1..] {
        assert_eq!(
            node_rows, first_rows,
            "node {id} and node {first_id} hold different sessions"
        );
    }
    assert!(
        !first_rows
            .iter()
            .any(|(client_id, _, _)| *client_id == early_id),
        "the idle session outlived its expiry"
    );
    assert!(!first_rows.is_empty(), "recent sessions are kept");
}
