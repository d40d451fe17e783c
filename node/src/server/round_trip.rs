//! Peer round-trip times for `raftgres_peer_round_trip_seconds`: from a
//! heartbeat or an append sent to a peer to that peer's answer.
//!
//! Peer messages are one-way (each node streams to each peer), so an answer
//! is matched to its request by what it echoes: a heartbeat response echoes
//! the heartbeat's read round, and a successful append response names the
//! last index of the append it acknowledges. Only the first send of a
//! request is timed (a heartbeat resent in the same read round, or a probe
//! resent up to the same index, keeps the first instant), so a lost message
//! shows as a slow round trip instead of vanishing. Requests of an older
//! term are forgotten, and so are answers of another term.
//!
//! This is observation only: nothing here feeds back into the pipeline.

use std::collections::BTreeMap;
use std::time::Instant;

use prometheus_client::metrics::histogram::Histogram;

use super::metrics::{Metrics, RoundTripKind};
use crate::core::{LogIndex, Message, MessageBody, NodeId, Term};

/// Unanswered requests remembered per peer and kind. A peer that answers
/// nothing (it is down) would otherwise grow the map by one entry per
/// heartbeat; past this many the oldest is forgotten.
const REQUESTS_UNANSWERED_MAX: usize = 256;

/// Round trips to every peer this node has sent to.
pub(crate) struct RoundTrips {
    peers: BTreeMap<NodeId, PeerRoundTrips>,
}

/// The unanswered requests to one peer, all of one term.
struct PeerRoundTrips {
    term: Term,
    /// Read round -> first send.
    heartbeats: BTreeMap<u64, Instant>,
    /// Last index of the append -> first send.
    appends: BTreeMap<LogIndex, Instant>,
    heartbeat_seconds: Histogram,
    append_seconds: Histogram,
}

impl RoundTrips {
    pub(crate) fn new() -> RoundTrips {
        RoundTrips {
            peers: BTreeMap::new(),
        }
    }

    /// Notes a message this node sends at `now`.
    pub(crate) fn sent(&mut self, message: &Message, now: Instant, metrics: &Metrics) {
        let (is_heartbeat, key) = match &message.body {
            MessageBody::HeartbeatRequest { read_round, .. } => (true, *read_round),
            MessageBody::AppendRequest {
                prev_log_index,
                entries,
                ..
            } => (false, prev_log_index.0 + entries.len() as u64),
            _ => return,
        };
        let peer = self
            .peers
            .entry(message.to)
            .or_insert_with(|| PeerRoundTrips {
                term: message.term,
                heartbeats: BTreeMap::new(),
                appends: BTreeMap::new(),
                heartbeat_seconds: metrics.peer_round_trip(message.to.0, RoundTripKind::Heartbeat),
                append_seconds: metrics.peer_round_trip(message.to.0, RoundTripKind::Append),
            });
        if peer.term != message.term {
            peer.term = message.term;
            peer.heartbeats.clear();
            peer.appends.clear();
        }
        if is_heartbeat {
            remember(&mut peer.heartbeats, key, now);
        } else {
            remember(&mut peer.appends, LogIndex(key), now);
        }
    }

    /// Notes a message this node received at `now`, and records the round
    /// trip it completes, if any.
    pub(crate) fn received(&mut self, message: &Message, now: Instant) {
        let Some(peer) = self.peers.get_mut(&message.from) else {
            return;
        };
        if peer.term != message.term {
            return;
        }
        match &message.body {
            MessageBody::HeartbeatResponse { read_round } => {
                if let Some(sent) = answered(&mut peer.heartbeats, *read_round) {
                    peer.heartbeat_seconds
                        .observe(now.saturating_duration_since(sent).as_secs_f64());
                }
            }
            MessageBody::AppendResponse {
                index,
                rejected: false,
                ..
            } => {
                if let Some(sent) = answered(&mut peer.appends, *index) {
                    peer.append_seconds
                        .observe(now.saturating_duration_since(sent).as_secs_f64());
                }
            }
            // The leader probes again from another index; the requests in
            // flight will be refused too.
            MessageBody::AppendResponse { rejected: true, .. } => peer.appends.clear(),
            _ => {}
        }
    }
}

/// Keeps the first send of `key`, forgetting the oldest request past the
/// bound.
fn remember<K: Ord + Copy>(requests: &mut BTreeMap<K, Instant>, key: K, now: Instant) {
    requests.entry(key).or_insert(now);
    if requests.len() > REQUESTS_UNANSWERED_MAX {
        requests.pop_first();
    }
}

