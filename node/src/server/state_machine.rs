//! Replicated state machines whose state lives in the node's Postgres.
//!
//! The applier calls [`StateMachine::apply`] for every committed command,
//! inside the store's apply transaction: the state machine's changes and
//! the new applied index commit together (design rule 4), so replaying the
//! log after a crash never applies an entry twice.

use std::future::Future;

use prost::Message as _;
use raftgres_proto::v1 as wire;
use tokio_postgres::types::Type;
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
    fn apply(
        &self,
        transaction: &Transaction<'_>,
        index: u64,
        command: &[u8],
    ) -> impl Future<Output = Result<Vec<u8>, tokio_postgres::Error>> + Send;

    /// Applies consecutive committed commands `(index, command)` in order
    /// and returns their responses in the same order. The default applies
    /// them one by one; a state machine can do better (one round trip for
    /// the whole batch).
    fn apply_batch(
        &self,
        transaction: &Transaction<'_>,
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
    /// [`Self::import_page`] (as [`KvStateMachine`] does).
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

/// A `raftgres_kv` row selected as `key, value, mod_index`.
pub(crate) fn key_value_of_row(row: &tokio_postgres::Row) -> wire::KeyValue {
    wire::KeyValue {
        key: row.get(0),
        value: row.get(1),
        mod_index: row.get::<_, i64>(2) as u64,
    }
}

/// The built-in key-value state machine: table `raftgres_kv`. Commands are
/// encoded `raftgres.v1.KvCommand`, responses `raftgres.v1.KvResult`.
#[derive(Clone, Copy, Debug, Default)]
pub struct KvStateMachine;

const KV_SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS raftgres_kv (
        key bytea PRIMARY KEY,
        value bytea NOT NULL,
        mod_index bigint NOT NULL CHECK (mod_index > 0)
    )";

/// Applies a batch of KV operations in order inside the server, in one
/// round trip. Operation codes: 1 put, 2 delete, 3 compare-and-swap.
const KV_APPLY_FUNCTION: &str = "
    CREATE OR REPLACE FUNCTION raftgres_kv_apply(
        indexes bigint[], operations smallint[], keys bytea[], new_values bytea[],
        has_values boolean[], expected_values bytea[], has_expected boolean[])
    RETURNS TABLE (previous bytea, succeeded boolean) AS $$
    DECLARE
        position integer;
        old_value bytea;
        existed boolean;
        matches boolean;
    BEGIN
        FOR position IN 1 .. coalesce(array_length(indexes, 1), 0) LOOP
            SELECT value INTO old_value FROM raftgres_kv WHERE key = keys[position] FOR UPDATE;
            existed := FOUND;
            previous := CASE WHEN existed THEN old_value END;
            IF operations[position] = 1 THEN
                INSERT INTO raftgres_kv (key, value, mod_index)
                VALUES (keys[position], new_values[position], indexes[position])
                ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, mod_index = EXCLUDED.mod_index;
                succeeded := true;
            ELSIF operations[position] = 2 THEN
                DELETE FROM raftgres_kv WHERE key = keys[position];
                succeeded := existed;
            ELSE
                matches := CASE WHEN has_expected[position]
                                THEN existed AND old_value = expected_values[position]
                                ELSE NOT existed END;
                succeeded := matches;
                IF matches AND has_values[position] THEN
                    INSERT INTO raftgres_kv (key, value, mod_index)
                    VALUES (keys[position], new_values[position], indexes[position])
                    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, mod_index = EXCLUDED.mod_index;
                ELSIF matches THEN
                    DELETE FROM raftgres_kv WHERE key = keys[position];
                END IF;
            END IF;
            RETURN NEXT;
        END LOOP;
    END
    $$ LANGUAGE plpgsql";

const PUT: &str = "
    WITH previous AS (SELECT value FROM raftgres_kv WHERE key = $1),
         upsert AS (
             INSERT INTO raftgres_kv (key, value, mod_index) VALUES ($1, $2, $3)
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, mod_index = EXCLUDED.mod_index)
    SELECT value FROM previous";

const DELETE: &str = "DELETE FROM raftgres_kv WHERE key = $1 RETURNING value";

const SELECT_FOR_UPDATE: &str = "SELECT value FROM raftgres_kv WHERE key = $1 FOR UPDATE";

impl KvStateMachine {
    async fn put(
        transaction: &Transaction<'_>,
        key: &[u8],
        value: &[u8],
        index: u64,
    ) -> Result<Option<Vec<u8>>, tokio_postgres::Error> {
        let row = transaction
            .query_opt(PUT, &[&key, &value, &(index as i64)])
            .await?;
        Ok(row.map(|row| row.get(0)))
    }

    async fn delete(
        transaction: &Transaction<'_>,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, tokio_postgres::Error> {
        let row = transaction.query_opt(DELETE, &[&key]).await?;
        Ok(row.map(|row| row.get(0)))
    }

    async fn compare_and_swap(
        transaction: &Transaction<'_>,
        swap: &wire::KvCompareAndSwap,
        index: u64,
    ) -> Result<wire::KvResult, tokio_postgres::Error> {
        let current: Option<Vec<u8>> = transaction
            .query_opt(SELECT_FOR_UPDATE, &[&swap.key])
            .await?
            .map(|row| row.get(0));
        if current != swap.expected {
            return Ok(wire::KvResult {
                previous: current,
                succeeded: false,
            });
        }
        match &swap.value {
            Some(value) => Self::put(transaction, &swap.key, value, index).await?,
            None => Self::delete(transaction, &swap.key).await?,
        };
        Ok(wire::KvResult {
            previous: current,
            succeeded: true,
        })
    }
}

/// The arrays `raftgres_kv_apply` takes.
#[derive(Default)]
struct KvColumns {
    indexes: Vec<i64>,
    operations: Vec<i16>,
    keys: Vec<Vec<u8>>,
    new_values: Vec<Vec<u8>>,
    has_values: Vec<bool>,
    expected_values: Vec<Vec<u8>>,
    has_expected: Vec<bool>,
}

impl KvColumns {
    fn push(&mut self, index: u64, operation: &wire::kv_command::Operation) {
        use wire::kv_command::Operation;
        let (code, key, value, expected) = match operation {
            Operation::Put(put) => (1, &put.key, Some(&put.value), None),
            Operation::Delete(delete) => (2, &delete.key, None, None),
            Operation::CompareAndSwap(swap) => {
                (3, &swap.key, swap.value.as_ref(), swap.expected.as_ref())
            }
        };
        self.indexes.push(index as i64);
        self.operations.push(code);
        self.keys.push(key.clone());
        self.new_values.push(value.cloned().unwrap_or_default());
        self.has_values.push(value.is_some());
        self.expected_values
            .push(expected.cloned().unwrap_or_default());
        self.has_expected.push(expected.is_some());
    }
}

/// Decodes and checks a KV command.
pub fn decode_kv_command(command: &[u8]) -> Result<wire::kv_command::Operation, String> {
    let decoded =
        wire::KvCommand::decode(command).map_err(|error| format!("not a KvCommand: {error}"))?;
    let operation = decoded.operation.ok_or("KvCommand has no operation")?;
    let key = match &operation {
        wire::kv_command::Operation::Put(put) => &put.key,
        wire::kv_command::Operation::Delete(delete) => &delete.key,
        wire::kv_command::Operation::CompareAndSwap(swap) => &swap.key,
    };
    if key.is_empty() {
        return Err("the key must not be empty".into());
    }
    Ok(operation)
}

fn is_put(operation: &Option<wire::kv_command::Operation>) -> bool {
    matches!(operation, Some(wire::kv_command::Operation::Put(_)))
}

/// Splits a batch into runs applied with one statement each: puts of
/// distinct keys (set-based), and everything else (in order, inside the
/// server). Applying the runs in order is applying the batch in order.
fn runs(decoded: &[(u64, Option<wire::kv_command::Operation>)]) -> Vec<std::ops::Range<usize>> {
    let mut runs = Vec::new();
    let mut start = 0;
    while start < decoded.len() {
        let mut end = start;
        if is_put(&decoded[start].1) {
            let mut keys = std::collections::BTreeSet::new();
            while let Some((_, Some(wire::kv_command::Operation::Put(put)))) = decoded.get(end) {
                if !keys.insert(put.key.as_slice()) {
                    break;
                }
                end += 1;
            }
        } else {
            while end < decoded.len() && !is_put(&decoded[end].1) {
                end += 1;
            }
        }
        runs.push(start..end);
        start = end;
    }
    runs
}

/// Upserts puts of distinct keys in one statement, returning each key's
/// previous value (every part of the statement sees the table as it was
/// before it). A function, so that each connection plans the statement
/// once instead of parsing and planning it for every batch.
const KV_PUT_SET_FUNCTION: &str = "
    CREATE OR REPLACE FUNCTION raftgres_kv_put_set(
        indexes bigint[], keys bytea[], new_values bytea[])
    RETURNS TABLE (previous bytea) AS $$
    #variable_conflict use_column
    BEGIN
        RETURN QUERY
        WITH input AS (
                 SELECT * FROM unnest(indexes, keys, new_values)
                     WITH ORDINALITY AS batch(mod_index, key, value, position)),
             prior AS (
                 SELECT raftgres_kv.key, raftgres_kv.value FROM raftgres_kv JOIN input USING (key)),
             upsert AS (
                 INSERT INTO raftgres_kv (key, value, mod_index)
                 SELECT input.key, input.value, input.mod_index FROM input
                 ON CONFLICT (key) DO UPDATE
                 SET value = EXCLUDED.value, mod_index = EXCLUDED.mod_index)
        SELECT prior.value FROM input LEFT JOIN prior USING (key) ORDER BY input.position;
    END
    $$ LANGUAGE plpgsql";

impl KvStateMachine {
    async fn apply_puts(
        transaction: &Transaction<'_>,
        run: &[(u64, Option<wire::kv_command::Operation>)],
    ) -> Result<Vec<Vec<u8>>, tokio_postgres::Error> {
        let mut indexes = Vec::with_capacity(run.len());
        let mut keys = Vec::with_capacity(run.len());
        let mut values = Vec::with_capacity(run.len());
        for (index, operation) in run {
            if let Some(wire::kv_command::Operation::Put(put)) = operation {
                indexes.push(*index as i64);
                keys.push(put.key.as_slice());
                values.push(put.value.as_slice());
            }
        }
        let rows = transaction
            .query_typed(
                "SELECT previous FROM raftgres_kv_put_set($1, $2, $3)",
                &[
                    (&indexes, Type::INT8_ARRAY),
                    (&keys, Type::BYTEA_ARRAY),
                    (&values, Type::BYTEA_ARRAY),
                ],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| {
                wire::KvResult {
                    previous: row.get(0),
                    succeeded: true,
                }
                .encode_to_vec()
            })
            .collect())
    }

    async fn apply_in_order(
        transaction: &Transaction<'_>,
        run: &[(u64, Option<wire::kv_command::Operation>)],
    ) -> Result<Vec<Vec<u8>>, tokio_postgres::Error> {
        let mut columns = KvColumns::default();
        for (index, operation) in run {
            if let Some(operation) = operation {
                columns.push(*index, operation);
            }
        }
        let rows = transaction
            .query_typed(
                "SELECT previous, succeeded FROM raftgres_kv_apply($1, $2, $3, $4, $5, $6, $7)",
                &[
                    (&columns.indexes, Type::INT8_ARRAY),
                    (&columns.operations, Type::INT2_ARRAY),
                    (&columns.keys, Type::BYTEA_ARRAY),
                    (&columns.new_values, Type::BYTEA_ARRAY),
                    (&columns.has_values, Type::BOOL_ARRAY),
                    (&columns.expected_values, Type::BYTEA_ARRAY),
                    (&columns.has_expected, Type::BOOL_ARRAY),
                ],
            )
            .await?;
        // One row per operation, in order: anything else is a broken
        // database function, and answering clients from it would be wrong.
        assert_eq!(
            rows.len(),
            columns.indexes.len(),
            "raftgres_kv_apply answered {} rows for {} operations",
            rows.len(),
            columns.indexes.len()
        );
        let mut results = rows.iter().map(|row| wire::KvResult {
            previous: row.get(0),
            succeeded: row.get(1),
        });
        Ok(run
            .iter()
            .map(|(_, operation)| match operation {
                Some(_) => results
                    .next()
                    .expect("one row per operation")
                    .encode_to_vec(),
                None => Vec::new(),
            })
            .collect())
    }
}

