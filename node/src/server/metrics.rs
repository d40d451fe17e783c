//! The node's metrics, kept with `prometheus-client` (the Prometheus
//! project's Rust client) and served in the OpenMetrics text format over
//! HTTP (hyper, which tonic already brings) at `GET /metrics` on
//! `metrics_addr`.
//!
//! Every metric is a field of [`Metrics`]; fields are cheap handles (an
//! atomic behind an `Arc`), registered once in the registry that
//! [`Metrics::render`] encodes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// A gauge of a non-negative count or index.
pub type Gauge = gauge::Gauge<u64, AtomicU64>;

const SECONDS_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
const ENTRIES_BUCKETS: [f64; 12] = [
    0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// Peer round trips run from about 0.1 ms on one host to tens of
/// milliseconds across a region; past a second the peer is as good as down.
const ROUND_TRIP_SECONDS_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// The labels of `raftgres_peer_round_trip_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoundTripLabels {
    /// The peer's node id.
    peer: String,
    /// `heartbeat` or `append` (see [`RoundTripKind`]).
    message: &'static str,
}

/// Which request a peer round trip times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoundTripKind {
    /// A heartbeat and its response: the network and both event loops.
    Heartbeat,
    /// An append and its acknowledgement, which a follower sends only once
    /// the entries are durable: the heartbeat's path plus the follower's
    /// log write.
    Append,
}

impl RoundTripKind {
    fn label(self) -> &'static str {
        match self {
            RoundTripKind::Heartbeat => "heartbeat",
            RoundTripKind::Append => "append",
        }
    }
}

/// The histogram family constructor (a plain `fn` so the family's type
/// can be named).
type HistogramConstructor = fn() -> Histogram;

fn round_trip_histogram() -> Histogram {
    Histogram::new(ROUND_TRIP_SECONDS_BUCKETS)
}

/// The `method` label of `raftgres_client_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabel {
    method: &'static str,
}

/// Every metric a node exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
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
    /// Committed entries not yet applied (kept with the two above).
    pub apply_lag_entries: Gauge,
    /// Last log index.
    pub last_index: Gauge,
    /// Entries held in the log (after the compacted prefix).
    pub log_entries: Gauge,
    /// Proposals waiting to be applied.
    pub proposals_pending: Gauge,
    /// Proposals answered with an error (not leader, lost, outcome unknown).
    pub proposals_failed: Counter,
    /// Snapshots streamed to followers that needed the compacted prefix
    /// (counted when their last chunk is sent).
    pub snapshots_sent: Counter,
    /// Snapshot chunks sent (a chunk sent again counts again).
    pub snapshot_chunks_sent: Counter,
    /// Entries per log write (one Postgres transaction).
    pub append_batch_entries: Histogram,
    /// Duration of log writes.
    pub storage_write_seconds: Histogram,
    /// Duration of apply transactions of their own (applies a log write
    /// carries are timed with the write).
    pub apply_seconds: Histogram,
    /// Committed entries applied inside a log write's transaction.
    pub applied_with_write_entries: Counter,
    /// Batches a leader applied ahead of their commit.
    pub applies_ahead: Counter,
    /// Batches applied ahead and rolled back (leadership lost first).
    pub applies_ahead_abandoned: Counter,
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
    /// Peer round trips, by peer and request kind (see
    /// [`Metrics::peer_round_trip`]).
    peer_round_trip_seconds: Family<RoundTripLabels, Histogram, HistogramConstructor>,
}

