//! A small honest cluster for tests: every node runs the real core, and a
//! driver carries out the obligations of `core/mod.rs` at once (persist,
//! report persisted, apply, send). The network loses, duplicates and
//! reorders messages, and nodes crash and restart from what is durable.
//!
//! Two kinds of tests use it: the ones that check that nothing an honest
//! node sends is ever refused (so validation costs no liveness), and the
//! adversarial property tests, which need nodes in realistic states (terms,
//! logs, commit indexes and snapshots that a real history produced).

use super::rng::SplitMix64;
use super::validate::validate_message;
use super::{
    Config, DurableState, LogIndex, MembershipChange, Message, NodeId, Raft, Ready, Role,
    SnapshotMeta,
};

/// One node as the test driver holds it.
pub(super) struct TestNode {
    /// The core; `None` while crashed.
    pub raft: Option<Raft>,
    /// What survives a crash.
    pub disk: DurableState,
    /// Its configuration, kept for restarts.
    pub config: Config,
}

/// Nodes, the network between them, and the randomness driving both.
pub(super) struct TestCluster {
    /// Node `i` has id `i + 1`.
    pub nodes: Vec<TestNode>,
    /// Messages sent and not yet delivered or lost, in sending order.
    pub in_flight: Vec<Message>,
    /// Every message sent so far, for tests that replay or mutate them.
    /// Invariant: at most `HISTORY_MAX` long; the oldest go first.
    pub history: Vec<Message>,
    /// Every implausible-message report any node made.
    pub reports: Vec<String>,
    /// The highest commit index any node reached.
    pub commit_max: LogIndex,
    rng: SplitMix64,
    commands_proposed: u64,
    reads_requested: u64,
}

/// Messages kept in `TestCluster::history`: enough variety for mutation
/// without letting long runs grow memory.
const HISTORY_MAX: usize = 512;

/// Messages kept in flight: beyond it the oldest are lost, as a network
/// with bounded buffers would lose them.
const IN_FLIGHT_MAX: usize = 256;

impl TestCluster {
    /// A cluster of `size` fresh nodes; `seed` decides the configuration
    /// knobs and every later random choice.
    pub fn new(size: u64, seed: u64) -> TestCluster {
        TestCluster::with_joining(size, 0, seed)
    }

    /// A cluster of `size` fresh voters and `joining` fresh nodes after
    /// them that wait to be added (their configuration names no voters).
    pub fn with_joining(size: u64, joining: u64, seed: u64) -> TestCluster {
        let mut rng = SplitMix64::new(seed);
        let voters: Vec<NodeId> = (1..=size).map(NodeId).collect();
        let ids: Vec<NodeId> = (1..=size + joining).map(NodeId).collect();
        let pre_vote = rng.range(0, 2) == 0;
        let check_quorum = rng.range(0, 2) == 0;
        let nodes = ids
            .iter()
            .map(|id| {
                let bootstrap = if id.0 <= size {
                    voters.clone()
                } else {
                    Vec::new()
                };
                let mut config = Config::new(*id, bootstrap);
                config.pre_vote = pre_vote;
                config.check_quorum = check_quorum;
                // Small limits, so that windows fill, messages split and
                // batches stop early within short runs.
                config.entries_per_message_max = 3;
                config.inflight_messages_max = 3;
                config.apply_batch_entries_max = 4;
                let raft = Raft::new(config.clone(), DurableState::default(), id.0 + seed)
                    .expect("test config is valid");
                TestNode {
                    raft: Some(raft),
                    disk: DurableState::default(),
                    config,
                }
            })
            .collect();
        TestCluster {
            nodes,
            in_flight: Vec::new(),
            history: Vec::new(),
            reports: Vec::new(),
            commit_max: LogIndex(0),
            rng,
            commands_proposed: 0,
            reads_requested: 0,
        }
    }

