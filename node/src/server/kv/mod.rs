//! The built-in key-value state machine: etcd's MVCC store (the rules are
//! [`crate::mvcc`]'s) in the node's Postgres.
//!
//! - `raftgres_kv`: the current row of every key (value, create and mod
//!   revision, version, lease, and `mod_index`, the log index of its last
//!   change, which `raftgres.v1.Kv` answers);
//! - `raftgres_kv_history`: every change at (revision, sub), a delete
//!   without a value, until compacted, each pointing at the version it
//!   replaced: reads at past revisions and watches replay it;
//! - `raftgres_kv_revision`: the store's revision and compaction point.
//!
//! A batch of commands is applied in three steps inside the apply
//! transaction: one statement reads the rows of every range the batch may
//! touch ([`mvcc::footprint`]), the batch runs through [`mvcc::apply`] in
//! memory, and one statement writes the changed rows, the history and the
//! revisions. The rows, the history and the applied index commit together
//! (design rule 4).

mod snapshot;
mod sql;

pub(crate) use sql::with_range_end;

use std::collections::{BTreeMap, BTreeSet};

use prost::Message as _;
use raftgres_proto::etcdserverpb as etcd;
use raftgres_proto::v1 as wire;
use raftgres_storage_pg::Prepared;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, GenericClient, Transaction};

use tokio::sync::mpsc;

use super::driver::Event;
use super::error::ServiceError;
use super::etcd::convert;
use super::services::{database_error, ReadClient};
use super::state_machine::{ExportPage, ImportError, ImportPage, StateMachine};
use crate::core::LogIndex;
use crate::mvcc::{self, KeyRange, KeyValue, Keyspace, Revisions};
use crate::pipeline::check_read_covered;

/// The built-in key-value state machine. Commands are encoded
/// `raftgres.v1.KvCommand`, responses `raftgres.v1.KvResult`.
#[derive(Clone, Copy, Debug, Default)]
pub struct KvStateMachine;

/// A decoded `KvCommand`: a raftgres operation (answered in its own terms)
/// or an etcd one, each with the [`mvcc::Command`] it applies as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum KvCommand {
    /// `raftgres.v1` put: an etcd put that answers the previous value.
    Put { key: Vec<u8>, value: Vec<u8> },
    /// `raftgres.v1` delete of one key.
    Delete { key: Vec<u8> },
    /// `raftgres.v1` compare-and-swap: a transaction that compares the
    /// value (or that the key does not exist) and puts or deletes.
    CompareAndSwap {
        key: Vec<u8>,
        expected: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
    },
    /// An etcd operation or compaction.
    Etcd(mvcc::Command),
}

impl KvCommand {
    /// The key a raftgres operation names (`None` for etcd's).
    pub(crate) fn raftgres_key(&self) -> Option<&[u8]> {
        match self {
            KvCommand::Put { key, .. }
            | KvCommand::Delete { key }
            | KvCommand::CompareAndSwap { key, .. } => Some(key),
            KvCommand::Etcd(_) => None,
        }
    }

    /// What the command does to the store.
    fn to_mvcc(&self) -> mvcc::Command {
        use mvcc::single_key;
        match self {
            KvCommand::Put { key, value } => single_key::put(key, value),
            KvCommand::Delete { key } => single_key::delete(key),
            KvCommand::CompareAndSwap {
                key,
                expected,
                value,
            } => single_key::compare_and_swap(key, expected.as_deref(), value.as_deref()),
            KvCommand::Etcd(command) => command.clone(),
        }
    }

