//! [`PgStore`]: the log store in PostgreSQL.
//!
//! Opening a store connects, refuses unsafe durability settings, takes a
//! session-level advisory lock (fencing: a second opener fails fast),
//! migrates the schema and checks the cluster and node identity. The store
//! caches the log bounds (term, vote, snapshot, last index, applied) so that
//! it can reject an invalid request before writing anything; the database
//! re-checks the same rules with a trigger and a guard function.
//!
//! An append is one statement, `SELECT raftgres_append(...)`, executed in
//! autocommit mode and therefore one transaction and one round trip; the
//! function (see `schema`) runs, in order:
//!
//! ```text
//! UPDATE raftgres_hard_state SET term, voted_for         -- when given and changed
//! refuse entries above the hard state term, or changes   -- in SQL (RG003)
//!   at or below the applied index
//! DELETE FROM raftgres_log WHERE log_index >= first      -- conflicting suffix
//! PERFORM raftgres_check_append(first)                   -- no gap, in SQL
//! INSERT INTO raftgres_log SELECT * FROM unnest(...)     -- all entries at once
//! ```
//!
//! When the connection fails, operations return the retriable
//! [`StoreError::Unavailable`] and the next operation reconnects (re-taking
//! the lock and re-checking identity). An append whose COMMIT outcome is
//! unknown is resolved by reconnecting and reading back.

mod applier;
mod apply;
mod prepared;
mod schema;
pub(crate) mod session;
mod staging;

use std::time::Duration;

use tokio_postgres::types::ToSql;

pub use applier::PgApplier;
pub use apply::{ApplyOptions, ApplyTransaction, BegunApply, FirstStatements, OpeningApply};
pub use prepared::{Prepared, StatementCache, CACHED_STATEMENTS_MAX};
pub use schema::SCHEMA_VERSION_SUPPORTED;
pub use staging::{applied_in, connect_view, PgStager, StagedHeader};

use session::{classify, to_u64, OpenMode, Session, SessionRole};

use crate::connector::PgConnector;
use crate::error::StoreError;
use crate::store::{self, CompactPlan, LogBounds, LogStore};
use crate::types::{
    AppendBatch, AppliedState, EntryKind, HardState, LoadedState, LogEntry, SnapshotMeta,
};

/// How to open a [`PgStore`].
#[derive(Clone, Debug)]
pub struct PgStoreConfig {
    /// libpq-style key/value or URL conninfo, e.g.
    /// `host=127.0.0.1 port=5432 user=postgres dbname=node1`, including
    /// `sslmode` and `sslrootcert` (see [`crate::connector`]).
    pub conninfo: String,
    /// The cluster this node belongs to; recorded at first open.
    pub cluster_id: String,
    /// This node's id; recorded at first open.
    pub node_id: u64,
    /// Open even when fsync, synchronous_commit or full_page_writes would
    /// lose acknowledged writes. Throw-away benchmarks only.
    pub allow_unsafe_durability: bool,
    /// Bound on connecting, including the start-up handshake.
    pub connect_timeout: Duration,
    /// On reconnect, how long to wait for our own dead session's fencing
    /// lock to be released before reporting `Unavailable`.
    pub reconnect_lock_wait_max: Duration,
    /// Largest accepted append batch.
    pub entries_per_append_max: usize,
}

impl PgStoreConfig {
    /// Defaults: safe durability required, 5 s connect timeout, 5 s lock
    /// wait on reconnect, [`crate::ENTRIES_PER_APPEND_MAX_DEFAULT`].
    pub fn new(conninfo: impl Into<String>, cluster_id: impl Into<String>, node_id: u64) -> Self {
        PgStoreConfig {
            conninfo: conninfo.into(),
            cluster_id: cluster_id.into(),
            node_id,
            allow_unsafe_durability: false,
            connect_timeout: Duration::from_secs(5),
            reconnect_lock_wait_max: Duration::from_secs(5),
            entries_per_append_max: crate::ENTRIES_PER_APPEND_MAX_DEFAULT,
        }
    }