    /// The index of the node that is leader in the highest term, if any.
    pub fn leader(&self) -> Option<usize> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(index, node)| node.raft.as_ref().map(|raft| (index, raft)))
            .filter(|(_, raft)| raft.role() == Role::Leader)
            .max_by_key(|(_, raft)| raft.term())
            .map(|(index, _)| index)
    }

    /// One random step of an honest, faulty world.
    pub fn random_action(&mut self) {
        let size = self.nodes.len() as u64;
        let node = self.rng.range(0, size) as usize;
        match self.rng.range(0, 100) {
            0..=34 => self.deliver_random(),
            35..=44 => self.tick_all(),
            45..=59 => {
                self.process(node);
            }
            60..=69 => self.propose_at_leader(),
            70..=73 => self.lose_random(),
            74..=76 => self.duplicate_random(),
            77..=80 => self.read(node),
            81..=83 => self.compact(node),
            84 => self.crash(node),
            85..=88 => self.restart(node),
            89 => self.transfer(node),
            90 => self.change_membership(node),
            _ => self.process_all(),
        }
    }

    /// Runs `count` random steps.
    pub fn run(&mut self, count: usize) {
        for _ in 0..count {
            self.random_action();
        }
    }

    /// Ticks every running node once.
    pub fn tick_all(&mut self) {
        for index in 0..self.nodes.len() {
            if let Some(raft) = self.nodes[index].raft.as_mut() {
                raft.tick();
            }
            self.collect_reports(index);
        }
    }

    /// Takes and carries out every node's Ready.
    pub fn process_all(&mut self) {
        for index in 0..self.nodes.len() {
            self.process(index);
        }
    }

    fn deliver_random(&mut self) {
        if self.in_flight.is_empty() {
            return;
        }
        // Mostly in order, sometimes not: the network reorders.
        let position = if self.rng.range(0, 4) == 0 {
            self.rng.range(0, self.in_flight.len() as u64) as usize
        } else {
            0
        };
        let message = self.in_flight.remove(position);
        self.deliver(message);
    }

    /// Hands `message` to its addressee, if it is running.
    pub fn deliver(&mut self, message: Message) {
        let index = (message.to.0 - 1) as usize;
        if let Some(raft) = self.nodes[index].raft.as_mut() {
            raft.step(message);
        }
        self.collect_reports(index);
    }

    fn lose_random(&mut self) {
        if !self.in_flight.is_empty() {
            let position = self.rng.range(0, self.in_flight.len() as u64) as usize;
            self.in_flight.remove(position);
        }
    }

    fn duplicate_random(&mut self) {
        if !self.in_flight.is_empty() {
            let position = self.rng.range(0, self.in_flight.len() as u64) as usize;
            let copy = self.in_flight[position].clone();
            self.in_flight.push(copy);
        }
    }

    fn propose_at_leader(&mut self) {
        if let Some(index) = self.leader() {
            self.commands_proposed += 1;
            let command = self.commands_proposed.to_be_bytes().to_vec();
            let raft = self.nodes[index].raft.as_mut().expect("leader runs");
            // Backpressure and transfers refuse proposals; both are fine.
            let _ = raft.propose(command);
        }
    }

    fn read(&mut self, index: usize) {
        self.reads_requested += 1;
        let context = self.reads_requested;
        if let Some(raft) = self.nodes[index].raft.as_mut() {
            let _ = raft.read_index(context);
        }
    }

    /// Asks the leader to add node `index` as a learner, promote it or
    /// remove it, whichever fits (refusals are fine).
    fn change_membership(&mut self, index: usize) {
        let Some(leader) = self.leader() else { return };
        let node = NodeId(index as u64 + 1);
        let raft = self.nodes[leader].raft.as_mut().expect("leader runs");
        let change = MembershipChange::next_step(raft.membership(), node);
        let _ = raft.change_membership(change);
    }

    fn transfer(&mut self, target: usize) {
        if let Some(index) = self.leader() {
            let target = NodeId(target as u64 + 1);
            let raft = self.nodes[index].raft.as_mut().expect("leader runs");
            let _ = raft.transfer_leadership(target);
        }
    }

    /// Compacts node `index` up to its applied index, on disk and in memory.
    pub fn compact(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        let Some(raft) = node.raft.as_mut() else {
            return;
        };
        let applied = raft.log().applied_index();
        if applied <= node.disk.snapshot.index || applied > node.disk.applied {
            return;
        }
        let term = raft
            .log()
            .term_at(applied)
            .expect("an applied entry is in the log");
        let dropped = (applied.0 - node.disk.snapshot.index.0) as usize;
        node.disk.entries.drain(..dropped);
        node.disk.membership = raft.log().membership_at(applied).clone();
        node.disk.snapshot = SnapshotMeta {
            index: applied,
            term,
        };
        raft.compact(applied);
    }

    /// Crashes node `index`: it loses everything not durable.
    pub fn crash(&mut self, index: usize) {
        self.nodes[index].raft = None;
    }

    /// Restarts node `index` from its disk, if it is down.
    pub fn restart(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        if node.raft.is_none() {
            let seed = self.rng.next_u64();
            let raft = Raft::new(node.config.clone(), node.disk.clone(), seed)
                .expect("test config is valid");
            node.raft = Some(raft);
        }
    }

    /// Carries out the driver's obligations for node `index`'s next Ready,
    /// checking that every message it sends passes validation. Returns the
    /// batch, for tests that inspect it.
    pub fn process(&mut self, index: usize) -> Option<Ready> {
        let raft = self.nodes[index].raft.as_mut()?;
        if !raft.has_ready() {
            return None;
        }
        let ready = raft.ready();
        self.commit_max = self.commit_max.max(raft.log().commit_index());
        self.persist_and_apply(index, &ready);
        let sent = ready.messages.iter().chain(&ready.messages_after_persist);
        for message in sent.cloned().collect::<Vec<_>>() {
            if let Err(error) = validate_message(&message) {
                panic!(
                    "node {} sent an invalid message {message:?}: {error}",
                    index + 1
                );
            }
            self.history.push(message.clone());
            if self.history.len() > HISTORY_MAX {
                self.history.remove(0);
            }
            self.in_flight.push(message);
            if self.in_flight.len() > IN_FLIGHT_MAX {
                self.in_flight.remove(0);
            }
        }
        Some(ready)
    }

    /// Obligations 2 to 4: persist, report persisted, apply.
    fn persist_and_apply(&mut self, index: usize, ready: &Ready) {
        let node = &mut self.nodes[index];
        let raft = node.raft.as_mut().expect("running");
        if let Some(snapshot) = &ready.snapshot {
            node.disk.snapshot = snapshot.meta;
            node.disk.membership = (*snapshot.membership).clone();
            node.disk.entries.clear();
            node.disk.applied = snapshot.meta.index;
        }
        if let Some(first) = ready.entries.first() {
            let keep = (first.index.0 - node.disk.snapshot.index.0 - 1) as usize;
            node.disk.entries.truncate(keep);
            node.disk.entries.extend(ready.entries.iter().cloned());
        }
        if let Some(hard_state) = ready.hard_state {
            node.disk.hard_state = hard_state;
        }
        if let Some((last, term)) = ready.persist_point() {
            raft.persisted(last, term);
        }
        if let Some(last) = ready.committed_entries.last() {
            node.disk.applied = last.index;
            raft.applied(last.index);
        }
    }

    fn collect_reports(&mut self, index: usize) {
        if let Some(raft) = self.nodes[index].raft.as_mut() {
            let reports = raft.take_implausible();
            self.reports.extend(
                reports
                    .iter()
                    .map(|report| format!("node {}: {report}", index + 1)),
            );
        }
    }
}
