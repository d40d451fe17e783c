//! Counters of one run, and their sum over a sweep.

use std::ops::AddAssign;

/// Faults injected, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Node crashes (not counting halts after disk errors).
    pub crashes: u64,
    /// Node restarts.
    pub restarts: u64,
    /// Node pauses.
    pub pauses: u64,
    /// Partitions started, by `PartitionKind` (symmetric, one-way, bridge,
    /// isolate-leader).
    pub partitions: [u64; 5],
    /// Failed writes (each halts its node until restarted).
    pub disk_errors: u64,
    /// Leadership transfers requested.
    pub transfers: u64,
    /// Messages lost on send.
    pub messages_lost: u64,
    /// Messages delivered twice.
    pub messages_duplicated: u64,
    /// Messages dropped by a partition.
    pub messages_partitioned: u64,
    /// Messages dropped because their link was not connected.
    pub messages_unconnected: u64,
    /// Messages the receiver's transport refused (`Raft::hears`: from a
    /// node it does not count a member, and neither a current leader's
    /// nor a campaign).
    pub messages_unheard: u64,
    /// Storage transactions that failed before COMMIT (and were retried).
    pub storage_errors: u64,
    /// Storage transactions whose COMMIT had an unknown outcome.
    pub commits_unknown: u64,
    /// Postgres crashes under a running node.
    pub postgres_crashes: u64,
    /// Asynchronous applies a Postgres crash lost.
    pub applies_lost: u64,
    /// Leaders that handed leadership off because their storage stalled.
    pub hand_offs: u64,
    /// Messages forged by the fault injector (each must be reported).
    pub forged: u64,
    /// Membership changes the fault injector asked a leader for.
    pub membership_changes: u64,
    /// Of those, the ones whose entry was applied on the leader.
    pub membership_changes_applied: u64,
    /// Spare machines started empty to join (see `World::new`).
    pub joins: u64,
    /// Of those, the ones that had applied entries the cluster sent them
    /// (by its log or a snapshot) when the run ended.
    pub joins_caught_up: u64,
}

impl AddAssign for FaultCounts {
    fn add_assign(&mut self, other: FaultCounts) {
        self.crashes += other.crashes;
        self.restarts += other.restarts;
        self.pauses += other.pauses;
        for (total, count) in self.partitions.iter_mut().zip(other.partitions) {
            *total += count;
        }
        self.disk_errors += other.disk_errors;
        self.transfers += other.transfers;
        self.membership_changes += other.membership_changes;
        self.membership_changes_applied += other.membership_changes_applied;
        self.joins += other.joins;
        self.joins_caught_up += other.joins_caught_up;
        self.messages_lost += other.messages_lost;
        self.messages_duplicated += other.messages_duplicated;
        self.messages_partitioned += other.messages_partitioned;
        self.messages_unconnected += other.messages_unconnected;
        self.messages_unheard += other.messages_unheard;
        self.storage_errors += other.storage_errors;
        self.commits_unknown += other.commits_unknown;
        self.postgres_crashes += other.postgres_crashes;
        self.applies_lost += other.applies_lost;
        self.hand_offs += other.hand_offs;
        self.forged += other.forged;
    }
}

/// Counters of one run (or of many, summed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Simulated ticks.
    pub ticks: u64,
    /// Inputs fed to cores (messages, ticks, proposals, reads, persisted).
    pub steps: u64,
    /// Trace events.
    pub trace_events: u64,
    /// Messages sent.
    pub messages_sent: u64,
    /// Faults injected.
    pub faults: FaultCounts,
    /// Distinct (term, leader) elections.
    pub elections: u64,
    /// Highest commit index seen (summed over runs: entries committed).
    pub committed_index_max: u64,
    /// Log compactions.
    pub compactions: u64,
    /// Snapshots installed by followers.
    pub snapshots_installed: u64,
    /// Batches leaders applied ahead of their commit: handed out,
    /// confirmed, abandoned, and committed without waiting for the WAL
    /// flush (their first attempt, on the applied index right below).
    pub applies_ahead: [u64; 4],
    /// Followers' apply batches that waited for a log write to carry
    /// them: carried by one, then applied alone when none came in time.
    pub follower_apply_waits: [u64; 2],
    /// Compactions of the store's history (clients' `Command::Compact`)
    /// done, counted at their first application.
    pub history_compactions: u64,
    /// Worlds that ran the lease client, keep-alives answered with a TTL,
    /// lessors' revokes applied (on any node), and `lease_expiry`'s
    /// liveness checks.
    pub leases: [u64; 4],
    /// Worlds that ran the watch client, windows of changes sent to its
    /// watches, changes `watch_order` checked in them, and watches told
    /// their revision was compacted.
    pub watches: [u64; 4],
    /// Compactions refused: at or below the compaction point, beyond the
    /// current revision.
    pub history_compactions_refused: [u64; 2],
    /// The longest history a node's store kept after an apply (a maximum,
    /// also over a sweep).
    pub history_changes_max: u64,
    /// Client operations answered.
    pub client_operations_completed: u64,
    /// Client writes whose outcome stayed unknown to the client.
    pub client_operations_unknown: u64,
    /// Client requests that timed out.
    pub client_timeouts: u64,
    /// Gets served under a leader lease.
    pub lease_reads: u64,
    /// Gets served stale, without confirmation.
    pub stale_reads: u64,
    /// Client retries of a write with the same session and sequence.
    pub session_retries: u64,
    /// Writes acknowledged to clients.
    pub acknowledged_writes: u64,
    /// Operations given to the linearizability checker.
    pub history_operations: u64,
    /// The linearizability search ran out of budget (runs, when summed).
    pub linearizability_too_expensive: bool,
    /// Ticks from the end of faults to the liveness probe's commit.
    pub recovery_ticks: Option<u64>,
    /// Leadership transfers asked for after recovery that completed.
    pub transfers_checked: u64,
    /// Final idle windows whose messages were counted (1 per run at most).
    pub idle_windows_checked: u64,
}

