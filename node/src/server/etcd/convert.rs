//! etcd's wire messages to and from the [`crate::mvcc`] types. Requests
//! are checked on the way in as etcd's API checks them (unknown sort
//! options are refused; a compare whose operand is not of its target's
//! kind compares with zero, as etcd does).

use raftgres_proto::etcdserverpb as etcd;
use raftgres_proto::mvccpb;

use crate::mvcc;

/// An etcd request operation; the error says what is wrong.
pub(crate) fn request_op(operation: etcd::RequestOp) -> Result<mvcc::RequestOp, String> {
    use etcd::request_op::Request;
    match operation.request {
        Some(Request::RequestRange(range)) => Ok(mvcc::RequestOp::Range(range_request(range)?)),
        Some(Request::RequestPut(put)) => Ok(mvcc::RequestOp::Put(put_request(put))),
        Some(Request::RequestDeleteRange(delete)) => {
            Ok(mvcc::RequestOp::DeleteRange(delete_request(delete)))
        }
        Some(Request::RequestTxn(txn)) => Ok(mvcc::RequestOp::Txn(txn_request(txn)?)),
        None => Err("a request operation names no request".into()),
    }
}

pub(crate) fn range_request(range: etcd::RangeRequest) -> Result<mvcc::RangeRequest, String> {
    use etcd::range_request::{SortOrder, SortTarget};
    let sort_order = match SortOrder::try_from(range.sort_order) {
        Ok(SortOrder::None) => mvcc::SortOrder::None,
        Ok(SortOrder::Ascend) => mvcc::SortOrder::Ascend,
        Ok(SortOrder::Descend) => mvcc::SortOrder::Descend,
        Err(_) => return Err("invalid sort option".into()),
    };
    let sort_target = match SortTarget::try_from(range.sort_target) {
        Ok(SortTarget::Key) => mvcc::SortTarget::Key,
        Ok(SortTarget::Version) => mvcc::SortTarget::Version,
        Ok(SortTarget::Create) => mvcc::SortTarget::Create,
        Ok(SortTarget::Mod) => mvcc::SortTarget::Mod,
        Ok(SortTarget::Value) => mvcc::SortTarget::Value,
        Err(_) => return Err("invalid sort option".into()),
    };
    if range.key.is_empty() {
        return Err("key is not provided".into());
    }
    Ok(mvcc::RangeRequest {
        range: mvcc::KeyRange {
            key: range.key,
            range_end: range.range_end,
        },
        limit: range.limit,
        revision: range.revision,
        sort_order,
        sort_target,
        keys_only: range.keys_only,
        count_only: range.count_only,
        min_mod_revision: range.min_mod_revision,
        max_mod_revision: range.max_mod_revision,
        min_create_revision: range.min_create_revision,
        max_create_revision: range.max_create_revision,
    })
}

pub(crate) fn put_request(put: etcd::PutRequest) -> mvcc::PutRequest {
    mvcc::PutRequest {
        key: put.key,
        value: put.value,
        lease: put.lease,
        prev_kv: put.prev_kv,
        ignore_value: put.ignore_value,
        ignore_lease: put.ignore_lease,
    }
}

pub(crate) fn delete_request(delete: etcd::DeleteRangeRequest) -> mvcc::DeleteRangeRequest {
    mvcc::DeleteRangeRequest {
        range: mvcc::KeyRange {
            key: delete.key,
            range_end: delete.range_end,
        },
        prev_kv: delete.prev_kv,
    }
}

