//! Snapshot transfers against Postgres, carried out for the pipeline's
//! decisions (`crate::pipeline::transfer`): a leader's views of its state
//! machine (obligation 7), a follower's staging of the chunks it receives
//! (obligation 8), and the install of a staged snapshot in one
//! transaction.
//!
//! A chunk's data is an encoded `raftgres.v1.SnapshotPage`: the sessions
//! first, then the state machine's own pages
//! ([`StateMachine::export_page`]). A cursor (where the next chunk starts)
//! is this module's own: its first byte names the part.

use std::sync::Arc;

use prost::Message as _;
use raftgres_proto::v1 as wire;
use raftgres_storage_pg::{
    applied_in, connect_view, ApplyOptions, PgStager, PgStore, PgStoreConfig, StagedHeader,
    StoreError,
};
use tokio::sync::mpsc;
use tokio_postgres::{IsolationLevel, Transaction};

use super::convert;
use super::metrics::Metrics;
use super::state_machine::{sessions, ImportError, ImportPage, StateMachine};
use crate::core::{LogIndex, NodeId, Snapshot, SnapshotChunk, SnapshotMeta, Term};
use crate::pipeline::{ChunkRead, Input, ReadChunk, StageJob, StagedTransfer};

/// Cursor part: the sessions (then the last client id taken).
const SESSIONS: u8 = 0;
/// Cursor part: the state machine (then 0 for its start, or 1 and the
/// state machine's own cursor).
const STATE_MACHINE: u8 = 1;

/// What view tasks and the stager report to the driver; an error stops
/// the node.
pub(crate) type TransferReport = Result<Input, StoreError>;

/// Opens views: spawns a task holding a REPEATABLE READ transaction that
/// answers the reads sent to it and ends when the sender is dropped.
pub(crate) type ViewOpener = Arc<dyn Fn(u64, mpsc::Receiver<ReadChunk>) + Send + Sync>;

/// A [`ViewOpener`] on `config`'s database, reporting to `reports`.
pub(crate) fn view_opener<S: StateMachine>(
    config: PgStoreConfig,
    state_machine: Arc<S>,
    reports: mpsc::Sender<TransferReport>,
) -> ViewOpener {
    Arc::new(move |view, reads| {
        let task = run_view(
            config.clone(),
            state_machine.clone(),
            view,
            reads,
            reports.clone(),
        );
        tokio::spawn(task);
    })
}

async fn run_view<S: StateMachine>(
    config: PgStoreConfig,
    state_machine: Arc<S>,
    view: u64,
    mut reads: mpsc::Receiver<ReadChunk>,
    reports: mpsc::Sender<TransferReport>,
) {
    let serve = async {
        let (mut client, _connection) = connect_view(&config).await?;
        let transaction = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(|error| StoreError::from_postgres("opening a view", error))?;
        // The view's first statement fixes what it sees.
        let applied = applied_in(&transaction).await?;
        let at = SnapshotMeta {
            index: LogIndex(applied.index),
            term: Term(applied.term),
        };
        if reports
            .send(Ok(Input::ViewOpened { view, at }))
            .await
            .is_err()
        {
            return Ok(());
        }
        while let Some(read) = reads.recv().await {
            let (data, next) = read_chunk(
                &transaction,
                state_machine.as_ref(),
                &read.after,
                read.bytes_max,
            )
            .await
            .map_err(|error| StoreError::from_postgres("reading a snapshot chunk", error))?;
            let chunk = ChunkRead {
                view,
                seq: read.seq,
                data,
                next,
            };
            if reports.send(Ok(Input::ChunkRead(chunk))).await.is_err() {
                break;
            }
        }
        Ok::<(), StoreError>(())
    };
    if let Err(error) = serve.await {
        tracing::warn!(view, %error, "a snapshot view failed; the transfer starts over");
        let _ = reports.send(Ok(Input::ViewLost { view })).await;
    }
}

