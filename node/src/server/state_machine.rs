//! Replicated state machines whose state lives in the node's Postgres.
//!
//! The applier calls [`StateMachine::apply`] for every committed command,
//! inside the store's apply transaction: the state machine's changes and
//! the new applied index commit together (design rule 4), so replaying the
//! log after a crash never applies an entry twice.

use std::future::Future;

use raftgres_storage_pg::Prepared;
use tokio_postgres::{Client, Transaction};

/// A deterministic state machine stored in Postgres tables of its own.
///
/// Run a node with one through [`crate::server::serve_with`]; clients reach
/// it through `raftgres.v1.Client.Submit` (opaque commands, answered with
/// the state machine's response) and through whatever services
/// [`StateMachine::client_routes`] adds. `examples/ledger_node.rs` is a
/// complete one.
pub trait StateMachine: Send + Sync + 'static {
    /// The gRPC services of this state machine's own client API, served
    /// next to the generic `raftgres.v1.Client` and `Cluster`. Build them
    /// on `node` (propose commands, wait for reads, query the tables) and
    /// wrap each in [`crate::server::NodeApi::admit`]. `None` (the default):
    /// clients use `Client.Submit` only.
    fn client_routes(node: crate::server::NodeApi<Self>) -> Option<tonic::service::Routes>
    where
        Self: Sized,
    {
        let _ = node;
        None
    }

    /// The encoded `FileDescriptorSet`s of the services
    /// [`Self::client_routes`] adds, for gRPC server reflection. None by
    /// default.
    fn file_descriptor_sets() -> &'static [&'static [u8]]
    where
        Self: Sized,
    {
        &[]
    }

    /// Creates (idempotently) the state machine's tables.
    fn migrate(
        &self,
        client: &Client,
    ) -> impl Future<Output = Result<(), tokio_postgres::Error>> + Send;

    /// Checks a command before it is proposed, so malformed commands never
    /// reach the log. The error explains what is wrong.
    fn validate(&self, command: &[u8]) -> Result<(), String>;

    /// Applies one committed command at log `index` and returns the
    /// response for the client. Must be deterministic: every replica
    /// applies the same commands in the same order and must end in the
    /// same state. An `Err` is a database failure (the batch is retried).
    /// `transaction` dereferences to the apply transaction; a statement
    /// sent on every apply is best run through [`Prepared::query_prepared`],
    /// which prepares it once per connection.
    fn apply(
        &self,
        transaction: &Prepared<'_, Transaction<'_>>,
        index: u64,
        command: &[u8],
    ) -> impl Future<Output = Result<Vec<u8>, tokio_postgres::Error>> + Send;

    /// Applies consecutive committed commands `(index, command)` in order
    /// and returns their responses in the same order. The default applies
    /// them one by one; a state machine can do better (one round trip for
    /// the whole batch).
    fn apply_batch(
        &self,
        transaction: &Prepared<'_, Transaction<'_>>,
        commands: &[(u64, &[u8])],
    ) -> impl Future<Output = Result<Vec<Vec<u8>>, tokio_postgres::Error>> + Send {
        async move {
            let mut responses = Vec::with_capacity(commands.len());
            for (index, command) in commands {
                responses.push(self.apply(transaction, *index, command).await?);
            }
            Ok(responses)
        }
    }

    /// Serializes the whole state. Snapshots stream page by page (see
    /// [`Self::export_page`]); this is what the default pages are cut
    /// from.
    fn snapshot(
        &self,
        transaction: &Transaction<'_>,
    ) -> impl Future<Output = Result<Vec<u8>, tokio_postgres::Error>> + Send;

    /// Checks whole snapshot bytes made by [`Self::snapshot`] before
    /// anything is replaced: a snapshot that fails it when it is installed
    /// stops the node (corrupt data must never empty the state). The error
    /// explains what is wrong.
    fn validate_snapshot(&self, data: &[u8]) -> Result<(), String>;

    /// Replaces the whole state with a snapshot made by [`Self::snapshot`]
    /// (and accepted by [`Self::validate_snapshot`]).
    fn restore(
        &self,
        transaction: &Transaction<'_>,
        data: &[u8],
    ) -> impl Future<Output = Result<(), tokio_postgres::Error>> + Send;

    /// One page of the state as `transaction` (a REPEATABLE READ view)
    /// sees it: the rows after `after` (`None`: from the first), in an
    /// order of the state machine's choosing that is the same for every
    /// page, about `bytes_max` bytes of them (at least one row while any
    /// is left). A leader streams snapshots page by page, so a state of
    /// any size travels without being held in memory.
    ///
    /// The default cuts the bytes of [`Self::snapshot`] into pages, taking
    /// the whole snapshot again for every page: right for a small state.
    /// A state machine that may grow large overrides this and
    /// [`Self::import_page`] (as [`crate::server::KvStateMachine`] does).
    fn export_page(
        &self,
        transaction: &Transaction<'_>,
        after: Option<&[u8]>,
        bytes_max: usize,
    ) -> impl Future<Output = Result<ExportPage, tokio_postgres::Error>> + Send {
        async move {
            let whole = self.snapshot(transaction).await?;
            // Cursors are this exporter's own: the byte offset reached.
            let start = after
                .and_then(|after| <[u8; 8]>::try_from(after).ok())
                .map_or(0, |offset| u64::from_be_bytes(offset) as usize)
                .min(whole.len());
            let end = start.saturating_add(bytes_max.max(1)).min(whole.len());
            Ok(ExportPage {
                data: whole[start..end].to_vec(),
                next: (end < whole.len()).then(|| (end as u64).to_be_bytes().to_vec()),
            })
        }
    }

    /// Checks one page made by [`Self::export_page`] before a follower
    /// stages it; a page that fails is refused at the peer boundary. The
    /// default accepts every page: its pages are slices of a snapshot,
    /// which [`Self::import_page`] checks whole.
    fn validate_page(&self, data: &[u8]) -> Result<(), String> {
        let _ = data;
        Ok(())
    }

    /// Imports one page made by [`Self::export_page`] in the transaction
    /// that installs a snapshot (and commits the applied index, the
    /// sessions and the log reset with it). Pages come in export order;
    /// the first empties the state before it is imported.
    ///
    /// The default gathers the pages in a temporary table and, with the
    /// last, checks the whole with [`Self::validate_snapshot`] and
    /// restores it with [`Self::restore`].
    fn import_page(
        &self,
        transaction: &Transaction<'_>,
        page: ImportPage<'_>,
    ) -> impl Future<Output = Result<(), ImportError>> + Send {
        async move {
            if !(page.first && page.last) {
                if page.first {
                    transaction
                        .batch_execute(
                            "CREATE TEMPORARY TABLE raftgres_import_pages \
                             (seq bigserial PRIMARY KEY, data bytea NOT NULL) ON COMMIT DROP",
                        )
                        .await?;
                }
                transaction
                    .execute(
                        "INSERT INTO raftgres_import_pages (data) VALUES ($1)",
                        &[&page.data],
                    )
                    .await?;
                if !page.last {
                    return Ok(());
                }
            }
            let whole = if page.first {
                page.data.to_vec()
            } else {
                let rows = transaction
                    .query("SELECT data FROM raftgres_import_pages ORDER BY seq", &[])
                    .await?;
                rows.iter()
                    .flat_map(|row| row.get::<_, Vec<u8>>(0))
                    .collect()
            };
            self.validate_snapshot(&whole)
                .map_err(ImportError::Invalid)?;
            self.restore(transaction, &whole).await?;
            Ok(())
        }
    }
}

