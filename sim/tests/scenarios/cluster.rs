//! The scripted cluster: simulator nodes (`raftgres_sim::node::SimNode`:
//! the production pipeline around its core, the simulated Postgres store,
//! the transactions in flight, the monotonic clock) driven step by step by
//! the script instead of by the simulator's seeded world.
//!
//! Nothing here decides anything the node decides. The cluster feeds each
//! pipeline its inputs at the node's instant (ticks, peer messages, client
//! requests, the reports of finished transactions) and carries out its
//! outputs: sends go into one queue the script delivers or drops; each
//! write and apply becomes the node's transaction in flight, which the
//! store carries out when the script lets it finish (`process`,
//! `commit-write`, `commit-apply`), fails and retries (`fail-write`,
//! `fail-apply`) or leaves in flight (`stall-storage`); answers are kept
//! for the script under the names it gave its requests.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use raftgres::core::{HardState, Message, MessageBody, NodeId, Role, SnapshotMeta, Term};
use raftgres::pipeline::{Input, Output, Reply, RequestId, TransferConfig, WriteDone};
use raftgres_sim::config::SimConfig;
use raftgres_sim::node::{SimNode, TICK};
use raftgres_sim::store::{ApplySettings, Fate, Store, Transaction};

use super::describe::{
    describe, describe_answer, describe_entries, describe_entry, describe_point, Keys, Request,
};

/// Transactions one node may finish in one `process` before the script
/// is considered to loop (a node with work to do finishes it in a few).
const STORAGE_STEPS_MAX: usize = 100;

/// Rounds of `stabilize` before the script is considered to loop.
const STABILIZE_ROUNDS_MAX: usize = 1000;

/// What `add-nodes` sets.
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    /// Cluster size: the bootstrap voters.
    pub nodes: u64,
    /// Nodes started after them, knowing no membership (`serve --join`),
    /// to be added with `member`.
    pub joining: u64,
    /// Pre-vote on.
    pub pre_vote: bool,
    /// Check-quorum (and leases, and stickiness) on.
    pub check_quorum: bool,
    /// Most entries per AppendEntries message.
    pub entries_per_message_max: usize,
    /// The log is compacted every this many applied entries.
    pub compaction_entries: u64,
    /// Election timeouts are drawn from `min..max` ticks.
    pub election_ticks: (u64, u64),
    /// A planted bug every node runs with (needs the `planted-bugs`
    /// feature).
    pub planted_bug: Option<String>,
}

/// One node as the script drives it.
pub struct ScriptNode {
    /// The simulator's node: pipeline (absent while down), store,
    /// transactions in flight, clock.
    pub sim: SimNode,
    /// Paused (a stopped process): its clock runs on, it handles nothing,
    /// messages to it wait in the queue and requests in its inbox.
    pub paused: bool,
    /// Its transactions do not finish by themselves (`process`,
    /// `stabilize`, `advance` leave them in flight).
    pub storage_stalled: bool,
    /// Requests that reached the node while it was paused.
    inbox: Vec<Input>,
    /// Requests waiting for an answer.
    requests: BTreeMap<RequestId, Request>,
    /// Answers not yet printed, in order.
    answers: Vec<(RequestId, Request, Reply)>,
    /// What the node's apply and install transactions did, in order.
    pub applied: Vec<String>,
}

/// The scripted cluster.
pub struct Cluster {
    /// The settings every node starts with.
    pub config: SimConfig,
    apply_settings: ApplySettings,
    /// Nodes by id.
    pub nodes: BTreeMap<NodeId, ScriptNode>,
    /// Messages sent and not yet delivered or dropped, oldest first.
    pub queue: Vec<Message>,
    /// Node -> partition group; messages between groups are lost.
    groups: BTreeMap<NodeId, usize>,
    /// The script's key names.
    pub keys: Keys,
    /// What the current command printed so far.
    pub output: String,
    /// Deliveries are not printed (`advance`); events still are.
    quiet: bool,
    next_request: u64,
}