/// The chunk that starts at `after` (empty: the first), about `bytes_max`
/// bytes, and where the next one starts (`None`: this is the last).
pub(crate) async fn read_chunk<S: StateMachine>(
    transaction: &Transaction<'_>,
    state_machine: &S,
    after: &[u8],
    bytes_max: usize,
) -> Result<(Vec<u8>, Option<Vec<u8>>), tokio_postgres::Error> {
    use wire::snapshot_page::Part;
    let page = |part| wire::SnapshotPage { part: Some(part) }.encode_to_vec();
    match after.split_first() {
        None | Some((&SESSIONS, _)) => {
            let last_taken = String::from_utf8_lossy(after.get(1..).unwrap_or_default());
            let (taken, more) = sessions::page(transaction, &last_taken, bytes_max).await?;
            let next = match taken.last() {
                Some(last) if more => [&[SESSIONS], last.client_id.as_bytes()].concat(),
                _ => vec![STATE_MACHINE, 0],
            };
            let data = page(Part::Sessions(wire::SessionsPage { sessions: taken }));
            Ok((data, Some(next)))
        }
        Some((_, inner)) => {
            let after = match inner.split_first() {
                Some((1, cursor)) => Some(cursor),
                _ => None,
            };
            let exported = state_machine
                .export_page(transaction, after, bytes_max)
                .await?;
            let next = exported
                .next
                .map(|cursor| [&[STATE_MACHINE, 1], cursor.as_slice()].concat());
            Ok((page(Part::StateMachine(exported.data)), next))
        }
    }
}

/// Checks a chunk's data before it is staged: a page that decodes, whose
/// sessions are well formed and whose state machine page the state
/// machine accepts.
pub(crate) fn validate_chunk_data<S: StateMachine>(
    state_machine: &S,
    data: &[u8],
) -> Result<(), String> {
    use wire::snapshot_page::Part;
    let page = wire::SnapshotPage::decode(data)
        .map_err(|error| format!("the snapshot chunk does not decode: {error}"))?;
    match page.part {
        Some(Part::Sessions(page)) => {
            for session in &page.sessions {
                if session.client_id.is_empty() || session.sequence == 0 {
                    return Err(format!(
                        "the snapshot holds a session without a client id or sequence ({:?}, {})",
                        session.client_id, session.sequence
                    ));
                }
            }
            Ok(())
        }
        Some(Part::StateMachine(data)) => state_machine.validate_page(&data),
        None => Err("the snapshot chunk holds neither sessions nor state machine rows".into()),
    }
}

/// Runs the stager until its job channel closes: each job in one
/// transaction, retried while the error is retriable; any other error is
/// reported and ends it.
pub(crate) async fn run_stager(
    mut stager: PgStager,
    mut jobs: mpsc::Receiver<StageJob>,
    reports: mpsc::Sender<TransferReport>,
    metrics: Arc<Metrics>,
) {
    while let Some(job) = jobs.recv().await {
        let header = header_of(&job.transfer);
        let mut attempt = 0;
        let outcome = loop {
            match stager.stage(&header, job.restart, &job.chunks).await {
                Ok(()) => break Ok(Input::Staged(job.transfer)),
                Err(error) => {
                    let what = "staging snapshot chunks failed; retrying";
                    if !super::storage::wait_to_retry(&error, &mut attempt, &metrics, what).await {
                        break Err(error);
                    }
                }
            }
        };
        let fatal = outcome.is_err();
        if reports.send(outcome).await.is_err() || fatal {
            break;
        }
    }
    stager.close().await;
}

fn header_of(transfer: &StagedTransfer) -> StagedHeader {
    StagedHeader {
        leader_id: transfer.leader.0,
        view: transfer.view,
        index: transfer.meta.index.0,
        term: transfer.meta.term.0,
        membership: convert::membership_to_bytes(&transfer.membership),
        next_seq: transfer.next_seq,
        running: transfer.running,
        complete: transfer.complete,
    }
}

