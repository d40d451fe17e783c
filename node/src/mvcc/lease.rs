//! Which lease expires when: the leader's decision, in pure code.
//!
//! The store holds the leases and their granted TTLs (replicated like
//! everything else); only the leader keeps deadlines. A lease whose
//! deadline passed is revoked through the log (a [`super::Command::LeaseRevoke`]
//! the leader proposes), so every replica deletes its keys at the same
//! place in the log and no replica's clock decides anything. A new leader
//! does not know its predecessor's deadlines: it gives every lease its
//! whole TTL again plus an extension (an election timeout, as etcd does),
//! so that a lease kept alive under the old leader is not revoked while its
//! clients find the new one.
//!
//! ```text
//!   leases in the store ──> reconcile ──┐
//!   became leader ────────> promote ────┤
//!   keep-alive ───────────> renew ──────┼──> Lessor ──> to_revoke(now) ──> propose LeaseRevoke
//!   stepped down ─────────> demote ─────┘
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use crate::pipeline::Instant;

/// The leader's lease deadlines.
#[derive(Clone, Debug, Default)]
pub struct Lessor {
    /// Whether this node leads (only a leader keeps deadlines).
    leading: bool,
    /// Granted TTLs in seconds, as the store last showed them.
    ttls: BTreeMap<i64, i64>,
    /// When each lease expires. Invariant: empty unless `leading`; its
    /// keys are those of `ttls`.
    deadlines: BTreeMap<i64, Instant>,
    /// Revocations proposed and not yet seen applied, with when they were
    /// proposed.
    revoking: BTreeMap<i64, Instant>,
}

/// Whether the expiry task, woken by its tick (`ticked`) or by an apply,
/// looks at the lease table now. `leading_term` is the term this node
/// leads (`None` when it does not lead), `led_term` the term its lessor
/// was promoted in (`None` when it was not). It looks on every tick, and
/// after an apply only when the role or the term changed since: a new
/// leader's first apply (its blank entry) promotes the lessor at once, so
/// that lease requests right after an election are not refused as "not
/// leader", while an ordinary apply costs no read of the table.
pub fn expiry_task_looks(ticked: bool, leading_term: Option<u64>, led_term: Option<u64>) -> bool {
    ticked || leading_term != led_term
}

fn seconds(ttl: i64) -> Duration {
    Duration::from_secs(ttl.max(0) as u64)
}

impl Lessor {
    /// Whether this node keeps deadlines.
    pub fn leading(&self) -> bool {
        self.leading
    }

    /// The store holds `leases` (id to granted TTL) at `now`: a lease new
    /// to the lessor expires a whole TTL from now; one gone is forgotten.
    pub fn reconcile(&mut self, leases: &BTreeMap<i64, i64>, now: Instant) {
        self.ttls = leases.clone();
        self.revoking.retain(|id, _| leases.contains_key(id));
        if !self.leading {
            return;
        }
        self.deadlines.retain(|id, _| leases.contains_key(id));
        for (id, ttl) in leases {
            self.deadlines
                .entry(*id)
                .or_insert_with(|| now.after(seconds(*ttl)));
        }
    }

    /// Lease `id` of `ttl` seconds was granted and applied at `now`: a
    /// leader gives it its whole TTL at once (without waiting for the next
    /// [`Self::reconcile`]), so that a keep-alive right after the grant
    /// finds it.
    pub fn granted(&mut self, id: i64, ttl: i64, now: Instant) {
        self.ttls.insert(id, ttl);
        if self.leading {
            self.deadlines.insert(id, now.after(seconds(ttl)));
        }
    }

    /// This node became leader at `now`: every lease gets its whole TTL
    /// plus `extension`.
    pub fn promote(&mut self, now: Instant, extension: Duration) {
        self.leading = true;
        self.revoking.clear();
        self.deadlines = self
            .ttls
            .iter()
            .map(|(id, ttl)| (*id, now.after(seconds(*ttl) + extension)))
            .collect();
    }

    /// This node no longer leads: it forgets the deadlines.
    pub fn demote(&mut self) {
        self.leading = false;
        self.deadlines.clear();
        self.revoking.clear();
    }