    /// Checks the configuration once, with errors a person can act on.
    pub fn validate(&self) -> Result<(), StoreError> {
        let invalid = |reason: &str| {
            Err(StoreError::InvalidConfig {
                reason: reason.to_string(),
            })
        };
        if self.cluster_id.trim().is_empty() {
            return invalid("cluster_id must not be empty");
        }
        if self.node_id > i64::MAX as u64 {
            return invalid("node_id must fit in a signed 64-bit integer");
        }
        if self.connect_timeout.is_zero() {
            return invalid("connect_timeout must be positive");
        }
        // Four arrays of this length travel in one message; 1,000,000 keeps
        // a batch far below Postgres' 1 GB message limit for small entries.
        if self.entries_per_append_max == 0 || self.entries_per_append_max > 1_000_000 {
            return invalid("entries_per_append_max must be between 1 and 1000000");
        }
        Ok(())
    }
}

/// The Postgres [`LogStore`]. Holds one dedicated connection and the fencing
/// lock for its whole lifetime; call [`PgStore::close`] to release both
/// promptly.
pub struct PgStore {
    config: PgStoreConfig,
    /// Built once from `config.conninfo`, so reconnects reuse the parsed
    /// root certificates.
    connector: PgConnector,
    /// `None` after a connection failure until the next operation reconnects.
    session: Option<Session>,
    /// Invariant: equals the durable state whenever `session` is usable.
    bounds: LogBounds,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("PgStore")
            .field("cluster_id", &self.config.cluster_id)
            .field("node_id", &self.config.node_id)
            .field("connected", &self.session.is_some())
            .field("bounds", &self.bounds)
            .finish()
    }
}

/// Where an append failed.
enum AppendFailure {
    /// The server rejected a statement; the transaction rolled back.
    Rejected(tokio_postgres::Error),
    /// The connection failed; the transaction may or may not have committed.
    OutcomeUnknown(tokio_postgres::Error),
    /// Committed, but the database inserted a different number of rows.
    Miscounted(i64),
}

impl PgStore {
    /// Connects and runs every start-up check (durability settings, fencing
    /// lock, schema, identity). The conninfo and its `sslrootcert` file are
    /// checked before any connection is attempted.
    pub async fn open(config: PgStoreConfig) -> Result<PgStore, StoreError> {
        config.validate()?;
        let connector = PgConnector::new(&config.conninfo)?;
        let (session, bounds) =
            Session::open(&connector, &config, OpenMode::First, SessionRole::Store).await?;
        tracing::info!(
            node = config.node_id,
            term = bounds.hard_state.term,
            last_index = bounds.last_index,
            "opened postgres log store"
        );
        Ok(PgStore {
            config,
            connector,
            session: Some(session),
            bounds,
        })
    }

    /// Releases the fencing lock and closes the connection, so that another
    /// opener (for example the same node restarting) succeeds at once.
    pub async fn close(mut self) {
        if let Some(session) = self.session.take() {
            session.close().await;
        }
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> &PgStoreConfig {
        &self.config
    }

    /// Starts a state machine transaction on the store's connection: run the
    /// state machine's SQL through [`ApplyTransaction::transaction`], then
    /// [`ApplyTransaction::commit`] records the new applied position in the
    /// same transaction. On this connection the transaction may also append
    /// to the log ([`ApplyTransaction::append`]): log rows, state machine
    /// rows and applied position under one COMMIT.
    pub async fn begin_apply(
        &mut self,
        options: ApplyOptions,
    ) -> Result<ApplyTransaction<'_>, StoreError> {
        self.open_apply_on_log(options, None).await?.start().await
    }

