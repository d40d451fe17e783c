//! Fault injection: node crashes (the process, or the whole machine with
//! its Postgres), pauses and event-loop stalls (the clock runs on), network
//! partitions, leadership transfers in flight, and Postgres crashing and
//! restarting under a running node; and healing once faults stop.

use raftgres::core::{
    LogIndex, MembershipChange, Message, MessageBody, NodeId, Term, LOG_INDEX_MAX,
};
use raftgres::pipeline::Input;
use rand::Rng;

use crate::checkers::held_requests::HeldRequests;
use crate::checkers::honest_peers::{self, Forged};
use crate::checkers::read_liveness::ReadLiveness;
use crate::checkers::term_settling::TermSettling;
use crate::checkers::transfer_liveness::TransferLiveness;
use crate::network::PartitionKind;
use crate::node::{QueuedInput, SimNode, Waiting};
use crate::profile::HEALED_DELAY_TICKS_MAX;
use crate::store::{Fate, BIGINT_MAX};
use crate::world::World;

impl World {
    pub(crate) fn inject_faults(&mut self) {
        if Self::chance(&mut self.rng.faults, self.profile.crash_per_million) {
            if let Some(target) = self.leader_or_random(|node| node.pipeline.is_some()) {
                self.stats.faults.crashes += 1;
                self.crash(target, "crash");
            }
        }
        if Self::chance(&mut self.rng.faults, self.profile.pause_per_million) {
            if let Some(target) = self.leader_or_random(SimNode::is_running) {
                self.pause(target);
            }
        }
        if Self::chance(
            &mut self.rng.faults,
            self.profile.postgres_crash_per_million,
        ) {
            if let Some(target) = self.leader_or_random(|node| node.pipeline.is_some()) {
                self.postgres_crash(target);
            }
        }
        self.partition_or_heal();
        if Self::chance(&mut self.rng.forgery, self.profile.forged_per_million) {
            self.forge();
        }
        if Self::chance(
            &mut self.rng.membership,
            self.profile.membership_change_per_million,
        ) {
            self.change_membership();
        }
        if Self::chance(&mut self.rng.faults, self.profile.transfer_per_million) {
            if let Some(leader) = self.leader() {
                let target = NodeId(self.rng.faults.gen_range(1..=self.nodes.len() as u64));
                self.stats.faults.transfers += 1;
                self.trace
                    .record(self.now, "transfer", &[leader.0, target.0], || {
                        format!("{leader} -> {target}")
                    });
                let index = leader.0 as usize - 1;
                self.send_request(index, Waiting::Nobody, QueuedInput::Transfer(target));
            }
        }
    }

    /// Asks the leader to change the membership of a node drawn at
    /// random: add it as a learner when it is no member, promote it when
    /// it is a learner, remove it when it votes (the leader included). The
    /// leader refuses what does not fit (a change in flight, the last
    /// voter); those refusals are part of the test too. A spare machine
    /// added starts at once, empty and joining; a removed node added again
    /// comes back with what its store holds.
    fn change_membership(&mut self) {
        let Some(leader) = self.leader() else { return };
        let node = NodeId(self.rng.membership.gen_range(1..=self.nodes.len() as u64));
        let leader_index = leader.0 as usize - 1;
        let Some(raft) = self.nodes[leader_index].raft() else {
            return;
        };
        let change = MembershipChange::next_step(raft.membership(), node);
        let spare = &mut self.nodes[node.0 as usize - 1];
        if spare.is_spare() {
            spare.down_until = Some(self.now);
            self.stats.faults.joins += 1;
            self.trace.record(self.now, "join", &[node.0], || {
                format!("node {node} starts empty, joining")
            });
        }
        self.stats.faults.membership_changes += 1;
        self.trace
            .record(self.now, "membership", &[leader.0, node.0], || {
                format!("{leader}: {change:?}")
            });
        self.send_request(
            leader_index,
            Waiting::MembershipChange,
            QueuedInput::ChangeMembership(change),
        );
    }

