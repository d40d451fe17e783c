//! The product's side: the sequence through the node's applier
//! (`raftgres::server::StandaloneApplier` with `KvStateMachine`) on a
//! fresh database of a real Postgres, in the sequence's batches, with the
//! tables read after every batch and ranges read at past revisions with
//! `KvStateMachine::read_range`.

use std::collections::BTreeMap;

use prost::Message as _;
use raftgres::core::{Entry, EntryPayload, LogIndex, Term};
use raftgres::mvcc::{Event, KeyValue, Revisions};
use raftgres::server::{KvStateMachine, StandaloneApplier, StateMachine};
use raftgres_devcluster::testing::TestDatabase;
use raftgres_proto::v1 as wire;
use raftgres_storage_pg::{LogStore, StatementCache};

use crate::mapping::{etcd_command, product_outcome, raftgres_command};
use crate::sequence::{Sequence, Step};
use crate::{Run, State};

/// The cluster id the test's store records.
const CLUSTER_ID: &str = "etcd-contract";
/// Sessions unused for this many entries expire. No command uses a
/// session: this only places the expiry points, where the applier splits
/// a batch into two calls of the state machine.
const SESSION_EXPIRY_ENTRIES: u64 = 64;

/// Runs `sequence` on `database` (fresh): the log starts at an installed
/// snapshot of the empty state and holds every entry; each batch is one
/// apply transaction, after which the committed tables and the batch's
/// reads are read.
pub(crate) async fn run(sequence: &Sequence, database: &TestDatabase) -> Run {
    let entries = entries(sequence);
    let mut store =
        raftgres_tests::contract_log::open(database, CLUSTER_ID, sequence.snapshot_index, &entries)
            .await;
    let mut applier = StandaloneApplier::open(
        database.store_config(CLUSTER_ID, 1),
        KvStateMachine,
        SESSION_EXPIRY_ENTRIES,
    )
    .await
    .expect("the applier");
    let client = database.client().await.expect("a client");
    // The reads' statements, prepared once for the run's connection as a
    // node prepares them for its read connection.
    let statements = StatementCache::new();
    let mut run = Run::default();
    for batch in &sequence.batches {
        let delivered = &entries[batch.delivered()];
        let done = applier
            .apply(delivered)
            .await
            .expect("an apply transaction");
        assert_eq!(done.applied.0, sequence.index(batch.new.end - 1));
        assert_eq!(
            done.outcomes.len(),
            delivered.len(),
            "one outcome per entry"
        );
        for (index, _, outcome) in done.outcomes {
            let outcome = product_outcome(sequence.step_at(index.0), outcome);
            run.outcomes.push((index.0, outcome));
        }
        let applied_index = store.load().await.expect("the stored state").applied.index;
        run.states.push(read_state(&client, applied_index).await);
        let mut reads = Vec::with_capacity(batch.reads.len());
        for request in &batch.reads {
            let read = KvStateMachine::read_range(&statements.with(&client), request)
                .await
                .expect("a range read")
                .expect("the tables hold an applied index and a revision");
            reads.push(read);
        }
        run.reads.push(reads);
    }
    applier.close().await;
    store.close().await;
    run
}

/// Every step's command must pass the product's check before proposal,
/// and every command the model's check refused must fail it.
pub(crate) fn check_validation(sequence: &Sequence) {
    let what = sequence.describe();
    for step in &sequence.steps {
        if let Some(command) = command_bytes(step) {
            if let Err(error) = KvStateMachine.validate(&command) {
                panic!("{what}: the product refuses {step:?}, which mvcc::check_command accepts: {error}");
            }
        }
    }
    for refused in &sequence.refused {
        assert!(
            KvStateMachine
                .validate(&etcd_command(&refused.command))
                .is_err(),
            "{what}: the product accepts {:?}, which mvcc::check_command refuses ({})",
            refused.command,
            refused.reason
        );
    }
}

fn command_bytes(step: &Step) -> Option<Vec<u8>> {
    match step {
        Step::Blank => None,
        Step::Etcd(command) => Some(etcd_command(command)),
        Step::Raftgres(operation) => Some(raftgres_command(operation)),
    }
}

