//! Scenario tests for the pure core, written as readable interaction
//! scripts in `tests/scenarios/*.txt` (in the style of etcd's datadriven
//! tests). Each command is followed by `----` and its expected output; a
//! blank line ends the block. `REWRITE=1 cargo test -p raftgres --test
//! scenarios` regenerates the expectations: review every rewrite diff.
//!
//! Commands:
//! - `add-nodes N [pre-vote=B] [check-quorum=B] [entries-per-message=N]`:
//!   a fresh cluster 1..=N
//!   (replacing any earlier one).
//! - `set-log ID term=T E1,E2,..`: restart node ID with a log whose entry
//!   terms are E1.. and current term T (for the paper's figures).
//! - `advance COUNT`: COUNT rounds of "every live node ticks once, then the
//!   cluster stabilizes", printing nothing: time passing on a healthy
//!   network.
//! - `tick ID|all [COUNT]`, `campaign ID`, `propose ID TEXT`,
//!   `read ID CONTEXT`, `transfer ID TARGET`.
//! - `process [ID..]`: the nodes take their Ready, persist it, and queue
//!   their messages.
//! - `deliver [FROM->TO..]`: delivers queued messages (all, or only
//!   matching ones) and prints them.
//! - `drop [FROM->TO..]`: drops queued messages.
//! - `stabilize`: process and deliver until nothing is left.
//! - `partition 1 | 2 3`, `heal`: cut and restore the network.
//! - `crash ID`, `restart ID`: lose volatile state; come back from disk.
//! - `status [ID..]`, `log ID`, `applied ID`, `reads ID`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use raftgres::core::{
    Config, DurableState, Entry, EntryPayload, HardState, LogIndex, Message, MessageBody, NodeId,
    Raft, Ready, SnapshotMeta, Term,
};

/// A node as the harness drives it: its core (absent while crashed), its
/// disk, and what it applied.
struct Node {
    raft: Option<Raft>,
    disk: DurableState,
    applied: Vec<Entry>,
    reads: Vec<String>,
    config: Config,
}

struct Cluster {
    nodes: BTreeMap<NodeId, Node>,
    in_flight: Vec<Message>,
    /// Node -> partition group; messages between groups are lost.
    groups: BTreeMap<NodeId, usize>,
}

impl Cluster {
    fn new() -> Cluster {
        Cluster {
            nodes: BTreeMap::new(),
            in_flight: Vec::new(),
            groups: BTreeMap::new(),
        }
    }

    fn raft(&mut self, id: NodeId) -> &mut Raft {
        self.nodes
            .get_mut(&id)
            .and_then(|node| node.raft.as_mut())
            .unwrap_or_else(|| panic!("node {id} is down"))
    }

    fn add_nodes(
        &mut self,
        count: u64,
        pre_vote: bool,
        check_quorum: bool,
        entries_per_message_max: usize,
    ) {
        let voters: Vec<NodeId> = (1..=count).map(NodeId).collect();
        for id in &voters {
            let mut config = Config::new(*id, voters.clone());
            config.pre_vote = pre_vote;
            config.check_quorum = check_quorum;
            config.entries_per_message_max = entries_per_message_max;
            let disk = DurableState::default();
            let raft = Raft::new(config.clone(), disk.clone(), id.0).expect("valid config");
            let node = Node {
                raft: Some(raft),
                disk,
                applied: Vec::new(),
                reads: Vec::new(),
                config,
            };
            self.nodes.insert(*id, node);
        }
    }

    fn set_log(&mut self, id: NodeId, term: Term, entry_terms: &[u64]) {
        let node = self.nodes.get_mut(&id).expect("node exists");
        let entries = entry_terms
            .iter()
            .enumerate()
            .map(|(offset, entry_term)| Entry {
                term: Term(*entry_term),
                index: LogIndex(offset as u64 + 1),
                payload: EntryPayload::Command(format!("t{entry_term}").into_bytes()),
            })
            .collect();
        node.disk = DurableState {
            hard_state: HardState {
                term,
                voted_for: None,
            },
            snapshot: SnapshotMeta::default(),
            entries,
            applied: LogIndex(0),
        };
        node.applied.clear();
        node.raft =
            Some(Raft::new(node.config.clone(), node.disk.clone(), id.0).expect("valid config"));
    }