/// A page of a state machine's rows, for a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportPage {
    /// The rows, encoded as the state machine likes.
    pub data: Vec<u8>,
    /// Where the next page starts (passed back as `after`); `None` when
    /// this is the last.
    pub next: Option<Vec<u8>>,
}

/// A page to import, see [`StateMachine::import_page`].
#[derive(Clone, Copy, Debug)]
pub struct ImportPage<'a> {
    /// What [`StateMachine::export_page`] made.
    pub data: &'a [u8],
    /// The snapshot's first page: empty the state first.
    pub first: bool,
    /// Its last page.
    pub last: bool,
}

/// Why a page could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The database failed.
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
    /// The snapshot is not one this state machine made.
    #[error("{0}")]
    Invalid(String),
}

/// Creates (idempotently) every table a node applies into: the state
/// machine's own and the session table.
pub(crate) async fn migrate_tables<S: StateMachine>(
    state_machine: &S,
    client: &Client,
) -> Result<(), tokio_postgres::Error> {
    state_machine.migrate(client).await?;
    sessions::migrate(client).await
}

/// Sessions: the last (sequence, response) per client, so that a retried
/// command is applied once and answered with its first result.
pub(crate) mod sessions {
    use std::collections::BTreeMap;

    use raftgres_storage_pg::Prepared;
    use tokio_postgres::types::Type;
    use tokio_postgres::{Client, Transaction};

    const SCHEMA: &str = "
        CREATE TABLE IF NOT EXISTS raftgres_sessions (
            client_id text PRIMARY KEY,
            sequence bigint NOT NULL,
            response bytea NOT NULL,
            last_index bigint NOT NULL
        )";

    /// A client's last applied command response.
    pub(crate) enum Response {
        /// Read from the table, with the index the command was applied at.
        Stored { response: Vec<u8>, index: u64 },
        /// Applied earlier in the current batch, at this slot.
        InBatch(usize),
    }

    /// A client's last applied sequence.
    pub(crate) struct Last {
        pub(crate) sequence: u64,
        pub(crate) response: Response,
    }

    pub(crate) async fn migrate(client: &Client) -> Result<(), tokio_postgres::Error> {
        client.batch_execute(SCHEMA).await
    }

