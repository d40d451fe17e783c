//! Linearizable reads without writing to the log (section 8; the ReadIndex
//! of the Raft dissertation, section 6.4): the leader notes its commit
//! index, confirms with a quorum of heartbeats that it is still the leader,
//! and the read is served once the state machine has applied that index.

use std::collections::VecDeque;

use super::ready::ReadState;
use super::types::{LogIndex, NodeId};

/// A read waiting at the leader for its heartbeat round to be acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingRead {
    /// Who asked: this node, or a follower that forwarded the read.
    pub requester: NodeId,
    /// The requester's id for the read.
    pub context: u64,
    /// Commit index when the read arrived.
    pub index: LogIndex,
    /// Heartbeat round whose quorum acknowledgement confirms leadership.
    pub round: u64,
}

/// A read a follower forwarded to its leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForwardedRead {
    /// The follower's id for the read.
    pub context: u64,
    /// The follower's tick count when it forwarded the read.
    pub forwarded_at: u64,
}

/// Every read a node is tracking, by stage.
#[derive(Clone, Debug, Default)]
pub struct ReadQueue {
    /// Leader: reads that arrived before an entry of the current term was
    /// committed; the commit index is not yet known to be current.
    pub waiting_for_term_commit: Vec<(NodeId, u64)>,
    /// Leader: reads waiting for a quorum to acknowledge their round,
    /// ordered by round.
    pub waiting_for_quorum: VecDeque<PendingRead>,
    /// Follower: reads forwarded to the leader, awaiting its answer,
    /// oldest first.
    pub forwarded: Vec<ForwardedRead>,
    /// Confirmed reads waiting for the state machine to reach their index.
    pub waiting_for_apply: Vec<ReadState>,
    /// Reads that are safe now.
    pub ready: Vec<ReadState>,
    /// Reads that can no longer complete here.
    pub dropped: Vec<u64>,
}

impl ReadQueue {
    /// Reads in every stage, for the `pending_reads_max` bound.
    pub fn len(&self) -> usize {
        self.waiting_for_term_commit.len()
            + self.waiting_for_quorum.len()
            + self.forwarded.len()
            + self.waiting_for_apply.len()
            + self.ready.len()
    }

    /// Whether nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes the reads whose round a quorum acknowledged.
    pub fn confirm_through(&mut self, quorum_round: u64) -> Vec<PendingRead> {
        let mut confirmed = Vec::new();
        while self
            .waiting_for_quorum
            .front()
            .is_some_and(|read| read.round <= quorum_round)
        {
            confirmed.extend(self.waiting_for_quorum.pop_front());
        }
        confirmed
    }

    /// Moves reads whose index is applied to `ready`.
    pub fn release_applied(&mut self, applied: LogIndex) {
        let (ready, waiting): (Vec<ReadState>, Vec<ReadState>) = self
            .waiting_for_apply
            .drain(..)
            .partition(|read| read.index <= applied);
        self.ready.extend(ready);
        self.waiting_for_apply = waiting;
    }

    /// Drops every read that depends on this node's leadership or on its
    /// current leader; returns the ones forwarded by followers (they learn
    /// of it from their own timeouts).
    pub fn drop_unconfirmed(&mut self, own_id: NodeId) {
        let own_waiting = self
            .waiting_for_term_commit
            .drain(..)
            .filter(|(requester, _)| *requester == own_id);
        let own_context: Vec<u64> = own_waiting.map(|(_, context)| context).collect();
        self.dropped.extend(own_context);
        let own_quorum: Vec<u64> = self
            .waiting_for_quorum
            .drain(..)
            .filter(|read| read.requester == own_id)
            .map(|read| read.context)
            .collect();
        self.dropped.extend(own_quorum);
        self.dropped
            .extend(self.forwarded.drain(..).map(|read| read.context));
    }

    /// Drops the confirmed reads whose index lies beyond `commit`: they
    /// wait for entries this node does not know are committed, which no
    /// leader may ever send it (a node removed from the cluster receives
    /// nothing more). The caller retries elsewhere.
    pub fn drop_waiting_beyond(&mut self, commit: LogIndex) {
        let (waiting, beyond): (Vec<ReadState>, Vec<ReadState>) = self
            .waiting_for_apply
            .drain(..)
            .partition(|read| read.index <= commit);
        self.waiting_for_apply = waiting;
        self.dropped
            .extend(beyond.into_iter().map(|read| read.context));
    }

    /// Whether this follower waits for its leader's answer to `context`.
    pub fn is_forwarded(&self, context: u64) -> bool {
        self.forwarded.iter().any(|read| read.context == context)
    }

    /// Drops the forwarded reads whose answer has not come within
    /// `ticks_max` ticks of `ticks`: the request or its answer was lost
    /// (a peer stream broke), and a read held for an answer that never
    /// comes would hold its caller and its `pending_reads_max` slot
    /// forever. The caller retries.
    pub fn expire_forwarded(&mut self, ticks: u64, ticks_max: u64) {
        let expired = self
            .forwarded
            .iter()
            .take_while(|read| ticks - read.forwarded_at >= ticks_max)
            .count();
        self.dropped
            .extend(self.forwarded.drain(..expired).map(|read| read.context));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_confirm_in_round_order_and_wait_for_apply() {
        let mut queue = ReadQueue::default();
        for (context, round) in [(1, 1), (2, 1), (3, 2)] {
            queue.waiting_for_quorum.push_back(PendingRead {
                requester: NodeId(1),
                context,
                index: LogIndex(context * 10),
                round,
            });
        }
        let confirmed = queue.confirm_through(1);
        assert_eq!(
            confirmed
                .iter()
                .map(|read| read.context)
                .collect::<Vec<_>>(),
            vec![1, 2]
        );
        queue
            .waiting_for_apply
            .extend(confirmed.iter().map(|read| ReadState {
                context: read.context,
                index: read.index,
            }));
        queue.release_applied(LogIndex(15));
        assert_eq!(
            queue.ready,
            vec![ReadState {
                context: 1,
                index: LogIndex(10)
            }]
        );
        assert_eq!(queue.len(), 3);
    }

    #[test]
    fn stepping_down_drops_own_unconfirmed_reads_but_keeps_confirmed_ones() {
        let mut queue = ReadQueue::default();
        queue.waiting_for_term_commit.push((NodeId(1), 7));
        queue.waiting_for_term_commit.push((NodeId(2), 8));
        queue.waiting_for_quorum.push_back(PendingRead {
            requester: NodeId(1),
            context: 9,
            index: LogIndex(3),
            round: 4,
        });
        queue.forwarded.push(ForwardedRead {
            context: 10,
            forwarded_at: 0,
        });
        queue.waiting_for_apply.push(ReadState {
            context: 11,
            index: LogIndex(2),
        });
        queue.drop_unconfirmed(NodeId(1));
        assert_eq!(queue.dropped, vec![7, 9, 10]);
        assert_eq!(queue.waiting_for_apply.len(), 1);
        assert_eq!(queue.len(), 1);
    }

    #[test]
    fn forwarded_reads_unanswered_for_too_long_are_dropped() {
        let mut queue = ReadQueue::default();
        for (context, forwarded_at) in [(1, 10), (2, 15), (3, 20)] {
            queue.forwarded.push(ForwardedRead {
                context,
                forwarded_at,
            });
        }
        queue.expire_forwarded(19, 10);
        assert!(queue.dropped.is_empty());
        queue.expire_forwarded(25, 10);
        assert_eq!(queue.dropped, vec![1, 2]);
        assert!(queue.is_forwarded(3));
        assert!(!queue.is_forwarded(1));
    }
}
