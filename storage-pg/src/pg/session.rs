//! One open connection of a [`super::PgStore`] and everything that must hold
//! before the store may use it: safe durability settings, the fencing lock,
//! the schema, the identity, and the prepared statements.

use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_postgres::{Client, Statement};

use super::schema;
use super::PgStoreConfig;
use crate::connector::PgConnector;
use crate::error::StoreError;
use crate::store::LogBounds;
use crate::types::{AppliedState, HardState, SnapshotMeta};

/// First key of every raftgres advisory lock ("raft" in ASCII), so that they
/// do not collide with locks a state machine takes.
pub(crate) const ADVISORY_LOCK_CLASS: i32 = 0x7261_6674;
/// Second key of the session-level fencing lock.
pub(crate) const FENCING_LOCK_OBJECT: i32 = 1;
/// Second key of the transaction-level migration lock.
pub(crate) const MIGRATION_LOCK_OBJECT: i32 = 2;
/// Second key of the apply connection's session-level lock.
pub(crate) const APPLIER_LOCK_OBJECT: i32 = 3;
/// Second key of the snapshot staging connection's session-level lock.
pub(crate) const STAGER_LOCK_OBJECT: i32 = 4;

/// Which connection of a node a session is; each holds its own
/// session-level lock, so two node processes can drive neither the log nor
/// the state machine of one database at the same time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SessionRole {
    /// The log connection of a `PgStore`.
    Store,
    /// The apply connection of a `PgApplier`.
    Applier,
    /// The snapshot staging connection of a `PgStager`.
    Stager,
}

impl SessionRole {
    fn lock_object(self) -> i32 {
        match self {
            SessionRole::Store => FENCING_LOCK_OBJECT,
            SessionRole::Applier => APPLIER_LOCK_OBJECT,
            SessionRole::Stager => STAGER_LOCK_OBJECT,
        }
    }

    fn application_name(self, node_id: u64) -> String {
        match self {
            SessionRole::Store => format!("raftgres-node-{node_id}"),
            SessionRole::Applier => format!("raftgres-node-{node_id}-apply"),
            SessionRole::Stager => format!("raftgres-node-{node_id}-stage"),
        }
    }
}

/// How often a reconnect retries the fencing lock while a dead session of
/// this store may still hold it.
const LOCK_RETRY_INTERVAL: Duration = Duration::from_millis(100);

/// Whether this is the store's first open or a reconnect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpenMode {
    /// A held fencing lock means another process: fail fast.
    First,
    /// A held fencing lock may be our own previous session that the server
    /// has not reaped yet: wait up to `reconnect_lock_wait_max`.
    Reconnect,
}

/// Statements prepared once per connection.
pub(crate) struct Statements {
    pub(crate) append: Statement,
    pub(crate) select_entries: Statement,
    pub(crate) term_at: Statement,
    pub(crate) delete_through: Statement,
    pub(crate) delete_all: Statement,
    pub(crate) set_snapshot: Statement,
    pub(crate) set_applied: Statement,
    pub(crate) set_applied_for_snapshot: Statement,
    pub(crate) lock_applied: Statement,
    pub(crate) bounds: Statement,
    /// The state machine's statements, prepared on their first use.
    pub(crate) state_machine: super::StatementCache,
}

/// An open, fenced, verified connection.
pub(crate) struct Session {
    pub(crate) client: Client,
    pub(crate) statements: Statements,
    /// Set when an operation saw the connection fail; the store then opens
    /// a new session before the next operation.
    pub(crate) broken: bool,
    role: SessionRole,
    connection_task: JoinHandle<()>,
}

