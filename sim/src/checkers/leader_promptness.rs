//! A leader does at once what it can (Raft paper, section 5.3: the leader
//! issues AppendEntries to every follower as soon as it appends, and
//! commits as soon as a majority stores an entry of its term; section 8:
//! a read is confirmed by a heartbeat round sent after it arrived). The
//! pipeline drains the core after every input, so nothing a leader could
//! do may wait for a later tick. After every step of a node that leads:
//!
//! - commit: its commit index is at least the highest index of its own
//!   term that a majority holds, counting itself up to its durable index
//!   and each follower up to its match index;
//! - replication: every follower in the replicate state whose window is
//!   open has been sent every entry;
//! - reads: every read waiting for a heartbeat round has had that round
//!   sent, or the latest round sent is not yet acknowledged by a quorum
//!   (reads that arrive while a round is out wait for the next, which
//!   leaves when that one is answered: one round per batch of reads);
//!
//! And after every step in which a tick reached a node that leads:
//!
//! - commit announced: every follower that was in the replicate state
//!   with an open window before the step has been sent, by some message
//!   of the leader's term, the commit index the leader had before the
//!   step, up to what the follower holds. The next append carries a
//!   commit index that moved; an announcement of its own waits for the
//!   next tick (it cost each follower a message and an answer for every
//!   write), so a follower learns of a commit at most a tick late rather
//!   than at the next heartbeat.
//!
//! Each one, broken, costs only latency (the next tick's heartbeat or the
//! next acknowledgement does the work late), which no safety checker sees
//! and the liveness bounds are far too loose to notice.

use raftgres::core::progress::ProgressState;
use std::collections::BTreeSet;

use raftgres::core::{LogIndex, NodeId, PeerStatus, Role, Status, Term};

/// Checks `status`, of a node after a step, against the three rules.
/// `term_at` is the node's log.
pub fn check(status: &Status, term_at: impl Fn(LogIndex) -> Option<Term>) -> Result<(), String> {
    if status.role != Role::Leader {
        return Ok(());
    }
    let id = status.id;
    let held = |node: &NodeId| {
        if *node == id {
            status.durable_index
        } else {
            status
                .peers
                .iter()
                .find(|peer| peer.id == *node)
                .map_or(LogIndex(0), |peer| peer.match_index)
        }
    };
    // The highest index a majority of `voters` holds.
    let majority_of = |voters: &BTreeSet<NodeId>| {
        let mut indexes: Vec<LogIndex> = voters.iter().map(held).collect();
        indexes.sort_unstable_by(|a, b| b.cmp(a));
        indexes
            .get(voters.len() / 2)
            .copied()
            .unwrap_or(LogIndex(0))
    };
    let membership = &status.membership;
    let mut majority_holds = majority_of(&membership.voters);
    if !membership.voters_outgoing.is_empty() {
        // Joint: both majorities must hold it.
        majority_holds = majority_holds.min(majority_of(&membership.voters_outgoing));
    }
    if majority_holds > status.commit_index && term_at(majority_holds) == Some(status.term) {
        return Err(format!(
            "leader {id} of term {} left its commit index at {} though a majority holds \
             index {majority_holds} of its term",
            status.term, status.commit_index
        ));
    }
    for peer in &status.peers {
        if peer.state == ProgressState::Replicate
            && !peer.paused
            && peer.next_index <= status.last_index
        {
            return Err(format!(
                "leader {id} of term {} has sent follower {} entries only up to {} of {} \
                 though its window is open",
                status.term,
                peer.id,
                peer.next_index.prev(),
                status.last_index
            ));
        }
    }
    if status.read_round_awaited > status.read_round
        && status.read_round_acknowledged >= status.read_round
    {
        return Err(format!(
            "leader {id} of term {} holds a read waiting for heartbeat round {} but has \
             sent rounds only up to {}, all of them acknowledged by a quorum",
            status.term, status.read_round_awaited, status.read_round
        ));
    }
    Ok(())
}