    /// The client's answer to the command's outcome.
    fn result(&self, outcome: mvcc::Outcome) -> wire::KvResult {
        let mut result = wire::KvResult {
            revision: outcome.revision,
            ..wire::KvResult::default()
        };
        let answer = match outcome.result {
            Ok(answer) => answer,
            Err(error) => {
                result.set_error(match error {
                    mvcc::KvError::KeyNotFound => wire::KvError::KeyNotFound,
                    mvcc::KvError::LeaseNotFound => wire::KvError::LeaseNotFound,
                    mvcc::KvError::Compacted => wire::KvError::Compacted,
                    mvcc::KvError::FutureRevision => wire::KvError::FutureRevision,
                    mvcc::KvError::LeaseExists => wire::KvError::LeaseExists,
                });
                return result;
            }
        };
        let op = match answer {
            mvcc::Answer::Op(op) => op,
            mvcc::Answer::Compacted | mvcc::Answer::LeaseGranted | mvcc::Answer::LeaseRevoked => {
                result.succeeded = true;
                return result;
            }
        };
        match (self, op) {
            (KvCommand::Etcd(_), op) => {
                result.succeeded = true;
                result.etcd_response = convert::response_op(op).encode_to_vec();
            }
            (KvCommand::Put { .. }, mvcc::ResponseOp::Put(put)) => {
                result.succeeded = true;
                result.previous = put.prev_kv.map(|kv| kv.value);
            }
            (KvCommand::Delete { .. }, mvcc::ResponseOp::DeleteRange(delete)) => {
                result.succeeded = delete.deleted > 0;
                result.previous = delete.prev_kvs.into_iter().next().map(|kv| kv.value);
            }
            (KvCommand::CompareAndSwap { .. }, mvcc::ResponseOp::Txn(txn)) => {
                result.succeeded = txn.succeeded;
                if let Some(mvcc::ResponseOp::Range(read)) = txn.responses.into_iter().next() {
                    result.previous = read.kvs.into_iter().next().map(|kv| kv.value);
                }
            }
            (command, op) => unreachable!("{command:?} answered {op:?}"),
        }
        result
    }
}

/// Decodes and checks a KV command; the error says what is wrong.
pub(crate) fn decode_kv_command(command: &[u8]) -> Result<KvCommand, String> {
    use wire::kv_command::Operation;
    let decoded =
        wire::KvCommand::decode(command).map_err(|error| format!("not a KvCommand: {error}"))?;
    let decoded = match decoded.operation.ok_or("KvCommand has no operation")? {
        Operation::Put(put) => KvCommand::Put {
            key: put.key,
            value: put.value,
        },
        Operation::Delete(delete) => KvCommand::Delete { key: delete.key },
        Operation::CompareAndSwap(swap) => KvCommand::CompareAndSwap {
            key: swap.key,
            expected: swap.expected,
            value: swap.value,
        },
        Operation::EtcdOperation(bytes) => {
            let operation = etcd::RequestOp::decode(bytes.as_slice())
                .map_err(|error| format!("not an etcd RequestOp: {error}"))?;
            KvCommand::Etcd(mvcc::Command::Op(convert::request_op(operation)?))
        }
        Operation::EtcdCompactRevision(revision) => {
            KvCommand::Etcd(mvcc::Command::Compact(revision))
        }
        Operation::EtcdLeaseGrant(grant) => KvCommand::Etcd(mvcc::Command::LeaseGrant {
            id: grant.id,
            ttl: grant.ttl,
        }),
        Operation::EtcdLeaseRevoke(id) => KvCommand::Etcd(mvcc::Command::LeaseRevoke(id)),
    };
    if decoded.raftgres_key().is_some_and(<[u8]>::is_empty) {
        return Err("the key must not be empty".into());
    }
    mvcc::check_command(&decoded.to_mvcc())?;
    Ok(decoded)
}

/// The rows of the ranges a batch may touch and the leases it names, read
/// before it runs: the keyspace [`mvcc::apply`] works on.
struct Prefetched {
    rows: BTreeMap<Vec<u8>, KeyValue>,
    /// The ranges read. Invariant: a command asks only for ranges its
    /// footprint named, all of them in here.
    covered: BTreeSet<KeyRange>,
    /// The leases the batch names (their TTL, `None` when they do not
    /// exist). Invariant: a command looks up only leases its lease
    /// footprint named; the rows of every lease it revokes were read.
    leases: BTreeMap<i64, Option<i64>>,
    /// The leases the batch granted (`Some`) or revoked (`None`).
    changed_leases: BTreeMap<i64, Option<i64>>,
}

