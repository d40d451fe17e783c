//! The raw Postgres ceiling: what one client's plain transactions (BEGIN,
//! multi-row statements, COMMIT, fsync on) reach on one of the cluster's
//! own Postgres instances, into throwaway tables, after the sweep, so that
//! raftgres' numbers can be set against the physical limit of the disk and
//! of Postgres' row work on this machine. Two shapes:
//!
//! - log rows: one `INSERT ... VALUES` of rows shaped like log entries
//!   (the idea of the baseline in `bench/examples/append_bench.rs`): what
//!   the disk takes.
//! - writes: what a plain put asks of every node's Postgres at the least,
//!   per write a log row, a history row and the upsert of its key's
//!   current row (the key found through its primary key), three
//!   statements per transaction with nothing else: the Postgres CPU a
//!   write costs a node before any of raftgres' own statements, checks or
//!   answers.
//!
//! With the instance's data directory given, the CPU of its server
//! processes is measured around each batch size too.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use tokio_postgres::types::ToSql;

use crate::process_stats;

/// The throwaway tables; dropped before and after.
const TABLE: &str = "raftgres_bench_ceiling";
const WRITE_LOG_TABLE: &str = "raftgres_bench_ceiling_log";
const WRITE_HISTORY_TABLE: &str = "raftgres_bench_ceiling_history";
const WRITE_CURRENT_TABLE: &str = "raftgres_bench_ceiling_current";
/// Most transactions one batch size may run, whatever the duration.
const TRANSACTIONS_MAX: u64 = 1_000_000;
/// Bytes a log entry holds besides its value (the command's key and
/// framing), for the writes' log rows.
const COMMAND_OVERHEAD_BYTES: usize = 32;

/// What the rows of a ceiling transaction are shaped like.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    /// Log-shaped rows, one multi-row `INSERT`.
    LogRows,
    /// Per write a log row, a history row and its key's upserted row.
    Writes,
}

impl Shape {
    /// How the tables of the report name the shape.
    pub fn label(self) -> &'static str {
        match self {
            Shape::LogRows => "log rows",
            Shape::Writes => "writes (log row, history row, upsert of the key's row)",
        }
    }
}

