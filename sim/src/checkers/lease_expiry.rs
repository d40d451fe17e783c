//! etcd leases end when their holder stops keeping them alive, and never
//! earlier than promised (etcd's lease API: a keep-alive answer "ttl" is
//! the time the lease is guaranteed to live; the product's
//! `mvcc::lease::Lessor` and `server::etcd::lease`: a keep-alive is
//! answered only after a ReadIndex round confirmed the leadership, and its
//! deadline counts from before that round; a new leader gives every lease
//! its whole TTL plus an election timeout; Raft dissertation 6.4 for the
//! confirmed leadership that makes the promise hold across leaders).
//!
//! Checked, in world ticks:
//! 1. safety: no revoke of lease L that a lessor proposed is applied on
//!    any node at a tick earlier than `asked + TTL` of any answered
//!    keep-alive of L (`asked`: the tick the keep-alive reached the node
//!    that answered it). The TTL is counted at the fastest clock any node
//!    runs (the simulator's drift, `SimNode::tick_rate_permille`), since
//!    the lessor measures it on the leader's clock; a revoke applied
//!    before the keep-alive was even asked breaks the promise too (the
//!    answer told the client its keys live while they were already gone);
//! 2. on every node after every apply, every key attached to a lease is
//!    attached to a lease the store holds: a key never outlives the
//!    revocation of its lease in the log;
//! 3. liveness, once the cluster recovered: a node that has led since
//!    `promoted` (its lessor's promotion) holds in its store no lease
//!    whose keep-alives stopped at `stopped` once
//!    `max(stopped, promoted) + TTL + extension`, the lessor's retry of a
//!    lost revoke (two extensions; all at the slowest clock), two lessor
//!    periods and `REVOKE_TICKS_MAX` have passed.

use std::collections::BTreeMap;

use raftgres::core::NodeId;
use raftgres::mvcc::KeyValue;

/// World ticks a revoke may take, once due, to be proposed again (the
/// lessor retries after two extensions) and applied on a healed cluster,
/// beyond the two extensions.
pub const REVOKE_TICKS_MAX: u64 = 100;

/// World ticks per second of a clock that does not drift.
const TICKS_PER_SECOND: u64 = 100;

/// The promises made and the revokes applied.
#[derive(Debug, Default)]
pub struct LeaseExpiry {
    /// Per lease, the answered keep-alives: (asked, the tick before which
    /// no revoke may be applied).
    promises: BTreeMap<i64, Vec<(u64, u64)>>,
    /// Per lease, the tick a lessor's revoke of it was first applied.
    revoked: BTreeMap<i64, u64>,
    /// Rule 3 checks made (a sweep counts them, so that the rule is seen
    /// to be exercised).
    pub expiries_checked: u64,
}

/// World ticks `seconds` last at least on a clock that runs
/// `rate_permille` thousandths of a tick per world tick.
pub fn ticks_at_least(seconds: i64, rate_permille: u64) -> u64 {
    seconds.max(0) as u64 * TICKS_PER_SECOND * 1000 / rate_permille.max(1)
}

/// World ticks `duration_ticks` node ticks last at most on a clock that
/// runs `rate_permille` thousandths of a tick per world tick.
pub fn ticks_at_most(duration_ticks: u64, rate_permille: u64) -> u64 {
    (duration_ticks * 1000).div_ceil(rate_permille.max(1))
}

impl LeaseExpiry {
    /// A keep-alive of `lease` asked at tick `asked` was answered with
    /// `ttl` seconds; `rate_max_permille` is the fastest clock of any
    /// node (rule 1).
    pub fn on_keep_alive_answered(
        &mut self,
        lease: i64,
        asked: u64,
        ttl: i64,
        rate_max_permille: u64,
    ) -> Result<(), String> {
        let until = asked + ticks_at_least(ttl, rate_max_permille);
        if let Some(revoked) = self.revoked.get(&lease).filter(|revoked| **revoked < until) {
            return Err(format!(
                "a keep-alive of lease {lease} asked at tick {asked} was answered with a TTL of \
                 {ttl} s (the lease lives at least until tick {until}), but it was revoked at \
                 tick {revoked}"
            ));
        }
        self.promises.entry(lease).or_default().push((asked, until));
        Ok(())
    }

    /// The latest tick an answered keep-alive of `lease` was asked at (one
    /// the client gave up on may reach a paused node after the client
    /// stopped).
    pub fn last_asked(&self, lease: i64) -> Option<u64> {
        self.promises
            .get(&lease)
            .and_then(|promises| promises.iter().map(|(asked, _)| *asked).max())
    }

    /// A lessor's revoke of `lease` was applied on `node` at tick `now`
    /// (rule 1).
    pub fn on_revoke_applied(&mut self, node: NodeId, lease: i64, now: u64) -> Result<(), String> {
        let first = *self.revoked.entry(lease).or_insert(now);
        let promises = self.promises.get(&lease).map_or(&[][..], Vec::as_slice);
        if let Some((asked, until)) = promises.iter().find(|(_, until)| first < *until) {
            return Err(format!(
                "node {node} applied a revoke of lease {lease} at tick {now} (first applied at \
                 tick {first}), but a keep-alive asked at tick {asked} was promised the lease \
                 until tick {until}"
            ));
        }
        Ok(())
    }

