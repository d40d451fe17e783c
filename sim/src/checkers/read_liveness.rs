//! Every read completes after healing (Raft paper, section 5.6: once the
//! system is stable a leader serves clients; section 8: reads are served
//! by exchanging heartbeats with a majority). Once the cluster has
//! recovered from its faults (the liveness probe applied everywhere), each
//! read a client starts must return a value within `ticks_max` ticks of
//! its first attempt, however often it is refused or redirected, and no
//! client gives up on one: a read path that waits forever, or confirms
//! nothing on a healthy cluster, fails here. A read the node drops (its
//! leader changed) is forgiven: without check-quorum a node that rejoins
//! can still win one election after recovery (term_settling bounds those),
//! and the client retries.

use std::collections::BTreeMap;

/// Tracks the reads started after recovery, by client.
#[derive(Debug)]
pub struct ReadLiveness {
    ticks_max: u64,
    recovered_at: Option<u64>,
    /// Client -> tick its current read was first attempted.
    outstanding: BTreeMap<u64, u64>,
}

impl ReadLiveness {
    /// A checker allowing `ticks_max` ticks per read after recovery.
    pub fn new(ticks_max: u64) -> ReadLiveness {
        ReadLiveness {
            ticks_max,
            recovered_at: None,
            outstanding: BTreeMap::new(),
        }
    }

    /// The cluster recovered at `tick`.
    pub fn on_recovered(&mut self, tick: u64) {
        self.recovered_at.get_or_insert(tick);
    }

    /// `client` starts a read at `tick` (its first attempt).
    pub fn on_read_started(&mut self, client: u64, tick: u64) {
        if self.recovered_at.is_some() {
            self.outstanding.insert(client, tick);
        }
    }

    /// `client`'s read returned a value at `tick`.
    pub fn on_read_served(&mut self, client: u64, tick: u64) -> Result<(), String> {
        match self.outstanding.remove(&client) {
            Some(started) if tick - started > self.ticks_max => Err(format!(
                "client {client}'s read started at tick {started} after recovery took {} ticks (bound {})",
                tick - started,
                self.ticks_max
            )),
            _ => Ok(()),
        }
    }

    /// The node dropped `client`'s read (its leader changed); the client
    /// will retry with a fresh read.
    pub fn on_read_dropped(&mut self, client: u64) {
        self.outstanding.remove(&client);
    }

    /// `client` gave up on its read at `tick`.
    pub fn on_read_lost(&mut self, client: u64, tick: u64, why: &str) -> Result<(), String> {
        match self.outstanding.remove(&client) {
            Some(started) => Err(format!(
                "client {client}'s read started at tick {started} after recovery was {why} at tick {tick}"
            )),
            None => Ok(()),
        }
    }

    /// Checks at `tick` that no read is overdue.
    pub fn check(&self, tick: u64) -> Result<(), String> {
        match self
            .outstanding
            .iter()
            .find(|(_, started)| tick - **started > self.ticks_max)
        {
            Some((client, started)) => Err(format!(
                "client {client}'s read started at tick {started} after recovery did not complete within {} ticks",
                self.ticks_max
            )),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_before_recovery_are_not_bounded() {
        let mut checker = ReadLiveness::new(50);
        checker.on_read_started(1, 10);
        assert!(checker.check(1000).is_ok());
        assert!(checker.on_read_lost(1, 1000, "abandoned").is_ok());
    }

    #[test]
    fn a_read_after_recovery_that_never_completes_is_a_violation() {
        let mut checker = ReadLiveness::new(50);
        checker.on_recovered(100);
        checker.on_read_started(1, 120);
        assert!(checker.check(170).is_ok());
        assert!(checker.check(171).is_err());
    }

    #[test]
    fn a_late_or_abandoned_read_after_recovery_is_a_violation() {
        let mut checker = ReadLiveness::new(50);
        checker.on_recovered(100);
        checker.on_read_started(1, 120);
        assert!(checker.on_read_served(1, 130).is_ok());
        checker.on_read_started(1, 140);
        assert!(checker.on_read_served(1, 200).is_err());
        checker.on_read_started(2, 140);
        assert!(checker.on_read_lost(2, 150, "abandoned").is_err());
    }

    #[test]
    fn a_read_dropped_by_a_leader_change_is_forgiven() {
        let mut checker = ReadLiveness::new(50);
        checker.on_recovered(100);
        checker.on_read_started(3, 120);
        checker.on_read_dropped(3);
        assert!(checker.check(1000).is_ok());
    }
}
