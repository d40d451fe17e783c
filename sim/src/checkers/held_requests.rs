//! Every request a node accepts is answered (the pipeline's obligation
//! toward its callers: a proposal is answered applied, lost or unknown; a
//! read is served or refused; a transfer completes or times out; nothing
//! waits forever). Once the cluster has recovered from its faults, no
//! running node may hold a request longer than `ticks_max` ticks, counted
//! from its arrival or from the recovery, whichever is later. A read left
//! behind when its node lost leadership, a proposal that outlives its
//! leader, a transfer never given up: each fails here, even when the
//! client gave up long ago and no other checker would notice.
//!
//! At the end of a run the bound tightens: once the clients of a
//! recovered cluster have started no request for a while (`check_quiet`),
//! every client request must have been answered and no node may hold one.
//! A write left uncommitted until some later write carries it along, a
//! read waiting for a heartbeat that a quiet leader never sends: each
//! fails here.
//!
//! And a node answers only requests it holds, each once: an answer to a
//! request it already answered, or never had, fails at once (the world's
//! driver checks every answer the pipeline gives against the requests it
//! handed it).

/// Tracks the recovery and bounds how long a request may be held.
#[derive(Debug)]
pub struct HeldRequests {
    ticks_max: u64,
    recovered_at: Option<u64>,
}

impl HeldRequests {
    /// A checker allowing `ticks_max` ticks per request after recovery.
    pub fn new(ticks_max: u64) -> HeldRequests {
        HeldRequests {
            ticks_max,
            recovered_at: None,
        }
    }

    /// The cluster recovered at `tick`.
    pub fn on_recovered(&mut self, tick: u64) {
        self.recovered_at.get_or_insert(tick);
    }

    /// Checks at `tick` the arrival ticks of the requests node `node`
    /// holds.
    pub fn check(
        &self,
        node: u64,
        tick: u64,
        arrivals: impl IntoIterator<Item = u64>,
    ) -> Result<(), String> {
        let Some(recovered) = self.recovered_at else {
            return Ok(());
        };
        match arrivals
            .into_iter()
            .find(|arrived| tick - (*arrived).max(recovered) > self.ticks_max)
        {
            Some(arrived) => Err(format!(
                "node {node} still holds, at tick {tick}, a request that arrived at tick \
                 {arrived}; the cluster recovered at tick {recovered} (bound {} ticks)",
                self.ticks_max
            )),
            None => Ok(()),
        }
    }
}

/// Checks, at `tick`, a recovered cluster whose clients have started no
/// request since `quiet_since`: `waiting_clients` are the clients still
/// waiting for an answer, `holding_nodes` the nodes still holding a client
/// request.
pub fn check_quiet(
    tick: u64,
    quiet_since: u64,
    waiting_clients: &[u64],
    holding_nodes: &[u64],
) -> Result<(), String> {
    if waiting_clients.is_empty() && holding_nodes.is_empty() {
        return Ok(());
    }
    Err(format!(
        "at tick {tick}, {} ticks after the clients of a recovered cluster started their last \
         request, clients {waiting_clients:?} still wait and nodes {holding_nodes:?} still hold \
         client requests",
        tick - quiet_since
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_held_before_recovery_are_free() {
        let checker = HeldRequests::new(100);
        assert!(checker.check(1, 5_000, [10]).is_ok());
    }

    #[test]
    fn old_requests_get_the_bound_from_recovery_on() {
        let mut checker = HeldRequests::new(100);
        checker.on_recovered(1_000);
        assert!(checker.check(1, 1_100, [10, 1_050]).is_ok());
        let error = checker.check(2, 1_101, [10]).unwrap_err();
        assert!(error.contains("node 2"), "{error}");
        assert!(error.contains("arrived at tick 10"), "{error}");
    }

    #[test]
    fn a_request_held_past_the_bound_after_recovery_is_a_violation() {
        let mut checker = HeldRequests::new(100);
        checker.on_recovered(1_000);
        assert!(checker.check(1, 1_250, [1_200]).is_ok());
        assert!(checker.check(1, 1_301, [1_200]).is_err());
    }

    #[test]
    fn a_quiet_cluster_with_nothing_outstanding_passes() {
        assert!(check_quiet(1_000, 940, &[], &[]).is_ok());
    }

    #[test]
    fn a_request_outstanding_after_the_quiet_period_is_a_violation() {
        let error = check_quiet(1_000, 940, &[2], &[]).unwrap_err();
        assert!(error.contains("clients [2] still wait"), "{error}");
        let error = check_quiet(1_000, 940, &[], &[3]).unwrap_err();
        assert!(error.contains("nodes [3] still hold"), "{error}");
    }
}
