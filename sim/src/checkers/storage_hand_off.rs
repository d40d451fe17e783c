//! A leader whose storage stalls steps aside (the pipeline's promise,
//! `Output::HandingOff`): once a write or an apply it handed its store has
//! been outstanding for the storage stall timeout, it hands leadership to
//! another voter, so that the cluster does not wait for its Postgres. The
//! followers can commit without its disk, while it can neither apply nor
//! answer anyone. A leader whose Postgres stops while only an apply is in
//! flight (its clients all wait for that apply, so it writes nothing new)
//! must notice too: the nemesis suite saw such a leader hold on for 3.2 s,
//! until its Postgres came back.
//!
//! Checked at every look at a running leader: its oldest outstanding
//! transaction (first attempt) began `since`; by `since` plus the stall
//! timeout, stretched by the slowest clock drift, plus a few ticks, it
//! must have handed off (or have no other voter to hand to).

/// Ticks beyond the stretched stall timeout before a missing hand-off
/// counts: the tick the pipeline notices in, and the retry of a
/// transaction that failed in that tick.
pub const GRACE_TICKS: u64 = 3;

/// The latest tick by which a leader whose oldest outstanding store
/// transaction began at `since` must have handed off, with a stall timeout
/// of `stall_ticks` of its clock and clocks as slow as `1000 -
/// drift_permille_max` per thousand.
pub fn deadline(since: u64, stall_ticks: u64, drift_permille_max: u64) -> u64 {
    let slowest = 1000u64.saturating_sub(drift_permille_max).max(1);
    since + (stall_ticks * 1000).div_ceil(slowest) + GRACE_TICKS
}

/// Checks leader `node` at `tick`: `outstanding_since`, when its oldest
/// store transaction not yet done began; `handed_off_at`, its latest
/// hand-off; `other_voters`, whether it has anyone to hand to (asked only
/// when the hand-off is overdue: the check runs at every look).
pub fn check(
    node: u64,
    tick: u64,
    outstanding_since: Option<u64>,
    handed_off_at: Option<u64>,
    other_voters: impl FnOnce() -> bool,
    stall_ticks: u64,
    drift_permille_max: u64,
) -> Result<(), String> {
    let Some(since) = outstanding_since else {
        return Ok(());
    };
    let due = deadline(since, stall_ticks, drift_permille_max);
    let handed_off = handed_off_at.is_some_and(|at| at >= since);
    if tick <= due || handed_off || !other_voters() {
        return Ok(());
    }
    Err(format!(
        "leader {node} still leads at tick {tick} without handing off, its store \
         transaction outstanding since tick {since} (stall timeout {stall_ticks} ticks, \
         hand-off due by tick {due})"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_stalled_past_the_timeout_without_a_hand_off_is_a_violation() {
        let error = check(2, 130, Some(100), None, || true, 20, 0).unwrap_err();
        assert!(error.contains("leader 2"), "{error}");
        assert!(error.contains("since tick 100"), "{error}");
    }

    #[test]
    fn a_hand_off_after_the_stall_began_or_no_one_to_hand_to_is_fine() {
        assert!(check(2, 130, Some(100), Some(121), || true, 20, 0).is_ok());
        assert!(check(2, 130, Some(100), None, || false, 20, 0).is_ok());
        assert!(check(2, 130, None, None, || true, 20, 0).is_ok());
        // A hand-off from before this stall does not count.
        assert!(check(2, 130, Some(100), Some(90), || true, 20, 0).is_err());
    }

    #[test]
    fn the_deadline_stretches_with_slow_clocks() {
        assert_eq!(deadline(100, 20, 0), 123);
        assert!(check(2, 123, Some(100), None, || true, 20, 0).is_ok());
        // At 860/1000, 20 ticks of the node's clock take 24 world ticks.
        assert_eq!(deadline(100, 20, 140), 127);
    }
}
