//! The one mapping between the two sides: requests go from the `mvcc`
//! types to the wire (`KvCommand`, `etcdserverpb`), answers come back from
//! the wire (`KvResult`, `etcdserverpb.ResponseOp`) to the `mvcc` types,
//! and the raftgres operations are given their meaning in etcd's terms.

use prost::Message as _;
use raftgres::mvcc::{
    self, Command, Compare, CompareResult, CompareTarget, DeleteRangeRequest, KeyRange, KeyValue,
    PutRequest, RangeRequest, RequestOp, ResponseOp, SortOrder, SortTarget, TxnRequest,
};
use raftgres::pipeline::ApplyOutcome;
use raftgres_proto::etcdserverpb as etcd;
use raftgres_proto::mvccpb;
use raftgres_proto::v1 as wire;

use crate::sequence::Step;

/// A raftgres operation (`raftgres.v1.KvCommand` put, delete,
/// compare-and-swap).
#[derive(Clone, Debug)]
pub(crate) enum RaftgresOp {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        key: Vec<u8>,
    },
    CompareAndSwap {
        key: Vec<u8>,
        /// `None`: the key must not exist.
        expected: Option<Vec<u8>>,
        /// `None`: delete on success.
        value: Option<Vec<u8>>,
    },
}

impl RaftgresOp {
    pub(crate) fn key(&self) -> &[u8] {
        match self {
            RaftgresOp::Put { key, .. }
            | RaftgresOp::Delete { key }
            | RaftgresOp::CompareAndSwap { key, .. } => key,
        }
    }

    /// Whether the operation succeeds on a key holding `previous`, as
    /// `log.proto` defines `KvResult.succeeded`: always for a put, when the
    /// key existed for a delete, when the swap happened for a
    /// compare-and-swap.
    pub(crate) fn succeeds(&self, previous: Option<&[u8]>) -> bool {
        match self {
            RaftgresOp::Put { .. } => true,
            RaftgresOp::Delete { .. } => previous.is_some(),
            RaftgresOp::CompareAndSwap { expected, .. } => expected.as_deref() == previous,
        }
    }
}

/// What a raftgres operation does to the store, in etcd's terms
/// (`log.proto`: "the raftgres operations are an etcd put, a delete of one
/// key, and a transaction").
pub(crate) fn raftgres_to_mvcc(operation: &RaftgresOp) -> Command {
    let put = |key: &[u8], value: &[u8]| {
        RequestOp::Put(PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            ..PutRequest::default()
        })
    };
    let delete = |key: &[u8]| {
        RequestOp::DeleteRange(DeleteRangeRequest {
            range: KeyRange::single(key),
            prev_kv: false,
        })
    };
    let operation = match operation {
        RaftgresOp::Put { key, value } => put(key, value),
        RaftgresOp::Delete { key } => delete(key),
        RaftgresOp::CompareAndSwap {
            key,
            expected,
            value,
        } => RequestOp::Txn(TxnRequest {
            compare: vec![Compare {
                range: KeyRange::single(key.as_slice()),
                result: CompareResult::Equal,
                target: match expected {
                    Some(expected) => CompareTarget::Value(expected.clone()),
                    // A missing key is one never created.
                    None => CompareTarget::Create(0),
                },
            }],
            success: vec![match value {
                Some(value) => put(key, value),
                None => delete(key),
            }],
            failure: Vec::new(),
        }),
    };
    Command::Op(operation)
}

/// The product's encoded `KvCommand` for an etcd command.
pub(crate) fn etcd_command(command: &Command) -> Vec<u8> {
    use wire::kv_command::Operation;
    let operation = match command {
        Command::Op(operation) => Operation::EtcdOperation(request_op(operation).encode_to_vec()),
        Command::Compact(revision) => Operation::EtcdCompactRevision(*revision),
        Command::LeaseGrant { id, ttl } => {
            Operation::EtcdLeaseGrant(wire::KvLeaseGrant { id: *id, ttl: *ttl })
        }
        Command::LeaseRevoke(id) => Operation::EtcdLeaseRevoke(*id),
    };
    wire::KvCommand {
        operation: Some(operation),
    }
    .encode_to_vec()
}

/// The product's encoded `KvCommand` for a raftgres operation.
pub(crate) fn raftgres_command(operation: &RaftgresOp) -> Vec<u8> {
    use wire::kv_command::Operation;
    let operation = match operation.clone() {
        RaftgresOp::Put { key, value } => Operation::Put(wire::KvPut { key, value }),
        RaftgresOp::Delete { key } => Operation::Delete(wire::KvDelete { key }),
        RaftgresOp::CompareAndSwap {
            key,
            expected,
            value,
        } => Operation::CompareAndSwap(wire::KvCompareAndSwap {
            key,
            expected,
            value,
        }),
    };
    wire::KvCommand {
        operation: Some(operation),
    }
    .encode_to_vec()
}