impl StateMachine for KvStateMachine {
    fn client_routes(node: crate::server::NodeApi<Self>) -> Option<tonic::service::Routes> {
        let command_bytes_max = node.shared().config.limits.command_bytes_max;
        let kv = raftgres_proto::v1::kv_server::KvServer::new(crate::server::services::KvService {
            shared: node.shared().clone(),
        })
        // A request may carry a command of command_bytes_max plus its key
        // and session.
        .max_decoding_message_size(command_bytes_max + 64 * 1024);
        Some(tonic::service::Routes::new(node.admit(kv)))
    }

    async fn migrate(&self, client: &Client) -> Result<(), tokio_postgres::Error> {
        client.batch_execute(KV_SCHEMA).await?;
        client.batch_execute(KV_APPLY_FUNCTION).await?;
        client.batch_execute(KV_PUT_SET_FUNCTION).await
    }

    fn validate(&self, command: &[u8]) -> Result<(), String> {
        decode_kv_command(command).map(|_| ())
    }

    fn validate_page(&self, data: &[u8]) -> Result<(), String> {
        self.validate_snapshot(data)
    }

    async fn export_page(
        &self,
        transaction: &Transaction<'_>,
        after: Option<&[u8]>,
        bytes_max: usize,
    ) -> Result<ExportPage, tokio_postgres::Error> {
        // Keyset pages in key order: rows are fetched a bounded number at
        // a time and cut at `bytes_max`; the cursor is the last key taken.
        const ROWS_PER_FETCH: i64 = 1000;
        let mut kvs = Vec::new();
        let mut bytes = 0;
        let mut cursor = after.map(<[u8]>::to_vec);
        loop {
            let rows =
                match &cursor {
                    Some(after) => {
                        transaction
                            .query(
                                "SELECT key, value, mod_index FROM raftgres_kv WHERE key > $1 \
                             ORDER BY key LIMIT $2",
                                &[after, &ROWS_PER_FETCH],
                            )
                            .await?
                    }
                    None => transaction
                        .query(
                            "SELECT key, value, mod_index FROM raftgres_kv ORDER BY key LIMIT $1",
                            &[&ROWS_PER_FETCH],
                        )
                        .await?,
                };
            let fetched = rows.len() as i64;
            for row in &rows {
                let pair = key_value_of_row(row);
                let size = pair.key.len() + pair.value.len() + 16;
                if !kvs.is_empty() && bytes + size > bytes_max {
                    let next = kvs.last().map(|last: &wire::KeyValue| last.key.clone());
                    return Ok(kv_page(kvs, next));
                }
                bytes += size;
                cursor = Some(pair.key.clone());
                kvs.push(pair);
            }
            if fetched < ROWS_PER_FETCH {
                return Ok(kv_page(kvs, None));
            }
        }
    }

