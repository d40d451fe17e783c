//! The node's two storage tasks, each with its own Postgres connection:
//!
//! - the log writer persists the core's batches strictly in order (one
//!   write in flight; the driver merges everything that arrives meanwhile
//!   into the next one: group commit), and applies the committed entries a
//!   write carries in the same transaction (one COMMIT per batch);
//! - the applier applies committed entries that no write carries (the
//!   pipeline hands it a batch only when no write waits to start), in
//!   apply transactions that also record the applied index.
//!
//! [`StandaloneApplier`] is the applier's transaction on its own, for
//! contract tests of state machine models.
//!
//! Both tasks retry retriable failures (Postgres restarting, connection lost)
//! forever with backoff, so that a node whose disk is away stays silent
//! (no votes, no acknowledgements) instead of crash-looping, and report
//! only fatal errors, which stop the node.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message as _;
use raftgres_proto::v1 as wire;
use raftgres_storage_pg::{
    AppendBatch, AppliedState, ApplyOptions, ApplyTransaction, LogStore, OpeningApply, PgApplier,
    PgStore, Prepared, StoreError,
};
use tokio::sync::mpsc;

use super::convert;
use super::metrics::Metrics;
use super::state_machine::{sessions, StateMachine};
use crate::core::{Entry, EntryPayload, LogIndex, Term};
use crate::pipeline::sessions::{apply_segments, SESSION_EXPIRY_STRIDE};
use crate::pipeline::{ApplyBatch, ApplyDone, ApplyOutcome, WriteDone, WriteJob};

/// After a failed storage operation: for a retriable error, counts and
/// logs it, waits with exponential backoff and returns true (try again);
/// for any other error returns false (the node must stop).
pub(super) async fn wait_to_retry(
    error: &StoreError,
    attempt: &mut u32,
    metrics: &Metrics,
    what: &str,
) -> bool {
    if !error.is_retriable() {
        return false;
    }
    metrics.storage_errors.inc();
    tracing::warn!(%error, attempt = *attempt, "{what}");
    tokio::time::sleep(Duration::from_millis(
        (25u64 << (*attempt).min(6)).min(2000),
    ))
    .await;
    *attempt += 1;
    true
}

/// Runs the log writer until its job channel closes.
pub(crate) async fn run_writer<S: StateMachine>(
    mut store: PgStore,
    state_machine: Arc<S>,
    settings: ApplierSettings,
    mut jobs: mpsc::Receiver<WriteJob>,
    done: mpsc::Sender<Result<WriteDone, StoreError>>,
    outcomes: mpsc::UnboundedSender<Vec<(LogIndex, Term, ApplyOutcome)>>,
    metrics: Arc<Metrics>,
) -> PgStore {
    while let Some(mut job) = jobs.recv().await {
        // Carrying out the job takes the snapshot out of it once installed.
        let installed = job.snapshot.clone();
        let mut attempt = 0;
        let outcome = loop {
            let started = Instant::now();
            let early = Some(&outcomes);
            match write(
                &mut store,
                state_machine.as_ref(),
                settings,
                &mut job,
                early,
            )
            .await
            {
                Ok(applied) => {
                    metrics
                        .storage_write_seconds
                        .observe(started.elapsed().as_secs_f64());
                    metrics
                        .append_batch_entries
                        .observe(job.entries.len() as f64);
                    if let Some(batch) = &job.apply {
                        metrics
                            .applied_with_write_entries
                            .inc_by(batch.entries.len() as u64);
                    }
                    metrics.storage_healthy.set(1);
                    break Ok(WriteDone {
                        installed,
                        ..WriteDone::of(job, applied)
                    });
                }
                Err(error) => {
                    metrics.storage_healthy.set(0);
                    let what =
                        "log write failed; not acknowledging or voting until Postgres is back";
                    if !wait_to_retry(&error, &mut attempt, &metrics, what).await {
                        break Err(error);
                    }
                }
            }
        };
        let fatal = outcome.is_err();
        if done.send(outcome).await.is_err() || fatal {
            break;
        }
    }
    store
}