    /// [`PgStore::begin_apply`] with `batch` appended in the same
    /// transaction, as [`ApplyTransaction::append`] does, but sent with
    /// the transaction's first statements: one round trip less.
    pub async fn begin_apply_appending(
        &mut self,
        options: ApplyOptions,
        batch: &AppendBatch,
    ) -> Result<ApplyTransaction<'_>, StoreError> {
        self.open_apply_on_log(options, Some(batch))
            .await?
            .start()
            .await
    }

    /// [`PgStore::begin_apply_appending`] with the first statements not
    /// yet sent: see [`OpeningApply`].
    pub async fn open_apply_appending<'b>(
        &mut self,
        options: ApplyOptions,
        batch: &'b AppendBatch,
    ) -> Result<OpeningApply<'_, 'b>, StoreError> {
        self.open_apply_on_log(options, Some(batch)).await
    }

    /// Begins an apply transaction on the log connection, reconnecting
    /// first if it was lost.
    async fn open_apply_on_log<'b>(
        &mut self,
        options: ApplyOptions,
        append: Option<&'b AppendBatch>,
    ) -> Result<OpeningApply<'_, 'b>, StoreError> {
        self.ensure_session().await?;
        let session = self.session.as_mut().expect("ensure_session connected");
        let connection = apply::Connection::Log {
            entries_per_append_max: self.config.entries_per_append_max,
        };
        apply::open(session, &mut self.bounds, options, connection, append).await
    }

    async fn ensure_session(&mut self) -> Result<(), StoreError> {
        if self.session.as_ref().is_some_and(Session::is_usable) {
            return Ok(());
        }
        self.session = None;
        let (session, bounds) = Session::open(
            &self.connector,
            &self.config,
            OpenMode::Reconnect,
            SessionRole::Store,
        )
        .await?;
        tracing::info!(
            node = self.config.node_id,
            term = bounds.hard_state.term,
            last_index = bounds.last_index,
            "reconnected postgres log store"
        );
        self.session = Some(session);
        self.bounds = bounds;
        Ok(())
    }

    /// Drops the session after a retriable error so the next call reconnects.
    fn note(&mut self, error: StoreError) -> StoreError {
        if error.is_retriable() {
            self.session = None;
        }
        error
    }

    fn session(&mut self) -> &mut Session {
        self.session.as_mut().expect("ensure_session connected")
    }

    /// After an append whose COMMIT outcome is unknown: reconnect and check
    /// whether the batch is durable. Reconnecting re-reads the bounds.
    async fn resolve_unknown_append(&mut self, batch: &AppendBatch) -> Result<(), StoreError> {
        self.session = None;
        self.ensure_session().await?;
        let hard_state_present = match batch.hard_state {
            Some(hard_state) => hard_state == self.bounds.hard_state,
            None => true,
        };
        let entries_present = match batch.entries.last() {
            None => true,
            Some(last) if self.bounds.last_index != last.index => false,
            Some(last) => self.term_at(last.index).await? == Some(last.term),
        };
        if hard_state_present && entries_present {
            tracing::info!(
                node = self.config.node_id,
                "append outcome was unknown; read back shows it committed"
            );
            Ok(())
        } else {
            Err(StoreError::Unavailable {
                context: "append".into(),
                reason: "the connection failed during commit and the batch is not in the database"
                    .into(),
            })
        }
    }

    async fn term_at(&mut self, index: u64) -> Result<Option<u64>, StoreError> {
        let session = self.session();
        let row = session
            .client
            .query_opt(&session.statements.term_at, &[&(index as i64)])
            .await
            .map_err(|error| classify("reading a term", error));
        match row {
            Ok(row) => row.map(|row| to_u64(row.get(0), "term")).transpose(),
            Err(error) => Err(self.note(error)),
        }
    }

    async fn send_append(&mut self, batch: &AppendBatch) -> Result<(), AppendFailure> {
        let session = self.session.as_ref().expect("ensure_session connected");
        let parameters = AppendParameters::of(batch);
        // One statement in autocommit mode is one transaction: the suffix
        // delete, the gap guard, the insert and the hard state update commit
        // together or not at all.
        let result = session
            .client
            .query_one(&session.statements.append, &parameters.as_slice())
            .await;
        match result {
            Ok(row) => check_inserted(row.get(0), batch),
            Err(error) if session::is_unavailable(&error) => {
                Err(AppendFailure::OutcomeUnknown(error))
            }
            Err(error) => Err(AppendFailure::Rejected(error)),
        }
    }
}

/// The parameters of `raftgres_append` for one batch.
struct AppendParameters<'a> {
    first_index: Option<i64>,
    columns: EntryColumns<'a>,
    save_hard_state: bool,
    term: i64,
    voted_for: Option<i64>,
}