    async fn import_page(
        &self,
        transaction: &Transaction<'_>,
        page: ImportPage<'_>,
    ) -> Result<(), ImportError> {
        self.validate_page(page.data)
            .map_err(ImportError::Invalid)?;
        let pairs = wire::RangeResponse::decode(page.data)
            .map_err(|error| ImportError::Invalid(error.to_string()))?
            .kvs;
        if page.first {
            transaction.execute("DELETE FROM raftgres_kv", &[]).await?;
        }
        let keys: Vec<&[u8]> = pairs.iter().map(|pair| pair.key.as_slice()).collect();
        let values: Vec<&[u8]> = pairs.iter().map(|pair| pair.value.as_slice()).collect();
        let mod_indexes: Vec<i64> = pairs.iter().map(|pair| pair.mod_index as i64).collect();
        transaction
            .query_typed(
                "INSERT INTO raftgres_kv (key, value, mod_index) \
                 SELECT * FROM unnest($1, $2, $3)",
                &[
                    (&keys, Type::BYTEA_ARRAY),
                    (&values, Type::BYTEA_ARRAY),
                    (&mod_indexes, Type::INT8_ARRAY),
                ],
            )
            .await?;
        Ok(())
    }

    fn validate_snapshot(&self, data: &[u8]) -> Result<(), String> {
        let snapshot = wire::RangeResponse::decode(data)
            .map_err(|error| format!("the KV snapshot does not decode: {error}"))?;
        let mut previous: Option<&[u8]> = None;
        for pair in &snapshot.kvs {
            if pair.key.is_empty()
                || previous.is_some_and(|previous| previous >= pair.key.as_slice())
            {
                return Err(
                    "the KV snapshot's keys are not non-empty and strictly ascending".into(),
                );
            }
            if pair.mod_index == 0 || pair.mod_index > i64::MAX as u64 {
                return Err(format!(
                    "the KV snapshot's pair {:?} has the impossible mod_index {}",
                    String::from_utf8_lossy(&pair.key),
                    pair.mod_index
                ));
            }
            previous = Some(&pair.key);
        }
        Ok(())
    }