impl Keyspace for Prefetched {
    fn range(&self, range: &KeyRange) -> Vec<KeyValue> {
        assert!(
            self.covered.contains(range),
            "a KV command read {range:?}, which its footprint did not name"
        );
        mvcc::rows_in(&self.rows, range).cloned().collect()
    }

    fn put(&mut self, kv: KeyValue) {
        self.rows.insert(kv.key.clone(), kv);
    }

    fn delete(&mut self, key: &[u8]) {
        self.rows.remove(key);
    }

    fn lease(&self, lease: i64) -> Option<i64> {
        *self.leases.get(&lease).unwrap_or_else(|| {
            panic!("a KV command looked up lease {lease}, which its footprint did not name")
        })
    }

    fn lease_rows(&self, lease: i64) -> Vec<KeyValue> {
        assert!(
            self.leases.contains_key(&lease),
            "lease {lease} was not read"
        );
        self.rows
            .values()
            .filter(|kv| kv.lease == lease)
            .cloned()
            .collect()
    }

    fn set_lease(&mut self, lease: i64, ttl: Option<i64>) {
        self.leases.insert(lease, ttl);
        self.changed_leases.insert(lease, ttl);
    }
}

impl KvStateMachine {
    /// Reads the revisions and the current rows of `ranges` with each
    /// key's [`KeyMark`], in one round trip.
    async fn prefetch(
        transaction: &Prepared<'_, Transaction<'_>>,
        ranges: &BTreeSet<KeyRange>,
        leases: &BTreeSet<i64>,
        revoked: &[i64],
    ) -> Result<(Revisions, Prefetched, BTreeMap<Vec<u8>, KeyMark>), tokio_postgres::Error> {
        let mut lows: Vec<&[u8]> = Vec::new();
        let mut highs: Vec<Vec<u8>> = Vec::new();
        let mut unbounded_from: Option<&[u8]> = None;
        for range in ranges {
            match range.end_exclusive() {
                Some(end) => {
                    lows.push(&range.key);
                    highs.push(end);
                }
                None => {
                    let low = unbounded_from
                        .map_or(range.key.as_slice(), |from| from.min(range.key.as_slice()));
                    unbounded_from = Some(low);
                }
            }
        }
        let lease_ids: Vec<i64> = leases.iter().copied().collect();
        let rows = transaction
            .query_prepared(
                "SELECT * FROM raftgres_kv_prefetch($1, $2, $3, $4, $5)",
                &[
                    Type::BYTEA_ARRAY,
                    Type::BYTEA_ARRAY,
                    Type::BYTEA,
                    Type::INT8_ARRAY,
                    Type::INT8_ARRAY,
                ],
                &[&lows, &highs, &unbounded_from, &revoked, &lease_ids],
            )
            .await?;
        let mut revisions = None;
        let mut prefetched = Prefetched {
            rows: BTreeMap::new(),
            covered: ranges.clone(),
            leases: leases.iter().map(|id| (*id, None)).collect(),
            changed_leases: BTreeMap::new(),
        };
        let mut marks = BTreeMap::new();
        for row in &rows {
            match row.get::<_, i16>(0) {
                0 => {
                    revisions = Some(Revisions {
                        current: row.get(3),
                        compacted: row.get(4),
                    });
                }
                1 => {
                    let kv = sql::key_value_at(row, 1);
                    let mark = KeyMark {
                        mod_index: row.get::<_, i64>(7) as u64,
                        latest_put: kv.mod_revision,
                    };
                    marks.insert(kv.key.clone(), mark);
                    prefetched.rows.insert(kv.key.clone(), kv);
                }
                _ => {
                    prefetched.leases.insert(row.get(6), Some(row.get(5)));
                }
            }
        }
        let revisions = revisions.expect("raftgres_kv_revision holds its row (created by migrate)");
        Ok((revisions, prefetched, marks))
    }
}

/// What an apply keeps of each key it may change besides its row: the log
/// index of its last change (`raftgres_kv.mod_index`) and the revision of
/// its latest put while it exists (0 otherwise), which its next change
/// replaces (the history's `prev_revision`).
#[derive(Clone, Copy, Debug, Default)]
struct KeyMark {
    mod_index: u64,
    latest_put: mvcc::Revision,
}