/// The first send of `key` if it is unanswered; `key` and every older
/// request are answered (an answer covers what came before it).
fn answered<K: Ord + Copy>(requests: &mut BTreeMap<K, Instant>, key: K) -> Option<Instant> {
    let sent = requests.remove(&key);
    let newer = requests.split_off(&key);
    *requests = newer;
    sent
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn message(from: u64, to: u64, term: u64, body: MessageBody) -> Message {
        Message {
            from: NodeId(from),
            to: NodeId(to),
            term: Term(term),
            body,
        }
    }

    fn heartbeat(term: u64, read_round: u64) -> Message {
        message(
            1,
            2,
            term,
            MessageBody::HeartbeatRequest {
                leader_commit: LogIndex(0),
                read_round,
            },
        )
    }

    fn heartbeat_response(term: u64, read_round: u64) -> Message {
        message(2, 1, term, MessageBody::HeartbeatResponse { read_round })
    }

    fn append(term: u64, prev: u64, entries: usize) -> Message {
        let entry = crate::core::Entry {
            term: Term(term),
            index: LogIndex(0),
            payload: crate::core::EntryPayload::Blank,
        };
        message(
            1,
            2,
            term,
            MessageBody::AppendRequest {
                prev_log_index: LogIndex(prev),
                prev_log_term: Term(term),
                entries: vec![entry; entries],
                leader_commit: LogIndex(0),
            },
        )
    }

    fn append_response(term: u64, index: u64, rejected: bool) -> Message {
        message(
            2,
            1,
            term,
            MessageBody::AppendResponse {
                index: LogIndex(index),
                rejected,
                reject_hint_index: LogIndex(0),
                reject_hint_term: Term(0),
            },
        )
    }

    fn count(metrics: &Metrics, kind: &str) -> String {
        let page = metrics.render();
        page.lines()
            .find(|line| {
                line.starts_with("raftgres_peer_round_trip_seconds_count")
                    && line.contains(&format!("message=\"{kind}\""))
            })
            .unwrap_or("none")
            .to_string()
    }

    #[test]
    fn a_heartbeat_answered_is_timed_from_its_first_send() {
        let metrics = Metrics::default();
        let mut round_trips = RoundTrips::new();
        let start = Instant::now();
        round_trips.sent(&heartbeat(3, 7), start, &metrics);
        // A resend in the same round keeps the first instant.
        round_trips.sent(&heartbeat(3, 7), start + Duration::from_millis(5), &metrics);
        round_trips.received(&heartbeat_response(3, 7), start + Duration::from_millis(8));
        // A second answer to the same round is not timed again.
        round_trips.received(&heartbeat_response(3, 7), start + Duration::from_millis(9));
        let page = metrics.render();
        assert!(
            page.contains(
                "raftgres_peer_round_trip_seconds_sum{peer=\"2\",message=\"heartbeat\"} 0.008"
            ),
            "{page}"
        );
        assert!(count(&metrics, "heartbeat").ends_with(" 1"), "{page}");
    }

    #[test]
    fn an_append_is_matched_by_the_index_its_acknowledgement_names() {
        let metrics = Metrics::default();
        let mut round_trips = RoundTrips::new();
        let start = Instant::now();
        round_trips.sent(&append(2, 10, 5), start, &metrics);
        round_trips.sent(
            &append(2, 15, 5),
            start + Duration::from_millis(1),
            &metrics,
        );
        // The acknowledgement of index 20 covers the append up to 15 too.
        round_trips.received(
            &append_response(2, 20, false),
            start + Duration::from_millis(4),
        );
        round_trips.received(
            &append_response(2, 15, false),
            start + Duration::from_millis(5),
        );
        assert!(
            count(&metrics, "append").ends_with(" 1"),
            "{}",
            metrics.render()
        );
    }

    #[test]
    fn a_rejection_or_a_new_term_forgets_the_requests_in_flight() {
        let metrics = Metrics::default();
        let mut round_trips = RoundTrips::new();
        let start = Instant::now();
        round_trips.sent(&append(2, 10, 1), start, &metrics);
        round_trips.received(&append_response(2, 10, true), start);
        round_trips.received(&append_response(2, 11, false), start);
        round_trips.sent(&heartbeat(2, 1), start, &metrics);
        round_trips.sent(&heartbeat(3, 2), start, &metrics);
        round_trips.received(&heartbeat_response(3, 1), start);
        // An answer from an older term does not match the new term's round.
        round_trips.received(&heartbeat_response(2, 2), start);
        assert!(
            count(&metrics, "append").ends_with(" 0"),
            "{}",
            metrics.render()
        );
        assert!(
            count(&metrics, "heartbeat").ends_with(" 0"),
            "{}",
            metrics.render()
        );
    }

    #[test]
    fn a_silent_peer_grows_no_unbounded_map() {
        let metrics = Metrics::default();
        let mut round_trips = RoundTrips::new();
        let start = Instant::now();
        for round in 0..(REQUESTS_UNANSWERED_MAX as u64 * 3) {
            round_trips.sent(&heartbeat(1, round), start, &metrics);
        }
        let peer = &round_trips.peers[&NodeId(2)];
        assert_eq!(peer.heartbeats.len(), REQUESTS_UNANSWERED_MAX);
    }
}