    /// Takes a node's Ready and carries out every driver obligation at once.
    fn process(&mut self, id: NodeId) -> bool {
        let node = self.nodes.get_mut(&id).expect("node exists");
        let Some(raft) = node.raft.as_mut() else {
            return false;
        };
        if !raft.has_ready() {
            return false;
        }
        let ready: Ready = raft.ready();
        if let Some(hard_state) = ready.hard_state {
            node.disk.hard_state = hard_state;
        }
        if let Some(first) = ready.entries.first() {
            let keep = (first.index.0 - node.disk.snapshot.index.0 - 1) as usize;
            node.disk.entries.truncate(keep);
            node.disk.entries.extend(ready.entries.iter().cloned());
        }
        if let Some((index, term)) = ready.persist_point() {
            raft.persisted(index, term);
        }
        if let Some(last) = ready.committed_entries.last() {
            node.disk.applied = last.index;
            raft.applied(last.index);
        }
        node.applied.extend(ready.committed_entries);
        for read in ready.reads {
            node.reads.push(format!(
                "read {} safe at index {}",
                read.context, read.index
            ));
        }
        for context in ready.reads_dropped {
            node.reads.push(format!("read {context} dropped"));
        }
        self.in_flight.extend(ready.messages);
        self.in_flight.extend(ready.messages_after_persist);
        true
    }

    fn connected(&self, from: NodeId, to: NodeId) -> bool {
        self.groups.get(&from) == self.groups.get(&to)
    }

    /// Delivers queued messages that `select` picks; returns their lines.
    fn deliver(&mut self, select: impl Fn(&Message) -> bool) -> String {
        let (chosen, kept): (Vec<Message>, Vec<Message>) = std::mem::take(&mut self.in_flight)
            .into_iter()
            .partition(select);
        self.in_flight = kept;
        let mut output = String::new();
        for message in chosen {
            let reachable = self.connected(message.from, message.to)
                && self
                    .nodes
                    .get(&message.to)
                    .is_some_and(|node| node.raft.is_some());
            let suffix = if reachable { "" } else { " (lost)" };
            writeln!(output, "{}{suffix}", describe(&message)).unwrap();
            if reachable {
                self.raft(message.to).step(message);
            }
        }
        output
    }

    fn stabilize(&mut self) -> String {
        let mut output = String::new();
        for _round in 0..1000 {
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            let mut progressed = false;
            for id in ids {
                progressed |= self.process(id);
            }
            if self.in_flight.is_empty() && !progressed {
                return output;
            }
            output += &self.deliver(|_| true);
        }
        panic!("cluster did not stabilize within 1000 rounds:\n{output}");
    }

    fn status_line(&self, id: NodeId) -> String {
        let node = &self.nodes[&id];
        let Some(raft) = node.raft.as_ref() else {
            return format!("{id}: down");
        };
        let status = raft.status();
        let leader = status
            .leader
            .map_or("none".to_string(), |leader| leader.to_string());
        format!(
            "{id}: {} term={} vote={} leader={leader} last={} commit={} applied={}",
            status.role,
            status.term,
            status
                .voted_for
                .map_or("none".to_string(), |vote| vote.to_string()),
            status.last_index,
            status.commit_index,
            status.applied_index
        )
    }
}

fn describe_entry(entry: &Entry) -> String {
    match &entry.payload {
        EntryPayload::Blank => format!("{}/{} blank", entry.index, entry.term),
        EntryPayload::Command(data) => format!(
            "{}/{} {}",
            entry.index,
            entry.term,
            String::from_utf8_lossy(data)
        ),
    }
}

fn describe(message: &Message) -> String {
    let head = format!(
        "{}->{} {} term={}",
        message.from,
        message.to,
        message.body.kind(),
        message.term
    );
    let detail = match &message.body {
        MessageBody::VoteRequest {
            last_log_index,
            last_log_term,
            leadership_transfer,
            ..
        } => {
            let transfer = if *leadership_transfer {
                " transfer"
            } else {
                ""
            };
            format!(" last={last_log_index}/{last_log_term}{transfer}")
        }
        MessageBody::VoteResponse { granted, .. } => {
            if *granted { " granted" } else { " rejected" }.to_string()
        }
        MessageBody::AppendRequest {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
        } => {
            let entries: Vec<String> = entries.iter().map(describe_entry).collect();
            format!(
                " prev={prev_log_index}/{prev_log_term} commit={leader_commit} entries=[{}]",
                entries.join(", ")
            )
        }
        MessageBody::AppendResponse {
            index,
            rejected: false,
            ..
        } => format!(" index={index}"),
        MessageBody::AppendResponse {
            index,
            reject_hint_index,
            reject_hint_term,
            ..
        } => {
            format!(" rejected index={index} hint={reject_hint_index}/{reject_hint_term}")
        }
        MessageBody::HeartbeatRequest {
            leader_commit,
            read_round,
        } => {
            format!(" commit={leader_commit} round={read_round}")
        }
        MessageBody::HeartbeatResponse { read_round } => format!(" round={read_round}"),
        MessageBody::TimeoutNow => String::new(),
        MessageBody::InstallSnapshot { snapshot } => {
            format!(" snapshot={}/{}", snapshot.meta.index, snapshot.meta.term)
        }
        MessageBody::ReadIndexRequest { context } => format!(" context={context}"),
        MessageBody::ReadIndexResponse {
            context,
            index,
            refused,
        } => {
            format!(
                " context={context} index={index}{}",
                if *refused { " refused" } else { "" }
            )
        }
    };
    head + &detail
}

