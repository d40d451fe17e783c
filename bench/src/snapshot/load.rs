//! Loads the state machine: `rows` puts of distinct keys through the
//! leader, `clients` at a time, each a closed loop with one put in flight,
//! with a progress bar. The values are pseudo-random bytes derived from
//! the row number, so that neither Postgres' TOAST compression nor
//! pg_dump's makes the data smaller than it is.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use raftgres::client::Client;

/// Largest value: well under the default `limits.command_bytes_max` (1 MiB)
/// and `raft.message_bytes_max`, so that every put is one log entry.
pub const VALUE_BYTES_MAX: usize = 256 << 10;

/// What to load.
#[derive(Clone, Copy, Debug)]
pub struct LoadPlan {
    /// Distinct keys written, once each.
    pub rows: usize,
    /// Bytes of every value.
    pub value_bytes: usize,
    /// Concurrent puts.
    pub clients: usize,
}

/// What the load did.
#[derive(Clone, Copy, Debug)]
pub struct Loaded {
    /// Rows written.
    pub rows: usize,
    /// Bytes of values written.
    pub value_bytes_total: u64,
    /// Wall time of the load.
    pub seconds: f64,
}

/// The key of row `row`; keys sort in row order.
pub fn key(row: usize) -> Vec<u8> {
    format!("snapshot-bench/{row:08}").into_bytes()
}

/// The value of row `row`: `bytes` bytes of splitmix64 output seeded by
/// the row number.
pub fn value(row: usize, bytes: usize) -> Vec<u8> {
    let mut state = (row as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5EED;
    let mut value = Vec::with_capacity(bytes + 8);
    while value.len() < bytes {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut mixed = state;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        mixed ^= mixed >> 31;
        value.extend_from_slice(&mixed.to_le_bytes());
    }
    value.truncate(bytes);
    value
}

/// Writes every row of `plan` through `client` (which finds the leader and
/// retries); fails on the first put the client gives up on.
pub async fn load(client: &Client, plan: &LoadPlan) -> anyhow::Result<Loaded> {
    let started = Instant::now();
    let next_row = Arc::new(AtomicUsize::new(0));
    let total_bytes = (plan.rows * plan.value_bytes) as u64;
    let progress = ProgressBar::new(total_bytes);
    progress.set_style(
        ProgressStyle::with_template(
            "{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} {elapsed:>4} eta {eta}",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    progress.set_prefix("loading");
    let writers: Vec<_> = (0..plan.clients)
        .map(|_| {
            let client = client.clone();
            let next_row = next_row.clone();
            let progress = progress.clone();
            let plan = *plan;
            tokio::spawn(async move {
                loop {
                    let row = next_row.fetch_add(1, Ordering::Relaxed);
                    if row >= plan.rows {
                        return anyhow::Ok(());
                    }
                    client
                        .put(key(row), value(row, plan.value_bytes))
                        .await
                        .with_context(|| format!("putting row {row}"))?;
                    progress.inc(plan.value_bytes as u64);
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.context("a load task panicked")??;
    }
    progress.finish();
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "snapshot bench: loaded {} rows of {} B in {seconds:.1} s",
        plan.rows, plan.value_bytes
    );
    Ok(Loaded {
        rows: plan.rows,
        value_bytes_total: total_bytes,
        seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_deterministic_distinct_and_of_the_asked_size() {
        assert_eq!(value(7, 1000), value(7, 1000));
        assert_ne!(value(7, 1000), value(8, 1000));
        assert_eq!(value(3, 16_385).len(), 16_385);
    }

    #[test]
    fn keys_sort_in_row_order() {
        assert!(key(9) < key(10));
        assert!(key(99_999) < key(100_000));
    }
}
