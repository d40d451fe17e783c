//! raftgres.v1's single-key operations (put, delete, compare-and-swap) as
//! the etcd commands they apply as: one definition for the Postgres state
//! machine and the simulator's model.

use super::{
    Command, Compare, CompareResult, CompareTarget, DeleteRangeRequest, KeyRange, PutRequest,
    RangeRequest, RequestOp, TxnRequest,
};

/// A put that answers the previous value.
pub fn put(key: &[u8], value: &[u8]) -> Command {
    Command::Op(write(key, Some(value)))
}

/// A delete of one key that answers the previous value.
pub fn delete(key: &[u8]) -> Command {
    Command::Op(write(key, None))
}

/// A compare-and-swap: if `key` holds `expected` (or, for `None`, does
/// not exist), put `value` (or, for `None`, delete the key). Both branches
/// read the key first, so the answer's first response is the value found.
pub fn compare_and_swap(key: &[u8], expected: Option<&[u8]>, value: Option<&[u8]>) -> Command {
    let target = match expected {
        Some(expected) => CompareTarget::Value(expected.to_vec()),
        None => CompareTarget::Create(0),
    };
    let read = || {
        RequestOp::Range(RangeRequest {
            range: KeyRange::single(key),
            ..RangeRequest::default()
        })
    };
    Command::Op(RequestOp::Txn(TxnRequest {
        compare: vec![Compare {
            range: KeyRange::single(key),
            result: CompareResult::Equal,
            target,
        }],
        success: vec![read(), write(key, value)],
        failure: vec![read()],
    }))
}

fn write(key: &[u8], value: Option<&[u8]>) -> RequestOp {
    match value {
        Some(value) => RequestOp::Put(PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            prev_kv: true,
            ..PutRequest::default()
        }),
        None => RequestOp::DeleteRange(DeleteRangeRequest {
            range: KeyRange::single(key),
            prev_kv: true,
        }),
    }
}
