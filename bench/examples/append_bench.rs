//! Append throughput of `PgStore::append` against a plain multi-row INSERT
//! baseline, on the same freshly started Postgres instance (fsync on).
//!
//! ```text
//! cargo run --release -p raftgres-bench --example append_bench [-- --seconds-per-point 4]
//! ```
//!
//! For batch sizes 1, 16 and 256 with 100-byte payloads, it measures
//! appended entries per second through `PgStore::append` (hard state saved in
//! every batch, so every batch is DELETE suffix + guard + UNNEST insert +
//! UPDATE hard state, pipelined in one round trip), and the baseline: BEGIN,
//! one multi-row `INSERT ... VALUES (...), (...)` of the same rows into an
//! equivalent table, COMMIT. It also measures the alternative bulk path,
//! binary COPY, in the same transaction shape as the store. Each point
//! alternates store and baseline rounds so that background load on the
//! machine hits both alike.

use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Client;

use raftgres_devcluster::testing::ScratchInstance;
use raftgres_storage_pg::{
    AppendBatch, EntryKind, HardState, LogEntry, LogStore, PgStore, PgStoreConfig,
};

const BATCH_SIZES: [usize; 3] = [1, 16, 256];
const PAYLOAD_BYTES: usize = 100;
/// Store and baseline alternate this many times per point, so that background
/// load on a shared machine hits every method alike.
const ROUNDS: u32 = 15;

struct Point {
    batch_size: usize,
    store: f64,
    store_new_term: f64,
    baseline: f64,
    copy: f64,
}

fn log_entries(first_index: u64, batch_size: usize, payload: &[u8]) -> Vec<LogEntry> {
    (0..batch_size as u64)
        .map(|offset| LogEntry {
            index: first_index + offset,
            term: 1,
            kind: EntryKind::Command,
            data: payload.to_vec(),
        })
        .collect()
}

fn baseline_sql(table: &str, batch_size: usize) -> String {
    let rows: Vec<String> = (0..batch_size)
        .map(|row| {
            format!(
                "(${}, ${}, ${}, ${})",
                row * 4 + 1,
                row * 4 + 2,
                row * 4 + 3,
                row * 4 + 4
            )
        })
        .collect();
    format!(
        "INSERT INTO {table} (log_index, term, kind, data) VALUES {}",
        rows.join(", ")
    )
}

async fn baseline_append(
    client: &mut Client,
    statement: &tokio_postgres::Statement,
    first_index: i64,
    batch_size: usize,
    payload: &[u8],
) -> anyhow::Result<()> {
    let indexes: Vec<i64> = (0..batch_size as i64)
        .map(|offset| first_index + offset)
        .collect();
    let term = 1_i64;
    let kind = EntryKind::Command.to_code();
    let mut parameters: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(batch_size * 4);
    for index in &indexes {
        parameters.extend([index as &(dyn ToSql + Sync), &term, &kind, &payload]);
    }
    let transaction = client.transaction().await?;
    transaction.execute(statement, &parameters).await?;
    transaction.commit().await?;
    Ok(())
}

/// The store's transaction shape with binary COPY instead of UNNEST.
async fn copy_append(
    client: &mut Client,
    first_index: i64,
    batch_size: usize,
    payload: &[u8],
) -> anyhow::Result<()> {
    let transaction = client.transaction().await?;
    transaction
        .execute(
            "DELETE FROM bench_copy WHERE log_index >= $1",
            &[&first_index],
        )
        .await?;
    let sink = transaction
        .copy_in("COPY bench_copy (log_index, term, kind, data) FROM STDIN (FORMAT binary)")
        .await?;
    let writer = BinaryCopyInWriter::new(sink, &[Type::INT8, Type::INT8, Type::INT2, Type::BYTEA]);
    futures::pin_mut!(writer);
    let kind = EntryKind::Command.to_code();
    for offset in 0..batch_size as i64 {
        writer
            .as_mut()
            .write(&[&(first_index + offset), &1_i64, &kind, &payload])
            .await?;
    }
    writer.finish().await?;
    transaction
        .execute(
            "UPDATE bench_copy_hard_state SET term = 1, voted_for = 1",
            &[],
        )
        .await?;
    transaction.commit().await?;
    Ok(())
}

