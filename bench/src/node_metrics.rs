//! Scrapes a raftgres node's metrics endpoint (Prometheus text over plain
//! HTTP/1.1) and keeps the histogram sums and counts the report needs, so
//! that before/after differences give per-point averages.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one scrape may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest metrics page read.
const RESPONSE_BYTES_MAX: u64 = 4 << 20;

/// Every unlabelled sample of a page (`name value`), by name.
pub type Samples = BTreeMap<String, f64>;

/// Fetches `http://address/metrics` and parses it.
pub async fn scrape(address: &str) -> anyhow::Result<Samples> {
    let fetch = async {
        let mut stream = TcpStream::connect(address).await?;
        stream
            .write_all(
                format!("GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut response = Vec::new();
        stream
            .take(RESPONSE_BYTES_MAX)
            .read_to_end(&mut response)
            .await?;
        anyhow::Ok(response)
    };
    let response = tokio::time::timeout(SCRAPE_TIMEOUT, fetch)
        .await
        .with_context(|| format!("scraping {address} timed out"))?
        .with_context(|| format!("scraping {address}"))?;
    let text = String::from_utf8_lossy(&response);
    let body = text.split_once("\r\n\r\n").map_or(&*text, |(_, body)| body);
    Ok(parse(body))
}

/// The unlabelled samples of a Prometheus text page; comments and labelled
/// series (buckets, per-method counters) are skipped.
pub fn parse(text: &str) -> Samples {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.contains('{'))
        .filter_map(|line| {
            let (name, value) = line.split_once(' ')?;
            Some((name.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

/// Averages of one node over a point, from two scrapes.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct NodeActivity {
    /// Node id.
    pub node_id: u64,
    /// Whether it led during the point.
    pub leader: bool,
    /// Log-write transactions in the point.
    pub log_write_transactions: f64,
    /// Entries per log-write transaction (Postgres transaction).
    pub entries_per_transaction: f64,
    /// Mean time of one log write (`raftgres_storage_write_seconds`), ms.
    pub storage_write_ms_mean: f64,
    /// Mean time of one apply batch (`raftgres_apply_seconds`), ms.
    pub apply_ms_mean: f64,
    /// Apply batches in transactions of their own in the point.
    pub apply_batches: f64,
    /// Entries applied inside a log write's transaction.
    pub applied_with_write_entries: f64,
    /// Entries appended in the point.
    pub appended_entries: f64,
    /// Entries committed in the point (`raftgres_commit_index` moved).
    pub committed_entries: f64,
}

impl NodeActivity {
    /// Entries per Postgres transaction: appended entries over log writes
    /// plus apply transactions of their own (each entry is appended and
    /// applied once).
    pub fn entries_per_postgres_transaction(&self) -> f64 {
        let transactions = self.log_write_transactions + self.apply_batches;
        if transactions > 0.0 {
            self.appended_entries / transactions
        } else {
            0.0
        }
    }

    /// Percent of the appended entries that were applied inside a log
    /// write's transaction.
    pub fn applied_with_write_percent(&self) -> f64 {
        if self.appended_entries > 0.0 {
            self.applied_with_write_entries / self.appended_entries * 100.0
        } else {
            0.0
        }
    }
}

/// What changed between `before` and `after` on one node.
pub fn activity(node_id: u64, leader: bool, before: &Samples, after: &Samples) -> NodeActivity {
    let delta = |name: &str| {
        after.get(name).copied().unwrap_or(0.0) - before.get(name).copied().unwrap_or(0.0)
    };
    let ratio = |sum: f64, count: f64| if count > 0.0 { sum / count } else { 0.0 };
    let transactions = delta("raftgres_append_batch_entries_count");
    let apply_batches = delta("raftgres_apply_seconds_count");
    let appended_entries = delta("raftgres_append_batch_entries_sum");
    NodeActivity {
        node_id,
        leader,
        log_write_transactions: transactions,
        entries_per_transaction: ratio(appended_entries, transactions),
        storage_write_ms_mean: ratio(
            delta("raftgres_storage_write_seconds_sum"),
            delta("raftgres_storage_write_seconds_count"),
        ) * 1000.0,
        apply_ms_mean: ratio(delta("raftgres_apply_seconds_sum"), apply_batches) * 1000.0,
        apply_batches,
        applied_with_write_entries: delta("raftgres_applied_with_write_entries_total"),
        appended_entries,
        committed_entries: delta("raftgres_commit_index"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "# HELP raftgres_term Current Raft term.\n# TYPE raftgres_term gauge\nraftgres_term 2\nraftgres_append_batch_entries_bucket{le=\"4\"} 1\nraftgres_append_batch_entries_sum 10\nraftgres_append_batch_entries_count 5\nraftgres_storage_write_seconds_sum 0.01\nraftgres_storage_write_seconds_count 5\nraftgres_commit_index 70\n";
    const AFTER: &str = "raftgres_term 2\nraftgres_append_batch_entries_sum 410\nraftgres_append_batch_entries_count 25\nraftgres_storage_write_seconds_sum 0.07\nraftgres_storage_write_seconds_count 25\nraftgres_apply_seconds_sum 0.5\nraftgres_apply_seconds_count 100\nraftgres_applied_with_write_entries_total 300\nraftgres_commit_index 470\n";

    #[test]
    fn deltas_give_entries_per_transaction_and_mean_times() {
        let before = parse(BEFORE);
        assert_eq!(before.get("raftgres_term"), Some(&2.0));
        assert!(!before.keys().any(|name| name.contains("bucket")));
        let activity = activity(2, true, &before, &parse(AFTER));
        assert_eq!(activity.log_write_transactions, 20.0);
        assert_eq!(activity.entries_per_transaction, 20.0);
        assert!((activity.storage_write_ms_mean - 3.0).abs() < 1e-9);
        assert!((activity.apply_ms_mean - 5.0).abs() < 1e-9);
        // 400 entries in 20 log writes and 100 applies of their own.
        assert!((activity.entries_per_postgres_transaction() - 400.0 / 120.0).abs() < 1e-9);
        assert!((activity.applied_with_write_percent() - 75.0).abs() < 1e-9);
        assert_eq!(activity.committed_entries, 400.0);
        // Nothing happened: zeros, not NaN.
        let idle = super::activity(1, false, &before, &before);
        assert_eq!(idle.entries_per_transaction, 0.0);
        assert_eq!(idle.entries_per_postgres_transaction(), 0.0);
        assert_eq!(idle.applied_with_write_percent(), 0.0);
    }
}
