//! etcd leases in the simulator: every node runs the product's lessor
//! (`raftgres::mvcc::lease::Lessor`) as the node's expiry task does
//! (`node/src/server/etcd/lease.rs`), and, in some swarm worlds, one
//! lease client grants leases, attaches a key to each, keeps them alive
//! and sometimes stops.
//!
//! The lessor, on every running node, every [`LESSOR_TICKS`] (250 ms, the
//! product's `LESSOR_TICK`) and after every apply transaction commits (the
//! product's task also wakes when the applied index moves; after an apply
//! it looks only when `raftgres::mvcc::lease::expiry_task_looks` says so,
//! as the product's does), in the node's own clock's instants:
//! 1. a node that does not lead demotes its lessor if it led;
//! 2. a leader whose Postgres is away does nothing (the product's read of
//!    the lease table fails);
//! 3. otherwise it reconciles the lessor with the leases its store holds,
//!    promotes it (extension: one election timeout, `election_ticks_max`
//!    ticks) when it leads a term it did not lead before, and proposes a
//!    `LeaseRevoke` through its pipeline for each lease `to_revoke` names
//!    (retried after two extensions).
//!
//! A keep-alive is a linearizable read through the pipeline of the node
//! the client believes leads (the product's ReadIndex round); once it is
//! released, the node renews the lease from the instant the keep-alive
//! reached it, as the product's `Leases::renew` does (the lessor first
//! reconciles with the leases the store holds after the round; a lease
//! the store does not hold is answered with a TTL of 0). A grant the node
//! applied and answered gives the lease its whole TTL on that node's
//! lessor (`Lessor::granted`).
//!
//! Each lease has a key of its own (beyond the workload's keys, so the
//! linearizability checker never sees a key its clients did not write
//! vanish). The client stops everything `LEASE_QUIET_TICKS` before the
//! end, so that every lease is revoked before the run's idle window.

use std::collections::BTreeMap;
use std::time::Duration;

use raftgres::core::{Role, Term};
use raftgres::mvcc::lease::{expiry_task_looks, Lessor};
use raftgres::pipeline::{Instant, ReadMode, Refusal, Reply};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::checkers::lease_expiry::LeaseExpiry;
use crate::kv::{self, Command, CommandOutput, Envelope};
use crate::node::{QueuedInput, Waiting, TICK};
use crate::world::World;

/// World ticks between two runs of the lessors: the product's 250 ms.
pub const LESSOR_TICKS: u64 = 25;

/// Operation ids of lease commands (below the liveness probes').
pub(crate) const LEASE_OPERATION_BASE: u64 = 1 << 61;

/// The first key of the lease client's keys (the workload's are small).
const LEASE_KEY_BASE: u64 = 1 << 40;

/// The lease client stops this many ticks before the end of the run: its
/// last lease (a TTL of 2 s at most, and an extension) is revoked before
/// the quiet end's transfer and idle window.
const LEASE_QUIET_TICKS: u64 = 450;

/// The client grants no new lease within this many ticks of its quiet
/// point: a lease needs time to be put and kept alive.
const LEASE_GRANT_LEAD_TICKS: u64 = 200;

/// Ticks the client waits for an answer before it asks again.
const LEASE_ANSWER_TICKS_MAX: u64 = 60;

/// One in this many swarm worlds runs the lease client.
const LEASE_WORLDS_ONE_IN: u32 = 6;

/// A lease request, as its node holds it (see [`Waiting::Lease`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseAsk {
    /// A grant of lease `id` of `ttl` seconds.
    Grant {
        /// The lease.
        id: i64,
        /// Its TTL, in seconds.
        ttl: i64,
        /// The client's attempt.
        attempt: u64,
    },
    /// A put of the lease's key, attached to it.
    Put {
        /// The lease.
        id: i64,
        /// The client's attempt.
        attempt: u64,
    },
    /// A keep-alive: a linearizable read, then a renewal.
    KeepAlive {
        /// The lease.
        id: i64,
        /// The node's instant when the keep-alive reached it.
        asked_at: Instant,
        /// The world tick when it reached the node.
        asked_tick: u64,
        /// The client's attempt.
        attempt: u64,
    },
    /// A lessor's revoke (nobody waits for it).
    Revoke,
}