async fn connect(conninfo: &str) -> anyhow::Result<Client> {
    let (client, connection) = tokio_postgres::connect(conninfo, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds_per_point: f64 = match std::env::args().skip(1).collect::<Vec<_>>().as_slice() {
        [] => 3.0,
        [flag, value] if flag == "--seconds-per-point" => {
            value.parse().context("--seconds-per-point")?
        }
        _ => anyhow::bail!("usage: append_bench [--seconds-per-point SECONDS]"),
    };
    // Each method gets `seconds_per_point` per batch size, split in rounds.
    let round = Duration::from_secs_f64(seconds_per_point / ROUNDS as f64);
    eprintln!(
        "{} batch sizes x 4 methods x {seconds_per_point} s: about {:.0} s",
        BATCH_SIZES.len(),
        BATCH_SIZES.len() as f64 * 4.0 * seconds_per_point
    );
    eprintln!("starting a private postgres (fsync on, synchronous_commit on) ...");
    let scratch = ScratchInstance::start(&[])?;
    let instance = scratch.instance();
    let mut admin = connect(&instance.conninfo()).await?;
    admin.batch_execute("CREATE DATABASE bench").await?;
    let conninfo = instance.conninfo_for("bench");
    let mut store = PgStore::open(PgStoreConfig::new(conninfo.clone(), "bench", 1)).await?;
    admin = connect(&conninfo).await?;
    admin
        .batch_execute(
            "CREATE TABLE bench_baseline (log_index bigint PRIMARY KEY, term bigint NOT NULL, kind smallint NOT NULL, data bytea NOT NULL);
             CREATE TABLE bench_copy (log_index bigint PRIMARY KEY, term bigint NOT NULL, kind smallint NOT NULL, data bytea NOT NULL);
             CREATE TABLE bench_copy_hard_state (term bigint, voted_for bigint);
             INSERT INTO bench_copy_hard_state VALUES (0, NULL);",
        )
        .await?;
    let payload = vec![0xab_u8; PAYLOAD_BYTES];
    let mut store_term = 1;
    let mut hard_state = HardState {
        term: store_term,
        voted_for: Some(1),
    };
    let (mut store_next, mut baseline_next, mut copy_next) = (1_u64, 1_i64, 1_i64);
    let mut points = Vec::new();
    for batch_size in BATCH_SIZES {
        let statement = admin
            .prepare(&baseline_sql("bench_baseline", batch_size))
            .await?;
        let (mut store_total, mut store_new_term_total, mut baseline_total, mut copy_total) = (
            (0, Duration::ZERO),
            (0, Duration::ZERO),
            (0, Duration::ZERO),
            (0, Duration::ZERO),
        );
        for _ in 0..ROUNDS {
            let started = Instant::now();
            let mut entries = 0;
            while started.elapsed() < round {
                let batch = AppendBatch {
                    hard_state: Some(hard_state),
                    entries: log_entries(store_next, batch_size, &payload),
                };
                store.append(batch).await?;
                store_next += batch_size as u64;
                entries += batch_size as u64;
            }
            store_total = (store_total.0 + entries, store_total.1 + started.elapsed());
            // Worst case: the hard state changes in every batch, so the
            // hard state row is rewritten in every append transaction.
            let started = Instant::now();
            let mut entries = 0;
            while started.elapsed() < round {
                store_term += 1;
                let changed = HardState {
                    term: store_term,
                    voted_for: Some(1),
                };
                let batch = AppendBatch {
                    hard_state: Some(changed),
                    entries: log_entries(store_next, batch_size, &payload),
                };
                store.append(batch).await?;
                store_next += batch_size as u64;
                entries += batch_size as u64;
            }
            store_new_term_total = (
                store_new_term_total.0 + entries,
                store_new_term_total.1 + started.elapsed(),
            );
            hard_state = HardState {
                term: store_term,
                voted_for: Some(1),
            };
            let started = Instant::now();
            let mut entries = 0;
            while started.elapsed() < round {
                baseline_append(&mut admin, &statement, baseline_next, batch_size, &payload)
                    .await?;
                baseline_next += batch_size as i64;
                entries += batch_size as u64;
            }
            baseline_total = (
                baseline_total.0 + entries,
                baseline_total.1 + started.elapsed(),
            );
            let started = Instant::now();
            let mut entries = 0;
            while started.elapsed() < round {
                copy_append(&mut admin, copy_next, batch_size, &payload).await?;
                copy_next += batch_size as i64;
                entries += batch_size as u64;
            }
            copy_total = (copy_total.0 + entries, copy_total.1 + started.elapsed());
        }
        let rate = |(entries, elapsed): (u64, Duration)| entries as f64 / elapsed.as_secs_f64();
        let point = Point {
            batch_size,
            store: rate(store_total),
            store_new_term: rate(store_new_term_total),
            baseline: rate(baseline_total),
            copy: rate(copy_total),
        };
        eprintln!(
            "batch {:>3}: store {:>7.0} entries/s (new term every batch {:>7.0}), baseline {:>7.0}, ratio {:.2}, copy variant {:>7.0}",
            point.batch_size, point.store, point.store_new_term, point.baseline, point.store / point.baseline, point.copy
        );
        points.push(point);
    }
    store.close().await;
    println!();
    println!("| batch size | PgStore::append, same hard state (entries/s) | PgStore::append, new term every batch (entries/s) | baseline multi-row INSERT (entries/s) | ratio | ratio, new term | binary COPY variant (entries/s) |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for point in &points {
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} | {:.0} |",
            point.batch_size,
            point.store,
            point.store_new_term,
            point.baseline,
            point.store / point.baseline,
            point.store_new_term / point.baseline,
            point.copy
        );
    }
    let worst = points
        .iter()
        .map(|point| point.store.min(point.store_new_term) / point.baseline)
        .fold(f64::INFINITY, f64::min);
    println!();
    println!(
        "lowest ratio {worst:.2} (target >= 0.90): {}",
        if worst >= 0.9 { "met" } else { "NOT met" }
    );
    drop(admin);
    drop(scratch);
    Ok(())
}
