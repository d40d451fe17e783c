//! One simulated run: the cluster, its network and disks, the clients, the
//! fault injector and the checkers, advanced tick by tick. Every random
//! choice comes from a ChaCha stream derived from the seed (one stream per
//! component, so that adding a draw in one component does not shift the
//! others), and every collection whose order reaches behaviour is ordered.
//!
//! Each tick, in this order: faults (or healing), resumed pauses, disk
//! completions (then `persisted` and the messages that waited on them),
//! message deliveries, clock ticks, client requests, the liveness probe.
//! After every input to a core the driver takes its `Ready`s until none is
//! left, honouring the obligations in `raftgres::core`'s documentation, and
//! reports what changed to the checkers.

use std::collections::HashMap;

use raftgres::core::{
    Entry, LogIndex, Message, MessageBody, NodeId, ProposeError, ReadError, Ready, Role, Snapshot,
    SnapshotMeta,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::checkers::apply_after_durable;
use crate::checkers::durability::{AcknowledgedWrite, Durability, FinalNode};
use crate::checkers::election_safety::ElectionSafety;
use crate::checkers::honest_peers;
use crate::checkers::index_monotonicity::IndexMonotonicity;
use crate::checkers::leader_commit_rule;
use crate::checkers::leader_completeness::LeaderCompleteness;
use crate::checkers::linearizability::{self, Input, Operation, Output, Verdict};
use crate::checkers::liveness::Liveness;
use crate::checkers::log_matching::LogMatching;
use crate::checkers::read_index_safety;
use crate::checkers::read_liveness::ReadLiveness;
use crate::checkers::single_vote::SingleVote;
use crate::checkers::stale_reads::StaleReads;
use crate::checkers::state_machine_safety::StateMachineSafety;
use crate::checkers::term_settling::TermSettling;
use crate::checkers::Violation;
use crate::config::SimConfig;
use crate::disk::{Completion, Write};
use crate::kv::{self, Command, CommandOutput};
use crate::network::{Network, PartitionKind, SendFate};
use crate::node::SimNode;
use crate::profile::FaultProfile;
use crate::stats::RunStats;
use crate::trace::Trace;

/// Operation ids at or above this are liveness probes, not client requests.
const PROBE_OPERATION_BASE: u64 = 1 << 62;

/// The random streams of one run.
struct Streams {
    network: ChaCha8Rng,
    disk: ChaCha8Rng,
    faults: ChaCha8Rng,
    clients: ChaCha8Rng,
    cores: ChaCha8Rng,
}

/// The stream `stream` of `seed`'s generator.
pub fn rng_stream(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

#[derive(Debug)]
struct Client {
    leader_hint: Option<NodeId>,
    /// The request being worked on: operation id, key, input, and its
    /// position in the history once a node accepted it.
    request: Option<Request>,
    next_attempt_at: u64,
}

#[derive(Clone, Copy, Debug)]
struct Request {
    operation_id: u64,
    key: u64,
    input: Input,
    /// How a get is served (ignored for writes).
    read_mode: ReadMode,
    accepted: Option<Accepted>,
}

/// The ways a client reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadMode {
    /// `read_index`: confirmed by a heartbeat round (section 8).
    ReadIndex,
    /// A leader lease when the leader holds one (`lease_read_index`),
    /// otherwise `read_index`, as a production client library does.
    Lease,
    /// Served at once from whatever node is asked, without confirmation:
    /// may be stale, is not part of the linearizable history.
    Stale,
}

#[derive(Clone, Copy, Debug)]
struct Accepted {
    history_position: usize,
    node: usize,
    at_tick: u64,
    /// The highest commit index any node had reached when the request was
    /// accepted (for `read_index_safety`).
    committed_at_invocation: LogIndex,
}

/// What the first node to apply a client command computed, and when.
#[derive(Clone, Copy, Debug)]
struct FirstApply {
    stamp: u64,
    output: CommandOutput,
}

/// How a run ended.
#[derive(Debug)]
pub struct RunOutcome {
    /// The seed.
    pub seed: u64,
    /// Counters.
    pub stats: RunStats,
    /// The first property that failed, if any.
    pub violation: Option<Violation>,
    /// Hash of the full event trace.
    pub trace_hash: u64,
    /// The readable trace, with `--trace`.
    pub trace_text: Option<String>,
}

/// A simulated cluster and everything around it.
pub struct World {
    config: SimConfig,
    seed: u64,
    profile: FaultProfile,
    original_profile: FaultProfile,
    now: u64,
    fault_end: u64,
    nodes: Vec<SimNode>,
    network: Network,
    rng: Streams,
    trace: Trace,
    clients: Vec<Client>,
    history: Vec<Option<Operation>>,
    /// The operation id of each `history` entry.
    history_operation_ids: Vec<u64>,
    first_applies: HashMap<u64, FirstApply>,
    stamp: u64,
    next_operation_id: u64,
    next_value: u64,
    next_probe_at: u64,
    /// Nodes that applied each liveness probe.
    probe_appliers: std::collections::BTreeMap<u64, std::collections::BTreeSet<NodeId>>,
    partition_until: Option<u64>,
    /// The highest commit index any node has reached: every entry up to it
    /// is committed for good.
    commit_index_max: LogIndex,
    election_safety: ElectionSafety,
    log_matching: LogMatching,
    leader_completeness: LeaderCompleteness,
    state_machine_safety: StateMachineSafety,
    index_monotonicity: IndexMonotonicity,
    durability: Durability,
    liveness: Liveness,
    single_vote: SingleVote,
    read_liveness: ReadLiveness,
    term_settling: TermSettling,
    stale_reads: StaleReads,
    /// The first violation; the run stops at it.
    pub violation: Option<Violation>,
    /// Counters.
    pub stats: RunStats,
}

impl World {
    /// A cluster of fresh nodes for `seed`. Panics on an unknown profile
    /// name (the command line checks names first).
    pub fn new(config: SimConfig, seed: u64) -> World {
        let mut profile_rng = rng_stream(seed, 6);
        let profile = FaultProfile::resolve(&config.faults, &mut profile_rng)
            .unwrap_or_else(|| panic!("unknown fault profile {:?}", config.faults));
        let config = match profile.core {
            Some(drawn) => config.with_core_settings(drawn),
            None => config,
        };
        let config = match profile.workload {
            Some(drawn) => config.with_workload_settings(drawn),
            None => config,
        };
        let mut rng = Streams {
            network: rng_stream(seed, 1),
            disk: rng_stream(seed, 2),
            faults: rng_stream(seed, 3),
            clients: rng_stream(seed, 4),
            cores: rng_stream(seed, 5),
        };
        let mut nodes: Vec<SimNode> = (1..=config.nodes as u64)
            .map(|id| SimNode::new(NodeId(id)))
            .collect();
        for node in &mut nodes {
            let drift = profile.clock_drift_permille_max;
            node.tick_rate_permille = if drift == 0 {
                1000
            } else {
                rng.faults.gen_range(1000 - drift..=1000 + drift)
            };
            node.start(&config, rng.cores.gen());
        }
        let clients = (0..config.clients)
            .map(|_| Client {
                leader_hint: None,
                request: None,
                next_attempt_at: 0,
            })
            .collect();
        World {
            read_liveness: ReadLiveness::new(config.read_ticks_max),
            term_settling: TermSettling::new(config.new_terms_after_recovery_max),
            fault_end: config.fault_end_tick(),
            network: Self::network(&config),
            trace: Trace::new(config.trace),
            liveness: Liveness::new(config.liveness_ticks_max),
            original_profile: profile.clone(),
            profile,
            config,
            seed,
            now: 0,
            nodes,
            rng,
            clients,
            history: Vec::new(),
            history_operation_ids: Vec::new(),
            first_applies: HashMap::new(),
            stamp: 0,
            next_operation_id: 1,
            next_value: 1,
            next_probe_at: 0,
            probe_appliers: std::collections::BTreeMap::new(),
            partition_until: None,
            commit_index_max: LogIndex(0),
            election_safety: ElectionSafety::default(),
            log_matching: LogMatching::default(),
            leader_completeness: LeaderCompleteness::default(),
            state_machine_safety: StateMachineSafety::default(),
            index_monotonicity: IndexMonotonicity::default(),
            durability: Durability::default(),
            single_vote: SingleVote::default(),

            stale_reads: StaleReads::default(),
            violation: None,
            stats: RunStats::default(),
        }
    }

    /// The network, with its planted bug if the run plants one there.
    fn network(config: &SimConfig) -> Network {
        #[allow(unused_mut)]
        let mut network = Network::new(config.nodes);
        #[cfg(feature = "planted-bugs")]
        if config.planted_bug.as_deref() == Some(raftgres::core::PlantedBug::PeerLinkGivesUp.name())
        {
            network.plant_link_gives_up();
        }
        network
    }

    /// Runs every tick, then the end-of-run checks.
    ///
    /// A panic inside the run (the core's invariant assertions name node,
    /// term and index) is caught and reported as a violation of the seed,
    /// keeping the trace up to that point.
    pub fn run(mut self) -> RunOutcome {
        let settings = format!(
            "mix {:?} pre-vote {} check-quorum {} entries/message {} election {}-{} drift {} \
             clients {} timeout {}",
            self.profile.mix,
            self.config.pre_vote,
            self.config.check_quorum,
            self.config.entries_per_message_max,
            self.config.election_ticks_min,
            self.config.election_ticks_max,
            self.profile.clock_drift_permille_max,
            self.config.clients,
            self.config.client_timeout_ticks
        );
        self.trace.record(0, "settings", &[], || settings);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            while self.now < self.config.ticks && self.violation.is_none() {
                self.step_tick();
            }
            if self.violation.is_none() {
                self.check_end_of_run();
            }
        }));
        if let Err(payload) = result {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|text| text.to_string()))
                .unwrap_or_else(|| "a panic without a message".to_string());
            self.fail("core_invariant", format!("panicked: {message}"));
        }
        self.finish()
    }

    /// The current tick.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// The running leader with the highest term, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter(|node| node.is_leader())
            .max_by_key(|node| node.raft.as_ref().map(|raft| raft.term()))
            .map(|node| node.id)
    }

    /// Stops fault injection from now on (election measurements use this
    /// to crash the leader by hand on a quiet cluster).
    pub fn disable_faults(&mut self) {
        self.fault_end = self.now;
        self.profile = self.original_profile.healed();
    }

    fn finish(mut self) -> RunOutcome {
        self.stats.ticks = self.now;
        self.stats.elections = self.election_safety.elections() as u64;
        self.stats.acknowledged_writes = self.durability.acknowledged() as u64;
        self.stats.recovery_ticks = self.liveness.recovery_ticks();
        self.stats.trace_events = self.trace.events();
        RunOutcome {
            seed: self.seed,
            violation: self.violation,
            trace_hash: self.trace.hash(),
            trace_text: self.trace.take_text(),
            stats: self.stats,
        }
    }

    fn fail(&mut self, checker: &'static str, message: String) {
        if self.violation.is_none() {
            let now = self.now;
            self.trace
                .record(now, "VIOLATION", &[], || format!("{checker}: {message}"));
            self.violation = Some(Violation {
                checker,
                tick: now,
                message,
            });
        }
    }

    fn check(&mut self, checker: &'static str, result: Result<(), String>) {
        if let Err(message) = result {
            self.fail(checker, message);
        }
    }

    fn next_stamp(&mut self) -> u64 {
        self.stamp += 1;
        self.stamp
    }

    /// Advances the world by one tick.
    pub fn step_tick(&mut self) {
        if self.now == self.fault_end {
            self.heal_all();
        } else if self.now < self.fault_end {
            self.inject_faults();
        }
        self.restart_due_nodes();
        self.resume_due_nodes();
        let nodes = &self.nodes;
        self.network
            .connect_due(self.now, |id| nodes[id.0 as usize - 1].raft.is_some());
        for index in 0..self.nodes.len() {
            self.complete_writes(index);
        }
        self.deliver_messages();
        for index in 0..self.nodes.len() {
            self.tick_node(index);
        }
        self.run_clients();
        self.run_liveness_probe();
        self.now += 1;
    }

    fn tick_node(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        if !node.is_running() {
            return;
        }
        node.tick_phase_permille += node.tick_rate_permille;
        let raft = node.raft.as_mut().expect("running");
        let mut ticked = false;
        while node.tick_phase_permille >= 1000 {
            node.tick_phase_permille -= 1000;
            raft.tick();
            ticked = true;
        }
        if ticked {
            self.stats.steps += 1;
            self.drive(index);
        }
    }

    // ----- faults -------------------------------------------------------

    fn chance(rng: &mut ChaCha8Rng, per_million: u32) -> bool {
        per_million > 0 && rng.gen_range(0..1_000_000) < per_million
    }

    fn inject_faults(&mut self) {
        let now = self.now;
        if Self::chance(&mut self.rng.faults, self.profile.crash_per_million) {
            let leader = self.leader().filter(|_| self.rng.faults.gen_bool(0.5));
            let target = leader
                .map(|id| id.0 as usize - 1)
                .or_else(|| self.random_node(|node| node.raft.is_some()));
            if let Some(target) = target {
                self.stats.faults.crashes += 1;
                self.crash(target, "crash");
            }
        }
        if Self::chance(&mut self.rng.faults, self.profile.pause_per_million) {
            if let Some(target) = self.random_node(SimNode::is_running) {
                let until = now
                    + self
                        .rng
                        .faults
                        .gen_range(1..=self.profile.pause_ticks_max.max(1));
                self.nodes[target].paused_until = Some(until);
                self.stats.faults.pauses += 1;
                self.trace
                    .record(now, "pause", &[target as u64 + 1, until], || {
                        format!("node {} until tick {until}", target + 1)
                    });
            }
        }
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
                let bridge_impossible = kind == PartitionKind::Bridge && self.nodes.len() < 3;
                if !bridge_impossible {
                    let leader = self.leader();
                    let description =
                        self.network
                            .partition(now, kind, leader, &mut self.rng.faults);
                    let ticks_max = if isolate_reading_leader {
                        self.profile.isolate_ticks_max
                    } else {
                        self.profile.partition_ticks_max
                    };
                    self.partition_until =
                        Some(now + self.rng.faults.gen_range(1..=ticks_max.max(1)));
                    self.stats.faults.partitions[kind as usize] += 1;
                    self.trace
                        .record(now, "partition", &[kind as u64], || description);
                }
            }
            _ => {}
        }
        if Self::chance(&mut self.rng.faults, self.profile.transfer_per_million) {
            if let Some(leader) = self.leader() {
                let target = NodeId(self.rng.faults.gen_range(1..=self.nodes.len() as u64));
                let index = leader.0 as usize - 1;
                let raft = self.nodes[index].raft.as_mut().expect("leader runs");
                if raft.transfer_leadership(target).is_ok() {
                    self.stats.faults.transfers += 1;
                    self.trace
                        .record(now, "transfer", &[leader.0, target.0], || {
                            format!("{leader} -> {target}")
                        });
                    self.drive(index);
                }
            }
        }
    }

    /// Whether the leader has client reads in flight.
    fn leader_is_reading(&self) -> bool {
        self.leader()
            .is_some_and(|leader| !self.nodes[leader.0 as usize - 1].pending_reads.is_empty())
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
            self.network.heal(self.now);
            self.trace
                .record(self.now, "heal", &[], || "network".to_string());
        }
    }

    fn heal_all(&mut self) {
        self.profile = self.original_profile.healed();
        self.heal_network();
        for node in &mut self.nodes {
            node.tick_rate_permille = 1000;
            node.paused_until = None;
            node.disk.clear_failures();
            if node.raft.is_none() {
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
        self.crash(index, "crash");
        self.nodes[index].down_until = Some(self.now + down_ticks);
    }

    /// Crashes node `index`: volatile state is lost and a random prefix of
    /// its in-flight writes reaches the disk.
    fn crash(&mut self, index: usize, reason: &'static str) {
        let node = &mut self.nodes[index];
        let in_flight = node.disk.in_flight();
        let kept = self.rng.disk.gen_range(0..=in_flight);
        node.disk.crash(kept);
        node.raft = None;
        let id = node.id;
        self.network.node_crashed(self.now, id);
        let node = &mut self.nodes[index];
        node.paused_until = None;
        let down_ticks_max = self.profile.down_ticks_max.max(1);
        node.down_until = Some(self.now + self.rng.faults.gen_range(1..=down_ticks_max));
        node.pending_proposals.clear();
        node.pending_reads.clear();
        node.pending_lease_reads.clear();
        let now = self.now;
        self.trace.record(
            now,
            reason,
            &[index as u64 + 1, kept as u64, in_flight as u64],
            || {
                format!(
                    "node {} (kept {kept} of {in_flight} in-flight writes)",
                    index + 1
                )
            },
        );
        // The clients waiting on this node give up: their writes' outcome is
        // unknown, their reads never happened.
        for client in 0..self.clients.len() {
            let waiting_here = self.clients[client]
                .request
                .and_then(|request| request.accepted)
                .is_some_and(|accepted| accepted.node == index);
            if waiting_here {
                self.abandon_request(client);
            }
        }
    }

    fn restart_due_nodes(&mut self) {
        for index in 0..self.nodes.len() {
            let due = self.nodes[index]
                .down_until
                .is_some_and(|until| until <= self.now);
            if due {
                let seed = self.rng.cores.gen();
                let node = &mut self.nodes[index];
                node.start(&self.config, seed);
                let id = node.id;
                self.network.node_started(self.now, id);
                let node = &mut self.nodes[index];
                let applied = node.kv.applied_index();
                let id = node.id;
                self.stats.faults.restarts += 1;
                self.trace
                    .record(self.now, "restart", &[id.0, applied.0], || {
                        format!("node {id} applied {applied}")
                    });
                let result = self.index_monotonicity.on_restart(id, applied);
                self.check("index_monotonicity", result);
                let hard_state = self.nodes[index].disk.durable.hard_state;
                let result = self
                    .single_vote
                    .on_observe(id, hard_state.term, hard_state.voted_for);
                self.check("single_vote", result);
            }
        }
    }

    fn resume_due_nodes(&mut self) {
        for node in &mut self.nodes {
            if node.paused_until.is_some_and(|until| until <= self.now) {
                node.paused_until = None;
            }
        }
    }

    // ----- disk and network --------------------------------------------

    fn complete_writes(&mut self, index: usize) {
        if !self.nodes[index].is_running() {
            return;
        }
        let mut completed = false;
        while let Some(completion) = self.nodes[index].disk.poll(self.now) {
            match completion {
                Completion::Durable(write) => {
                    completed = true;
                    let node = &mut self.nodes[index];
                    let id = node.id;
                    if let Some(hard_state) = write.hard_state {
                        if let Some(candidate) = hard_state.voted_for {
                            let result = self.single_vote.on_vote(id, hard_state.term, candidate);
                            self.check("single_vote", result);
                        }
                    }
                    let node = &mut self.nodes[index];
                    let raft = node.raft.as_mut().expect("running");
                    if let Some((last_index, last_term)) = write.persist_point {
                        raft.persisted(last_index, last_term);
                        self.stats.steps += 1;
                    }
                    self.trace.record(
                        self.now,
                        "durable",
                        &[id.0, write.persist_point.map_or(0, |point| point.0 .0)],
                        || {
                            format!(
                                "node {id} through {:?} hard state {:?}",
                                write.persist_point, write.hard_state
                            )
                        },
                    );
                    for message in write.messages_after_persist {
                        self.send(message);
                    }
                }
                Completion::Failed => {
                    // The node must not acknowledge anything after a failed
                    // write: it halts until restarted from durable state.
                    self.stats.faults.disk_errors += 1;
                    self.crash(index, "disk-error");
                    return;
                }
            }
        }
        if completed {
            self.drive(index);
        }
    }

    fn send(&mut self, message: Message) {
        let now = self.now;
        let words = [
            message.from.0,
            message.to.0,
            message.term.0,
            message_kind_code(&message.body),
        ];
        self.trace.record(now, "send", &words, || {
            format!(
                "{} -> {} {} term {}",
                message.from,
                message.to,
                describe(&message.body),
                message.term
            )
        });
        self.stats.messages_sent += 1;
        if let MessageBody::VoteResponse {
            pre_vote: false,
            granted: true,
        } = message.body
        {
            let result = self
                .single_vote
                .on_vote(message.from, message.term, message.to);
            self.check("single_vote", result);
        }
        match self
            .network
            .send(now, message, &self.profile, &mut self.rng.network)
        {
            SendFate::Lost => self.stats.faults.messages_lost += 1,
            SendFate::Duplicated => self.stats.faults.messages_duplicated += 1,
            SendFate::NotConnected => self.stats.faults.messages_unconnected += 1,
            SendFate::Sent => {}
        }
    }

    fn deliver_messages(&mut self) {
        while let Some(due) = self.network.pop_due(self.now) {
            let message = match due {
                Ok(message) => message,
                Err(_) => {
                    self.stats.faults.messages_partitioned += 1;
                    continue;
                }
            };
            let index = message.to.0 as usize - 1;
            let node = &mut self.nodes[index];
            if let Some(until) = node.paused_until {
                self.network.enqueue(until, message);
                continue;
            }
            let Some(raft) = node.raft.as_mut() else {
                continue;
            };
            raft.step(message);
            self.stats.steps += 1;
            self.drive(index);
            if self.violation.is_some() {
                return;
            }
        }
    }

    // ----- the driver ---------------------------------------------------

    /// Takes and handles every `Ready` of node `index`, then reports to the
    /// checkers.
    fn drive(&mut self, index: usize) {
        loop {
            let Some(raft) = self.nodes[index].raft.as_mut() else {
                return;
            };
            if !raft.has_ready() {
                break;
            }
            let ready = raft.ready();
            self.handle_ready(index, ready);
            if self.violation.is_some() {
                return;
            }
        }
        let node = &mut self.nodes[index];
        if let Some(raft) = node.raft.as_mut() {
            let reports = raft.take_implausible();
            let result = honest_peers::check_reports(node.id, &reports);
            self.check("honest_peers", result);
        }
        self.serve_lease_reads(index);
        self.observe(index);
    }

    fn handle_ready(&mut self, index: usize, ready: Ready) {
        let Ready {
            hard_state,
            snapshot,
            entries,
            messages,
            messages_after_persist,
            committed_entries,
            reads,
            reads_dropped,
        } = ready;
        // 1. Messages that may go now.
        let sent_any = !messages.is_empty();
        for message in messages {
            match self.attach_snapshot(index, message) {
                Ok(message) => self.send(message),
                Err(error) => return self.fail("driver", error),
            }
        }
        if sent_any
            && self.now < self.fault_end
            && Self::chance(
                &mut self.rng.faults,
                self.profile.crash_after_send_per_million,
            )
        {
            // The node dies before anything else of this Ready happens.
            self.stats.faults.crashes += 1;
            return self.crash(index, "crash");
        }
        let node = &mut self.nodes[index];
        let id = node.id;
        // Log matching is checked on what the node writes to its log.
        if let Some(first) = entries.first() {
            let raft = node.raft.as_ref().expect("running");
            let previous_term = raft.log().term_at(first.index.prev());
            let Some(previous_term) = previous_term else {
                return self.fail(
                    "log_matching",
                    format!("node {id} wrote index {} after a hole", first.index),
                );
            };
            let result = self.log_matching.on_append(id, previous_term, &entries);
            self.check("log_matching", result);
        }
        // 2. The snapshot replaces the state machine before anything else.
        let node = &mut self.nodes[index];
        if let Some(snapshot) = &snapshot {
            node.kv = kv::KvStore::from_bytes(&snapshot.data);
            node.snapshot = snapshot.clone();
            self.stats.snapshots_installed += 1;
            let meta = snapshot.meta;
            self.trace.record(
                self.now,
                "install",
                &[id.0, meta.index.0, meta.term.0],
                || {
                    format!(
                        "node {id} snapshot through {} term {}",
                        meta.index, meta.term
                    )
                },
            );
            let result = self.state_machine_safety.on_snapshot(id, meta);
            self.check("state_machine_safety", result);
        }
        // 3. One atomic write; its acknowledgements wait for it.
        let needs_persist = hard_state.is_some() || snapshot.is_some() || !entries.is_empty();
        if needs_persist || !messages_after_persist.is_empty() {
            let mut latency = self
                .rng
                .disk
                .gen_range(1..=self.profile.disk_latency_ticks_max);
            if Self::chance(&mut self.rng.disk, self.profile.disk_slow_per_million) {
                latency += self
                    .rng
                    .disk
                    .gen_range(0..=self.profile.disk_slow_ticks_max);
            }
            let fails = needs_persist
                && Self::chance(&mut self.rng.disk, self.profile.disk_error_per_million);
            let persist_point = entries
                .last()
                .map(|last| (last.index, last.term))
                .or(snapshot
                    .as_ref()
                    .map(|snapshot| (snapshot.meta.index, snapshot.meta.term)));
            let write = Write {
                complete_at: self.now + latency,
                snapshot,
                entries,
                hard_state,
                persist_point,
                messages_after_persist,
                fails,
            };
            self.nodes[index].disk.submit(write);
        }
        // 4. Apply, then tell the core.
        if let Some(last) = committed_entries.last().map(|entry| entry.index) {
            for entry in &committed_entries {
                self.apply(index, entry);
            }
            let raft = self.nodes[index].raft.as_mut().expect("running");
            raft.applied(last);
            self.maybe_compact(index);
        }
        // 5. Reads.
        for read in reads {
            self.serve_read(index, read.context, read.index);
        }
        for context in reads_dropped {
            self.drop_read(index, context);
        }
    }

    fn attach_snapshot(&self, index: usize, mut message: Message) -> Result<Message, String> {
        if let MessageBody::InstallSnapshot { snapshot } = &mut message.body {
            let held = &self.nodes[index].snapshot;
            if held.meta != snapshot.meta {
                return Err(format!(
                    "node {} asked to send snapshot {:?} but holds {:?}",
                    index + 1,
                    snapshot.meta,
                    held.meta
                ));
            }
            snapshot.data = held.data.clone();
        }
        Ok(message)
    }

    fn apply(&mut self, index: usize, entry: &Entry) {
        let node = &mut self.nodes[index];
        let id = node.id;
        let durable_check =
            apply_after_durable::check_apply(id, entry.index, entry.term, &node.disk.durable);
        self.check("apply_after_durable", durable_check);
        let node = &mut self.nodes[index];
        let result = node.kv.apply(entry);
        node.disk.durable.state_machine.apply(entry);
        let proposal = node.pending_proposals.remove(&entry.index);
        let applied_result = self.state_machine_safety.on_apply(id, entry);
        self.check("state_machine_safety", applied_result);
        let mut applied_operation = None;
        if let Some((operation_id, output)) = result {
            applied_operation = Some(operation_id);
            if operation_id >= PROBE_OPERATION_BASE {
                // Recovered only once every running node applied the probe:
                // a follower whose replication stalled fails liveness too.
                let appliers = self.probe_appliers.entry(operation_id).or_default();
                appliers.insert(id);
                let appliers_count = appliers.len();
                let running = self.nodes.iter().filter(|node| node.raft.is_some()).count();
                if appliers_count >= running {
                    self.liveness.on_probe_committed(self.now);
                    self.on_recovered();
                }
            } else if !self.first_applies.contains_key(&operation_id) {
                let stamp = self.next_stamp();
                self.first_applies
                    .insert(operation_id, FirstApply { stamp, output });
            }
            if proposal == Some(operation_id) {
                self.answer_write(operation_id, output, entry);
            }
        }
        if let Some(lost) = proposal.filter(|lost| Some(*lost) != applied_operation) {
            // Another entry took the proposal's index: it can never commit.
            self.answer_write_failed(lost);
        }
    }

    fn maybe_compact(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        let raft = node.raft.as_mut().expect("running");
        let applied = raft.log().applied_index();
        let snapshot_index = raft.log().snapshot().index;
        if applied.0 - snapshot_index.0 < self.profile.compaction_entries
            || applied != node.kv.applied_index()
        {
            return;
        }
        let term = raft
            .log()
            .term_at(applied)
            .expect("applied entries are in the log");
        let meta = SnapshotMeta {
            index: applied,
            term,
        };
        let data = node.kv.to_bytes();
        node.disk.durable.compact(meta, data.clone());
        node.snapshot = Snapshot { meta, data };
        raft.compact(applied);
        self.stats.compactions += 1;
    }

    /// Reports node `index`'s role, term and indexes to the checkers.
    fn observe(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        let Some(raft) = node.raft.as_ref() else {
            return;
        };
        let id = node.id;
        let (role, term) = (raft.role(), raft.term());
        if (role, term) != (node.observed_role, node.observed_term) {
            node.observed_role = role;
            node.observed_term = term;
            self.trace
                .record(self.now, "role", &[id.0, role as u64, term.0], || {
                    format!("node {id} {role} term {term}")
                });
            if role == Role::Leader {
                match self.election_safety.on_leader(id, term) {
                    Ok(_) => {
                        let result = self.leader_completeness.on_leader(id, term, raft.log());
                        self.check("leader_completeness", result);
                    }
                    Err(message) => self.fail("election_safety", message),
                }
            }
        }
        let voted_for = self.nodes[index]
            .raft
            .as_ref()
            .expect("running")
            .hard_state()
            .voted_for;
        let result = self.single_vote.on_observe(id, term, voted_for);
        self.check("single_vote", result);
        let result = self.term_settling.on_term(id.0, term.0, self.now);
        self.check("term_settling", result);
        let node = &mut self.nodes[index];
        let raft = node.raft.as_ref().expect("running");
        let log = raft.log();
        let commit = log.commit_index();
        let mut failure = None;
        if commit > node.observed_commit {
            let first = node.observed_commit.0.max(log.snapshot().index.0) + 1;
            for position in first..=commit.0 {
                let entry_term = log
                    .term_at(LogIndex(position))
                    .expect("committed entries after the snapshot are held");
                let result =
                    self.leader_completeness
                        .on_commit(id, term, LogIndex(position), entry_term);
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
        let durable_applied = node.disk.durable.state_machine.applied_index();
        let result =
            self.index_monotonicity
                .on_observe(id, commit, log.applied_index(), durable_applied);
        node.observed_commit = commit;
        if let Some((checker, message)) = failure {
            self.fail(checker, message);
        }
        self.check("index_monotonicity", result);
    }

    // ----- clients ------------------------------------------------------

    fn run_clients(&mut self) {
        for client in 0..self.clients.len() {
            if let Some(accepted) = self.clients[client]
                .request
                .and_then(|request| request.accepted)
            {
                if self.now - accepted.at_tick > self.config.client_timeout_ticks {
                    self.stats.client_timeouts += 1;
                    self.abandon_request(client);
                }
                continue;
            }
            if self.now >= self.clients[client].next_attempt_at {
                self.attempt_request(client);
            }
        }
    }

    fn new_request(&mut self, client: usize) -> Request {
        let operation_id = self.next_operation_id;
        self.next_operation_id += 1;
        let rng = &mut self.rng.clients;
        let key = rng.gen_range(0..self.config.keys);
        let mut read_mode = ReadMode::ReadIndex;
        let input = match rng.gen_range(0..10) {
            0..=3 => {
                self.next_value += 1;
                Input::Put {
                    value: self.next_value,
                }
            }
            4..=7 => {
                read_mode = match rng.gen_range(0..10) {
                    0..=3 => ReadMode::ReadIndex,
                    4..=7 => ReadMode::Lease,
                    _ => ReadMode::Stale,
                };
                self.read_liveness.on_read_started(client as u64, self.now);
                Input::Get
            }
            _ => {
                // Expect a value that is likely current: one of the last few
                // written, or absent.
                let expected = self.next_value.saturating_sub(rng.gen_range(0..4));
                self.next_value += 1;
                Input::CompareAndSwap {
                    expected,
                    new: self.next_value,
                }
            }
        };
        match input {
            Input::Put { value } | Input::CompareAndSwap { new: value, .. } => {
                self.stale_reads.on_write_invoked(key, value)
            }
            Input::Get => {}
        }
        Request {
            operation_id,
            key,
            input,
            read_mode,
            accepted: None,
        }
    }

    fn attempt_request(&mut self, client: usize) {
        let request = match self.clients[client].request {
            Some(request) => request,
            None => self.new_request(client),
        };
        self.clients[client].request = Some(request);
        let hint = self.clients[client]
            .leader_hint
            .filter(|_| self.rng.clients.gen_bool(0.8));
        let target = hint.map_or_else(
            || self.rng.clients.gen_range(0..self.nodes.len()),
            |hint| hint.0 as usize - 1,
        );
        if !self.nodes[target].is_running() {
            self.clients[client].leader_hint = None;
            self.clients[client].next_attempt_at = self.now + 1;
            return;
        }
        if request.input == Input::Get && request.read_mode == ReadMode::Stale {
            return self.serve_stale_read(client, target, request);
        }
        let node = &mut self.nodes[target];
        let raft = node.raft.as_mut().expect("running");
        let lease_index = (request.input == Input::Get && request.read_mode == ReadMode::Lease)
            .then(|| raft.lease_read_index())
            .flatten();
        let outcome = match request.input {
            Input::Get if lease_index.is_some() => {
                let lease_index = lease_index.expect("checked");
                node.pending_lease_reads
                    .insert(request.operation_id, lease_index);
                self.stats.lease_reads += 1;
                Ok(())
            }
            Input::Get => raft
                .read_index(request.operation_id)
                .map_err(|error| match error {
                    ReadError::NoLeader { leader } => leader,
                    ReadError::Backpressure => None,
                }),
            Input::Put { value } => {
                let command = Command::Put {
                    key: request.key,
                    value,
                };
                Self::propose(
                    raft,
                    request.operation_id,
                    command,
                    &mut node.pending_proposals,
                )
            }
            Input::CompareAndSwap { expected, new } => {
                let command = Command::CompareAndSwap {
                    key: request.key,
                    expected,
                    new,
                };
                Self::propose(
                    raft,
                    request.operation_id,
                    command,
                    &mut node.pending_proposals,
                )
            }
        };
        self.stats.steps += 1;
        match outcome {
            Ok(()) => {
                if request.input == Input::Get {
                    self.nodes[target]
                        .pending_reads
                        .insert(request.operation_id, request.key);
                }
                let stamp = self.next_stamp();
                let operation = Operation {
                    client: client as u64,
                    key: request.key,
                    input: request.input,
                    output: Output::Unknown,
                    invoked_at: stamp,
                    returned_at: None,
                };
                self.history.push(Some(operation));
                self.history_operation_ids.push(request.operation_id);
                let accepted = Accepted {
                    history_position: self.history.len() - 1,
                    node: target,
                    at_tick: self.now,
                    committed_at_invocation: self.commit_index_max,
                };
                self.clients[client].request = Some(Request {
                    accepted: Some(accepted),
                    ..request
                });
                self.trace.record(
                    self.now,
                    "invoke",
                    &[client as u64, request.operation_id, target as u64 + 1],
                    || {
                        format!(
                            "client {client} op {} {:?} key {} at node {}",
                            request.operation_id,
                            request.input,
                            request.key,
                            target + 1
                        )
                    },
                );
            }
            Err(leader) => {
                self.clients[client].leader_hint = leader;
                self.clients[client].next_attempt_at =
                    self.now + 1 + self.rng.clients.gen_range(0..3);
            }
        }
        self.drive(target);
    }

    /// A stale read: the asked node's state machine, as it is.
    fn serve_stale_read(&mut self, client: usize, target: usize, request: Request) {
        let value = self.nodes[target].kv.get(request.key);
        self.stats.steps += 1;
        self.stats.stale_reads += 1;
        let result = self
            .stale_reads
            .on_stale_read(target as u64 + 1, request.key, value);
        self.check("stale_reads", result);
        let result = self.read_liveness.on_read_served(client as u64, self.now);
        self.check("read_liveness", result);
        self.clients[client].request = None;
        self.clients[client].next_attempt_at = self.now
            + self
                .rng
                .clients
                .gen_range(0..=self.config.client_think_ticks_max);
        self.trace.record(
            self.now,
            "stale-read",
            &[
                client as u64,
                request.operation_id,
                target as u64 + 1,
                value,
            ],
            || {
                format!(
                    "client {client} op {} key {} at node {} -> {value}",
                    request.operation_id,
                    request.key,
                    target + 1
                )
            },
        );
    }

    /// Serves the lease reads of node `index` whose index is applied.
    fn serve_lease_reads(&mut self, index: usize) {
        let applied = self.nodes[index].kv.applied_index();
        let ready: Vec<(u64, LogIndex)> = self.nodes[index]
            .pending_lease_reads
            .iter()
            .filter(|(_, read_index)| **read_index <= applied)
            .map(|(context, read_index)| (*context, *read_index))
            .collect();
        for (context, read_index) in ready {
            self.nodes[index].pending_lease_reads.remove(&context);
            self.serve_read(index, context, read_index);
        }
    }

    fn propose(
        raft: &mut raftgres::core::Raft,
        operation_id: u64,
        command: Command,
        pending: &mut std::collections::BTreeMap<LogIndex, u64>,
    ) -> Result<(), Option<NodeId>> {
        match raft.propose(kv::encode(operation_id, command)) {
            Ok(index) => {
                pending.insert(index, operation_id);
                Ok(())
            }
            Err(ProposeError::NotLeader { leader }) => Err(leader),
            Err(ProposeError::TransferInProgress | ProposeError::Backpressure) => Err(None),
        }
    }

    /// Finds the client working on `operation_id`.
    fn client_of(&self, operation_id: u64) -> Option<usize> {
        self.clients.iter().position(|client| {
            client.request.is_some_and(|request| {
                request.operation_id == operation_id && request.accepted.is_some()
            })
        })
    }

    fn complete(&mut self, client: usize, output: Option<Output>, node: usize) {
        let request = self.clients[client]
            .request
            .take()
            .expect("a request is outstanding");
        let accepted = request.accepted.expect("accepted");
        let stamp = self.next_stamp();
        if request.input == Input::Get {
            match output {
                Some(_) => {
                    let result = self.read_liveness.on_read_served(client as u64, self.now);
                    self.check("read_liveness", result);
                }
                None => self.read_liveness.on_read_dropped(client as u64),
            }
        }
        match output {
            Some(output) => {
                let operation = self.history[accepted.history_position]
                    .as_mut()
                    .expect("recorded");
                operation.output = output;
                operation.returned_at = Some(stamp);
                self.stats.client_operations_completed += 1;
            }
            // The operation certainly did not happen: it leaves no trace.
            None => self.history[accepted.history_position] = None,
        }
        self.clients[client].leader_hint = Some(NodeId(node as u64 + 1));
        self.clients[client].next_attempt_at = self.now
            + self
                .rng
                .clients
                .gen_range(0..=self.config.client_think_ticks_max);
        self.trace.record(
            self.now,
            "return",
            &[client as u64, request.operation_id],
            || format!("client {client} op {} -> {output:?}", request.operation_id),
        );
    }

    fn answer_write(&mut self, operation_id: u64, output: CommandOutput, entry: &Entry) {
        let Some(client) = self.client_of(operation_id) else {
            return;
        };
        let node = self.clients[client]
            .request
            .and_then(|request| request.accepted)
            .expect("accepted")
            .node;
        let output = match output {
            CommandOutput::Done => Output::Done,
            CommandOutput::Swapped(swapped) => Output::Swapped(swapped),
        };
        self.durability.on_acknowledged(AcknowledgedWrite {
            operation_id,
            index: entry.index,
            term: entry.term,
        });
        self.complete(client, Some(output), node);
    }

    fn answer_write_failed(&mut self, operation_id: u64) {
        if let Some(client) = self.client_of(operation_id) {
            let node = self.clients[client]
                .request
                .and_then(|request| request.accepted)
                .expect("accepted")
                .node;
            self.complete(client, None, node);
        }
    }

    fn serve_read(&mut self, index: usize, context: u64, read_index: LogIndex) {
        let node = &mut self.nodes[index];
        let Some(key) = node.pending_reads.remove(&context) else {
            return;
        };
        if node.kv.applied_index() < read_index {
            let message = format!(
                "node {} released read {context} at index {read_index} before applying it (applied {})",
                node.id,
                node.kv.applied_index()
            );
            return self.fail("driver", message);
        }
        let value = node.kv.get(key);
        let id = node.id;
        if let Some(client) = self.client_of(context) {
            let committed_at_invocation = self.clients[client]
                .request
                .and_then(|request| request.accepted)
                .expect("accepted")
                .committed_at_invocation;
            let result =
                read_index_safety::check_read(id, context, read_index, committed_at_invocation);
            self.check("read_index_safety", result);
            self.complete(client, Some(Output::Value(value)), index);
        }
    }

    fn drop_read(&mut self, index: usize, context: u64) {
        self.nodes[index].pending_reads.remove(&context);
        if let Some(client) = self.client_of(context) {
            self.complete(client, None, index);
            // A dropped read is retried elsewhere by a fresh request.
            self.clients[client].leader_hint = None;
        }
    }

    /// The client stops waiting: a write's outcome becomes unknown, a read
    /// is forgotten.
    fn abandon_request(&mut self, client: usize) {
        let Some(request) = self.clients[client].request.take() else {
            return;
        };
        let Some(accepted) = request.accepted else {
            return;
        };
        if request.input == Input::Get {
            self.history[accepted.history_position] = None;
            self.nodes[accepted.node]
                .pending_reads
                .remove(&request.operation_id);
            self.nodes[accepted.node]
                .pending_lease_reads
                .remove(&request.operation_id);
            let result = self
                .read_liveness
                .on_read_lost(client as u64, self.now, "abandoned");
            self.check("read_liveness", result);
        } else {
            self.stats.client_operations_unknown += 1;
        }
        self.clients[client].leader_hint = None;
        self.clients[client].next_attempt_at = self.now + 1;
        self.trace.record(
            self.now,
            "abandon",
            &[client as u64, request.operation_id],
            || {
                format!(
                    "client {client} op {} outcome unknown",
                    request.operation_id
                )
            },
        );
    }

    // ----- liveness and the end of the run ------------------------------

    /// The cluster recovered from its faults: the bounds that hold from
    /// now on start.
    fn on_recovered(&mut self) {
        self.read_liveness.on_recovered(self.now);
        let highest_term = self
            .nodes
            .iter()
            .filter_map(|node| node.raft.as_ref().map(|raft| raft.term().0))
            .max()
            .unwrap_or(0);
        self.term_settling.on_recovered(highest_term);
    }

    fn run_liveness_probe(&mut self) {
        let result = self.read_liveness.check(self.now);
        self.check("read_liveness", result);
        if !self.liveness.waiting() {
            return;
        }
        let result = self.liveness.check(self.now);
        if result.is_err() {
            return self.check("liveness", result);
        }
        if self.now < self.next_probe_at {
            return;
        }
        self.next_probe_at = self.now + 20;
        let Some(leader) = self.leader() else { return };
        let index = leader.0 as usize - 1;
        let operation_id = PROBE_OPERATION_BASE + self.now;
        let raft = self.nodes[index].raft.as_mut().expect("leader runs");
        if raft
            .propose(kv::encode(operation_id, Command::Probe))
            .is_ok()
        {
            self.trace.record(self.now, "probe", &[leader.0], || {
                format!("liveness probe at node {leader}")
            });
            self.drive(index);
        }
    }

    fn check_end_of_run(&mut self) {
        let window = self.config.ticks.saturating_sub(self.fault_end);
        if self.liveness.waiting() && window > self.config.liveness_ticks_max {
            self.fail(
                "liveness",
                format!("no command committed in the {window} ticks after faults stopped"),
            );
            return;
        }
        let final_nodes: Vec<FinalNode<'_>> = self
            .nodes
            .iter()
            .filter_map(|node| {
                let raft = node.raft.as_ref()?;
                Some(FinalNode {
                    id: node.id,
                    applied: node.kv.applied_index(),
                    log: raft.log(),
                })
            })
            .collect();
        let result = self.durability.check_final(&final_nodes);
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
    /// knows them: a command some node applied did happen, no later than
    /// its first application, with the output that node computed. Commands
    /// no node applied stay unknown (they may still commit later).
    fn resolved_history(&self) -> Vec<Operation> {
        self.history
            .iter()
            .zip(self.history_operation_ids.iter().copied())
            .filter_map(|(operation, operation_id)| {
                let mut operation = (*operation)?;
                if operation.output == Output::Unknown {
                    if let Some(first) = self.first_applies.get(&operation_id) {
                        operation.returned_at = Some(first.stamp);
                        operation.output = match first.output {
                            CommandOutput::Done => Output::Done,
                            CommandOutput::Swapped(swapped) => Output::Swapped(swapped),
                        };
                    }
                }
                Some(operation)
            })
            .collect()
    }
}

fn message_kind_code(body: &MessageBody) -> u64 {
    body.kind().bytes().fold(0u64, |code, byte| {
        code.wrapping_mul(31).wrapping_add(u64::from(byte))
    })
}

fn describe(body: &MessageBody) -> String {
    match body {
        MessageBody::AppendRequest {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
        } => format!(
            "App prev ({prev_log_index},{prev_log_term}) entries {} commit {leader_commit}",
            entries.len()
        ),
        MessageBody::AppendResponse {
            index, rejected, ..
        } => format!("AppResp index {index} rejected {rejected}"),
        MessageBody::VoteRequest {
            last_log_index,
            last_log_term,
            ..
        } => {
            format!("{} last ({last_log_index},{last_log_term})", body.kind())
        }
        MessageBody::VoteResponse { granted, .. } => format!("{} granted {granted}", body.kind()),
        MessageBody::InstallSnapshot { snapshot } => {
            format!("Snapshot through {}", snapshot.meta.index)
        }
        other => other.kind().to_string(),
    }
}