/// One measured batch size of one shape.
#[derive(Clone, Debug, Serialize)]
pub struct CeilingPoint {
    /// What the rows were.
    pub shape: Shape,
    /// Rows (writes) per transaction.
    pub rows_per_transaction: usize,
    /// Committed transactions per second.
    pub transactions_per_second: f64,
    /// Committed rows (writes) per second.
    pub rows_per_second: f64,
    /// CPU of the Postgres instance per row (write), microseconds; `None`
    /// when it was not measured.
    pub postgres_cpu_us_per_row: Option<f64>,
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

/// The key of the `number`th current row, named as the workload names its
/// keys.
fn key(number: u64) -> Vec<u8> {
    format!("key-{number:08}").into_bytes()
}

/// The keys a transaction of `rows` writes writes, starting at the
/// `first`th write of the run: the `n`th write of the run writes key
/// `n * stride mod keys`, with a stride near 0.618 of the key space that
/// shares no factor with it. So no key comes twice in a transaction
/// (`keys >= rows`), every key is written as often as the others, and
/// neighbouring writes land far apart in the table and its index, as the
/// workload's uniformly drawn keys do (consecutive keys would share pages
/// and make the ceiling look cheaper than the workload can be).
pub fn write_keys(first: u64, rows: usize, keys: u64) -> Vec<Vec<u8>> {
    let stride = stride(keys);
    (first..first + rows as u64)
        .map(|write| key(((write as u128 * stride as u128) % keys as u128) as u64))
        .collect()
}

/// The first number from 0.618 `keys` on that shares no factor with
/// `keys` (0 for a single key, which every write writes).
fn stride(keys: u64) -> u64 {
    fn gcd(a: u64, b: u64) -> u64 {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    let mut stride = (keys as f64 * 0.618) as u64;
    while gcd(stride, keys) != 1 {
        stride += 1;
    }
    stride
}

/// Where to measure and with what rows.
pub struct CeilingTarget<'a> {
    /// The server.
    pub conninfo: &'a str,
    /// Its data directory, for its processes' CPU (`None`: not measured).
    pub data_dir: Option<&'a Path>,
    /// Bytes of every written value.
    pub value_bytes: usize,
    /// Keys of the writes' current-row table (at least the largest batch).
    pub keys: u64,
}

/// Measures every batch size in `rows_per_transaction` of both shapes for
/// `seconds` each.
pub async fn measure(
    target: &CeilingTarget<'_>,
    rows_per_transaction: &[usize],
    seconds: f64,
) -> anyhow::Result<Vec<CeilingPoint>> {
    let keys = target
        .keys
        .max(rows_per_transaction.iter().copied().max().unwrap_or(1) as u64);
    let (client, connection) = tokio_postgres::connect(target.conninfo, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connecting to {}", target.conninfo))?;
    let connection = tokio::spawn(connection);
    let mut ceiling = Ceiling {
        client,
        data_dir: target.data_dir,
        ticks_per_second: process_stats::clock_ticks_per_second(),
        payload: vec![b'p'; target.value_bytes],
        keys,
        next: 1,
    };
    let mut points = Vec::new();
    let measured = async {
        ceiling.create_tables().await?;
        for &rows in rows_per_transaction {
            points.push(ceiling.log_rows(rows, seconds).await?);
        }
        for &rows in rows_per_transaction {
            points.push(ceiling.writes(rows, seconds).await?);
        }
        ceiling.drop_tables().await
    };
    let outcome = measured.await;
    drop(ceiling);
    let _ = connection.await;
    outcome.map(|()| points)
}

/// One client on the measured server.
struct Ceiling<'a> {
    client: tokio_postgres::Client,
    data_dir: Option<&'a Path>,
    ticks_per_second: f64,
    payload: Vec<u8>,
    keys: u64,
    /// The next log index (and revision) to write: every batch size
    /// continues where the one before it stopped.
    next: i64,
}

impl Ceiling<'_> {
    async fn create_tables(&self) -> anyhow::Result<()> {
        let drop = drop_sql();
        self.client
            .batch_execute(&format!(
                "{drop};
                 CREATE TABLE {TABLE} (log_index bigint PRIMARY KEY, term bigint NOT NULL,
                     kind smallint NOT NULL, data bytea NOT NULL);
                 CREATE TABLE {WRITE_LOG_TABLE} (log_index bigint PRIMARY KEY, term bigint NOT NULL,
                     kind smallint NOT NULL, data bytea NOT NULL);
                 CREATE TABLE {WRITE_HISTORY_TABLE} (revision bigint NOT NULL, sub bigint NOT NULL,
                     key bytea NOT NULL, value bytea, create_revision bigint NOT NULL,
                     version bigint NOT NULL, lease bigint NOT NULL,
                     prev_revision bigint NOT NULL, PRIMARY KEY (revision, sub));
                 CREATE TABLE {WRITE_CURRENT_TABLE} (key bytea PRIMARY KEY, value bytea NOT NULL,
                     create_revision bigint NOT NULL, mod_revision bigint NOT NULL,
                     version bigint NOT NULL)"
            ))
            .await
            .context("creating the ceiling tables")?;
        let keys: Vec<Vec<u8>> = (0..self.keys).map(key).collect();
        self.client
            .execute(
                &format!(
                    "INSERT INTO {WRITE_CURRENT_TABLE}
                     SELECT k, $2, 1, 1, 1 FROM unnest($1::bytea[]) AS k"
                ),
                &[&keys, &self.payload],
            )
            .await
            .context("filling the ceiling's current rows")?;
        Ok(())
    }

    async fn drop_tables(&self) -> anyhow::Result<()> {
        self.client
            .batch_execute(&drop_sql())
            .await
            .context("dropping the ceiling tables")
    }

    fn postgres_cpu_seconds(&self) -> Option<f64> {
        self.data_dir
            .and_then(|dir| process_stats::postgres_cpu_seconds(dir, self.ticks_per_second))
    }

