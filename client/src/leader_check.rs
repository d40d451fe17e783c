//! Noticing, while an attempt waits at the leader, that another node leads.
//!
//! A leader that stops without closing its connections (SIGSTOP, a frozen
//! VM, a host that stalls) neither answers nor refuses what is sent to it:
//! an attempt there would wait out the whole `request_timeout`, although
//! the other nodes elect a new leader within about one election timeout.
//! So while an attempt routed to the leader has no answer, the client asks
//! the nodes it was given who leads (`Cluster.Status`, which every node
//! answers from memory without a consensus round), every
//! `leader_check_interval`:
//!
//! ```text
//!   attempt at L ──────────── no answer ──────────────────────> request_timeout
//!     │ interval │ interval │
//!     ▼          ▼          ▼
//!   check:     check:     check: M answers "leader, term 7", the highest
//!   L leads,   no leader    term reported, and M is not L
//!   term 6     answers        └─> abandon the attempt
//!                                  ├─ resend is safe ──> send again at M now
//!                                  └─ otherwise ───────> outcome unknown
//! ```
//!
//! Rules, each a function below with its tests:
//! 1. When to check ([`CheckSchedule`]): only attempts routed to the leader,
//!    only when the client knows another node, first after one interval of
//!    waiting and then every interval, never once the attempt would have
//!    timed out; so an attempt makes at most `request_timeout / interval`
//!    checks.
//! 2. When a check is complete ([`enough_answers`]): once a majority of the
//!    nodes asked have answered (one of them voted for the newest leader,
//!    so its term is seen), or every node has answered or failed; a paused
//!    node cannot hold a check up for longer than the interval.
//! 3. When leadership moved ([`leader_elsewhere`]): a node other than the
//!    attempt's target says it leads, at the highest term any answer
//!    reports. A node merely *named* as leader does not count (followers
//!    keep naming the paused leader until they elect another), nor does a
//!    deposed leader that has not heard of the new term (its term is
//!    lower).
//! 4. What an abandoned attempt means (`RetryPlan::after_failure` in the
//!    crate root): its outcome is unknown. Reads and writes carrying a
//!    session are sent again at once to the new leader (the cluster applies
//!    a session's sequence at most once); a write without a session ends
//!    with [`crate::ClientError::OutcomeUnknown`] and is never sent again.
//!
//! Why ask the cluster rather than rely on HTTP/2 keepalive pings: a ping
//! tells that a process is stopped, not that leadership moved. A leader
//! whose process runs but cannot commit (its Postgres is gone, it is cut
//! off from its followers) answers pings; one that is only slow (a long
//! fsync) would be abandoned by a short ping timeout although waiting is
//! right. The status of the other nodes answers the question the client
//! has, "is my attempt waiting on a node that no longer leads?", with the
//! same term rule Raft uses. Checks are shared: a check started within the
//! last quarter interval serves every call of the client (and its clones)
//! that needs one, so a stall with many calls in flight costs a few Status
//! requests per interval, not one per call.

use std::time::Duration;

use crate::{same_address, Role, StatusResponse};

/// Rule 1: when the checks of one attempt are due.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CheckSchedule {
    /// `None`: this attempt is never checked.
    interval: Option<Duration>,
    request_timeout: Duration,
    /// Checks handed out so far; invariant: at most
    /// `request_timeout / interval`.
    checks: u32,
}

impl CheckSchedule {
    /// The schedule of an attempt routed to the leader (`to_leader`) by a
    /// client that knows `endpoints` nodes.
    pub(crate) fn new(
        to_leader: bool,
        endpoints: usize,
        interval: Option<Duration>,
        request_timeout: Duration,
    ) -> CheckSchedule {
        let interval =
            interval.filter(|interval| to_leader && endpoints > 1 && !interval.is_zero());
        CheckSchedule {
            interval,
            request_timeout,
            checks: 0,
        }
    }

    /// How long to wait (from the start of the attempt, or from the end of
    /// the previous check) before the next check, given that the attempt
    /// has waited `waited` so far; `None` when no check is due before the
    /// attempt times out.
    pub(crate) fn next_wait(&mut self, waited: Duration) -> Option<Duration> {
        let interval = self.interval?;
        let checks_max = self.request_timeout.as_nanos() / interval.as_nanos();
        if u128::from(self.checks) >= checks_max || waited + interval >= self.request_timeout {
            return None;
        }
        self.checks += 1;
        Some(interval)
    }
}

/// Rule 2: whether a check that asked `asked` nodes may stop, with
/// `answered` answers and `failed` failures so far.
pub(crate) fn enough_answers(asked: usize, answered: usize, failed: usize) -> bool {
    answered > asked / 2 || answered + failed >= asked
}

