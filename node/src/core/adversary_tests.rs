//! Peer messages are untrusted input: anyone who reaches the peer port can
//! send one. This property test proves that no message, however forged,
//! makes the core panic or break its own invariants. It grows nodes in
//! realistic states (terms, logs, commit indexes and snapshots produced by
//! a real, faulty history in `test_cluster`), then feeds one of them
//! arbitrary messages and mutations of real ones, interleaved with the
//! driver's inputs, and checks after every input:
//!
//! - the log never holds an entry of a term above the node's term
//!   (otherwise the node could not restart: `Raft::new` asserts it);
//! - the hard state the node asks to persist never goes down, and a vote
//!   once persisted never changes within its term (section 5.2);
//! - a leader's match and next index for each peer stay within its log;
//! - commit and applied indexes never decrease (except across a restart,
//!   which loses the commit index and any snapshot not yet durable);
//! - no entry at or below the commit index is ever changed, and whatever
//!   is handed out for applying matches what was committed (State Machine
//!   Safety, section 5.4.3, as far as one node can see it);
//! - a message reported as implausible changed nothing;
//! - everything the node sends still passes `validate_message`.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::sample::Index;

use super::test_cluster::TestCluster;
use super::{
    Entry, EntryPayload, HardState, LogIndex, Message, MessageBody, NodeId, Raft, Snapshot,
    SnapshotMeta, Status, Term,
};

/// Nodes in the cluster the target lives in.
const CLUSTER_SIZE: u64 = 3;

/// One input to the node under attack.
#[derive(Clone, Debug)]
enum Input {
    /// A generated message, shaped relative to the target's state.
    Arbitrary {
        from: u64,
        template: Template,
        repair: bool,
    },
    /// A real message sent in the cluster's history, retargeted and
    /// mutated.
    Mutated {
        pick: Index,
        mutation: Mutation,
        repair: bool,
    },
    /// The driver carries out the target's Ready.
    Process,
    /// A tick.
    Tick,
    /// The driver compacts the log up to the applied index.
    Compact,
    /// The target crashes and restarts from its disk.
    Restart,
}

/// A message whose terms and indexes are offsets from the target's term,
/// last index and read round, so that generated values land near the
/// interesting edges of a real state.
#[derive(Clone, Debug)]
struct Template {
    term: i64,
    body: TemplateBody,
}

#[derive(Clone, Debug)]
enum TemplateBody {
    Vote {
        pre_vote: bool,
        last_log_index: i64,
        last_log_term: i64,
        leadership_transfer: bool,
    },
    VoteResponse {
        pre_vote: bool,
        granted: bool,
    },
    Append {
        prev_log_index: i64,
        prev_log_term: i64,
        entry_terms: Vec<i64>,
        leader_commit: i64,
    },
    AppendResponse {
        index: i64,
        rejected: bool,
        hint_index: i64,
        hint_term: i64,
    },
    Heartbeat {
        leader_commit: i64,
        read_round: i64,
    },
    HeartbeatResponse {
        read_round: i64,
    },
    TimeoutNow,
    Snapshot {
        index: i64,
        term: i64,
    },
    ReadIndexRequest {
        context: u64,
    },
    ReadIndexResponse {
        context: Option<u64>,
        index: i64,
        refused: bool,
    },
}

/// One change to a real message.
#[derive(Clone, Debug)]
enum Mutation {
    None,
    Term(i64),
    From(u64),
    Index(i64),
    EntryTerm { position: usize, delta: i64 },
    Commit(i64),
    ReadRound(i64),
    Context(u64),
    Flip,
}

fn offset(base: u64, delta: i64) -> u64 {
    base.saturating_add_signed(delta)
}