/// Carries out one write and reports the apply batch it carried. A
/// snapshot is installed from the staging in its own transaction (state
/// machine, sessions, log reset and applied index together) before the
/// entries that follow it;
/// once installed it is taken out of the job, so a retry after a failed
/// append does not install it twice. A carried apply batch commits in the
/// append's transaction (synchronously: the log must be durable); a retry
/// after an unknown outcome appends the same entries again (harmless) and
/// answers entries already applied as unknown.
async fn write<S: StateMachine>(
    store: &mut PgStore,
    state_machine: &S,
    settings: ApplierSettings,
    job: &mut WriteJob,
    early: EarlyOutcomes<'_>,
) -> Result<Option<ApplyDone>, StoreError> {
    if let Some(snapshot) = &job.snapshot {
        // The snapshot's term may be above the stored term: store the hard
        // state first, so that a crash between the two transactions leaves
        // a term ahead of the log (harmless) rather than a log ahead of the
        // term (a node that cannot restart).
        if let Some(hard_state) = job.hard_state {
            store
                .append(AppendBatch {
                    hard_state: Some(convert::hard_state_to_storage(hard_state)),
                    entries: Vec::new(),
                })
                .await?;
        }
        super::snapshots::install_staged(store, state_machine, snapshot).await?;
        job.snapshot = None;
    }
    let batch = AppendBatch {
        hard_state: job.hard_state.map(convert::hard_state_to_storage),
        entries: job.entries.iter().map(convert::entry_to_storage).collect(),
    };
    let applied = match &job.apply {
        Some(apply) => {
            let options = ApplyOptions {
                synchronous_commit_off: false,
                applying_through: Some(applying_through(apply)),
            };
            let opening = store.open_apply_appending(options, &batch).await?;
            match apply_pipelined(opening, state_machine, settings, apply, early).await? {
                Some(done) => Some(done),
                None => {
                    let transaction = store.begin_apply_appending(options, &batch).await?;
                    Some(apply_in(transaction, state_machine, settings, apply, early).await?)
                }
            }
        }
        None => {
            if batch.hard_state.is_some() || !batch.entries.is_empty() {
                store.append(batch).await?;
            }
            None
        }
    };
    if let Some((meta, membership)) = &job.compact_to {
        // Not past the stored applied index: a Postgres crash may have
        // lost asynchronous applies the snapshot was taken from.
        let membership = convert::membership_to_bytes(membership);
        store
            .compact_applied(meta.index.0, meta.term.0, &membership)
            .await?;
    }
    Ok(applied)
}

/// Settings of the applies, on the applier and on the log writer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ApplierSettings {
    /// Applies that no write carries commit with synchronous_commit off.
    pub(crate) asynchronous_commit: bool,
    pub(crate) session_expiry_entries: u64,
}

/// Where an apply reports its outcomes before its COMMIT
/// (`Input::Outcomes`), so that clients are answered without waiting for
/// the COMMIT and its fsync. `None` for [`StandaloneApplier`].
type EarlyOutcomes<'a> = Option<&'a mpsc::UnboundedSender<Vec<(LogIndex, Term, ApplyOutcome)>>>;

/// Reports `outcomes` early, if anyone listens, and returns what the
/// COMMIT's report still has to carry: nothing once they were sent.
fn report_early(
    early: EarlyOutcomes<'_>,
    outcomes: Vec<(LogIndex, Term, ApplyOutcome)>,
) -> Vec<(LogIndex, Term, ApplyOutcome)> {
    let Some(early) = early else {
        return outcomes;
    };
    match early.send(outcomes) {
        Ok(()) => Vec::new(),
        // The driver is gone (the node is stopping): keep them.
        Err(unsent) => unsent.0,
    }
}

/// How long the applier keeps a transaction begun ahead while no batch
/// comes; then it ends it, and the next batch begins its own.
const BEGUN_AHEAD_IDLE_MAX: Duration = Duration::from_secs(1);

/// What the driver hands the applier: the pipeline's `Output::Apply`,
/// `ApplyAhead`, `ConfirmApply` and `AbandonApply`.
#[derive(Debug)]
pub(crate) enum ApplierJob {
    /// Committed entries to apply.
    Apply(ApplyBatch),
    /// A leader's entries to apply ahead of their commit: outcomes now,
    /// the rest on `Confirm`.
    Ahead(ApplyBatch),
    /// The batch handed out ahead is committed.
    Confirm,
    /// The batch handed out ahead will not be confirmed.
    Abandon,
}