    /// The stored sessions of `client_ids`.
    pub(crate) async fn load(
        transaction: &Prepared<'_, Transaction<'_>>,
        client_ids: &[&str],
    ) -> Result<BTreeMap<String, Last>, tokio_postgres::Error> {
        if client_ids.is_empty() {
            return Ok(BTreeMap::new());
        }
        let rows = transaction
            .query_prepared(
                "SELECT client_id, sequence, response, last_index FROM raftgres_sessions WHERE client_id = ANY($1)",
                &[Type::TEXT_ARRAY],
                &[&client_ids],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| {
                let last = Last {
                    sequence: row.get::<_, i64>(1) as u64,
                    response: Response::Stored {
                        response: row.get(2),
                        index: row.get::<_, i64>(3) as u64,
                    },
                };
                (row.get(0), last)
            })
            .collect())
    }

    /// The sessions a batch updates: the last command of each client.
    #[derive(Default)]
    pub(crate) struct Batch {
        latest: BTreeMap<String, (u64, Vec<u8>, u64)>,
    }

    impl Batch {
        pub(crate) fn record(
            &mut self,
            client_id: &str,
            sequence: u64,
            response: &[u8],
            index: u64,
        ) {
            let newer = self
                .latest
                .get(client_id)
                .is_none_or(|(latest, _, _)| sequence >= *latest);
            if newer {
                self.latest
                    .insert(client_id.to_string(), (sequence, response.to_vec(), index));
            }
        }
    }

    /// Writes a batch's sessions in one statement.
    pub(crate) async fn save(
        transaction: &Prepared<'_, Transaction<'_>>,
        batch: &Batch,
    ) -> Result<(), tokio_postgres::Error> {
        if batch.latest.is_empty() {
            return Ok(());
        }
        let client_ids: Vec<&str> = batch.latest.keys().map(String::as_str).collect();
        let sequences: Vec<i64> = batch
            .latest
            .values()
            .map(|(sequence, _, _)| *sequence as i64)
            .collect();
        let responses: Vec<&[u8]> = batch
            .latest
            .values()
            .map(|(_, response, _)| response.as_slice())
            .collect();
        let indexes: Vec<i64> = batch
            .latest
            .values()
            .map(|(_, _, index)| *index as i64)
            .collect();
        transaction
            .query_prepared(
                "INSERT INTO raftgres_sessions (client_id, sequence, response, last_index)
                 SELECT * FROM unnest($1::text[], $2::bigint[], $3::bytea[], $4::bigint[])
                 ON CONFLICT (client_id) DO UPDATE
                 SET sequence = EXCLUDED.sequence, response = EXCLUDED.response, last_index = EXCLUDED.last_index",
                &[
                    Type::TEXT_ARRAY,
                    Type::INT8_ARRAY,
                    Type::BYTEA_ARRAY,
                    Type::INT8_ARRAY,
                ],
                &[&client_ids, &sequences, &responses, &indexes],
            )
            .await?;
        Ok(())
    }

    /// Sessions after client id `after`, in client id order, about
    /// `bytes_max` bytes of them (at least one while any is left), for a
    /// snapshot page; and whether more follow.
    pub(crate) async fn page(
        transaction: &Transaction<'_>,
        after: &str,
        bytes_max: usize,
    ) -> Result<(Vec<raftgres_proto::v1::StoredSession>, bool), tokio_postgres::Error> {
        const ROWS_PER_PAGE: i64 = 1000;
        let rows = transaction
            .query(
                "SELECT client_id, sequence, response, last_index FROM raftgres_sessions \
                 WHERE client_id > $1 ORDER BY client_id LIMIT $2",
                &[&after, &ROWS_PER_PAGE],
            )
            .await?;
        let mut sessions = Vec::new();
        let mut bytes = 0;
        for row in &rows {
            let session = raftgres_proto::v1::StoredSession {
                client_id: row.get(0),
                sequence: row.get::<_, i64>(1) as u64,
                response: row.get(2),
                last_index: row.get::<_, i64>(3) as u64,
            };
            let size = session.client_id.len() + session.response.len() + 16;
            if !sessions.is_empty() && bytes + size > bytes_max {
                return Ok((sessions, true));
            }
            bytes += size;
            sessions.push(session);
        }
        Ok((sessions, rows.len() as i64 == ROWS_PER_PAGE))
    }

    /// Stores a snapshot's sessions (the install emptied the table first).
    pub(crate) async fn import(
        transaction: &Prepared<'_, Transaction<'_>>,
        stored: &[raftgres_proto::v1::StoredSession],
    ) -> Result<(), tokio_postgres::Error> {
        let mut batch = Batch::default();
        for session in stored {
            batch.record(
                &session.client_id,
                session.sequence,
                &session.response,
                session.last_index,
            );
        }
        save(transaction, &batch).await
    }

    /// Forgets the sessions last used before log index `index`.
    pub(crate) async fn expire_before(
        transaction: &Prepared<'_, Transaction<'_>>,
        index: u64,
    ) -> Result<(), tokio_postgres::Error> {
        let horizon = index as i64;
        transaction
            .query_prepared(
                "DELETE FROM raftgres_sessions WHERE last_index < $1",
                &[Type::INT8],
                &[&horizon],
            )
            .await?;
        Ok(())
    }
}