/// One node's lessor and what the expiry task keeps beside it.
#[derive(Clone, Debug, Default)]
pub(crate) struct NodeLessor {
    lessor: Lessor,
    /// The term the lessor was promoted in, while it leads.
    led_term: Option<Term>,
    /// The world tick of the latest promotion.
    promoted_tick: u64,
    /// The node incarnation the lessor belongs to (a restart starts a new
    /// one, as a new process does).
    incarnation: u64,
}

/// Where the lease client is with its lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Granting,
    Putting,
    /// Keeping it alive until this tick.
    KeepingAlive(u64),
}

/// The lease client of a world that has one.
#[derive(Debug)]
pub(crate) struct LeaseClient {
    rng: ChaCha8Rng,
    /// The node it believes leads (an index).
    target: usize,
    next_id: i64,
    /// The lease it holds: id, TTL, phase.
    lease: Option<(i64, i64, Phase)>,
    next_at: u64,
    attempt: u64,
    /// The tick of the attempt in flight.
    in_flight_since: Option<u64>,
    /// Leases whose keep-alives stopped: TTL, and the tick they stopped.
    stopped: BTreeMap<i64, (i64, u64)>,
    /// When the cluster recovered after the faults.
    recovered_at: Option<u64>,
}

/// The leases of a world: the lessors, and the client when there is one.
#[derive(Debug, Default)]
pub(crate) struct Leases {
    pub(crate) lessors: Vec<NodeLessor>,
    pub(crate) client: Option<LeaseClient>,
    pub(crate) checker: LeaseExpiry,
}

impl Leases {
    /// The leases of a world: a client in one swarm
    /// world in [`LEASE_WORLDS_ONE_IN`] (drawn from `rng`, a stream of its
    /// own, so that other worlds run as before).
    pub(crate) fn new(swarm: bool, mut rng: ChaCha8Rng) -> Leases {
        let client = (swarm && rng.gen_ratio(1, LEASE_WORLDS_ONE_IN)).then(|| LeaseClient {
            target: 0,
            rng,
            next_id: 1,
            lease: None,
            next_at: 0,
            attempt: 0,
            in_flight_since: None,
            stopped: BTreeMap::new(),
            recovered_at: None,
        });
        Leases {
            lessors: Vec::new(),
            client,
            checker: LeaseExpiry::default(),
        }
    }

    /// Whether this world runs leases at all.
    pub(crate) fn enabled(&self) -> bool {
        self.client.is_some()
    }
}

impl World {
    /// A new leader keeps leases alive this much longer than their TTL
    /// (the product's: one election timeout).
    fn lease_extension(&self) -> Duration {
        TICK * self.config.election_ticks_max as u32
    }

    /// The shortest TTL the product grants: one and a half extensions,
    /// rounded up to whole seconds.
    fn lease_ttl_min(&self) -> i64 {
        (self.lease_extension().as_secs_f64() * 1.5).ceil().max(1.0) as i64
    }

    fn clock_rates(&self) -> (u64, u64) {
        let rates = self.nodes.iter().map(|node| node.tick_rate_permille);
        (
            rates.clone().min().unwrap_or(1000),
            rates.max().unwrap_or(1000),
        )
    }

    /// Node `index`'s lessor, new when the node restarted since.
    fn node_lessor(&mut self, index: usize) -> &mut NodeLessor {
        let incarnation = self.nodes[index].incarnation;
        let lessors = &mut self.leases.lessors;
        if lessors.len() <= index {
            lessors.resize(index + 1, NodeLessor::default());
        }
        let lessor = &mut lessors[index];
        if lessor.incarnation != incarnation {
            *lessor = NodeLessor {
                incarnation,
                ..NodeLessor::default()
            };
        }
        lessor
    }

    /// Runs every node's lessor, every [`LESSOR_TICKS`] (see the module
    /// documentation), then checks rule 3 of `lease_expiry`.
    pub(crate) fn run_lessors(&mut self) {
        if !self.leases.enabled() || !self.now.is_multiple_of(LESSOR_TICKS) {
            return;
        }
        for index in 0..self.nodes.len() {
            self.lessor_step(index, true);
        }
        self.check_lease_expiries();
    }