/// What the applier reports for a batch.
#[derive(Debug)]
pub(crate) enum ApplierReport {
    /// Applied and committed (`Input::ApplyDone`).
    Applied(ApplyDone),
    /// The batch handed out ahead was rolled back (`Input::ApplyAbandoned`).
    Abandoned,
}

/// Runs the applier until its channel closes. While it waits for a batch
/// it holds the next transaction begun ([`BegunApply`]), so that a batch's
/// first statements go out at once.
pub(crate) async fn run_applier<S: StateMachine>(
    mut applier: PgApplier,
    state_machine: Arc<S>,
    settings: ApplierSettings,
    mut jobs: mpsc::Receiver<ApplierJob>,
    done: mpsc::Sender<Result<ApplierReport, StoreError>>,
    outcomes: mpsc::UnboundedSender<Vec<(LogIndex, Term, ApplyOutcome)>>,
    metrics: Arc<Metrics>,
) {
    loop {
        let early = Some(&outcomes);
        let state_machine = state_machine.as_ref();
        let applying = Applying {
            state_machine,
            settings,
            early,
        };
        // The apply is timed from its batch's arrival.
        let mut started;
        // A block, so that the transaction begun ahead no longer borrows
        // the applier after it.
        let first = {
            let mut begun = applier.begin_ahead().await.ok();
            let job = loop {
                let job = match &begun {
                    Some(_) => {
                        match tokio::time::timeout(BEGUN_AHEAD_IDLE_MAX, jobs.recv()).await {
                            Ok(job) => job,
                            Err(_) => {
                                // Idle: end it and wait outside a
                                // transaction; the next batch begins its
                                // own. A failure here shows again then.
                                if let Some(idle) = begun.take() {
                                    let _ = idle.release().await;
                                }
                                continue;
                            }
                        }
                    }
                    None => jobs.recv().await,
                };
                match job {
                    Some(job @ (ApplierJob::Confirm | ApplierJob::Abandon)) => {
                        panic!("the applier got {job:?} without a batch applied ahead")
                    }
                    job => break job,
                }
            };
            started = Instant::now();
            let (batch, ahead) = match job {
                None => break,
                Some(ApplierJob::Apply(batch)) => (batch, false),
                Some(ApplierJob::Ahead(batch)) => (batch, true),
                Some(ApplierJob::Confirm | ApplierJob::Abandon) => unreachable!("refused above"),
            };
            match begun {
                Some(begun) => {
                    let opening = Ok(begun.open(first_options(settings, &batch, ahead)));
                    let attempt =
                        first_attempt(opening, ahead, &batch, applying, &mut jobs, &mut started)
                            .await;
                    First::Attempted(batch, attempt)
                }
                None => First::NotBegun(batch, ahead),
            }
        };
        let (batch, attempt) = match first {
            First::Attempted(batch, attempt) => (batch, attempt),
            First::NotBegun(batch, ahead) => {
                let opening = applier
                    .open_apply(first_options(settings, &batch, ahead))
                    .await;
                let attempt =
                    first_attempt(opening, ahead, &batch, applying, &mut jobs, &mut started).await;
                (batch, attempt)
            }
        };
        let first_attempt = match attempt {
            Attempt::Done(result) => result,
            Attempt::Abandoned => {
                metrics.applies_ahead_abandoned.inc();
                if done.send(Ok(ApplierReport::Abandoned)).await.is_err() {
                    break;
                }
                continue;
            }
            Attempt::Stopping => break,
        };
        let mut result = match first_attempt {
            Ok(Some(done)) => Ok(done),
            Err(error) => Err(error),
            // The applied position was not right below the batch.
            Ok(None) => apply_carefully(&mut applier, state_machine, settings, &batch, early).await,
        };
        let mut attempt = 0;
        let outcome = loop {
            match result {
                Ok(done) => {
                    metrics
                        .apply_seconds
                        .observe(started.elapsed().as_secs_f64());
                    break Ok(ApplierReport::Applied(done));
                }
                Err(error) => {
                    let what = "apply failed; retrying when Postgres is back";
                    if !wait_to_retry(&error, &mut attempt, &metrics, what).await {
                        break Err(error);
                    }
                }
            }
            started = Instant::now();
            result = apply_batch(&mut applier, state_machine, settings, &batch, early).await;
        };
        let fatal = outcome.is_err();
        if done.send(outcome).await.is_err() || fatal {
            break;
        }
    }
}

