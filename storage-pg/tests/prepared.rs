//! The statement cache on a real Postgres: a statement is prepared on its
//! first use only, and a cache stops keeping statements at its bound.

use raftgres_devcluster::testing::TestDatabase;
use raftgres_storage_pg::{Prepared, StatementCache, CACHED_STATEMENTS_MAX};
use tokio_postgres::types::Type;
use tokio_postgres::GenericClient;

/// How many statements the server holds prepared for this session.
async fn prepared_on_server(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one("SELECT count(*) FROM pg_prepared_statements", &[])
        .await
        .expect("the prepared statements")
        .get(0)
}

/// What `sql`, one bigint parameter, answers for `n` through `prepared`.
async fn answer<C: GenericClient + Sync>(
    prepared: &Prepared<'_, C>,
    sql: &'static str,
    n: i64,
) -> i64 {
    let rows = prepared
        .query_prepared(sql, &[Type::INT8], &[&n])
        .await
        .expect("an answer");
    rows[0].get(0)
}

/// Proves that the second use of a statement reuses the statement the
/// first prepared (the server holds one), that it answers, and that a
/// transaction on the same connection uses the same cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_is_prepared_once_per_connection() {
    let database = TestDatabase::create().await.expect("a test database");
    let mut client = database.client().await.expect("a client");
    let cache = StatementCache::new();
    let sql = "SELECT $1::bigint + 1";
    let before = prepared_on_server(&client).await;
    for n in 0..3_i64 {
        assert_eq!(answer(&cache.with(&client), sql, n).await, n + 1);
    }
    assert_eq!(prepared_on_server(&client).await, before + 1);
    assert_eq!(cache.len(), 1);
    let transaction = client.transaction().await.expect("a transaction");
    assert_eq!(answer(&cache.with(&transaction), sql, 41).await, 42);
    transaction.commit().await.expect("committed");
    assert_eq!(prepared_on_server(&client).await, before + 1);
}

/// Proves that a cache keeps at most [`CACHED_STATEMENTS_MAX`] statements
/// (a caller that builds SQL at run time cannot grow the session's
/// prepared statements without bound) and still answers past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_keeps_at_most_its_bound_of_statements() {
    let database = TestDatabase::create().await.expect("a test database");
    let client = database.client().await.expect("a client");
    let cache = StatementCache::new();
    let statements: Vec<&'static str> = (0..CACHED_STATEMENTS_MAX + 5)
        .map(|n| &*Box::leak(format!("SELECT {n}::bigint").into_boxed_str()))
        .collect();
    for (n, sql) in statements.iter().enumerate() {
        let rows = cache
            .with(&client)
            .query_prepared(sql, &[], &[])
            .await
            .expect("an answer");
        assert_eq!(rows[0].get::<_, i64>(0), n as i64);
    }
    assert_eq!(cache.len(), CACHED_STATEMENTS_MAX);
}