    /// Starts measuring one batch size.
    fn start(&self, seconds: f64) -> Stopwatch {
        let start = Instant::now();
        Stopwatch {
            cpu_before: self.postgres_cpu_seconds(),
            start,
            deadline: start + Duration::from_secs_f64(seconds),
            transactions: 0,
        }
    }

    /// The first index of the next transaction of `rows` rows, or `None`
    /// when the batch size's time (or its most transactions) is up.
    fn next_transaction(&mut self, stopwatch: &mut Stopwatch, rows: usize) -> Option<i64> {
        if Instant::now() >= stopwatch.deadline || stopwatch.transactions >= TRANSACTIONS_MAX {
            return None;
        }
        stopwatch.transactions += 1;
        let first = self.next;
        self.next += rows as i64;
        Some(first)
    }

    /// What the transactions since `stopwatch` started came to.
    fn finish(&self, stopwatch: Stopwatch, shape: Shape, rows: usize) -> CeilingPoint {
        let elapsed_seconds = stopwatch.start.elapsed().as_secs_f64();
        let rows_total = stopwatch.transactions * rows as u64;
        let cpu = stopwatch
            .cpu_before
            .zip(self.postgres_cpu_seconds())
            .map(|(before, after)| after - before);
        CeilingPoint {
            shape,
            rows_per_transaction: rows,
            transactions_per_second: stopwatch.transactions as f64 / elapsed_seconds,
            rows_per_second: rows_total as f64 / elapsed_seconds,
            postgres_cpu_us_per_row: cpu
                .filter(|_| rows_total > 0)
                .map(|seconds| seconds * 1e6 / rows_total as f64),
        }
    }

    async fn log_rows(&mut self, rows: usize, seconds: f64) -> anyhow::Result<CeilingPoint> {
        let statement = self.client.prepare(&insert_sql(TABLE, rows)).await?;
        let (term, kind) = (1_i64, 1_i16);
        let mut stopwatch = self.start(seconds);
        while let Some(first) = self.next_transaction(&mut stopwatch, rows) {
            let indexes: Vec<i64> = (first..first + rows as i64).collect();
            let mut parameters: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(rows * 4);
            for index in &indexes {
                parameters.extend([index as &(dyn ToSql + Sync), &term, &kind, &self.payload]);
            }
            let transaction = self.client.transaction().await?;
            transaction.execute(&statement, &parameters).await?;
            transaction.commit().await?;
        }
        Ok(self.finish(stopwatch, Shape::LogRows, rows))
    }

    async fn writes(&mut self, rows: usize, seconds: f64) -> anyhow::Result<CeilingPoint> {
        let log = self
            .client
            .prepare(&format!(
                "INSERT INTO {WRITE_LOG_TABLE} (log_index, term, kind, data)
                 SELECT i, 1, 1, $2 FROM unnest($1::bigint[]) AS i"
            ))
            .await?;
        let history = self
            .client
            .prepare(&format!(
                "INSERT INTO {WRITE_HISTORY_TABLE}
                     (revision, sub, key, value, create_revision, version, lease, prev_revision)
                 SELECT r, 0, k, $3, 1, 2, 0, r - 1 FROM unnest($1::bigint[], $2::bytea[]) AS w(r, k)"
            ))
            .await?;
        let current = self
            .client
            .prepare(&format!(
                "INSERT INTO {WRITE_CURRENT_TABLE} AS c (key, value, create_revision, mod_revision, version)
                 SELECT k, $3, r, r, 1 FROM unnest($1::bigint[], $2::bytea[]) AS w(r, k)
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value,
                     mod_revision = EXCLUDED.mod_revision, version = c.version + 1"
            ))
            .await?;
        let command = vec![b'c'; self.payload.len() + COMMAND_OVERHEAD_BYTES];
        let mut stopwatch = self.start(seconds);
        while let Some(first) = self.next_transaction(&mut stopwatch, rows) {
            let indexes: Vec<i64> = (first..first + rows as i64).collect();
            let keys = write_keys(first as u64, rows, self.keys);
            let transaction = self.client.transaction().await?;
            transaction.execute(&log, &[&indexes, &command]).await?;
            transaction
                .execute(&history, &[&indexes, &keys, &self.payload])
                .await?;
            transaction
                .execute(&current, &[&indexes, &keys, &self.payload])
                .await?;
            transaction.commit().await?;
        }
        Ok(self.finish(stopwatch, Shape::Writes, rows))
    }
}