/// A batch received, before or after its first attempt.
enum First {
    /// Attempted in the transaction begun ahead.
    Attempted(ApplyBatch, Attempt),
    /// Nothing was begun (Postgres was away): still to attempt. `true`
    /// for a batch handed out ahead.
    NotBegun(ApplyBatch, bool),
}

/// How a batch's first attempt ended.
enum Attempt {
    /// Applied, failed (retried), or `None`: found the applied index
    /// elsewhere (applied the careful way). For a batch handed out ahead,
    /// only once confirmed.
    Done(Result<Option<ApplyDone>, StoreError>),
    /// Handed out ahead and abandoned.
    Abandoned,
    /// The driver is gone.
    Stopping,
}

/// A batch's first attempt, in `opening` (a batch handed out ahead as
/// [`apply_ahead`] applies it, and timed from its confirmation: `started`
/// moves then).
async fn first_attempt<S: StateMachine>(
    opening: Result<OpeningApply<'_, '_>, StoreError>,
    ahead: bool,
    batch: &ApplyBatch,
    applying: Applying<'_, S>,
    jobs: &mut mpsc::Receiver<ApplierJob>,
    started: &mut Instant,
) -> Attempt {
    if ahead {
        return apply_ahead(opening, batch, applying, jobs, started).await;
    }
    let Applying {
        state_machine,
        settings,
        early,
    } = applying;
    Attempt::Done(match opening {
        Ok(opening) => apply_pipelined(opening, state_machine, settings, batch, early).await,
        Err(error) => Err(error),
    })
}

/// What every apply uses: the state machine, the settings, and where its
/// outcomes go before the COMMIT.
struct Applying<'a, S> {
    state_machine: &'a S,
    settings: ApplierSettings,
    early: EarlyOutcomes<'a>,
}

impl<S> Clone for Applying<'_, S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S> Copy for Applying<'_, S> {}

/// Applies a batch handed out ahead of its commit (the pipeline's
/// obligation 3a): its statements and outcomes now, on the assumption that
/// the applied index stands right below it; then it waits for the
/// pipeline's word, and only on `Confirm` reports the outcomes and
/// commits. Whatever happened before the word, the word decides: a
/// failure waits for it too, so an abandoned batch never comes back as
/// a retry, and a confirmed one that was not applied (an error, retried
/// with backoff; the applied index elsewhere, `Ok(None)`: applied the
/// careful way) is then a committed batch like any other.
async fn apply_ahead<S: StateMachine>(
    opening: Result<OpeningApply<'_, '_>, StoreError>,
    batch: &ApplyBatch,
    applying: Applying<'_, S>,
    jobs: &mut mpsc::Receiver<ApplierJob>,
    confirmed_at: &mut Instant,
) -> Attempt {
    let Applying {
        state_machine,
        settings,
        early,
    } = applying;
    let prepared = match opening {
        Ok(opening) => prepare_pipelined(opening, state_machine, settings, batch).await,
        Err(error) => Err(error),
    };
    let word = jobs.recv().await;
    *confirmed_at = Instant::now();
    match word {
        Some(ApplierJob::Confirm) => match prepared {
            Ok(Some((transaction, outcomes))) => {
                let outcomes = report_early(early, outcomes);
                match transaction.commit(applying_through(batch)).await {
                    Ok(()) => Attempt::Done(Ok(Some(ApplyDone {
                        applied: applying_through_index(batch),
                        outcomes,
                    }))),
                    Err(error) => Attempt::Done(Err(error)),
                }
            }
            other => Attempt::Done(other.map(|_| None)),
        },
        Some(ApplierJob::Abandon) => {
            if let Ok(Some((transaction, _))) = prepared {
                // A failed rollback leaves nothing committed either.
                let _ = transaction.rollback().await;
            }
            Attempt::Abandoned
        }
        Some(job) => panic!(
            "the applier got {job:?} while a batch applied ahead waited for the pipeline's word"
        ),
        None => Attempt::Stopping,
    }
}

