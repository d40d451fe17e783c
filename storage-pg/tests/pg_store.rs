//! Behaviour specific to the Postgres store: durability across reopen, the
//! apply API, the guard rails inside the database, and reconnection.

use std::time::Duration;

use raftgres_devcluster::testing::TestDatabase;
use raftgres_storage_pg::{
    AppendBatch, AppliedState, ApplyOptions, ApplyTransaction, EntryKind, HardState, LogEntry,
    LogStore, PgApplier, PgStore, SnapshotMeta, StoreError,
};

fn entries(indexes: std::ops::RangeInclusive<u64>, term: u64) -> Vec<LogEntry> {
    indexes
        .map(|index| LogEntry {
            index,
            term,
            kind: EntryKind::Config,
            data: vec![0, 255, index as u8],
        })
        .collect()
}

/// A batch of entries without a hard state.
fn entries_only(indexes: std::ops::RangeInclusive<u64>, term: u64) -> AppendBatch {
    AppendBatch {
        hard_state: None,
        entries: entries(indexes, term),
    }
}

/// A store on `database` whose log holds `indexes`, all of `term`, with
/// the hard state at that term (entries may not carry a term above it).
async fn store_with_log(
    database: &TestDatabase,
    indexes: std::ops::RangeInclusive<u64>,
    term: u64,
) -> PgStore {
    let mut store = PgStore::open(database.store_config("cluster", 1))
        .await
        .unwrap();
    store
        .append(AppendBatch {
            hard_state: Some(HardState {
                term,
                voted_for: None,
            }),
            entries: entries(indexes, term),
        })
        .await
        .unwrap();
    store
}

/// Runs `sql` in `apply`'s transaction, then commits it at `applied`.
/// Terminates the backends of the sessions named `application_name`;
/// returns how many.
async fn terminate(admin: &tokio_postgres::Client, application_name: &str) -> i64 {
    admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE application_name = $1",
            &[&application_name],
        )
        .await
        .unwrap()
        .get(0)
}

async fn change_and_commit(
    apply: ApplyTransaction<'_>,
    sql: &str,
    applied: AppliedState,
) -> Result<(), StoreError> {
    apply.transaction().execute(sql, &[]).await.unwrap();
    apply.commit(applied).await
}

#[tokio::test]
async fn state_survives_reopen() {
    let database = TestDatabase::create().await.unwrap();
    let mut store = PgStore::open(database.store_config("cluster", 3))
        .await
        .unwrap();
    store
        .append(AppendBatch {
            hard_state: Some(HardState {
                term: 5,
                voted_for: Some(2),
            }),
            entries: entries(1..=8, 5),
        })
        .await
        .unwrap();
    store.compact(2, 5).await.unwrap();
    store
        .save_applied(AppliedState { index: 4, term: 5 })
        .await
        .unwrap();
    let before = store.load().await.unwrap();
    store.close().await;
    let mut reopened = PgStore::open(database.store_config("cluster", 3))
        .await
        .unwrap();
    let after = reopened.load().await.unwrap();
    assert_eq!(after, before);
    assert_eq!(after.snapshot, SnapshotMeta { index: 2, term: 5 });
    assert_eq!(after.entries, entries(3..=8, 5));
    assert_eq!(after.applied, AppliedState { index: 4, term: 5 });
    reopened.close().await;
}