impl Session {
    /// Connects and runs every check; returns the session and the durable
    /// bounds read from the database.
    pub(crate) async fn open(
        connector: &PgConnector,
        config: &PgStoreConfig,
        mode: OpenMode,
        role: SessionRole,
    ) -> Result<(Session, LogBounds), StoreError> {
        let (mut client, connection_task) = connector
            .connect(
                config.connect_timeout,
                &role.application_name(config.node_id),
            )
            .await?;
        // Every statement of the store touches a handful of rows; JIT
        // compilation only adds latency (tens of milliseconds) to them.
        client
            .batch_execute("SET jit = off")
            .await
            .map_err(|error| classify("configuring the session", error))?;
        check_durability(&client, config.allow_unsafe_durability).await?;
        take_fencing_lock(&client, mode, role, config.reconnect_lock_wait_max).await?;
        let checked = async {
            schema::migrate(&mut client).await?;
            check_identity(&mut client, &config.cluster_id, config.node_id).await?;
            prepare(&client).await
        }
        .await;
        let statements = match checked {
            Ok(statements) => statements,
            Err(error) => {
                // A refused open (another node's database, a newer schema)
                // releases the lock before it reports, so that the next
                // opener is told the real problem rather than "in use".
                release_fencing_lock(client, connection_task, role).await;
                return Err(error);
            }
        };
        let mut session = Session {
            client,
            statements,
            broken: false,
            role,
            connection_task,
        };
        let bounds = session.read_bounds().await?;
        Ok((session, bounds))
    }

    /// Reads hard state, snapshot, applied and last index in one query.
    pub(crate) async fn read_bounds(&mut self) -> Result<LogBounds, StoreError> {
        let row = self
            .client
            .query_one(&self.statements.bounds, &[])
            .await
            .map_err(|error| classify("reading the log bounds", error))?;
        // A missing singleton row reads as NULL: corruption, not a panic.
        let required = |column: usize, what: &str| -> Result<u64, StoreError> {
            let value: Option<i64> = row.get(column);
            let value = value.ok_or_else(|| StoreError::Corrupt {
                reason: format!("the {what} row is missing"),
            })?;
            to_u64(value, what)
        };
        let snapshot = SnapshotMeta {
            index: required(2, "snapshot index")?,
            term: required(3, "snapshot term")?,
        };
        let last_stored: Option<i64> = row.get(6);
        let last_index = match last_stored {
            Some(last) => to_u64(last, "last index")?,
            None => snapshot.index,
        };
        let voted_for: Option<i64> = row.get(1);
        Ok(LogBounds {
            hard_state: HardState {
                term: required(0, "term")?,
                voted_for: voted_for
                    .map(|node| to_u64(node, "voted_for"))
                    .transpose()?,
            },
            snapshot,
            last_index,
            applied: AppliedState {
                index: required(4, "applied index")?,
                term: required(5, "applied term")?,
            },
        })
    }

    /// Releases the fencing lock and closes the connection, waiting until
    /// the connection is gone so that a new opener finds the lock free.
    pub(crate) async fn close(self) {
        release_fencing_lock(self.client, self.connection_task, self.role).await;
    }

    /// Whether a new session is needed.
    pub(crate) fn is_usable(&self) -> bool {
        !self.broken && !self.client.is_closed()
    }
}

/// Refuses settings that lose acknowledged commits on a crash.
async fn check_durability(client: &Client, allow_unsafe: bool) -> Result<(), StoreError> {
    let rows = client
        .query(
            "SELECT name, setting FROM pg_settings
             WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes')",
            &[],
        )
        .await
        .map_err(|error| classify("checking durability settings", error))?;
    for row in rows {
        let name: String = row.get(0);
        let value: String = row.get(1);
        let Some(fix) = unsafe_setting_fix(&name, &value) else {
            continue;
        };
        if allow_unsafe {
            tracing::warn!(setting = %name, value = %value, "unsafe durability setting allowed by allow_unsafe_durability; acknowledged entries can be lost on a crash");
            continue;
        }
        return Err(StoreError::UnsafeDurability {
            setting: name,
            value,
            fix: fix.to_string(),
        });
    }
    Ok(())
}

/// The fix for an unsafe value, `None` when the value is safe.
pub(crate) fn unsafe_setting_fix(name: &str, value: &str) -> Option<&'static str> {
    match (name, value) {
        ("fsync", value) if value != "on" => {
            Some("set fsync = on in postgresql.conf and reload the server")
        }
        ("full_page_writes", value) if value != "on" => {
            Some("set full_page_writes = on in postgresql.conf and reload the server")
        }
        ("synchronous_commit", "off" | "local") => Some(
            "set synchronous_commit = on (check postgresql.conf, ALTER DATABASE ... SET and ALTER ROLE ... SET)",
        ),
        _ => None,
    }
}

