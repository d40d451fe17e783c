//! Every way of pointing a store at the wrong place fails with a clear,
//! non-retriable error (or a retriable one for an unreachable server), fast,
//! and writes nothing.

use std::time::{Duration, Instant};

use raftgres_devcluster::testing::{ScratchInstance, TestDatabase};
use raftgres_storage_pg::{
    AppendBatch, EntryKind, HardState, LogEntry, LogStore, PgStore, PgStoreConfig, StoreError,
    SCHEMA_VERSION_SUPPORTED,
};

fn entries(count: u64, term: u64) -> Vec<LogEntry> {
    (1..=count)
        .map(|index| LogEntry {
            index,
            term,
            kind: EntryKind::Command,
            data: vec![index as u8; 10],
        })
        .collect()
}

async fn seeded(database: &TestDatabase, cluster_id: &str, node_id: u64) {
    let mut store = PgStore::open(database.store_config(cluster_id, node_id))
        .await
        .unwrap();
    store
        .append(AppendBatch {
            hard_state: Some(HardState {
                term: 4,
                voted_for: Some(node_id),
            }),
            entries: entries(3, 4),
        })
        .await
        .unwrap();
    store.close().await;
}

async fn table_exists(database: &TestDatabase, table: &str) -> bool {
    let client = database.client().await.unwrap();
    client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn another_clusters_or_nodes_database_is_refused() {
    let database = TestDatabase::create().await.unwrap();
    seeded(&database, "cluster-a", 1).await;
    for (cluster_id, node_id) in [("cluster-b", 1), ("cluster-a", 2)] {
        let error = PgStore::open(database.store_config(cluster_id, node_id))
            .await
            .unwrap_err();
        let message = error.to_string();
        assert!(
            matches!(error, StoreError::IdentityMismatch { .. }),
            "{message}"
        );
        assert!(!error.is_retriable());
        for expected in [
            "cluster-a",
            cluster_id,
            "node 1",
            &format!("node {node_id}"),
        ] {
            assert!(message.contains(expected), "{message} lacks {expected}");
        }
    }
    let mut store = PgStore::open(database.store_config("cluster-a", 1))
        .await
        .unwrap();
    let loaded = store.load().await.unwrap();
    assert_eq!(loaded.entries, entries(3, 4));
    assert_eq!(loaded.hard_state.voted_for, Some(1));
    store.close().await;
}

#[tokio::test]
async fn second_opener_fails_fast() {
    let database = TestDatabase::create().await.unwrap();
    let mut first = PgStore::open(database.store_config("cluster", 1))
        .await
        .unwrap();
    let started = Instant::now();
    let error = PgStore::open(database.store_config("cluster", 1))
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        matches!(error, StoreError::Locked { holder_pid, .. } if holder_pid > 0),
        "{error}"
    );
    assert!(error.to_string().contains(database.name()));
    // The first store is unaffected, and closing it frees the database.
    first
        .append(AppendBatch {
            // Entries may not carry a term above the stored hard state's.
            hard_state: Some(HardState {
                term: 1,
                voted_for: None,
            }),
            entries: entries(1, 1),
        })
        .await
        .unwrap();
    first.close().await;
    let mut second = PgStore::open(database.store_config("cluster", 1))
        .await
        .unwrap();
    assert_eq!(second.load().await.unwrap().entries, entries(1, 1));
    second.close().await;
}

#[tokio::test]
async fn fsync_off_server_is_refused_unless_explicitly_allowed() {
    let scratch = ScratchInstance::start(&[("fsync", "off")]).unwrap();
    let database = TestDatabase::create_on(&scratch.instance().conninfo(), None)
        .await
        .unwrap();
    let error = PgStore::open(database.store_config("cluster", 1))
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(&error, StoreError::UnsafeDurability { setting, value, .. } if setting == "fsync" && value == "off"),
        "{message}"
    );
    assert!(message.contains("fsync = on"), "no fix in: {message}");
    assert!(
        !table_exists(&database, "raftgres_log").await,
        "wrote schema"
    );
    let mut config = database.store_config("cluster", 1);
    config.allow_unsafe_durability = true;
    let store = PgStore::open(config).await.unwrap();
    store.close().await;
    assert!(table_exists(&database, "raftgres_log").await);
    drop(database);
}

#[tokio::test]
async fn synchronous_commit_off_database_is_refused() {
    let database = TestDatabase::create().await.unwrap();
    for value in ["off", "local"] {
        database
            .client()
            .await
            .unwrap()
            .batch_execute(&format!(
                "ALTER DATABASE {} SET synchronous_commit = {value}",
                database.name()
            ))
            .await
            .unwrap();
        let error = PgStore::open(database.store_config("cluster", 1))
            .await
            .unwrap_err();
        assert!(
            matches!(&error, StoreError::UnsafeDurability { setting, .. } if setting == "synchronous_commit"),
            "{error}"
        );
        assert!(!table_exists(&database, "raftgres_identity").await);
    }
}

#[tokio::test]
async fn unreachable_server_fails_within_the_connect_timeout() {
    // A listener that completes the TCP handshake but never speaks: without
    // a bound on the whole start-up, open would hang forever.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    // A port nobody listens on: connection refused.
    let refused_port = raftgres_devcluster::postgres::free_port().unwrap();
    for port in [silent_port, refused_port] {
        let mut config = PgStoreConfig::new(
            format!("host=127.0.0.1 port={port} user=postgres dbname=postgres"),
            "cluster",
            1,
        );
        config.connect_timeout = Duration::from_millis(500);
        let started = Instant::now();
        let error = PgStore::open(config).await.unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "took {:?}",
            started.elapsed()
        );
        assert!(matches!(error, StoreError::Unavailable { .. }), "{error}");
        assert!(error.is_retriable());
        assert!(error.to_string().contains(&port.to_string()), "{error}");
    }
    drop(silent);
}

#[tokio::test]
async fn newer_schema_is_refused() {
    let database = TestDatabase::create().await.unwrap();
    seeded(&database, "cluster", 1).await;
    let newer = SCHEMA_VERSION_SUPPORTED + 1;
    database
        .client()
        .await
        .unwrap()
        .execute(
            "INSERT INTO raftgres_schema_version (version) VALUES ($1)",
            &[&newer],
        )
        .await
        .unwrap();
    let error = PgStore::open(database.store_config("cluster", 1))
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::SchemaTooNew { found, supported } if found == newer && supported == SCHEMA_VERSION_SUPPORTED),
        "{error}"
    );
    let versions: i64 = database
        .client()
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM raftgres_schema_version", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        versions,
        i64::from(SCHEMA_VERSION_SUPPORTED) + 1,
        "migration rows changed"
    );
}

#[tokio::test]
async fn invalid_configuration_is_refused_before_connecting() {
    let mut config = PgStoreConfig::new("host=127.0.0.1 port=1", "", 1);
    assert!(matches!(
        PgStore::open(config.clone()).await,
        Err(StoreError::InvalidConfig { .. })
    ));
    config.cluster_id = "cluster".into();
    config.entries_per_append_max = 0;
    assert!(matches!(
        PgStore::open(config.clone()).await,
        Err(StoreError::InvalidConfig { .. })
    ));
    config.entries_per_append_max = 16;
    config.conninfo = "this is not = a conninfo '".into();
    assert!(matches!(
        PgStore::open(config).await,
        Err(StoreError::InvalidConfig { .. })
    ));
}
