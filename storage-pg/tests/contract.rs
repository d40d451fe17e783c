//! One contract suite for every `LogStore`: each property is a generic async
//! function, run once on `MemStore` and once on `PgStore` against a real
//! Postgres database (see `raftgres_devcluster::testing`).

use raftgres_devcluster::testing::TestDatabase;
use raftgres_storage_pg::{
    AppendBatch, AppliedState, EntryKind, HardState, LoadedState, LogEntry, LogStore, MemStore,
    PgStore, SnapshotMeta, StoreError,
};

fn entry(index: u64, term: u64) -> LogEntry {
    LogEntry {
        index,
        term,
        kind: match index % 3 {
            0 => EntryKind::Blank,
            _ => EntryKind::Command,
        },
        data: format!("entry {index} term {term}").into_bytes(),
    }
}

fn entries(indexes: std::ops::RangeInclusive<u64>, term: u64) -> Vec<LogEntry> {
    indexes.map(|index| entry(index, term)).collect()
}

fn batch(entries: Vec<LogEntry>) -> AppendBatch {
    AppendBatch {
        hard_state: None,
        entries,
    }
}

/// Entries may not carry a term above the stored hard state's, so a
/// property that appends without a hard state first records one.
async fn enter_term(store: &mut impl LogStore, term: u64) {
    store
        .save_hard_state(HardState {
            term,
            voted_for: None,
        })
        .await
        .unwrap();
}

async fn starts_empty(store: &mut impl LogStore) {
    assert_eq!(store.load().await.unwrap(), LoadedState::default());
    assert_eq!(store.entries(1, 1).await.unwrap(), vec![]);
    assert!(matches!(
        store.entries(1, 2).await,
        Err(StoreError::OutOfRange { .. })
    ));
}

async fn appended_entries_read_back(store: &mut impl LogStore) {
    let hard_state = HardState {
        term: 2,
        voted_for: Some(7),
    };
    store
        .append(AppendBatch {
            hard_state: Some(hard_state),
            entries: entries(1..=5, 2),
        })
        .await
        .unwrap();
    let loaded = store.load().await.unwrap();
    assert_eq!(loaded.hard_state, hard_state);
    assert_eq!(loaded.entries, entries(1..=5, 2));
    assert_eq!(store.entries(2, 4).await.unwrap(), entries(2..=3, 2));
    assert_eq!(store.entries(1, 6).await.unwrap(), entries(1..=5, 2));
    assert!(matches!(
        store.entries(1, 7).await,
        Err(StoreError::OutOfRange { .. })
    ));
    store.append(batch(entries(6..=6, 2))).await.unwrap();
    assert_eq!(store.load().await.unwrap().last_index(), 6);
}

async fn conflicting_suffix_is_replaced(store: &mut impl LogStore) {
    enter_term(store, 2).await;
    store.append(batch(entries(1..=5, 1))).await.unwrap();
    store.append(batch(entries(3..=4, 2))).await.unwrap();
    let mut expected = entries(1..=2, 1);
    expected.extend(entries(3..=4, 2));
    assert_eq!(store.load().await.unwrap().entries, expected);
    // Re-appending an identical entry is idempotent.
    store.append(batch(entries(4..=4, 2))).await.unwrap();
    assert_eq!(store.load().await.unwrap().entries, expected);
}

async fn hard_state_never_regresses(store: &mut impl LogStore) {
    let voted = HardState {
        term: 2,
        voted_for: Some(1),
    };
    store.save_hard_state(voted).await.unwrap();
    let lower_term = HardState {
        term: 1,
        voted_for: None,
    };
    let other_vote = HardState {
        term: 2,
        voted_for: Some(3),
    };
    for requested in [lower_term, other_vote] {
        let result = store.save_hard_state(requested).await;
        assert!(
            matches!(result, Err(StoreError::HardStateRegression { .. })),
            "{requested:?}: {result:?}"
        );
    }
    // A vote the bigint column cannot hold is refused with its reason, not
    // cast to a negative number for Postgres to refuse.
    let beyond_bigint = HardState {
        term: 3,
        voted_for: Some(1 << 63),
    };
    let result = store.save_hard_state(beyond_bigint).await;
    assert!(
        matches!(&result, Err(StoreError::AppendRefused { reason }) if reason.contains("bigint")),
        "{result:?}"
    );
    // The same rule holds when the hard state rides with entries, and then
    // the entries are not written either.
    let result = store
        .append(AppendBatch {
            hard_state: Some(lower_term),
            entries: entries(1..=2, 2),
        })
        .await;
    assert!(matches!(
        result,
        Err(StoreError::HardStateRegression { .. })
    ));
    let loaded = store.load().await.unwrap();
    assert_eq!(loaded.hard_state, voted);
    assert!(loaded.entries.is_empty());
    let next_term = HardState {
        term: 3,
        voted_for: None,
    };
    store.save_hard_state(next_term).await.unwrap();
    assert_eq!(store.load().await.unwrap().hard_state, next_term);
}

