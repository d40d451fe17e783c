//! etcd's semantics, case by case, on the in-memory store.

use super::*;

fn put(key: &str, value: &str) -> Command {
    Command::Op(RequestOp::Put(PutRequest {
        key: key.into(),
        value: value.into(),
        prev_kv: true,
        ..PutRequest::default()
    }))
}

fn delete(key: &str, range_end: &str) -> Command {
    Command::Op(RequestOp::DeleteRange(DeleteRangeRequest {
        range: KeyRange {
            key: key.into(),
            range_end: range_end.into(),
        },
        prev_kv: true,
    }))
}

fn get(store: &MvccStore, key: &str, range_end: &str, revision: Revision) -> Vec<KeyValue> {
    let request = RangeRequest {
        range: KeyRange {
            key: key.into(),
            range_end: range_end.into(),
        },
        revision,
        ..RangeRequest::default()
    };
    store.range(&request).expect("readable").kvs
}

fn kv(key: &str, value: &str, create: Revision, modified: Revision, version: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: value.into(),
        create_revision: create,
        mod_revision: modified,
        version,
        lease: 0,
    }
}

#[test]
fn writes_advance_the_revision_and_keys_count_versions() {
    let mut store = MvccStore::default();
    assert_eq!(store.revisions().current, 1, "an empty store is at 1");
    let (outcome, events) = store.apply(&put("a", "1"));
    assert_eq!(outcome.revision, 2);
    assert_eq!(events.len(), 1);
    store.apply(&put("a", "2"));
    let (outcome, _) = store.apply(&put("b", "1"));
    assert_eq!(outcome.revision, 4);
    assert_eq!(store.get(b"a"), Some(&kv("a", "2", 2, 3, 2)));
    // A delete ends the key's life; a put after it starts a new one.
    let (outcome, _) = store.apply(&delete("a", ""));
    assert_eq!(outcome.revision, 5);
    let Ok(Answer::Op(ResponseOp::DeleteRange(deleted))) = outcome.result else {
        panic!("a delete answers a delete: {outcome:?}");
    };
    assert_eq!(deleted.deleted, 1);
    assert_eq!(deleted.prev_kvs, vec![kv("a", "2", 2, 3, 2)]);
    store.apply(&put("a", "3"));
    assert_eq!(store.get(b"a"), Some(&kv("a", "3", 6, 6, 1)));
    // Deleting nothing changes nothing, not even the revision.
    let (outcome, events) = store.apply(&delete("zz", ""));
    assert_eq!((outcome.revision, events.len()), (6, 0));
}

#[test]
fn past_revisions_are_readable_until_compacted() {
    let mut store = MvccStore::default();
    store.apply(&put("a", "1")); // 2
    store.apply(&put("b", "1")); // 3
    store.apply(&put("a", "2")); // 4
    store.apply(&delete("b", "")); // 5
    assert_eq!(get(&store, "a", "\0", 2), vec![kv("a", "1", 2, 2, 1)]);
    assert_eq!(
        get(&store, "a", "\0", 3),
        vec![kv("a", "1", 2, 2, 1), kv("b", "1", 3, 3, 1)]
    );
    assert_eq!(get(&store, "a", "\0", 5), vec![kv("a", "2", 2, 4, 2)]);
    let future = RangeRequest {
        range: KeyRange::single("a"),
        revision: 6,
        ..RangeRequest::default()
    };
    assert_eq!(store.range(&future), Err(KvError::FutureRevision));

    let (outcome, _) = store.apply(&Command::Compact(4));
    assert_eq!(outcome.result, Ok(Answer::Compacted));
    assert_eq!(outcome.revision, 5, "a compaction is not a write");
    let old = RangeRequest {
        revision: 3,
        ..future.clone()
    };
    assert_eq!(store.range(&old), Err(KvError::Compacted));
    // At the compaction point itself everything is still there.
    assert_eq!(
        get(&store, "a", "\0", 4),
        vec![kv("a", "2", 2, 4, 2), kv("b", "1", 3, 3, 1)]
    );
    assert_eq!(
        store.apply(&Command::Compact(4)).0.result,
        Err(KvError::Compacted)
    );
    assert_eq!(
        store.apply(&Command::Compact(9)).0.result,
        Err(KvError::FutureRevision)
    );
    // Compacting at the delete of b keeps it (a watch from 5 sends it);
    // compacting past it forgets b entirely.
    let history_keys = |store: &MvccStore| -> Vec<Vec<u8>> {
        store
            .history()
            .iter()
            .map(|event| event.key.clone())
            .collect()
    };
    store.apply(&Command::Compact(5));
    assert_eq!(history_keys(&store), [b"a".to_vec(), b"b".to_vec()]);
    store.apply(&put("c", "1")); // 6
    store.apply(&Command::Compact(6));
    assert_eq!(history_keys(&store), [b"a".to_vec(), b"c".to_vec()]);
}

