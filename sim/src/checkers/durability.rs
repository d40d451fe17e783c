//! Durability of acknowledged commands (Raft paper, section 5.4 and
//! section 8: once the leader has told a client a command succeeded, the
//! command is committed and survives any crash of any minority). Every
//! acknowledged write must be in the applied state at the end of the run,
//! after faults have healed: the most advanced live node must have applied
//! its index, and every live node that still holds that index in its log
//! must hold the acknowledged entry there.

use raftgres::core::log::RaftLog;
use raftgres::core::{LogIndex, NodeId, Term};

/// A write whose success a client was told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcknowledgedWrite {
    /// The client operation.
    pub operation_id: u64,
    /// Where it was committed.
    pub index: LogIndex,
    /// The term of its entry.
    pub term: Term,
}

/// Every acknowledged write of the run.
#[derive(Debug, Default)]
pub struct Durability {
    acknowledged: Vec<AcknowledgedWrite>,
}

/// One live node's state at the end of the run.
pub struct FinalNode<'a> {
    /// The node.
    pub id: NodeId,
    /// Its state machine's applied index.
    pub applied: LogIndex,
    /// Its log.
    pub log: &'a RaftLog,
}

impl Durability {
    /// A client was told `write` succeeded.
    pub fn on_acknowledged(&mut self, write: AcknowledgedWrite) {
        self.acknowledged.push(write);
    }

    /// Writes acknowledged so far.
    pub fn acknowledged(&self) -> usize {
        self.acknowledged.len()
    }

    /// Checks the final state of the live nodes.
    pub fn check_final(&self, nodes: &[FinalNode<'_>]) -> Result<(), String> {
        let Some(most_applied) = nodes.iter().map(|node| node.applied).max() else {
            return Ok(());
        };
        for write in &self.acknowledged {
            if write.index > most_applied {
                return Err(format!(
                    "acknowledged operation {} at index {} is beyond every live node's applied index ({most_applied})",
                    write.operation_id, write.index
                ));
            }
            for node in nodes {
                let held = node.log.term_at(write.index);
                if write.index > node.log.snapshot().index
                    && held.is_some()
                    && held != Some(write.term)
                {
                    return Err(format!(
                        "node {} holds term {held:?} at index {} where acknowledged operation {} was committed in term {}",
                        node.id, write.index, write.operation_id, write.term
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkers::test_logs::log_with_terms;

    #[test]
    fn an_acknowledged_write_must_survive_in_the_final_logs() {
        let mut checker = Durability::default();
        checker.on_acknowledged(AcknowledgedWrite {
            operation_id: 9,
            index: LogIndex(2),
            term: Term(1),
        });
        let good: &'static RaftLog = Box::leak(Box::new(log_with_terms(&[1, 1], true)));
        let lost: &'static RaftLog = Box::leak(Box::new(log_with_terms(&[1, 2], true)));
        let short: &'static RaftLog = Box::leak(Box::new(log_with_terms(&[1], true)));
        let node = |id, log: &'static RaftLog| FinalNode {
            id: NodeId(id),
            applied: log.applied_index(),
            log,
        };
        assert!(checker
            .check_final(&[node(1, good), node(2, short)])
            .is_ok());
        assert!(checker
            .check_final(&[node(1, good), node(2, lost)])
            .is_err());
        assert!(checker.check_final(&[node(2, short)]).is_err());
    }
}