#[tokio::test]
async fn state_machine_changes_commit_with_the_applied_index() {
    let database = TestDatabase::create().await.unwrap();
    let mut store = store_with_log(&database, 1..=3, 1).await;
    let apply = store.begin_apply(ApplyOptions::default()).await.unwrap();
    apply
        .transaction()
        .batch_execute(
            "CREATE TABLE kv (key text PRIMARY KEY, value text); INSERT INTO kv VALUES ('a', '1')",
        )
        .await
        .unwrap();
    apply
        .commit(AppliedState { index: 2, term: 1 })
        .await
        .unwrap();

    // A replayed (stale) apply is refused and its changes roll back.
    let apply = store
        .begin_apply(ApplyOptions {
            synchronous_commit_off: true,
            ..ApplyOptions::default()
        })
        .await
        .unwrap();
    let setting: String = apply
        .transaction()
        .query_one("SHOW synchronous_commit", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(setting, "off");
    let error = change_and_commit(
        apply,
        "INSERT INTO kv VALUES ('b', '2')",
        AppliedState { index: 2, term: 1 },
    )
    .await
    .unwrap_err();
    assert!(matches!(error, StoreError::Regression { .. }), "{error}");

    // The next apply, with synchronous_commit off, commits.
    let apply = store
        .begin_apply(ApplyOptions {
            synchronous_commit_off: true,
            ..ApplyOptions::default()
        })
        .await
        .unwrap();
    change_and_commit(
        apply,
        "INSERT INTO kv VALUES ('c', '3')",
        AppliedState { index: 3, term: 1 },
    )
    .await
    .unwrap();

    // Rolled back explicitly: nothing changes.
    let apply = store.begin_apply(ApplyOptions::default()).await.unwrap();
    apply
        .transaction()
        .execute("INSERT INTO kv VALUES ('d', '4')", &[])
        .await
        .unwrap();
    apply.rollback().await.unwrap();

    let client = database.client().await.unwrap();
    let keys: Vec<String> = client
        .query("SELECT key FROM kv ORDER BY key", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(keys, ["a", "c"]);
    assert_eq!(
        store.load().await.unwrap().applied,
        AppliedState { index: 3, term: 1 }
    );
    store.close().await;
}

/// One transaction per batch: the log append and the state machine's
/// changes commit together, or neither does.
#[tokio::test]
async fn an_append_commits_with_the_apply_in_one_transaction() {
    let database = TestDatabase::create().await.unwrap();
    let mut store = PgStore::open(database.store_config("cluster", 1))
        .await
        .unwrap();
    let term_1 = Some(HardState {
        term: 1,
        voted_for: Some(1),
    });
    store
        .append(AppendBatch {
            hard_state: term_1,
            entries: entries(1..=2, 1),
        })
        .await
        .unwrap();
    database
        .client()
        .await
        .unwrap()
        .batch_execute("CREATE TABLE kv (key text PRIMARY KEY)")
        .await
        .unwrap();

    // Entries 3..=4 are appended while entries 1..=2 are applied.
    let mut transaction = store.begin_apply(ApplyOptions::default()).await.unwrap();
    let batch = AppendBatch {
        hard_state: Some(HardState {
            term: 2,
            voted_for: None,
        }),
        entries: entries(3..=4, 2),
    };
    transaction.append(&batch).await.unwrap();
    let twice = transaction.append(&batch).await.unwrap_err();
    assert!(matches!(twice, StoreError::InvalidBatch { .. }), "{twice}");
    change_and_commit(
        transaction,
        "INSERT INTO kv VALUES ('a')",
        AppliedState { index: 2, term: 1 },
    )
    .await
    .unwrap();
    let loaded = store.load().await.unwrap();
    assert_eq!(loaded.entries.last().map(|entry| entry.index), Some(4));
    assert_eq!(loaded.hard_state.term, 2);
    assert_eq!(loaded.applied, AppliedState { index: 2, term: 1 });

    // The cached bounds moved with the commit: the next append follows 4.
    store.append(entries_only(5..=5, 2)).await.unwrap();

    // A refused apply takes the append down with it.
    let mut transaction = store.begin_apply(ApplyOptions::default()).await.unwrap();
    transaction.append(&entries_only(6..=7, 2)).await.unwrap();
    let stale = change_and_commit(
        transaction,
        "INSERT INTO kv VALUES ('b')",
        AppliedState { index: 2, term: 1 },
    )
    .await
    .unwrap_err();
    assert!(matches!(stale, StoreError::Regression { .. }), "{stale}");
    let loaded = store.load().await.unwrap();
    assert_eq!(loaded.entries.last().map(|entry| entry.index), Some(5));
    let keys: i64 = database
        .client()
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM kv", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(keys, 1, "the refused transaction's row is gone");

    // An append that breaks the log's rules is refused before anything
    // is written, exactly as a plain append is.
    let mut transaction = store.begin_apply(ApplyOptions::default()).await.unwrap();
    let gap = transaction
        .append(&entries_only(9..=9, 2))
        .await
        .unwrap_err();
    assert!(matches!(gap, StoreError::InvalidBatch { .. }), "{gap}");
    transaction.rollback().await.unwrap();

    // Committing without moving the applied index keeps the append.
    let mut transaction = store.begin_apply(ApplyOptions::default()).await.unwrap();
    transaction.append(&entries_only(6..=6, 2)).await.unwrap();
    transaction.commit_unchanged().await.unwrap();
    let loaded = store.load().await.unwrap();
    assert_eq!(loaded.entries.last().map(|entry| entry.index), Some(6));
    assert_eq!(loaded.applied, AppliedState { index: 2, term: 1 });

    // The append may also be sent with the transaction's first statements.
    let transaction = store
        .begin_apply_appending(ApplyOptions::default(), &entries_only(7..=8, 2))
        .await
        .unwrap();
    change_and_commit(
        transaction,
        "INSERT INTO kv VALUES ('c')",
        AppliedState { index: 4, term: 2 },
    )
    .await
    .unwrap();
    let loaded = store.load().await.unwrap();
    assert_eq!(loaded.entries.last().map(|entry| entry.index), Some(8));
    assert_eq!(loaded.applied, AppliedState { index: 4, term: 2 });
    // ...and is refused there exactly as anywhere: an entry whose term is
    // above the hard state's is refused before anything is written.
    let refused = store
        .begin_apply_appending(ApplyOptions::default(), &entries_only(9..=9, 3))
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(refused, StoreError::AppendRefused { .. }),
        "{refused}"
    );
    let loaded = store.load().await.unwrap();
    assert_eq!(loaded.entries.last().map(|entry| entry.index), Some(8));
    store.close().await;
}

#[tokio::test]
async fn the_applier_connection_cannot_append() {
    let database = TestDatabase::create().await.unwrap();
    let store = store_with_log(&database, 1..=1, 1).await;
    let mut applier = PgApplier::open(database.store_config("cluster", 1))
        .await
        .unwrap();
    let mut transaction = applier.begin_apply(ApplyOptions::default()).await.unwrap();
    let error = transaction
        .append(&entries_only(2..=2, 1))
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::InvalidConfig { .. }), "{error}");
    transaction.rollback().await.unwrap();
    applier.close().await;
    store.close().await;
}

