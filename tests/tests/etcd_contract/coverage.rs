//! How often each rule was met, counted on the model's answers, so that
//! agreement is known not to be vacuous.

use std::collections::{BTreeMap, BTreeSet};

use raftgres::mvcc::{
    Answer, Command, CompareResult, CompareTarget, KvError, RangeRequest, RequestOp, ResponseOp,
    SortOrder, SortTarget, TxnRequest,
};

use raftgres::pipeline::sessions::SESSION_EXPIRY_STRIDE;

use crate::mapping::{Outcome, RaftgresOp};
use crate::sequence::{Sequence, Step};
use crate::Run;

/// Every rule a run of all sequences must meet at least once.
pub(crate) const RULES: &[&str] = &[
    "blank entries",
    "entries delivered again",
    "batches split at a session expiry point",
    "batches of plain puts of distinct keys",
    "batches of plain puts putting a key more than once",
    "commands refused before proposal",
    "puts",
    "puts answering prev_kv",
    "puts keeping the value",
    "puts keeping the lease",
    "puts refused KEY_NOT_FOUND",
    "puts refused LEASE_NOT_FOUND",
    "deletes of one key",
    "deletes of several keys",
    "deletes of nothing",
    "deletes of every key from one on",
    "deletes answering prev_kvs",
    "ranges in the log",
    "transactions that succeeded",
    "transactions that failed",
    "transactions refused KEY_NOT_FOUND",
    "transactions refused LEASE_NOT_FOUND",
    "transactions that changed several keys",
    "nested transactions run",
    "compares on a range",
    "compares on version",
    "compares on create_revision",
    "compares on mod_revision",
    "compares on value",
    "compares on lease",
    "compares for equal",
    "compares for greater",
    "compares for less",
    "compares for not equal",
    "ranges sorted",
    "ranges with revision filters",
    "ranges keys only",
    "ranges count only",
    "ranges cut by their limit",
    "compactions",
    "compactions refused COMPACTED",
    "compactions refused FUTURE_REVISION",
    "lease grants",
    "lease grants refused LEASE_EXISTS",
    "lease revokes deleting keys",
    "lease revokes of a lease without keys",
    "lease revokes refused LEASE_NOT_FOUND",
    "puts attaching a lease",
    "raftgres puts",
    "raftgres deletes of a key",
    "raftgres deletes of a missing key",
    "raftgres compare-and-swaps that swapped",
    "raftgres compare-and-swaps that failed",
    "raftgres compare-and-swaps that deleted",
    "reads at the current revision",
    "reads at past revisions",
    "reads refused COMPACTED",
    "reads refused FUTURE_REVISION",
];

/// Counts, by rule.
pub(crate) type Coverage = BTreeMap<&'static str, usize>;

fn note(coverage: &mut Coverage, rule: &'static str) {
    debug_assert!(RULES.contains(&rule), "{rule} is not a listed rule");
    *coverage.entry(rule).or_default() += 1;
}

/// Counts what `model` (the model's run of `sequence`) met.
pub(crate) fn count(coverage: &mut Coverage, sequence: &Sequence, model: &Run) {
    for _ in &sequence.refused {
        note(coverage, "commands refused before proposal");
    }
    let mut revision_before = raftgres::mvcc::REVISION_INITIAL;
    for (index, outcome) in &model.outcomes {
        let revision = match outcome {
            Outcome::Etcd { revision, .. } | Outcome::Raftgres { revision, .. } => *revision,
            _ => revision_before,
        };
        count_entry(
            coverage,
            sequence.step_at(*index),
            outcome,
            revision > revision_before,
        );
        revision_before = revision;
    }
    for batch in &sequence.batches {
        // The applier runs the state machine twice in the transaction of
        // a batch that holds an expiry point before its last entry.
        let delivered = batch.delivered();
        let (first, last) = (
            sequence.index(delivered.start),
            sequence.index(delivered.end - 1),
        );
        if (first..last).any(|index| index % SESSION_EXPIRY_STRIDE == 0) {
            note(coverage, "batches split at a session expiry point");
        }
        let steps = &sequence.steps[batch.new.clone()];
        let keys: Option<Vec<&[u8]>> = steps.iter().map(plain_put_key).collect();
        if let Some(keys) = keys.filter(|keys| keys.len() > 1) {
            let distinct: BTreeSet<&[u8]> = keys.iter().copied().collect();
            note(
                coverage,
                if distinct.len() == keys.len() {
                    "batches of plain puts of distinct keys"
                } else {
                    "batches of plain puts putting a key more than once"
                },
            );
        }
    }
    for (batch, reads) in sequence.batches.iter().zip(&model.reads) {
        for (request, read) in batch.reads.iter().zip(reads) {
            let rule = match &read.answer {
                Err(KvError::Compacted) => "reads refused COMPACTED",
                Err(KvError::FutureRevision) => "reads refused FUTURE_REVISION",
                Err(_) => continue,
                Ok(_) if request.revision > 0 && request.revision < read.revision => {
                    "reads at past revisions"
                }
                Ok(_) => "reads at the current revision",
            };
            note(coverage, rule);
            count_range(coverage, request);
        }
    }
}

