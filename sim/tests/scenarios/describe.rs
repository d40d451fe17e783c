//! How the scenario scripts print entries, messages and answers, and the
//! key names they write: entries carry the simulator's key-value commands
//! (`raftgres_sim::kv`), so that the store applies them as it does in the
//! sweeps, and a script names keys by words (`x=1`) that map to the
//! model's numeric keys in order of first use.

use std::collections::BTreeMap;

use raftgres::core::{Entry, EntryPayload, LogIndex, Message, MessageBody, NodeId, Term};
use raftgres::pipeline::{Refusal, Reply};
use raftgres_sim::kv::{decode, encode, Command, Envelope};

/// The script's key names and the model's keys they stand for.
#[derive(Debug, Default)]
pub struct Keys {
    by_name: BTreeMap<String, u64>,
    by_key: BTreeMap<u64, String>,
}

impl Keys {
    /// The model key for `name`, assigning the next one on first use.
    pub fn key(&mut self, name: &str) -> u64 {
        if let Some(key) = self.by_name.get(name) {
            return *key;
        }
        let key = self.by_name.len() as u64 + 1;
        self.by_name.insert(name.to_string(), key);
        self.by_key.insert(key, name.to_string());
        key
    }

    /// The name a script gave `key`.
    pub fn name(&self, key: u64) -> String {
        self.by_key
            .get(&key)
            .cloned()
            .unwrap_or_else(|| format!("key{key}"))
    }

    /// An entry payload that puts `value` under `name` (no session: the
    /// scripts are not about deduplication).
    pub fn put(&mut self, name: &str, value: u64) -> Vec<u8> {
        assert!(
            value > 0,
            "values start at 1 (0 is the model's absent value)"
        );
        encode(Envelope {
            client_id: 0,
            sequence: 0,
            operation_id: 0,
            attempt: 0,
            command: Command::Put {
                key: self.key(name),
                value,
                lease: 0,
            },
        })
    }

    /// `KEY=VALUE` (or `KEY=FIRST..LAST`, one put per value) as payloads.
    pub fn puts(&mut self, text: &str) -> Vec<Vec<u8>> {
        let (name, values) = text
            .split_once('=')
            .unwrap_or_else(|| panic!("a proposal is KEY=VALUE or KEY=FIRST..LAST, not {text:?}"));
        let number = |value: &str| -> u64 {
            value
                .parse()
                .unwrap_or_else(|_| panic!("{value:?} is not a number"))
        };
        let (first, last) = match values.split_once("..") {
            Some((first, last)) => (number(first), number(last)),
            None => (number(values), number(values)),
        };
        assert!(first <= last, "empty range in {text:?}");
        (first..=last).map(|value| self.put(name, value)).collect()
    }
}

/// `INDEX/TERM` and what the entry carries.
pub fn describe_entry(entry: &Entry, keys: &Keys) -> String {
    let head = format!("{}/{}", entry.index, entry.term);
    match &entry.payload {
        EntryPayload::Blank => format!("{head} blank"),
        EntryPayload::Command(bytes) => format!("{head} {}", describe_command(bytes, keys)),
        EntryPayload::Membership(membership) => format!("{head} membership {membership}"),
    }
}

/// A command's payload: `KEY=VALUE` for the puts scripts propose.
pub fn describe_command(bytes: &[u8], keys: &Keys) -> String {
    match decode(bytes).map(|envelope| envelope.command) {
        Some(Command::Put { key, value, .. }) => format!("{}={value}", keys.name(key)),
        Some(other) => format!("{other:?}"),
        None => format!("({} opaque bytes)", bytes.len()),
    }
}

/// A list of entries.
pub fn describe_entries(entries: &[Entry], keys: &Keys) -> String {
    let described: Vec<String> = entries
        .iter()
        .map(|entry| describe_entry(entry, keys))
        .collect();
    format!("[{}]", described.join(", "))
}

/// The pipeline numbers read contexts from `incarnation << 40` (see
/// `SimNode::start`): printed as `incarnation:number`.
fn describe_context(context: u64) -> String {
    format!("{}:{}", context >> 40, context & ((1 << 40) - 1))
}

/// `FROM->TO Kind term=T` and the fields that matter to the scripts.
pub fn describe(message: &Message, keys: &Keys) -> String {
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
        } => format!(
            " prev={prev_log_index}/{prev_log_term} commit={leader_commit} entries={}",
            describe_entries(entries, keys)
        ),
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
        } => format!(" rejected index={index} hint={reject_hint_index}/{reject_hint_term}"),
        MessageBody::HeartbeatRequest {
            leader_commit,
            read_round,
        } => format!(" commit={leader_commit} round={read_round}"),
        MessageBody::HeartbeatResponse { read_round } => format!(" round={read_round}"),
        MessageBody::TimeoutNow => String::new(),
        MessageBody::InstallSnapshot { snapshot } => {
            format!(" snapshot={}/{}", snapshot.meta.index, snapshot.meta.term)
        }
        MessageBody::SnapshotChunk(chunk) => format!(
            " snapshot={}/{} view={} seq={}{} bytes={}",
            chunk.meta.index,
            chunk.meta.term,
            chunk.view,
            chunk.seq,
            if chunk.last { " last" } else { "" },
            chunk.data.len()
        ),
        MessageBody::SnapshotChunkAck {
            view,
            index,
            next_seq,
        } => format!(" snapshot={index} view={view} next={next_seq}"),
        MessageBody::ReadIndexRequest { context } => {
            format!(" context={}", describe_context(*context))
        }
        MessageBody::ReadIndexResponse {
            context,
            index,
            refused,
        } => format!(
            " context={} index={index}{}",
            describe_context(*context),
            if *refused { " refused" } else { "" }
        ),
    };
    head + &detail
}

/// Why a request was refused, as a client reads it.
pub fn describe_refusal(refusal: &Refusal) -> String {
    match refusal {
        Refusal::NotLeader {
            leader: Some(leader),
        } => {
            format!("not the leader; the leader is node {leader}")
        }
        Refusal::NotLeader { leader: None } => "not the leader; no leader is known".to_string(),
        Refusal::Unavailable(reason) | Refusal::InvalidArgument(reason) => reason.clone(),
        Refusal::OutcomeUnknown(reason) => format!("outcome unknown: {reason}"),
    }
}

/// A request as the script names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// `propose`: the proposal's text.
    Proposal(String),
    /// `read`: the read's label.
    Read(String),
    /// `transfer`: the target.
    Transfer(NodeId),
    /// `member`: the change as the script wrote it.
    Member(String),
}

/// One answer line: `proposal x=1: applied at index 2`, `read 7 safe at
/// index 1`, `transfer to 3: node 3 leads`.
pub fn describe_answer(request: &Request, reply: &Reply) -> String {
    let subject = match request {
        Request::Proposal(text) => format!("proposal {text}:"),
        Request::Read(label) => format!("read {label}"),
        Request::Transfer(target) => format!("transfer to {target}:"),
        Request::Member(change) => format!("member {change}:"),
    };
    let outcome = match reply {
        Reply::Applied { index, .. } => format!("applied at index {index}"),
        Reply::ReadReady { index } => format!("safe at index {index}"),
        Reply::Transferred { leader } => format!("node {leader} leads"),
        Reply::Refused(refusal) => format!("refused: {}", describe_refusal(refusal)),
    };
    format!("{subject} {outcome}")
}

/// `INDEX/TERM`.
pub fn describe_point(index: LogIndex, term: Term) -> String {
    format!("{index}/{term}")
}