/// The puts of a batch that is nothing but plain puts (no lease, keeping
/// neither value nor lease; a key may come more than once): the batches
/// most writes come in, applied in one statement
/// (`raftgres_kv_put_batch`).
fn plain_puts(
    decoded: &[(u64, Option<(KvCommand, mvcc::Command)>)],
) -> Option<Vec<&mvcc::PutRequest>> {
    if decoded.is_empty() {
        return None;
    }
    decoded
        .iter()
        .map(|(_, command)| match command {
            Some((_, mvcc::Command::Op(mvcc::RequestOp::Put(put))))
                if put.lease == 0 && !put.ignore_value && !put.ignore_lease =>
            {
                Some(put)
            }
            _ => None,
        })
        .collect()
}

impl KvStateMachine {
    /// Applies a batch of [`plain_puts`] in one statement. The statement
    /// writes what [`mvcc::apply`] would (the etcd contract test holds the
    /// two together) and answers each key's row from before the batch; the
    /// answers are then made by [`mvcc::apply`] itself, over those rows (a
    /// key's second put in the batch finds what its first wrote).
    async fn apply_puts(
        transaction: &Prepared<'_, Transaction<'_>>,
        decoded: &[(u64, Option<(KvCommand, mvcc::Command)>)],
        puts: &[&mvcc::PutRequest],
    ) -> Result<Vec<Vec<u8>>, tokio_postgres::Error> {
        let keys: Vec<&[u8]> = puts.iter().map(|put| put.key.as_slice()).collect();
        let values: Vec<&[u8]> = puts.iter().map(|put| put.value.as_slice()).collect();
        let indexes: Vec<i64> = decoded.iter().map(|(index, _)| *index as i64).collect();
        let ranks = sql::PutRanks::of(&keys);
        let rows = transaction
            .query_prepared(
                "SELECT * FROM raftgres_kv_put_batch($1, $2, $3, $4, $5, $6, $7)",
                &[
                    Type::BYTEA_ARRAY,
                    Type::BYTEA_ARRAY,
                    Type::INT8_ARRAY,
                    Type::INT8_ARRAY,
                    Type::INT8_ARRAY,
                    Type::INT8_ARRAY,
                    Type::BOOL_ARRAY,
                ],
                &[
                    &keys,
                    &values,
                    &indexes,
                    &ranks.ranks,
                    &ranks.firsts,
                    &ranks.previous,
                    &ranks.lasts,
                ],
            )
            .await?;
        assert_eq!(
            rows.len(),
            puts.len(),
            "raftgres_kv_put_batch answered {} rows for {} puts",
            rows.len(),
            puts.len()
        );
        let mut revisions = Revisions {
            current: rows[0].get(0),
            compacted: rows[0].get(1),
        };
        let before = revisions.current;
        let mut keyspace = Prefetched {
            rows: BTreeMap::new(),
            covered: puts
                .iter()
                .map(|put| KeyRange::single(put.key.as_slice()))
                .collect(),
            leases: BTreeMap::new(),
            changed_leases: BTreeMap::new(),
        };
        for row in &rows {
            if row.get::<_, Option<Vec<u8>>>(2).is_some() {
                let kv = sql::key_value_at(row, 2);
                keyspace.rows.insert(kv.key.clone(), kv);
            }
        }
        let responses = decoded
            .iter()
            .map(|(_, command)| {
                let (command, applied) = command.as_ref().expect("plain puts decode");
                let (outcome, _) = mvcc::apply(&mut keyspace, &mut revisions, applied);
                command.result(outcome).encode_to_vec()
            })
            .collect();
        assert_eq!(
            revisions.current,
            before + puts.len() as i64,
            "every plain put takes one revision"
        );
        Ok(responses)
    }
}