/// Client RPC counts by method (one labelled family).
#[derive(Debug)]
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
        let mut registry = Registry::default();
        let mut gauge = |name: &str, help: &str| {
            let gauge = Gauge::default();
            registry.register(name, help, gauge.clone());
            gauge
        };
        let term = gauge("raftgres_term", "Current Raft term.");
        let is_leader = gauge("raftgres_is_leader", "1 while this node is the leader.");
        let commit_index = gauge("raftgres_commit_index", "Highest committed log index.");
        let applied_index = gauge("raftgres_applied_index", "Highest applied log index.");
        let apply_lag_entries = gauge(
            "raftgres_apply_lag_entries",
            "Committed entries not yet applied.",
        );
        let last_index = gauge("raftgres_last_index", "Last log index.");
        let log_entries = gauge(
            "raftgres_log_entries",
            "Entries held in the log after the compacted prefix.",
        );
        let proposals_pending = gauge(
            "raftgres_proposals_pending",
            "Proposals waiting to be applied.",
        );
        let storage_healthy = gauge(
            "raftgres_storage_healthy",
            "0 while Postgres is unreachable for log writes.",
        );
        storage_healthy.set(1);
        // prometheus-client appends `_total` to counter names.
        let mut counter = |name: &str, help: &str| {
            let counter = Counter::default();
            registry.register(name, help, counter.clone());
            counter
        };
        let elections = counter("raftgres_elections", "Elections started by this node.");
        let leader_changes = counter("raftgres_leader_changes", "Times this node became leader.");
        let storage_errors = counter(
            "raftgres_storage_errors",
            "Failed storage operations, each retried.",
        );
        let peer_messages_sent = counter(
            "raftgres_peer_messages_sent",
            "Raft messages sent to peers.",
        );
        let peer_messages_received =
            counter("raftgres_peer_messages_received", "Raft messages received.");
        let peer_messages_dropped =
            counter("raftgres_peer_messages_dropped", "Raft messages dropped.");
        let peer_messages_refused = counter(
            "raftgres_peer_messages_refused",
            "Peer messages refused: unauthenticated, from a non-member, or malformed.",
        );
        let peer_messages_implausible = counter(
            "raftgres_peer_messages_implausible",
            "Peer messages ignored because no honest peer could have sent them.",
        );
        let connections_refused = counter(
            "raftgres_connections_refused",
            "Connections closed on arrival because limits.connections_max were open.",
        );
        let tls_handshakes_failed = counter(
            "raftgres_tls_handshakes_failed",
            "TLS handshakes that failed or timed out.",
        );
        let proposals_failed = counter(
            "raftgres_proposals_failed",
            "Proposals answered with an error: not the leader, lost in a leadership change, outcome unknown.",
        );
        let snapshots_sent = counter(
            "raftgres_snapshots_sent",
            "Snapshots streamed to followers that needed the compacted prefix, counted when their last chunk is sent.",
        );
        let snapshot_chunks_sent = counter(
            "raftgres_snapshot_chunks_sent",
            "Snapshot chunks sent to followers (a chunk sent again counts again).",
        );
        let applied_with_write_entries = counter(
            "raftgres_applied_with_write_entries",
            "Committed entries applied inside a log write's transaction (one COMMIT for log and state machine); the others are applied in transactions of their own (raftgres_apply_seconds).",
        );
        let applies_ahead = counter(
            "raftgres_applies_ahead",
            "Batches a leader applied ahead of their commit (its applier idle, nothing else waiting: the apply runs while the entries replicate, and commits once they are committed).",
        );
        let applies_ahead_abandoned = counter(
            "raftgres_applies_ahead_abandoned",
            "Batches applied ahead of their commit and rolled back because leadership was lost first.",
        );
        let requests = Family::<MethodLabel, Counter>::default();
        registry.register(
            "raftgres_client_requests",
            "Client RPCs by method.",
            requests.clone(),
        );
        let method = |method: &'static str| requests.get_or_create(&MethodLabel { method }).clone();
        let client_requests = ClientRequestCounters {
            submit: method("submit"),
            write: method("write"),
            read: method("read"),
            cluster: method("cluster"),
            refused: method("refused"),
        };
        let mut histogram = |name: &str, help: &str, buckets: [f64; 12]| {
            let histogram = Histogram::new(buckets);
            registry.register(name, help, histogram.clone());
            histogram
        };
        let append_batch_entries = histogram(
            "raftgres_append_batch_entries",
            "Entries per log write transaction.",
            ENTRIES_BUCKETS,
        );
        let storage_write_seconds = histogram(
            "raftgres_storage_write_seconds",
            "Log write latency.",
            SECONDS_BUCKETS,
        );
        let apply_seconds = histogram(
            "raftgres_apply_seconds",
            "Latency of apply transactions of their own, from the batch's arrival at the applier (which has begun the transaction while it waited; for a batch applied ahead of its commit, from its confirmation) to the COMMIT (applies a log write carries are timed with it).",
            SECONDS_BUCKETS,
        );
        let peer_round_trip_seconds =
            Family::<RoundTripLabels, Histogram, HistogramConstructor>::new_with_constructor(
                round_trip_histogram,
            );
        registry.register(
            "raftgres_peer_round_trip_seconds",
            "Time from a heartbeat or an append sent to a peer to that peer's answer.",
            peer_round_trip_seconds.clone(),
        );
        Metrics {
            registry,
            term,
            is_leader,
            elections,
            leader_changes,
            commit_index,
            applied_index,
            apply_lag_entries,
            last_index,
            log_entries,
            proposals_pending,
            proposals_failed,
            snapshots_sent,
            snapshot_chunks_sent,
            append_batch_entries,
            storage_write_seconds,
            apply_seconds,
            applied_with_write_entries,
            applies_ahead,
            applies_ahead_abandoned,
            storage_errors,
            storage_healthy,
            peer_messages_sent,
            peer_messages_received,
            peer_messages_dropped,
            peer_messages_refused,
            peer_messages_implausible,
            connections_refused,
            tls_handshakes_failed,
            client_requests,
            peer_round_trip_seconds,
        }
    }
}

