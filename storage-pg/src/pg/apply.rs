//! Applying committed entries to a state machine that lives in Postgres.
//!
//! The state machine's changes and the new applied position commit in one
//! transaction (design rule 4: exactly-once apply). [`ApplyTransaction`]
//! hands out the `tokio_postgres::Transaction` so the state machine can run
//! its own SQL on its own tables, then records the applied position and
//! commits.

use tokio_postgres::Transaction;

use super::session::{classify, to_u64, Session, Statements};
use super::Prepared;
use super::{check_inserted, miscounted, rejected_append, AppendFailure, AppendParameters};
use crate::error::StoreError;
use crate::store::{self, LogBounds};
use crate::types::{AppendBatch, AppliedState, HardState, LogEntry, SnapshotMeta};

/// Options for one apply transaction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyOptions {
    /// Commit with `SET LOCAL synchronous_commit = off`. Safe for applies
    /// because the log is durable and replaying an entry is idempotent
    /// (the applied position only moves forward); a crash may lose the
    /// last few applies, which are then replayed. Never used for snapshot
    /// installation, which deletes log entries.
    pub synchronous_commit_off: bool,
    /// The applied position the transaction will commit, when the caller
    /// knows it before it starts: its update is then sent with the
    /// transaction's first statements instead of before the COMMIT, one
    /// round trip less. [`ApplyTransaction::commit`] must be given the
    /// same position (another one is recorded at commit, as without this).
    pub applying_through: Option<AppliedState>,
}

/// Which connection a transaction runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Connection {
    /// The log store's: it caches the log bounds that appends and snapshot
    /// installs change, so only it may append or install.
    Log {
        /// The store's largest accepted append batch.
        entries_per_append_max: usize,
    },
    /// The applier's: applies only.
    Applier,
}

/// An open state machine transaction on the store's connection.
pub struct ApplyTransaction<'a> {
    transaction: Transaction<'a>,
    statements: &'a Statements,
    /// `applied` and `snapshot` were read under a row lock at begin.
    bounds: &'a mut LogBounds,
    broken: &'a mut bool,
    connection: Connection,
    /// What an append in this transaction changes in the cached bounds
    /// once it commits: the last index and the hard state.
    appended: Option<(Option<u64>, Option<HardState>)>,
    /// The applied position recorded with the first statements, and the
    /// rows its update changed (0: the stored position was at or beyond
    /// it).
    recorded: Option<(AppliedState, u64)>,
}

/// Checks `append` against the cached bounds and sends BEGIN (one round
/// trip); the transaction's first statements are not sent yet.
pub(super) async fn open<'a, 'b>(
    session: &'a mut Session,
    bounds: &'a mut LogBounds,
    options: ApplyOptions,
    connection: Connection,
    append: Option<&'b AppendBatch>,
) -> Result<OpeningApply<'a, 'b>, StoreError> {
    let append = append.filter(|batch| !(batch.entries.is_empty() && batch.hard_state.is_none()));
    if let Some(batch) = append {
        let Connection::Log {
            entries_per_append_max,
        } = connection
        else {
            return Err(only_the_log_connection_appends());
        };
        store::check_append(bounds, batch, entries_per_append_max)?;
    }
    let begun = begin_transaction(session, bounds, connection).await?;
    Ok(begun.into_opening(options, append))
}

/// Sends BEGIN and waits for it: nothing else is sent yet.
pub(super) async fn begin_transaction<'a>(
    session: &'a mut Session,
    bounds: &'a mut LogBounds,
    connection: Connection,
) -> Result<BegunApply<'a>, StoreError> {
    let Session {
        client,
        statements,
        broken,
        ..
    } = session;
    match client.transaction().await {
        Ok(transaction) => Ok(BegunApply {
            transaction,
            statements,
            bounds,
            broken,
            connection,
        }),
        Err(error) => {
            let error = classify("starting an apply transaction", error);
            *broken = error.is_retriable();
            Err(error)
        }
    }
}

/// An apply transaction begun before its entries are known: BEGIN is
/// done and nothing else was sent, so it holds no lock and no snapshot
/// (READ COMMITTED takes one per statement). An applier begins its next
/// transaction while it waits for the next batch, which takes BEGIN's
/// round trip off the path from a commit to the client's answer; the
/// wait shows in `pg_stat_activity` as "idle in transaction". Dropping it
/// rolls it back.
pub struct BegunApply<'a> {
    transaction: Transaction<'a>,
    statements: &'a Statements,
    bounds: &'a mut LogBounds,
    broken: &'a mut bool,
    connection: Connection,
}