impl Cluster {
    /// A cluster with no nodes (before the first `add-nodes`).
    pub fn empty() -> Cluster {
        Cluster::new(
            ClusterSettings {
                nodes: 0,
                joining: 0,
                pre_vote: true,
                check_quorum: true,
                entries_per_message_max: 8,
                compaction_entries: 1_000_000,
                election_ticks: (10, 20),
                planted_bug: None,
            },
            Keys::default(),
        )
    }

    /// Fresh nodes 1..=N, each started on an empty store; node N's core
    /// draws its election timeouts from seed N.
    pub fn new(settings: ClusterSettings, keys: Keys) -> Cluster {
        let mut config = SimConfig::new(settings.nodes.max(1) as usize, 0, "none");
        config.pre_vote = settings.pre_vote;
        config.check_quorum = settings.check_quorum;
        config.entries_per_message_max = settings.entries_per_message_max;
        (config.election_ticks_min, config.election_ticks_max) = settings.election_ticks;
        config.planted_bug = settings.planted_bug;
        let apply_settings = ApplySettings {
            asynchronous_commit: false,
            session_expiry_entries: 1_000_000,
            session_expiry_stride: raftgres::pipeline::sessions::SESSION_EXPIRY_STRIDE,
            compaction_entries: settings.compaction_entries,
            entries_per_write_max: raftgres::pipeline::WRITE_ENTRIES_MAX_DEFAULT,
            expiry_at_batch_end: false,
            // The scripts step the committed-apply path transaction by
            // transaction; the swarm drives applies ahead, and followers'
            // waits for a write to carry their applies.
            apply_ahead: false,
            follower_apply_wait: std::time::Duration::ZERO,
        };
        let mut cluster = Cluster {
            config,
            apply_settings,
            nodes: BTreeMap::new(),
            queue: Vec::new(),
            groups: BTreeMap::new(),
            keys,
            output: String::new(),
            quiet: false,
            next_request: 0,
        };
        for id in (1..=settings.nodes + settings.joining).map(NodeId) {
            let mut sim = SimNode::new(id);
            sim.joining = id.0 > settings.nodes;
            let node = ScriptNode {
                sim,
                paused: false,
                storage_stalled: false,
                inbox: Vec::new(),
                requests: BTreeMap::new(),
                answers: Vec::new(),
                applied: Vec::new(),
            };
            cluster.nodes.insert(id, node);
            cluster.start(id, id.0);
        }
        cluster
    }

    /// The node `id`.
    pub fn node(&self, id: NodeId) -> &ScriptNode {
        self.nodes
            .get(&id)
            .unwrap_or_else(|| panic!("there is no node {id}"))
    }

    fn node_mut(&mut self, id: NodeId) -> &mut ScriptNode {
        self.nodes
            .get_mut(&id)
            .unwrap_or_else(|| panic!("there is no node {id}"))
    }

    /// Whether node `id` is up.
    pub fn is_up(&self, id: NodeId) -> bool {
        self.node(id).sim.pipeline.is_some()
    }

    fn up_and_unpaused(&self, id: NodeId) -> bool {
        self.is_up(id) && !self.node(id).paused
    }

    fn expect_up(&self, id: NodeId) {
        assert!(self.is_up(id), "node {id} is down");
    }

    // ----- the pipeline's inputs and outputs -----------------------------

    /// Feeds `input` (or only the passing of time) to node `id`'s pipeline
    /// at its instant, then carries out what the pipeline asks.
    fn handle(&mut self, id: NodeId, input: Option<Input>) {
        if !self.node_mut(id).sim.handle(input) {
            return;
        }
        let outputs = self
            .node_mut(id)
            .sim
            .pipeline
            .as_mut()
            .expect("the node is up")
            .take_outputs();
        for output in outputs {
            self.carry_out(id, output);
        }
    }