    /// A keep-alive of lease `id` asked at `now` (before the leadership
    /// was confirmed for it): its granted TTL, and the lease expires no
    /// earlier than that long from `now`; `None` when this node does not
    /// lead or the lease is unknown (or already being revoked).
    pub fn renew(&mut self, id: i64, now: Instant) -> Option<i64> {
        if !self.leading || self.revoking.contains_key(&id) {
            return None;
        }
        let ttl = *self.ttls.get(&id)?;
        let deadline = now.after(seconds(ttl));
        let current = self.deadlines.entry(id).or_insert(deadline);
        *current = (*current).max(deadline);
        Some(ttl)
    }

    /// The granted TTL of lease `id` and the whole seconds it has left at
    /// `now` (as etcd reports them), when this node leads and knows it.
    pub fn remaining(&self, id: i64, now: Instant) -> Option<(i64, i64)> {
        let deadline = self.deadlines.get(&id)?;
        let left = deadline.0.saturating_sub(now.0).as_secs() as i64;
        Some((self.ttls[&id], left))
    }

    /// The leases to revoke at `now`: past their deadline and not being
    /// revoked (or proposed more than `retry_after` ago without being seen
    /// applied: the proposal was lost). They count as being revoked from
    /// now on.
    pub fn to_revoke(&mut self, now: Instant, retry_after: Duration) -> Vec<i64> {
        if !self.leading {
            return Vec::new();
        }
        let due: Vec<i64> = self
            .deadlines
            .iter()
            .filter(|(id, deadline)| {
                **deadline <= now
                    && self
                        .revoking
                        .get(id)
                        .is_none_or(|proposed| proposed.after(retry_after) <= now)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in &due {
            self.revoking.insert(*id, now);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64) -> Instant {
        Instant(Duration::from_secs(seconds))
    }

    #[test]
    fn the_expiry_task_looks_on_its_tick_and_after_an_apply_only_when_the_role_or_term_moved() {
        for (leading, led) in [(None, None), (Some(3), Some(3)), (Some(3), None)] {
            assert!(expiry_task_looks(true, leading, led), "every tick looks");
        }
        // An ordinary apply: no read of the table.
        assert!(!expiry_task_looks(false, None, None));
        assert!(!expiry_task_looks(false, Some(3), Some(3)));
        // A new leader's first apply promotes it at once.
        assert!(expiry_task_looks(false, Some(3), None));
        assert!(expiry_task_looks(false, Some(4), Some(3)));
        // A deposed leader demotes its lessor at its next apply.
        assert!(expiry_task_looks(false, None, Some(3)));
    }

    #[test]
    fn only_a_leader_revokes_and_a_keep_alive_postpones() {
        let mut lessor = Lessor::default();
        let leases = BTreeMap::from([(7, 10)]);
        lessor.reconcile(&leases, at(0));
        assert!(lessor.to_revoke(at(100), Duration::from_secs(1)).is_empty());
        assert_eq!(lessor.renew(7, at(0)), None, "a follower renews nothing");
        lessor.promote(at(0), Duration::from_secs(2));
        assert!(lessor.to_revoke(at(11), Duration::from_secs(1)).is_empty());
        assert_eq!(lessor.remaining(7, at(3)), Some((10, 9)));
        assert_eq!(lessor.renew(7, at(5)), Some(10));
        assert!(lessor.to_revoke(at(14), Duration::from_secs(1)).is_empty());
        assert_eq!(lessor.to_revoke(at(15), Duration::from_secs(1)), [7]);
        assert!(
            lessor.to_revoke(at(15), Duration::from_secs(1)).is_empty(),
            "proposed once"
        );
        assert_eq!(lessor.renew(7, at(15)), None, "being revoked");
        assert_eq!(
            lessor.to_revoke(at(17), Duration::from_secs(1)),
            [7],
            "a lost proposal is made again"
        );
        lessor.reconcile(&BTreeMap::new(), at(17));
        assert_eq!(lessor.remaining(7, at(17)), None);
    }

    #[test]
    fn a_lease_granted_under_a_leader_gets_its_whole_ttl() {
        let mut lessor = Lessor::default();
        lessor.promote(at(0), Duration::from_secs(2));
        lessor.reconcile(&BTreeMap::from([(1, 5)]), at(10));
        assert!(lessor.to_revoke(at(14), Duration::from_secs(1)).is_empty());
        assert_eq!(lessor.to_revoke(at(15), Duration::from_secs(1)), [1]);
        lessor.demote();
        assert!(lessor.to_revoke(at(99), Duration::from_secs(1)).is_empty());
    }
}
