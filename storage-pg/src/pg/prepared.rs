//! Statements prepared once per connection.
//!
//! A statement sent as text (`query_typed`, or `query` with a `&str`) is
//! parsed and planned by Postgres on every call, and `query` with a `&str`
//! costs a round trip more to prepare it first. For the statements a node
//! sends on every apply or every read that is most of their cost: the
//! etcd API's range statement took about 450 us of the server's CPU as
//! text and 75 us prepared. A [`StatementCache`] belongs to one connection
//! and keeps its prepared statements for the connection's life; a new
//! connection starts with a new cache.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{GenericClient, Row, Statement};

/// More distinct statements than this are prepared anew on every call
/// instead of kept: a caller that builds its SQL at run time cannot grow
/// the connection's prepared statements without bound.
pub const CACHED_STATEMENTS_MAX: usize = 64;

/// The prepared statements of one connection, by SQL text.
#[derive(Debug, Default)]
pub struct StatementCache {
    statements: Mutex<HashMap<&'static str, Statement>>,
}

impl StatementCache {
    /// An empty cache, for a new connection.
    pub fn new() -> StatementCache {
        StatementCache::default()
    }

    /// `client` together with this cache. `client` must be the connection
    /// (or a transaction on the connection) the cache was made for: a
    /// statement prepared on one connection does not exist on another.
    pub fn with<'a, C>(&'a self, client: &'a C) -> Prepared<'a, C> {
        Prepared {
            client,
            cache: self,
        }
    }

    fn get(&self, sql: &'static str) -> Option<Statement> {
        self.lock().get(sql).cloned()
    }

    fn keep(&self, sql: &'static str, statement: &Statement) {
        let mut statements = self.lock();
        if statements.len() < CACHED_STATEMENTS_MAX {
            statements.insert(sql, statement.clone());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<&'static str, Statement>> {
        // The map is never left half-changed, so a panic elsewhere while it
        // was held does not make it wrong.
        self.statements
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How many statements are kept.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no statement is kept yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A connection or transaction with its connection's [`StatementCache`]:
/// dereferences to the client, and [`Prepared::statement`] prepares a
/// statement on its first use only.
#[derive(Debug)]
pub struct Prepared<'a, C> {
    client: &'a C,
    cache: &'a StatementCache,
}

impl<C> Clone for Prepared<'_, C> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<C> Copy for Prepared<'_, C> {}

impl<C> std::ops::Deref for Prepared<'_, C> {
    type Target = C;

    fn deref(&self) -> &C {
        self.client
    }
}

impl<C: GenericClient + Sync> Prepared<'_, C> {
    /// `sql` prepared with parameter `types`: from the cache, or prepared
    /// now (one round trip) and kept. The same `sql` must always come with
    /// the same `types`.
    pub async fn statement(
        &self,
        sql: &'static str,
        types: &[Type],
    ) -> Result<Statement, tokio_postgres::Error> {
        if let Some(statement) = self.cache.get(sql) {
            return Ok(statement);
        }
        let statement = self.client.prepare_typed(sql, types).await?;
        self.cache.keep(sql, &statement);
        Ok(statement)
    }

    /// Runs `sql` (prepared with parameter `types` by
    /// [`Prepared::statement`]) with `parameters`, and answers its rows.
    pub async fn query_prepared(
        &self,
        sql: &'static str,
        types: &[Type],
        parameters: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        let statement = self.statement(sql, types).await?;
        self.client.query(&statement, parameters).await
    }
}