async fn invalid_batches_write_nothing(store: &mut impl LogStore) {
    enter_term(store, 1).await;
    store.append(batch(entries(1..=3, 1))).await.unwrap();
    store.compact(1, 1).await.unwrap();
    let before = store.load().await.unwrap();
    let invalid = [
        ("gap after the last index", entries(5..=6, 1)),
        ("at the snapshot index", entries(1..=2, 1)),
        ("not contiguous", vec![entry(3, 1), entry(5, 1)]),
        ("terms decrease", vec![entry(3, 2), entry(4, 1)]),
    ];
    for (what, entries) in invalid {
        let result = store
            .append(AppendBatch {
                hard_state: Some(HardState {
                    term: 9,
                    voted_for: None,
                }),
                entries,
            })
            .await;
        assert!(
            matches!(result, Err(StoreError::InvalidBatch { .. })),
            "{what}: {result:?}"
        );
        assert!(!result.unwrap_err().is_retriable());
        assert_eq!(
            store.load().await.unwrap(),
            before,
            "{what} wrote something"
        );
    }
}

async fn compaction_drops_the_prefix(store: &mut impl LogStore) {
    enter_term(store, 3).await;
    store.append(batch(entries(1..=10, 3))).await.unwrap();
    store.compact(4, 3).await.unwrap();
    let loaded = store.load().await.unwrap();
    assert_eq!(loaded.snapshot, SnapshotMeta { index: 4, term: 3 });
    assert_eq!(loaded.entries, entries(5..=10, 3));
    assert!(matches!(
        store.entries(4, 6).await,
        Err(StoreError::OutOfRange { .. })
    ));
    // Already compacted: nothing to do.
    store.compact(2, 3).await.unwrap();
    assert!(matches!(
        store.compact(11, 3).await,
        Err(StoreError::OutOfRange { .. })
    ));
    assert!(store.compact(6, 2).await.is_err(), "wrong term accepted");
    store.compact(10, 3).await.unwrap();
    let loaded = store.load().await.unwrap();
    assert_eq!(loaded.snapshot, SnapshotMeta { index: 10, term: 3 });
    assert!(loaded.entries.is_empty());
    assert!(store.append(batch(entries(10..=10, 3))).await.is_err());
    store.append(batch(entries(11..=11, 3))).await.unwrap();
    assert_eq!(store.load().await.unwrap().entries, entries(11..=11, 3));
}

async fn installed_snapshot_replaces_the_log(store: &mut impl LogStore) {
    enter_term(store, 3).await;
    store.append(batch(entries(1..=5, 1))).await.unwrap();
    let meta = SnapshotMeta { index: 20, term: 3 };
    store.install_snapshot(meta).await.unwrap();
    let loaded = store.load().await.unwrap();
    assert_eq!(loaded.snapshot, meta);
    assert!(loaded.entries.is_empty());
    assert_eq!(loaded.applied, AppliedState { index: 20, term: 3 });
    assert!(store.append(batch(entries(5..=5, 3))).await.is_err());
    store.append(batch(entries(21..=22, 3))).await.unwrap();
    assert!(matches!(
        store
            .install_snapshot(SnapshotMeta { index: 19, term: 3 })
            .await,
        Err(StoreError::Regression { .. })
    ));
    assert_eq!(store.load().await.unwrap().entries, entries(21..=22, 3));
}

async fn applied_only_moves_forward(store: &mut impl LogStore) {
    enter_term(store, 1).await;
    store.append(batch(entries(1..=5, 1))).await.unwrap();
    let applied = AppliedState { index: 3, term: 1 };
    store.save_applied(applied).await.unwrap();
    for index in [3, 2] {
        let result = store.save_applied(AppliedState { index, term: 1 }).await;
        assert!(
            matches!(result, Err(StoreError::Regression { .. })),
            "{index}: {result:?}"
        );
    }
    assert_eq!(store.load().await.unwrap().applied, applied);
}