    /// One turn of node `index`'s expiry task: every [`LESSOR_TICKS`]
    /// (`ticked`), and after every apply (the product's task wakes on
    /// both).
    pub(crate) fn lessor_step(&mut self, index: usize, ticked: bool) {
        let Some((role, term)) = self.nodes[index]
            .raft()
            .filter(|_| self.nodes[index].is_running())
            .map(|raft| (raft.role(), raft.term()))
        else {
            return;
        };
        let extension = self.lease_extension();
        let postgres_away = self.postgres_down_until[index] > self.now;
        let now = self.nodes[index].now();
        let tick = self.now;
        let leases = self.nodes[index].store.state_machine.leases().clone();
        let node_lessor = self.node_lessor(index);
        let leading_term = (role == Role::Leader).then_some(term.0);
        let led_term = node_lessor.led_term.map(|term| term.0);
        if !expiry_task_looks(ticked, leading_term, led_term) {
            return;
        }
        if role != Role::Leader {
            if node_lessor.led_term.take().is_some() {
                node_lessor.lessor.demote();
            }
            return;
        }
        if postgres_away {
            return;
        }
        node_lessor.lessor.reconcile(&leases, now);
        if node_lessor.led_term != Some(term) {
            node_lessor.lessor.promote(now, extension);
            node_lessor.led_term = Some(term);
            node_lessor.promoted_tick = tick;
        }
        let due = node_lessor.lessor.to_revoke(now, extension * 2);
        for id in due {
            self.propose_lease(index, Command::LeaseRevoke { id }, LeaseAsk::Revoke);
        }
    }

    /// Rule 3 of `lease_expiry`, once the cluster recovered: on every
    /// node that leads, no lease whose keep-alives stopped outlives its
    /// deadline by more than the bound.
    fn check_lease_expiries(&mut self) {
        let Some(client) = &self.leases.client else {
            return;
        };
        let Some(recovered_at) = client.recovered_at else {
            return;
        };
        let (rate_min, _) = self.clock_rates();
        let mut checks = Vec::new();
        for (index, node) in self.nodes.iter().enumerate() {
            let Some(node_lessor) = self.leases.lessors.get(index) else {
                continue;
            };
            let leading = node.is_leader()
                && node_lessor.incarnation == node.incarnation
                && node_lessor.led_term == node.raft().map(|raft| raft.term());
            if !leading {
                continue;
            }
            for id in node.store.state_machine.leases().keys() {
                if let Some((ttl, stopped)) = client.stopped.get(id) {
                    let since = node_lessor.promoted_tick.max(recovered_at);
                    let last_asked = self.leases.checker.last_asked(*id).unwrap_or(0);
                    checks.push((node.id, *id, *ttl, (*stopped).max(last_asked), since));
                }
            }
        }
        self.stats.leases[3] += checks.len() as u64;
        for (node, id, ttl, stopped, since) in checks {
            let result = self.leases.checker.check_expired(
                node,
                id,
                ttl,
                stopped,
                since,
                self.config.election_ticks_max,
                rate_min,
                LESSOR_TICKS,
                self.now,
            );
            self.check("lease_expiry", result);
        }
    }

    /// Proposes a lease command to node `index`.
    fn propose_lease(&mut self, index: usize, command: Command, ask: LeaseAsk) {
        self.next_operation_id += 1;
        let envelope = Envelope {
            client_id: 0,
            sequence: 0,
            operation_id: LEASE_OPERATION_BASE + self.next_operation_id,
            attempt: 0,
            command,
        };
        let input = QueuedInput::Propose(kv::encode(envelope));
        self.send_request(index, Waiting::Lease(ask), input);
    }