async fn take_fencing_lock(
    client: &Client,
    mode: OpenMode,
    role: SessionRole,
    reconnect_lock_wait_max: Duration,
) -> Result<(), StoreError> {
    let lock_object = role.lock_object();
    let map = |error| classify("taking the fencing lock", error);
    let deadline = Instant::now() + reconnect_lock_wait_max;
    loop {
        let taken: bool = client
            .query_one(
                "SELECT pg_try_advisory_lock($1, $2)",
                &[&ADVISORY_LOCK_CLASS, &lock_object],
            )
            .await
            .map_err(map)?
            .get(0);
        if taken {
            return Ok(());
        }
        if mode == OpenMode::Reconnect && Instant::now() < deadline {
            tokio::time::sleep(LOCK_RETRY_INTERVAL).await;
            continue;
        }
        let row = client
            .query_one(
                &format!(
                    "SELECT current_database(), coalesce((SELECT pid FROM pg_locks
                        WHERE locktype = 'advisory' AND granted
                          AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                          AND classid = {ADVISORY_LOCK_CLASS} AND objid = {lock_object}
                          AND objsubid = 2 LIMIT 1), 0)"
                ),
                &[],
            )
            .await
            .map_err(map)?;
        let database: String = row.get(0);
        let holder_pid: i32 = row.get(1);
        if mode == OpenMode::Reconnect {
            // Most likely our own previous session, still committing or not
            // yet reaped; the caller retries later.
            return Err(StoreError::Unavailable {
                context: "reconnecting".into(),
                reason: format!(
                    "fencing lock on database {database} still held by backend pid {holder_pid}"
                ),
            });
        }
        return Err(StoreError::Locked {
            database,
            holder_pid,
        });
    }
}

/// Records the identity at first open; refuses another cluster's or node's
/// database without writing anything.
/// Releases the fencing lock held by `client`'s session and closes it,
/// waiting until the connection is gone.
async fn release_fencing_lock(client: Client, connection_task: JoinHandle<()>, role: SessionRole) {
    let unlock = client
        .execute(
            "SELECT pg_advisory_unlock($1, $2)",
            &[&ADVISORY_LOCK_CLASS, &role.lock_object()],
        )
        .await;
    if let Err(error) = unlock {
        tracing::debug!(%error, "could not release the fencing lock; the server releases it when the session ends");
    }
    drop(client);
    let _ = connection_task.await;
}

async fn check_identity(
    client: &mut Client,
    cluster_id: &str,
    node_id: u64,
) -> Result<(), StoreError> {
    let map = |error| classify("checking the store identity", error);
    let node_id_stored = i64::try_from(node_id).map_err(|_| StoreError::InvalidConfig {
        reason: format!("node_id {node_id} does not fit in a signed 64-bit integer"),
    })?;
    let transaction = client.transaction().await.map_err(map)?;
    let row = transaction
        .query_opt("SELECT cluster_id, node_id FROM raftgres_identity", &[])
        .await
        .map_err(map)?;
    match row {
        None => {
            transaction
                .execute(
                    "INSERT INTO raftgres_identity (cluster_id, node_id) VALUES ($1, $2)",
                    &[&cluster_id, &node_id_stored],
                )
                .await
                .map_err(map)?;
            transaction.commit().await.map_err(map)?;
            tracing::info!(cluster_id, node_id, "recorded store identity");
            Ok(())
        }
        Some(row) => {
            let stored_cluster_id: String = row.get(0);
            let stored_node_id: i64 = row.get(1);
            if stored_cluster_id == cluster_id && stored_node_id == node_id_stored {
                return Ok(());
            }
            Err(StoreError::IdentityMismatch {
                stored_cluster_id,
                stored_node_id: stored_node_id as u64,
                expected_cluster_id: cluster_id.to_string(),
                expected_node_id: node_id,
            })
        }
    }
}