impl<'a> AppendParameters<'a> {
    fn of(batch: &'a AppendBatch) -> AppendParameters<'a> {
        let hard_state = batch.hard_state.unwrap_or_default();
        AppendParameters {
            first_index: batch.entries.first().map(|entry| entry.index as i64),
            columns: EntryColumns::from(&batch.entries),
            save_hard_state: batch.hard_state.is_some(),
            term: hard_state.term as i64,
            voted_for: hard_state.voted_for.map(|node| node as i64),
        }
    }

    fn as_slice(&self) -> [&(dyn ToSql + Sync); 8] {
        [
            &self.first_index,
            &self.columns.indexes,
            &self.columns.terms,
            &self.columns.kinds,
            &self.columns.data,
            &self.save_hard_state,
            &self.term,
            &self.voted_for,
        ]
    }
}

/// `raftgres_append` reports how many rows it inserted.
fn check_inserted(inserted: i64, batch: &AppendBatch) -> Result<(), AppendFailure> {
    if inserted as usize != batch.entries.len() {
        return Err(AppendFailure::Miscounted(inserted));
    }
    Ok(())
}

/// The error for an append the server refused, given the bounds the store
/// checked it against.
fn rejected_append(error: tokio_postgres::Error, bounds: &LogBounds) -> StoreError {
    match error.code().map(|code| code.code()) {
        Some(schema::SQLSTATE_HARD_STATE_REGRESSION) => StoreError::Corrupt {
            reason: format!(
                "the database refused a hard state the store accepted (cached {:?}): {error}",
                bounds.hard_state
            ),
        },
        // The function refused before writing, and the statement rolled
        // back whole: nothing changed.
        Some(schema::SQLSTATE_APPEND_REFUSED) => StoreError::AppendRefused {
            reason: error.as_db_error().map_or_else(
                || error.to_string(),
                |database_error| database_error.message().to_string(),
            ),
        },
        Some(schema::SQLSTATE_APPEND_GAP) => StoreError::Corrupt {
            reason: format!(
                "the database refused an append the store accepted (cached last index {}): {error}",
                bounds.last_index
            ),
        },
        _ => classify("append", error),
    }
}

/// The error for a batch whose row count came back wrong.
fn miscounted(inserted: i64, batch: &AppendBatch) -> StoreError {
    StoreError::Corrupt {
        reason: format!(
            "the database inserted {inserted} rows for a batch of {}",
            batch.entries.len()
        ),
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // Without close() the server releases the fencing lock when it
        // notices the closed connection, usually within milliseconds.
        if self.session.is_some() {
            tracing::debug!(
                node = self.config.node_id,
                "postgres store dropped without close()"
            );
        }
    }
}

impl LogStore for PgStore {
    async fn load(&mut self) -> Result<LoadedState, StoreError> {
        self.ensure_session().await?;
        let bounds = match self.session().read_bounds().await {
            Ok(bounds) => bounds,
            Err(error) => return Err(self.note(error)),
        };
        self.bounds = bounds;
        let high_exclusive = bounds.last_index + 1;
        let entries = self
            .read_entries(bounds.snapshot.index + 1, high_exclusive)
            .await?;
        let state = LoadedState {
            hard_state: bounds.hard_state,
            snapshot: bounds.snapshot,
            entries,
            applied: bounds.applied,
        };
        store::check_loaded(&state)?;
        Ok(state)
    }

    async fn append(&mut self, batch: AppendBatch) -> Result<(), StoreError> {
        self.ensure_session().await?;
        store::check_append(&self.bounds, &batch, self.config.entries_per_append_max)?;
        if batch.entries.is_empty() && batch.hard_state.is_none() {
            return Ok(());
        }
        match self.send_append(&batch).await {
            Ok(()) => {
                if let Some(last) = batch.entries.last() {
                    self.bounds.last_index = last.index;
                }
                if let Some(hard_state) = batch.hard_state {
                    self.bounds.hard_state = hard_state;
                }
                Ok(())
            }
            Err(AppendFailure::Rejected(error)) => {
                let error = rejected_append(error, &self.bounds);
                Err(self.note(error))
            }
            Err(AppendFailure::Miscounted(inserted)) => Err(miscounted(inserted, &batch)),
            Err(AppendFailure::OutcomeUnknown(error)) => {
                tracing::warn!(node = self.config.node_id, %error, "connection failed during append; resolving by read back");
                self.resolve_unknown_append(&batch).await
            }
        }
    }

