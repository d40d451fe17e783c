//! The KV state machine's tables on a real Postgres, against a database
//! written before the KV kept revisions: one with rows is refused with an
//! error that says what to do and keeps every row; an empty one is replaced
//! by the tables of revisions; creating the tables twice changes nothing.

use raftgres::server::{KvStateMachine, StateMachine};
use raftgres_devcluster::testing::TestDatabase;

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