#[test]
fn a_transaction_is_one_revision_and_judges_its_compares_before_it_runs() {
    let mut store = MvccStore::default();
    store.apply(&put("a", "1")); // 2
    let txn = TxnRequest {
        compare: vec![Compare {
            range: KeyRange::single("a"),
            result: CompareResult::Equal,
            target: CompareTarget::Value(b"1".to_vec()),
        }],
        success: vec![
            RequestOp::Put(PutRequest {
                key: b"a".to_vec(),
                value: b"2".to_vec(),
                ..PutRequest::default()
            }),
            RequestOp::Put(PutRequest {
                key: b"b".to_vec(),
                value: b"2".to_vec(),
                ..PutRequest::default()
            }),
            // Sees the puts before it.
            RequestOp::Range(RangeRequest {
                range: KeyRange {
                    key: b"a".to_vec(),
                    range_end: vec![0],
                },
                ..RangeRequest::default()
            }),
            // Judged against the state before the transaction: a is 1.
            RequestOp::Txn(TxnRequest {
                compare: vec![Compare {
                    range: KeyRange::single("a"),
                    result: CompareResult::Equal,
                    target: CompareTarget::Version(1),
                }],
                success: vec![RequestOp::DeleteRange(DeleteRangeRequest {
                    range: KeyRange::single("c"),
                    prev_kv: false,
                })],
                failure: Vec::new(),
            }),
        ],
        failure: Vec::new(),
    };
    let command = Command::Op(RequestOp::Txn(txn));
    assert_eq!(check_command(&command), Ok(()));
    let (outcome, events) = store.apply(&command);
    assert_eq!(outcome.revision, 3);
    assert_eq!(
        events.iter().map(|event| event.sub).collect::<Vec<_>>(),
        [0, 1]
    );
    let Ok(Answer::Op(ResponseOp::Txn(response))) = outcome.result else {
        panic!("a transaction answers a transaction: {outcome:?}");
    };
    assert!(response.succeeded);
    let ResponseOp::Range(read) = &response.responses[2] else {
        panic!("the third operation is a range");
    };
    assert_eq!(read.kvs, vec![kv("a", "2", 2, 3, 2), kv("b", "2", 3, 3, 1)]);
    let ResponseOp::Txn(nested) = &response.responses[3] else {
        panic!("the fourth operation is a transaction");
    };
    assert!(nested.succeeded, "the nested compare saw version 1");

    // A value compare on a missing key fails; numbers of a missing key are 0.
    let missing = |target| {
        Command::Op(RequestOp::Txn(TxnRequest {
            compare: vec![Compare {
                range: KeyRange::single("nope"),
                result: CompareResult::Equal,
                target,
            }],
            ..TxnRequest::default()
        }))
    };
    for (target, holds) in [
        (CompareTarget::Value(Vec::new()), false),
        (CompareTarget::Create(0), true),
        (CompareTarget::Version(0), true),
    ] {
        let (outcome, events) = store.apply(&missing(target.clone()));
        let Ok(Answer::Op(ResponseOp::Txn(response))) = outcome.result else {
            panic!("{outcome:?}");
        };
        assert_eq!(response.succeeded, holds, "{target:?}");
        assert!(events.is_empty());
        assert_eq!(outcome.revision, 3, "a read-only transaction is no write");
    }
}

