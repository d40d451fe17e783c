//! What the checkers see of the nodes after each input, and the checks at
//! the end of a run.

use raftgres::core::{LogIndex, Role};

use crate::checkers::durability::FinalNode;
use crate::checkers::leader_commit_rule;
use crate::checkers::linearizability::{self, Operation, Output, Verdict};
use crate::checkers::storage_hand_off;
use crate::clients::history_output;
use crate::world::World;

impl World {
    /// Reports node `index`'s role, term and indexes to the checkers.
    pub(crate) fn observe(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        let Some(raft) = node.pipeline.as_ref().map(|pipeline| pipeline.raft()) else {
            return;
        };
        let id = node.id;
        let (role, term) = (raft.role(), raft.term());
        let voted_for = raft.hard_state().voted_for;
        if role == Role::Leader {
            // Ask the core for its lease only when a claim could be wrong.
            let breaker = self.network.lease_breaker_above(term);
            let exclusivity = &self.checkers.lease_exclusivity;
            if (breaker.is_some() || exclusivity.elected_after(term))
                && raft.lease_read_index().is_some()
            {
                let result = exclusivity.on_lease_claimed(id, term, self.now, breaker);
                if let Err(message) = result {
                    return self.fail("lease_exclusivity", message);
                }
            }
            let outstanding_since = [node.write_since, node.apply_since]
                .into_iter()
                .flatten()
                .min();
            let other_voters = || raft.membership().voters.iter().any(|voter| *voter != id);
            let result = storage_hand_off::check(
                id.0,
                self.now,
                outstanding_since,
                node.handed_off_at,
                other_voters,
                self.config.election_ticks_max,
                self.original_profile.clock_drift_permille_max,
            );
            if let Err(message) = result {
                return self.fail("storage_hand_off", message);
            }
        }
        let commit = raft.log().commit_index();
        let applied = raft.log().applied_index();
        let seen = (
            role,
            term,
            voted_for,
            commit,
            applied,
            node.store.flushed_applied(),
        );
        if node.observed == Some(seen) {
            // Nothing the checkers look at changed since the last look.
            return;
        }
        node.observed = Some(seen);
        if (role, term) != (node.observed_role, node.observed_term) {
            node.observed_role = role;
            node.observed_term = term;
            self.idle_traffic.on_role_change();
            self.trace
                .record(self.now, "role", &[id.0, role as u64, term.0], || {
                    format!("node {id} {role} term {term}")
                });
            if role == Role::Leader {
                let membership = raft.membership();
                let only_voter = membership
                    .voters
                    .iter()
                    .chain(&membership.voters_outgoing)
                    .all(|voter| *voter == id);
                self.checkers
                    .lease_exclusivity
                    .on_elected(id, term, self.now, only_voter);
                let result = match self.checkers.election_safety.on_leader(id, term) {
                    Ok(_) => self
                        .checkers
                        .leader_completeness
                        .on_leader(id, term, raft.log())
                        .map_err(|message| ("leader_completeness", message)),
                    Err(message) => Err(("election_safety", message)),
                };
                if let Err((checker, message)) = result {
                    self.fail(checker, message);
                }
                let result = self.transfer_liveness.on_leader(id, term, self.now);
                self.check("transfer_liveness", result);
            }
        }
        let result = self.checkers.single_vote.on_observe(id, term, voted_for);
        self.check("single_vote", result);
        // A node removed while it was cut off campaigns in ever higher
        // terms of its own, which the members ignore: only members' terms
        // must settle.
        if self
            .cluster_membership()
            .is_none_or(|membership| membership.contains(id))
        {
            let result = self.term_settling.on_term(id.0, term.0, self.now);
            self.check("term_settling", result);
        }
        let node = &mut self.nodes[index];
        let raft = node.pipeline.as_ref().expect("running").raft();
        let log = raft.log();
        let commit = log.commit_index();
        let mut failure = None;
        if commit > node.observed_commit {
            let first = node.observed_commit.0.max(log.snapshot().index.0) + 1;
            for position in first..=commit.0 {
                let entry_term = log
                    .term_at(LogIndex(position))
                    .expect("committed entries after the snapshot are held");
                let result = self.checkers.leader_completeness.on_commit(
                    id,
                    term,
                    LogIndex(position),
                    entry_term,
                );
                if let Err(message) = result {
                    failure = Some(("leader_completeness", message));
                    break;
                }
            }
            self.stats.committed_index_max = self.stats.committed_index_max.max(commit.0);
            self.commit_index_max = self.commit_index_max.max(commit);
            if role == Role::Leader && failure.is_none() {
                let result =
                    leader_commit_rule::check_leader_commit(id, term, commit, log.term_at(commit));
                if let Err(message) = result {
                    failure = Some(("leader_commit_rule", message));
                }
            }
        }
        let durable_applied = node.store.flushed_applied();
        let result = self.checkers.index_monotonicity.on_observe(
            id,
            commit,
            log.applied_index(),
            durable_applied,
        );
        node.observed_commit = commit;
        if let Some((checker, message)) = failure {
            self.fail(checker, message);
        }
        self.check("index_monotonicity", result);
    }