async fn appends_that_would_change_applied_entries_are_refused(store: &mut impl LogStore) {
    enter_term(store, 2).await;
    store.append(batch(entries(1..=6, 1))).await.unwrap();
    store
        .save_applied(AppliedState { index: 4, term: 1 })
        .await
        .unwrap();
    let before = store.load().await.unwrap();
    let mut rewrites_applied_entry_2 = entries(2..=3, 1);
    rewrites_applied_entry_2[0].data = b"not what was applied".to_vec();
    rewrites_applied_entry_2.extend(entries(4..=6, 1));
    let refused = [
        (
            "ends below the applied index, deleting applied entries",
            entries(3..=3, 1),
        ),
        (
            "replaces the applied entry in a new term",
            entries(4..=5, 2),
        ),
        ("changes an earlier applied entry", rewrites_applied_entry_2),
    ];
    for (what, entries) in refused {
        // The hard state riding with the batch must not be saved either.
        let result = store
            .append(AppendBatch {
                hard_state: Some(HardState {
                    term: 3,
                    voted_for: Some(1),
                }),
                entries,
            })
            .await;
        assert!(
            matches!(result, Err(StoreError::AppendRefused { .. })),
            "{what}: {result:?}"
        );
        assert!(!result.unwrap_err().is_retriable());
        assert_eq!(
            store.load().await.unwrap(),
            before,
            "{what} changed something"
        );
    }
    // Rewriting applied entries unchanged and replacing what follows the
    // applied index is what a follower does, and stays allowed.
    let mut replacement = entries(3..=4, 1);
    replacement.extend(entries(5..=7, 2));
    store.append(batch(replacement)).await.unwrap();
    let mut expected = entries(1..=4, 1);
    expected.extend(entries(5..=7, 2));
    assert_eq!(store.load().await.unwrap().entries, expected);
}

async fn entries_above_the_hard_state_term_are_refused(store: &mut impl LogStore) {
    enter_term(store, 2).await;
    store.append(batch(entries(1..=2, 2))).await.unwrap();
    let before = store.load().await.unwrap();
    let voted_in_term_2 = Some(HardState {
        term: 2,
        voted_for: Some(1),
    });
    let moved_to_term_3 = Some(HardState {
        term: 3,
        voted_for: None,
    });
    let refused = [
        ("no hard state", None, entries(3..=3, 3)),
        (
            "a hard state in a lower term",
            voted_in_term_2,
            entries(3..=3, 3),
        ),
        (
            "a hard state still too low",
            moved_to_term_3,
            entries(3..=4, 4),
        ),
    ];
    for (what, hard_state, entries) in refused {
        let result = store
            .append(AppendBatch {
                hard_state,
                entries,
            })
            .await;
        assert!(
            matches!(result, Err(StoreError::AppendRefused { .. })),
            "{what}: {result:?}"
        );
        assert_eq!(
            store.load().await.unwrap(),
            before,
            "{what} changed something"
        );
    }
    // The term is judged after the call: raising it in the same batch is
    // how a follower takes entries from a new leader.
    store
        .append(AppendBatch {
            hard_state: moved_to_term_3,
            entries: entries(3..=3, 3),
        })
        .await
        .unwrap();
    let loaded = store.load().await.unwrap();
    assert_eq!(loaded.hard_state.term, 3);
    assert_eq!(loaded.last_index(), 3);
}

macro_rules! contract_suite {
    ($($property:ident),* $(,)?) => {
        mod mem {
            $(
                #[tokio::test]
                async fn $property() {
                    super::$property(&mut super::MemStore::new()).await;
                }
            )*
        }

        mod pg {
            $(
                #[tokio::test]
                async fn $property() {
                    let database = super::TestDatabase::create().await.expect("test database");
                    let mut store = super::PgStore::open(database.store_config("contract", 1))
                        .await
                        .expect("open store");
                    super::$property(&mut store).await;
                    store.close().await;
                }
            )*
        }
    };
}

contract_suite!(
    starts_empty,
    appended_entries_read_back,
    conflicting_suffix_is_replaced,
    hard_state_never_regresses,
    invalid_batches_write_nothing,
    compaction_drops_the_prefix,
    installed_snapshot_replaces_the_log,
    applied_only_moves_forward,
    appends_that_would_change_applied_entries_are_refused,
    entries_above_the_hard_state_term_are_refused,
);
