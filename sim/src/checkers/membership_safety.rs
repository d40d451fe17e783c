//! Membership changes follow joint consensus (the Raft dissertation,
//! section 4.3; the paper's section 6). Checked on every leader after
//! every step:
//!
//! - a leader is a voter of the membership in force in its log, unless
//!   that membership, which removes it, is not committed yet;
//! - at most one membership change is in flight: the leader's log holds at
//!   most one membership entry above the highest index any node has
//!   committed (its own commit index may be behind that after a
//!   restart);
//! - each membership follows from the one before it in the log: learners
//!   added or removed with the voters unchanged; a joint membership whose
//!   outgoing voters are the previous voters and whose new voters differ
//!   from them; or, after a joint membership, its new voters alone.
//!
//! And, as an answer is given: a leader refuses a change as "in progress"
//! only when one is (its membership entry not committed, or joint), or
//! when it has committed nothing of its term yet.
//!
//! Together with `election_safety` (one leader per term, whatever the
//! configurations) this is what makes a change safe: no two majorities of
//! different configurations can decide alone, because every decision
//! during the change needs both.

use raftgres::core::log::RaftLog;
use raftgres::core::{LogIndex, Membership, NodeId, Term};

/// Checks the log of `leader`, a leader after a step; `committed` is the
/// highest index any node has committed.
pub fn check_leader(leader: NodeId, log: &RaftLog, committed: LogIndex) -> Result<(), String> {
    let membership = log.membership();
    // A leader that removed itself leads until the membership without it
    // commits (section 4.2.2 of the dissertation), then steps down.
    if !membership.is_voter(leader) && log.membership_index() <= log.commit_index() {
        return Err(format!(
            "node {leader} leads but does not vote in its membership {membership}"
        ));
    }
    let in_flight = log
        .membership_entries()
        .iter()
        .filter(|(index, _)| *index > committed)
        .count();
    if in_flight > 1 {
        return Err(format!(
            "leader {leader} holds {in_flight} uncommitted membership entries (committed \
             anywhere up to index {committed})"
        ));
    }
    let mut previous = log.snapshot_membership();
    for (index, next) in log.membership_entries() {
        // No voters: a node that joined empty and took the log from its
        // start, which does not hold the membership the cluster
        // bootstrapped with (that lives in each first node's
        // configuration); its first membership entry follows that one.
        let known = !previous.voters.is_empty();
        if let (true, Err(reason)) = (known, follows(previous, next)) {
            return Err(format!(
                "leader {leader}: the membership at index {index}, {next}, does not follow \
                 {previous}: {reason}"
            ));
        }
        previous = next;
    }
    Ok(())
}

/// Whether `next` may follow `previous` in a log.
pub fn follows(previous: &Membership, next: &Membership) -> Result<(), &'static str> {
    if previous.is_joint() {
        if next.is_joint() || next.voters != previous.voters {
            return Err("a joint membership is left for its new voters alone");
        }
        return Ok(());
    }
    if !next.is_joint() {
        if next.voters != previous.voters {
            return Err("voters change only through a joint membership");
        }
        return Ok(());
    }
    if next.voters_outgoing != previous.voters {
        return Err("a joint membership's outgoing voters are the previous voters");
    }
    if next.voters == previous.voters {
        return Err("a joint membership changes the voters");
    }
    Ok(())
}