    async fn apply(
        &self,
        transaction: &Transaction<'_>,
        index: u64,
        command: &[u8],
    ) -> Result<Vec<u8>, tokio_postgres::Error> {
        // Commands were validated before they were proposed; one that does
        // not decode now (written by another version) changes nothing and
        // answers with an empty result on every replica alike.
        let Ok(operation) = decode_kv_command(command) else {
            return Ok(Vec::new());
        };
        let result = match operation {
            wire::kv_command::Operation::Put(put) => {
                let previous = Self::put(transaction, &put.key, &put.value, index).await?;
                wire::KvResult {
                    previous,
                    succeeded: true,
                }
            }
            wire::kv_command::Operation::Delete(delete) => {
                let previous = Self::delete(transaction, &delete.key).await?;
                wire::KvResult {
                    succeeded: previous.is_some(),
                    previous,
                }
            }
            wire::kv_command::Operation::CompareAndSwap(swap) => {
                Self::compare_and_swap(transaction, &swap, index).await?
            }
        };
        Ok(result.encode_to_vec())
    }

    async fn apply_batch(
        &self,
        transaction: &Transaction<'_>,
        commands: &[(u64, &[u8])],
    ) -> Result<Vec<Vec<u8>>, tokio_postgres::Error> {
        // Commands that do not decode (never proposed by this version) are
        // answered with an empty result and change nothing.
        let decoded: Vec<(u64, Option<wire::kv_command::Operation>)> = commands
            .iter()
            .map(|(index, command)| (*index, decode_kv_command(command).ok()))
            .collect();
        let mut responses = Vec::with_capacity(commands.len());
        for run in runs(&decoded) {
            let run = &decoded[run];
            let answers = if is_put(&run[0].1) {
                Self::apply_puts(transaction, run).await?
            } else {
                Self::apply_in_order(transaction, run).await?
            };
            responses.extend(answers);
        }
        Ok(responses)
    }