    /// The lease client's turn (every tick, in worlds that have one).
    pub(crate) fn run_lease_client(&mut self) {
        let quiet_at = self.config.ticks.saturating_sub(LEASE_QUIET_TICKS);
        let now = self.now;
        let ttl_min = self.lease_ttl_min();
        let Some(client) = &mut self.leases.client else {
            return;
        };
        if let Some(since) = client.in_flight_since {
            if now < since + LEASE_ANSWER_TICKS_MAX {
                return;
            }
            // No answer: ask again, perhaps elsewhere.
            client.in_flight_since = None;
            client.attempt += 1;
            client.target = client.rng.gen_range(0..self.config.nodes);
        }
        if now < client.next_at {
            return;
        }
        let attempt = client.attempt;
        let (id, ttl, phase) = match client.lease {
            Some((id, ttl, phase)) if now >= quiet_at => {
                client.lease = None;
                if phase != Phase::Granting {
                    client.stopped.insert(id, (ttl, now));
                }
                return;
            }
            Some(lease) => lease,
            None if now + LEASE_GRANT_LEAD_TICKS < quiet_at => {
                let ttl = ttl_min + client.rng.gen_range(0..=1);
                (0, ttl, Phase::Granting)
            }
            None => return,
        };
        if let Phase::KeepingAlive(until) = phase {
            if now >= until {
                // It stops keeping the lease alive.
                client.lease = None;
                client.stopped.insert(id, (ttl, now));
                client.next_at = now + client.rng.gen_range(20..=200);
                return;
            }
        }
        client.in_flight_since = Some(now);
        let target = client.target;
        match phase {
            Phase::Granting => {
                // A fresh id for every attempt, as the product picks one
                // for a grant that names none: a retried grant never
                // brings a revoked lease back.
                let id = client.next_id;
                client.next_id += 1;
                client.lease = Some((id, ttl, Phase::Granting));
                let ask = LeaseAsk::Grant { id, ttl, attempt };
                self.propose_lease(target, Command::LeaseGrant { id, ttl }, ask);
            }
            Phase::Putting => {
                let put = Command::Put {
                    key: LEASE_KEY_BASE + id as u64,
                    value: now.max(1),
                    lease: id,
                };
                self.propose_lease(target, put, LeaseAsk::Put { id, attempt });
            }
            Phase::KeepingAlive(_) => {
                // The instant and tick are filled in when the request
                // reaches the node (`World::deliver_queued`).
                let ask = LeaseAsk::KeepAlive {
                    id,
                    asked_at: Instant::default(),
                    asked_tick: 0,
                    attempt,
                };
                let read = QueuedInput::Read(ReadMode::Linearizable);
                self.send_request(target, Waiting::Lease(ask), read);
            }
        }
    }

    /// The cluster recovered after the faults (rule 3 applies from now).
    pub(crate) fn on_leases_recovered(&mut self) {
        if let Some(client) = &mut self.leases.client {
            client.recovered_at = Some(self.now);
        }
    }