/// Reads `range` at its revision once the state machine covers
/// `read_index`: the store's current revision (the response header's) and
/// the answer, or why the revision cannot be read. When the state machine
/// is behind `read_index` (applies lost in a crash), the driver is told
/// through `events` and the read is refused as unavailable.
pub(crate) async fn range_at(
    client: &ReadClient,
    range: &mvcc::RangeRequest,
    read_index: LogIndex,
    events: &mpsc::Sender<Event>,
) -> Result<(i64, Result<mvcc::RangeResponse, mvcc::KvError>), ServiceError> {
    let read = KvStateMachine::read_range(&client.prepared(), range)
        .await
        .map_err(database_error)?
        .ok_or_else(|| {
            ServiceError::Unavailable("the KV tables hold no applied index or revision".into())
        })?;
    let stored_applied = LogIndex(read.applied_index);
    check_read_covered(read_index, stored_applied).map_err(|behind| {
        // The driver has the lost applies replayed, even on an idle
        // cluster; a full queue drops the report (the next read repeats it).
        let _ = events.try_send(Event::StateMachineBehind { stored_applied });
        ServiceError::Unavailable(behind.to_string())
    })?;
    Ok((read.revision, read.answer))
}

/// A range read from the tables, see [`KvStateMachine::read_range`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeRead {
    /// The applied index the tables were at.
    pub applied_index: u64,
    /// The store's current revision then.
    pub revision: i64,
    /// The answer, or why the revision asked for cannot be read.
    pub answer: Result<mvcc::RangeResponse, mvcc::KvError>,
}

impl KvStateMachine {
    /// Reads `range` at its revision from the tables (in one statement,
    /// so one snapshot of them), with the applied index they are at. No
    /// barrier: the caller decides whether that applied index is recent
    /// enough. `None` when the tables hold no applied index or revision
    /// (a database the node never opened). One key at the current
    /// revision, and a range with an end, are read by statements prepared
    /// once per connection; a range without an end by a statement planned
    /// for each read (a plan made once scans the table).
    pub async fn read_range<C: GenericClient + Sync>(
        client: &Prepared<'_, C>,
        range: &mvcc::RangeRequest,
    ) -> Result<Option<RangeRead>, tokio_postgres::Error> {
        let end = range.range.end_exclusive();
        let rows_needed = mvcc::rows_needed(range);
        let rows = if range.range.is_single() && range.revision <= 0 {
            client
                .query_prepared(
                    sql::SELECT_CURRENT_KEY,
                    &[Type::BYTEA, Type::INT8],
                    &[&range.range.key, &rows_needed],
                )
                .await?
        } else if end.is_some() && range.revision <= 0 {
            client
                .query_prepared(
                    sql::SELECT_RANGE_AT_BOUNDED,
                    &[Type::BYTEA, Type::BYTEA, Type::INT8, Type::INT8],
                    &[&range.range.key, &end, &range.revision, &rows_needed],
                )
                .await?
        } else {
            client
                .query_typed(
                    sql::select_range_at_planned(end.is_some()),
                    &[
                        (&range.range.key, Type::BYTEA),
                        (&end, Type::BYTEA),
                        (&range.revision, Type::INT8),
                        (&rows_needed, Type::INT8),
                    ],
                )
                .await?
        };
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let applied_index = first.get::<_, i64>(6) as u64;
        let revisions = Revisions {
            current: first.get(7),
            compacted: first.get(8),
        };
        let answer = mvcc::check_read_revision(range.revision, revisions).map(|_| {
            let count: i64 = first.get(9);
            let kvs = rows
                .iter()
                .filter(|row| row.get::<_, Option<Vec<u8>>>(0).is_some())
                .map(sql::key_value)
                .collect();
            mvcc::RangeResponse {
                header_revision: revisions.current,
                ..mvcc::shape_range(kvs, count, range)
            }
        });
        Ok(Some(RangeRead {
            applied_index,
            revision: revisions.current,
            answer,
        }))
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
        let routes = tonic::service::Routes::new(node.admit(kv));
        Some(super::etcd::routes(&node, routes))
    }