/// The key of a plain put (the product applies a batch of nothing else in
/// one statement), None for any other step.
fn plain_put_key(step: &Step) -> Option<&[u8]> {
    match step {
        Step::Etcd(Command::Op(RequestOp::Put(put)))
            if put.lease == 0 && !put.ignore_value && !put.ignore_lease =>
        {
            Some(put.key.as_slice())
        }
        Step::Raftgres(RaftgresOp::Put { key, .. }) => Some(key.as_slice()),
        _ => None,
    }
}

/// `changed`: whether the entry advanced the revision.
fn count_entry(coverage: &mut Coverage, step: &Step, outcome: &Outcome, changed: bool) {
    match (step, outcome) {
        (_, Outcome::Unknown) => note(coverage, "entries delivered again"),
        (Step::Blank, _) => note(coverage, "blank entries"),
        (Step::Etcd(command), Outcome::Etcd { result, .. }) => {
            count_etcd(coverage, command, result.as_ref(), changed)
        }
        (Step::Raftgres(operation), Outcome::Raftgres { succeeded, .. }) => {
            let rule = match (operation, succeeded) {
                (RaftgresOp::Put { .. }, _) => "raftgres puts",
                (RaftgresOp::Delete { .. }, true) => "raftgres deletes of a key",
                (RaftgresOp::Delete { .. }, false) => "raftgres deletes of a missing key",
                (RaftgresOp::CompareAndSwap { value: None, .. }, true) => {
                    "raftgres compare-and-swaps that deleted"
                }
                (RaftgresOp::CompareAndSwap { .. }, true) => {
                    "raftgres compare-and-swaps that swapped"
                }
                (RaftgresOp::CompareAndSwap { .. }, false) => {
                    "raftgres compare-and-swaps that failed"
                }
            };
            note(coverage, rule);
        }
        _ => {}
    }
}