#[test]
fn puts_that_keep_value_or_lease_need_the_key_and_leases_must_exist() {
    let mut store = MvccStore::default();
    let keep = Command::Op(RequestOp::Put(PutRequest {
        key: b"a".to_vec(),
        ignore_value: true,
        ..PutRequest::default()
    }));
    let (outcome, events) = store.apply(&keep);
    assert_eq!(outcome.result, Err(KvError::KeyNotFound));
    assert!(events.is_empty());
    store.apply(&put("a", "1"));
    let (outcome, _) = store.apply(&keep);
    assert!(outcome.result.is_ok());
    assert_eq!(store.get(b"a"), Some(&kv("a", "1", 2, 3, 2)));
    let leased = Command::Op(RequestOp::Put(PutRequest {
        key: b"b".to_vec(),
        lease: 7,
        ..PutRequest::default()
    }));
    assert_eq!(store.apply(&leased).0.result, Err(KvError::LeaseNotFound));
}

#[test]
fn commands_are_checked_as_etcd_checks_them() {
    let put_op = |key: &str| {
        RequestOp::Put(PutRequest {
            key: key.into(),
            ..PutRequest::default()
        })
    };
    let txn = |success: Vec<RequestOp>| {
        Command::Op(RequestOp::Txn(TxnRequest {
            success,
            ..TxnRequest::default()
        }))
    };
    assert!(check_command(&put("", "v")).is_err());
    assert!(check_command(&txn(vec![put_op("a"), put_op("a")])).is_err());
    let delete_a = RequestOp::DeleteRange(DeleteRangeRequest {
        range: KeyRange {
            key: b"a".to_vec(),
            range_end: b"b".to_vec(),
        },
        prev_kv: false,
    });
    assert!(check_command(&txn(vec![put_op("ab"), delete_a.clone()])).is_err());
    assert_eq!(check_command(&txn(vec![put_op("b"), delete_a])), Ok(()));
    let nested = RequestOp::Txn(TxnRequest {
        success: vec![put_op("x")],
        failure: vec![put_op("x")],
        ..TxnRequest::default()
    });
    assert_eq!(check_command(&txn(vec![nested.clone()])), Ok(()));
    assert!(check_command(&txn(vec![nested, put_op("x")])).is_err());
    // As etcd: a put in one nested branch and a delete in the other, or
    // a later sibling deleting what an earlier one put, are accepted.
    let delete_x = RequestOp::DeleteRange(DeleteRangeRequest {
        range: KeyRange::single("x"),
        prev_kv: false,
    });
    let either = RequestOp::Txn(TxnRequest {
        success: vec![put_op("x")],
        failure: vec![delete_x.clone()],
        ..TxnRequest::default()
    });
    assert_eq!(check_command(&txn(vec![either])), Ok(()));
    let puts_x = RequestOp::Txn(TxnRequest {
        success: vec![put_op("x")],
        ..TxnRequest::default()
    });
    let deletes_x = RequestOp::Txn(TxnRequest {
        success: vec![delete_x.clone()],
        ..TxnRequest::default()
    });
    assert_eq!(
        check_command(&txn(vec![puts_x.clone(), deletes_x.clone()])),
        Ok(())
    );
    // ...but a put after a sibling's delete of its key, or at the level of
    // a delete, is refused.
    assert!(check_command(&txn(vec![deletes_x, puts_x])).is_err());
    assert!(check_command(&txn(vec![delete_x, put_op("x")])).is_err());
    assert!(check_command(&txn(vec![put_op("a"); TXN_OPERATIONS_MAX + 1])).is_err());
    let keep_with_value = Command::Op(RequestOp::Put(PutRequest {
        key: b"a".to_vec(),
        value: b"v".to_vec(),
        ignore_value: true,
        ..PutRequest::default()
    }));
    assert!(check_command(&keep_with_value).is_err());
}

#[test]
fn ranges_sort_filter_limit_and_count_as_etcd_does() {
    let rows = vec![
        kv("a", "3", 2, 9, 4),
        kv("b", "1", 3, 3, 1),
        kv("c", "2", 4, 7, 2),
    ];
    let request = |change: &dyn Fn(&mut RangeRequest)| {
        let mut request = RangeRequest::default();
        change(&mut request);
        shape_range(rows.clone(), 3, &request)
    };
    let keys = |response: &RangeResponse| -> String {
        response
            .kvs
            .iter()
            .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
            .collect()
    };
    let limited = request(&|request| request.limit = 2);
    assert_eq!(
        (keys(&limited), limited.more, limited.count),
        ("ab".into(), true, 3)
    );
    // A sort target without an order sorts ascending.
    let by_mod = request(&|request| request.sort_target = SortTarget::Mod);
    assert_eq!(keys(&by_mod), "bca");
    let by_value_down = request(&|request| {
        request.sort_target = SortTarget::Value;
        request.sort_order = SortOrder::Descend;
        request.limit = 1;
    });
    assert_eq!(keys(&by_value_down), "a");
    // Filters drop rows after the count.
    let recent = request(&|request| request.min_mod_revision = 7);
    assert_eq!((keys(&recent), recent.count), ("ac".into(), 3));
    let counted = request(&|request| request.count_only = true);
    assert_eq!((counted.kvs.len(), counted.count), (0, 3));
    let keys_only = request(&|request| request.keys_only = true);
    assert!(keys_only.kvs.iter().all(|kv| kv.value.is_empty()));
}

