//! Peer round-trip times for `raftgres_peer_round_trip_seconds`: from a
//! heartbeat or an append sent to a peer to that peer's answer.
//!
//! Peer messages are one-way (each node streams to each peer), so an answer
//! is matched to its request by what it echoes: a heartbeat response echoes
//! the heartbeat's read round, and a successful append response names the
//! index up to which the follower's log is durable, which covers every
//! append up to it. Like a prober, at most one request per peer and kind
//! is timed at a time: requests sent while it is unanswered are not timed.
//! That keeps a burst of requests queued during a reconnect from showing
//! up as a burst of slow round trips, and measures a link slower than the
//! heartbeat interval correctly (a later heartbeat does not restart the
//! clock). A timed request unanswered for [`UNANSWERED_FOR_MAX`] is given
//! up (the peer is as good as down), and the next request is timed instead;
//! so after an outage at most one round trip of up to about that long is
//! recorded. Requests of an older term are forgotten, and answers of
//! another term ignored.
//!
//! This is observation only: nothing here feeds back into the pipeline.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use prometheus_client::metrics::histogram::Histogram;

use super::metrics::{Metrics, RoundTripKind};
use crate::core::{Message, MessageBody, NodeId, Term};

/// How long a timed request may wait for its answer before it is given up
/// and a newer request is timed instead: the histogram's last bucket, and
/// far beyond an election timeout, so only a peer that is down (or a link
/// that loses the message) gets here.
pub(crate) const UNANSWERED_FOR_MAX: Duration = Duration::from_secs(1);

/// Round trips to every peer this node has sent to.
pub(crate) struct RoundTrips {
    peers: BTreeMap<NodeId, PeerRoundTrips>,
}

/// The timed requests to one peer, both of `term`.
struct PeerRoundTrips {
    term: Term,
    heartbeat: Timer,
    append: Timer,
}

/// One kind of request to one peer: the one being timed, if any.
struct Timer {
    /// The timed request's key (read round, or the append's last index)
    /// and when it was sent.
    in_flight: Option<(u64, Instant)>,
    seconds: Histogram,
}

impl Timer {
    fn new(seconds: Histogram) -> Timer {
        Timer {
            in_flight: None,
            seconds,
        }
    }

    fn sent(&mut self, key: u64, now: Instant) {
        let idle = match self.in_flight {
            None => true,
            Some((_, sent)) => now.saturating_duration_since(sent) > UNANSWERED_FOR_MAX,
        };
        if idle {
            self.in_flight = Some((key, now));
        }
    }

    /// An answer whose key is `key`; `covers` says whether it answers the
    /// timed request with key `timed`. An answer to a newer request ends
    /// the timing (the timed one was lost or is answered too).
    fn answered(&mut self, key: u64, now: Instant, covers: impl Fn(u64) -> bool) {
        let Some((timed, sent)) = self.in_flight else {
            return;
        };
        if covers(timed) {
            self.seconds
                .observe(now.saturating_duration_since(sent).as_secs_f64());
            self.in_flight = None;
        } else if key > timed {
            self.in_flight = None;
        }
    }
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
                heartbeat: Timer::new(
                    metrics.peer_round_trip(message.to.0, RoundTripKind::Heartbeat),
                ),
                append: Timer::new(metrics.peer_round_trip(message.to.0, RoundTripKind::Append)),
            });
        if peer.term != message.term {
            peer.term = message.term;
            peer.heartbeat.in_flight = None;
            peer.append.in_flight = None;
        }
        if is_heartbeat {
            peer.heartbeat.sent(key, now);
        } else {
            peer.append.sent(key, now);
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
                let round = *read_round;
                peer.heartbeat.answered(round, now, |timed| timed == round);
            }
            MessageBody::AppendResponse {
                index,
                rejected: false,
                ..
            } => {
                // Durable up to `index`: every append up to it is answered.
                let index = index.0;
                peer.append.answered(index, now, |timed| timed <= index);
            }
            // The leader probes again from another index; the timed append
            // will be refused too.
            MessageBody::AppendResponse { rejected: true, .. } => peer.append.in_flight = None,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::core::LogIndex;

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
    fn a_heartbeat_answered_is_timed_and_later_copies_do_not_restart_the_clock() {
        let metrics = Metrics::default();
        let mut round_trips = RoundTrips::new();
        let start = Instant::now();
        round_trips.sent(&heartbeat(3, 7), start, &metrics);
        // A slow link: the next heartbeat leaves before the answer comes.
        round_trips.sent(
            &heartbeat(3, 8),
            start + Duration::from_millis(100),
            &metrics,
        );
        round_trips.received(
            &heartbeat_response(3, 7),
            start + Duration::from_millis(150),
        );
        // The untimed heartbeat's answer records nothing.
        round_trips.received(
            &heartbeat_response(3, 8),
            start + Duration::from_millis(250),
        );
        let page = metrics.render();
        assert!(
            page.contains(
                "raftgres_peer_round_trip_seconds_sum{peer=\"2\",message=\"heartbeat\"} 0.15"
            ),
            "{page}"
        );
        assert!(count(&metrics, "heartbeat").ends_with(" 1"), "{page}");
    }

    #[test]
    fn an_append_is_answered_by_any_acknowledgement_that_covers_it() {
        let metrics = Metrics::default();
        let mut round_trips = RoundTrips::new();
        let start = Instant::now();
        round_trips.sent(&append(2, 10, 5), start, &metrics);
        round_trips.sent(
            &append(2, 15, 5),
            start + Duration::from_millis(1),
            &metrics,
        );
        // The follower wrote both in one transaction and acknowledges 20.
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
    fn a_rejection_or_a_new_term_forgets_the_timed_request() {
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
    fn after_an_outage_only_one_request_is_timed_and_for_at_most_the_bound() {
        let metrics = Metrics::default();
        let mut round_trips = RoundTrips::new();
        let start = Instant::now();
        let interval = Duration::from_millis(100);
        // Five seconds of heartbeats to a peer that is down.
        for round in 0..50u32 {
            round_trips.sent(
                &heartbeat(1, round.into()),
                start + interval * round,
                &metrics,
            );
        }
        // It comes back and answers every queued heartbeat at once.
        let back = start + interval * 50;
        for round in 0..50u64 {
            round_trips.received(&heartbeat_response(1, round), back);
        }
        let page = metrics.render();
        assert!(count(&metrics, "heartbeat").ends_with(" 1"), "{page}");
        let sum: f64 = page
            .lines()
            .find_map(|line| {
                line.strip_prefix(
                    "raftgres_peer_round_trip_seconds_sum{peer=\"2\",message=\"heartbeat\"} ",
                )
            })
            .unwrap()
            .parse()
            .unwrap();
        assert!(sum <= UNANSWERED_FOR_MAX.as_secs_f64() + 0.1, "{page}");
    }
}