    async fn snapshot(
        &self,
        transaction: &Transaction<'_>,
    ) -> Result<Vec<u8>, tokio_postgres::Error> {
        let rows = transaction
            .query(
                "SELECT key, value, mod_index FROM raftgres_kv ORDER BY key",
                &[],
            )
            .await?;
        let pairs = rows.iter().map(key_value_of_row).collect();
        Ok(wire::RangeResponse {
            kvs: pairs,
            more: false,
            read_index: 0,
        }
        .encode_to_vec())
    }

    async fn restore(
        &self,
        transaction: &Transaction<'_>,
        data: &[u8],
    ) -> Result<(), tokio_postgres::Error> {
        // Checked by validate_snapshot before the install began; bytes
        // that still do not decode leave the table untouched rather than
        // empty.
        let Ok(snapshot) = wire::RangeResponse::decode(data) else {
            return Ok(());
        };
        transaction.execute("DELETE FROM raftgres_kv", &[]).await?;
        for pair in snapshot.kvs {
            transaction
                .execute(
                    "INSERT INTO raftgres_kv (key, value, mod_index) VALUES ($1, $2, $3)",
                    &[&pair.key, &pair.value, &(pair.mod_index as i64)],
                )
                .await?;
        }
        Ok(())
    }
}

/// A page of KV pairs, encoded as a `RangeResponse`.
fn kv_page(kvs: Vec<wire::KeyValue>, next: Option<Vec<u8>>) -> ExportPage {
    ExportPage {
        data: wire::RangeResponse {
            kvs,
            more: next.is_some(),
            read_index: 0,
        }
        .encode_to_vec(),
        next,
    }
}