impl AddAssign for RunStats {
    /// Sums counters over runs (`linearizability_too_expensive` and
    /// `recovery_ticks` are per run; a sweep keeps them itself;
    /// `history_changes_max` is a maximum).
    fn add_assign(&mut self, stats: RunStats) {
        self.ticks += stats.ticks;
        self.steps += stats.steps;
        self.trace_events += stats.trace_events;
        self.messages_sent += stats.messages_sent;
        self.faults += stats.faults;
        self.elections += stats.elections;
        self.committed_index_max += stats.committed_index_max;
        self.compactions += stats.compactions;
        self.snapshots_installed += stats.snapshots_installed;
        for (total, count) in self
            .follower_apply_waits
            .iter_mut()
            .zip(stats.follower_apply_waits)
        {
            *total += count;
        }
        for (total, count) in self.applies_ahead.iter_mut().zip(stats.applies_ahead) {
            *total += count;
        }
        self.history_compactions += stats.history_compactions;
        for (total, count) in self.leases.iter_mut().zip(stats.leases) {
            *total += count;
        }
        for (total, count) in self.watches.iter_mut().zip(stats.watches) {
            *total += count;
        }
        for (total, count) in self
            .history_compactions_refused
            .iter_mut()
            .zip(stats.history_compactions_refused)
        {
            *total += count;
        }
        self.history_changes_max = self.history_changes_max.max(stats.history_changes_max);
        self.client_operations_completed += stats.client_operations_completed;
        self.client_operations_unknown += stats.client_operations_unknown;
        self.client_timeouts += stats.client_timeouts;
        self.lease_reads += stats.lease_reads;
        self.stale_reads += stats.stale_reads;
        self.session_retries += stats.session_retries;
        self.acknowledged_writes += stats.acknowledged_writes;
        self.history_operations += stats.history_operations;
        self.transfers_checked += stats.transfers_checked;
        self.idle_windows_checked += stats.idle_windows_checked;
    }
}

impl RunStats {
    /// What a swarm sweep of `seeds` seeds, `recovered` of which recovered
    /// after healing, must exercise and did not: a sweep that passes every
    /// checker proves little if no node crashed, no snapshot was installed,
    /// no lease read was served, no stalled leader handed off. An empty
    /// list for a sweep of a few dozen swarm seeds or more.
    pub fn missing_exercises(&self, seeds: u64, recovered: u64) -> Vec<String> {
        let faults = &self.faults;
        let checks = [
            (
                "crashes and restarts",
                faults.crashes > 0 && faults.restarts > 0,
            ),
            (
                "every partition kind",
                faults.partitions.iter().all(|count| *count > 0),
            ),
            (
                "lost and duplicated messages",
                faults.messages_lost > 0 && faults.messages_duplicated > 0,
            ),
            (
                "disk errors and pauses",
                faults.disk_errors > 0 && faults.pauses > 0,
            ),
            (
                "compactions and snapshot installs",
                self.snapshots_installed > 0 && self.compactions > 0,
            ),
            (
                "applies ahead of the commit confirmed, abandoned and committed asynchronously",
                self.applies_ahead.iter().all(|count| *count > 0),
            ),
            (
                "followers' applies that waited for a write, carried and alone",
                self.follower_apply_waits.iter().all(|count| *count > 0),
            ),
            (
                "lease keep-alives answered, lessors' revokes applied and lease expiries checked",
                self.leases.iter().all(|count| *count > 0),
            ),
            (
                "watch windows sent, changes checked and compactions told",
                self.watches.iter().all(|count| *count > 0),
            ),
            (
                "history compactions done, refused as compacted, refused as future",
                self.history_compactions > 0
                    && self
                        .history_compactions_refused
                        .iter()
                        .all(|count| *count > 0),
            ),
            ("an election per seed", self.elections >= seeds),
            (
                "ten acknowledged writes per seed",
                self.acknowledged_writes > 10 * seeds,
            ),
            (
                "writes with an unknown outcome",
                self.client_operations_unknown > 0,
            ),
            (
                "statement errors, unknown commits, Postgres crashes, lost applies",
                faults.storage_errors > 0
                    && faults.commits_unknown > 0
                    && faults.postgres_crashes > 0
                    && faults.applies_lost > 0,
            ),
            (
                "hand-offs of leaders whose storage stalled",
                faults.hand_offs > 0,
            ),
            ("forged messages", faults.forged > 0),
            (
                "membership changes applied (adds, promotions, removals)",
                faults.membership_changes_applied > 0,
            ),
            (
                "empty nodes that joined and caught up",
                faults.joins_caught_up > 0,
            ),
            (
                "session retries, lease reads and stale reads",
                self.session_retries > 0 && self.lease_reads > 0 && self.stale_reads > 0,
            ),
            ("recovery after healing in every seed", recovered == seeds),
            (
                "a checked transfer and a counted idle window in most seeds",
                self.transfers_checked > seeds / 2 && self.idle_windows_checked > seeds / 2,
            ),
        ];
        checks
            .into_iter()
            .filter(|(_, exercised)| !exercised)
            .map(|(what, _)| format!("{what}: {self:?}"))
            .collect()
    }
}