fn request_op(operation: &RequestOp) -> etcd::RequestOp {
    use etcd::request_op::Request;
    let request = match operation {
        RequestOp::Range(range) => Request::RequestRange(range_request(range)),
        RequestOp::Put(put) => Request::RequestPut(etcd::PutRequest {
            key: put.key.clone(),
            value: put.value.clone(),
            lease: put.lease,
            prev_kv: put.prev_kv,
            ignore_value: put.ignore_value,
            ignore_lease: put.ignore_lease,
        }),
        RequestOp::DeleteRange(delete) => Request::RequestDeleteRange(etcd::DeleteRangeRequest {
            key: delete.range.key.clone(),
            range_end: delete.range.range_end.clone(),
            prev_kv: delete.prev_kv,
        }),
        RequestOp::Txn(txn) => Request::RequestTxn(etcd::TxnRequest {
            compare: txn.compare.iter().map(compare).collect(),
            success: txn.success.iter().map(request_op).collect(),
            failure: txn.failure.iter().map(request_op).collect(),
        }),
    };
    etcd::RequestOp {
        request: Some(request),
    }
}

fn range_request(range: &RangeRequest) -> etcd::RangeRequest {
    use etcd::range_request::{SortOrder as Order, SortTarget as Target};
    let sort_order = match range.sort_order {
        SortOrder::None => Order::None,
        SortOrder::Ascend => Order::Ascend,
        SortOrder::Descend => Order::Descend,
    };
    let sort_target = match range.sort_target {
        SortTarget::Key => Target::Key,
        SortTarget::Version => Target::Version,
        SortTarget::Create => Target::Create,
        SortTarget::Mod => Target::Mod,
        SortTarget::Value => Target::Value,
    };
    etcd::RangeRequest {
        key: range.range.key.clone(),
        range_end: range.range.range_end.clone(),
        limit: range.limit,
        revision: range.revision,
        sort_order: sort_order as i32,
        sort_target: sort_target as i32,
        serializable: false,
        keys_only: range.keys_only,
        count_only: range.count_only,
        min_mod_revision: range.min_mod_revision,
        max_mod_revision: range.max_mod_revision,
        min_create_revision: range.min_create_revision,
        max_create_revision: range.max_create_revision,
    }
}

fn compare(compare: &Compare) -> etcd::Compare {
    use etcd::compare::{CompareResult as Result, CompareTarget as Target, TargetUnion};
    let result = match compare.result {
        CompareResult::Equal => Result::Equal,
        CompareResult::Greater => Result::Greater,
        CompareResult::Less => Result::Less,
        CompareResult::NotEqual => Result::NotEqual,
    };
    let (target, operand) = match &compare.target {
        CompareTarget::Version(version) => (Target::Version, TargetUnion::Version(*version)),
        CompareTarget::Create(revision) => (Target::Create, TargetUnion::CreateRevision(*revision)),
        CompareTarget::Mod(revision) => (Target::Mod, TargetUnion::ModRevision(*revision)),
        CompareTarget::Value(value) => (Target::Value, TargetUnion::Value(value.clone())),
        CompareTarget::Lease(lease) => (Target::Lease, TargetUnion::Lease(*lease)),
    };
    etcd::Compare {
        result: result as i32,
        target: target as i32,
        key: compare.range.key.clone(),
        target_union: Some(operand),
        range_end: compare.range.range_end.clone(),
    }
}

/// One entry's outcome in terms both sides can be compared in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// An etcd command's answer (or refusal) and the revision after it.
    Etcd {
        revision: mvcc::Revision,
        result: Result<mvcc::Answer, mvcc::KvError>,
    },
    /// A raftgres operation's answer and the revision after it.
    Raftgres {
        revision: mvcc::Revision,
        succeeded: bool,
        /// The value before the command (`None`: the key did not exist).
        previous: Option<Vec<u8>>,
    },
    /// A blank entry: committed, nothing changed, nothing answered.
    Nothing,
    /// At or below the applied index: delivered again.
    Unknown,
    /// Anything else: never expected, always a disagreement.
    Unexpected(String),
}