/// An apply that names its applied position as it begins records it with
/// its first statements; the SQL guard still refuses a regression the
/// cached bounds could not see, and a transaction that moved the position
/// cannot commit as unchanged.
#[tokio::test]
async fn the_applied_position_rides_the_first_statements() {
    let database = TestDatabase::create().await.unwrap();
    let mut store = store_with_log(&database, 1..=4, 1).await;
    let through = |index| ApplyOptions {
        applying_through: Some(AppliedState { index, term: 1 }),
        ..ApplyOptions::default()
    };
    let client = database.client().await.unwrap();
    let stored_applied = || async {
        client
            .query_one("SELECT applied_index FROM raftgres_applied", &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    client
        .batch_execute("CREATE TABLE kv (key text PRIMARY KEY)")
        .await
        .unwrap();

    let apply = store.begin_apply(through(2)).await.unwrap();
    assert_eq!(apply.applied_before().index, 0, "read before the update");
    change_and_commit(
        apply,
        "INSERT INTO kv VALUES ('a')",
        AppliedState { index: 2, term: 1 },
    )
    .await
    .unwrap();
    assert_eq!(stored_applied().await, 2);

    // The applier moves the position to 3 behind the store's cache.
    let mut applier = PgApplier::open(database.store_config("cluster", 1))
        .await
        .unwrap();
    let apply = applier.begin_apply(through(3)).await.unwrap();
    apply
        .commit(AppliedState { index: 3, term: 1 })
        .await
        .unwrap();
    applier.close().await;
    let apply = store.begin_apply(through(3)).await.unwrap();
    assert_eq!(apply.applied_before().index, 3);
    let error = change_and_commit(
        apply,
        "INSERT INTO kv VALUES ('b')",
        AppliedState { index: 3, term: 1 },
    )
    .await
    .unwrap_err();
    assert!(matches!(error, StoreError::Regression { .. }), "{error}");

    let apply = store.begin_apply(through(4)).await.unwrap();
    let error = apply.commit_unchanged().await.unwrap_err();
    assert!(matches!(error, StoreError::InvalidBatch { .. }), "{error}");
    assert_eq!(stored_applied().await, 3, "the recorded move rolled back");

    // After the refusals, the same position commits.
    let apply = store.begin_apply(through(4)).await.unwrap();
    apply
        .commit(AppliedState { index: 4, term: 1 })
        .await
        .unwrap();
    assert_eq!(stored_applied().await, 4);
    let keys: Vec<String> = client
        .query("SELECT key FROM kv ORDER BY key", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(keys, ["a"], "the refused apply's row rolled back");
    store.close().await;
}

#[tokio::test]
async fn snapshot_restore_commits_with_the_snapshot_marker() {
    let database = TestDatabase::create().await.unwrap();
    let mut store = store_with_log(&database, 1..=4, 1).await;
    let apply = store
        .begin_apply(ApplyOptions {
            synchronous_commit_off: true,
            ..ApplyOptions::default()
        })
        .await
        .unwrap();
    apply
        .transaction()
        .batch_execute("CREATE TABLE restored (id int); INSERT INTO restored VALUES (42)")
        .await
        .unwrap();
    let meta = SnapshotMeta { index: 9, term: 2 };
    apply
        .commit_snapshot(meta, Some(b"leader's membership"))
        .await
        .unwrap();
    store.close().await;

    let mut store = PgStore::open(database.store_config("cluster", 1))
        .await
        .unwrap();
    let loaded = store.load().await.unwrap();
    assert_eq!(loaded.snapshot, meta);
    assert_eq!(
        store.load_membership().await.unwrap().as_deref(),
        Some(&b"leader's membership"[..]),
        "the installed snapshot's membership is stored with it"
    );
    assert!(loaded.entries.is_empty());
    assert_eq!(loaded.applied, AppliedState { index: 9, term: 2 });
    let restored: i32 = database
        .client()
        .await
        .unwrap()
        .query_one("SELECT id FROM restored", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(restored, 42);
    store.close().await;
}

#[tokio::test]
async fn database_guards_refuse_what_the_store_would_refuse() {
    let database = TestDatabase::create().await.unwrap();
    let mut store = PgStore::open(database.store_config("cluster", 1))
        .await
        .unwrap();
    store
        .append(AppendBatch {
            hard_state: Some(HardState {
                term: 3,
                voted_for: Some(2),
            }),
            entries: entries(1..=2, 3),
        })
        .await
        .unwrap();
    store.close().await;
    let client = database.client().await.unwrap();
    for (what, sql) in [
        ("term decrease", "UPDATE raftgres_hard_state SET term = 2"),
        (
            "vote change",
            "UPDATE raftgres_hard_state SET voted_for = 3",
        ),
        (
            "vote removal",
            "UPDATE raftgres_hard_state SET voted_for = NULL",
        ),
    ] {
        let error = client.batch_execute(sql).await.unwrap_err();
        assert_eq!(
            error.code().map(|code| code.code()),
            Some("RG002"),
            "{what}: {error}"
        );
    }
    client
        .batch_execute("UPDATE raftgres_hard_state SET term = 4, voted_for = NULL")
        .await
        .unwrap();
    for first_index in [1_i64, 2, 4] {
        let error = client
            .execute("SELECT raftgres_check_append($1)", &[&first_index])
            .await
            .unwrap_err();
        assert_eq!(
            error.code().map(|code| code.code()),
            Some("RG001"),
            "{first_index}: {error}"
        );
    }
    client
        .execute("SELECT raftgres_check_append(3)", &[])
        .await
        .unwrap();
    let duplicate = client
        .batch_execute("INSERT INTO raftgres_log VALUES (2, 3, 2, ''::bytea)")
        .await;
    assert!(duplicate.is_err(), "duplicate index accepted");
    let bad_kind = client
        .batch_execute("INSERT INTO raftgres_log VALUES (3, 3, 9, ''::bytea)")
        .await;
    assert!(bad_kind.is_err(), "unknown kind accepted");
}

#[tokio::test]
async fn store_reconnects_after_its_connection_is_killed() {
    let database = TestDatabase::create().await.unwrap();
    let mut store = PgStore::open(database.store_config("cluster", 6))
        .await
        .unwrap();
    store
        .append(AppendBatch {
            // Entries may not carry a term above the stored hard state's.
            hard_state: Some(HardState {
                term: 1,
                voted_for: None,
            }),
            entries: entries(1..=2, 1),
        })
        .await
        .unwrap();
    let admin = database.client().await.unwrap();
    assert_eq!(terminate(&admin, "raftgres-node-6").await, 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The first operation either reports the loss (retriable) or has
    // already reconnected; a bounded number of retries must succeed.
    let mut failures = 0;
    loop {
        match store
            .append(AppendBatch {
                hard_state: None,
                entries: entries(3..=4, 1),
            })
            .await
        {
            Ok(()) => break,
            Err(error) => {
                assert!(error.is_retriable(), "{error}");
                failures += 1;
                assert!(failures < 5, "store does not reconnect: {error}");
            }
        }
    }
    assert_eq!(store.load().await.unwrap().entries, entries(1..=4, 1));
    // The new session holds the fencing lock again.
    assert!(matches!(
        PgStore::open(database.store_config("cluster", 6)).await,
        Err(StoreError::Locked { .. })
    ));
    store.close().await;
}

/// An applier begins its next transaction before the batch is known: the
/// wait holds no lock (a snapshot install on the log connection goes on),
/// the batch then applies in it, an unused one ends, and one whose backend
/// died while it waited fails retriably and the next begins anew.
#[tokio::test]
async fn an_apply_begun_ahead_holds_nothing_and_survives_its_connection() {
    let database = TestDatabase::create().await.unwrap();
    let mut store = store_with_log(&database, 1..=3, 1).await;
    let admin = database.client().await.unwrap();
    admin
        .batch_execute("CREATE TABLE kv (key text PRIMARY KEY)")
        .await
        .unwrap();
    let applier_state = || async {
        admin
            .query_one(
                "SELECT state FROM pg_stat_activity WHERE application_name = 'raftgres-node-1-apply'",
                &[],
            )
            .await
            .unwrap()
            .get::<_, String>(0)
    };
    let through = |index| ApplyOptions {
        applying_through: Some(AppliedState { index, term: 1 }),
        ..ApplyOptions::default()
    };
    let mut applier = PgApplier::open(database.store_config("cluster", 1))
        .await
        .unwrap();

    let begun = applier.begin_ahead().await.unwrap();
    assert_eq!(applier_state().await, "idle in transaction");
    // Meanwhile the log connection applies and commits: nothing waits on
    // the begun transaction.
    let apply = store.begin_apply(through(1)).await.unwrap();
    change_and_commit(
        apply,
        "INSERT INTO kv VALUES ('a')",
        AppliedState { index: 1, term: 1 },
    )
    .await
    .unwrap();
    // The batch applies in it and sees what committed before.
    let apply = begun.open(through(2)).start().await.unwrap();
    assert_eq!(apply.applied_before().index, 1);
    change_and_commit(
        apply,
        "INSERT INTO kv VALUES ('b')",
        AppliedState { index: 2, term: 1 },
    )
    .await
    .unwrap();
    assert_eq!(applier_state().await, "idle");

    let begun = applier.begin_ahead().await.unwrap();
    begun.release().await.unwrap();
    assert_eq!(applier_state().await, "idle", "released");

    let begun = applier.begin_ahead().await.unwrap();
    assert_eq!(terminate(&admin, "raftgres-node-1-apply").await, 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let Err(error) = begun.open(through(3)).start().await else {
        panic!("a transaction whose backend died applied");
    };
    assert!(error.is_retriable(), "{error}");
    let apply = applier.begin_apply(through(3)).await.unwrap();
    assert_eq!(apply.applied_before().index, 2);
    change_and_commit(
        apply,
        "INSERT INTO kv VALUES ('c')",
        AppliedState { index: 3, term: 1 },
    )
    .await
    .unwrap();
    let keys: Vec<String> = admin
        .query("SELECT key FROM kv ORDER BY key", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(keys, ["a", "b", "c"]);
    applier.close().await;
    store.close().await;
}

#[tokio::test]
async fn applier_applies_on_its_own_fenced_connection() {
    let database = TestDatabase::create().await.unwrap();
    let mut store = PgStore::open(database.store_config("cluster", 2))
        .await
        .unwrap();
    store
        .append(AppendBatch {
            // Entries may not carry a term above the stored hard state's.
            hard_state: Some(HardState {
                term: 1,
                voted_for: None,
            }),
            entries: entries(1..=4, 1),
        })
        .await
        .unwrap();
    let error = PgApplier::open(database.store_config("other", 2))
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::IdentityMismatch { .. }),
        "{error}"
    );
    let mut applier = PgApplier::open(database.store_config("cluster", 2))
        .await
        .unwrap();
    let error = PgApplier::open(database.store_config("cluster", 2))
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Locked { .. }), "{error}");

    let apply = applier.begin_apply(ApplyOptions::default()).await.unwrap();
    assert_eq!(apply.applied_before(), AppliedState::default());
    apply
        .transaction()
        .batch_execute("CREATE TABLE counter (n int); INSERT INTO counter VALUES (1)")
        .await
        .unwrap();
    apply
        .commit(AppliedState { index: 2, term: 1 })
        .await
        .unwrap();

    // The store's connection sees the applier's commit, and the applier
    // sees an applied position moved by the store's connection.
    assert_eq!(
        store.load().await.unwrap().applied,
        AppliedState { index: 2, term: 1 }
    );
    store
        .save_applied(AppliedState { index: 3, term: 1 })
        .await
        .unwrap();
    let apply = applier
        .begin_apply(ApplyOptions {
            synchronous_commit_off: true,
            ..ApplyOptions::default()
        })
        .await
        .unwrap();
    assert_eq!(apply.applied_before(), AppliedState { index: 3, term: 1 });
    let error = apply
        .commit_snapshot(SnapshotMeta { index: 4, term: 1 }, None)
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::InvalidConfig { .. }), "{error}");

    let error = StoreError::from_postgres(
        "probe",
        database
            .client()
            .await
            .unwrap()
            .batch_execute("SELECT * FROM missing_table")
            .await
            .unwrap_err(),
    );
    assert!(
        matches!(error, StoreError::Database { .. }) && !error.is_retriable(),
        "{error}"
    );
    applier.close().await;
    store.close().await;
}

/// What a raw append names: what it tries, its `(index, term)` entries and
/// the hard state term it saves, if any.
type RawAppend = (&'static str, &'static [(i64, i64)], Option<i64>);

/// `SELECT raftgres_append(...)` with the given entries, as the store sends
/// it; the entries are `(index, term)` with kind Command and empty data.
async fn raw_append(
    client: &tokio_postgres::Client,
    entries: &[(i64, i64)],
    hard_state_term: Option<i64>,
) -> Result<i64, tokio_postgres::Error> {
    let indexes: Vec<i64> = entries.iter().map(|(index, _)| *index).collect();
    let terms: Vec<i64> = entries.iter().map(|(_, term)| *term).collect();
    let kinds: Vec<i16> = vec![EntryKind::Command.to_code(); entries.len()];
    let data: Vec<Vec<u8>> = vec![Vec::new(); entries.len()];
    let voted_for: Option<i64> = None;
    client
        .query_one(
            "SELECT raftgres_append($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &indexes.first().copied(),
                &indexes,
                &terms,
                &kinds,
                &data,
                &hard_state_term.is_some(),
                &hard_state_term.unwrap_or(0),
                &voted_for,
            ],
        )
        .await
        .map(|row| row.get(0))
}