    /// After an apply on `node`: every key of `rows` attached to a lease
    /// is attached to one of `leases`, the store's (rule 2).
    pub fn check_attachments<'a>(
        node: NodeId,
        mut rows: impl Iterator<Item = &'a KeyValue>,
        leases: &BTreeMap<i64, i64>,
    ) -> Result<(), String> {
        match rows.find(|row| row.lease != 0 && !leases.contains_key(&row.lease)) {
            Some(row) => Err(format!(
                "node {node} holds key {:?} attached to lease {}, which its store no longer holds",
                row.key, row.lease
            )),
            None => Ok(()),
        }
    }

    /// Rule 3 for a node that has led since tick `promoted` and holds
    /// `lease` of `ttl` seconds in its store at tick `now`, whose
    /// keep-alives stopped at tick `stopped`; `extension_ticks` is the
    /// lessor's extension in node ticks and `rate_min_permille` the
    /// slowest clock of any node.
    #[allow(clippy::too_many_arguments)]
    pub fn check_expired(
        &mut self,
        node: NodeId,
        lease: i64,
        ttl: i64,
        stopped: u64,
        promoted: u64,
        extension_ticks: u64,
        rate_min_permille: u64,
        lessor_ticks: u64,
        now: u64,
    ) -> Result<(), String> {
        self.expiries_checked += 1;
        let since = stopped.max(promoted);
        let seconds = u64::try_from(ttl.max(0)).unwrap_or(0) * TICKS_PER_SECOND;
        let bound = ticks_at_most(seconds + 3 * extension_ticks, rate_min_permille)
            + 2 * lessor_ticks
            + REVOKE_TICKS_MAX;
        if now > since + bound {
            return Err(format!(
                "node {node}, leading since tick {promoted}, still holds lease {lease} (TTL {ttl} \
                 s) at tick {now}: its keep-alives stopped at tick {stopped}, so it was due for \
                 revocation within {bound} ticks of tick {since}"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftgres::mvcc::{Command, MvccStore, PutRequest, RequestOp};

    #[test]
    fn a_revoke_applied_before_the_promised_time_is_a_violation() {
        let mut checker = LeaseExpiry::default();
        // A keep-alive asked at tick 100 with a TTL of 1 s, at a clock
        // 140 per mille fast: the lease lives until tick 187 at least.
        checker.on_keep_alive_answered(7, 100, 1, 1140).unwrap();
        let error = checker.on_revoke_applied(NodeId(2), 7, 186).unwrap_err();
        assert!(error.contains("until tick 187"), "{error}");
        let mut checker = LeaseExpiry::default();
        checker.on_keep_alive_answered(7, 100, 1, 1140).unwrap();
        checker.on_revoke_applied(NodeId(2), 7, 187).unwrap();
        checker.on_revoke_applied(NodeId(3), 7, 300).unwrap();
    }

    #[test]
    fn a_keep_alive_answered_for_a_lease_revoked_already_is_a_violation() {
        let mut checker = LeaseExpiry::default();
        checker.on_revoke_applied(NodeId(1), 7, 90).unwrap();
        let error = checker.on_keep_alive_answered(7, 100, 1, 1000).unwrap_err();
        assert!(error.contains("revoked at tick 90"), "{error}");
        checker.on_keep_alive_answered(8, 100, 1, 1000).unwrap();
    }

    #[test]
    fn a_key_attached_to_a_lease_the_store_no_longer_holds_is_a_violation() {
        let mut store = MvccStore::default();
        store.apply(&Command::LeaseGrant { id: 5, ttl: 1 });
        store.apply(&Command::Op(RequestOp::Put(PutRequest {
            key: vec![1],
            value: vec![2],
            lease: 5,
            ..PutRequest::default()
        })));
        let check = |store: &MvccStore, leases: &BTreeMap<i64, i64>| {
            LeaseExpiry::check_attachments(NodeId(1), store.rows().values(), leases)
        };
        check(&store, store.leases()).unwrap();
        let mut revoked = store.clone();
        revoked.apply(&Command::LeaseRevoke(5));
        check(&revoked, revoked.leases()).unwrap();
        // The key kept, its lease gone (a revoke that deleted nothing, or
        // a snapshot or rollback that lost the lease).
        let error = check(&store, &BTreeMap::new()).unwrap_err();
        assert!(error.contains("attached to lease 5"), "{error}");
    }

    #[test]
    fn a_lease_left_past_its_ttl_and_extension_after_recovery_is_a_violation() {
        let mut checker = LeaseExpiry::default();
        // TTL 1 s (100 ticks), extension 20 ticks, slowest clock 860 per
        // mille: 100 + 60 = 160 node ticks are at most 187 world ticks,
        // plus 2 * 25 and 100.
        let check = |checker: &mut LeaseExpiry, now| {
            checker.check_expired(NodeId(1), 7, 1, 1000, 900, 20, 860, 25, now)
        };
        check(&mut checker, 1000 + 337).unwrap();
        let error = check(&mut checker, 1000 + 338).unwrap_err();
        assert!(error.contains("within 337 ticks of tick 1000"), "{error}");
        assert_eq!(checker.expiries_checked, 2);
    }
}
