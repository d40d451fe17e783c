//! Election Safety (Raft paper, section 5.2 and Figure 3): at most one
//! leader can be elected in a given term.

use std::collections::BTreeMap;

use raftgres::core::{NodeId, Term};

/// Remembers who led each term.
#[derive(Debug, Default)]
pub struct ElectionSafety {
    leaders: BTreeMap<Term, NodeId>,
}

impl ElectionSafety {
    /// `node` is leader in `term`. Returns whether this is a new election.
    pub fn on_leader(&mut self, node: NodeId, term: Term) -> Result<bool, String> {
        match self.leaders.insert(term, node) {
            None => Ok(true),
            Some(previous) if previous == node => Ok(false),
            Some(previous) => Err(format!(
                "two leaders in term {term}: node {previous} and node {node}"
            )),
        }
    }

    /// Elections seen.
    pub fn elections(&self) -> usize {
        self.leaders.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_leader_in_one_term_is_a_violation() {
        let mut checker = ElectionSafety::default();
        assert_eq!(checker.on_leader(NodeId(1), Term(2)), Ok(true));
        assert_eq!(checker.on_leader(NodeId(1), Term(2)), Ok(false));
        assert_eq!(checker.on_leader(NodeId(2), Term(3)), Ok(true));
        let error = checker.on_leader(NodeId(3), Term(2)).unwrap_err();
        assert!(error.contains("term 2"), "{error}");
        assert_eq!(checker.elections(), 2);
    }
}