/// Rule 3: the address of the node that leads according to `answers`,
/// when it is not `target` (the node the attempt waits on): the node that
/// says it leads at the highest term any answer reports. `None` while the
/// target may still lead, an election runs, or the new leader has not
/// answered.
pub(crate) fn leader_elsewhere(target: &str, answers: &[StatusResponse]) -> Option<String> {
    let term_max = answers.iter().map(|status| status.term).max()?;
    let leader = answers.iter().find(|status| {
        status.term == term_max
            && status.role == Role::Leader as i32
            && status.leader_id == status.node_id
            && !status.leader_address.is_empty()
    })?;
    let address = crate::normalise_address(&leader.leader_address);
    (!same_address(&address, target)).then_some(address)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(node_id: u64, role: Role, term: u64, leader_id: u64) -> StatusResponse {
        StatusResponse {
            node_id,
            role: role as i32,
            term,
            leader_id,
            leader_address: if leader_id == 0 {
                String::new()
            } else {
                format!("n{leader_id}:{leader_id}")
            },
            ..StatusResponse::default()
        }
    }

    #[test]
    fn rule_1_checks_come_every_interval_until_the_attempt_would_time_out() {
        let interval = Some(Duration::from_millis(500));
        let mut schedule = CheckSchedule::new(true, 3, interval, Duration::from_secs(2));
        let mut waited = Duration::ZERO;
        let mut waits = Vec::new();
        while let Some(wait) = schedule.next_wait(waited) {
            // A check that takes 10 ms.
            waited += wait + Duration::from_millis(10);
            waits.push(wait);
            assert!(waits.len() <= 4, "unbounded: {waits:?}");
        }
        // Checks at 0.5, 1.01 and 1.52 s; the next would come at 2.03 s,
        // after the attempt timed out.
        assert_eq!(waits, [Duration::from_millis(500); 3]);
    }

    #[test]
    fn rule_1_the_number_of_checks_is_bounded_even_if_checks_take_no_time() {
        let interval = Some(Duration::from_millis(300));
        let mut schedule = CheckSchedule::new(true, 3, interval, Duration::from_secs(1));
        let count = (0..100)
            .map_while(|_| schedule.next_wait(Duration::ZERO))
            .count();
        assert_eq!(count, 3);
    }

    #[test]
    fn rule_1_no_checks_away_from_the_leader_alone_or_when_disabled() {
        let interval = Some(Duration::from_millis(500));
        let timeout = Duration::from_secs(5);
        let cases = [
            CheckSchedule::new(false, 3, interval, timeout),
            CheckSchedule::new(true, 1, interval, timeout),
            CheckSchedule::new(true, 3, None, timeout),
            CheckSchedule::new(true, 3, Some(Duration::ZERO), timeout),
            CheckSchedule::new(true, 3, Some(timeout), timeout),
        ];
        for mut schedule in cases {
            assert_eq!(schedule.next_wait(Duration::ZERO), None, "{schedule:?}");
        }
    }

    #[test]
    fn rule_2_a_majority_of_answers_or_every_reply_ends_a_check() {
        // Three nodes, the leader among them paused: two answers suffice.
        assert!(!enough_answers(3, 1, 0));
        assert!(enough_answers(3, 2, 0));
        // Five nodes: three answers, or everyone heard from.
        assert!(!enough_answers(5, 2, 2));
        assert!(enough_answers(5, 3, 0));
        assert!(enough_answers(5, 2, 3));
        assert!(enough_answers(1, 0, 1));
    }

    #[test]
    fn rule_3_a_new_leader_at_the_highest_term_moves_the_attempt() {
        // Node 1 is paused; 2 and 3 elected 2 at term 7.
        let answers = [
            status(2, Role::Leader, 7, 2),
            status(3, Role::Follower, 7, 2),
        ];
        assert_eq!(leader_elsewhere("n1:1", &answers), Some("n2:2".into()));
        // The same answers for an attempt at node 2 itself: nothing moved.
        assert_eq!(leader_elsewhere("n2:2", &answers), None);
        // A scheme on either side does not make two addresses differ.
        assert_eq!(leader_elsewhere("http://n2:2", &answers), None);
    }

    #[test]
    fn rule_3_followers_naming_the_paused_leader_do_not_move_the_attempt() {
        // The election has not ended: the followers still name node 1, or
        // no leader at a higher term.
        let naming_old = [
            status(2, Role::Follower, 6, 1),
            status(3, Role::Follower, 6, 1),
        ];
        assert_eq!(leader_elsewhere("n1:1", &naming_old), None);
        let electing = [
            status(2, Role::Candidate, 7, 0),
            status(3, Role::Follower, 7, 0),
        ];
        assert_eq!(leader_elsewhere("n1:1", &electing), None);
        // Even from an attempt at a follower: a named leader that did not
        // answer may be the very node that stopped.
        assert_eq!(leader_elsewhere("n2:2", &naming_old), None);
        assert_eq!(leader_elsewhere("n1:1", &[]), None);
    }

    #[test]
    fn rule_3_a_deposed_leader_at_a_lower_term_does_not_move_the_attempt() {
        // Node 3 was cut off and still believes it leads at term 6; node 1
        // leads at term 7 and is where the attempt waits.
        let answers = [
            status(3, Role::Leader, 6, 3),
            status(2, Role::Follower, 7, 1),
        ];
        assert_eq!(leader_elsewhere("n1:1", &answers), None);
        // Once node 2 leads at term 8, the attempt at node 1 moves there.
        let answers = [status(3, Role::Leader, 6, 3), status(2, Role::Leader, 8, 2)];
        assert_eq!(leader_elsewhere("n1:1", &answers), Some("n2:2".into()));
    }
}
