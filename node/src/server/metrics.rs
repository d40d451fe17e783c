//! Prometheus metrics in the text exposition format, served over plain
//! HTTP on `metrics_addr`. Counters and gauges are atomics; histograms
//! have fixed buckets. No dependency beyond tokio.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn increment(&self) {
        self.add(1);
    }

    /// Adds `amount`.
    pub fn add(&self, amount: u64) {
        self.0.fetch_add(amount, Ordering::Relaxed);
    }

    /// The current count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    /// Sets the value.
    pub fn set(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A histogram with fixed upper bounds (cumulative when rendered).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One count per bound, plus the overflow bucket.
    counts: Vec<AtomicU64>,
    /// Sum of observations, in millionths.
    sum_micros: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, value: f64) {
        let bucket = self
            .bounds
            .iter()
            .position(|bound| value <= *bound)
            .unwrap_or(self.bounds.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((value * 1e6) as u64, Ordering::Relaxed);
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.counts
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .sum()
    }

    /// Sum of observations.
    pub fn sum(&self) -> f64 {
        self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
    }

    fn render(&self, name: &str, help: &str, output: &mut String) {
        writeln!(output, "# HELP {name} {help}\n# TYPE {name} histogram").unwrap();
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count.load(Ordering::Relaxed);
            writeln!(output, "{name}_bucket{{le=\"{bound}\"}} {cumulative}").unwrap();
        }
        writeln!(output, "{name}_bucket{{le=\"+Inf\"}} {}", self.count()).unwrap();
        writeln!(
            output,
            "{name}_sum {}\n{name}_count {}",
            self.sum(),
            self.count()
        )
        .unwrap();
    }
}

const SECONDS_BOUNDS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
const ENTRIES_BOUNDS: &[f64] = &[
    0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// Every metric a node exports.
#[derive(Debug)]
pub struct Metrics {
    /// Current term.
    pub term: Gauge,
    /// 1 while this node leads.
    pub is_leader: Gauge,
    /// Elections this node started (real campaigns, not pre-votes).
    pub elections: Counter,
    /// Times this node became leader.
    pub leader_changes: Counter,
    /// Highest committed index.
    pub commit_index: Gauge,
    /// Highest applied index.
    pub applied_index: Gauge,
    /// Last log index.
    pub last_index: Gauge,
    /// Entries per log write (one Postgres transaction).
    pub append_batch_entries: Histogram,
    /// Duration of log writes.
    pub storage_write_seconds: Histogram,
    /// Duration of apply transactions.
    pub apply_seconds: Histogram,
    /// Failed storage operations (each retried).
    pub storage_errors: Counter,
    /// 0 while the log writer cannot reach Postgres.
    pub storage_healthy: Gauge,
    /// Peer messages sent.
    pub peer_messages_sent: Counter,
    /// Peer messages received.
    pub peer_messages_received: Counter,
    /// Peer messages dropped because a peer's queue was full or it was down.
    pub peer_messages_dropped: Counter,
    /// Peer messages refused at the boundary: unauthenticated, from a
    /// non-member, or breaking the protocol's invariants.
    pub peer_messages_refused: Counter,
    /// Peer messages the core ignored because they could not come from an
    /// honest peer in its state (an acknowledgement beyond the log, a
    /// second leader in one term).
    pub peer_messages_implausible: Counter,
    /// Connections closed on arrival because `limits.connections_max` were
    /// open.
    pub connections_refused: Counter,
    /// TLS handshakes that failed or timed out.
    pub tls_handshakes_failed: Counter,
    /// Client RPCs served, by method.
    pub client_requests: ClientRequestCounters,
}

/// Client RPC counts by method.
#[derive(Debug, Default)]
pub struct ClientRequestCounters {
    /// `Client.Submit`.
    pub submit: Counter,
    /// `Kv.Put`, `Kv.Delete` and `Kv.CompareAndSwap`.
    pub write: Counter,
    /// `Kv.Get` and `Kv.Range`.
    pub read: Counter,
    /// `Cluster.*`.
    pub cluster: Counter,
    /// Requests refused with an error status.
    pub refused: Counter,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            term: Gauge::default(),
            is_leader: Gauge::default(),
            elections: Counter::default(),
            leader_changes: Counter::default(),
            commit_index: Gauge::default(),
            applied_index: Gauge::default(),
            last_index: Gauge::default(),
            append_batch_entries: Histogram::new(ENTRIES_BOUNDS),
            storage_write_seconds: Histogram::new(SECONDS_BOUNDS),
            apply_seconds: Histogram::new(SECONDS_BOUNDS),
            storage_errors: Counter::default(),
            storage_healthy: Gauge(AtomicU64::new(1)),
            peer_messages_sent: Counter::default(),
            peer_messages_received: Counter::default(),
            peer_messages_dropped: Counter::default(),
            peer_messages_refused: Counter::default(),
            peer_messages_implausible: Counter::default(),
            connections_refused: Counter::default(),
            tls_handshakes_failed: Counter::default(),
            client_requests: ClientRequestCounters::default(),
        }
    }
}