/// The log as `(index, term)` pairs and the stored term, read directly.
async fn raw_state(client: &tokio_postgres::Client) -> (Vec<(i64, i64)>, i64) {
    let log = client
        .query(
            "SELECT log_index, term FROM raftgres_log ORDER BY log_index",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let term = client
        .query_one("SELECT term FROM raftgres_hard_state", &[])
        .await
        .unwrap()
        .get(0);
    (log, term)
}

#[tokio::test]
async fn the_database_itself_refuses_appends_that_would_damage_the_log() {
    let database = TestDatabase::create().await.unwrap();
    let mut store = store_with_log(&database, 1..=4, 2).await;
    store
        .save_applied(AppliedState { index: 2, term: 2 })
        .await
        .unwrap();
    store.close().await;
    let client = database.client().await.unwrap();
    let before = raw_state(&client).await;
    let refused: [RawAppend; 4] = [
        ("term above the stored term", &[(5, 3)], None),
        ("term above the new hard state term", &[(5, 4)], Some(3)),
        ("ends below the applied index", &[(1, 2)], None),
        ("changes an applied entry", &[(2, 2), (3, 2)], None),
    ];
    for (what, entries, hard_state_term) in refused {
        let error = raw_append(&client, entries, hard_state_term)
            .await
            .unwrap_err();
        assert_eq!(
            error.code().map(|code| code.code()),
            Some("RG003"),
            "{what}: {error}"
        );
        assert_eq!(raw_state(&client).await, before, "{what} changed something");
    }
    assert_eq!(raw_append(&client, &[(5, 3)], Some(3)).await.unwrap(), 1);
}

#[tokio::test]
async fn a_version_1_database_gets_the_guarded_append_function() {
    let database = TestDatabase::create().await.unwrap();
    PgStore::open(database.store_config("cluster", 1))
        .await
        .unwrap()
        .close()
        .await;
    // Make the database look as version 1 left it: an append function
    // without the guards, no membership column, no snapshot staging, and
    // no record of the later versions.
    let client = database.client().await.unwrap();
    client
        .batch_execute(
            "DELETE FROM raftgres_schema_version WHERE version > 1;
             ALTER TABLE raftgres_snapshot DROP COLUMN membership;
             DROP TABLE raftgres_snapshot_staged, raftgres_snapshot_chunks;
             CREATE OR REPLACE FUNCTION raftgres_append(
                 first_index bigint, indexes bigint[], terms bigint[], kinds smallint[],
                 data bytea[], save_hard_state boolean, hard_state_term bigint,
                 hard_state_voted_for bigint
             ) RETURNS bigint LANGUAGE sql AS 'SELECT 0::bigint';",
        )
        .await
        .unwrap();
    let store = PgStore::open(database.store_config("cluster", 1))
        .await
        .unwrap();
    store.close().await;
    let version: i32 = client
        .query_one("SELECT max(version) FROM raftgres_schema_version", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, raftgres_storage_pg::SCHEMA_VERSION_SUPPORTED);
    let error = raw_append(&client, &[(1, 1)], None).await.unwrap_err();
    assert_eq!(
        error.code().map(|code| code.code()),
        Some("RG003"),
        "{error}"
    );
}

/// Proves that the node's compaction never passes the stored applied
/// index (a Postgres crash may have lost asynchronous applies that the
/// snapshot being compacted to was taken from: the log must keep the
/// entries that replay them), and that it compacts once the applied
/// index is stored there.
#[tokio::test]
async fn compaction_waits_for_the_stored_applied_index() {
    let database = TestDatabase::create().await.unwrap();
    let mut store = PgStore::open(database.store_config("cluster", 1))
        .await
        .unwrap();
    store
        .append(AppendBatch {
            hard_state: Some(HardState {
                term: 2,
                voted_for: Some(1),
            }),
            entries: entries(1..=6, 2),
        })
        .await
        .unwrap();
    store
        .save_applied(AppliedState { index: 3, term: 2 })
        .await
        .unwrap();
    assert_eq!(store.load_membership().await.unwrap(), None);
    assert_eq!(
        store.bootstrap_membership(b"first").await.unwrap(),
        b"first".to_vec()
    );
    assert_eq!(
        store.bootstrap_membership(b"second").await.unwrap(),
        b"first".to_vec(),
        "a bootstrap membership is stored once"
    );
    assert!(
        !store.compact_applied(5, 2, b"at 5").await.unwrap(),
        "compacted past the applied index"
    );
    let kept = store.load().await.unwrap();
    assert_eq!(kept.snapshot, SnapshotMeta::default());
    assert_eq!(kept.entries, entries(1..=6, 2));
    assert_eq!(
        store.load_membership().await.unwrap().as_deref(),
        Some(&b"first"[..]),
        "a refused compaction leaves the membership"
    );
    assert!(store.compact_applied(3, 2, b"at 3").await.unwrap());
    store
        .save_applied(AppliedState { index: 5, term: 2 })
        .await
        .unwrap();
    assert!(store.compact_applied(5, 2, b"at 5").await.unwrap());
    let compacted = store.load().await.unwrap();
    assert_eq!(compacted.snapshot, SnapshotMeta { index: 5, term: 2 });
    assert_eq!(compacted.entries, entries(6..=6, 2));
    assert_eq!(
        store.load_membership().await.unwrap().as_deref(),
        Some(&b"at 5"[..]),
        "the compaction stores the membership at its point"
    );
    store.close().await;
}
