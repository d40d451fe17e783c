//! Liveness after healing (Raft paper, section 5.6, "Timing and
//! availability": once the system is stable, with a majority up and
//! connected, a leader is elected and the cluster makes progress). Faults
//! stop at a known tick; from then on a leader must be elected and a fresh
//! command committed and applied by every running node within `ticks_max`
//! ticks.

/// Tracks one run's recovery.
#[derive(Debug)]
pub struct Liveness {
    ticks_max: u64,
    healed_at: Option<u64>,
    recovered_at: Option<u64>,
}

impl Liveness {
    /// A checker allowing `ticks_max` ticks for recovery.
    pub fn new(ticks_max: u64) -> Liveness {
        Liveness {
            ticks_max,
            healed_at: None,
            recovered_at: None,
        }
    }

    /// Faults stopped at `tick`.
    pub fn on_heal(&mut self, tick: u64) {
        self.healed_at = Some(tick);
    }

    /// The probe command committed at `tick`.
    pub fn on_probe_committed(&mut self, tick: u64) {
        if self.healed_at.is_some() && self.recovered_at.is_none() {
            self.recovered_at = Some(tick);
        }
    }

    /// Whether the checker is waiting for a probe to commit.
    pub fn waiting(&self) -> bool {
        self.healed_at.is_some() && self.recovered_at.is_none()
    }

    /// Ticks from healing to the probe's commit, once recovered.
    pub fn recovery_ticks(&self) -> Option<u64> {
        Some(self.recovered_at? - self.healed_at?)
    }

    /// Checks at `tick` that recovery is not overdue.
    pub fn check(&self, tick: u64) -> Result<(), String> {
        match (self.healed_at, self.recovered_at) {
            (Some(healed_at), None) if tick - healed_at > self.ticks_max => Err(format!(
                "no command committed within {} ticks after faults healed at tick {healed_at}",
                self.ticks_max
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_must_happen_within_the_bound() {
        let mut on_time = Liveness::new(100);
        on_time.on_heal(1000);
        assert!(on_time.waiting());
        on_time.on_probe_committed(1050);
        assert!(on_time.check(5000).is_ok());
        assert_eq!(on_time.recovery_ticks(), Some(50));
        let mut late = Liveness::new(100);
        late.on_heal(1000);
        assert!(late.check(1100).is_ok());
        assert!(late.check(1101).is_err());
    }
}
