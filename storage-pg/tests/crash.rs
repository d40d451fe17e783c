//! Proves that every append the store acknowledged survives the Postgres
//! server being killed (SIGKILL of the postmaster) in the middle of a stream
//! of appends, that the store recovers by itself once the server is back,
//! and that the log stays contiguous.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use raftgres_devcluster::testing::ScratchInstance;
use raftgres_storage_pg::{
    AppendBatch, EntryKind, HardState, LogEntry, LogStore, PgStore, PgStoreConfig,
};

const ENTRIES_PER_BATCH: u64 = 8;

fn batch(first_index: u64, term: u64) -> AppendBatch {
    AppendBatch {
        hard_state: Some(HardState {
            term,
            voted_for: Some(1),
        }),
        entries: (first_index..first_index + ENTRIES_PER_BATCH)
            .map(|index| LogEntry {
                index,
                term,
                kind: EntryKind::Command,
                data: format!("payload {index}").into_bytes(),
            })
            .collect(),
    }
}

struct WriterReport {
    acknowledged: Vec<AppendBatch>,
    retriable_failures: usize,
}

async fn write_until_stopped(
    mut store: PgStore,
    acknowledged_count: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> WriterReport {
    let mut acknowledged = Vec::new();
    let mut retriable_failures = 0;
    let mut next_index = 1;
    while !stop.load(Ordering::SeqCst) {
        // The term rises every few batches so hard state changes mid-stream.
        let term = 1 + acknowledged.len() as u64 / 5;
        let batch = batch(next_index, term);
        match store.append(batch.clone()).await {
            Ok(()) => {
                acknowledged.push(batch);
                acknowledged_count.fetch_add(1, Ordering::SeqCst);
                next_index += ENTRIES_PER_BATCH;
            }
            Err(error) if error.is_retriable() => {
                retriable_failures += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("fatal store error during the crash test: {error}"),
        }
    }
    store.close().await;
    WriterReport {
        acknowledged,
        retriable_failures,
    }
}

async fn wait_for(count: &AtomicUsize, target: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while count.load(Ordering::SeqCst) < target {
        assert!(
            Instant::now() < deadline,
            "writer stalled below {target} acknowledgements"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_a_postmaster_kill() {
    // Never the shared test server: this test kills its server.
    let mut scratch = ScratchInstance::start(&[]).unwrap();
    let mut config = PgStoreConfig::new(scratch.instance().conninfo(), "crash", 1);
    config.connect_timeout = Duration::from_secs(2);
    config.reconnect_lock_wait_max = Duration::from_secs(2);
    let store = PgStore::open(config.clone()).await.unwrap();

    let acknowledged_count = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(write_until_stopped(
        store,
        acknowledged_count.clone(),
        stop.clone(),
    ));

    wait_for(&acknowledged_count, 20).await;
    scratch.instance_mut().kill().unwrap();
    let acknowledged_at_kill = acknowledged_count.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    scratch.instance_mut().start_again().unwrap();
    wait_for(&acknowledged_count, acknowledged_at_kill + 20).await;
    stop.store(true, Ordering::SeqCst);
    let report = writer.await.unwrap();

    assert!(
        report.retriable_failures > 0,
        "the kill did not interrupt the writer"
    );
    let mut store = PgStore::open(config).await.unwrap();
    let loaded = store.load().await.unwrap();
    store.close().await;
    // Contiguous from index 1 (load checks contiguity after the snapshot too).
    for (position, entry) in loaded.entries.iter().enumerate() {
        assert_eq!(entry.index, position as u64 + 1, "gap in the log");
    }
    for batch in &report.acknowledged {
        for entry in &batch.entries {
            let stored = loaded.entries.get(entry.index as usize - 1);
            assert_eq!(
                stored,
                Some(entry),
                "acknowledged entry {} lost",
                entry.index
            );
        }
    }
    // A batch whose outcome was unknown when the writer stopped may also
    // be there, so the log and term can be ahead of the last acknowledgement
    // but never behind it.
    let last_acknowledged = report.acknowledged.last().unwrap();
    assert!(loaded.hard_state.term >= last_acknowledged.hard_state.unwrap().term);
    assert!(loaded.last_index() >= last_acknowledged.entries.last().unwrap().index);
}