    async fn save_hard_state(&mut self, hard_state: HardState) -> Result<(), StoreError> {
        self.append(AppendBatch {
            hard_state: Some(hard_state),
            entries: Vec::new(),
        })
        .await
    }

    async fn entries(
        &mut self,
        low: u64,
        high_exclusive: u64,
    ) -> Result<Vec<LogEntry>, StoreError> {
        self.ensure_session().await?;
        store::check_range(&self.bounds, low, high_exclusive)?;
        self.read_entries(low, high_exclusive).await
    }

    async fn compact(&mut self, up_to: u64, term: u64) -> Result<(), StoreError> {
        self.compact_guarded(up_to, term, None, false)
            .await
            .map(|_| ())
    }

    async fn install_snapshot(&mut self, meta: SnapshotMeta) -> Result<(), StoreError> {
        self.begin_apply(ApplyOptions::default())
            .await?
            .commit_snapshot(meta, None)
            .await
    }

    async fn save_applied(&mut self, applied: AppliedState) -> Result<(), StoreError> {
        self.begin_apply(ApplyOptions::default())
            .await?
            .commit(applied)
            .await
    }
}

impl PgStore {
    async fn read_entries(
        &mut self,
        low: u64,
        high_exclusive: u64,
    ) -> Result<Vec<LogEntry>, StoreError> {
        let session = self.session();
        let rows = session
            .client
            .query(
                &session.statements.select_entries,
                &[&(low as i64), &(high_exclusive as i64)],
            )
            .await
            .map_err(|error| classify("reading entries", error));
        let rows = match rows {
            Ok(rows) => rows,
            Err(error) => return Err(self.note(error)),
        };
        let entries = rows
            .iter()
            .map(decode_entry)
            .collect::<Result<Vec<_>, _>>()?;
        let contiguous = entries
            .iter()
            .zip(low..)
            .all(|(entry, expected)| entry.index == expected);
        if !contiguous || entries.len() as u64 != high_exclusive - low {
            return Err(StoreError::Corrupt {
                reason: format!(
                    "expected entries [{low}, {high_exclusive}) but the database returned {} entries that are not exactly those",
                    entries.len()
                ),
            });
        }
        Ok(entries)
    }

    /// Compacts through `up_to` (as [`LogStore::compact`] does) only if
    /// the stored applied index has reached it; returns whether it did.
    /// The node compacts this way: its applier may commit asynchronously,
    /// a Postgres crash can then lose applies the node already took a
    /// snapshot of, and the log must keep the entries that replay them.
    /// Once the applied index is stored at or past `up_to`, the compaction's
    /// own synchronous commit flushes the WAL through those applies.
    /// `membership` (an encoded membership the store does not read) is the
    /// one in force at `up_to`, stored in the same transaction.
    pub async fn compact_applied(
        &mut self,
        up_to: u64,
        term: u64,
        membership: &[u8],
    ) -> Result<bool, StoreError> {
        self.compact_guarded(up_to, term, Some(membership), true)
            .await
    }

    /// The membership stored with the snapshot marker (an encoded
    /// membership the store does not read), `None` when none was stored.
    pub async fn load_membership(&mut self) -> Result<Option<Vec<u8>>, StoreError> {
        self.ensure_session().await?;
        let result = self
            .session()
            .client
            .query_one("SELECT membership FROM raftgres_snapshot", &[])
            .await;
        match result {
            Ok(row) => Ok(row.get(0)),
            Err(error) => Err(self.note(classify("loading the membership", error))),
        }
    }