/// After a step in which a tick reached leader `leader` of `term`, checks
/// that every follower that was in the replicate state with an open
/// window before the step (`peers_before`) has been told `commit_before`,
/// the leader's commit index before the step, up to what it holds:
/// `told(peer)` is the highest commit index a message of this leadership
/// carried to `peer`, if one went out.
pub fn check_commit_announced(
    leader: NodeId,
    term: Term,
    commit_before: LogIndex,
    peers_before: &[PeerStatus],
    told: impl Fn(NodeId) -> Option<LogIndex>,
) -> Result<(), String> {
    for peer in peers_before {
        if peer.state != ProgressState::Replicate || peer.paused {
            continue;
        }
        // A follower is told at most what it holds (heartbeats) or what
        // the leader has (appends): up to its match index is enough.
        let needed = commit_before.min(peer.match_index.max(peer.next_index.prev()));
        if told(peer.id).is_none_or(|sent| sent < needed) {
            return Err(format!(
                "leader {leader} of term {term} had commit index {commit_before} at a tick \
                 but did not tell follower {} (told {:?})",
                peer.id,
                told(peer.id)
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftgres::core::{Membership, SnapshotMeta};

    fn leader(commit: u64, durable: u64, matches: [u64; 2]) -> Status {
        let peer = |id: u64, match_index: u64| PeerStatus {
            id: NodeId(id),
            match_index: LogIndex(match_index),
            next_index: LogIndex(6),
            state: ProgressState::Replicate,
            recent_active: true,
            paused: false,
        };
        Status {
            id: NodeId(1),
            role: Role::Leader,
            term: Term(2),
            voted_for: Some(NodeId(1)),
            leader: Some(NodeId(1)),
            commit_index: LogIndex(commit),
            applied_index: LogIndex(commit),
            durable_index: LogIndex(durable),
            last_index: LogIndex(5),
            last_term: Term(2),
            snapshot: SnapshotMeta::default(),
            membership: Membership::new((1..=3).map(NodeId)),
            membership_index: LogIndex(0),
            election_timeout: 10,
            peers: vec![peer(2, matches[0]), peer(3, matches[1])],
            ticks: 0,
            election_elapsed: 0,
            read_round: 4,
            read_round_acknowledged: 4,
            read_round_awaited: 4,
        }
    }

    /// Entries 1 and 2 are of term 1, 3 to 5 of term 2.
    fn term_at(index: LogIndex) -> Option<Term> {
        match index.0 {
            0 => Some(Term(0)),
            1..=2 => Some(Term(1)),
            3..=5 => Some(Term(2)),
            _ => None,
        }
    }

    #[test]
    fn a_leader_that_commits_what_it_can_passes() {
        assert_eq!(check(&leader(4, 5, [4, 3]), term_at), Ok(()));
        // A majority holds only entries of the earlier term: nothing to
        // commit yet (section 5.4.2).
        assert_eq!(check(&leader(0, 5, [2, 0]), term_at), Ok(()));
    }

    #[test]
    fn a_commit_left_behind_fails() {
        let error = check(&leader(3, 5, [4, 3]), term_at).unwrap_err();
        assert!(error.contains("index 4 of its term"), "{error}");
        // Its own durable write was the last copy a majority needed.
        let error = check(&leader(2, 4, [5, 2]), term_at).unwrap_err();
        assert!(error.contains("index 4"), "{error}");
    }

    #[test]
    fn a_joint_leader_needs_both_majorities() {
        // Moving from {1,2,3} to {1,4,5}: 2 holds 4, 3 holds 3; 4 and 5
        // are not in the peers list yet (they hold nothing known).
        let mut status = leader(3, 5, [4, 3]);
        status.membership.voters_outgoing = status.membership.voters.clone();
        status.membership.voters = [NodeId(1), NodeId(4), NodeId(5)].into();
        assert_eq!(
            check(&status, term_at),
            Ok(()),
            "the new majority holds nothing"
        );
    }

    #[test]
    fn an_entry_left_unsent_through_an_open_window_fails() {
        let mut status = leader(4, 5, [4, 3]);
        status.peers[1].next_index = LogIndex(5);
        let error = check(&status, term_at).unwrap_err();
        assert!(
            error.contains("follower 3 entries only up to 4 of 5"),
            "{error}"
        );
        status.peers[1].paused = true;
        assert_eq!(check(&status, term_at), Ok(()));
        status.peers[1].paused = false;
        status.peers[1].state = ProgressState::Probe;
        assert_eq!(check(&status, term_at), Ok(()));
    }

    #[test]
    fn a_commit_kept_from_an_open_follower_past_a_tick_fails() {
        let status = leader(4, 5, [4, 3]);
        let check = |told: &dyn Fn(NodeId) -> Option<LogIndex>| {
            check_commit_announced(status.id, status.term, LogIndex(4), &status.peers, told)
        };
        assert_eq!(check(&|_| Some(LogIndex(4))), Ok(()));
        let error = check(&|_| None).unwrap_err();
        assert!(error.contains("did not tell follower 2"), "{error}");
        assert!(check(&|_| Some(LogIndex(3))).is_err());
        let mut paused = status.peers.clone();
        for peer in &mut paused {
            peer.paused = true;
        }
        assert_eq!(
            check_commit_announced(status.id, status.term, LogIndex(4), &paused, |_| None),
            Ok(()),
            "a follower whose window is full hears of it with its next append"
        );
    }

    #[test]
    fn a_read_waiting_for_an_unsent_round_fails() {
        let mut status = leader(4, 5, [4, 3]);
        status.read_round_awaited = 5;
        let error = check(&status, term_at).unwrap_err();
        assert!(error.contains("round 5"), "{error}");
        status.role = Role::Follower;
        assert_eq!(check(&status, term_at), Ok(()));
    }

    #[test]
    fn a_read_may_wait_for_the_next_round_while_one_is_out() {
        let mut status = leader(4, 5, [4, 3]);
        status.read_round_awaited = 5;
        status.read_round_acknowledged = 3;
        assert_eq!(
            check(&status, term_at),
            Ok(()),
            "round 4 is not answered yet"
        );
        status.read_round_acknowledged = 4;
        assert!(check(&status, term_at).is_err(), "round 4 is answered");
    }
}