    /// The cluster recovered from its faults: the bounds that hold from
    /// now on start.
    pub(crate) fn on_recovered(&mut self) {
        self.read_liveness.on_recovered(self.now);
        self.held_requests.on_recovered(self.now);
        self.on_leases_recovered();
        let highest_term = self
            .nodes
            .iter()
            .filter_map(|node| node.raft().map(|raft| raft.term().0))
            .max()
            .unwrap_or(0);
        self.term_settling.on_recovered(highest_term);
    }

    pub(crate) fn check_end_of_run(&mut self) {
        self.check_watches_caught_up();
        let result = self.idle_traffic.check();
        self.check("idle_traffic", result);
        let window = self.config.ticks.saturating_sub(self.fault_end);
        if self.liveness.waiting() && window > self.config.liveness_ticks_max {
            self.fail(
                "liveness",
                format!("no command committed in the {window} ticks after faults stopped"),
            );
            return;
        }
        // Members only: a node removed from the cluster keeps whatever its
        // log held when it was cut off, committed or not.
        let membership = self.cluster_membership();
        let final_nodes: Vec<FinalNode<'_>> = self
            .nodes
            .iter()
            .filter(|node| {
                membership
                    .as_ref()
                    .is_none_or(|membership| membership.contains(node.id))
            })
            .filter_map(|node| {
                let raft = node.raft()?;
                Some(FinalNode {
                    id: node.id,
                    applied: raft.log().applied_index(),
                    log: raft.log(),
                })
            })
            .collect();
        let result = self.checkers.durability.check_final(&final_nodes);
        self.check("durability", result);
        if self.violation.is_some() {
            return;
        }
        let history = self.resolved_history();
        self.stats.history_operations = history.len() as u64;
        match linearizability::check(&history, self.config.linearizability_steps_max) {
            Verdict::Linearizable => {}
            Verdict::TooExpensive { key } => {
                self.stats.linearizability_too_expensive = true;
                self.trace.record(self.now, "lin-budget", &[key], || {
                    format!("key {key} too expensive to check")
                });
            }
            Verdict::NotLinearizable { key, operations } => {
                let shown: Vec<String> = operations
                    .iter()
                    .rev()
                    .take(12)
                    .rev()
                    .map(|op| format!("{op:?}"))
                    .collect();
                let message = format!(
                    "history of key {key} ({} operations) is not linearizable; last operations:\n    {}",
                    operations.len(),
                    shown.join("\n    ")
                );
                self.fail("linearizability", message);
            }
        }
    }

    /// The history with unknown outcomes resolved where the simulation
    /// knows them: a command some node executed did happen, no later than
    /// its first execution, with the output that node computed. Commands
    /// no node executed stay unknown (they may still commit later).
    fn resolved_history(&self) -> Vec<Operation> {
        self.history
            .iter()
            .zip(self.history_operation_ids.iter().copied())
            .filter_map(|(operation, operation_id)| {
                let mut operation = (*operation)?;
                if operation.output == Output::Unknown {
                    if let Some(first) = self.first_applies.get(&operation_id) {
                        operation.returned_at = Some(first.stamp);
                        operation.output = history_output(first.output)
                            .expect("only key-value operations are in the history");
                    }
                }
                Some(operation)
            })
            .collect()
    }
}
