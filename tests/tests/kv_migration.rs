//! The KV state machine's tables on a real Postgres, against a database
//! written before the KV kept revisions: one with rows is refused with an
//! error that says what to do and keeps every row; an empty one is replaced
//! by the tables of revisions; creating the tables twice changes nothing.
//! And the statements an applier sends on every batch stay index probes
//! when the table has grown since the connection planned them; a read of
//! the current revision reads no history; a history from before its
//! changes pointed at the versions they replaced is linked once.

use raftgres::mvcc::{KeyRange, RangeRequest};
use raftgres::server::{KvStateMachine, StateMachine};
use raftgres_devcluster::testing::TestDatabase;
use raftgres_storage_pg::StatementCache;

/// The table before revisions.
const OLD_KV_TABLE: &str = "CREATE TABLE raftgres_kv (
    key bytea PRIMARY KEY,
    value bytea NOT NULL,
    mod_index bigint NOT NULL CHECK (mod_index > 0))";

/// Proves that a KV table written before revisions is refused while it
/// holds rows (their revisions could not be made up alike on every
/// replica), keeping them, and replaced while it is empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kv_table_from_before_revisions_is_refused_with_its_rows_kept() {
    let database = TestDatabase::create().await.expect("a test database");
    let client = database.client().await.expect("a client");
    client
        .batch_execute(OLD_KV_TABLE)
        .await
        .expect("the old table");
    client
        .execute(
            "INSERT INTO raftgres_kv (key, value, mod_index) VALUES ('k', 'v', 7)",
            &[],
        )
        .await
        .expect("an old row");
    let refused = KvStateMachine
        .migrate(&client)
        .await
        .expect_err("a table with rows from before revisions is refused");
    let reason = format!("{refused:?}");
    assert!(
        reason.contains("before the KV kept revisions") && reason.contains("empty database"),
        "the error does not say what is wrong and what to do: {reason}"
    );
    let kept: i64 = client
        .query_one("SELECT count(*) FROM raftgres_kv WHERE mod_index = 7", &[])
        .await
        .expect("the old table is still there")
        .get(0);
    assert_eq!(kept, 1, "the refusal lost the row");

    client
        .batch_execute("DELETE FROM raftgres_kv")
        .await
        .expect("emptied");
    KvStateMachine
        .migrate(&client)
        .await
        .expect("an empty old table is replaced");
    KvStateMachine
        .migrate(&client)
        .await
        .expect("creating the tables again changes nothing");
    let revision: i64 = client
        .query_one("SELECT revision FROM raftgres_kv_revision", &[])
        .await
        .expect("the revision row")
        .get(0);
    assert_eq!(revision, 1, "a new store is at revision 1");
    let columns: i64 = client
        .query_one(
            "SELECT count(*) FROM information_schema.columns
             WHERE table_name = 'raftgres_kv' AND column_name = 'mod_revision'",
            &[],
        )
        .await
        .expect("the columns")
        .get(0);
    assert_eq!(columns, 1, "the table of revisions replaced the old one");
}

/// The KV functions an applier calls on every batch, each on one key, as
/// `(name, statement)`.
const BATCH_STATEMENTS: &[(&str, &str)] = &[
    (
        "raftgres_kv_put_batch",
        "SELECT count(*) FROM raftgres_kv_put_batch(
             ARRAY['key-1'::bytea], ARRAY['value'::bytea], ARRAY[1::bigint], ARRAY[1::bigint],
             ARRAY[1::bigint], ARRAY[0::bigint], ARRAY[true])",
    ),
    (
        "raftgres_kv_prefetch",
        "SELECT count(*) FROM raftgres_kv_prefetch(
             ARRAY['key-1'::bytea], ARRAY['key-1'::bytea || '\\x00'::bytea], NULL, '{}', '{}')",
    ),
    (
        "raftgres_kv_write",
        "SELECT raftgres_kv_write(ARRAY['key-1'::bytea],
             '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}',
             '{}', (SELECT revision FROM raftgres_kv_revision), 0, 0, '{}', '{}', '{}')",
    ),
    (
        "raftgres_kv_write compacting",
        "SELECT raftgres_kv_write('{}',
             '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}',
             '{}', (SELECT revision FROM raftgres_kv_revision),
             (SELECT revision FROM raftgres_kv_revision), 0, '{}', '{}', '{}')",
    ),
];