impl Metrics {
    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut output = String::new();
        let gauges = [
            ("raftgres_term", "Current Raft term.", self.term.get()),
            (
                "raftgres_is_leader",
                "1 while this node is the leader.",
                self.is_leader.get(),
            ),
            (
                "raftgres_commit_index",
                "Highest committed log index.",
                self.commit_index.get(),
            ),
            (
                "raftgres_applied_index",
                "Highest applied log index.",
                self.applied_index.get(),
            ),
            (
                "raftgres_last_index",
                "Last log index.",
                self.last_index.get(),
            ),
            (
                "raftgres_apply_lag_entries",
                "Committed entries not yet applied.",
                self.commit_index
                    .get()
                    .saturating_sub(self.applied_index.get()),
            ),
            (
                "raftgres_storage_healthy",
                "0 while Postgres is unreachable for log writes.",
                self.storage_healthy.get(),
            ),
        ];
        for (name, help, value) in gauges {
            writeln!(
                output,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            )
            .unwrap();
        }
        let counters = [
            (
                "raftgres_elections_total",
                "Elections started by this node.",
                self.elections.get(),
            ),
            (
                "raftgres_leader_changes_total",
                "Times this node became leader.",
                self.leader_changes.get(),
            ),
            (
                "raftgres_storage_errors_total",
                "Failed storage operations, each retried.",
                self.storage_errors.get(),
            ),
            (
                "raftgres_peer_messages_sent_total",
                "Raft messages sent to peers.",
                self.peer_messages_sent.get(),
            ),
            (
                "raftgres_peer_messages_received_total",
                "Raft messages received.",
                self.peer_messages_received.get(),
            ),
            (
                "raftgres_peer_messages_dropped_total",
                "Raft messages dropped.",
                self.peer_messages_dropped.get(),
            ),
            (
                "raftgres_peer_messages_refused_total",
                "Peer messages refused: unauthenticated, from a non-member, or malformed.",
                self.peer_messages_refused.get(),
            ),
            (
                "raftgres_peer_messages_implausible_total",
                "Peer messages ignored because no honest peer could have sent them.",
                self.peer_messages_implausible.get(),
            ),
            (
                "raftgres_connections_refused_total",
                "Connections closed on arrival because limits.connections_max were open.",
                self.connections_refused.get(),
            ),
            (
                "raftgres_tls_handshakes_failed_total",
                "TLS handshakes that failed or timed out.",
                self.tls_handshakes_failed.get(),
            ),
        ];
        for (name, help, value) in counters {
            writeln!(
                output,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            )
            .unwrap();
        }
        let name = "raftgres_client_requests_total";
        writeln!(
            output,
            "# HELP {name} Client RPCs by method.\n# TYPE {name} counter"
        )
        .unwrap();
        let requests = &self.client_requests;
        for (method, counter) in [
            ("submit", &requests.submit),
            ("write", &requests.write),
            ("read", &requests.read),
            ("cluster", &requests.cluster),
            ("refused", &requests.refused),
        ] {
            writeln!(output, "{name}{{method=\"{method}\"}} {}", counter.get()).unwrap();
        }
        self.append_batch_entries.render(
            "raftgres_append_batch_entries",
            "Entries per log write transaction.",
            &mut output,
        );
        self.storage_write_seconds.render(
            "raftgres_storage_write_seconds",
            "Log write latency.",
            &mut output,
        );
        self.apply_seconds.render(
            "raftgres_apply_seconds",
            "Apply transaction latency.",
            &mut output,
        );
        output
    }
}

/// Serves `GET /metrics` (any path, in fact) until the listener fails.
pub async fn serve_metrics(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut request = [0u8; 1024];
            // The request is not interpreted: every path answers with metrics.
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(2), socket.read(&mut request))
                    .await;
            let body = metrics.render();
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
        });
    }
}

/// Binds the metrics listener.
pub async fn bind_metrics(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendering_shows_every_family_and_cumulative_buckets() {
        let metrics = Metrics::default();
        metrics.term.set(7);
        metrics.append_batch_entries.observe(3.0);
        metrics.append_batch_entries.observe(300.0);
        let text = metrics.render();
        assert!(text.contains("raftgres_term 7"));
        assert!(text.contains("raftgres_append_batch_entries_bucket{le=\"4\"} 1"));
        assert!(text.contains("raftgres_append_batch_entries_bucket{le=\"512\"} 2"));
        assert!(text.contains("raftgres_append_batch_entries_count 2"));
        assert!(text.contains("raftgres_client_requests_total{method=\"submit\"} 0"));
    }
}