fn template_strategy() -> impl Strategy<Value = Template> {
    let index = -8i64..4;
    let term = -3i64..2;
    let body = prop_oneof![
        (any::<bool>(), index.clone(), term.clone(), any::<bool>()).prop_map(
            |(pre_vote, last_log_index, last_log_term, leadership_transfer)| TemplateBody::Vote {
                pre_vote,
                last_log_index,
                last_log_term,
                leadership_transfer,
            }
        ),
        (any::<bool>(), any::<bool>())
            .prop_map(|(pre_vote, granted)| TemplateBody::VoteResponse { pre_vote, granted }),
        (
            index.clone(),
            term.clone(),
            proptest::collection::vec(term.clone(), 0..5),
            index.clone()
        )
            .prop_map(
                |(prev_log_index, prev_log_term, entry_terms, leader_commit)| {
                    TemplateBody::Append {
                        prev_log_index,
                        prev_log_term,
                        entry_terms,
                        leader_commit,
                    }
                }
            ),
        (index.clone(), any::<bool>(), index.clone(), term.clone()).prop_map(
            |(index, rejected, hint_index, hint_term)| {
                TemplateBody::AppendResponse {
                    index,
                    rejected,
                    hint_index,
                    hint_term,
                }
            }
        ),
        (index.clone(), -2i64..3).prop_map(|(leader_commit, read_round)| {
            TemplateBody::Heartbeat {
                leader_commit,
                read_round,
            }
        }),
        (-2i64..3).prop_map(|read_round| TemplateBody::HeartbeatResponse { read_round }),
        Just(TemplateBody::TimeoutNow),
        (index.clone(), term.clone())
            .prop_map(|(index, term)| TemplateBody::Snapshot { index, term }),
        (0u64..4).prop_map(|context| TemplateBody::ReadIndexRequest { context }),
        (proptest::option::of(0u64..400), index, any::<bool>()).prop_map(
            |(context, index, refused)| TemplateBody::ReadIndexResponse {
                context,
                index,
                refused,
            }
        ),
    ];
    // Mostly the target's own term: that is where a message gets furthest.
    let term = prop_oneof![3 => Just(0i64), 1 => -2i64..3];
    (term, body).prop_map(|(term, body)| Template { term, body })
}

fn mutation_strategy() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        Just(Mutation::None),
        (-2i64..3).prop_map(Mutation::Term),
        (0u64..5).prop_map(Mutation::From),
        (-4i64..5).prop_map(Mutation::Index),
        (0usize..4, -3i64..4).prop_map(|(position, delta)| Mutation::EntryTerm { position, delta }),
        (-4i64..20).prop_map(Mutation::Commit),
        (-2i64..4).prop_map(Mutation::ReadRound),
        (0u64..400).prop_map(Mutation::Context),
        Just(Mutation::Flip),
    ]
}

fn input_strategy() -> impl Strategy<Value = Input> {
    prop_oneof![
        4 => (1u64..=CLUSTER_SIZE, template_strategy(), any::<bool>())
            .prop_map(|(from, template, repair)| Input::Arbitrary { from, template, repair }),
        4 => (any::<Index>(), mutation_strategy(), any::<bool>())
            .prop_map(|(pick, mutation, repair)| Input::Mutated { pick, mutation, repair }),
        2 => Just(Input::Process),
        1 => Just(Input::Tick),
        1 => Just(Input::Compact),
        1 => Just(Input::Restart),
    ]
}

