//! One outgoing peer link's connection policy: when to connect, when to
//! wait, and that a link never gives up while the node runs.
//!
//! The tokio transport (one long-lived gRPC stream per peer) and the
//! simulator's network both drive this policy, so that what the simulator
//! proves about reconnecting (every link comes back after any fault) holds
//! for the code the node runs:
//!
//! ```text
//!             connect ok               stream ends (peer restarted,
//!   Waiting ────────────> Up ───────── connection reset, proxy closed,
//!      ^   <──────────────┘            keepalive timed out)
//!      │     after RESTREAM_DELAY
//!      └── connect failed: after a backoff of 50 ms doubling to 1 s
//! ```
//!
//! Messages queued while the link is not up are dropped: by the time the
//! peer is reachable they are stale, and Raft retransmits what matters.

use std::time::Duration;

/// Wait before re-opening a stream that ended on a connection that worked.
pub const RESTREAM_DELAY: Duration = Duration::from_millis(50);
/// First wait after a failed connect; doubles per failure up to
/// [`CONNECT_BACKOFF_MAX`].
pub const CONNECT_BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Longest wait between connect attempts.
pub const CONNECT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Where a link stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// Not connected: the next connect attempt waits this long.
    Waiting(Duration),
    /// Connected: messages go out.
    Up,
    /// Given up for good (only a planted bug gets here).
    Closed,
}

/// The policy of one directed link, at the sending node.
#[derive(Clone, Debug)]
pub struct PeerLink {
    state: LinkState,
    /// Connect failures in a row.
    failures: u32,
    #[cfg(feature = "planted-bugs")]
    gives_up: bool,
}

impl Default for PeerLink {
    fn default() -> PeerLink {
        PeerLink::new()
    }
}

impl PeerLink {
    /// A link that connects at once.
    pub fn new() -> PeerLink {
        PeerLink {
            state: LinkState::Waiting(Duration::ZERO),
            failures: 0,
            #[cfg(feature = "planted-bugs")]
            gives_up: false,
        }
    }

    /// Plants the bug of a link that stops for good when its stream ends,
    /// instead of reconnecting (the transport once returned from its peer
    /// task when the stream's body closed before the call resolved).
    #[cfg(feature = "planted-bugs")]
    pub fn plant_gives_up(&mut self) {
        self.gives_up = true;
    }

    /// Where the link stands.
    pub fn state(&self) -> LinkState {
        self.state
    }

    /// Whether messages go out now.
    pub fn is_up(&self) -> bool {
        self.state == LinkState::Up
    }

    /// A connect attempt succeeded.
    pub fn connected(&mut self) {
        if self.state != LinkState::Closed {
            self.state = LinkState::Up;
            self.failures = 0;
        }
    }

    /// A connect attempt failed: the state says how long to wait before
    /// the next one.
    pub fn connect_failed(&mut self) -> LinkState {
        if self.state != LinkState::Closed {
            let backoff = CONNECT_BACKOFF_MIN
                .saturating_mul(1 << self.failures.min(5))
                .min(CONNECT_BACKOFF_MAX);
            self.failures = self.failures.saturating_add(1);
            self.state = LinkState::Waiting(backoff);
        }
        self.state
    }

    /// The stream ended, for whatever reason (an error, the peer's answer,
    /// the connection closing, or the stream's body closing before the
    /// call's answer arrived): connect again after a short wait. Only the
    /// node shutting down ends a link, and that is the caller's business.
    pub fn stream_ended(&mut self) -> LinkState {
        #[cfg(feature = "planted-bugs")]
        if self.gives_up {
            self.state = LinkState::Closed;
            return self.state;
        }
        if self.state != LinkState::Closed {
            self.state = LinkState::Waiting(RESTREAM_DELAY);
        }
        self.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_connects_at_once_and_backs_off_while_the_peer_is_away() {
        let mut link = PeerLink::new();
        assert_eq!(link.state(), LinkState::Waiting(Duration::ZERO));
        let waits: Vec<LinkState> = (0..8).map(|_| link.connect_failed()).collect();
        let millis: Vec<u64> = waits
            .iter()
            .map(|state| match state {
                LinkState::Waiting(wait) => wait.as_millis() as u64,
                other => panic!("a failed connect left the link {other:?}"),
            })
            .collect();
        assert_eq!(millis, [50, 100, 200, 400, 800, 1000, 1000, 1000]);
        link.connected();
        assert!(link.is_up());
        // The backoff starts over after a success.
        assert_eq!(
            link.connect_failed(),
            LinkState::Waiting(CONNECT_BACKOFF_MIN)
        );
    }

    #[test]
    fn a_link_whose_stream_ends_always_connects_again() {
        let mut link = PeerLink::new();
        for _ in 0..3 {
            link.connected();
            assert!(link.is_up());
            assert_eq!(link.stream_ended(), LinkState::Waiting(RESTREAM_DELAY));
            assert!(!link.is_up());
        }
    }
}