pub(crate) fn txn_request(txn: etcd::TxnRequest) -> Result<mvcc::TxnRequest, String> {
    let branch = |operations: Vec<etcd::RequestOp>| {
        operations
            .into_iter()
            .map(request_op)
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(mvcc::TxnRequest {
        compare: txn
            .compare
            .into_iter()
            .map(compare)
            .collect::<Result<_, _>>()?,
        success: branch(txn.success)?,
        failure: branch(txn.failure)?,
    })
}

fn compare(compare: etcd::Compare) -> Result<mvcc::Compare, String> {
    use etcd::compare::{CompareResult, CompareTarget, TargetUnion};
    let result = match CompareResult::try_from(compare.result) {
        Ok(CompareResult::Equal) => mvcc::CompareResult::Equal,
        Ok(CompareResult::Greater) => mvcc::CompareResult::Greater,
        Ok(CompareResult::Less) => mvcc::CompareResult::Less,
        Ok(CompareResult::NotEqual) => mvcc::CompareResult::NotEqual,
        Err(_) => return Err(format!("unknown compare result {}", compare.result)),
    };
    let union = compare.target_union;
    let number = |pick: fn(&TargetUnion) -> Option<i64>| union.as_ref().and_then(pick).unwrap_or(0);
    let target = match CompareTarget::try_from(compare.target) {
        Ok(CompareTarget::Version) => mvcc::CompareTarget::Version(number(|union| match union {
            TargetUnion::Version(version) => Some(*version),
            _ => None,
        })),
        Ok(CompareTarget::Create) => mvcc::CompareTarget::Create(number(|union| match union {
            TargetUnion::CreateRevision(revision) => Some(*revision),
            _ => None,
        })),
        Ok(CompareTarget::Mod) => mvcc::CompareTarget::Mod(number(|union| match union {
            TargetUnion::ModRevision(revision) => Some(*revision),
            _ => None,
        })),
        Ok(CompareTarget::Lease) => mvcc::CompareTarget::Lease(number(|union| match union {
            TargetUnion::Lease(lease) => Some(*lease),
            _ => None,
        })),
        Ok(CompareTarget::Value) => mvcc::CompareTarget::Value(match union {
            Some(TargetUnion::Value(value)) => value,
            _ => Vec::new(),
        }),
        Err(_) => return Err(format!("unknown compare target {}", compare.target)),
    };
    Ok(mvcc::Compare {
        range: mvcc::KeyRange {
            key: compare.key,
            range_end: compare.range_end,
        },
        result,
        target,
    })
}

pub(crate) fn key_value(kv: mvcc::KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    }
}

/// A range's answer; `header` goes on the top-level response only.
pub(crate) fn range_response(
    range: mvcc::RangeResponse,
    header: Option<etcd::ResponseHeader>,
) -> etcd::RangeResponse {
    etcd::RangeResponse {
        header,
        kvs: range.kvs.into_iter().map(key_value).collect(),
        more: range.more,
        count: range.count,
    }
}

/// An operation's answer with the header etcd gives an operation inside a
/// transaction: the revision it saw, nothing else (a nested transaction's
/// is empty). The caller replaces the top-level one with a whole header.
pub(crate) fn response_op(response: mvcc::ResponseOp) -> etcd::ResponseOp {
    use etcd::response_op::Response;
    let revision_only = |revision| {
        Some(etcd::ResponseHeader {
            revision,
            ..etcd::ResponseHeader::default()
        })
    };
    let response = match response {
        mvcc::ResponseOp::Range(range) => {
            let header = revision_only(range.header_revision);
            Response::ResponseRange(range_response(range, header))
        }
        mvcc::ResponseOp::Put(put) => Response::ResponsePut(etcd::PutResponse {
            header: revision_only(put.header_revision),
            prev_kv: put.prev_kv.map(key_value),
        }),
        mvcc::ResponseOp::DeleteRange(delete) => {
            Response::ResponseDeleteRange(etcd::DeleteRangeResponse {
                header: revision_only(delete.header_revision),
                deleted: delete.deleted,
                prev_kvs: delete.prev_kvs.into_iter().map(key_value).collect(),
            })
        }
        mvcc::ResponseOp::Txn(txn) => Response::ResponseTxn(etcd::TxnResponse {
            header: Some(etcd::ResponseHeader::default()),
            succeeded: txn.succeeded,
            responses: txn.responses.into_iter().map(response_op).collect(),
        }),
    };
    etcd::ResponseOp {
        response: Some(response),
    }
}

/// etcd's uint64 cluster id for a raftgres cluster id: the FNV-1a 64-bit
/// hash of its UTF-8 bytes (docs/ETCD.md), so every node names the same
/// cluster alike and clusters with different ids differ.
pub(crate) fn etcd_cluster_id(cluster_id: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in cluster_id.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ids_hash_with_fnv1a() {
        // The published FNV-1a 64 test vectors.
        assert_eq!(etcd_cluster_id(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(etcd_cluster_id("a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn a_compare_takes_its_operand_only_from_its_targets_kind() {
        use etcd::compare::{CompareTarget, TargetUnion};
        let wire = etcd::Compare {
            target: CompareTarget::Version as i32,
            key: b"k".to_vec(),
            target_union: Some(TargetUnion::ModRevision(7)),
            ..etcd::Compare::default()
        };
        assert_eq!(
            compare(wire).expect("valid").target,
            mvcc::CompareTarget::Version(0)
        );
        let bad_sort = etcd::RangeRequest {
            key: b"k".to_vec(),
            sort_order: 9,
            ..etcd::RangeRequest::default()
        };
        assert_eq!(range_request(bad_sort).unwrap_err(), "invalid sort option");
    }
}