/// Builds the message `template` describes, from `from` to the target.
fn materialize(raft: &Raft, from: u64, template: &Template) -> Message {
    let term = raft.term().0;
    let last = raft.log().last_index().0;
    let at_term = |delta: i64| Term(offset(term, delta));
    let at_index = |delta: i64| LogIndex(offset(last, delta));
    let round = |delta: i64| offset(raft.read_round, delta);
    let body = match &template.body {
        TemplateBody::Vote {
            pre_vote,
            last_log_index,
            last_log_term,
            leadership_transfer,
        } => MessageBody::VoteRequest {
            pre_vote: *pre_vote,
            last_log_index: at_index(*last_log_index),
            last_log_term: at_term(*last_log_term),
            leadership_transfer: *leadership_transfer,
        },
        TemplateBody::VoteResponse { pre_vote, granted } => MessageBody::VoteResponse {
            pre_vote: *pre_vote,
            granted: *granted,
        },
        TemplateBody::Append {
            prev_log_index,
            prev_log_term,
            entry_terms,
            leader_commit,
        } => {
            let prev_log_index = at_index(*prev_log_index);
            let entries = entry_terms
                .iter()
                .enumerate()
                .map(|(position, delta)| Entry {
                    term: at_term(*delta),
                    index: LogIndex(prev_log_index.0 + 1 + position as u64),
                    payload: EntryPayload::Command(vec![0xA5, position as u8]),
                })
                .collect();
            MessageBody::AppendRequest {
                prev_log_index,
                prev_log_term: at_term(*prev_log_term),
                entries,
                leader_commit: at_index(*leader_commit),
            }
        }
        TemplateBody::AppendResponse {
            index,
            rejected,
            hint_index,
            hint_term,
        } => MessageBody::AppendResponse {
            index: at_index(*index),
            rejected: *rejected,
            reject_hint_index: at_index(*hint_index),
            reject_hint_term: at_term(*hint_term),
        },
        TemplateBody::Heartbeat {
            leader_commit,
            read_round,
        } => MessageBody::HeartbeatRequest {
            leader_commit: at_index(*leader_commit),
            read_round: round(*read_round),
        },
        TemplateBody::HeartbeatResponse { read_round } => MessageBody::HeartbeatResponse {
            read_round: round(*read_round),
        },
        TemplateBody::TimeoutNow => MessageBody::TimeoutNow,
        TemplateBody::Snapshot { index, term } => MessageBody::InstallSnapshot {
            snapshot: Snapshot {
                membership: Box::new(crate::core::Membership::new((1..=3).map(NodeId))),
                meta: SnapshotMeta {
                    index: at_index(*index),
                    term: at_term(*term),
                },
            },
        },
        TemplateBody::ReadIndexRequest { context } => {
            MessageBody::ReadIndexRequest { context: *context }
        }
        TemplateBody::ReadIndexResponse {
            context,
            index,
            refused,
        } => {
            // Half the time, answer a read the target really forwarded.
            let forwarded = raft.reads.forwarded.first().map(|read| read.context);
            MessageBody::ReadIndexResponse {
                context: context.or(forwarded).unwrap_or(0),
                index: at_index(*index),
                refused: *refused,
            }
        }
    };
    Message {
        from: NodeId(from),
        to: raft.id(),
        term: at_term(template.term),
        body,
    }
}