impl std::fmt::Debug for BegunApply<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("BegunApply")
            .field("connection", &self.connection)
            .finish()
    }
}

impl<'a> BegunApply<'a> {
    /// The transaction for a batch that commits `options`: its first
    /// statements are not sent yet (see [`OpeningApply`]).
    pub fn open(self, options: ApplyOptions) -> OpeningApply<'a, 'static> {
        self.into_opening(options, None)
    }

    /// Ends the transaction unused (one round trip).
    pub async fn release(self) -> Result<(), StoreError> {
        let result = self.transaction.rollback().await;
        result.map_err(|error| {
            let error = classify("ending an unused apply transaction", error);
            *self.broken = error.is_retriable();
            error
        })
    }

    fn into_opening<'b>(
        self,
        options: ApplyOptions,
        append: Option<&'b AppendBatch>,
    ) -> OpeningApply<'a, 'b> {
        let BegunApply {
            transaction,
            statements,
            bounds,
            broken,
            connection,
        } = self;
        // Recorded up front only when the cached position allows it;
        // otherwise `commit` records it (and refuses a regression) as it
        // always did.
        let recording = options
            .applying_through
            .filter(|applied| store::check_applied(bounds, applied).is_ok());
        OpeningApply {
            transaction,
            statements,
            bounds,
            broken,
            connection,
            options,
            append,
            recording,
        }
    }
}

/// An apply transaction whose BEGIN is done and whose first statements
/// (the setting for an asynchronous commit, the locked read of the applied row, the append, the applied
/// position's update) are still to be sent: a caller that knows where the
/// applied position stands can send its own statements in the same round
/// trip. Poll [`OpeningApply::first_statements`] before anything else that
/// uses [`OpeningApply::transaction`] (`futures::join!` polls in argument
/// order), hand its result to [`OpeningApply::opened`], and check
/// [`ApplyTransaction::applied_before`] before committing anything that
/// assumed it: dropping the transaction rolls it back.
pub struct OpeningApply<'a, 'b> {
    transaction: Transaction<'a>,
    statements: &'a Statements,
    bounds: &'a mut LogBounds,
    broken: &'a mut bool,
    connection: Connection,
    options: ApplyOptions,
    append: Option<&'b AppendBatch>,
    recording: Option<AppliedState>,
}

/// What the first statements of an apply transaction answered.
pub struct FirstStatements {
    locked: Result<tokio_postgres::Row, tokio_postgres::Error>,
    appended: Result<(), AppendFailure>,
    recorded: Result<Option<(AppliedState, u64)>, tokio_postgres::Error>,
}

impl std::fmt::Debug for OpeningApply<'_, '_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("OpeningApply")
            .field("connection", &self.connection)
            .field("options", &self.options)
            .field("appending", &self.append.is_some())
            .finish()
    }
}

impl std::fmt::Debug for FirstStatements {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("FirstStatements")
            .field("locked", &self.locked.is_ok())
            .field("appended", &self.appended.is_ok())
            .field("recorded", &self.recorded.is_ok())
            .finish()
    }
}

