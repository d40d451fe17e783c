//! Snapshot pages of the KV state machine (`raftgres.v1.KvSnapshotPage`):
//! the revisions and the leases on the first page, then the current rows in key order,
//! then the history in revision order, each page about `bytes_max` bytes.
//! A cursor is `r` and the last key taken, or `h` and the last (revision,
//! sub) taken.

use prost::Message as _;
use raftgres_proto::v1 as wire;
use tokio_postgres::types::Type;
use tokio_postgres::Transaction;

use crate::server::state_machine::{ExportPage, ImportError, ImportPage};

/// Rows fetched per statement while a page fills.
const ROWS_PER_FETCH: i64 = 1000;
/// Bytes a row or change costs in a page beyond its key and value.
const ROW_OVERHEAD_BYTES: usize = 48;

enum Cursor {
    /// Current rows after this key (`None`: from the first).
    Rows(Option<Vec<u8>>),
    /// History after this (revision, sub) (`None`: from the first).
    History(Option<(i64, i64)>),
}

fn decode_cursor(after: Option<&[u8]>) -> Cursor {
    match after {
        None => Cursor::Rows(None),
        Some([b'r', key @ ..]) => Cursor::Rows(Some(key.to_vec())),
        Some([b'h', position @ ..]) if position.len() == 16 => {
            let word =
                |at: usize| i64::from_be_bytes(position[at..at + 8].try_into().expect("8 bytes"));
            Cursor::History(Some((word(0), word(8))))
        }
        // Cursors are this exporter's own; anything else starts over
        // rather than skipping rows.
        Some(_) => Cursor::Rows(None),
    }
}

pub(super) async fn export_page(
    transaction: &Transaction<'_>,
    after: Option<&[u8]>,
    bytes_max: usize,
) -> Result<ExportPage, tokio_postgres::Error> {
    let mut page = wire::KvSnapshotPage::default();
    if after.is_none() {
        let row = transaction
            .query_one(super::sql::SELECT_REVISIONS, &[])
            .await?;
        page.revisions = Some(wire::KvRevisions {
            revision: row.get(0),
            compact_revision: row.get(1),
        });
        page.leases = transaction
            .query("SELECT id, ttl FROM raftgres_leases ORDER BY id", &[])
            .await?
            .iter()
            .map(|row| wire::KvLease {
                id: row.get(0),
                ttl: row.get(1),
            })
            .collect();
    }
    let mut bytes = 0;
    let fits = |bytes: &mut usize, size: usize, empty: bool| {
        if !empty && *bytes + size > bytes_max {
            return false;
        }
        *bytes += size;
        true
    };
    let mut cursor = decode_cursor(after);
    loop {
        match cursor {
            Cursor::Rows(after_key) => {
                let rows = transaction
                    .query(
                        "SELECT key, value, create_revision, mod_revision, version, lease, mod_index
                         FROM raftgres_kv WHERE $1::bytea IS NULL OR key > $1
                         ORDER BY key LIMIT $2",
                        &[&after_key, &ROWS_PER_FETCH],
                    )
                    .await?;
                let mut last = after_key;
                for row in &rows {
                    let kv = super::sql::key_value(row);
                    let size = kv.key.len() + kv.value.len() + ROW_OVERHEAD_BYTES;
                    if !fits(&mut bytes, size, page.rows.is_empty()) {
                        return Ok(finish(page, Some(rows_cursor(last))));
                    }
                    last = Some(kv.key.clone());
                    page.rows.push(wire::KvRow {
                        key: kv.key,
                        value: kv.value,
                        mod_index: row.get::<_, i64>(6) as u64,
                        create_revision: kv.create_revision,
                        mod_revision: kv.mod_revision,
                        version: kv.version,
                        lease: kv.lease,
                    });
                }
                cursor = if (rows.len() as i64) < ROWS_PER_FETCH {
                    Cursor::History(None)
                } else {
                    Cursor::Rows(last)
                };
            }
            Cursor::History(after_position) => {
                let (revision, sub) = after_position.unwrap_or((0, -1));
                let rows = transaction
                    .query(
                        "SELECT revision, sub, key, value, create_revision, version, lease,
                                prev_revision
                         FROM raftgres_kv_history WHERE (revision, sub) > ($1, $2)
                         ORDER BY revision, sub LIMIT $3",
                        &[&revision, &sub, &ROWS_PER_FETCH],
                    )
                    .await?;
                let mut last = after_position;
                for row in &rows {
                    let change = wire::KvChange {
                        revision: row.get(0),
                        sub: row.get(1),
                        key: row.get(2),
                        value: row.get(3),
                        create_revision: row.get(4),
                        version: row.get(5),
                        lease: row.get(6),
                        prev_revision: Some(row.get(7)),
                    };
                    let size = change.key.len()
                        + change.value.as_ref().map_or(0, Vec::len)
                        + ROW_OVERHEAD_BYTES;
                    let empty = page.rows.is_empty() && page.history.is_empty();
                    if !fits(&mut bytes, size, empty) {
                        return Ok(finish(page, Some(history_cursor(last))));
                    }
                    last = Some((change.revision, change.sub));
                    page.history.push(change);
                }
                if (rows.len() as i64) < ROWS_PER_FETCH {
                    return Ok(finish(page, None));
                }
                cursor = Cursor::History(last);
            }
        }
    }
}