fn mutate(message: &mut Message, mutation: &Mutation) {
    match (mutation, &mut message.body) {
        (Mutation::None, _) => {}
        (Mutation::Term(delta), _) => message.term = Term(offset(message.term.0, *delta)),
        (Mutation::From(from), _) => message.from = NodeId(*from),
        (
            Mutation::Index(delta),
            MessageBody::AppendRequest {
                prev_log_index,
                entries,
                ..
            },
        ) => {
            *prev_log_index = LogIndex(offset(prev_log_index.0, *delta));
            for entry in entries {
                entry.index = LogIndex(offset(entry.index.0, *delta));
            }
        }
        (Mutation::Index(delta), MessageBody::AppendResponse { index, .. })
        | (Mutation::Index(delta), MessageBody::ReadIndexResponse { index, .. }) => {
            *index = LogIndex(offset(index.0, *delta))
        }
        (Mutation::Index(delta), MessageBody::InstallSnapshot { snapshot }) => {
            snapshot.meta.index = LogIndex(offset(snapshot.meta.index.0, *delta))
        }
        (Mutation::Index(delta), MessageBody::VoteRequest { last_log_index, .. }) => {
            *last_log_index = LogIndex(offset(last_log_index.0, *delta))
        }
        (Mutation::EntryTerm { position, delta }, MessageBody::AppendRequest { entries, .. }) => {
            if let Some(entry) = entries.get_mut(*position) {
                entry.term = Term(offset(entry.term.0, *delta));
            }
        }
        (Mutation::EntryTerm { delta, .. }, MessageBody::InstallSnapshot { snapshot }) => {
            snapshot.meta.term = Term(offset(snapshot.meta.term.0, *delta))
        }
        (Mutation::Commit(delta), MessageBody::AppendRequest { leader_commit, .. })
        | (Mutation::Commit(delta), MessageBody::HeartbeatRequest { leader_commit, .. }) => {
            *leader_commit = LogIndex(offset(leader_commit.0, *delta))
        }
        (Mutation::ReadRound(delta), MessageBody::HeartbeatRequest { read_round, .. })
        | (Mutation::ReadRound(delta), MessageBody::HeartbeatResponse { read_round }) => {
            *read_round = offset(*read_round, *delta)
        }
        (Mutation::Context(new), MessageBody::ReadIndexRequest { context })
        | (Mutation::Context(new), MessageBody::ReadIndexResponse { context, .. }) => {
            *context = *new
        }
        (Mutation::Flip, MessageBody::AppendResponse { rejected, .. }) => *rejected = !*rejected,
        (Mutation::Flip, MessageBody::ReadIndexResponse { refused, .. }) => *refused = !*refused,
        (Mutation::Flip, MessageBody::VoteResponse { granted, .. }) => *granted = !*granted,
        (Mutation::Flip, MessageBody::VoteRequest { pre_vote, .. }) => *pre_vote = !*pre_vote,
        _ => {}
    }
}

/// Bends `message` into the shape `validate_message` accepts, so that most
/// generated messages reach the stateful code instead of stopping at the
/// boundary.
fn repair(message: &mut Message) {
    message.term = message.term.max(Term(1));
    let term = message.term;
    match &mut message.body {
        MessageBody::VoteRequest {
            last_log_index,
            last_log_term,
            ..
        } => {
            if *last_log_term >= term {
                *last_log_term = Term(term.0 - 1);
            }
            if *last_log_term == Term(0) || *last_log_index == LogIndex(0) {
                *last_log_term = Term(0);
                *last_log_index = LogIndex(0);
            }
        }
        MessageBody::AppendRequest {
            prev_log_index,
            prev_log_term,
            entries,
            ..
        } => {
            *prev_log_term = (*prev_log_term).min(term);
            if *prev_log_term == Term(0) || *prev_log_index == LogIndex(0) {
                *prev_log_term = Term(0);
                *prev_log_index = LogIndex(0);
            }
            let mut floor = (*prev_log_term).max(Term(1));
            for (position, entry) in entries.iter_mut().enumerate() {
                entry.index = LogIndex(prev_log_index.0 + 1 + position as u64);
                entry.term = entry.term.clamp(floor, term);
                floor = entry.term;
            }
        }
        MessageBody::AppendResponse {
            index,
            rejected,
            reject_hint_index,
            reject_hint_term,
        } => {
            if !*rejected {
                *reject_hint_index = LogIndex(0);
                *reject_hint_term = Term(0);
            } else {
                *index = (*index).max(LogIndex(1));
                *reject_hint_index = (*reject_hint_index).min(*index);
                *reject_hint_term = (*reject_hint_term).min(term);
                if *reject_hint_term == Term(0) || *reject_hint_index == LogIndex(0) {
                    *reject_hint_term = Term(0);
                    *reject_hint_index = LogIndex(0);
                }
            }
        }
        MessageBody::InstallSnapshot { snapshot } => {
            snapshot.meta.index = snapshot.meta.index.max(LogIndex(1));
            snapshot.meta.term = snapshot.meta.term.clamp(Term(1), term);
        }
        MessageBody::ReadIndexResponse { index, refused, .. } if *refused => *index = LogIndex(0),
        _ => {}
    }
    if message.from == message.to || message.from == NodeId(0) {
        message.from = NodeId(message.to.0 % CLUSTER_SIZE + 1);
    }
}