async fn prepare(client: &Client) -> Result<Statements, StoreError> {
    let sql = [
        "SELECT raftgres_append($1::int8, $2::int8[], $3::int8[], $4::int2[], $5::bytea[],
                                $6::boolean, $7::int8, $8::int8)",
        "SELECT log_index, term, kind, data FROM raftgres_log
         WHERE log_index >= $1 AND log_index < $2 ORDER BY log_index",
        "SELECT term FROM raftgres_log WHERE log_index = $1",
        "DELETE FROM raftgres_log WHERE log_index <= $1",
        "DELETE FROM raftgres_log",
        "UPDATE raftgres_snapshot
         SET snapshot_index = $1, snapshot_term = $2, membership = coalesce($3, membership)
         WHERE snapshot_index <= $1",
        "UPDATE raftgres_applied SET applied_index = $1, applied_term = $2
         WHERE applied_index < $1",
        "UPDATE raftgres_applied SET applied_index = $1, applied_term = $2
         WHERE applied_index <= $1",
        // Scalar subqueries rather than a join: the planner has no
        // statistics on fresh tables and would cost a join of three
        // singleton tables high enough to JIT-compile it (150 ms).
        "SELECT a.applied_index, a.applied_term, s.snapshot_index, s.snapshot_term
         FROM raftgres_applied a, raftgres_snapshot s FOR UPDATE OF a",
        "SELECT (SELECT term FROM raftgres_hard_state),
                (SELECT voted_for FROM raftgres_hard_state),
                (SELECT snapshot_index FROM raftgres_snapshot),
                (SELECT snapshot_term FROM raftgres_snapshot),
                (SELECT applied_index FROM raftgres_applied),
                (SELECT applied_term FROM raftgres_applied),
                (SELECT max(log_index) FROM raftgres_log)",
    ];
    // Issued concurrently, so tokio-postgres pipelines them: one round trip.
    let prepared = futures::future::try_join_all(sql.iter().map(|sql| client.prepare(sql)))
        .await
        .map_err(|error| classify("preparing statements", error))?;
    let mut prepared = prepared.into_iter();
    let mut next = || prepared.next().expect("one statement per sql text");
    Ok(Statements {
        append: next(),
        select_entries: next(),
        term_at: next(),
        delete_through: next(),
        delete_all: next(),
        set_snapshot: next(),
        set_applied: next(),
        set_applied_for_snapshot: next(),
        lock_applied: next(),
        bounds: next(),
        state_machine: super::StatementCache::new(),
    })
}

/// Maps a client error to a store error: connection failures and server
/// shutdowns are retriable, everything else is not.
pub(crate) fn classify(context: &str, error: tokio_postgres::Error) -> StoreError {
    if is_unavailable(&error) {
        return StoreError::Unavailable {
            context: context.to_string(),
            reason: error.to_string(),
        };
    }
    StoreError::Database {
        context: context.to_string(),
        source: error,
    }
}

/// Whether an error means the server or the connection went away.
pub(crate) fn is_unavailable(error: &tokio_postgres::Error) -> bool {
    match error.code() {
        Some(code) => is_unavailable_sqlstate(code.code()),
        None => {
            error.is_closed()
                || std::error::Error::source(error)
                    .is_some_and(|source| source.downcast_ref::<std::io::Error>().is_some())
        }
    }
}

/// Connection exceptions (class 08), server shutdown or start-up (57P01-3),
/// and too many connections (53300) pass when the server is back.
pub(crate) fn is_unavailable_sqlstate(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300")
}

/// Converts a stored bigint; a negative value means corruption.
pub(crate) fn to_u64(value: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt {
        reason: format!("stored {what} is negative: {value}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_settings_are_named_with_a_fix() {
        assert!(unsafe_setting_fix("fsync", "off").is_some());
        assert!(unsafe_setting_fix("fsync", "on").is_none());
        assert!(unsafe_setting_fix("synchronous_commit", "off").is_some());
        assert!(unsafe_setting_fix("synchronous_commit", "local").is_some());
        assert!(unsafe_setting_fix("synchronous_commit", "on").is_none());
        assert!(unsafe_setting_fix("synchronous_commit", "remote_apply").is_none());
        assert!(unsafe_setting_fix("full_page_writes", "off").is_some());
    }

    #[test]
    fn server_shutdown_and_connection_failures_are_retriable() {
        assert!(is_unavailable_sqlstate("08006"));
        assert!(is_unavailable_sqlstate("57P01"));
        assert!(is_unavailable_sqlstate("57P03"));
        assert!(!is_unavailable_sqlstate("23505"));
        assert!(!is_unavailable_sqlstate("RG001"));
    }
}