/// Checks leader `leader`'s refusal of a change as "in progress" against
/// its log: refused although its membership is committed and not joint,
/// and it committed an entry of its `term`, the change was not in progress.
pub fn check_in_progress_refusal(leader: NodeId, log: &RaftLog, term: Term) -> Result<(), String> {
    let committed = log.commit_index() >= log.membership_index();
    let term_committed = log.term_at(log.commit_index()) == Some(term);
    if !committed || log.membership().is_joint() || !term_committed {
        return Ok(());
    }
    Err(format!(
        "leader {leader} refused a membership change as in progress, though its membership \
         (set at index {}) is committed (through {}) and not joint",
        log.membership_index(),
        log.commit_index()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftgres::core::{Entry, EntryPayload, SnapshotMeta};

    fn plain(voters: &[u64], learners: &[u64]) -> Membership {
        Membership {
            voters: voters.iter().copied().map(NodeId).collect(),
            learners: learners.iter().copied().map(NodeId).collect(),
            ..Membership::default()
        }
    }

    fn joint(voters: &[u64], outgoing: &[u64]) -> Membership {
        Membership {
            voters_outgoing: outgoing.iter().copied().map(NodeId).collect(),
            ..plain(voters, &[])
        }
    }

    /// Node 1's log: entries 1 to 4 of term 1, with `memberships` at
    /// indexes 2, 3, 4..., committed through `commit`.
    fn log(memberships: &[Membership], commit: u64) -> RaftLog {
        log_from(plain(&[1, 2, 3], &[]), memberships, commit)
    }

    /// The same, on a node that starts from membership `first` (the
    /// bootstrap one, or none for a node that joined empty).
    fn log_from(first: Membership, memberships: &[Membership], commit: u64) -> RaftLog {
        let mut entries = vec![Entry {
            term: Term(1),
            index: LogIndex(1),
            payload: EntryPayload::Blank,
        }];
        for (offset, membership) in memberships.iter().enumerate() {
            entries.push(Entry {
                term: Term(1),
                index: LogIndex(offset as u64 + 2),
                payload: EntryPayload::Membership(Box::new(membership.clone())),
            });
        }
        let mut log = RaftLog::restore(
            NodeId(1),
            SnapshotMeta::default(),
            first,
            entries,
            LogIndex(0),
        );
        log.commit_to(LogIndex(commit));
        log
    }

    #[test]
    fn refusing_a_change_as_in_progress_when_none_is_fails() {
        let learner_added = [plain(&[1, 2, 3], &[4])];
        let error =
            check_in_progress_refusal(NodeId(1), &log(&learner_added, 2), Term(1)).unwrap_err();
        assert!(error.contains("committed (through 2)"), "{error}");
        // Not committed yet, joint, or nothing of the term committed: a
        // change is (or may be) in progress.
        assert_eq!(
            check_in_progress_refusal(NodeId(1), &log(&learner_added, 1), Term(1)),
            Ok(())
        );
        let joint_in_force = [joint(&[1, 2, 3, 4], &[1, 2, 3])];
        assert_eq!(
            check_in_progress_refusal(NodeId(1), &log(&joint_in_force, 2), Term(1)),
            Ok(())
        );
        assert_eq!(
            check_in_progress_refusal(NodeId(1), &log(&learner_added, 2), Term(2)),
            Ok(())
        );
    }

    #[test]
    fn the_joint_protocol_passes() {
        let steps = [
            plain(&[1, 2, 3], &[4]),
            joint(&[1, 2, 3, 4], &[1, 2, 3]),
            plain(&[1, 2, 3, 4], &[]),
        ];
        assert_eq!(
            check_leader(NodeId(1), &log(&steps, 3), LogIndex(3)),
            Ok(())
        );
    }

    /// A node that joined empty and took the log from its start knows
    /// no membership before the first entry of one: that entry may follow
    /// anything, the ones after it are held to the protocol.
    #[test]
    fn a_joined_node_checks_from_its_first_membership_entry() {
        let steps = [plain(&[1, 2, 3], &[4]), joint(&[1, 2, 3, 4], &[1, 2, 3])];
        assert_eq!(
            check_leader(
                NodeId(1),
                &log_from(plain(&[], &[]), &steps, 3),
                LogIndex(3)
            ),
            Ok(())
        );
        let skipped = [plain(&[1, 2, 3], &[4]), plain(&[1, 2, 3, 4], &[])];
        let error = check_leader(
            NodeId(1),
            &log_from(plain(&[], &[]), &skipped, 3),
            LogIndex(3),
        )
        .unwrap_err();
        assert!(error.contains("at index 3"), "{error}");
    }

    #[test]
    fn voters_changed_without_a_joint_membership_fail() {
        let error = check_leader(
            NodeId(1),
            &log(&[plain(&[1, 2, 3, 4], &[])], 2),
            LogIndex(2),
        )
        .unwrap_err();
        assert!(error.contains("only through a joint membership"), "{error}");
        let skipped = [joint(&[1, 2], &[1, 2, 3]), joint(&[1], &[1, 2])];
        let error = check_leader(NodeId(1), &log(&skipped, 3), LogIndex(3)).unwrap_err();
        assert!(error.contains("left for its new voters alone"), "{error}");
        let wrong_outgoing = [joint(&[1, 2, 4], &[1, 2])];
        let error = check_leader(NodeId(1), &log(&wrong_outgoing, 2), LogIndex(2)).unwrap_err();
        assert!(
            error.contains("outgoing voters are the previous voters"),
            "{error}"
        );
    }

    #[test]
    fn two_changes_in_flight_fail() {
        let steps = [plain(&[1, 2, 3], &[4]), plain(&[1, 2, 3], &[4, 5])];
        let error = check_leader(NodeId(1), &log(&steps, 1), LogIndex(1)).unwrap_err();
        assert!(
            error.contains("2 uncommitted membership entries"),
            "{error}"
        );
        // Committed elsewhere, though not in this leader's view (it
        // restarted): one change in flight.
        assert_eq!(
            check_leader(NodeId(1), &log(&steps, 1), LogIndex(2)),
            Ok(())
        );
        assert_eq!(
            check_leader(NodeId(1), &log(&steps, 2), LogIndex(2)),
            Ok(())
        );
    }

    #[test]
    fn a_leader_that_does_not_vote_fails() {
        let removed = [joint(&[2, 3], &[1, 2, 3]), plain(&[2, 3], &[])];
        let error = check_leader(NodeId(1), &log(&removed, 3), LogIndex(3)).unwrap_err();
        assert!(error.contains("does not vote"), "{error}");
        assert_eq!(
            check_leader(NodeId(1), &log(&removed, 2), LogIndex(2)),
            Ok(()),
            "it leads until its removal commits"
        );
        assert_eq!(
            check_leader(NodeId(2), &log(&removed, 3), LogIndex(3)),
            Ok(())
        );
    }
}