/// The transfer the staging holds, for the pipeline to resume.
pub(crate) async fn load_staged(
    stager: &mut PgStager,
) -> Result<Option<StagedTransfer>, StoreError> {
    let Some(header) = stager.load().await? else {
        return Ok(None);
    };
    let membership = convert::membership_from_bytes(&header.membership).map_err(|error| {
        StoreError::Corrupt {
            reason: format!("the staged snapshot's membership does not decode: {error}"),
        }
    })?;
    Ok(Some(StagedTransfer {
        leader: NodeId(header.leader_id),
        view: header.view,
        meta: SnapshotMeta {
            index: LogIndex(header.index),
            term: Term(header.term),
        },
        membership,
        next_seq: header.next_seq,
        running: header.running,
        complete: header.complete,
    }))
}

/// Installs the staged snapshot `snapshot` names in one transaction: the
/// state machine's pages, the sessions, the applied index, the log reset
/// and the membership, and the staging emptied. A retry of an install
/// that happened (its commit's outcome was unknown) finds the staging
/// empty and the applied position at the snapshot, and changes nothing.
pub(crate) async fn install_staged<S: StateMachine>(
    store: &mut PgStore,
    state_machine: &S,
    snapshot: &Snapshot,
) -> Result<(), StoreError> {
    use wire::snapshot_page::Part;
    let meta = snapshot.meta;
    let transaction = store.begin_apply(ApplyOptions::default()).await?;
    let header = transaction.staged_header().await?;
    let applied = transaction.applied_before();
    let header = match header {
        Some(header) if header.index == meta.index.0 && header.term == meta.term.0 => header,
        None if (applied.index, applied.term) == (meta.index.0, meta.term.0) => {
            return transaction.rollback().await;
        }
        other => {
            return Err(StoreError::Corrupt {
                reason: format!(
                "asked to install the snapshot through {} (term {}), but the staging holds {:?}",
                meta.index,
                meta.term,
                other.map(|header| (header.index, header.term, header.complete))
            ),
            })
        }
    };
    if !header.complete || header.next_seq == 0 {
        return Err(StoreError::Corrupt {
            reason: format!(
                "asked to install the snapshot through {}, but only {} chunks of it are staged",
                meta.index, header.next_seq
            ),
        });
    }
    let corrupt = |reason: String| StoreError::Corrupt {
        reason: format!("the staged snapshot through {}: {reason}", meta.index),
    };
    transaction
        .transaction()
        .execute("DELETE FROM raftgres_sessions", &[])
        .await
        .map_err(|error| StoreError::from_postgres("installing a snapshot", error))?;
    let mut running = 0;
    let mut state_machine_pages = 0;
    for seq in 0..header.next_seq {
        let data = transaction.staged_chunk(seq).await?;
        running = SnapshotChunk::crc(running, &data);
        let page = wire::SnapshotPage::decode(data.as_slice())
            .map_err(|error| corrupt(format!("chunk {seq} does not decode: {error}")))?;
        let imported = match page.part {
            Some(Part::Sessions(page)) => sessions::import(&transaction.prepared(), &page.sessions)
                .await
                .map_err(ImportError::from),
            Some(Part::StateMachine(data)) => {
                let page = ImportPage {
                    data: &data,
                    first: state_machine_pages == 0,
                    last: seq + 1 == header.next_seq,
                };
                state_machine_pages += 1;
                state_machine
                    .import_page(transaction.transaction(), page)
                    .await
            }
            None => Err(ImportError::Invalid(format!("chunk {seq} is empty"))),
        };
        match imported {
            Ok(()) => {}
            Err(ImportError::Invalid(reason)) => return Err(corrupt(reason)),
            Err(ImportError::Postgres(error)) => {
                return Err(StoreError::from_postgres("installing a snapshot", error))
            }
        }
    }
    if running != header.running || state_machine_pages == 0 {
        return Err(corrupt(format!(
            "its chunks' checksum is {running:#010x}, staged as {:#010x}, with {state_machine_pages} state machine pages",
            header.running
        )));
    }
    let stored_meta = raftgres_storage_pg::SnapshotMeta {
        index: meta.index.0,
        term: meta.term.0,
    };
    let membership = convert::membership_to_bytes(&snapshot.membership);
    transaction
        .commit_snapshot(stored_meta, Some(&membership))
        .await?;
    tracing::info!(
        index = meta.index.0,
        term = meta.term.0,
        chunks = header.next_seq,
        "installed a snapshot from the leader"
    );
    Ok(())
}