    /// Node `index` answered a lease request.
    pub(crate) fn on_lease_reply(&mut self, index: usize, ask: LeaseAsk, reply: Reply) {
        let reply = match (ask, reply) {
            (LeaseAsk::Revoke, _) => return,
            (
                LeaseAsk::KeepAlive {
                    id,
                    asked_at,
                    asked_tick,
                    ..
                },
                Reply::ReadReady { .. },
            ) => match self.renew_lease(index, id, asked_at, asked_tick) {
                Some(ttl) => Reply::Applied {
                    index: raftgres::core::LogIndex(0),
                    response: ttl.to_le_bytes().to_vec(),
                },
                None => Reply::Refused(Refusal::Unavailable("not leader".into())),
            },
            (_, reply) => reply,
        };
        let (granted, now) = (matches!(ask, LeaseAsk::Grant { .. }), self.now);
        let node_now = self.nodes[index].now();
        if let (LeaseAsk::Grant { id, ttl, .. }, Reply::Applied { .. }) = (ask, &reply) {
            // The product's grant: the node that proposed and applied it
            // gives it its whole TTL at once.
            self.node_lessor(index).lessor.granted(id, ttl, node_now);
        }
        let nodes = self.config.nodes;
        let Some(client) = &mut self.leases.client else {
            return;
        };
        let attempt = match ask {
            LeaseAsk::Grant { attempt, .. }
            | LeaseAsk::Put { attempt, .. }
            | LeaseAsk::KeepAlive { attempt, .. } => attempt,
            LeaseAsk::Revoke => return,
        };
        if attempt != client.attempt || client.in_flight_since.is_none() {
            return;
        }
        client.in_flight_since = None;
        client.attempt += 1;
        let Some((id, ttl, phase)) = client.lease else {
            return;
        };
        match reply {
            Reply::Applied { response, .. } => {
                let ttl_ticks = ttl as u64 * 100;
                match phase {
                    _ if granted => {
                        // The lease granted is the one asked for last.
                        let LeaseAsk::Grant { id, .. } = ask else {
                            return;
                        };
                        client.lease = Some((id, ttl, Phase::Putting));
                        client.next_at = now;
                    }
                    Phase::Putting => {
                        if CommandOutput::from_bytes(&response)
                            == Some(CommandOutput::LeaseNotFound)
                        {
                            client.lease = None;
                            return;
                        }
                        let until = if client.rng.gen_ratio(1, 3) {
                            now + client.rng.gen_range(1..=6) * ttl_ticks
                        } else {
                            u64::MAX
                        };
                        client.lease = Some((id, ttl, Phase::KeepingAlive(until)));
                        client.next_at = now;
                    }
                    Phase::KeepingAlive(_) => {
                        let answered = i64::from_le_bytes(response.try_into().unwrap_or([0; 8]));
                        if answered == 0 {
                            // The lease is gone.
                            client.lease = None;
                            client.stopped.insert(id, (ttl, now));
                        } else {
                            client.next_at = now + ttl_ticks / 3;
                        }
                    }
                    Phase::Granting => {}
                }
            }
            Reply::Refused(refusal) => {
                client.target = match refusal {
                    Refusal::NotLeader {
                        leader: Some(leader),
                    } => leader.0 as usize - 1,
                    _ => client.rng.gen_range(0..nodes),
                };
                client.next_at = now + client.rng.gen_range(1..=10);
            }
            _ => {}
        }
    }

    /// The product's `Leases::renew` on node `index`, once the keep-alive's
    /// ReadIndex round released it: the lessor reconciled with the store's
    /// leases, then the TTL (0 for a lease the store does not hold), or
    /// `None` when the node's lessor does not lead (or its Postgres is
    /// away). An answer is a promise:
    /// `lease_expiry` records it.
    fn renew_lease(&mut self, index: usize, id: i64, asked_at: Instant, asked: u64) -> Option<i64> {
        let postgres_away = self.postgres_down_until[index] > self.now;
        let leases = self.nodes[index].store.state_machine.leases().clone();
        if postgres_away {
            // The product's read of the lease table fails: no answer.
            return None;
        }
        let lessor = &mut self.node_lessor(index).lessor;
        if !lessor.leading() {
            return None;
        }
        // As the product does after the round: the leases as the store
        // holds them now, not as the lessor last saw them (it looks after
        // an apply only when the role or the term moved).
        lessor.reconcile(&leases, asked_at);
        let ttl = lessor.renew(id, asked_at).unwrap_or(0);
        if ttl > 0 {
            let (_, rate_max) = self.clock_rates();
            let result = self
                .leases
                .checker
                .on_keep_alive_answered(id, asked, ttl, rate_max);
            self.check("lease_expiry", result);
            self.stats.leases[1] += 1;
        }
        Some(ttl)
    }

    /// Node `index` applied a lease command, or any command (rules 1 and
    /// 2 of `lease_expiry`).
    pub(crate) fn on_lease_applied(&mut self, index: usize, envelope: &Envelope) {
        if let Command::LeaseRevoke { id } = envelope.command {
            let node = self.nodes[index].id;
            let result = self.leases.checker.on_revoke_applied(node, id, self.now);
            self.check("lease_expiry", result);
            self.stats.leases[2] += 1;
        }
    }

    /// Rule 2 of `lease_expiry` on node `index`'s store.
    pub(crate) fn check_lease_attachments(&mut self, index: usize) {
        if !self.leases.enabled() {
            return;
        }
        let node = self.nodes[index].id;
        let mvcc = self.nodes[index].store.state_machine.mvcc();
        let result = LeaseExpiry::check_attachments(node, mvcc.rows().values(), mvcc.leases());
        self.check("lease_expiry", result);
    }
}