fn count_etcd(
    coverage: &mut Coverage,
    command: &Command,
    result: Result<&Answer, &KvError>,
    changed: bool,
) {
    let operation = match (command, result) {
        (Command::LeaseGrant { .. }, Ok(_)) => return note(coverage, "lease grants"),
        (Command::LeaseGrant { .. }, Err(_)) => {
            return note(coverage, "lease grants refused LEASE_EXISTS")
        }
        (Command::LeaseRevoke(_), Ok(_)) if changed => {
            return note(coverage, "lease revokes deleting keys")
        }
        (Command::LeaseRevoke(_), Ok(_)) => {
            return note(coverage, "lease revokes of a lease without keys")
        }
        (Command::LeaseRevoke(_), Err(_)) => {
            return note(coverage, "lease revokes refused LEASE_NOT_FOUND")
        }
        (Command::Compact(_), Ok(_)) => return note(coverage, "compactions"),
        (Command::Compact(_), Err(KvError::Compacted)) => {
            return note(coverage, "compactions refused COMPACTED")
        }
        (Command::Compact(_), Err(_)) => {
            return note(coverage, "compactions refused FUTURE_REVISION")
        }
        (Command::Op(operation), _) => operation,
    };
    match (operation, result) {
        (RequestOp::Put(_), Err(KvError::KeyNotFound)) => {
            note(coverage, "puts refused KEY_NOT_FOUND")
        }
        (RequestOp::Put(_), Err(_)) => note(coverage, "puts refused LEASE_NOT_FOUND"),
        (RequestOp::Put(put), Ok(Answer::Op(ResponseOp::Put(response)))) => {
            note(coverage, "puts");
            if response.prev_kv.is_some() {
                note(coverage, "puts answering prev_kv");
            }
            if put.ignore_value {
                note(coverage, "puts keeping the value");
            }
            if put.ignore_lease {
                note(coverage, "puts keeping the lease");
            }
            if put.lease != 0 {
                note(coverage, "puts attaching a lease");
            }
        }
        (RequestOp::DeleteRange(delete), Ok(Answer::Op(ResponseOp::DeleteRange(response)))) => {
            note(
                coverage,
                match response.deleted {
                    0 => "deletes of nothing",
                    1 => "deletes of one key",
                    _ => "deletes of several keys",
                },
            );
            if delete.range.range_end == [0] {
                note(coverage, "deletes of every key from one on");
            }
            if !response.prev_kvs.is_empty() {
                note(coverage, "deletes answering prev_kvs");
            }
        }
        (RequestOp::Range(range), _) => {
            note(coverage, "ranges in the log");
            count_range(coverage, range);
            if let Ok(Answer::Op(response)) = result {
                count_response(coverage, response);
            }
        }
        (RequestOp::Txn(txn), Ok(Answer::Op(response))) => {
            count_txn(coverage, txn);
            if let ResponseOp::Txn(response) = response {
                note(
                    coverage,
                    if response.succeeded {
                        "transactions that succeeded"
                    } else {
                        "transactions that failed"
                    },
                );
            }
            count_response(coverage, response);
        }
        (RequestOp::Txn(_), Err(KvError::KeyNotFound)) => {
            note(coverage, "transactions refused KEY_NOT_FOUND")
        }
        (RequestOp::Txn(_), Err(KvError::LeaseNotFound)) => {
            note(coverage, "transactions refused LEASE_NOT_FOUND")
        }
        _ => {}
    }
}

/// The compares and ranges of a transaction applied, in every branch.
fn count_txn(coverage: &mut Coverage, txn: &TxnRequest) {
    for compare in &txn.compare {
        if !compare.range.is_single() {
            note(coverage, "compares on a range");
        }
        note(
            coverage,
            match compare.target {
                CompareTarget::Version(_) => "compares on version",
                CompareTarget::Create(_) => "compares on create_revision",
                CompareTarget::Mod(_) => "compares on mod_revision",
                CompareTarget::Value(_) => "compares on value",
                CompareTarget::Lease(_) => "compares on lease",
            },
        );
        note(
            coverage,
            match compare.result {
                CompareResult::Equal => "compares for equal",
                CompareResult::Greater => "compares for greater",
                CompareResult::Less => "compares for less",
                CompareResult::NotEqual => "compares for not equal",
            },
        );
    }
    for operation in txn.success.iter().chain(&txn.failure) {
        match operation {
            RequestOp::Range(range) => count_range(coverage, range),
            RequestOp::Txn(nested) => count_txn(coverage, nested),
            RequestOp::Put(_) | RequestOp::DeleteRange(_) => {}
        }
    }
}

fn count_range(coverage: &mut Coverage, range: &RangeRequest) {
    if range.sort_order != SortOrder::None || range.sort_target != SortTarget::Key {
        note(coverage, "ranges sorted");
    }
    if range.min_mod_revision != 0
        || range.max_mod_revision != 0
        || range.min_create_revision != 0
        || range.max_create_revision != 0
    {
        note(coverage, "ranges with revision filters");
    }
    if range.keys_only {
        note(coverage, "ranges keys only");
    }
    if range.count_only {
        note(coverage, "ranges count only");
    }
}

/// What the answers of the branches taken show: limits that cut, nested
/// transactions run, transactions that changed several keys.
fn count_response(coverage: &mut Coverage, response: &ResponseOp) {
    match response {
        ResponseOp::Range(range) if range.more => note(coverage, "ranges cut by their limit"),
        ResponseOp::Txn(txn) => {
            let writes = txn
                .responses
                .iter()
                .filter(|response| {
                    matches!(response, ResponseOp::Put(_))
                        || matches!(response, ResponseOp::DeleteRange(delete) if delete.deleted > 0)
                })
                .count();
            if writes > 1 {
                note(coverage, "transactions that changed several keys");
            }
            for nested in &txn.responses {
                if matches!(nested, ResponseOp::Txn(_)) {
                    note(coverage, "nested transactions run");
                }
                count_response(coverage, nested);
            }
        }
        _ => {}
    }
}