    fn carry_out(&mut self, id: NodeId, output: Output) {
        let node = self.nodes.get_mut(&id).expect("node exists");
        match output {
            Output::Send(message) => self.queue.push(message),
            Output::Write(job) => {
                assert!(node.sim.write.is_none(), "node {id}: a second write");
                node.sim.write = Some(transaction(job));
            }
            Output::Apply(batch) => {
                assert!(node.sim.apply.is_none(), "node {id}: a second apply");
                assert!(
                    node.sim
                        .write
                        .as_ref()
                        .is_none_or(|write| write.job.apply.is_none()),
                    "node {id}: an apply while the write in flight carries one"
                );
                node.sim.apply = Some(transaction(batch));
            }
            Output::OpenView { view } => {
                let answer = match node.sim.store.view() {
                    Some((at, rows)) => {
                        node.sim.views.insert(view, rows);
                        Input::ViewOpened { view, at }
                    }
                    None => Input::ViewLost { view },
                };
                node.sim.view_answers.push((0, answer));
            }
            Output::ReadChunk(read) => {
                let answer = match node.sim.views.get(&read.view) {
                    Some(rows) => Input::ChunkRead(Store::read_view(rows, &read)),
                    None => Input::ViewLost { view: read.view },
                };
                node.sim.view_answers.push((0, answer));
            }
            Output::CloseView { view } => {
                node.sim.views.remove(&view);
            }
            Output::Stage(job) => {
                assert!(node.sim.stage.is_none(), "node {id}: a second stage job");
                node.sim.stage = Some(transaction(job));
            }
            Output::Reply { request, reply } => {
                if let Some(named) = node.requests.remove(&request) {
                    node.answers.push((request, named, reply));
                }
            }
            Output::Implausible(report) => {
                writeln!(
                    self.output,
                    "{id} ignored an implausible message: {report:?}"
                )
                .unwrap();
            }
            Output::HandingOff {
                target,
                stalled_for,
            } => {
                writeln!(
                    self.output,
                    "{id} hands leadership to {target}: its write has waited {} ms",
                    stalled_for.as_millis()
                )
                .unwrap();
            }
            Output::RoleChanged { .. } => {}
            Output::ApplyAhead(_) | Output::ConfirmApply | Output::AbandonApply => {
                unreachable!("scripted nodes do not apply ahead")
            }
        }
    }

    /// Sends a client request to node `id`, named `named`; returns its
    /// answer when the pipeline gave one at once, or `None` (also when the
    /// node is paused: the request waits in its inbox).
    pub fn request(
        &mut self,
        id: NodeId,
        named: Request,
        input: impl FnOnce(RequestId) -> Input,
    ) -> Option<Reply> {
        self.expect_up(id);
        self.next_request += 1;
        let request = RequestId(self.next_request);
        let input = input(request);
        let node = self.node_mut(id);
        node.requests.insert(request, named);
        if node.paused {
            node.inbox.push(input);
            return None;
        }
        self.handle(id, Some(input));
        let answers = &mut self.node_mut(id).answers;
        let position = answers
            .iter()
            .position(|(answered, ..)| *answered == request)?;
        Some(answers.remove(position).2)
    }

    /// The answers node `id` gave that `select` picks, removed, one line
    /// each.
    pub fn take_answers(&mut self, id: NodeId, select: impl Fn(&Request) -> bool) -> Vec<String> {
        let answers = std::mem::take(&mut self.node_mut(id).answers);
        let (taken, kept): (Vec<_>, Vec<_>) = answers
            .into_iter()
            .partition(|(_, request, _)| select(request));
        self.node_mut(id).answers = kept;
        taken
            .iter()
            .map(|(_, request, reply)| describe_answer(request, reply))
            .collect()
    }

    // ----- storage --------------------------------------------------------

