//! The simulated clients, as the gRPC API offers them: writes with a
//! session (retried with the same client id and sequence until an answer
//! is certain) and without one (given up when the outcome is unknown),
//! Linearizable, Lease and Stale reads, requests sent to followers, all
//! through the pipeline's proposal and read paths. What each client is
//! told goes to the linearizability history and the outcome checkers.

use raftgres::core::{Entry, LogIndex, MembershipError, NodeId};
use raftgres::mvcc::Revision;
use raftgres::pipeline::{check_read_covered, ReadMode, Refusal, Reply};
use rand::Rng;

use crate::checkers::durability::AcknowledgedWrite;
use crate::checkers::linearizability::{Input, Operation, Output};
use crate::checkers::read_index_safety;
use crate::checkers::{held_requests, membership_safety};
use crate::kv::{self, Applied, Command, CommandOutput, CompactionRefused, Envelope};
use crate::node::{QueuedInput, SimNode, Waiting};
use crate::world::{FirstApply, World, IDLE_LEAD_TICKS, TRANSFER_LEAD_TICKS};

/// Operation ids at or above this are liveness probes, not client requests.
pub(crate) const PROBE_OPERATION_BASE: u64 = 1 << 62;
use crate::leases::LEASE_OPERATION_BASE;

/// A client with a session starts a new one after this many writes, so
/// that old sessions go idle and expire while the run goes on.
const WRITES_PER_SESSION: u64 = 12;

/// One write of an ordinary client in this many is a compaction of the
/// store's history instead: often enough that the history (and with it
/// every snapshot) stays a few dozen changes long, rarely enough to leave
/// the workload a key-value one. Taking the place of a write, it adds no
/// log entry to the workload.
const COMPACTION_ONE_IN: u32 = 24;
/// A compaction aims up to this many revisions below the revision its
/// client last saw (so that some fall at or below the compaction point
/// and are refused)...
const COMPACTION_BEHIND_MAX: Revision = 24;
/// ...and up to this many above it (so that some are beyond the current
/// revision and are refused).
const COMPACTION_AHEAD_MAX: Revision = 2;

/// What a request asks for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ask {
    /// A key-value operation on the request's key, recorded in the
    /// linearizable history.
    Kv(Input),
    /// A compaction of the store's history to `revision` (etcd's compaction,
    /// sent without a session). Not in the history: it changes no key's
    /// value, and the clients read only the current revision.
    Compact { revision: Revision },
}

impl Ask {
    fn is_read(self) -> bool {
        self == Ask::Kv(Input::Get)
    }
}

impl std::fmt::Debug for Ask {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ask::Kv(input) => write!(formatter, "{input:?}"),
            Ask::Compact { revision } => write!(formatter, "Compact {{ revision: {revision} }}"),
        }
    }
}

/// How a client reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ClientRead {
    /// Through the pipeline, confirmed by ReadIndex or a lease.
    Confirmed(ReadMode),
    /// Served at once from the asked node's database, without
    /// confirmation: may be stale, is not part of the linearizable history.
    Stale,
}

/// One client.
#[derive(Debug)]
pub(crate) struct Client {
    /// Whether its writes carry a session.
    uses_sessions: bool,
    /// Whether it sends its reads to any node, ignoring leader hints (a
    /// client reading from its nearest replica): followers forward them.
    reads_anywhere: bool,
    /// Whether it only reads, always at the node it last found leading
    /// (`SimConfig::pinned_reader_patience_ticks`).
    pinned_reader: bool,
    /// Its current session (0 before its first write with one).
    session_id: u64,
    /// The last sequence used in the current session.
    sequence: u64,
    leader_hint: Option<NodeId>,
    /// The node its last attempt went to: without a leader hint the next
    /// goes to the node after it (a client rotates through its endpoints,
    /// so one that only hears "no leader known", from nodes removed from
    /// the cluster, still finds the leader within one round).
    last_target: Option<usize>,
    request: Option<Request>,
    next_attempt_at: u64,
    /// The store's revision the client's last read saw (the revision a
    /// response header carries): where its compactions aim.
    revision_seen: Revision,
}