/// One batch size being measured.
struct Stopwatch {
    cpu_before: Option<f64>,
    start: Instant,
    deadline: Instant,
    transactions: u64,
}

fn drop_sql() -> String {
    format!(
        "DROP TABLE IF EXISTS {TABLE}, {WRITE_LOG_TABLE}, {WRITE_HISTORY_TABLE}, {WRITE_CURRENT_TABLE}"
    )
}

/// Of the `shape` points, the one whose batch size is nearest `rows` (by
/// ratio, the smaller on a tie).
pub fn nearest(points: &[CeilingPoint], shape: Shape, rows: f64) -> Option<&CeilingPoint> {
    if rows.is_nan() || rows <= 0.0 {
        return None;
    }
    points
        .iter()
        .filter(|point| point.shape == shape && point.rows_per_transaction > 0)
        .min_by(|a, b| {
            let distance =
                |point: &CeilingPoint| (point.rows_per_transaction as f64 / rows).ln().abs();
            distance(a)
                .total_cmp(&distance(b))
                .then(a.rows_per_transaction.cmp(&b.rows_per_transaction))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftgres_devcluster::testing::{ScratchInstance, TestDatabase};

    #[test]
    fn the_insert_numbers_four_parameters_per_row() {
        assert_eq!(
            insert_sql("t", 2),
            "INSERT INTO t (log_index, term, kind, data) VALUES ($1, $2, $3, $4), ($5, $6, $7, $8)"
        );
    }

    #[test]
    fn a_transaction_never_writes_a_key_twice_and_the_keys_take_turns() {
        // 10 keys: stride 7 (6 shares a factor with 10).
        let keys = write_keys(1, 4, 10);
        assert_eq!(keys, [key(7), key(4), key(1), key(8)]);
        for keys_total in [1, 2, 10, 64, 10_000] {
            let rows = keys_total.min(7) as usize;
            let mut seen = std::collections::BTreeMap::new();
            for first in (0..3 * keys_total * rows as u64).step_by(rows) {
                let batch = write_keys(first, rows, keys_total);
                let distinct: std::collections::BTreeSet<_> = batch.iter().collect();
                assert_eq!(distinct.len(), rows, "{keys_total} keys");
                for key in batch {
                    *seen.entry(key).or_insert(0) += 1;
                }
            }
            assert_eq!(seen.len() as u64, keys_total);
            let (least, most) = (seen.values().min().unwrap(), seen.values().max().unwrap());
            assert!(most - least <= 1, "{keys_total} keys: {least} to {most}");
        }
    }

    #[test]
    fn neighbouring_writes_land_far_apart() {
        let number =
            |key: &[u8]| -> i64 { std::str::from_utf8(&key[4..]).unwrap().parse().unwrap() };
        let batch = write_keys(5, 64, 10_000);
        for pair in batch.windows(2) {
            let distance = (number(&pair[0]) - number(&pair[1])).abs();
            assert!(distance >= 2_500, "{distance}");
        }
    }

    fn point(shape: Shape, rows: usize) -> CeilingPoint {
        CeilingPoint {
            shape,
            rows_per_transaction: rows,
            transactions_per_second: 1.0,
            rows_per_second: rows as f64,
            postgres_cpu_us_per_row: None,
        }
    }

    #[test]
    fn the_nearest_batch_size_is_of_the_shape_asked_for() {
        let points = [
            point(Shape::LogRows, 64),
            point(Shape::Writes, 1),
            point(Shape::Writes, 16),
            point(Shape::Writes, 256),
        ];
        let rows =
            |wanted: f64| nearest(&points, Shape::Writes, wanted).map(|p| p.rows_per_transaction);
        assert_eq!(rows(1.0), Some(1));
        assert_eq!(rows(3.9), Some(1));
        assert_eq!(rows(4.0), Some(1), "a tie goes to the smaller");
        assert_eq!(rows(4.1), Some(16));
        assert_eq!(rows(60.0), Some(16));
        assert_eq!(rows(70.0), Some(256));
        assert_eq!(rows(5_000.0), Some(256));
        assert_eq!(rows(0.0), None);
        assert_eq!(
            nearest(&points, Shape::LogRows, 1.0).map(|p| p.rows_per_transaction),
            Some(64)
        );
        assert!(nearest(&points[..1], Shape::Writes, 1.0).is_none());
    }

    /// Against a real Postgres (a server of the test's own, so that its
    /// CPU is this test's): every point commits and is measured, and the
    /// tables are gone after.
    #[tokio::test]
    async fn both_shapes_commit_on_a_real_postgres_and_clean_up() {
        let server = ScratchInstance::start(&[]).unwrap();
        let conninfo = server.instance().conninfo();
        let target = CeilingTarget {
            conninfo: &conninfo,
            data_dir: Some(server.instance().data_dir()),
            value_bytes: 100,
            keys: 8,
        };
        let points = measure(&target, &[1, 16], 0.3).await.unwrap();
        let shapes: Vec<(Shape, usize)> = points
            .iter()
            .map(|point| (point.shape, point.rows_per_transaction))
            .collect();
        assert_eq!(
            shapes,
            [
                (Shape::LogRows, 1),
                (Shape::LogRows, 16),
                (Shape::Writes, 1),
                (Shape::Writes, 16)
            ]
        );
        for point in &points {
            assert!(point.transactions_per_second > 0.0, "{point:?}");
            let rows = point.rows_per_second / point.transactions_per_second;
            assert!(
                (rows - point.rows_per_transaction as f64).abs() < 1e-6,
                "{point:?}"
            );
            let cpu = point
                .postgres_cpu_us_per_row
                .expect("the server's CPU is measured");
            assert!(cpu > 0.0 && cpu.is_finite(), "{point:?}");
        }
        let (client, connection) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let left: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'raftgres_bench_ceiling%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(left, 0);
    }

    /// A write transaction leaves one log row and one history row per
    /// write and counts each write in its key's version.
    #[tokio::test]
    async fn a_write_transaction_writes_a_log_row_a_history_row_and_the_key() {
        let database = TestDatabase::create().await.unwrap();
        let (client, connection) =
            tokio_postgres::connect(database.conninfo(), tokio_postgres::NoTls)
                .await
                .unwrap();
        tokio::spawn(connection);
        let mut ceiling = Ceiling {
            client,
            data_dir: None,
            ticks_per_second: 100.0,
            payload: vec![b'v'; 10],
            keys: 5,
            next: 1,
        };
        ceiling.create_tables().await.unwrap();
        let point = ceiling.writes(4, 0.2).await.unwrap();
        let writes = ceiling.next - 1;
        assert!(writes > 0 && writes % 4 == 0, "{writes} writes");
        assert_eq!(point.rows_per_transaction, 4);
        let count = |sql: String| {
            let client = &ceiling.client;
            async move { client.query_one(&sql, &[]).await.unwrap().get::<_, i64>(0) }
        };
        assert_eq!(
            count(format!("SELECT count(*) FROM {WRITE_LOG_TABLE}")).await,
            writes
        );
        assert_eq!(
            count(format!("SELECT count(*) FROM {WRITE_HISTORY_TABLE}")).await,
            writes
        );
        assert_eq!(
            count(format!(
                "SELECT sum(version - 1)::bigint FROM {WRITE_CURRENT_TABLE}"
            ))
            .await,
            writes
        );
        assert_eq!(
            count(format!("SELECT count(*) FROM {WRITE_CURRENT_TABLE}")).await,
            5
        );
        ceiling.drop_tables().await.unwrap();
    }
}
