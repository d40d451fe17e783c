//! What a leader knows about each follower's log, and how fast it may send
//! (etcd's tracker): a follower is probed one message at a time until its
//! match index is known, then replicated to with a bounded window of
//! messages in flight, or sent a snapshot when it needs compacted entries.

use std::collections::VecDeque;

use super::types::LogIndex;

/// How the leader currently sends to a follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// Match index unknown: one AppendEntries at a time, backtracking on
    /// rejection.
    Probe,
    /// Match index known: stream entries optimistically, at most
    /// `inflight_messages_max` messages unacknowledged.
    Replicate,
    /// A snapshot up to `pending_index` is on its way; nothing else is sent.
    Snapshot {
        /// Index of the snapshot sent.
        pending_index: LogIndex,
        /// The leader's tick when it was sent, to resend if it was lost.
        sent_at_tick: u64,
    },
}

/// The leader's view of one follower.
#[derive(Clone, Debug)]
pub struct Progress {
    /// Highest index known to be durable on the follower (section 5.3).
    /// Invariant: never decreases within a term.
    pub match_index: LogIndex,
    /// Next index to send. Invariant: `match_index < next_index`.
    pub next_index: LogIndex,
    /// Sending mode.
    pub state: ProgressState,
    /// In `Probe`: a probe is unanswered, so send nothing more until a
    /// response or heartbeat response arrives.
    pub probe_sent: bool,
    /// Last index of each unacknowledged message in `Replicate`, oldest first.
    pub inflight: VecDeque<LogIndex>,
    /// The follower answered since the last check-quorum round.
    pub recent_active: bool,
    /// Highest read round the follower acknowledged in this term.
    pub read_round_acked: u64,
    /// Highest commit index a message of this term carried to the
    /// follower (an append carries the leader's, a heartbeat at most the
    /// follower's match index); the leader announces a newer one at its
    /// next tick if no append carried it before.
    pub commit_sent: LogIndex,
}

impl Progress {
    /// A fresh progress for a new leader whose log ends at `last_index`.
    pub fn new(last_index: LogIndex) -> Progress {
        Progress {
            match_index: LogIndex(0),
            next_index: last_index.next(),
            state: ProgressState::Probe,
            probe_sent: false,
            inflight: VecDeque::new(),
            recent_active: false,
            read_round_acked: 0,
            commit_sent: LogIndex(0),
        }
    }

    /// Whether the leader must hold back new AppendEntries.
    pub fn is_paused(&self, inflight_messages_max: usize) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflight.len() >= inflight_messages_max,
            ProgressState::Snapshot { .. } => true,
        }
    }

    /// Switches to probing from just after the match index.
    pub fn become_probe(&mut self) {
        if let ProgressState::Snapshot { pending_index, .. } = self.state {
            self.next_index = self.match_index.max(pending_index).next();
        } else {
            self.next_index = self.match_index.next();
        }
        self.state = ProgressState::Probe;
        self.probe_sent = false;
        self.inflight.clear();
    }

    /// Switches to streaming from just after the match index.
    pub fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.next_index = self.match_index.next();
        self.probe_sent = false;
        self.inflight.clear();
    }

    /// Switches to waiting for a snapshot at `pending_index` to land.
    pub fn become_snapshot(&mut self, pending_index: LogIndex, tick: u64) {
        self.state = ProgressState::Snapshot {
            pending_index,
            sent_at_tick: tick,
        };
        self.probe_sent = false;
        self.inflight.clear();
    }

    /// Records that entries up to `last_sent` went out in one message.
    pub fn sent_entries(&mut self, last_sent: LogIndex) {
        match self.state {
            ProgressState::Replicate => {
                self.next_index = last_sent.next();
                self.inflight.push_back(last_sent);
            }
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Snapshot { .. } => {}
        }
    }

    /// A successful response for `index`: returns whether it told anything
    /// new (a stale, reordered response does not).
    pub fn acknowledge(&mut self, index: LogIndex) -> bool {
        let updated = index > self.match_index;
        if updated {
            self.match_index = index;
            self.probe_sent = false;
        }
        self.next_index = self.next_index.max(index.next());
        while self.inflight.front().is_some_and(|sent| *sent <= index) {
            self.inflight.pop_front();
        }
        updated
    }

    /// A rejection of the AppendEntries at `rejected_prev`: move `next_index`
    /// back to just after `hint`. Returns false for a stale rejection.
    pub fn reject(&mut self, rejected_prev: LogIndex, hint: LogIndex) -> bool {
        if self.state == ProgressState::Replicate {
            // Replicate sends many messages; only a rejection above the match
            // index means the follower lost entries it had.
            if rejected_prev <= self.match_index {
                return false;
            }
            self.become_probe();
            return true;
        }
        if self.next_index.prev() != rejected_prev {
            return false;
        }
        self.next_index = rejected_prev.min(hint.next()).max(self.match_index.next());
        self.probe_sent = false;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_sends_one_message_at_a_time() {
        let mut progress = Progress::new(LogIndex(5));
        assert!(!progress.is_paused(4));
        progress.sent_entries(LogIndex(5));
        assert!(progress.is_paused(4));
        assert_eq!(
            progress.next_index,
            LogIndex(6),
            "probe does not advance next optimistically"
        );
        assert!(progress.acknowledge(LogIndex(5)));
        assert!(!progress.is_paused(4));
    }

    #[test]
    fn replicate_window_is_bounded_and_freed_by_acknowledgements() {
        let mut progress = Progress::new(LogIndex(0));
        progress.become_replicate();
        for last in 1..=3 {
            progress.sent_entries(LogIndex(last));
        }
        assert!(progress.is_paused(3));
        assert_eq!(progress.next_index, LogIndex(4));
        assert!(progress.acknowledge(LogIndex(2)));
        assert_eq!(progress.inflight.len(), 1);
        assert!(!progress.is_paused(3));
        assert!(
            !progress.acknowledge(LogIndex(1)),
            "a stale acknowledgement changes nothing"
        );
    }

    #[test]
    fn rejection_backtracks_to_the_hint_but_never_below_match() {
        let mut progress = Progress::new(LogIndex(10));
        progress.sent_entries(LogIndex(10));
        assert!(progress.reject(LogIndex(10), LogIndex(4)));
        assert_eq!(progress.next_index, LogIndex(5));
        assert!(
            !progress.reject(LogIndex(10), LogIndex(2)),
            "stale rejection of an old probe"
        );
        progress.match_index = LogIndex(3);
        progress.next_index = LogIndex(5);
        assert!(progress.reject(LogIndex(4), LogIndex(0)));
        assert_eq!(progress.next_index, LogIndex(4));
    }

    #[test]
    fn rejection_in_replicate_falls_back_to_probe() {
        let mut progress = Progress::new(LogIndex(0));
        progress.match_index = LogIndex(3);
        progress.become_replicate();
        progress.sent_entries(LogIndex(8));
        assert!(!progress.reject(LogIndex(2), LogIndex(0)));
        assert!(progress.reject(LogIndex(5), LogIndex(4)));
        assert_eq!(progress.state, ProgressState::Probe);
        assert_eq!(progress.next_index, LogIndex(4));
    }
}