/// The log entries: commands without a session, blank entries as the
/// leader appends them.
fn entries(sequence: &Sequence) -> Vec<Entry> {
    sequence
        .steps
        .iter()
        .enumerate()
        .map(|(position, step)| Entry {
            term: Term(1),
            index: LogIndex(sequence.index(position)),
            payload: match command_bytes(step) {
                None => EntryPayload::Blank,
                Some(command) => EntryPayload::Command(
                    wire::LogCommand {
                        client_id: String::new(),
                        sequence: 0,
                        command,
                    }
                    .encode_to_vec(),
                ),
            },
        })
        .collect()
}

/// Checks that every change of `history` (rows of `raftgres_kv_history`
/// in (revision, sub) order) above the compaction point `compacted` points
/// at the key's change before it when that was a put, and at 0 when the
/// key had none or it was a delete: the pointers that compactions, reads
/// at past revisions and watches follow. (At or below the point they are
/// not read: a table made from a snapshot may hold 0 where the one it
/// came from points at a change compacted away.)
fn check_pointers(history: &[tokio_postgres::Row], compacted: i64) {
    // key -> (revision of its latest change, whether a put)
    let mut latest: BTreeMap<Vec<u8>, (i64, bool)> = BTreeMap::new();
    for row in history {
        let (revision, key): (i64, Vec<u8>) = (row.get(0), row.get(2));
        let put = row.get::<_, Option<Vec<u8>>>(3).is_some();
        let pointer: i64 = row.get(7);
        let expected = match latest.get(&key) {
            Some((previous, true)) => *previous,
            _ => 0,
        };
        if revision > compacted {
            assert_eq!(
                pointer,
                expected,
                "the change of {} at revision {revision} points at revision {pointer}, \
                 not at the put it replaced ({expected}; 0: none)",
                String::from_utf8_lossy(&key)
            );
        }
        latest.insert(key, (revision, put));
    }
}

/// The KV tables as committed, with `applied_index`.
pub(crate) async fn read_state(client: &tokio_postgres::Client, applied_index: u64) -> State {
    let revisions = client
        .query_one(
            "SELECT revision, compact_revision FROM raftgres_kv_revision",
            &[],
        )
        .await
        .expect("the revisions");
    let rows = client
        .query(
            "SELECT key, value, create_revision, mod_revision, version, lease, mod_index
             FROM raftgres_kv ORDER BY key",
            &[],
        )
        .await
        .expect("the KV rows")
        .iter()
        .map(|row| {
            let kv = KeyValue {
                key: row.get(0),
                value: row.get(1),
                create_revision: row.get(2),
                mod_revision: row.get(3),
                version: row.get(4),
                lease: row.get(5),
            };
            (kv.key.clone(), (kv, row.get::<_, i64>(6) as u64))
        })
        .collect();
    let history = client
        .query(
            "SELECT revision, sub, key, value, create_revision, version, lease, prev_revision
             FROM raftgres_kv_history ORDER BY revision, sub",
            &[],
        )
        .await
        .expect("the KV history");
    let compacted: i64 = revisions.get(1);
    check_pointers(&history, compacted);
    let history = history
        .iter()
        .map(|row| {
            let key: Vec<u8> = row.get(2);
            let revision = row.get(0);
            // A delete's other columns carry nothing the model has.
            let kv = row.get::<_, Option<Vec<u8>>>(3).map(|value| KeyValue {
                key: key.clone(),
                value,
                create_revision: row.get(4),
                mod_revision: revision,
                version: row.get(5),
                lease: row.get(6),
            });
            Event {
                revision,
                sub: row.get(1),
                kv,
                key,
            }
        })
        .collect();
    let leases = client
        .query("SELECT id, ttl FROM raftgres_leases", &[])
        .await
        .expect("the leases")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    State {
        applied_index,
        leases,
        revisions: Revisions {
            current: revisions.get(0),
            compacted: revisions.get(1),
        },
        rows,
        history,
    }
}