#[derive(Clone, Copy, Debug)]
struct Request {
    operation_id: u64,
    key: u64,
    ask: Ask,
    read: ClientRead,
    /// The session and sequence of a write (0 and 0 without a session).
    session_id: u64,
    sequence: u64,
    /// Position in the history, once first sent.
    history_position: Option<usize>,
    /// The highest commit index when the request was first sent: the
    /// command, if executed, was executed above it (see
    /// `World::retry_is_safe`).
    committed_at_first_send: LogIndex,
    /// The highest commit index when the current attempt was sent.
    committed_at_attempt: LogIndex,
    /// The current attempt: unique in the run, so that a late answer to an
    /// earlier attempt (of this request or another) is never taken for
    /// this one's.
    attempt: u64,
    /// The node the current attempt went to, and when.
    in_flight: Option<(usize, u64)>,
    /// Some attempt may have been applied.
    uncertain: bool,
}

impl Client {
    /// Client number `index`: two clients in three write with sessions,
    /// and every second client sends its reads to any node.
    pub(crate) fn new(index: usize) -> Client {
        Client {
            uses_sessions: index % 3 != 2,
            reads_anywhere: index % 2 == 1,
            pinned_reader: false,
            session_id: 0,
            sequence: 0,
            leader_hint: None,
            last_target: None,
            request: None,
            next_attempt_at: 0,
            revision_seen: 0,
        }
    }
}

impl Client {
    /// The client that only reads, at the node it last found leading.
    pub(crate) fn pinned_reader() -> Client {
        Client {
            uses_sessions: false,
            reads_anywhere: false,
            pinned_reader: true,
            ..Client::new(0)
        }
    }

    /// Whether a read of this client waits at node `index`.
    pub(crate) fn reading_at(&self, index: usize) -> bool {
        self.request.is_some_and(|request| {
            request.ask.is_read() && request.in_flight.is_some_and(|(node, _)| node == index)
        })
    }
}

impl World {
    pub(crate) fn run_clients(&mut self) {
        let quiet = self.now + IDLE_LEAD_TICKS >= self.idle_traffic.window_start();
        for client in 0..self.clients.len() {
            let Some(request) = self.clients[client].request else {
                if !quiet && self.now >= self.clients[client].next_attempt_at {
                    self.attempt_request(client);
                }
                continue;
            };
            match request.in_flight {
                Some((_, sent_at)) if self.now - sent_at > self.patience_ticks(client) => {
                    self.stats.client_timeouts += 1;
                    self.attempt_unanswered(client);
                }
                Some(_) => {}
                None if self.now >= self.clients[client].next_attempt_at => {
                    self.attempt_request(client)
                }
                None => {}
            }
        }
    }

    /// Ticks `client` waits for an answer before it gives up on the
    /// attempt.
    fn patience_ticks(&self, client: usize) -> u64 {
        match self.config.pinned_reader_patience_ticks {
            Some(patience) if self.clients[client].pinned_reader && self.now < self.fault_end => {
                patience
            }
            _ => self.config.client_timeout_ticks,
        }
    }

    fn new_request(&mut self, client: usize) -> Request {
        let operation_id = self.next_operation_id;
        self.next_operation_id += 1;
        let rng = &mut self.rng.clients;
        let key = rng.gen_range(0..self.config.keys);
        let mut read = ClientRead::Confirmed(ReadMode::Linearizable);
        let ask = if self.clients[client].pinned_reader {
            // Reads only, three in four with a lease.
            if rng.gen_range(0..4) < 3 {
                read = ClientRead::Confirmed(ReadMode::Lease);
            }
            self.read_liveness.on_read_started(client as u64, self.now);
            Ask::Kv(Input::Get)
        } else {
            match self.ordinary_input(&mut read, client) {
                Input::Get => Ask::Kv(Input::Get),
                write => match self.compaction_target(client) {
                    Some(revision) => Ask::Compact { revision },
                    None => Ask::Kv(write),
                },
            }
        };
        let (session_id, sequence) = match ask {
            Ask::Kv(Input::Put { value } | Input::CompareAndSwap { new: value, .. }) => {
                self.checkers.stale_reads.on_write_invoked(key, value);
                self.next_session(client)
            }
            Ask::Kv(Input::Get) | Ask::Compact { .. } => (0, 0),
        };
        Request {
            operation_id,
            key,
            ask,
            read,
            session_id,
            sequence,
            history_position: None,
            committed_at_first_send: self.commit_index_max,
            committed_at_attempt: self.commit_index_max,
            attempt: 0,
            in_flight: None,
            uncertain: false,
        }
    }