impl Metrics {
    /// The round-trip histogram of one peer and request kind (a cheap
    /// handle: callers keep it rather than look it up per message).
    pub fn peer_round_trip(&self, peer: u64, kind: RoundTripKind) -> Histogram {
        self.peer_round_trip_seconds
            .get_or_create(&RoundTripLabels {
                peer: peer.to_string(),
                message: kind.label(),
            })
            .clone()
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn render(&self) -> String {
        let mut output = String::new();
        prometheus_client::encoding::text::encode(&mut output, &self.registry)
            .expect("encoding into a String cannot fail");
        output
    }
}

/// The content type of [`Metrics::render`]'s output.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `GET /metrics` until the listener fails; any other request gets
/// 404 (or 405 for another method on `/metrics`).
pub async fn serve_metrics(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
            let metrics = metrics.clone();
            async move { Ok::<_, Infallible>(answer(&metrics, &request)) }
        });
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            if let Err(error) = connection.await {
                tracing::debug!(%error, "metrics connection ended");
            }
        });
    }
}

fn answer<B>(metrics: &Metrics, request: &Request<B>) -> Response<Full<Bytes>> {
    let status = match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => {
            let mut response = Response::new(Full::new(Bytes::from(metrics.render())));
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(CONTENT_TYPE),
            );
            return response;
        }
        (_, "/metrics") => StatusCode::METHOD_NOT_ALLOWED,
        _ => StatusCode::NOT_FOUND,
    };
    let mut response = Response::new(Full::new(Bytes::from_static(b"see /metrics\n")));
    *response.status_mut() = status;
    response
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
        metrics.elections.inc();
        let text = metrics.render();
        assert!(text.contains("raftgres_term 7"), "{text}");
        assert!(text.contains("raftgres_elections_total 1"), "{text}");
        assert!(
            text.contains("raftgres_append_batch_entries_bucket{le=\"4.0\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("raftgres_append_batch_entries_bucket{le=\"512.0\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("raftgres_append_batch_entries_count 2"),
            "{text}"
        );
        assert!(
            text.contains("raftgres_client_requests_total{method=\"submit\"} 0"),
            "{text}"
        );
        assert!(text.contains("raftgres_storage_healthy 1"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    /// Every series the Grafana dashboard in deploy/ queries is one this
    /// node exports (a renamed metric would leave a panel silently empty).
    #[test]
    fn the_dashboard_queries_only_exported_series() {
        let dashboard = include_str!("../../../deploy/grafana/raftgres.json");
        let metrics = Metrics::default();
        // Per-peer series exist once a node knows its peers.
        metrics.peer_round_trip(2, RoundTripKind::Heartbeat);
        metrics.peer_round_trip(2, RoundTripKind::Append);
        let page = metrics.render();
        let mut queried = 0;
        for (start, _) in dashboard.match_indices("raftgres_") {
            let name: String = dashboard[start..]
                .chars()
                .take_while(|character| character.is_ascii_alphanumeric() || *character == '_')
                .collect();
            queried += 1;
            let exported = page.lines().any(|line| {
                line.starts_with(&format!("{name} ")) || line.starts_with(&format!("{name}{{"))
            });
            assert!(
                exported,
                "the dashboard queries {name}, which the node does not export"
            );
        }
        assert!(
            queried >= 20,
            "only {queried} series found in the dashboard"
        );
        for kind in ["heartbeat", "append"] {
            assert!(
                dashboard.contains(&format!(
                    "raftgres_peer_round_trip_seconds_bucket{{message=\\\"{kind}\\\"}}"
                )),
                "the dashboard shows no {kind} round trips"
            );
            assert!(
                page.contains(&format!("message=\"{kind}\"")),
                "the node exports no {kind} round trips"
            );
        }
    }

    #[tokio::test]
    async fn metrics_are_served_over_http_and_other_paths_are_not_found() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = bind_metrics("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let address = listener.local_addr().unwrap();
        let metrics = Arc::new(Metrics::default());
        metrics.term.set(3);
        tokio::spawn(serve_metrics(listener, metrics));
        let fetch = |path: &'static str| async move {
            let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
            stream
                .write_all(
                    format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .await
                .unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).await.unwrap();
            response
        };
        let page = fetch("/metrics").await;
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");
        assert!(page.contains("content-length:"), "{page}");
        assert!(page.contains("raftgres_term 3"), "{page}");
        let missing = fetch("/elsewhere").await;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    }
}