/// A new test database with the KV tables, and a client of it (the
/// database lives as long as the first).
async fn kv_tables() -> (TestDatabase, tokio_postgres::Client) {
    let database = TestDatabase::create().await.expect("a test database");
    let client = database.client().await.expect("a client");
    KvStateMachine
        .migrate(&client)
        .await
        .expect("the KV tables");
    (database, client)
}

/// Rows the table grows to after the statements were first planned.
const ROWS_GROWN: i64 = 20_000;

/// Proves that each per-batch KV function reads only the keys it is given
/// (and a compaction only the history it drops) once the tables have
/// grown, on a connection that first ran it while they were empty, as an
/// applier's does on a new node. Postgres keeps a function's plans for the
/// connection's life; a plan that chose to scan the whole small table kept
/// scanning it when it held the cluster's keys (a put batch hashed every
/// row of the table: a seventh of a loaded cluster's CPU).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_batch_statements_probe_the_index_after_the_table_grew() {
    let (_database, mut client) = kv_tables().await;
    // More calls than Postgres' five custom plans before it settles on a
    // generic one.
    for (_, statement) in BATCH_STATEMENTS {
        for _ in 0..8 {
            client
                .batch_execute(statement)
                .await
                .expect("a call on the empty table");
        }
    }
    client
        .execute(
            "INSERT INTO raftgres_kv
                 (key, value, mod_index, create_revision, mod_revision, version, lease)
             SELECT ('key-' || n)::bytea, 'value', 1, 1, 1, 1, 0
             FROM generate_series(2, $1::bigint) AS n",
            &[&ROWS_GROWN],
        )
        .await
        .expect("the table grows");
    client
        .execute(
            "INSERT INTO raftgres_kv_history
                 (revision, sub, key, value, create_revision, version, lease, prev_revision)
             SELECT 1000 + n, 0, ('key-' || n)::bytea, 'value', 1000 + n, 1, 0, 0
             FROM generate_series(2, $1::bigint) AS n",
            &[&ROWS_GROWN],
        )
        .await
        .expect("the history grows");
    for (name, statement) in BATCH_STATEMENTS {
        // This transaction's own counts, read before and after the call.
        let transaction = client.transaction().await.expect("a transaction");
        let read = "SELECT coalesce(sum(seq_tup_read), 0)::bigint
                    FROM pg_stat_xact_user_tables
                    WHERE relname IN ('raftgres_kv', 'raftgres_kv_history')";
        let before: i64 = transaction
            .query_one(read, &[])
            .await
            .expect("counts")
            .get(0);
        transaction
            .batch_execute(statement)
            .await
            .expect("a call on the grown table");
        let after: i64 = transaction
            .query_one(read, &[])
            .await
            .expect("counts")
            .get(0);
        transaction.rollback().await.expect("rolled back");
        assert_eq!(
            after - before,
            0,
            "{name} scanned {} rows of raftgres_kv and its history for one key",
            after - before
        );
    }
}