fn node_ids(arguments: &[&str], cluster: &Cluster) -> Vec<NodeId> {
    if arguments.is_empty() || arguments == ["all"] {
        return cluster.nodes.keys().copied().collect();
    }
    arguments
        .iter()
        .map(|argument| NodeId(argument.parse().expect("node id")))
        .collect()
}

/// Parses `1->2` filters.
fn link_filter(arguments: &[&str]) -> impl Fn(&Message) -> bool {
    let links: BTreeSet<(u64, u64)> = arguments
        .iter()
        .map(|link| {
            let (from, to) = link.split_once("->").expect("FROM->TO");
            (from.parse().expect("from id"), to.parse().expect("to id"))
        })
        .collect();
    move |message: &Message| links.is_empty() || links.contains(&(message.from.0, message.to.0))
}

fn flag(arguments: &[&str], name: &str, default: bool) -> bool {
    arguments
        .iter()
        .find_map(|argument| argument.strip_prefix(&format!("{name}=")))
        .map_or(default, |value| value == "true")
}

fn run_command(cluster: &mut Cluster, line: &str) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    let (command, arguments) = (words[0], &words[1..]);
    let id = || NodeId(arguments[0].parse().expect("node id"));
    match command {
        "add-nodes" => {
            let count = arguments[0].parse().expect("node count");
            *cluster = Cluster::new();
            let entries_per_message_max = arguments
                .iter()
                .find_map(|argument| argument.strip_prefix("entries-per-message="))
                .map_or(8, |value| value.parse().expect("entries per message"));
            let (pre_vote, check_quorum) = (
                flag(arguments, "pre-vote", true),
                flag(arguments, "check-quorum", true),
            );
            cluster.add_nodes(count, pre_vote, check_quorum, entries_per_message_max);
            (1..=count)
                .map(|id| cluster.status_line(NodeId(id)) + "\n")
                .collect()
        }
        "set-log" => {
            let term = arguments[1]
                .strip_prefix("term=")
                .expect("term=T")
                .parse()
                .expect("term");
            let terms: Vec<u64> = arguments.get(2).map_or(Vec::new(), |list| {
                list.split(',')
                    .map(|term| term.parse().expect("entry term"))
                    .collect()
            });
            cluster.set_log(id(), Term(term), &terms);
            cluster.status_line(id()) + "\n"
        }
        "tick" => {
            let count: u64 = arguments
                .get(1)
                .map_or(1, |count| count.parse().expect("tick count"));
            for node in node_ids(&arguments[..1], cluster) {
                for _ in 0..count {
                    cluster.raft(node).tick();
                }
            }
            String::new()
        }
        "advance" => {
            let rounds: u64 = arguments[0].parse().expect("round count");
            for _ in 0..rounds {
                let live: Vec<NodeId> = cluster
                    .nodes
                    .iter()
                    .filter(|(_, node)| node.raft.is_some())
                    .map(|(id, _)| *id)
                    .collect();
                for node in live {
                    cluster.raft(node).tick();
                }
                cluster.stabilize();
            }
            String::new()
        }
        "campaign" => {
            cluster.raft(id()).campaign_now();
            cluster.status_line(id()) + "\n"
        }
        "propose" => match cluster
            .raft(id())
            .propose(arguments[1..].join(" ").into_bytes())
        {
            Ok(index) => format!("proposed at index {index}\n"),
            Err(error) => format!("refused: {error}\n"),
        },
        "read" => match cluster
            .raft(id())
            .read_index(arguments[1].parse().expect("read context"))
        {
            Ok(()) => "read requested\n".to_string(),
            Err(error) => format!("refused: {error}\n"),
        },
        "transfer" => match cluster
            .raft(id())
            .transfer_leadership(NodeId(arguments[1].parse().expect("target")))
        {
            Ok(()) => "transfer started\n".to_string(),
            Err(error) => format!("refused: {error}\n"),
        },
        "process" => {
            for node in node_ids(arguments, cluster) {
                cluster.process(node);
            }
            let queued: Vec<String> = cluster.in_flight.iter().map(describe).collect();
            queued
                .iter()
                .map(|line| format!("queued {line}\n"))
                .collect()
        }
        "deliver" => cluster.deliver(link_filter(arguments)),
        "drop" => {
            let filter = link_filter(arguments);
            let before = cluster.in_flight.len();
            cluster.in_flight.retain(|message| !filter(message));
            format!("dropped {}\n", before - cluster.in_flight.len())
        }
        "stabilize" => cluster.stabilize(),
        "partition" => {
            cluster.groups.clear();
            for (group, members) in arguments.join(" ").split('|').enumerate() {
                for member in members.split_whitespace() {
                    cluster
                        .groups
                        .insert(NodeId(member.parse().expect("node id")), group);
                }
            }
            String::new()
        }
        "heal" => {
            cluster.groups.clear();
            String::new()
        }
        "crash" => {
            let node = id();
            cluster.nodes.get_mut(&node).expect("node exists").raft = None;
            cluster
                .in_flight
                .retain(|message| message.to != node && message.from != node);
            cluster.status_line(node) + "\n"
        }
        "restart" => {
            let node_id = id();
            let node = cluster.nodes.get_mut(&node_id).expect("node exists");
            node.raft = Some(
                Raft::new(node.config.clone(), node.disk.clone(), node_id.0 + 100)
                    .expect("valid config"),
            );
            node.applied
                .retain(|entry| entry.index <= node.disk.applied);
            cluster.status_line(node_id) + "\n"
        }
        "status" => node_ids(arguments, cluster)
            .into_iter()
            .map(|node| cluster.status_line(node) + "\n")
            .collect(),
        "log" => {
            let raft = cluster.raft(id());
            let entries: Vec<String> = raft.log().entries().iter().map(describe_entry).collect();
            format!(
                "commit={} entries=[{}]\n",
                raft.log().commit_index(),
                entries.join(", ")
            )
        }
        "applied" => {
            let entries: Vec<String> = cluster.nodes[&id()]
                .applied
                .iter()
                .map(describe_entry)
                .collect();
            format!("applied=[{}]\n", entries.join(", "))
        }
        "reads" => {
            let reads =
                std::mem::take(&mut cluster.nodes.get_mut(&id()).expect("node exists").reads);
            if reads.is_empty() {
                "no reads\n".to_string()
            } else {
                reads.iter().map(|read| read.clone() + "\n").collect()
            }
        }
        other => panic!("unknown command {other:?}"),
    }
}

