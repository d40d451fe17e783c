//! What a database's `raftgres_kv` holds, summed up so that two copies can
//! be compared: the row count, the bytes of the values, and a checksum of
//! every row (key, value and modification index) in key order.

use anyhow::Context;

/// Every row in key order: the md5 of the md5s of key || value ||
/// mod_index. Hashing each row first keeps the aggregate small (32 bytes
/// a row) however large the values are.
const SUMMARY_SQL: &str = "
    SELECT count(*),
           coalesce(sum(octet_length(value)), 0)::bigint,
           md5(coalesce(string_agg(md5(key || value || int8send(mod_index)), '' ORDER BY key), '')),
           pg_total_relation_size('raftgres_kv')
    FROM raftgres_kv";

/// One database's `raftgres_kv`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowSummary {
    /// Rows.
    pub rows: i64,
    /// Bytes of all values.
    pub value_bytes: i64,
    /// See [`SUMMARY_SQL`].
    pub checksum: String,
    /// The table with its TOAST table and indexes, on disk.
    pub table_bytes: i64,
}

impl RowSummary {
    /// Whether both hold the same rows (their sizes on disk may differ).
    pub fn same_rows(&self, other: &RowSummary) -> bool {
        (self.rows, self.value_bytes, &self.checksum)
            == (other.rows, other.value_bytes, &other.checksum)
    }
}

/// Summarises `raftgres_kv` of the database at `conninfo`.
pub async fn summarise(conninfo: &str) -> anyhow::Result<RowSummary> {
    let (client, connection) = tokio_postgres::connect(conninfo, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connecting to {conninfo}"))?;
    let connection = tokio::spawn(connection);
    let row = client
        .query_one(SUMMARY_SQL, &[])
        .await
        .with_context(|| format!("summing up raftgres_kv at {conninfo}"))?;
    drop(client);
    let _ = connection.await;
    Ok(RowSummary {
        rows: row.get(0),
        value_bytes: row.get(1),
        checksum: row.get(2),
        table_bytes: row.get(3),
    })
}

/// WAL a server generated and the checkpoints it made, over a window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalActivity {
    /// `pg_stat_wal.wal_bytes`.
    pub bytes: u64,
    /// `pg_stat_wal.wal_fpi`: full-page images (the first change of a
    /// page after a checkpoint began logs the whole page).
    pub full_page_images: u64,
    /// `pg_stat_bgwriter` checkpoints, timed and requested.
    pub checkpoints: u64,
}

impl std::ops::Sub for WalActivity {
    type Output = WalActivity;

    fn sub(self, earlier: WalActivity) -> WalActivity {
        WalActivity {
            bytes: self.bytes.saturating_sub(earlier.bytes),
            full_page_images: self
                .full_page_images
                .saturating_sub(earlier.full_page_images),
            checkpoints: self.checkpoints.saturating_sub(earlier.checkpoints),
        }
    }
}

/// The server's WAL counters so far.
pub async fn wal_activity(conninfo: &str) -> anyhow::Result<WalActivity> {
    let (client, connection) = tokio_postgres::connect(conninfo, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connecting to {conninfo}"))?;
    let connection = tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT wal_bytes::bigint, wal_fpi,
                    (SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter)
             FROM pg_stat_wal",
            &[],
        )
        .await
        .with_context(|| format!("reading pg_stat_wal at {conninfo}"))?;
    drop(client);
    let _ = connection.await;
    Ok(WalActivity {
        bytes: row.get::<_, i64>(0) as u64,
        full_page_images: row.get::<_, i64>(1) as u64,
        checkpoints: row.get::<_, i64>(2) as u64,
    })
}