/// Proves that a history written before its changes pointed at the
/// versions they replaced is linked when the node starts (each change at
/// the key's put before it; 0 after a delete or for a new key) and loses
/// its index by key, and that a read at a past revision then finds what
/// the key held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_from_before_the_pointers_is_linked_once() {
    let (_database, client) = kv_tables().await;
    // The history as it was: no pointers, an index by key.
    client
        .batch_execute(
            "ALTER TABLE raftgres_kv_history DROP COLUMN prev_revision;
             CREATE INDEX raftgres_kv_history_by_key ON raftgres_kv_history (key, revision);
             INSERT INTO raftgres_kv_history
                 (revision, sub, key, value, create_revision, version, lease)
             VALUES (2, 0, 'a', '2', 2, 1, 0), (3, 0, 'a', '3', 2, 2, 0),
                    (4, 0, 'a', NULL, 0, 0, 0), (4, 1, 'b', '4', 4, 1, 0),
                    (5, 0, 'a', '5', 5, 1, 0), (6, 0, 'b', '6', 4, 2, 0);
             INSERT INTO raftgres_kv
                 (key, value, mod_index, create_revision, mod_revision, version, lease)
             VALUES ('a', '5', 5, 5, 5, 1, 0), ('b', '6', 6, 4, 6, 2, 0);
             UPDATE raftgres_kv_revision SET revision = 6;
             CREATE TABLE raftgres_applied (applied_index bigint, applied_term bigint);
             INSERT INTO raftgres_applied VALUES (6, 1);",
        )
        .await
        .expect("a history from before the pointers");
    KvStateMachine
        .migrate(&client)
        .await
        .expect("the history linked");
    let pointers: Vec<(i64, i64, i64)> = client
        .query(
            "SELECT revision, sub, prev_revision FROM raftgres_kv_history ORDER BY revision, sub",
            &[],
        )
        .await
        .expect("the pointers")
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    assert_eq!(
        pointers,
        vec![
            (2, 0, 0),
            (3, 0, 2),
            (4, 0, 3),
            (4, 1, 0),
            (5, 0, 0),
            (6, 0, 4)
        ]
    );
    let indexes: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_indexes WHERE indexname = 'raftgres_kv_history_by_key'",
            &[],
        )
        .await
        .expect("the indexes")
        .get(0);
    assert_eq!(indexes, 0, "the index by key is dropped");
    let statements = StatementCache::new();
    let prepared = statements.with(&client);
    for (revision, expected) in [
        (3, vec![("a", "3")]),
        (4, vec![("b", "4")]),
        (5, vec![("a", "5"), ("b", "4")]),
    ] {
        let request = RangeRequest {
            range: KeyRange {
                key: b"a".to_vec(),
                range_end: vec![0],
            },
            revision,
            ..RangeRequest::default()
        };
        let read = KvStateMachine::read_range(&prepared, &request)
            .await
            .expect("the read")
            .expect("the tables hold revisions");
        let found: Vec<(Vec<u8>, Vec<u8>)> = read
            .answer
            .expect("a readable revision")
            .kvs
            .into_iter()
            .map(|kv| (kv.key, kv.value))
            .collect();
        let expected: Vec<(Vec<u8>, Vec<u8>)> = expected
            .into_iter()
            .map(|(key, value)| (key.as_bytes().to_vec(), value.as_bytes().to_vec()))
            .collect();
        assert_eq!(found, expected, "the keys at revision {revision}");
    }
}

/// Keys of the read test, and the changes of each.
const READ_TEST_KEYS: i64 = 500;
const CHANGES_PER_KEY: i64 = 20;
/// How many revisions back the read test reads a recent revision.
const RECENT: i64 = 10;