    /// Whether an ordinary client's next write is a compaction instead (one
    /// in `COMPACTION_ONE_IN`), and to which revision: a little behind the
    /// revision it last saw, now and then a little ahead. Drawn from a
    /// stream of its own, so that the other draws of a seed stay as they
    /// were until a compaction changes what happens.
    fn compaction_target(&mut self, client: usize) -> Option<Revision> {
        let rng = &mut self.rng.compaction;
        if !rng.gen_ratio(1, COMPACTION_ONE_IN) {
            return None;
        }
        let offset = rng.gen_range(-COMPACTION_BEHIND_MAX..=COMPACTION_AHEAD_MAX);
        Some((self.clients[client].revision_seen + offset).max(0))
    }

    /// What an ordinary client asks for: four in ten puts, four in ten
    /// reads (`read` says how), two in ten compare-and-swaps.
    fn ordinary_input(&mut self, read: &mut ClientRead, client: usize) -> Input {
        let rng = &mut self.rng.clients;
        match rng.gen_range(0..10u64) {
            0..=3 => {
                self.next_value += 1;
                Input::Put {
                    value: self.next_value,
                }
            }
            4..=7 => {
                *read = match rng.gen_range(0..10) {
                    0..=3 => ClientRead::Confirmed(ReadMode::Linearizable),
                    4..=7 => ClientRead::Confirmed(ReadMode::Lease),
                    _ => ClientRead::Stale,
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
        }
    }

    /// The session and sequence of `client`'s next write.
    fn next_session(&mut self, client: usize) -> (u64, u64) {
        let state = &mut self.clients[client];
        if !state.uses_sessions {
            return (0, 0);
        }
        if state.session_id == 0 || state.sequence >= WRITES_PER_SESSION {
            state.session_id = self.next_session_id;
            state.sequence = 0;
            self.next_session_id += 1;
        }
        state.sequence += 1;
        (state.session_id, state.sequence)
    }

    fn attempt_request(&mut self, client: usize) {
        let mut request = match self.clients[client].request {
            Some(request) => request,
            None => self.new_request(client),
        };
        let anywhere = self.clients[client].reads_anywhere && request.ask.is_read();
        let pinned = self.clients[client].pinned_reader;
        let hint = self.clients[client]
            .leader_hint
            .filter(|_| pinned || (self.rng.clients.gen_bool(0.8) && !anywhere));
        let nodes = self.nodes.len();
        let target = match (hint, self.clients[client].last_target) {
            (Some(hint), _) => hint.0 as usize - 1,
            (None, Some(last)) => (last + 1) % nodes,
            (None, None) => self.rng.clients.gen_range(0..nodes),
        };
        self.clients[client].last_target = Some(target);
        let unreachable = !self.reachable(NodeId(target as u64 + 1))
            || (request.read == ClientRead::Stale && !self.nodes[target].is_running());
        if unreachable {
            // Connection refused: nothing was sent.
            self.clients[client].request = Some(request);
            self.clients[client].leader_hint = None;
            self.clients[client].next_attempt_at = self.now + 1;
            return;
        }
        if request.uncertain && !self.retry_is_safe(&request, target) {
            // Its session may expire before the retry is applied: the
            // outcome stays unknown (the product's clients give up at a
            // deadline far shorter than the session expiry).
            self.clients[client].request = Some(request);
            return self.abandon_request(client);
        }
        let recorded = match request.ask {
            Ask::Kv(input) if request.read != ClientRead::Stale => Some(input),
            Ask::Kv(_) | Ask::Compact { .. } => None,
        };
        if let (None, Some(input)) = (request.history_position, recorded) {
            let stamp = self.next_stamp();
            self.history.push(Some(Operation {
                client: client as u64,
                key: request.key,
                input,
                output: Output::Unknown,
                invoked_at: stamp,
                returned_at: None,
            }));
            self.history_operation_ids.push(request.operation_id);
            request.history_position = Some(self.history.len() - 1);
        }
        self.next_attempt_id += 1;
        request.attempt = self.next_attempt_id;
        request.committed_at_attempt = self.commit_index_max;
        request.in_flight = Some((target, self.now));
        self.clients[client].request = Some(request);
        self.trace.record(
            self.now,
            "invoke",
            &[
                client as u64,
                request.operation_id,
                target as u64 + 1,
                request.attempt,
            ],
            || {
                format!(
                    "client {client} op {} attempt {} {:?} {:?} key {} session {}/{} at node {}",
                    request.operation_id,
                    request.attempt,
                    request.ask,
                    request.read,
                    request.key,
                    request.session_id,
                    request.sequence,
                    target + 1
                )
            },
        );
        let waiting = Waiting::Client {
            client,
            attempt: request.attempt,
            write_operation: (!request.ask.is_read()).then_some(request.operation_id),
        };
        let command = match request.ask {
            Ask::Kv(Input::Get) => {
                let ClientRead::Confirmed(mode) = request.read else {
                    return self.serve_stale_read(client, target, request);
                };
                if mode == ReadMode::Lease {
                    self.stats.lease_reads += 1;
                }
                return self.send_request(target, waiting, QueuedInput::Read(mode));
            }
            Ask::Kv(Input::Put { value }) => Command::Put {
                key: request.key,
                value,
                lease: 0,
            },
            Ask::Kv(Input::CompareAndSwap { expected, new }) => Command::CompareAndSwap {
                key: request.key,
                expected,
                new,
            },
            Ask::Compact { revision } => Command::Compact { revision },
        };
        let envelope = Envelope {
            client_id: request.session_id,
            sequence: request.sequence,
            operation_id: request.operation_id,
            attempt: request.attempt,
            command,
        };
        self.send_request(target, waiting, QueuedInput::Propose(kv::encode(envelope)));
    }

    /// Whether a retry of `request` sent to node `target` is applied
    /// before its session can expire. If executed, the command was executed
    /// at an index L above the commit index C at its first send; the retry
    /// lands at an index R; the session is forgotten before R only at an
    /// expiry point p < R with p - expiry > L, which cannot be when
    /// R - 1 <= C + expiry. R is the target's last index plus one plus
    /// whatever the target appends before the retry reaches it (other
    /// clients' commands, this client's earlier attempts still in
    /// flight): half the expiry is left for those. Bounding R by the last
    /// index alone let a retry land ten entries beyond it, past the
    /// session's expiry, and execute twice (`exactly_once`, seed 2142 on
    /// three nodes).
    fn retry_is_safe(&self, request: &Request, target: usize) -> bool {
        let last = self.nodes[target]
            .raft()
            .map_or(LogIndex(0), |raft| raft.log().last_index());
        let expiry = self.profile.session_expiry_entries;
        request.session_id != 0 && last.0 + expiry / 2 <= request.committed_at_first_send.0 + expiry
    }

    /// A stale read: the asked node's database, as it is.
    fn serve_stale_read(&mut self, client: usize, target: usize, request: Request) {
        let state_machine = &self.nodes[target].store.state_machine;
        let value = state_machine.get(request.key);
        self.clients[client].revision_seen = state_machine.revisions().current;
        self.stats.steps += 1;
        self.stats.stale_reads += 1;
        let result = self
            .checkers
            .stale_reads
            .on_stale_read(target as u64 + 1, request.key, value);
        self.check("stale_reads", result);
        let result = self.read_liveness.on_read_served(client as u64, self.now);
        self.check("read_liveness", result);
        self.clients[client].request = None;
        self.clients[client].next_attempt_at = self.now + self.think_ticks();
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

    fn think_ticks(&mut self) -> u64 {
        self.rng
            .clients
            .gen_range(0..=self.config.client_think_ticks_max)
    }

    /// The pipeline of node `node` answered a request.
    pub(crate) fn on_reply(&mut self, node: usize, waiting: Waiting, reply: Reply) {
        if let Waiting::Lease(ask) = waiting {
            return self.on_lease_reply(node, ask, reply);
        }
        if waiting == Waiting::MembershipChange {
            if let Reply::Applied { .. } = reply {
                self.stats.faults.membership_changes_applied += 1;
            }
            let in_progress = MembershipError::ChangeInProgress.to_string();
            if reply == Reply::Refused(Refusal::Unavailable(in_progress)) {
                let raft = self.nodes[node].raft().expect("it just answered");
                let result = membership_safety::check_in_progress_refusal(
                    raft.id(),
                    raft.log(),
                    raft.term(),
                );
                self.check("membership_safety", result);
            }
            let id = node as u64 + 1;
            self.trace.record(self.now, "membership", &[id], || {
                format!("node {id} answers a membership change: {reply:?}")
            });
            return;
        }
        let Waiting::Client {
            client,
            attempt,
            write_operation,
        } = waiting
        else {
            return;
        };
        if let Some(operation) = write_operation {
            self.judge_write_answer(operation, attempt, &reply);
        }
        let Some(mut request) = self.clients[client].request else {
            return;
        };
        if request.attempt != attempt || request.in_flight.is_none() {
            // An answer to an attempt the client gave up on.
            return;
        }
        request.in_flight = None;
        self.clients[client].request = Some(request);
        let words = [client as u64, request.operation_id, attempt];
        self.trace.record(self.now, "reply", &words, || {
            format!(
                "client {client} op {} attempt {attempt} <- node {}: {reply:?}",
                request.operation_id,
                node + 1
            )
        });
        match (request.ask, reply) {
            (Ask::Kv(Input::Get), Reply::ReadReady { index }) => {
                self.serve_read(client, node, index)
            }
            (Ask::Kv(Input::Get), Reply::Refused(refusal)) => self.retry_later(client, &refusal),
            (_, Reply::Applied { index, response }) => {
                self.write_applied(client, node, index, &response)
            }
            (_, Reply::Refused(Refusal::OutcomeUnknown(_))) => self.attempt_unanswered(client),
            (_, Reply::Refused(refusal)) => {
                if matches!(refusal, Refusal::InvalidArgument(_)) {
                    return self.abandon_request(client);
                }
                self.retry_later(client, &refusal);
            }
            (_, other) => self.fail(
                "driver",
                format!("node {} answered a client request with {other:?}", node + 1),
            ),
        }
    }

    /// Judges what the pipeline answered about a write attempt against
    /// what was applied, whether or not the client still waits for it.
    fn judge_write_answer(&mut self, operation: u64, attempt: u64, reply: &Reply) {
        let result = match reply {
            Reply::Applied { index, .. } => self
                .checkers
                .client_outcomes
                .on_told_applied(operation, *index),
            Reply::Refused(Refusal::OutcomeUnknown(_)) => Ok(()),
            Reply::Refused(_) => self
                .checkers
                .client_outcomes
                .on_told_failed((operation, attempt)),
            _ => Ok(()),
        };
        self.check("client_outcomes", result);
    }

    fn retry_later(&mut self, client: usize, refusal: &Refusal) {
        self.clients[client].leader_hint = match refusal {
            Refusal::NotLeader { leader } => *leader,
            _ => None,
        };
        self.clients[client].next_attempt_at = self.now + 1 + self.rng.clients.gen_range(0..3);
    }

    /// No answer for the current attempt (a timeout, a lost connection,
    /// or "outcome unknown"): a write may have been applied. With a
    /// session the client retries; without one it gives up.
    pub(crate) fn attempt_unanswered(&mut self, client: usize) {
        let Some(mut request) = self.clients[client].request else {
            return;
        };
        request.in_flight = None;
        if request.ask.is_read() {
            self.clients[client].request = Some(request);
            return self.abandon_request(client);
        }
        request.uncertain = true;
        self.clients[client].request = Some(request);
        if request.session_id == 0 {
            return self.abandon_request(client);
        }
        self.stats.session_retries += 1;
        self.clients[client].leader_hint = None;
        self.clients[client].next_attempt_at = self.now + 1 + self.rng.clients.gen_range(0..3);
    }

    /// Node `index` crashed: its clients' connections drop.
    pub(crate) fn clients_lose_node(&mut self, index: usize) {
        for client in 0..self.clients.len() {
            let waiting_here = self.clients[client]
                .request
                .and_then(|request| request.in_flight)
                .is_some_and(|(node, _)| node == index);
            if waiting_here {
                self.attempt_unanswered(client);
            }
        }
    }

    fn serve_read(&mut self, client: usize, node: usize, index: LogIndex) {
        let request = self.clients[client].request.expect("a read is outstanding");
        let store = &self.nodes[node].store;
        // The node's read service makes the same check in the statement
        // that reads.
        let covered = check_read_covered(index, store.state_machine.applied_index());
        if let (Err(behind), false) = (covered, self.reads_unchecked) {
            self.behind_reports.push((node, behind.stored_applied));
            return self.retry_later(client, &Refusal::Unavailable(behind.to_string()));
        }
        let value = store.state_machine.get(request.key);
        self.clients[client].revision_seen = store.state_machine.revisions().current;
        let id = self.nodes[node].id;
        let result = read_index_safety::check_read(
            id,
            request.operation_id,
            index,
            request.committed_at_attempt,
        );
        self.check("read_index_safety", result);
        self.complete(client, Some(Output::Value(value)), node);
    }

    fn write_applied(&mut self, client: usize, node: usize, index: LogIndex, response: &[u8]) {
        let request = self.clients[client]
            .request
            .expect("a write is outstanding");
        let Some(output) = CommandOutput::from_bytes(response) else {
            return self.fail(
                "driver",
                format!(
                    "node {} answered an undecodable response {response:?}",
                    node + 1
                ),
            );
        };
        if let Some((term, _)) = self.checkers.state_machine_safety.applied_at(index) {
            self.checkers.durability.on_acknowledged(AcknowledgedWrite {
                operation_id: request.operation_id,
                index,
                term,
            });
        }
        self.complete(client, history_output(output), node);
    }

    fn complete(&mut self, client: usize, output: Option<Output>, node: usize) {
        let request = self.clients[client]
            .request
            .take()
            .expect("a request is outstanding");
        let stamp = self.next_stamp();
        if request.ask.is_read() {
            let result = self.read_liveness.on_read_served(client as u64, self.now);
            self.check("read_liveness", result);
        }
        if let (Some(output), Some(position)) = (output, request.history_position) {
            let operation = self.history[position].as_mut().expect("recorded");
            operation.output = output;
            operation.returned_at = Some(stamp);
            self.stats.client_operations_completed += 1;
        }
        self.clients[client].leader_hint = Some(NodeId(node as u64 + 1));
        self.clients[client].next_attempt_at = self.now + self.think_ticks();
        self.trace.record(
            self.now,
            "return",
            &[client as u64, request.operation_id],
            || format!("client {client} op {} -> {output:?}", request.operation_id),
        );
    }

    /// The client stops: a write's outcome stays unknown (or, if no
    /// attempt can have been applied, it never happened), a read is
    /// forgotten.
    fn abandon_request(&mut self, client: usize) {
        let Some(request) = self.clients[client].request.take() else {
            return;
        };
        if request.ask.is_read() {
            if let Some(position) = request.history_position {
                self.history[position] = None;
            }
            let result = self
                .read_liveness
                .on_read_lost(client as u64, self.now, "abandoned");
            self.check("read_liveness", result);
        } else if request.uncertain {
            self.stats.client_operations_unknown += 1;
        } else if let Some(position) = request.history_position {
            // Every attempt was refused: it certainly did not happen.
            self.history[position] = None;
        }
        if !self.clients[client].pinned_reader {
            self.clients[client].leader_hint = None;
        }
        self.clients[client].next_attempt_at = self.now + 1;
        self.trace.record(
            self.now,
            "abandon",
            &[client as u64, request.operation_id],
            || {
                format!(
                    "client {client} op {} gives up (uncertain {})",
                    request.operation_id, request.uncertain
                )
            },
        );
    }

    /// Node `index` executed or answered `entry` (`applied` says how).
    pub(crate) fn on_applied(&mut self, index: usize, entry: &Entry, applied: &Applied) {
        let id = self.nodes[index].id;
        let result = self.checkers.state_machine_safety.on_apply(id, entry);
        self.check("state_machine_safety", result);
        let Some(envelope) = applied.envelope else {
            return;
        };
        if (LEASE_OPERATION_BASE..PROBE_OPERATION_BASE).contains(&envelope.operation_id) {
            return self.on_lease_applied(index, &envelope);
        }
        if envelope.operation_id >= PROBE_OPERATION_BASE {
            // Recovered only once every running member (voter or
            // learner, in the membership the applier knows) applied the
            // probe: a follower whose replication stalled fails liveness
            // too. A node removed from the cluster receives nothing more.
            let members = self.nodes[index]
                .raft()
                .map(|raft| raft.membership().members())
                .unwrap_or_default();
            let appliers = self
                .probe_appliers
                .entry(envelope.operation_id)
                .or_default();
            appliers.insert(id);
            let all_applied = self
                .nodes
                .iter()
                .filter(|node| node.pipeline.is_some() && members.contains(&node.id))
                .all(|node| appliers.contains(&node.id));
            if all_applied {
                self.liveness.on_probe_committed(self.now);
                self.on_recovered();
            }
            return;
        }
        let attempt = (envelope.operation_id, envelope.attempt);
        let result =
            self.checkers
                .client_outcomes
                .on_apply(id, attempt, entry.index, applied.fresh);
        self.check("client_outcomes", result);
        if !applied.fresh {
            return;
        }
        if envelope.client_id != 0 {
            let result = self.checkers.exactly_once.on_fresh_apply(
                id,
                envelope.client_id,
                envelope.sequence,
                entry.index,
            );
            self.check("exactly_once", result);
        }
        if !self.first_applies.contains_key(&envelope.operation_id) {
            let stamp = self.next_stamp();
            let output = applied.output.expect("a fresh application has an output");
            match output {
                CommandOutput::Compaction(Ok(())) => self.stats.history_compactions += 1,
                CommandOutput::Compaction(Err(refused)) => {
                    self.stats.history_compactions_refused[match refused {
                        CompactionRefused::Compacted => 0,
                        CompactionRefused::FutureRevision => 1,
                    }] += 1;
                }
                CommandOutput::Done
                | CommandOutput::Swapped(_)
                | CommandOutput::LeaseGrant(_)
                | CommandOutput::LeaseRevoke(_)
                | CommandOutput::LeaseNotFound => {}
            }
            self.first_applies
                .insert(envelope.operation_id, FirstApply { stamp, output });
        }
    }

    /// The liveness probe: after faults stop, a command must commit on
    /// every running node within the bound.
    pub(crate) fn run_liveness_probe(&mut self) {
        let result = self.read_liveness.check(self.now);
        self.check("read_liveness", result);
        self.check_held_requests();
        if self.now == self.idle_traffic.window_start() {
            self.open_idle_window();
        }
        let result = self.transfer_liveness.check(self.now);
        self.check("transfer_liveness", result);
        if self.now + TRANSFER_LEAD_TICKS == self.idle_traffic.window_start() {
            self.ask_for_transfer();
        }
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
        let envelope = Envelope {
            client_id: 0,
            sequence: 0,
            operation_id: PROBE_OPERATION_BASE + self.now,
            attempt: 0,
            command: Command::Probe,
        };
        self.trace.record(self.now, "probe", &[leader.0], || {
            format!("liveness probe at node {leader}")
        });
        let input = QueuedInput::Propose(kv::encode(envelope));
        self.send_request(index, Waiting::Nobody, input);
    }

    /// The idle window opens: it counts if the cluster is quiet now (see
    /// `checkers::idle_traffic`).
    fn open_idle_window(&mut self) {
        let quiet = self.liveness.recovery_ticks().is_some()
            && !self.transfer_liveness.pending()
            && self.clients.iter().all(|client| client.request.is_none())
            && self
                .nodes
                .iter()
                .all(|node| node.is_spare() || (node.is_running() && node.waiting.is_empty()));
        self.check_quiet_end();
        let leaders: Vec<&SimNode> = self.nodes.iter().filter(|node| node.is_leader()).collect();
        if let ([leader], true) = (leaders.as_slice(), quiet) {
            let term = leader.raft().expect("the leader runs").term();
            self.idle_traffic.arm(leader.id.0, term.0);
        }
    }

    /// When the idle window opens, if the cluster had recovered before its
    /// clients stopped starting requests, everything they asked has been
    /// answered (see `checkers::held_requests::check_quiet`).
    fn check_quiet_end(&mut self) {
        let quiet_since = self.now - IDLE_LEAD_TICKS;
        let recovered_before_quiet = self
            .liveness
            .recovery_ticks()
            .is_some_and(|ticks| self.fault_end + ticks <= quiet_since);
        if !recovered_before_quiet {
            return;
        }
        // Where reads may starve (see `SimConfig::reads_may_starve`), a
        // reader still being refused and retrying is no fault: only the
        // writes must be done, and no node may still hold a read that
        // arrived before the quiet began (a read a quiet leader never
        // confirms). Seed 6753: nine readers, one read slot, a transfer
        // in the quiet window; the last reader was still being refused 60
        // ticks on.
        let starving_reads = self.config.reads_may_starve();
        let waiting_clients: Vec<u64> = (0..self.clients.len())
            .filter(|client| {
                self.clients[*client]
                    .request
                    .is_some_and(|request| !(starving_reads && request.ask.is_read()))
            })
            .map(|client| client as u64)
            .collect();
        let holding_nodes: Vec<u64> = self
            .nodes
            .iter()
            .filter(|node| {
                node.waiting
                    .values()
                    .any(|(waiting, arrived)| match waiting {
                        Waiting::Client {
                            write_operation: None,
                            ..
                        } if starving_reads => *arrived <= quiet_since,
                        Waiting::Client { .. } => true,
                        _ => false,
                    })
            })
            .map(|node| node.id.0)
            .collect();
        let result =
            held_requests::check_quiet(self.now, quiet_since, &waiting_clients, &holding_nodes);
        self.check("held_requests", result);
    }

    /// No running node holds a request too long after recovery.
    fn check_held_requests(&mut self) {
        for node in &self.nodes {
            if !node.is_running() {
                continue;
            }
            let arrivals = node.waiting.values().map(|(_, arrived)| *arrived);
            let result = self.held_requests.check(node.id.0, self.now, arrivals);
            if result.is_err() {
                return self.check("held_requests", result);
            }
        }
    }

    /// Asks the leader of a recovered cluster whose clients have stopped
    /// starting requests (once per run) to hand leadership to another
    /// running node (see `checkers::transfer_liveness`).
    fn ask_for_transfer(&mut self) {
        if self.transfer_asked || self.liveness.recovery_ticks().is_none() {
            return;
        }
        let Some(leader) = self.leader() else { return };
        let Some(membership) = self.cluster_membership() else {
            return;
        };
        let others: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|node| {
                node.id != leader && node.is_running() && membership.voters.contains(&node.id)
            })
            .map(|node| node.id)
            .collect();
        if others.is_empty() {
            return;
        }
        self.transfer_asked = true;
        let target = others[self.rng.faults.gen_range(0..others.len())];
        let index = leader.0 as usize - 1;
        let term = self.nodes[index].raft().expect("the leader runs").term();
        self.transfer_liveness
            .on_requested(leader, target, term, self.now);
        self.term_settling.allow_new_term();
        self.trace
            .record(self.now, "transfer", &[leader.0, target.0], || {
                format!("after recovery: {leader} -> {target}")
            });
        self.send_request(index, Waiting::Nobody, QueuedInput::Transfer(target));
    }
}

/// What the linearizable history records for a write's output (`None`
/// for a compaction or a lease command, which are not in the history).
pub(crate) fn history_output(output: CommandOutput) -> Option<Output> {
    match output {
        CommandOutput::Done => Some(Output::Done),
        CommandOutput::Swapped(swapped) => Some(Output::Swapped(swapped)),
        CommandOutput::Compaction(_)
        | CommandOutput::LeaseGrant(_)
        | CommandOutput::LeaseRevoke(_)
        | CommandOutput::LeaseNotFound => None,
    }
}
