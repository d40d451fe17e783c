//! A leader's lease bookkeeping is what the lease rule says (Raft
//! dissertation, section 6.4.1, with this core's margin): a lease runs
//! from the send time of the latest heartbeat round a quorum
//! acknowledged, for three quarters of `election_ticks_min`, unless leases
//! are off (no check-quorum, a transfer, a TimeoutNow sent, nothing of the
//! term committed). After every step of a leader:
//! - it claims a lease exactly when that rule grants one: a claim beyond
//!   it may serve a stale read, a refusal within it sends reads through a
//!   quorum round they did not need;
//! - it keeps the send time of no round before the acknowledged one but
//!   that one: what it keeps stays bounded by the rounds in flight.

use raftgres::core::{LeaseRounds, NodeId};

/// Checks leader `node`'s lease claim (`claimed`) against `rounds` and
/// its `election_ticks_min`.
pub fn check(
    node: NodeId,
    rounds: LeaseRounds,
    claimed: bool,
    election_ticks_min: u64,
) -> Result<(), String> {
    let in_flight = rounds.latest.saturating_sub(rounds.acknowledged) as usize;
    if rounds.held > in_flight + 1 {
        return Err(format!(
            "node {node} keeps the send times of {} heartbeat rounds, with rounds {} to {} \
             unacknowledged: rounds before the acknowledged one are never pruned",
            rounds.held,
            rounds.acknowledged + 1,
            rounds.latest
        ));
    }
    let lease_ticks = election_ticks_min * 3 / 4;
    let granted = !rounds.blocked
        && rounds
            .acknowledged_sent_at
            .is_some_and(|sent_at| rounds.ticks < sent_at + lease_ticks);
    if claimed == granted {
        return Ok(());
    }
    let sent = rounds
        .acknowledged_sent_at
        .map_or("unknown".to_string(), |sent_at| sent_at.to_string());
    Err(format!(
        "node {node} {} a lease at tick {} with round {} acknowledged (sent at tick {sent}), a \
         lease of {lease_ticks} ticks, leases {}",
        if claimed { "claims" } else { "refuses" },
        rounds.ticks,
        rounds.acknowledged,
        if rounds.blocked { "off" } else { "on" }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rounds(held: usize, sent_at: u64, ticks: u64) -> LeaseRounds {
        LeaseRounds {
            held,
            latest: 5,
            acknowledged: 4,
            acknowledged_sent_at: Some(sent_at),
            blocked: false,
            ticks,
        }
    }

    #[test]
    fn a_claim_beyond_the_lease_or_a_refusal_within_it_fails() {
        // election_ticks_min 12: a lease of 9 ticks from tick 100.
        assert_eq!(check(NodeId(1), rounds(2, 100, 108), true, 12), Ok(()));
        assert!(check(NodeId(1), rounds(2, 100, 109), true, 12)
            .unwrap_err()
            .contains("claims a lease at tick 109"));
        assert!(check(NodeId(1), rounds(2, 100, 105), false, 12)
            .unwrap_err()
            .contains("refuses a lease"));
        assert_eq!(check(NodeId(1), rounds(2, 100, 109), false, 12), Ok(()));
        let blocked = LeaseRounds {
            blocked: true,
            ..rounds(2, 100, 105)
        };
        assert_eq!(check(NodeId(1), blocked, false, 12), Ok(()));
    }

    #[test]
    fn rounds_kept_beyond_those_in_flight_fail() {
        assert!(check(NodeId(1), rounds(3, 100, 200), false, 12)
            .unwrap_err()
            .contains("never pruned"));
    }
}