impl<'a> OpeningApply<'a, '_> {
    /// The transaction, for statements sent after the first ones.
    pub fn transaction(&self) -> &Transaction<'a> {
        &self.transaction
    }

    /// The transaction with the statements the state machine prepared on
    /// this connection (see [`super::StatementCache`]).
    pub fn prepared(&self) -> Prepared<'_, Transaction<'a>> {
        self.statements.state_machine.with(&self.transaction)
    }

    /// Sends the first statements, all in one round trip, and waits for
    /// their answers.
    pub async fn first_statements(&self) -> FirstStatements {
        let transaction = &self.transaction;
        let statements = self.statements;
        // A session commits synchronously unless told otherwise: opening
        // it refused a server that does not (unless the configuration
        // allowed that, and with it lost commits).
        let configured = async {
            if self.options.synchronous_commit_off {
                transaction
                    .batch_execute("SET LOCAL synchronous_commit = off")
                    .await
            } else {
                Ok(())
            }
        };
        // The applied row is read, and locked, inside the transaction:
        // after a commit whose outcome was unknown, this is the truth about
        // what was applied.
        let parameters = self.append.map(AppendParameters::of);
        let record = async {
            let Some(applied) = self.recording else {
                return Ok(None);
            };
            let parameters = [applied.index as i64, applied.term as i64];
            transaction
                .execute(&statements.set_applied, &[&parameters[0], &parameters[1]])
                .await
                .map(|rows| Some((applied, rows)))
        };
        let appending = async {
            let (Some(batch), Some(parameters)) = (self.append, &parameters) else {
                return Ok(());
            };
            match transaction
                .query_one(&statements.append, &parameters.as_slice())
                .await
            {
                Ok(row) => check_inserted(row.get(0), batch),
                Err(error) => Err(AppendFailure::Rejected(error)),
            }
        };
        // In this order on the wire: the lock reads the applied position
        // before the update moves it.
        let (configured, locked, appended, recorded) = futures::join!(
            configured,
            transaction.query_one(&statements.lock_applied, &[]),
            appending,
            record
        );
        FirstStatements {
            locked: configured.and(locked),
            appended,
            recorded,
        }
    }

    /// Sends the first statements alone (the setting, the applied row,
    /// the append if any, in one round trip) and opens the transaction.
    pub async fn start(self) -> Result<ApplyTransaction<'a>, StoreError> {
        let first = self.first_statements().await;
        self.opened(first)
    }

    /// The open transaction, once `first` (its first statements' answers)
    /// shows that they all succeeded.
    pub fn opened(self, first: FirstStatements) -> Result<ApplyTransaction<'a>, StoreError> {
        let OpeningApply {
            transaction,
            statements,
            bounds,
            broken,
            connection,
            append,
            ..
        } = self;
        let map = |error| classify("starting an apply transaction", error);
        let row = match first.locked {
            Ok(row) => row,
            Err(error) => {
                let error = map(error);
                *broken = error.is_retriable();
                return Err(error);
            }
        };
        if let Err(failure) = first.appended {
            let batch = append.expect("only an append fails");
            let error = append_error(failure, batch, bounds);
            *broken = error.is_retriable();
            return Err(error);
        }
        let recorded = match first.recorded {
            Ok(recorded) => recorded,
            Err(error) => {
                let error = map(error);
                *broken = error.is_retriable();
                return Err(error);
            }
        };
        bounds.applied = AppliedState {
            index: to_u64(row.get(0), "applied index")?,
            term: to_u64(row.get(1), "applied term")?,
        };
        bounds.snapshot = SnapshotMeta {
            index: to_u64(row.get(2), "snapshot index")?,
            term: to_u64(row.get(3), "snapshot term")?,
        };
        Ok(ApplyTransaction {
            transaction,
            statements,
            bounds,
            broken,
            connection,
            appended: append.map(|batch| {
                let last_index = batch.entries.last().map(|entry| entry.index);
                (last_index, batch.hard_state)
            }),
            recorded,
        })
    }
}

fn only_the_log_connection_appends() -> StoreError {
    StoreError::InvalidConfig {
        reason: "append through PgStore::begin_apply, not PgApplier: the log connection must see the log change".into(),
    }
}

/// The error for a failed append statement.
fn append_error(failure: AppendFailure, batch: &AppendBatch, bounds: &LogBounds) -> StoreError {
    match failure {
        AppendFailure::Rejected(error) => rejected_append(error, bounds),
        AppendFailure::Miscounted(inserted) => miscounted(inserted, batch),
        AppendFailure::OutcomeUnknown(error) => classify("append", error),
    }
}