/// Runs one script; returns the script with actual outputs in place.
fn run_script(script: &str) -> String {
    let mut cluster = Cluster::new();
    let mut rewritten = String::new();
    let mut lines = script.lines().peekable();
    while let Some(line) = lines.next() {
        rewritten += line;
        rewritten += "\n";
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        assert_eq!(
            lines.next(),
            Some("----"),
            "command {line:?} must be followed by ----"
        );
        while lines.peek().is_some_and(|next| !next.is_empty()) {
            lines.next();
        }
        rewritten += "----\n";
        rewritten += &run_command(&mut cluster, line);
    }
    rewritten
}

fn check_scenario(name: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/scenarios")
        .join(format!("{name}.txt"));
    let script = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    let actual = run_script(&script);
    if std::env::var_os("REWRITE").is_some() {
        std::fs::write(&path, &actual).expect("rewrite scenario");
        return;
    }
    if actual != script {
        let first_difference = script
            .lines()
            .zip(actual.lines())
            .enumerate()
            .find(|(_, (expected, got))| expected != got)
            .map(|(line, (expected, got))| {
                format!(
                    "line {}:\n  expected: {expected}\n  actual:   {got}",
                    line + 1
                )
            })
            .unwrap_or_else(|| "outputs differ in length".to_string());
        panic!("scenario {name} differs (REWRITE=1 to regenerate, then review the diff)\n{first_difference}");
    }
}

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                check_scenario(stringify!($name));
            }
        )*
    };
}

scenarios!(
    election,
    pre_vote,
    check_quorum,
    partitioned_leader_rejoins,
    log_conflict_repair,
    figure_7,
    figure_8,
    read_index,
    leadership_transfer,
    proposal_at_follower,
);