    /// Ends node `id`'s write in flight with `fate`: committed writes are
    /// reported to the pipeline; a failed one (or one whose COMMIT outcome
    /// was lost) is retried as the same job, as the product's storage task
    /// does. False when no write was in flight.
    pub fn end_write(&mut self, id: NodeId, fate: Fate) -> bool {
        let settings = ApplySettings {
            asynchronous_commit: false,
            ..self.apply_settings
        };
        let Some(transaction) = self.node_mut(id).sim.write.take() else {
            return false;
        };
        let mut applied = None;
        if matches!(fate, Fate::Commit | Fate::Unknown { happened: true }) {
            let node = self.node_mut(id);
            if let Err(error) = node.sim.store.write(&transaction.job) {
                panic!("node {id}: the store refused a write: {error}");
            }
            if let Some(snapshot) = &transaction.job.snapshot {
                let point = describe_point(snapshot.meta.index, snapshot.meta.term);
                node.applied.push(format!("snapshot {point}"));
            }
            // The apply batch the write carries commits with it.
            if let Some(batch) = &transaction.job.apply {
                let report = node
                    .sim
                    .store
                    .apply(batch, settings)
                    .unwrap_or_else(|error| {
                        panic!("node {id}: the store refused an apply: {error}")
                    });
                let described: Vec<String> = report
                    .applied
                    .iter()
                    .map(|(entry, _)| describe_entry(entry, &self.keys))
                    .collect();
                self.node_mut(id).applied.extend(described);
                applied = Some(report.done);
            }
        }
        if fate == Fate::Commit {
            let done = WriteDone::of(transaction.job, applied);
            self.handle(id, Some(Input::WriteDone(done)));
        } else {
            self.node_mut(id).sim.write = Some(Transaction {
                attempts: transaction.attempts + 1,
                ..transaction
            });
        }
        true
    }

    /// Ends node `id`'s apply transaction in flight with `fate`, as
    /// `end_write` does. False when none was in flight.
    pub fn end_apply(&mut self, id: NodeId, fate: Fate) -> bool {
        let settings = self.apply_settings;
        let Some(transaction) = self.node_mut(id).sim.apply.take() else {
            return false;
        };
        if matches!(fate, Fate::Commit | Fate::Unknown { happened: true }) {
            let report = self
                .node_mut(id)
                .sim
                .store
                .apply(&transaction.job, settings)
                .unwrap_or_else(|error| panic!("node {id}: the store refused an apply: {error}"));
            let applied: Vec<String> = report
                .applied
                .iter()
                .map(|(entry, _)| describe_entry(entry, &self.keys))
                .collect();
            let node = self.node_mut(id);
            node.applied.extend(applied);
            if fate == Fate::Commit {
                self.handle(id, Some(Input::ApplyDone(report.done)));
                return true;
            }
        }
        self.node_mut(id).sim.apply = Some(Transaction {
            attempts: transaction.attempts + 1,
            ..transaction
        });
        true
    }

    /// Ends node `id`'s stage transaction in flight (it commits). False
    /// when none was in flight.
    fn end_stage(&mut self, id: NodeId) -> bool {
        let node = self.node_mut(id);
        let Some(transaction) = node.sim.stage.take() else {
            return false;
        };
        node.sim.store.stage(&transaction.job);
        self.handle(id, Some(Input::Staged(transaction.job.transfer)));
        true
    }

    /// Hands node `id` the answers of its view operations. False when
    /// there were none.
    fn answer_views(&mut self, id: NodeId) -> bool {
        let answers = std::mem::take(&mut self.node_mut(id).sim.view_answers);
        let answered = !answers.is_empty();
        for (_, answer) in answers {
            self.handle(id, Some(answer));
        }
        answered
    }

    /// Node `id` finishes its storage work: every transaction in flight
    /// commits and is reported, and so do those the reports start (views
    /// answer, chunks are staged). Nothing happens on a node that is down,
    /// paused or stalled. True when some transaction finished.
    pub fn process(&mut self, id: NodeId) -> bool {
        let mut progressed = false;
        for _ in 0..STORAGE_STEPS_MAX {
            let node = self.node(id);
            if !self.up_and_unpaused(id) || node.storage_stalled {
                return progressed;
            }
            let wrote = self.end_write(id, Fate::Commit);
            let applied = self.end_apply(id, Fate::Commit);
            let staged = self.end_stage(id);
            let answered = self.answer_views(id);
            if !wrote && !applied && !staged && !answered {
                return progressed;
            }
            progressed = true;
        }
        panic!("node {id} still had storage work after {STORAGE_STEPS_MAX} transactions");
    }

    // ----- the network ----------------------------------------------------

    fn connected(&self, from: NodeId, to: NodeId) -> bool {
        self.groups.get(&from) == self.groups.get(&to)
    }