    /// Stores `membership` as the one in force at the snapshot index if
    /// none is stored yet (a new node's bootstrap membership), in one
    /// durable statement; returns the membership stored afterwards, which
    /// is an earlier one when there was one.
    pub async fn bootstrap_membership(&mut self, membership: &[u8]) -> Result<Vec<u8>, StoreError> {
        self.ensure_session().await?;
        let result = self
            .session()
            .client
            .query_one(
                "WITH set AS (UPDATE raftgres_snapshot SET membership = $1
                              WHERE membership IS NULL RETURNING membership)
                 SELECT coalesce((SELECT membership FROM set),
                                 (SELECT membership FROM raftgres_snapshot))",
                &[&membership],
            )
            .await;
        match result {
            Ok(row) => Ok(row.get(0)),
            Err(error) => Err(self.note(classify("storing the bootstrap membership", error))),
        }
    }

    async fn compact_guarded(
        &mut self,
        up_to: u64,
        term: u64,
        membership: Option<&[u8]>,
        only_applied: bool,
    ) -> Result<bool, StoreError> {
        self.ensure_session().await?;
        let stored_term = if up_to > self.bounds.snapshot.index && up_to <= self.bounds.last_index {
            self.term_at(up_to).await?
        } else {
            None
        };
        if store::check_compact(&self.bounds, up_to, term, stored_term)? == CompactPlan::Nothing {
            return Ok(false);
        }
        let result = self
            .send_compact(up_to, term, membership, only_applied)
            .await;
        match result {
            Ok(true) => {
                self.bounds.snapshot = SnapshotMeta { index: up_to, term };
                Ok(true)
            }
            Ok(false) => Ok(false),
            Err(error) => Err(self.note(error)),
        }
    }

    async fn send_compact(
        &mut self,
        up_to: u64,
        term: u64,
        membership: Option<&[u8]>,
        only_applied: bool,
    ) -> Result<bool, StoreError> {
        let map = |error| classify("compacting", error);
        let session = self.session();
        let transaction = session.client.transaction().await.map_err(map)?;
        let statements = &session.statements;
        if only_applied {
            let applied: i64 = transaction
                .query_one("SELECT applied_index FROM raftgres_applied FOR SHARE", &[])
                .await
                .map_err(map)?
                .get(0);
            if (applied as u64) < up_to {
                transaction.rollback().await.map_err(map)?;
                return Ok(false);
            }
        }
        transaction
            .execute(&statements.delete_through, &[&(up_to as i64)])
            .await
            .map_err(map)?;
        let updated = transaction
            .execute(
                &statements.set_snapshot,
                &[&(up_to as i64), &(term as i64), &membership],
            )
            .await
            .map_err(map)?;
        if updated != 1 {
            return Err(StoreError::Corrupt {
                reason: format!("snapshot marker in the database is beyond index {up_to}, the store thought otherwise"),
            });
        }
        transaction.commit().await.map_err(map)?;
        Ok(true)
    }
}

/// Column-wise entries, the shape `unnest` takes.
struct EntryColumns<'a> {
    indexes: Vec<i64>,
    terms: Vec<i64>,
    kinds: Vec<i16>,
    data: Vec<&'a [u8]>,
}

impl<'a> From<&'a Vec<LogEntry>> for EntryColumns<'a> {
    fn from(entries: &'a Vec<LogEntry>) -> Self {
        // Bounds were checked by store::check_append, so the casts are exact.
        EntryColumns {
            indexes: entries.iter().map(|entry| entry.index as i64).collect(),
            terms: entries.iter().map(|entry| entry.term as i64).collect(),
            kinds: entries.iter().map(|entry| entry.kind.to_code()).collect(),
            data: entries.iter().map(|entry| entry.data.as_slice()).collect(),
        }
    }
}

fn decode_entry(row: &tokio_postgres::Row) -> Result<LogEntry, StoreError> {
    let code: i16 = row.get(2);
    let kind = EntryKind::from_code(code).ok_or_else(|| StoreError::Corrupt {
        reason: format!("unknown entry kind {code}"),
    })?;
    Ok(LogEntry {
        index: to_u64(row.get(0), "index")?,
        term: to_u64(row.get(1), "term")?,
        kind,
        data: row.get(3),
    })
}