/// Applies `batch` in a transaction of its own on the applier's connection.
async fn apply_batch<S: StateMachine>(
    applier: &mut PgApplier,
    state_machine: &S,
    settings: ApplierSettings,
    batch: &ApplyBatch,
    early: EarlyOutcomes<'_>,
) -> Result<ApplyDone, StoreError> {
    let opening = applier.open_apply(apply_options(settings, batch)).await?;
    if let Some(done) = apply_pipelined(opening, state_machine, settings, batch, early).await? {
        return Ok(done);
    }
    apply_carefully(applier, state_machine, settings, batch, early).await
}

/// Applies `batch` after reading where the applied position stands (see
/// [`apply_in`]).
async fn apply_carefully<S: StateMachine>(
    applier: &mut PgApplier,
    state_machine: &S,
    settings: ApplierSettings,
    batch: &ApplyBatch,
    early: EarlyOutcomes<'_>,
) -> Result<ApplyDone, StoreError> {
    let transaction = applier.begin_apply(apply_options(settings, batch)).await?;
    apply_in(transaction, state_machine, settings, batch, early).await
}

/// How the first attempt at `batch` commits: a batch a leader applied
/// ahead of its commit without waiting for its WAL flush
/// ([`crate::pipeline::commits_without_flush`]; at one client the
/// leader's log write took 0.51 to 0.58 ms while it waited behind that
/// flush, 0.26 to 0.28 without), any other as [`apply_options`] says.
fn first_options(settings: ApplierSettings, batch: &ApplyBatch, ahead: bool) -> ApplyOptions {
    ApplyOptions {
        synchronous_commit_off: crate::pipeline::commits_without_flush(
            settings.asynchronous_commit,
            ahead,
        ),
        ..apply_options(settings, batch)
    }
}

/// How the applier's transaction for `batch` commits.
fn apply_options(settings: ApplierSettings, batch: &ApplyBatch) -> ApplyOptions {
    ApplyOptions {
        synchronous_commit_off: settings.asynchronous_commit,
        applying_through: Some(applying_through(batch)),
    }
}

/// The applied position an apply of `batch` commits: its last entry's.
/// Told to the transaction as it begins, so that the position's update
/// rides its first round trip.
fn applying_through(batch: &ApplyBatch) -> AppliedState {
    let last = batch.entries.last().expect("apply batches are never empty");
    AppliedState {
        index: last.index.0,
        term: last.term.0,
    }
}

/// Applies `batch` on the assumption that the applied position stands
/// right below it, as it does unless a commit's outcome was lost or a
/// Postgres crash lost asynchronous applies: the state machine's first
/// statements ride the transaction's first round trip (with the lock of
/// the applied row, the append and the position's update), one round trip
/// less than [`apply_in`]. `None`, the transaction rolled back, when the
/// assumption was wrong: the caller applies through [`apply_in`].
async fn apply_pipelined<S: StateMachine>(
    opening: OpeningApply<'_, '_>,
    state_machine: &S,
    settings: ApplierSettings,
    batch: &ApplyBatch,
    early: EarlyOutcomes<'_>,
) -> Result<Option<ApplyDone>, StoreError> {
    let Some((transaction, outcomes)) =
        prepare_pipelined(opening, state_machine, settings, batch).await?
    else {
        return Ok(None);
    };
    // Only now: outcomes computed on a wrong idea of the applied index
    // (the `None` above) must never reach a client.
    let outcomes = report_early(early, outcomes);
    transaction.commit(applying_through(batch)).await?;
    Ok(Some(ApplyDone {
        applied: applying_through_index(batch),
        outcomes,
    }))
}

/// [`apply_pipelined`] up to the COMMIT: the open transaction and the
/// batch's outcomes, or `None` (rolled back) when the applied position was
/// not right below the batch.
async fn prepare_pipelined<'a, S: StateMachine>(
    opening: OpeningApply<'a, '_>,
    state_machine: &S,
    settings: ApplierSettings,
    batch: &ApplyBatch,
) -> Result<Option<(ApplyTransaction<'a>, Vec<(LogIndex, Term, ApplyOutcome)>)>, StoreError> {
    let entries = batch.entries.as_slice();
    let first = entries.first().expect("apply batches are never empty");
    let applied_before = first.index.0 - 1;
    let prepared = opening.prepared();
    let (first_statements, outcomes) = futures::join!(
        opening.first_statements(),
        apply_entries(&prepared, state_machine, settings, entries, applied_before)
    );
    let transaction = opening.opened(first_statements)?;
    if transaction.applied_before().index != applied_before {
        return Ok(None);
    }
    let outcomes =
        outcomes.map_err(|error| StoreError::from_postgres("applying committed entries", error))?;
    Ok(Some((transaction, outcomes)))
}