/// Sessions: the last (sequence, response) per client, so that a retried
/// command is applied once and answered with its first result.
pub(crate) mod sessions {
    use std::collections::BTreeMap;

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
        transaction: &Transaction<'_>,
        client_ids: &[&str],
    ) -> Result<BTreeMap<String, Last>, tokio_postgres::Error> {
        if client_ids.is_empty() {
            return Ok(BTreeMap::new());
        }
        let rows = transaction
            .query_typed(
                "SELECT client_id, sequence, response, last_index FROM raftgres_sessions WHERE client_id = ANY($1)",
                &[(&client_ids, Type::TEXT_ARRAY)],
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
        transaction: &Transaction<'_>,
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
            .query_typed(
                "INSERT INTO raftgres_sessions (client_id, sequence, response, last_index)
                 SELECT * FROM unnest($1::text[], $2::bigint[], $3::bytea[], $4::bigint[])
                 ON CONFLICT (client_id) DO UPDATE
                 SET sequence = EXCLUDED.sequence, response = EXCLUDED.response, last_index = EXCLUDED.last_index",
                &[
                    (&client_ids, Type::TEXT_ARRAY),
                    (&sequences, Type::INT8_ARRAY),
                    (&responses, Type::BYTEA_ARRAY),
                    (&indexes, Type::INT8_ARRAY),
                ],
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
        transaction: &Transaction<'_>,
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
        transaction: &Transaction<'_>,
        index: u64,
    ) -> Result<(), tokio_postgres::Error> {
        let horizon = index as i64;
        transaction
            .query_typed(
                "DELETE FROM raftgres_sessions WHERE last_index < $1",
                &[(&horizon, Type::INT8)],
            )
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::kv_command::Operation;

    fn put(key: &str) -> Option<Operation> {
        Some(Operation::Put(wire::KvPut {
            key: key.into(),
            value: b"v".to_vec(),
        }))
    }

    fn delete(key: &str) -> Option<Operation> {
        Some(Operation::Delete(wire::KvDelete { key: key.into() }))
    }

    #[test]
    fn runs_split_at_other_operations_and_repeated_keys() {
        let batch: Vec<(u64, Option<Operation>)> =
            [put("a"), put("b"), put("a"), delete("a"), None, put("c")]
                .into_iter()
                .enumerate()
                .map(|(index, operation)| (index as u64 + 1, operation))
                .collect();
        assert_eq!(runs(&batch), vec![0..2, 2..3, 3..5, 5..6]);
        assert!(runs(&[]).is_empty());
    }

    #[test]
    fn kv_commands_are_checked() {
        assert!(decode_kv_command(b"\xff\xff").is_err());
        let empty_key = wire::KvCommand { operation: put("") }.encode_to_vec();
        assert_eq!(
            decode_kv_command(&empty_key).unwrap_err(),
            "the key must not be empty"
        );
        let no_operation = wire::KvCommand { operation: None }.encode_to_vec();
        assert!(decode_kv_command(&no_operation).is_err());
    }
}