    /// Hands a running node a message no honest peer sends: under another
    /// member's name and in the receiver's term, an acknowledgement that
    /// carries a rejection hint, or one for an index beyond any log; or a
    /// campaign for the next term from a node id no cluster can have
    /// (beyond the bigint Postgres keeps node ids in), which a node hears
    /// from outside its membership. The node must drop it and report it
    /// (`honest_peers`).
    fn forge(&mut self) {
        if self.nodes.len() < 2 {
            return;
        }
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|index| self.nodes[*index].is_running())
            .collect();
        if running.is_empty() {
            return;
        }
        let index = running[self.rng.forgery.gen_range(0..running.len())];
        let to = self.nodes[index].id;
        let mut from = NodeId(self.rng.forgery.gen_range(1..self.nodes.len() as u64));
        if from >= to {
            from = NodeId(from.0 + 1);
        }
        let raft = self.nodes[index].raft().expect("running");
        let mut term = raft.term();
        let body = match self.rng.forgery.gen_range(0..3) {
            0 => MessageBody::AppendResponse {
                index: LogIndex(1),
                rejected: false,
                reject_hint_index: LogIndex(1),
                reject_hint_term: Term(0),
            },
            1 => MessageBody::AppendResponse {
                index: LogIndex(LOG_INDEX_MAX.0 + 1),
                rejected: false,
                reject_hint_index: LogIndex(0),
                reject_hint_term: Term(0),
            },
            _ => {
                // A campaign for the next term with a log one entry
                // ahead of the receiver's (as a voter it does not know
                // yet would have), claiming a leadership transfer (which
                // voters grant without waiting out their leader): what an
                // honest candidate sends, but for its id.
                term = term.next();
                from = NodeId(self.rng.forgery.gen_range(BIGINT_MAX + 1..=u64::MAX));
                let log = raft.log();
                MessageBody::VoteRequest {
                    pre_vote: false,
                    last_log_index: log.last_index().next(),
                    last_log_term: log.last_term(),
                    leadership_transfer: true,
                }
            }
        };
        let message = Message {
            from,
            to,
            term,
            body,
        };
        // A message the node does not hear never reaches its core.
        if !self.nodes[index].raft().expect("running").hears(&message) {
            return;
        }
        self.stats.faults.forged += 1;
        self.trace.record(self.now, "forge", &[from.0, to.0], || {
            format!("{message:?}")
        });
        let forged = Forged {
            from,
            term,
            kind: message.body.kind(),
        };
        self.forged_pending = Some((index, forged));
        self.handle(index, Some(Input::Peer(message)));
        let left = self.forged_pending.take();
        let result = honest_peers::check_forged_reported(to, left.map(|(_, forged)| forged));
        self.check("honest_peers", result);
    }

    /// Half the time the leader (when one runs), otherwise a random node
    /// that is `eligible`.
    fn leader_or_random(&mut self, eligible: impl Fn(&SimNode) -> bool) -> Option<usize> {
        let leader = self.leader().filter(|_| self.rng.faults.gen_bool(0.5));
        leader
            .map(|id| id.0 as usize - 1)
            .or_else(|| self.random_node(eligible))
    }

    /// Stops node `index` (a stopped process, a stalled event loop): it
    /// handles nothing until it resumes, while its clock runs on.
    fn pause(&mut self, index: usize) {
        let until = self.now
            + self
                .rng
                .faults
                .gen_range(1..=self.profile.pause_ticks_max.max(1));
        self.nodes[index].paused_until = Some(until);
        self.stats.faults.pauses += 1;
        self.trace
            .record(self.now, "pause", &[index as u64 + 1, until], || {
                format!("node {} until tick {until}", index + 1)
            });
    }

    /// Node `index`'s Postgres crashes and restarts: the transactions in
    /// flight lose their connection (each happened or not, and fails),
    /// asynchronous commits not yet flushed are lost, and statements fail
    /// until it is back.
    fn postgres_crash(&mut self, index: usize) {
        let down = self
            .rng
            .faults
            .gen_range(1..=self.profile.postgres_down_ticks_max.max(1));
        self.postgres_down_until[index] = self.now + down;
        self.stats.faults.postgres_crashes += 1;
        let id = self.nodes[index].id;
        self.trace
            .record(self.now, "postgres-crash", &[id.0, down], || {
                format!("node {id}'s Postgres crashes for {down} ticks")
            });
        if let Some(mut write) = self.nodes[index].write.take() {
            if self.rng.disk.gen_bool(0.5) && self.commit_write(index, &write.job).is_none() {
                return;
            }
            write.fate = Fate::Fail;
            self.nodes[index].write = Some(write);
        }
        if let Some(mut apply) = self.nodes[index].apply.take() {
            let settings = self.apply_settings;
            if self.rng.disk.gen_bool(0.5)
                && self.commit_apply(index, &apply.job, settings).is_none()
            {
                return;
            }
            apply.fate = Fate::Fail;
            self.nodes[index].apply = Some(apply);
        }
        if let Some(mut stage) = self.nodes[index].stage.take() {
            if self.rng.disk.gen_bool(0.5) {
                self.nodes[index].store.stage(&stage.job);
            }
            stage.fate = Fate::Fail;
            self.nodes[index].stage = Some(stage);
        }
        // The views' connections die with the server.
        let node = &mut self.nodes[index];
        let lost = std::mem::take(&mut node.views);
        let now = self.now;
        node.view_answers.extend(
            lost.into_keys()
                .map(|view| (now + 1, Input::ViewLost { view })),
        );
        self.lose_unflushed(index);
    }

    fn partition_or_heal(&mut self) {
        let now = self.now;
        let isolate_reading_leader =
            self.partition_until.is_none() && self.leader_is_reading() && {
                let rate = self.profile.isolate_reading_leader_per_million;
                Self::chance(&mut self.rng.faults, rate)
            };
        match self.partition_until {
            Some(until) if now >= until => self.heal_network(),
            None if isolate_reading_leader
                || Self::chance(&mut self.rng.faults, self.profile.partition_per_million) =>
            {
                let kinds = [
                    PartitionKind::Symmetric,
                    PartitionKind::OneWay,
                    PartitionKind::Bridge,
                    PartitionKind::IsolateLeader,
                ];
                let kind = if isolate_reading_leader {
                    PartitionKind::IsolateLeader
                } else {
                    kinds[self.rng.faults.gen_range(0..kinds.len())]
                };
                if kind == PartitionKind::Bridge && self.nodes.len() < 3 {
                    return;
                }
                let ticks_max = if isolate_reading_leader {
                    self.profile.isolate_ticks_max
                } else {
                    self.profile.partition_ticks_max
                };
                self.start_partition(kind, self.leader(), ticks_max);
            }
            _ => {}
        }
    }

    /// Cuts links into a partition of `kind` around `leader` for up to
    /// `ticks_max` ticks.
    fn start_partition(&mut self, kind: PartitionKind, leader: Option<NodeId>, ticks_max: u64) {
        let now = self.now;
        let description = self.network.partition(kind, leader, &mut self.rng.faults);
        self.partition_until = Some(now + self.rng.faults.gen_range(1..=ticks_max.max(1)));
        self.stats.faults.partitions[kind as usize] += 1;
        self.trace
            .record(now, "partition", &[kind as u64], || description);
    }

    /// A TimeoutNow from `leader` reaches its target: now and then, while
    /// no partition is active and `leader` still leads, it stops hearing
    /// anyone, the moment a leader that serves lease reads after handing
    /// over gives stale ones (its target wins and commits; it never hears
    /// of it). A TimeoutNow that arrives after the transfer was given up
    /// (see `FaultProfile::slow_kind`) is the dangerous one.
    pub(crate) fn maybe_deafen_after_timeout_now(&mut self, leader: NodeId) {
        let rate = self.profile.deafen_after_timeout_now_per_million;
        if self.now < self.fault_end
            && self.nodes[leader.0 as usize - 1].is_leader()
            && self.partition_until.is_none()
            && Self::chance(&mut self.rng.faults, rate)
        {
            let ticks_max = self.profile.isolate_ticks_max;
            self.start_partition(PartitionKind::DeafenLeader, Some(leader), ticks_max);
        }
    }

    /// Whether a client read waits at the leader.
    fn leader_is_reading(&self) -> bool {
        let Some(leader) = self.leader() else {
            return false;
        };
        self.clients
            .iter()
            .any(|client| client.reading_at(leader.0 as usize - 1))
    }

    fn random_node(&mut self, eligible: impl Fn(&SimNode) -> bool) -> Option<usize> {
        let candidates: Vec<usize> = (0..self.nodes.len())
            .filter(|index| eligible(&self.nodes[*index]))
            .collect();
        (!candidates.is_empty()).then(|| candidates[self.rng.faults.gen_range(0..candidates.len())])
    }

    fn heal_network(&mut self) {
        self.partition_until = None;
        if self.network.is_partitioned() {
            self.network.heal();
            self.trace
                .record(self.now, "heal", &[], || "network".to_string());
        }
    }

    pub(crate) fn heal_all(&mut self) {
        self.profile = self.original_profile.healed();
        self.heal_network();
        self.network
            .deliver_held_by(self.now + HEALED_DELAY_TICKS_MAX);
        for down_until in &mut self.postgres_down_until {
            *down_until = 0;
        }
        for node in &mut self.nodes {
            node.tick_rate_permille = 1000;
            if node.paused_until.is_some() {
                node.paused_until = Some(self.now);
            }
            for fate in [
                node.write.as_mut().map(|write| &mut write.fate),
                node.apply.as_mut().map(|apply| &mut apply.fate),
            ]
            .into_iter()
            .flatten()
            {
                *fate = Fate::Commit;
            }
            if node.pipeline.is_none() && !node.is_spare() {
                node.down_until = Some(self.now);
            }
        }
        self.liveness.on_heal(self.now);
        self.next_probe_at = self.now;
        self.trace
            .record(self.now, "heal", &[1], || "faults stop".to_string());
    }

    /// Crashes node `index` and keeps it down for `down_ticks`.
    /// A crash by hand is a fault after healing: the bounds that hold
    /// only on a recovered, fault-free cluster (read liveness, settled
    /// terms) stop applying.
    pub fn crash_for(&mut self, index: usize, down_ticks: u64) {
        self.read_liveness = ReadLiveness::new(self.config.read_ticks_max);
        self.term_settling = TermSettling::new(self.config.new_terms_after_recovery_max);
        self.held_requests = HeldRequests::new(self.config.held_request_ticks_max);
        self.transfer_liveness = TransferLiveness::new(0, false);
        self.transfer_asked = true;
        self.crash(index, "crash");
        self.nodes[index].down_until = Some(self.now + down_ticks);
    }
}