/// The index an apply of `batch` reaches.
fn applying_through_index(batch: &ApplyBatch) -> LogIndex {
    batch
        .entries
        .last()
        .expect("apply batches are never empty")
        .index
}

/// Applies `batch` in `transaction` (which may have appended to the log
/// already) and commits.
async fn apply_in<S: StateMachine>(
    transaction: ApplyTransaction<'_>,
    state_machine: &S,
    settings: ApplierSettings,
    batch: &ApplyBatch,
    early: EarlyOutcomes<'_>,
) -> Result<ApplyDone, StoreError> {
    let entries = batch.entries.as_slice();
    let applied_before = transaction.applied_before().index;
    let last = entries.last().expect("apply batches are never empty");
    if last.index.0 <= applied_before {
        // Nothing to apply; what the transaction appended still commits.
        transaction.commit_unchanged().await?;
        let outcomes = entries
            .iter()
            .map(|entry| (entry.index, entry.term, ApplyOutcome::Unknown))
            .collect();
        return Ok(ApplyDone {
            applied: last.index,
            outcomes,
        });
    }
    let first = entries
        .first()
        .expect("apply batches are never empty")
        .index
        .0;
    let replayed;
    let entries = if first > applied_before + 1 {
        // An apply committed asynchronously was lost when Postgres crashed
        // under this node: replay the gap from the durable log first.
        let gap = transaction.log_entries(applied_before + 1, first).await?;
        tracing::warn!(
            from = applied_before + 1,
            to = first - 1,
            "replaying applies lost in a Postgres crash"
        );
        let gap = gap
            .into_iter()
            .map(convert::entry_from_storage)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|reason| StoreError::Corrupt { reason })?;
        replayed = gap
            .into_iter()
            .chain(entries.iter().cloned())
            .collect::<Vec<_>>();
        replayed.as_slice()
    } else {
        entries
    };
    let outcomes = apply_entries(
        &transaction.prepared(),
        state_machine,
        settings,
        entries,
        applied_before,
    )
    .await
    .map_err(|error| StoreError::from_postgres("applying committed entries", error))?;
    let outcomes = report_early(early, outcomes);
    transaction.commit(applying_through(batch)).await?;
    Ok(ApplyDone {
        applied: last.index,
        outcomes,
    })
}

/// The node's apply path without the rest of the node: each call to
/// [`StandaloneApplier::apply`] is one apply transaction exactly as the
/// node's applier runs it (the session rules, session expiry at the
/// positions `crate::pipeline::sessions` names, the state machine's batch,
/// the applied index, committed together), with synchronous commits. It
/// exists so that other models of a state machine can be
/// held against the product: `tests/tests/kv_contract/` runs the
/// simulator's KV model and this side by side.
pub struct StandaloneApplier<S: StateMachine> {
    applier: PgApplier,
    state_machine: S,
    settings: ApplierSettings,
}

impl<S: StateMachine> std::fmt::Debug for StandaloneApplier<S> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("StandaloneApplier")
            .field("applier", &self.applier)
            .field("settings", &self.settings)
            .finish()
    }
}

impl<S: StateMachine> StandaloneApplier<S> {
    /// Creates the state machine's tables and the session table (as a
    /// starting node does) and opens the apply connection. The log store
    /// must exist already (`PgStore::open` on the same configuration);
    /// sessions unused for `session_expiry_entries` entries expire.
    pub async fn open(
        config: raftgres_storage_pg::PgStoreConfig,
        state_machine: S,
        session_expiry_entries: u64,
    ) -> Result<StandaloneApplier<S>, StoreError> {
        let connector = raftgres_storage_pg::PgConnector::new(&config.conninfo)?;
        let (client, _connection) = connector
            .connect(config.connect_timeout, "raftgres-standalone-applier")
            .await?;
        super::state_machine::migrate_tables(&state_machine, &client)
            .await
            .map_err(|error| StoreError::from_postgres("creating the tables", error))?;
        let applier = PgApplier::open(config).await?;
        let settings = ApplierSettings {
            asynchronous_commit: false,
            session_expiry_entries,
        };
        Ok(StandaloneApplier {
            applier,
            state_machine,
            settings,
        })
    }