fn rows_cursor(last: Option<Vec<u8>>) -> Vec<u8> {
    let mut cursor = vec![b'r'];
    cursor.extend(last.unwrap_or_default());
    cursor
}

fn history_cursor(last: Option<(i64, i64)>) -> Vec<u8> {
    // A page that ends before the first change resumes from the start of
    // the history: (0, -1) is below every (revision, sub).
    let (revision, sub) = last.unwrap_or((0, -1));
    let mut cursor = vec![b'h'];
    cursor.extend(revision.to_be_bytes());
    cursor.extend(sub.to_be_bytes());
    cursor
}

fn finish(page: wire::KvSnapshotPage, next: Option<Vec<u8>>) -> ExportPage {
    ExportPage {
        data: page.encode_to_vec(),
        next,
    }
}

/// Checks one page: keys not empty and ascending, changes in (revision,
/// sub) order, revisions that can be.
pub(super) fn validate_page(data: &[u8]) -> Result<(), String> {
    let page = wire::KvSnapshotPage::decode(data)
        .map_err(|error| format!("the KV snapshot page does not decode: {error}"))?;
    if let Some(revisions) = &page.revisions {
        if revisions.revision < crate::mvcc::REVISION_INITIAL
            || revisions.compact_revision < 0
            || revisions.compact_revision > revisions.revision
        {
            return Err(format!(
                "the KV snapshot's revisions are impossible: {revisions:?}"
            ));
        }
    }
    if page
        .leases
        .iter()
        .any(|lease| lease.id <= 0 || lease.ttl <= 0)
    {
        return Err("the KV snapshot holds a lease with an impossible id or TTL".into());
    }
    let mut previous: Option<&[u8]> = None;
    for row in &page.rows {
        if row.key.is_empty() || previous.is_some_and(|previous| previous >= row.key.as_slice()) {
            return Err("the KV snapshot's keys are not non-empty and strictly ascending".into());
        }
        if row.mod_index == 0
            || row.mod_index > i64::MAX as u64
            || row.create_revision <= 0
            || row.create_revision > row.mod_revision
            || row.version <= 0
        {
            return Err(format!(
                "the KV snapshot's row {:?} is impossible: {row:?}",
                String::from_utf8_lossy(&row.key)
            ));
        }
        previous = Some(&row.key);
    }
    let mut previous: Option<(i64, i64)> = None;
    for change in &page.history {
        let position = (change.revision, change.sub);
        if change.key.is_empty()
            || change.revision <= 0
            || change.sub < 0
            || previous.is_some_and(|previous| previous >= position)
        {
            return Err(format!(
                "the KV snapshot's history is not in (revision, sub) order of non-empty keys at {position:?}"
            ));
        }
        if change
            .prev_revision
            .is_some_and(|replaced| replaced < 0 || replaced > change.revision)
        {
            return Err(format!(
                "the KV snapshot's change at {position:?} replaced a put at revision {:?}",
                change.prev_revision
            ));
        }
        previous = Some(position);
    }
    Ok(())
}