impl<'a> ApplyTransaction<'a> {
    /// The transaction, for the state machine's own statements.
    pub fn transaction(&self) -> &Transaction<'a> {
        &self.transaction
    }

    /// The transaction with the statements the state machine prepared on
    /// this connection (see [`super::StatementCache`]).
    pub fn prepared(&self) -> Prepared<'_, Transaction<'a>> {
        self.statements.state_machine.with(&self.transaction)
    }

    /// The applied position before this transaction, read under a row lock
    /// when it began (so it includes a commit whose outcome the caller did
    /// not see).
    pub fn applied_before(&self) -> AppliedState {
        self.bounds.applied
    }

    /// The stored log entries `low <= index < high_exclusive`, read in this
    /// transaction. An applier that finds the applied position behind the
    /// batch it was handed (an asynchronously committed apply lost when the
    /// server crashed) replays the gap from the durable log.
    pub async fn log_entries(
        &self,
        low: u64,
        high_exclusive: u64,
    ) -> Result<Vec<LogEntry>, StoreError> {
        let rows = self
            .transaction
            .query(
                &self.statements.select_entries,
                &[&(low as i64), &(high_exclusive as i64)],
            )
            .await
            .map_err(|error| classify("reading entries to apply", error))?;
        let entries = rows
            .iter()
            .map(super::decode_entry)
            .collect::<Result<Vec<_>, _>>()?;
        let contiguous = entries
            .iter()
            .zip(low..)
            .all(|(entry, expected)| entry.index == expected);
        if !contiguous || entries.len() as u64 != high_exclusive.saturating_sub(low) {
            return Err(StoreError::Corrupt {
                reason: format!(
                    "entries [{low}, {high_exclusive}) to apply are not all in the log"
                ),
            });
        }
        Ok(entries)
    }

    /// Appends `batch` to the log in this transaction, exactly as
    /// [`crate::LogStore::append`] does in a transaction of its own (the
    /// same checks, the same `raftgres_append`): the entries and the hard
    /// state commit with the state machine's changes, or not at all. Only
    /// on the log store's connection ([`super::PgStore::begin_apply`]), and
    /// at most once per transaction.
    pub async fn append(&mut self, batch: &AppendBatch) -> Result<(), StoreError> {
        let Connection::Log {
            entries_per_append_max,
        } = self.connection
        else {
            return Err(only_the_log_connection_appends());
        };
        if self.appended.is_some() {
            return Err(StoreError::InvalidBatch {
                reason: "a transaction appends at most once".into(),
            });
        }
        store::check_append(self.bounds, batch, entries_per_append_max)?;
        if batch.entries.is_empty() && batch.hard_state.is_none() {
            return Ok(());
        }
        let parameters = AppendParameters::of(batch);
        let outcome = match self
            .transaction
            .query_one(&self.statements.append, &parameters.as_slice())
            .await
        {
            Ok(row) => check_inserted(row.get(0), batch),
            Err(error) => Err(AppendFailure::Rejected(error)),
        };
        let error = match outcome {
            Ok(()) => {
                let last_index = batch.entries.last().map(|entry| entry.index);
                self.appended = Some((last_index, batch.hard_state));
                return Ok(());
            }
            Err(failure) => append_error(failure, batch, self.bounds),
        };
        // Nothing commits after a failed statement; a lost connection
        // reconnects (and reloads the bounds) before the next transaction.
        *self.broken = error.is_retriable();
        Err(error)
    }

    /// Records `applied` and commits the state machine's changes with it.
    /// `applied.index` must be greater than the stored one (checked here and
    /// again in SQL). On a retriable error the outcome may be unknown: the
    /// caller reloads the applied position after reconnecting and replays.
    pub async fn commit(self, applied: AppliedState) -> Result<(), StoreError> {
        let result = match self.recorded {
            Some((recorded, rows)) if recorded == applied => Ok(rows),
            _ => {
                store::check_applied(self.bounds, &applied)?;
                let parameters = [applied.index as i64, applied.term as i64];
                self.transaction
                    .execute(
                        &self.statements.set_applied,
                        &[&parameters[0], &parameters[1]],
                    )
                    .await
            }
        };
        let current = self.bounds.applied.index;
        let appended = self.appended;
        self.finish(result, "applied index", current, applied.index, |bounds| {
            bounds.applied = applied;
            record_appended(bounds, appended);
        })
        .await
    }

    /// Commits what the transaction appended without moving the applied
    /// position (a batch found applied already); rolls back when it
    /// appended nothing. The state machine's statements must have changed
    /// nothing.
    pub async fn commit_unchanged(self) -> Result<(), StoreError> {
        if let Some((recorded, _)) = self.recorded.filter(|(_, rows)| *rows > 0) {
            // The first statements moved the applied position: committing
            // that without the state machine's changes would skip entries.
            let reason = format!(
                "the transaction recorded applied index {} but commits no change",
                recorded.index
            );
            let _ = self.rollback().await;
            return Err(StoreError::InvalidBatch { reason });
        }
        if self.appended.is_none() {
            return self.rollback().await;
        }
        let ApplyTransaction {
            transaction,
            bounds,
            broken,
            appended,
            ..
        } = self;
        match transaction.commit().await {
            Ok(()) => {
                record_appended(bounds, appended);
                Ok(())
            }
            Err(error) => {
                let error = classify("committing an append", error);
                *broken = error.is_retriable();
                Err(error)
            }
        }
    }

    /// Installs a snapshot in the same transaction as the state machine's
    /// restore: deletes every log entry and the snapshot staging (whose
    /// chunks the restore read), sets both the snapshot marker and
    /// the applied position to `meta`, and the stored membership to
    /// `membership` (an encoded membership the store does not read; `None`
    /// keeps the stored one).
    pub async fn commit_snapshot(
        self,
        meta: SnapshotMeta,
        membership: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        if self.connection == Connection::Applier || self.appended.is_some() {
            return Err(StoreError::InvalidConfig {
                reason: "install snapshots through PgStore::begin_apply, not PgApplier, and not in a transaction that appends: the log connection must see the log change".into(),
            });
        }
        store::check_install_snapshot(self.bounds, &meta)?;
        // Deleting the log must be durable before the caller acknowledges
        // the snapshot, whatever the options said.
        let parameters = [meta.index as i64, meta.term as i64];
        let statements = self.statements;
        let result = async {
            self.transaction
                .batch_execute(
                    "SET LOCAL synchronous_commit = on;
                     TRUNCATE raftgres_snapshot_chunks;
                     DELETE FROM raftgres_snapshot_staged;",
                )
                .await?;
            self.transaction
                .execute(&statements.delete_all, &[])
                .await?;
            let snapshot_rows = self
                .transaction
                .execute(
                    &statements.set_snapshot,
                    &[&parameters[0], &parameters[1], &membership],
                )
                .await?;
            let applied_rows = self
                .transaction
                .execute(
                    &statements.set_applied_for_snapshot,
                    &[&parameters[0], &parameters[1]],
                )
                .await?;
            Ok(snapshot_rows.min(applied_rows))
        }
        .await;
        let current = self.bounds.snapshot.index;
        self.finish(result, "snapshot index", current, meta.index, |bounds| {
            bounds.snapshot = meta;
            bounds.last_index = meta.index;
            bounds.applied = AppliedState {
                index: meta.index,
                term: meta.term,
            };
        })
        .await
    }

    /// Rolls back the state machine's changes.
    pub async fn rollback(self) -> Result<(), StoreError> {
        let result = self.transaction.rollback().await;
        result.map_err(|error| {
            let error = classify("rolling back an apply transaction", error);
            *self.broken = error.is_retriable();
            error
        })
    }

    /// Commits when the guarded update touched its row, and updates the
    /// cached bounds only after the commit succeeded.
    async fn finish(
        self,
        updated: Result<u64, tokio_postgres::Error>,
        what: &'static str,
        current: u64,
        requested: u64,
        update_bounds: impl FnOnce(&mut LogBounds),
    ) -> Result<(), StoreError> {
        let ApplyTransaction {
            transaction,
            bounds,
            broken,
            ..
        } = self;
        let outcome = match updated {
            // Zero rows: the row in the database is already at or beyond
            // the requested position, so the cache was stale; nothing commits.
            Ok(0) => Err(StoreError::Regression {
                what,
                current,
                requested,
            }),
            Ok(_) => transaction
                .commit()
                .await
                .map_err(|error| classify("committing an apply transaction", error)),
            Err(error) => Err(classify("applying", error)),
        };
        match outcome {
            Ok(()) => {
                update_bounds(bounds);
                Ok(())
            }
            Err(error) => {
                *broken = error.is_retriable();
                Err(error)
            }
        }
    }
}

/// Records in the cached bounds what a committed transaction appended.
fn record_appended(bounds: &mut LogBounds, appended: Option<(Option<u64>, Option<HardState>)>) {
    let Some((last_index, hard_state)) = appended else {
        return;
    };
    if let Some(last_index) = last_index {
        bounds.last_index = last_index;
    }
    if let Some(hard_state) = hard_state {
        bounds.hard_state = hard_state;
    }
}