    /// Applies consecutive committed `entries` in one transaction and
    /// reports one outcome per entry, as the node's applier reports to the
    /// pipeline. Entries at or below the stored applied index are answered
    /// [`ApplyOutcome::Unknown`] (a batch delivered again after a commit
    /// whose outcome was lost); a gap below the batch is replayed from the
    /// stored log. Errors are the applier's: the node would retry a
    /// retriable one and stop on any other. Panics when `entries` is
    /// empty: the node never forms an empty batch.
    pub async fn apply(&mut self, entries: &[Entry]) -> Result<ApplyDone, StoreError> {
        assert!(!entries.is_empty(), "apply batches are never empty");
        let batch = ApplyBatch {
            entries: entries.to_vec(),
        };
        apply_batch(
            &mut self.applier,
            &self.state_machine,
            self.settings,
            &batch,
            None,
        )
        .await
    }

    /// Releases the applier lock and closes the connection.
    pub async fn close(self) {
        self.applier.close().await;
    }
}

/// What to do with one entry of a batch.
enum Plan {
    /// Answer without applying.
    Answer(ApplyOutcome),
    /// Apply; its response is `responses[slot]`.
    Apply { slot: usize },
    /// A retry of a command applied earlier in this batch.
    SameAs { slot: usize },
}

/// Applies the entries above `applied_before`, split where sessions expire
/// (see `crate::pipeline::sessions`), so that every replica forgets a
/// session right after the same entry whatever its batches.
async fn apply_entries<S: StateMachine>(
    transaction: &Prepared<'_, tokio_postgres::Transaction<'_>>,
    state_machine: &S,
    settings: ApplierSettings,
    entries: &[Entry],
    applied_before: u64,
) -> Result<Vec<(LogIndex, Term, ApplyOutcome)>, tokio_postgres::Error> {
    let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
        return Ok(Vec::new());
    };
    let mut outcomes = Vec::with_capacity(entries.len());
    for segment in apply_segments(
        first.index,
        last.index,
        SESSION_EXPIRY_STRIDE,
        settings.session_expiry_entries,
    ) {
        let from = (segment.indexes.start() - first.index.0) as usize;
        let to = (segment.indexes.end() - first.index.0) as usize;
        outcomes.extend(
            apply_segment(
                transaction,
                state_machine,
                &entries[from..=to],
                applied_before,
            )
            .await?,
        );
        if let Some(before) = segment.expire_before {
            // Idempotent: redoing an expiry already done (entries at or
            // below `applied_before`) forgets nothing more.
            sessions::expire_before(transaction, before.0).await?;
        }
    }
    Ok(outcomes)
}

