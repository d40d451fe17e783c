//! Proves that the product's Postgres KV state machine keeps etcd's MVCC
//! store exactly as the pure model does: the same committed command
//! sequences, run through `raftgres::mvcc::MvccStore::apply` (entry by
//! entry) and through the node's applier against a real Postgres
//! (`raftgres::server::StandaloneApplier` with `KvStateMachine`: the
//! decoding of `KvCommand`, the prefetch of the rows a batch touches, the
//! SQL that writes rows, history, revisions and compactions), give the same
//! answer and revision for every entry, leave the same tables after every
//! apply transaction, and answer the same reads at past revisions. A
//! second test proves that the state exported page by page imports into
//! another database unchanged, and that tampered pages are refused.
//!
//! Each sequence is drawn from a seed (`sequence.rs`) over a few keys, some
//! the prefix of others: etcd puts (with prev_kv, keeping the value or the
//! lease, also of missing keys, and naming leases, which do not exist),
//! delete-ranges (one key, `[start, end)`, prefixes, every key from one
//! on), ranges, transactions (compares on every target with every result,
//! over keys and ranges; branches of ranges sorted, limited, keys only,
//! count only, puts, deletes and nested transactions), compactions (valid,
//! at or below the last one, beyond the current revision), lease grants
//! (new, and of leases that exist) and revokes (deleting the keys attached,
//! and of leases that do not exist), puts attaching leases that exist and
//! that do not, the raftgres put, delete and compare-and-swap, and blank
//! entries. Commands
//! `mvcc::check_command` refuses are never proposed; the product's
//! `validate` must refuse them too, and accept every other. The log starts
//! at an installed snapshot of the empty state; Postgres applies in batches
//! of random sizes, some delivered again from a few entries back (a retry
//! after a commit whose outcome was lost), since nothing may depend on
//! batching. After every batch a few ranges are read at the current
//! revision, at past ones, below the compaction point and beyond the
//! current revision.
//!
//! The mapping between the two sides (one place: `mapping.rs`):
//! - an etcd command is an `mvcc::Command`; the product gets it as a
//!   `KvCommand` whose `etcd_operation` is the encoded
//!   `etcdserverpb.RequestOp` (or whose `etcd_compact_revision` is the
//!   compaction's revision), in a `LogCommand` without a session;
//! - the product's answer, a `KvResult`, is decoded back into the model's
//!   terms: `error` is the `mvcc::KvError`, `revision` the revision after
//!   the command, `etcd_response` the `ResponseOp` (an operation's header
//!   carrying only the revision it saw), and a compaction, a lease grant
//!   and a lease revoke answer `succeeded` and nothing else;
//! - a raftgres operation is, to the model, an etcd put, a delete of one
//!   key, or a transaction comparing the value (or that the key was never
//!   created) then putting or deleting; its `KvResult` answers the value
//!   the key held before (which the test reads from the model just before)
//!   and `succeeded` as `log.proto` defines it;
//! - a row of `raftgres_kv` is the model's current `KeyValue` plus
//!   `mod_index`, which the model does not know: it must be the log index
//!   of the last entry that changed the key; a row of
//!   `raftgres_kv_history` is an `mvcc::Event` (value NULL: a delete);
//!   `raftgres_kv_revision` is `mvcc::Revisions`; `raftgres_leases` is
//!   `MvccStore::leases`;
//! - a read is `KvStateMachine::read_range` against `MvccStore::range`,
//!   the product's `RangeRead::revision` standing for the range's
//!   `header_revision`, which it leaves to its caller.
//!
//! Set `RAFTGRES_ETCD_CONTRACT_SEED` (decimal or `0x` hex) to run one
//! sequence; a failure names its seed.

mod coverage;
mod mapping;
mod model;
mod product;
mod sequence;
mod snapshot;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use raftgres::mvcc::{Event, KeyValue, Revisions};
use raftgres::server::RangeRead;
use raftgres_devcluster::testing::TestDatabase;
use raftgres_tests::bounded;

use mapping::Outcome;
use sequence::{Sequence, SEED_BASE};

/// How many sequences the contract test runs.
const SEQUENCES: u64 = 16;
/// Entries per sequence.
const ENTRIES_PER_SEQUENCE: usize = 400;
/// The seed of the snapshot round trip's sequence.
const SNAPSHOT_SEED: u64 = SEED_BASE + 0x100;
/// Bound on one sequence's Postgres side, database creation included.
const SEQUENCE_TIME_MAX: Duration = Duration::from_secs(60);
/// Runs only this seed when set.
const SEED_VARIABLE: &str = "RAFTGRES_ETCD_CONTRACT_SEED";
/// The contract test's name, for the replay command a failure prints.
const CONTRACT_TEST: &str = "the_postgres_state_machine_agrees_with_the_mvcc_model";

/// The three KV tables and the applied index, compared after every apply
/// transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
struct State {
    applied_index: u64,
    revisions: Revisions,
    /// key -> (current row, mod_index).
    rows: BTreeMap<Vec<u8>, (KeyValue, u64)>,
    /// Every change kept, in (revision, sub) order.
    history: Vec<Event>,
    /// lease id -> granted TTL.
    leases: BTreeMap<i64, i64>,
}

/// What happened on one side.
#[derive(Debug, Default)]
struct Run {
    /// (log index, outcome), in the order the side reported them.
    outcomes: Vec<(u64, Outcome)>,
    /// The state after each Postgres apply transaction.
    states: Vec<State>,
    /// After each Postgres apply transaction, the answers to the batch's
    /// reads.
    reads: Vec<Vec<RangeRead>>,
}

