//! Monotonic time in, core ticks out.
//!
//! The driver hands the pipeline the current instant (time since the
//! driver started, from a monotonic clock or the simulator's virtual one).
//! Every tick length that has elapsed since the last tick becomes one core
//! tick, delivered before anything else at that instant is handled: an
//! event loop that stalled for a second delivers all of that second's ticks
//! at once, so a leader's lease (counted in ticks) expires as it would in
//! wall-clock time instead of silently lasting longer.

use std::time::Duration;

/// A monotonic instant: time since the driver started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(pub Duration);

impl Instant {
    /// The instant `duration` later.
    pub fn after(self, duration: Duration) -> Instant {
        Instant(self.0 + duration)
    }
}

/// Turns elapsed time into ticks.
#[derive(Clone, Debug)]
pub(super) struct TickClock {
    /// Length of one tick (invariant: non-zero).
    tick: Duration,
    /// When the next tick is due.
    next_tick_at: Instant,
    /// The latest instant seen; time never goes back.
    now: Instant,
}

impl TickClock {
    pub(super) fn new(tick: Duration, start: Instant) -> TickClock {
        assert!(!tick.is_zero(), "a tick must last some time");
        TickClock {
            tick,
            next_tick_at: start.after(tick),
            now: start,
        }
    }

    /// Moves to `now` and returns how many ticks elapsed. An instant
    /// earlier than one already seen is taken as the one already seen.
    pub(super) fn advance(&mut self, now: Instant) -> u64 {
        self.now = self.now.max(now);
        if self.now < self.next_tick_at {
            return 0;
        }
        let behind = self.now.0 - self.next_tick_at.0;
        let ticks = 1 + (behind.as_nanos() / self.tick.as_nanos()) as u64;
        self.next_tick_at = Instant(self.next_tick_at.0 + self.tick * ticks as u32);
        ticks
    }

    /// The latest instant seen.
    pub(super) fn now(&self) -> Instant {
        self.now
    }

    /// When the next tick is due (the driver sleeps until then).
    pub(super) fn next_tick_at(&self) -> Instant {
        self.next_tick_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(milliseconds: u64) -> Instant {
        Instant(Duration::from_millis(milliseconds))
    }

    #[test]
    fn each_elapsed_tick_is_delivered_once() {
        let mut clock = TickClock::new(Duration::from_millis(50), at(0));
        assert_eq!(clock.advance(at(49)), 0);
        assert_eq!(clock.advance(at(50)), 1);
        assert_eq!(clock.advance(at(99)), 0);
        assert_eq!(clock.advance(at(100)), 1);
        assert_eq!(clock.next_tick_at(), at(150));
    }

    #[test]
    fn a_stall_delivers_every_tick_it_swallowed() {
        let mut clock = TickClock::new(Duration::from_millis(50), at(0));
        assert_eq!(
            clock.advance(at(1_020)),
            20,
            "a one-second stall is 20 ticks"
        );
        assert_eq!(clock.next_tick_at(), at(1_050));
        assert_eq!(clock.advance(at(1_049)), 0);
    }

    #[test]
    fn time_never_goes_back() {
        let mut clock = TickClock::new(Duration::from_millis(10), at(100));
        assert_eq!(clock.advance(at(130)), 3);
        assert_eq!(clock.advance(at(50)), 0);
        assert_eq!(clock.now(), at(130));
    }
}