/// The product's outcome for `step` in the terms of [`Outcome`]. Every
/// field of the `KvResult` is accounted for: one the step does not use
/// must be empty.
pub(crate) fn product_outcome(step: &Step, outcome: ApplyOutcome) -> Outcome {
    let response = match outcome {
        ApplyOutcome::Unknown => return Outcome::Unknown,
        ApplyOutcome::Response(response) => response,
        other => return Outcome::Unexpected(format!("{step:?} answered {other:?}")),
    };
    if let Step::Blank = step {
        if response.is_empty() {
            return Outcome::Nothing;
        }
        return Outcome::Unexpected(format!("a blank entry answered {response:?}"));
    }
    let result = match wire::KvResult::decode(response.as_slice()) {
        Ok(result) => result,
        Err(error) => return Outcome::Unexpected(format!("not a KvResult: {error}")),
    };
    let error = match wire::KvError::try_from(result.error) {
        Ok(wire::KvError::None) => None,
        Ok(wire::KvError::KeyNotFound) => Some(mvcc::KvError::KeyNotFound),
        Ok(wire::KvError::LeaseNotFound) => Some(mvcc::KvError::LeaseNotFound),
        Ok(wire::KvError::Compacted) => Some(mvcc::KvError::Compacted),
        Ok(wire::KvError::FutureRevision) => Some(mvcc::KvError::FutureRevision),
        Ok(wire::KvError::LeaseExists) => Some(mvcc::KvError::LeaseExists),
        Err(_) => return Outcome::Unexpected(format!("an unknown KvError in {result:?}")),
    };
    match (step, error) {
        (Step::Etcd(_), Some(error)) => {
            if result.succeeded || result.previous.is_some() || !result.etcd_response.is_empty() {
                return Outcome::Unexpected(format!("a refusal with an answer: {result:?}"));
            }
            Outcome::Etcd {
                revision: result.revision,
                result: Err(error),
            }
        }
        (Step::Etcd(command), None) => {
            if !result.succeeded || result.previous.is_some() {
                return Outcome::Unexpected(format!(
                    "an etcd answer in raftgres terms: {result:?}"
                ));
            }
            // A compaction, a grant and a revoke answer only that they
            // were done.
            let done = match command {
                Command::Op(_) => None,
                Command::Compact(_) => Some(mvcc::Answer::Compacted),
                Command::LeaseGrant { .. } => Some(mvcc::Answer::LeaseGranted),
                Command::LeaseRevoke(_) => Some(mvcc::Answer::LeaseRevoked),
            };
            let answer = match done {
                Some(done) if result.etcd_response.is_empty() => Ok(done),
                Some(_) => Err(format!("{command:?} answered an etcd response")),
                None => etcd::ResponseOp::decode(result.etcd_response.as_slice())
                    .map_err(|error| format!("not an etcd ResponseOp: {error}"))
                    .and_then(response_op)
                    .map(mvcc::Answer::Op),
            };
            match answer {
                Ok(answer) => Outcome::Etcd {
                    revision: result.revision,
                    result: Ok(answer),
                },
                Err(error) => Outcome::Unexpected(format!("{error}: {result:?}")),
            }
        }
        (Step::Raftgres(_), None) if result.etcd_response.is_empty() => Outcome::Raftgres {
            revision: result.revision,
            succeeded: result.succeeded,
            previous: result.previous,
        },
        (step, _) => Outcome::Unexpected(format!("{step:?} answered {result:?}")),
    }
}

/// An etcd answer, as `mvcc` types. An operation's header carries only
/// the revision it saw (`header_revision`; an absent header is revision
/// 0), a transaction's carries nothing: the top-level header, with the
/// cluster, member and term, is the service's to add.
fn response_op(response: etcd::ResponseOp) -> Result<ResponseOp, String> {
    use etcd::response_op::Response;
    let response = match response.response.ok_or("an empty ResponseOp")? {
        Response::ResponseRange(range) => ResponseOp::Range(mvcc::RangeResponse {
            header_revision: header_revision(range.header)?,
            kvs: range.kvs.into_iter().map(key_value).collect(),
            more: range.more,
            count: range.count,
        }),
        Response::ResponsePut(put) => ResponseOp::Put(mvcc::PutResponse {
            header_revision: header_revision(put.header)?,
            prev_kv: put.prev_kv.map(key_value),
        }),
        Response::ResponseDeleteRange(delete) => {
            ResponseOp::DeleteRange(mvcc::DeleteRangeResponse {
                header_revision: header_revision(delete.header)?,
                deleted: delete.deleted,
                prev_kvs: delete.prev_kvs.into_iter().map(key_value).collect(),
            })
        }
        Response::ResponseTxn(txn) => {
            if header_revision(txn.header)? != 0 {
                return Err("a transaction's answer carries a revision".into());
            }
            ResponseOp::Txn(mvcc::TxnResponse {
                succeeded: txn.succeeded,
                responses: txn
                    .responses
                    .into_iter()
                    .map(response_op)
                    .collect::<Result<_, _>>()?,
            })
        }
    };
    Ok(response)
}

/// The revision of an operation's header, which carries nothing else.
fn header_revision(header: Option<etcd::ResponseHeader>) -> Result<mvcc::Revision, String> {
    let header = header.unwrap_or_default();
    if header.cluster_id != 0 || header.member_id != 0 || header.raft_term != 0 {
        return Err(format!(
            "an operation's header carries more than a revision: {header:?}"
        ));
    }
    Ok(header.revision)
}

fn key_value(kv: mvccpb::KeyValue) -> KeyValue {
    KeyValue {
        key: kv.key,
        value: kv.value,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        lease: kv.lease,
    }
}