#[test]
fn key_ranges_follow_etcds_encoding() {
    let range = |key: &str, end: &[u8]| KeyRange {
        key: key.into(),
        range_end: end.to_vec(),
    };
    assert!(range("a", b"").contains(b"a") && !range("a", b"").contains(b"ab"));
    assert!(range("a", b"\0").contains(b"zzz") && !range("b", b"\0").contains(b"a"));
    assert!(range("a", b"c").contains(b"bz") && !range("a", b"c").contains(b"c"));
    assert!(!range("c", b"a").contains(b"c"), "key after end: empty");
    assert!(range("a", b"c").overlaps(&range("b", b"")));
    assert!(!range("a", b"c").overlaps(&range("c", b"\0")));
    let mut store = MvccStore::default();
    store.apply(&put("a", "1"));
    assert!(get(&store, "c", "a", 0).is_empty());
}

#[test]
fn revoking_a_lease_deletes_its_keys_at_one_revision() {
    let mut store = MvccStore::default();
    let grant = Command::LeaseGrant { id: 5, ttl: 10 };
    assert_eq!(check_command(&grant), Ok(()));
    let (outcome, events) = store.apply(&grant);
    assert_eq!(outcome.result, Ok(Answer::LeaseGranted));
    assert_eq!(
        (outcome.revision, events.len()),
        (1, 0),
        "a grant is no write"
    );
    assert_eq!(store.apply(&grant).0.result, Err(KvError::LeaseExists));
    let leased = |key: &str| {
        Command::Op(RequestOp::Put(PutRequest {
            key: key.into(),
            value: b"v".to_vec(),
            lease: 5,
            ..PutRequest::default()
        }))
    };
    store.apply(&leased("a")); // 2
    store.apply(&leased("b")); // 3
    store.apply(&put("c", "1")); // 4
                                 // A put without the lease detaches b.
    store.apply(&put("b", "2")); // 5
    let (outcome, events) = store.apply(&Command::LeaseRevoke(5));
    assert_eq!(outcome.result, Ok(Answer::LeaseRevoked));
    assert_eq!(outcome.revision, 6);
    assert_eq!(
        events
            .iter()
            .map(|event| (event.key.clone(), event.kv.is_none()))
            .collect::<Vec<_>>(),
        [(b"a".to_vec(), true)]
    );
    assert!(store.leases().is_empty());
    assert_eq!(
        store.apply(&Command::LeaseRevoke(5)).0.result,
        Err(KvError::LeaseNotFound)
    );
    assert_eq!(
        store.apply(&leased("d")).0.result,
        Err(KvError::LeaseNotFound)
    );
    assert!(check_command(&Command::LeaseGrant { id: 0, ttl: 5 }).is_err());
    assert!(check_command(&Command::LeaseGrant { id: 1, ttl: 0 }).is_err());
}

#[test]
fn a_store_rebuilt_from_its_parts_is_the_same_store() {
    let mut store = MvccStore::default();
    store.apply(&put("a", "1")); // 2
    store.apply(&put("b", "1")); // 3
    store.apply(&delete("b", "")); // 4
    store.apply(&Command::LeaseGrant { id: 9, ttl: 5 });
    // The delete of b at the compaction point stays in the history.
    store.apply(&Command::Compact(4));
    let rebuilt = MvccStore::from_parts(
        store.rows().values().cloned(),
        store.history().into_iter().cloned(),
        store.leases().iter().map(|(id, ttl)| (*id, *ttl)),
        store.revisions(),
    );
    assert_eq!(rebuilt.as_ref(), Ok(&store));
}