/// The seeds to run: the one named by `SEED_VARIABLE`, or `SEQUENCES`
/// from `SEED_BASE`.
fn seeds() -> Vec<u64> {
    match std::env::var(SEED_VARIABLE) {
        Ok(seed) => {
            let seed = seed.trim();
            let parsed = match seed.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => seed.parse(),
            };
            vec![parsed.unwrap_or_else(|_| panic!("{SEED_VARIABLE}={seed} is not a seed"))]
        }
        Err(_) => (0..SEQUENCES).map(|number| SEED_BASE + number).collect(),
    }
}

/// Compares the two runs batch by batch, so that the first difference
/// reported is the earliest: the batch's outcomes, then the tables after
/// it, then its reads.
fn compare(sequence: &Sequence, model: &Run, product: &Run) {
    let what = sequence.describe();
    assert_eq!(
        model.outcomes.len(),
        product.outcomes.len(),
        "{what}: outcome counts differ"
    );
    assert_eq!(model.states.len(), product.states.len(), "{what}");
    let mut outcomes = model.outcomes.iter().zip(&product.outcomes);
    for (number, batch) in sequence.batches.iter().enumerate() {
        for ((index, model_outcome), (product_index, product_outcome)) in
            outcomes.by_ref().take(batch.delivered().len())
        {
            assert_eq!(index, product_index, "{what}: outcomes out of step");
            assert_eq!(
                model_outcome,
                product_outcome,
                "{what}: entry {index} ({:?}): the model (left) and Postgres (right) disagree",
                sequence.step_at(*index)
            );
        }
        compare_state(&what, &model.states[number], &product.states[number]);
        let at = model.states[number].applied_index;
        for (read, (model_read, product_read)) in batch
            .reads
            .iter()
            .zip(model.reads[number].iter().zip(&product.reads[number]))
        {
            assert_eq!(
                model_read, product_read,
                "{what}: at {at}, the model (left) and Postgres (right) read {read:?} differently"
            );
        }
    }
}

fn compare_state(what: &str, model: &State, product: &State) {
    let at = model.applied_index;
    assert_eq!(at, product.applied_index, "{what}: applied indexes differ");
    assert_eq!(
        model.revisions, product.revisions,
        "{what}: at {at}, the revisions of the model (left) and Postgres (right) differ"
    );
    assert_eq!(
        model.rows, product.rows,
        "{what}: at {at}, the current rows (with mod_index) of the model (left) and Postgres (right) differ"
    );
    assert_eq!(
        model.history, product.history,
        "{what}: at {at}, the history of the model (left) and Postgres (right) differ"
    );
    assert_eq!(
        model.leases, product.leases,
        "{what}: at {at}, the leases of the model (left) and Postgres (right) differ"
    );
}

/// Runs one sequence on both sides and compares them; returns the model's
/// run for the coverage count.
async fn agree(sequence: &Sequence) -> Run {
    product::check_validation(sequence);
    let model = model::run(sequence);
    let what = sequence.describe();
    let product = bounded(&what, SEQUENCE_TIME_MAX, async {
        let database = TestDatabase::create().await.expect("a test database");
        product::run(sequence, &database).await
    })
    .await;
    compare(sequence, &model, &product);
    model
}

#[tokio::test]
async fn the_postgres_state_machine_agrees_with_the_mvcc_model() {
    let started = Instant::now();
    let mut coverage = coverage::Coverage::new();
    let seeds = seeds();
    for seed in &seeds {
        let sequence = Sequence::draw(*seed, ENTRIES_PER_SEQUENCE);
        let model = agree(&sequence).await;
        coverage::count(&mut coverage, &sequence, &model);
    }
    println!(
        "{} sequences of {ENTRIES_PER_SEQUENCE} entries agree in {:?}: {coverage:#?}",
        seeds.len(),
        started.elapsed()
    );
    if seeds.len() == 1 {
        // One sequence replayed need not meet every rule.
        return;
    }
    for rule in coverage::RULES {
        assert!(
            coverage.get(rule).is_some_and(|count| *count > 0),
            "no {rule} in {} sequences: {coverage:#?}",
            seeds.len()
        );
    }
}

#[tokio::test]
async fn the_state_exported_in_pages_imports_into_another_database_unchanged() {
    let started = Instant::now();
    let mut sequence = Sequence::draw(SNAPSHOT_SEED, ENTRIES_PER_SEQUENCE);
    sequence.put_every_key();
    let what = format!("the snapshot round trip of seed {SNAPSHOT_SEED:#x}");
    let model = model::run(&sequence);
    let (imported, pages) = bounded(&what, SEQUENCE_TIME_MAX, async {
        let source = TestDatabase::create().await.expect("a test database");
        product::run(&sequence, &source).await;
        snapshot::round_trip(&source, &what).await
    })
    .await;
    let model_end = model.states.last().expect("every sequence has batches");
    assert_eq!(
        State {
            applied_index: model_end.applied_index,
            ..imported
        },
        *model_end,
        "{what}: the imported tables (left) differ from the model's end state (right)"
    );
    assert!(
        pages.pages > 2 && pages.with_rows > 1 && pages.with_history > 1,
        "{what}: the rows and the history should each take several pages: {pages:?}"
    );
    println!(
        "{} rows and {} changes round-trip in {pages:?} in {:?}",
        model_end.rows.len(),
        model_end.history.len(),
        started.elapsed()
    );
}