    /// Cuts the network into `groups`.
    pub fn partition(&mut self, groups: Vec<Vec<NodeId>>) {
        self.groups.clear();
        for (group, members) in groups.into_iter().enumerate() {
            for member in members {
                self.groups.insert(member, group);
            }
        }
    }

    /// Restores the network.
    pub fn heal(&mut self) {
        self.groups.clear();
    }

    /// Delivers the queued messages `select` picks (except those to paused
    /// nodes, which wait), printing each; returns how many it took from the
    /// queue.
    pub fn deliver(&mut self, select: impl Fn(&Message) -> bool) -> usize {
        let paused: BTreeSet<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, node)| node.paused)
            .map(|(id, _)| *id)
            .collect();
        let (chosen, kept): (Vec<Message>, Vec<Message>) = std::mem::take(&mut self.queue)
            .into_iter()
            .partition(|message| select(message) && !paused.contains(&message.to));
        self.queue = kept;
        let count = chosen.len();
        for message in chosen {
            let reachable = self.connected(message.from, message.to)
                && self.nodes.contains_key(&message.to)
                && self.is_up(message.to);
            // The receiver's transport refuses what its core would not
            // hear, and tells the sender its term.
            let refused_at = if reachable {
                let receiver = self.node(message.to).sim.raft().expect("up");
                (!receiver.hears(&message)).then(|| receiver.term())
            } else {
                None
            };
            if !self.quiet {
                let suffix = match (reachable, refused_at) {
                    (false, _) => " (lost)",
                    (true, Some(_)) => " (refused: not a member)",
                    (true, None) => "",
                };
                writeln!(self.output, "{}{suffix}", describe(&message, &self.keys)).unwrap();
            }
            match refused_at {
                Some(term) if self.up_and_unpaused(message.from) => {
                    let by = message.to;
                    self.handle(message.from, Some(Input::NotHeard { by, term }));
                }
                Some(_) => {}
                None if reachable => self.handle(message.to, Some(Input::Peer(message))),
                None => {}
            }
        }
        count
    }

    /// Finishes storage work and delivers messages until neither is left.
    pub fn stabilize(&mut self) {
        for _ in 0..STABILIZE_ROUNDS_MAX {
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            let mut progressed = false;
            for id in ids {
                progressed |= self.process(id);
            }
            if self.deliver(|_| true) == 0 && !progressed {
                return;
            }
        }
        panic!(
            "the cluster did not stabilize within {STABILIZE_ROUNDS_MAX} rounds:\n{}",
            self.output
        );
    }

    // ----- time -----------------------------------------------------------

    /// Node `id`'s clock advances one tick; a running node handles it.
    pub fn tick(&mut self, id: NodeId) {
        self.node_mut(id).sim.advance_clock();
        if self.up_and_unpaused(id) {
            self.handle(id, None);
        }
    }

    /// Every node's clock advances one tick, then the cluster stabilizes;
    /// `rounds` times. The deliveries are not printed.
    pub fn advance(&mut self, rounds: u64) {
        self.quiet = true;
        for _ in 0..rounds {
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in ids {
                self.tick(id);
            }
            self.stabilize();
        }
        self.quiet = false;
    }

    /// Node `id`'s clock runs, alone, until its election timeout fires: it
    /// asks for (pre-)votes, or becomes a (pre-)candidate of a new term.
    pub fn campaign(&mut self, id: NodeId) {
        self.expect_up(id);
        assert!(!self.node(id).paused, "node {id} is paused");
        let ticks_max = self.config.election_ticks_max * 2;
        for _ in 0..ticks_max {
            let before = self.role_and_term(id);
            let queued = self.queue.len();
            self.tick(id);
            let asked = self.queue[queued..].iter().any(|message| {
                message.from == id && matches!(message.body, MessageBody::VoteRequest { .. })
            });
            let now = self.role_and_term(id);
            let campaigning = matches!(now.0, Role::PreCandidate | Role::Candidate);
            if asked || (campaigning && now != before) {
                return;
            }
        }
        panic!("node {id} did not campaign within {ticks_max} ticks");
    }

    fn role_and_term(&self, id: NodeId) -> (Role, Term) {
        let raft = self.node(id).sim.raft().expect("the node is up");
        (raft.role(), raft.term())
    }

    // ----- processes --------------------------------------------------------

    /// Starts node `id` from what its store holds, its core seeded with
    /// `seed`.
    fn start(&mut self, id: NodeId, seed: u64) {
        let config = self.config.clone();
        let settings = self.apply_settings;
        let transfer = TransferConfig {
            chunk_bytes: 16,
            chunks_in_flight: 2,
            resend_after: TICK * config.election_ticks_max as u32,
            view_ttl: TICK * 10_000,
        };
        let node = self.node_mut(id);
        node.sim.start(&config, seed, &settings, transfer);
        node.paused = false;
        node.inbox.clear();
        node.requests.clear();
        self.handle(id, None);
    }

    /// Node `id` crashes: the transactions in flight did not happen, its
    /// requests are lost, and so are the messages from and to it.
    pub fn crash(&mut self, id: NodeId) {
        let node = self.node_mut(id);
        node.sim.pipeline = None;
        node.sim.write = None;
        node.sim.apply = None;
        node.paused = false;
        node.inbox.clear();
        node.requests.clear();
        self.queue
            .retain(|message| message.to != id && message.from != id);
    }

    /// Node `id` comes back from its store (its core seeded with `id + 100`,
    /// so that its timeouts differ from its first incarnation's).
    pub fn restart(&mut self, id: NodeId) {
        self.start(id, id.0 + 100);
    }

    /// Node `id` restarts on a store holding `entries` with current term
    /// `term` and nothing applied (for the paper's figures).
    pub fn set_log(&mut self, id: NodeId, term: Term, entries: Vec<raftgres::core::Entry>) {
        let mut store = Store::default();
        store.hard_state = HardState {
            term,
            voted_for: None,
        };
        store.entries = entries;
        let node = self.node_mut(id);
        node.sim.store = store;
        node.sim.write = None;
        node.sim.apply = None;
        node.applied.clear();
        self.start(id, id.0);
    }

    /// Node `id` stops handling anything; its clock runs on.
    pub fn pause(&mut self, id: NodeId) {
        self.expect_up(id);
        self.node_mut(id).paused = true;
    }

    /// Node `id` handles again: first every tick its clock ran through,
    /// then the requests that reached it meanwhile, in order.
    pub fn resume(&mut self, id: NodeId) {
        let node = self.node_mut(id);
        assert!(node.paused, "node {id} is not paused");
        node.paused = false;
        let inbox = std::mem::take(&mut node.inbox);
        self.handle(id, None);
        for input in inbox {
            self.handle(id, Some(input));
        }
    }

    // ----- what the script prints -----------------------------------------

    /// `ID: ROLE term=.. vote=.. leader=.. last=.. commit=.. applied=..`.
    pub fn status_line(&self, id: NodeId) -> String {
        let Some(raft) = self.node(id).sim.raft() else {
            return format!("{id}: down");
        };
        let status = raft.status();
        let name = |node: Option<NodeId>| node.map_or("none".to_string(), |node| node.to_string());
        let paused = if self.node(id).paused {
            " (paused)"
        } else {
            ""
        };
        format!(
            "{id}: {} term={} vote={} leader={} last={} commit={} applied={}{paused}",
            status.role,
            status.term,
            name(status.voted_for),
            name(status.leader),
            status.last_index,
            status.commit_index,
            status.applied_index
        )
    }

    /// `ID: voters {..} [joint with {..}] [learners {..}] at=I committed`
    /// (or `uncommitted`): the membership in force on node `id`.
    pub fn membership_line(&self, id: NodeId) -> String {
        let Some(raft) = self.node(id).sim.raft() else {
            return format!("{id}: down");
        };
        let status = raft.status();
        let committed = if status.commit_index >= status.membership_index {
            "committed"
        } else {
            "uncommitted"
        };
        let membership = if status.membership.voters.is_empty() {
            "none".to_string()
        } else {
            status.membership.to_string()
        };
        format!(
            "{id}: {membership} at={} {committed}",
            status.membership_index
        )
    }

    /// The core's log: `commit=.. [snapshot=I/T] entries=[..]`.
    pub fn log_line(&self, id: NodeId) -> String {
        self.expect_up(id);
        let log = self.node(id).sim.raft().expect("up").log();
        let snapshot = log.snapshot();
        let prefix = if snapshot.index.0 > 0 {
            format!(
                " snapshot={}",
                describe_point(snapshot.index, snapshot.term)
            )
        } else {
            String::new()
        };
        format!(
            "commit={}{prefix} entries={}",
            log.commit_index(),
            describe_entries(log.entries(), &self.keys)
        )
    }

    /// What node `id`'s store holds and which transactions are in flight.
    pub fn storage_lines(&self, id: NodeId) -> String {
        let node = &self.node(id).sim;
        let store = &node.store;
        let vote = store
            .hard_state
            .voted_for
            .map_or("none".to_string(), |vote| vote.to_string());
        let mut lines = format!(
            "durable: term={} vote={vote} log={} applied={}\n",
            store.hard_state.term,
            describe_stored_log(store.log_start, store),
            store.state_machine.applied_index()
        );
        let write = node.write.as_ref().map_or("none".to_string(), |write| {
            let job = &write.job;
            let mut parts = Vec::new();
            if let Some(hard_state) = job.hard_state {
                let vote = hard_state
                    .voted_for
                    .map_or("none".to_string(), |vote| vote.to_string());
                parts.push(format!("term={} vote={vote}", hard_state.term));
            }
            if let Some(snapshot) = &job.snapshot {
                let point = describe_point(snapshot.meta.index, snapshot.meta.term);
                parts.push(format!("install={point}"));
            }
            if !job.entries.is_empty() {
                parts.push(format!(
                    "entries={}",
                    describe_entries(&job.entries, &self.keys)
                ));
            }
            if let Some((point, _)) = &job.compact_to {
                parts.push(format!(
                    "compact={}",
                    describe_point(point.index, point.term)
                ));
            }
            if let Some(batch) = &job.apply {
                parts.push(format!(
                    "apply={}",
                    describe_entries(&batch.entries, &self.keys)
                ));
            }
            for message in &job.messages_after_persist {
                parts.push(format!("then {}", describe(message, &self.keys)));
            }
            attempt_suffix(parts.join(", "), write.attempts)
        });
        writeln!(lines, "write: {write}").unwrap();
        let apply = node.apply.as_ref().map_or("none".to_string(), |apply| {
            let job = describe_entries(&apply.job.entries, &self.keys);
            attempt_suffix(job, apply.attempts)
        });
        writeln!(lines, "apply: {apply}").unwrap();
        lines
    }

    /// The state machine's rows: `applied=N revision=R KEY=VALUE ..`.
    pub fn rows_line(&self, id: NodeId) -> String {
        let state_machine = &self.node(id).sim.store.state_machine;
        let mut line = format!(
            "applied={} revision={}",
            state_machine.applied_index(),
            state_machine.revisions().current
        );
        for (key, value) in state_machine.values() {
            write!(line, " {}={value}", self.keys.name(key)).unwrap();
        }
        line
    }
}

fn transaction<J>(job: J) -> Transaction<J> {
    Transaction {
        job,
        complete_at: 0,
        fate: Fate::Commit,
        attempts: 0,
    }
}

fn attempt_suffix(text: String, attempts: u32) -> String {
    if attempts == 0 {
        text
    } else {
        format!("{text} (attempt {})", attempts + 1)
    }
}

/// `A..B`, `empty`, with `after I/T` when the log starts after a snapshot.
fn describe_stored_log(start: SnapshotMeta, store: &Store) -> String {
    let range = match (store.entries.first(), store.entries.last()) {
        (Some(first), Some(last)) => format!("{}..{}", first.index, last.index),
        _ => "empty".to_string(),
    };
    if start.index.0 == 0 {
        range
    } else {
        format!("{range} after {}", describe_point(start.index, start.term))
    }
}
