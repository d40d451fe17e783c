//! The log a state machine contract test applies from: a node's
//! `PgStore` on a test database, at term 1, with an installed snapshot of
//! the empty state just below the entries, then the entries.

use raftgres::core::{Entry, EntryPayload};
use raftgres_devcluster::testing::TestDatabase;
use raftgres_storage_pg::{
    AppendBatch, EntryKind, HardState, LogEntry, LogStore, PgStore, SnapshotMeta,
};

/// Opens the log store of node 1 of `cluster_id` on `database`: term 1, a
/// snapshot of the empty state at `snapshot_index`, then `entries`
/// (membership entries stored as blanks: a state machine never applies
/// them).
pub async fn open(
    database: &TestDatabase,
    cluster_id: &str,
    snapshot_index: u64,
    entries: &[Entry],
) -> PgStore {
    let mut store = PgStore::open(database.store_config(cluster_id, 1))
        .await
        .expect("the log store");
    let term_one = HardState {
        term: 1,
        voted_for: None,
    };
    store
        .append(AppendBatch {
            hard_state: Some(term_one),
            entries: Vec::new(),
        })
        .await
        .expect("the hard state");
    store
        .install_snapshot(SnapshotMeta {
            index: snapshot_index,
            term: 1,
        })
        .await
        .expect("the snapshot of the empty state");
    store
        .append(AppendBatch {
            hard_state: None,
            entries: entries.iter().map(log_entry).collect(),
        })
        .await
        .expect("the entries in the log");
    store
}

fn log_entry(entry: &Entry) -> LogEntry {
    let (kind, data) = match &entry.payload {
        EntryPayload::Command(data) => (EntryKind::Command, data.clone()),
        EntryPayload::Blank | EntryPayload::Membership(_) => (EntryKind::Blank, Vec::new()),
    };
    LogEntry {
        index: entry.index.0,
        term: entry.term.0,
        kind,
        data,
    }
}
