//! The product's side: the sequence through the node's applier
//! (`raftgres::server::StandaloneApplier` with `KvStateMachine`) on a fresh
//! database of a real Postgres, in the sequence's batches.

use std::collections::BTreeMap;

use raftgres::pipeline::ApplyOutcome;
use raftgres::server::{KvStateMachine, StandaloneApplier};
use raftgres_devcluster::testing::TestDatabase;
use raftgres_storage_pg::LogStore;

use crate::mapping::{text, Answer};
use crate::sequence::{Batch, Sequence, Step};
use crate::{Coverage, Outcome, Run, SessionRow, State};

/// The cluster id the test's store records.
const CLUSTER_ID: &str = "kv-contract";

/// Runs `sequence` on a fresh database: the log starts at an installed
/// snapshot of the empty state and holds every entry; each batch is one
/// apply transaction, after which the committed rows are read.
pub(crate) async fn run(sequence: &Sequence, coverage: &mut Coverage) -> Run {
    let database = TestDatabase::create().await.expect("a test database");
    let entries = sequence.product_entries();
    let mut store = raftgres_tests::contract_log::open(
        &database,
        CLUSTER_ID,
        sequence.snapshot_index,
        &entries,
    )
    .await;
    let mut applier = StandaloneApplier::open(
        database.store_config(CLUSTER_ID, 1),
        KvStateMachine,
        sequence.session_expiry_entries,
    )
    .await
    .expect("the applier");
    let client = database.client().await.expect("a client");
    let mut outcomes = Vec::with_capacity(entries.len());
    let mut states = Vec::with_capacity(sequence.batches.len());
    // The raw response of every first application, by index.
    let mut responses: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
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
            check_retry_rule(sequence, batch, index.0, &outcome, &mut responses, coverage);
            outcomes.push((index.0, product_outcome(sequence, index.0, outcome)));
        }
        let applied_index = store.load().await.expect("the stored state").applied.index;
        states.push(product_state(&client, applied_index).await);
    }
    applier.close().await;
    store.close().await;
    Run { outcomes, states }
}

/// The retry rule on the product alone: a repeat answers with the very
/// bytes its first application answered.
fn check_retry_rule(
    sequence: &Sequence,
    batch: &Batch,
    index: u64,
    outcome: &ApplyOutcome,
    responses: &mut BTreeMap<u64, Vec<u8>>,
    coverage: &mut Coverage,
) {
    match outcome {
        ApplyOutcome::Response(response) => {
            responses.insert(index, response.clone());
        }
        ApplyOutcome::Repeated {
            response,
            first_index,
        } => {
            assert_eq!(
                Some(response),
                responses.get(&first_index.0),
                "{}: entry {index} repeats entry {first_index} with another response",
                sequence.describe()
            );
            if first_index.0 >= sequence.index(batch.new.start) {
                coverage.repeated_in_one_batch += 1;
            }
        }
        ApplyOutcome::Refused(_) | ApplyOutcome::Unknown => {}
    }
}

/// The product's outcome for the entry at `index` in comparable terms. A
/// failed compare-and-swap of a missing key answers an empty `KvResult`,
/// which is also what a blank entry answers: the step tells them apart.
fn product_outcome(sequence: &Sequence, index: u64, outcome: ApplyOutcome) -> Outcome {
    match (sequence.step_at(index), outcome) {
        (_, ApplyOutcome::Unknown) => Outcome::Unknown,
        (_, ApplyOutcome::Refused(_)) => Outcome::Refused,
        (Step::Blank | Step::Probe, ApplyOutcome::Response(response)) if response.is_empty() => {
            Outcome::Nothing
        }
        (Step::Write { .. }, ApplyOutcome::Response(response)) => {
            Outcome::Applied(Answer::of_product(&response))
        }
        (
            Step::Write { .. },
            ApplyOutcome::Repeated {
                response,
                first_index,
            },
        ) => Outcome::Repeated {
            answer: Answer::of_product(&response),
            first_index: first_index.0,
        },
        (step, outcome) => Outcome::Unexpected(format!("{step:?} answered {outcome:?}")),
    }
}

/// The rows as committed in Postgres.
async fn product_state(client: &tokio_postgres::Client, applied_index: u64) -> State {
    let rows = client
        .query("SELECT key, value, mod_index FROM raftgres_kv", &[])
        .await
        .expect("the KV rows")
        .iter()
        .map(|row| {
            let value = (text(row.get(1)), row.get::<_, i64>(2) as u64);
            (text(row.get(0)), value)
        })
        .collect();
    let sessions = client
        .query(
            "SELECT client_id, sequence, response, last_index FROM raftgres_sessions",
            &[],
        )
        .await
        .expect("the session rows")
        .iter()
        .map(|row| {
            let session = SessionRow {
                sequence: row.get::<_, i64>(1) as u64,
                answer: Answer::of_product(row.get(2)),
                last_index: row.get::<_, i64>(3) as u64,
            };
            (row.get(0), session)
        })
        .collect();
    State {
        rows,
        sessions,
        applied_index,
    }
}