    fn file_descriptor_sets() -> &'static [&'static [u8]] {
        &[raftgres_proto::ETCD_FILE_DESCRIPTOR_SET]
    }

    async fn migrate(&self, client: &Client) -> Result<(), tokio_postgres::Error> {
        client.batch_execute(sql::SCHEMA).await?;
        client.batch_execute(sql::PREFETCH_FUNCTION).await?;
        client.batch_execute(sql::PUT_BATCH_FUNCTION).await?;
        client.batch_execute(sql::WRITE_FUNCTION).await?;
        client.batch_execute(&sql::range_at_function()).await
    }

    fn validate(&self, command: &[u8]) -> Result<(), String> {
        decode_kv_command(command).map(|_| ())
    }

    fn validate_page(&self, data: &[u8]) -> Result<(), String> {
        snapshot::validate_page(data)
    }

    async fn export_page(
        &self,
        transaction: &Transaction<'_>,
        after: Option<&[u8]>,
        bytes_max: usize,
    ) -> Result<ExportPage, tokio_postgres::Error> {
        snapshot::export_page(transaction, after, bytes_max).await
    }

    async fn import_page(
        &self,
        transaction: &Transaction<'_>,
        page: ImportPage<'_>,
    ) -> Result<(), ImportError> {
        snapshot::import_page(transaction, page).await
    }

    fn validate_snapshot(&self, data: &[u8]) -> Result<(), String> {
        snapshot::validate_page(data)
    }

    async fn apply(
        &self,
        transaction: &Prepared<'_, Transaction<'_>>,
        index: u64,
        command: &[u8],
    ) -> Result<Vec<u8>, tokio_postgres::Error> {
        let mut responses = self.apply_batch(transaction, &[(index, command)]).await?;
        Ok(responses.pop().expect("one command, one response"))
    }

    async fn apply_batch(
        &self,
        transaction: &Prepared<'_, Transaction<'_>>,
        commands: &[(u64, &[u8])],
    ) -> Result<Vec<Vec<u8>>, tokio_postgres::Error> {
        // Commands were validated before they were proposed; one that does
        // not decode now (written by another version) changes nothing and
        // answers with an empty result on every replica alike.
        let decoded: Vec<(u64, Option<(KvCommand, mvcc::Command)>)> = commands
            .iter()
            .map(|(index, command)| {
                let decoded = decode_kv_command(command).ok().map(|command| {
                    let applied = command.to_mvcc();
                    (command, applied)
                });
                (*index, decoded)
            })
            .collect();
        if let Some(puts) = plain_puts(&decoded) {
            return Self::apply_puts(transaction, &decoded, &puts).await;
        }
        let applied_commands = || {
            decoded
                .iter()
                .filter_map(|(_, command)| command.as_ref().map(|(_, applied)| applied))
        };
        let ranges: BTreeSet<KeyRange> = applied_commands().flat_map(mvcc::footprint).collect();
        let leases: BTreeSet<i64> = applied_commands().flat_map(mvcc::lease_footprint).collect();
        let revoked: Vec<i64> = applied_commands()
            .filter_map(|command| match command {
                mvcc::Command::LeaseRevoke(id) => Some(*id),
                _ => None,
            })
            .collect();
        let (before, mut keyspace, mut marks) =
            Self::prefetch(transaction, &ranges, &leases, &revoked).await?;
        let mut revisions = before;
        let mut events = Vec::new();
        let mut responses = Vec::with_capacity(decoded.len());
        for (index, command) in &decoded {
            let Some((command, applied)) = command else {
                responses.push(Vec::new());
                continue;
            };
            let (outcome, changes) = mvcc::apply(&mut keyspace, &mut revisions, applied);
            for change in changes {
                let mark = marks.entry(change.key.clone()).or_default();
                mark.mod_index = *index;
                let latest_put = if change.kv.is_some() {
                    change.revision
                } else {
                    0
                };
                let replaced = std::mem::replace(&mut mark.latest_put, latest_put);
                events.push((change, replaced));
            }
            responses.push(command.result(outcome).encode_to_vec());
        }
        if revisions != before || !keyspace.changed_leases.is_empty() {
            let changed: BTreeSet<&[u8]> = events
                .iter()
                .map(|(event, _)| event.key.as_slice())
                .collect();
            let rows = changed.into_iter().map(|key| {
                let row = keyspace.rows.get(key);
                (key, row.map(|kv| (kv, marks[key].mod_index)))
            });
            let leases = &keyspace.changed_leases;
            sql::write(transaction, rows, &events, revisions, before, leases).await?;
        }
        Ok(responses)
    }

    async fn snapshot(
        &self,
        transaction: &Transaction<'_>,
    ) -> Result<Vec<u8>, tokio_postgres::Error> {
        Ok(snapshot::export_page(transaction, None, usize::MAX)
            .await?
            .data)
    }

    async fn restore(
        &self,
        transaction: &Transaction<'_>,
        data: &[u8],
    ) -> Result<(), tokio_postgres::Error> {
        let page = ImportPage {
            data,
            first: true,
            last: true,
        };
        match snapshot::import_page(transaction, page).await {
            Ok(()) => Ok(()),
            Err(ImportError::Postgres(error)) => Err(error),
            // Checked by validate_snapshot before the install began; bytes
            // that still do not decode leave the tables untouched rather
            // than empty.
            Err(ImportError::Invalid(_)) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(operation: wire::kv_command::Operation) -> Vec<u8> {
        wire::KvCommand {
            operation: Some(operation),
        }
        .encode_to_vec()
    }

    #[test]
    fn kv_commands_are_checked() {
        use wire::kv_command::Operation;
        assert!(decode_kv_command(b"\xff\xff").is_err());
        let empty_key = encoded(Operation::Put(wire::KvPut {
            key: Vec::new(),
            value: b"v".to_vec(),
        }));
        assert_eq!(
            decode_kv_command(&empty_key).unwrap_err(),
            "the key must not be empty"
        );
        let no_operation = wire::KvCommand { operation: None }.encode_to_vec();
        assert!(decode_kv_command(&no_operation).is_err());
        let duplicate = etcd::RequestOp {
            request: Some(etcd::request_op::Request::RequestTxn(etcd::TxnRequest {
                success: vec![
                    etcd::RequestOp {
                        request: Some(etcd::request_op::Request::RequestPut(etcd::PutRequest {
                            key: b"a".to_vec(),
                            ..etcd::PutRequest::default()
                        })),
                    };
                    2
                ],
                ..etcd::TxnRequest::default()
            })),
        };
        let duplicate = encoded(Operation::EtcdOperation(duplicate.encode_to_vec()));
        assert_eq!(
            decode_kv_command(&duplicate).unwrap_err(),
            "duplicate key given in txn request"
        );
    }

    #[test]
    fn a_compare_and_swap_answers_the_value_it_found() {
        let mut store = mvcc::MvccStore::default();
        let swap = |expected: Option<&str>, value: &str| KvCommand::CompareAndSwap {
            key: b"k".to_vec(),
            expected: expected.map(|expected| expected.as_bytes().to_vec()),
            value: Some(value.as_bytes().to_vec()),
        };
        let mut run = |command: KvCommand| {
            let (outcome, _) = store.apply(&command.to_mvcc());
            command.result(outcome)
        };
        let created = run(swap(None, "1"));
        assert!(created.succeeded && created.previous.is_none());
        assert_eq!(created.revision, 2);
        let refused = run(swap(None, "2"));
        assert!(!refused.succeeded);
        assert_eq!(refused.previous.as_deref(), Some(&b"1"[..]));
        assert_eq!(refused.revision, 2, "a failed swap writes nothing");
        let swapped = run(swap(Some("1"), "3"));
        assert!(swapped.succeeded);
        assert_eq!(swapped.previous.as_deref(), Some(&b"1"[..]));
        let deleted = run(KvCommand::Delete { key: b"k".to_vec() });
        assert!(deleted.succeeded);
        assert_eq!(deleted.previous.as_deref(), Some(&b"3"[..]));
        let missing = run(KvCommand::Delete { key: b"k".to_vec() });
        assert!(!missing.succeeded && missing.previous.is_none());
    }
}