/// Proves that a read of the current revision reads the current row and no
/// history, however long the key's history: the statement once read every
/// change the range ever had before finding that the read was of the
/// current revision (a Get of a key cost a scan of its history, once the
/// statistics made the planner expect a few changes per key), and still
/// reads the history for a read of an earlier revision: for a recent one,
/// only the changes made since.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_of_the_current_revision_reads_no_history() {
    let (_database, mut client) = kv_tables().await;
    // Revisions 2, 3, ... write the keys k000, k001, ... in turn, each
    // value its revision; the current rows are each key's last change.
    let last = READ_TEST_KEYS * CHANGES_PER_KEY + 1;
    client
        .batch_execute(&format!(
            "INSERT INTO raftgres_kv_history
                 (revision, sub, key, value, create_revision, version, lease)
             SELECT n, 0, ('k' || lpad(((n - 2) % {keys})::text, 3, '0'))::bytea,
                    n::text::bytea, 2 + (n - 2) % {keys}, 1 + (n - 2) / {keys}, 0
             FROM generate_series(2, {last}) AS n;
             SELECT raftgres_kv_link_history();
             INSERT INTO raftgres_kv
                 (key, value, mod_index, create_revision, mod_revision, version, lease)
             SELECT DISTINCT ON (key) key, value, revision, create_revision, revision, version, 0
             FROM raftgres_kv_history ORDER BY key, revision DESC;
             UPDATE raftgres_kv_revision SET revision = {last};
             -- The log store's applied row, which the read reports.
             CREATE TABLE raftgres_applied (applied_index bigint, applied_term bigint);
             INSERT INTO raftgres_applied VALUES ({last}, 1);
             ANALYZE raftgres_kv; ANALYZE raftgres_kv_history;",
            keys = READ_TEST_KEYS,
        ))
        .await
        .expect("the tables");
    // k250 alone, the range [k250, k251) that holds only it, and every key
    // from k499 (the last) on: three statements read them. k250 was
    // written at 252, 752, ..., 9752; k499 at 501, 1001, ..., 10001.
    let single = KeyRange::single(&b"k250"[..]);
    let bounded = KeyRange {
        key: b"k250".to_vec(),
        range_end: b"k251".to_vec(),
    };
    let unbounded = KeyRange {
        key: b"k499".to_vec(),
        range_end: vec![0],
    };
    let k250_now = last - READ_TEST_KEYS + 251;
    let cases = [
        (&single, 0, k250_now),
        (&single, 1_000, 752),
        (&bounded, 0, k250_now),
        (&bounded, 1_000, 752),
        (&unbounded, 0, last),
        (&unbounded, 1_000, 501),
        (&single, last - RECENT, k250_now),
        (&bounded, last - RECENT, k250_now),
        (&unbounded, last - RECENT, last - READ_TEST_KEYS),
    ];
    for (range, revision, expected) in cases {
        let request = RangeRequest {
            range: range.clone(),
            revision,
            ..RangeRequest::default()
        };
        // This transaction's own counts, read before and after the read,
        // which runs as the node runs it: prepared once per connection, and
        // more times first than Postgres plans it for each call before it
        // settles on a plan for every call.
        let transaction = client.transaction().await.expect("a transaction");
        let statements = StatementCache::new();
        let prepared = statements.with(&transaction);
        for _ in 0..8 {
            KvStateMachine::read_range(&prepared, &request)
                .await
                .expect("an earlier read");
        }
        let counts = "SELECT coalesce(sum(seq_tup_read + coalesce(idx_tup_fetch, 0))
                          FILTER (WHERE relname = 'raftgres_kv_history'), 0)::bigint,
                             coalesce(sum(seq_tup_read + coalesce(idx_tup_fetch, 0))
                          FILTER (WHERE relname = 'raftgres_kv'), 0)::bigint
                      FROM pg_stat_xact_user_tables";
        let before = transaction.query_one(counts, &[]).await.expect("counts");
        let read = KvStateMachine::read_range(&prepared, &request)
            .await
            .expect("the read")
            .expect("the tables hold revisions");
        let after = transaction.query_one(counts, &[]).await.expect("counts");
        let history_read = after.get::<_, i64>(0) - before.get::<_, i64>(0);
        let rows_read = after.get::<_, i64>(1) - before.get::<_, i64>(1);
        transaction.rollback().await.expect("rolled back");
        let answer = read.answer.expect("a readable revision");
        let values: Vec<Vec<u8>> = answer.kvs.iter().map(|kv| kv.value.clone()).collect();
        assert_eq!(
            values,
            vec![expected.to_string().into_bytes()],
            "the value at revision {revision} read as {range:?}"
        );
        if revision == 0 {
            assert_eq!(
                history_read, 0,
                "a read of the current revision as {range:?} read {history_read} history rows"
            );
            // The key's row, found and counted (each probe may visit a
            // row version an update left), never a scan of the table.
            assert!(
                rows_read <= 4,
                "a read of one key as {range:?} read {rows_read} current rows"
            );
        } else {
            assert!(
                history_read > 0,
                "a read of revision {revision} reads the history"
            );
        }
        if revision >= last - RECENT {
            // The changes since, by the history's index: never a scan.
            assert!(
                history_read <= 2 * RECENT,
                "a read of revision {revision} as {range:?} read {history_read} history rows"
            );
        }
    }
}