/// Everything a refused message must leave untouched.
#[derive(Debug, PartialEq, Eq)]
struct Fingerprint {
    status: Status,
    entries: Vec<Entry>,
    has_ready: bool,
}

fn fingerprint(raft: &Raft) -> Fingerprint {
    Fingerprint {
        status: raft.status(),
        entries: raft.log().entries().to_vec(),
        has_ready: raft.has_ready(),
    }
}

/// What the checks remember between inputs.
#[derive(Default)]
struct Observer {
    persisted_hard_state: HardState,
    hard_state: HardState,
    commit: LogIndex,
    applied: LogIndex,
    /// Entries seen at or below the commit index, by index.
    committed: BTreeMap<LogIndex, Entry>,
}

impl Observer {
    fn check_hard_state(before: HardState, after: HardState, what: &str) -> Result<(), String> {
        if after.term < before.term {
            return Err(format!(
                "{what} term went from {} to {}",
                before.term, after.term
            ));
        }
        if after.term == before.term
            && before.voted_for.is_some()
            && after.voted_for != before.voted_for
        {
            return Err(format!(
                "{what} vote in term {} changed from {:?} to {:?}",
                after.term, before.voted_for, after.voted_for
            ));
        }
        Ok(())
    }

    /// The checks that hold after every input.
    fn check(&mut self, raft: &Raft) -> Result<(), String> {
        let hard_state = raft.hard_state();
        Self::check_hard_state(self.hard_state, hard_state, "the")?;
        self.hard_state = hard_state;
        let log = raft.log();
        if log.last_term() > raft.term() || log.snapshot().term > raft.term() {
            return Err(format!(
                "the log ends in term {} (snapshot term {}) beyond the node's term {}",
                log.last_term(),
                log.snapshot().term,
                raft.term()
            ));
        }
        if log.commit_index() < self.commit {
            return Err(format!(
                "commit went from {} to {}",
                self.commit,
                log.commit_index()
            ));
        }
        if log.applied_index() < self.applied {
            return Err(format!(
                "applied went from {} to {}",
                self.applied,
                log.applied_index()
            ));
        }
        for peer in raft.status().peers {
            let within_log =
                peer.match_index < peer.next_index && peer.next_index <= log.last_index().next();
            if !within_log {
                return Err(format!(
                    "the leader tracks peer {} at match {} next {}, outside its log ending at {}",
                    peer.id,
                    peer.match_index,
                    peer.next_index,
                    log.last_index()
                ));
            }
        }
        self.commit = log.commit_index();
        self.applied = log.applied_index();
        for entry in log.entries() {
            if entry.index > self.commit {
                break;
            }
            self.remember_committed(entry, "the log holds")?;
        }
        Ok(())
    }

    fn remember_committed(&mut self, entry: &Entry, what: &str) -> Result<(), String> {
        match self.committed.get(&entry.index) {
            Some(known) if known != entry => {
                Err(format!("{what} {entry:?} where {known:?} was committed"))
            }
            Some(_) => Ok(()),
            None => {
                self.committed.insert(entry.index, entry.clone());
                Ok(())
            }
        }
    }
}

/// Feeds `inputs` to node `target` of a cluster grown by `warmup` random
/// steps from `seed` (`target` past the last node means the leader, if
/// there is one, since leaders hold the most state to attack), checking
/// every invariant after every input. Returns the node attacked.
fn attack(seed: u64, warmup: usize, target: usize, inputs: &[Input]) -> Result<usize, String> {
    let mut cluster = TestCluster::new(CLUSTER_SIZE, seed);
    cluster.run(warmup);
    let target = if target < CLUSTER_SIZE as usize {
        target
    } else {
        cluster.leader().unwrap_or(0)
    };
    cluster.restart(target);
    let mut observer = Observer::default();
    {
        let raft = cluster.nodes[target].raft.as_ref().expect("restarted");
        observer.persisted_hard_state = cluster.nodes[target].disk.hard_state;
        observer.check(raft)?;
    }
    for (step, input) in inputs.iter().enumerate() {
        let context = |error: String| format!("input {step} ({input:?}): {error}");
        apply(&mut cluster, target, input, &mut observer).map_err(context)?;
        let raft = cluster.nodes[target].raft.as_ref().expect("target runs");
        observer.check(raft).map_err(context)?;
    }
    Ok(target)
}