pub(super) async fn import_page(
    transaction: &Transaction<'_>,
    page: ImportPage<'_>,
) -> Result<(), ImportError> {
    validate_page(page.data).map_err(ImportError::Invalid)?;
    let decoded = wire::KvSnapshotPage::decode(page.data)
        .map_err(|error| ImportError::Invalid(error.to_string()))?;
    if page.first {
        let Some(revisions) = decoded.revisions else {
            return Err(ImportError::Invalid(
                "the KV snapshot's first page has no revisions".into(),
            ));
        };
        transaction
            .batch_execute(
                "DELETE FROM raftgres_kv; DELETE FROM raftgres_kv_history; \
                 DELETE FROM raftgres_leases;",
            )
            .await?;
        transaction
            .execute(
                "UPDATE raftgres_kv_revision SET revision = $1, compact_revision = $2",
                &[&revisions.revision, &revisions.compact_revision],
            )
            .await?;
    }
    if !decoded.leases.is_empty() {
        let ids: Vec<i64> = decoded.leases.iter().map(|lease| lease.id).collect();
        let ttls: Vec<i64> = decoded.leases.iter().map(|lease| lease.ttl).collect();
        transaction
            .query_typed(
                "INSERT INTO raftgres_leases (id, ttl) SELECT * FROM unnest($1, $2)",
                &[(&ids, Type::INT8_ARRAY), (&ttls, Type::INT8_ARRAY)],
            )
            .await?;
    }
    let rows = &decoded.rows;
    if !rows.is_empty() {
        let keys: Vec<&[u8]> = rows.iter().map(|row| row.key.as_slice()).collect();
        let values: Vec<&[u8]> = rows.iter().map(|row| row.value.as_slice()).collect();
        let column = |field: fn(&wire::KvRow) -> i64| rows.iter().map(field).collect::<Vec<i64>>();
        transaction
            .query_typed(
                "INSERT INTO raftgres_kv
                     (key, value, mod_index, create_revision, mod_revision, version, lease)
                 SELECT * FROM unnest($1, $2, $3, $4, $5, $6, $7)",
                &[
                    (&keys, Type::BYTEA_ARRAY),
                    (&values, Type::BYTEA_ARRAY),
                    (&column(|row| row.mod_index as i64), Type::INT8_ARRAY),
                    (&column(|row| row.create_revision), Type::INT8_ARRAY),
                    (&column(|row| row.mod_revision), Type::INT8_ARRAY),
                    (&column(|row| row.version), Type::INT8_ARRAY),
                    (&column(|row| row.lease), Type::INT8_ARRAY),
                ],
            )
            .await?;
    }
    let history = &decoded.history;
    if !history.is_empty() {
        let keys: Vec<&[u8]> = history.iter().map(|change| change.key.as_slice()).collect();
        let values: Vec<Option<&[u8]>> = history
            .iter()
            .map(|change| change.value.as_deref())
            .collect();
        let column =
            |field: fn(&wire::KvChange) -> i64| history.iter().map(field).collect::<Vec<i64>>();
        transaction
            .query_typed(
                "INSERT INTO raftgres_kv_history
                     (revision, sub, key, value, create_revision, version, lease, prev_revision)
                 SELECT * FROM unnest($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    (&column(|change| change.revision), Type::INT8_ARRAY),
                    (&column(|change| change.sub), Type::INT8_ARRAY),
                    (&keys, Type::BYTEA_ARRAY),
                    (&values, Type::BYTEA_ARRAY),
                    (&column(|change| change.create_revision), Type::INT8_ARRAY),
                    (&column(|change| change.version), Type::INT8_ARRAY),
                    (&column(|change| change.lease), Type::INT8_ARRAY),
                    // Not carried (an older exporter): left for the link.
                    (
                        &column(|change| change.prev_revision.unwrap_or(super::sql::UNLINKED)),
                        Type::INT8_ARRAY,
                    ),
                ],
            )
            .await?;
    }
    if page.last {
        // The pointers a snapshot from an older version did not carry.
        transaction
            .execute("SELECT raftgres_kv_link_history()", &[])
            .await?;
    }
    Ok(())
}
