//! Terms settle after healing (Raft paper, section 5.6, and section 9.6
//! of the dissertation on disruptive servers: a stable cluster keeps its
//! leader, so terms stop growing). Once the cluster has recovered from
//! its faults, the highest term any node reaches may grow by at most
//! `new_terms_max` for the rest of the run: terms that keep running away
//! on a healthy network mean a node campaigns when it should not (a timer
//! not reset by heartbeats, pre-vote or stickiness not doing their job).

/// Tracks the highest term after recovery.
#[derive(Debug)]
pub struct TermSettling {
    new_terms_max: u64,
    /// Highest term when the cluster recovered.
    recovered_term: Option<u64>,
}

impl TermSettling {
    /// A checker allowing `new_terms_max` new terms after recovery.
    pub fn new(new_terms_max: u64) -> TermSettling {
        TermSettling {
            new_terms_max,
            recovered_term: None,
        }
    }

    /// The cluster recovered while the highest term was `term`.
    pub fn on_recovered(&mut self, term: u64) {
        self.recovered_term.get_or_insert(term);
    }

    /// One more new term is expected: the world asked for a leadership
    /// transfer, which takes one.
    pub fn allow_new_term(&mut self) {
        self.new_terms_max += 1;
    }

    /// A node reached `term` at `tick`.
    pub fn on_term(&self, node: u64, term: u64, tick: u64) -> Result<(), String> {
        match self.recovered_term {
            Some(recovered) if term > recovered + self.new_terms_max => Err(format!(
                "node {node} reached term {term} at tick {tick}, more than {} terms after the \
                 cluster recovered in term {recovered}",
                self.new_terms_max
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_before_recovery_are_free() {
        let checker = TermSettling::new(2);
        assert!(checker.on_term(1, 1_000, 5).is_ok());
    }

    #[test]
    fn terms_running_away_after_recovery_are_a_violation() {
        let mut checker = TermSettling::new(2);
        checker.on_recovered(7);
        assert!(checker.on_term(1, 9, 500).is_ok());
        assert!(checker.on_term(1, 10, 600).is_err());
    }
}