fn apply(
    cluster: &mut TestCluster,
    target: usize,
    input: &Input,
    observer: &mut Observer,
) -> Result<(), String> {
    match input {
        Input::Arbitrary {
            from,
            template,
            repair: repair_it,
        } => {
            let raft = cluster.nodes[target].raft.as_ref().expect("target runs");
            let mut message = materialize(raft, *from, template);
            if *repair_it {
                repair(&mut message);
            }
            step_checked(cluster, target, message)
        }
        Input::Mutated {
            pick,
            mutation,
            repair: repair_it,
        } => {
            if cluster.history.is_empty() {
                return Ok(());
            }
            let mut message = pick.get(&cluster.history).clone();
            message.to = NodeId(target as u64 + 1);
            if message.from == message.to {
                message.from = NodeId(message.to.0 % CLUSTER_SIZE + 1);
            }
            mutate(&mut message, mutation);
            if *repair_it {
                repair(&mut message);
            }
            step_checked(cluster, target, message)
        }
        Input::Process => {
            if let Some(ready) = cluster.process(target) {
                if let Some(hard_state) = ready.hard_state {
                    let before = observer.persisted_hard_state;
                    Observer::check_hard_state(before, hard_state, "the persisted")?;
                    observer.persisted_hard_state = hard_state;
                }
                for entry in &ready.committed_entries {
                    observer.remember_committed(entry, "the driver was handed")?;
                }
            }
            Ok(())
        }
        Input::Tick => {
            let raft = cluster.nodes[target].raft.as_mut().expect("target runs");
            raft.tick();
            Ok(())
        }
        Input::Compact => {
            cluster.compact(target);
            Ok(())
        }
        Input::Restart => {
            cluster.crash(target);
            cluster.restart(target);
            // The commit index, an installed snapshot not yet durable and
            // the unpersisted hard state are volatile.
            let raft = cluster.nodes[target].raft.as_ref().expect("restarted");
            observer.commit = raft.log().commit_index();
            observer.applied = raft.log().applied_index();
            // Entries the node knew committed only in memory are no longer
            // committed as far as it knows; what it applied stays.
            observer.committed.split_off(&observer.commit.next());
            observer.hard_state = raft.hard_state();
            Ok(())
        }
    }
}

/// Steps `message` into the target; a message it reports as implausible
/// must leave it exactly as it was.
fn step_checked(cluster: &mut TestCluster, target: usize, message: Message) -> Result<(), String> {
    let raft = cluster.nodes[target].raft.as_mut().expect("target runs");
    let before = fingerprint(raft);
    raft.step(message);
    let reports = raft.take_implausible();
    if !reports.is_empty() && fingerprint(raft) != before {
        return Err(format!(
            "a message reported as implausible ({}) changed the node",
            reports[0]
        ));
    }
    Ok(())
}

proptest! {
    // Bounded so that the test takes seconds. A failure prints the seed
    // and the shrunk inputs; nothing is written outside this crate's
    // sources, so the failure persistence file is off.
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn no_message_makes_a_node_panic_or_break_its_invariants(
        seed in any::<u64>(),
        warmup in 0usize..1500,
        target in 0usize..=2 * CLUSTER_SIZE as usize,
        inputs in proptest::collection::vec(input_strategy(), 1..80),
    ) {
        if let Err(error) = attack(seed, warmup, target, &inputs) {
            return Err(TestCaseError::fail(format!(
                "seed {seed} warmup {warmup} target {target}: {error}"
            )));
        }
    }
}