/// Applies the entries above `applied_before` in three round trips however
/// many there are: read the sessions they use, apply the new commands as one
/// state machine batch, record the sessions.
async fn apply_segment<S: StateMachine>(
    transaction: &Prepared<'_, tokio_postgres::Transaction<'_>>,
    state_machine: &S,
    entries: &[Entry],
    applied_before: u64,
) -> Result<Vec<(LogIndex, Term, ApplyOutcome)>, tokio_postgres::Error> {
    let commands: Vec<Option<wire::LogCommand>> = entries
        .iter()
        .map(|entry| match &entry.payload {
            EntryPayload::Command(data) if entry.index.0 > applied_before => {
                wire::LogCommand::decode(data.as_slice()).ok()
            }
            _ => None,
        })
        .collect();
    let client_ids: Vec<&str> = commands
        .iter()
        .flatten()
        .map(|command| command.client_id.as_str())
        .filter(|client_id| !client_id.is_empty())
        .collect();
    let mut known = sessions::load(transaction, &client_ids).await?;
    let mut plans = Vec::with_capacity(entries.len());
    let mut to_apply: Vec<(u64, &[u8])> = Vec::new();
    for (entry, command) in entries.iter().zip(&commands) {
        let plan = match (command, &entry.payload) {
            _ if entry.index.0 <= applied_before => Plan::Answer(ApplyOutcome::Unknown),
            (None, EntryPayload::Blank | EntryPayload::Membership(_)) => {
                Plan::Answer(ApplyOutcome::Response(Vec::new()))
            }
            // Never proposed by this version; every replica skips it alike.
            (None, _) => Plan::Answer(ApplyOutcome::Refused("undecodable log command".into())),
            (Some(command), _) => plan_command(command, entry.index.0, &mut known, &mut to_apply),
        };
        plans.push(plan);
    }
    let responses = state_machine.apply_batch(transaction, &to_apply).await?;
    let mut recorded = sessions::Batch::default();
    let mut outcomes = Vec::with_capacity(entries.len());
    for ((entry, command), plan) in entries.iter().zip(&commands).zip(plans) {
        let outcome = match plan {
            Plan::Answer(outcome) => outcome,
            Plan::Apply { slot } => {
                // Only the first application is recorded: a retry answers
                // with this response and this index.
                if let Some(command) = command
                    .as_ref()
                    .filter(|command| !command.client_id.is_empty())
                {
                    recorded.record(
                        &command.client_id,
                        command.sequence,
                        &responses[slot],
                        entry.index.0,
                    );
                }
                ApplyOutcome::Response(responses[slot].clone())
            }
            Plan::SameAs { slot } => ApplyOutcome::Repeated {
                response: responses[slot].clone(),
                first_index: LogIndex(to_apply[slot].0),
            },
        };
        outcomes.push((entry.index, entry.term, outcome));
    }
    sessions::save(transaction, &recorded).await?;
    Ok(outcomes)
}

fn plan_command<'a>(
    command: &'a wire::LogCommand,
    index: u64,
    known: &mut std::collections::BTreeMap<String, sessions::Last>,
    to_apply: &mut Vec<(u64, &'a [u8])>,
) -> Plan {
    if command.client_id.is_empty() {
        to_apply.push((index, &command.command));
        return Plan::Apply {
            slot: to_apply.len() - 1,
        };
    }
    let last = known.get(&command.client_id);
    match last.map(|last| command.sequence.cmp(&last.sequence)) {
        Some(std::cmp::Ordering::Equal) => match &last.expect("compared above").response {
            sessions::Response::Stored { response, index } => {
                Plan::Answer(ApplyOutcome::Repeated {
                    response: response.clone(),
                    first_index: LogIndex(*index),
                })
            }
            sessions::Response::InBatch(slot) => Plan::SameAs { slot: *slot },
        },
        Some(std::cmp::Ordering::Less) => Plan::Answer(ApplyOutcome::Refused(format!(
            "sequence {} of client {:?} is older than its latest applied sequence {}",
            command.sequence,
            command.client_id,
            last.expect("compared above").sequence
        ))),
        _ => {
            to_apply.push((index, &command.command));
            let slot = to_apply.len() - 1;
            let response = sessions::Response::InBatch(slot);
            known.insert(
                command.client_id.clone(),
                sessions::Last {
                    sequence: command.sequence,
                    response,
                },
            );
            Plan::Apply { slot }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_attempt_at_a_batch_applied_ahead_skips_the_wal_flush() {
        let batch = ApplyBatch {
            entries: vec![Entry {
                term: Term(2),
                index: LogIndex(7),
                payload: EntryPayload::Blank,
            }],
        };
        let settings = |asynchronous_commit| ApplierSettings {
            asynchronous_commit,
            session_expiry_entries: 1,
        };
        let ahead = first_options(settings(false), &batch, true);
        assert!(ahead.synchronous_commit_off);
        assert_eq!(
            ahead.applying_through,
            Some(AppliedState { index: 7, term: 2 })
        );
        assert!(!first_options(settings(false), &batch, false).synchronous_commit_off);
        // Its retries, and every other apply, as configured.
        assert!(!apply_options(settings(false), &batch).synchronous_commit_off);
        assert!(apply_options(settings(true), &batch).synchronous_commit_off);
        assert!(first_options(settings(true), &batch, false).synchronous_commit_off);
    }
}
