//! The raw Postgres ceiling: how many rows per second plain multi-row
//! `INSERT` transactions (BEGIN, one `INSERT ... VALUES (..), (..)`,
//! COMMIT, fsync on) reach on one of the cluster's own Postgres instances,
//! into a throwaway table shaped like the log. The same idea as the
//! baseline of `bench/examples/append_bench.rs`, measured here on the
//! benchmark cluster's server so that raftgres' numbers can be set against
//! the physical limit of the disk it writes to.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use tokio_postgres::types::ToSql;

/// The throwaway table; dropped before and after.
const TABLE: &str = "raftgres_bench_ceiling";
/// Most transactions one batch size may run, whatever the duration.
const TRANSACTIONS_MAX: u64 = 1_000_000;

/// One measured batch size.
#[derive(Clone, Debug, Serialize)]
pub struct CeilingPoint {
    /// Rows per INSERT (and per transaction).
    pub rows_per_transaction: usize,
    /// Committed transactions per second.
    pub transactions_per_second: f64,
    /// Committed rows per second.
    pub rows_per_second: f64,
}

/// `INSERT INTO table (...) VALUES ($1, $2, $3, $4), ...` for `rows` rows.
pub fn insert_sql(table: &str, rows: usize) -> String {
    let values: Vec<String> = (0..rows)
        .map(|row| {
            let first = row * 4 + 1;
            format!("(${first}, ${}, ${}, ${})", first + 1, first + 2, first + 3)
        })
        .collect();
    format!(
        "INSERT INTO {table} (log_index, term, kind, data) VALUES {}",
        values.join(", ")
    )
}

/// Measures every batch size in `rows_per_transaction` for `seconds` each
/// with `payload_bytes`-byte rows, on the server at `conninfo`.
pub async fn measure(
    conninfo: &str,
    rows_per_transaction: &[usize],
    seconds: f64,
    payload_bytes: usize,
) -> anyhow::Result<Vec<CeilingPoint>> {
    let (mut client, connection) = tokio_postgres::connect(conninfo, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connecting to {conninfo}"))?;
    let connection = tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {TABLE}; CREATE TABLE {TABLE} (log_index bigint PRIMARY KEY, term bigint NOT NULL, kind smallint NOT NULL, data bytea NOT NULL)"
        ))
        .await
        .context("creating the ceiling table")?;
    let payload = vec![b'p'; payload_bytes];
    let mut points = Vec::new();
    let mut next_index: i64 = 1;
    for &rows in rows_per_transaction {
        let statement = client.prepare(&insert_sql(TABLE, rows)).await?;
        let deadline = Instant::now() + Duration::from_secs_f64(seconds);
        let start = Instant::now();
        let mut transactions = 0u64;
        while Instant::now() < deadline && transactions < TRANSACTIONS_MAX {
            let indexes: Vec<i64> = (next_index..next_index + rows as i64).collect();
            next_index += rows as i64;
            let (term, kind) = (1_i64, 1_i16);
            let mut parameters: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(rows * 4);
            for index in &indexes {
                parameters.extend([index as &(dyn ToSql + Sync), &term, &kind, &payload]);
            }
            let transaction = client.transaction().await?;
            transaction.execute(&statement, &parameters).await?;
            transaction.commit().await?;
            transactions += 1;
        }
        let elapsed_seconds = start.elapsed().as_secs_f64();
        points.push(CeilingPoint {
            rows_per_transaction: rows,
            transactions_per_second: transactions as f64 / elapsed_seconds,
            rows_per_second: (transactions * rows as u64) as f64 / elapsed_seconds,
        });
    }
    client
        .batch_execute(&format!("DROP TABLE {TABLE}"))
        .await
        .context("dropping the ceiling table")?;
    drop(client);
    let _ = connection.await;
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_insert_numbers_four_parameters_per_row() {
        assert_eq!(
            insert_sql("t", 2),
            "INSERT INTO t (log_index, term, kind, data) VALUES ($1, $2, $3, $4), ($5, $6, $7, $8)"
        );
    }
}
