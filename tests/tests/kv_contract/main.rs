//! Proves that the simulator's key-value model agrees with the product's
//! Postgres state machine: the same committed command sequences, run
//! through the simulated store (`raftgres_sim::store::Store::apply` around
//! `raftgres_sim::kv::KvStore`) and through the node's applier against a
//! real Postgres (`raftgres::server::StandaloneApplier` with
//! `KvStateMachine`: the KV's SQL, the session rules, session expiry at the
//! positions `raftgres::pipeline::sessions` names), give the same outcome
//! for every entry and leave the same key-value rows, session rows and
//! applied index.
//!
//! Each sequence is drawn from a seed: puts, compare-and-swaps that succeed
//! and that fail, writes with and without sessions, retries of a session's
//! latest sequence, older sequences, blank entries and the simulator's
//! liveness probe (`sequence.rs`). It starts from an installed snapshot of
//! an empty state just below an expiry point, with a short session expiry,
//! so that sessions expire in the middle of it; two sessions are last used
//! right below and right at the expiry horizon and retried after it. The
//! model applies entry by entry (`model.rs`); Postgres applies in batches
//! of random sizes (`product.rs`), some delivered again from a few entries
//! back (a retry after a commit whose outcome was lost), since nothing may
//! depend on batching. Outcomes are compared per entry, and the rows after
//! every Postgres transaction.
//!
//! The mapping between the two encodings (one place: `mapping.rs`):
//! - key `k` (a `u64`) is the bytes `key-{k}`; value `v` is the bytes
//!   `{v}` in decimal, and `VALUE_ABSENT` (0) is a missing row (expected
//!   `None` for a compare-and-swap); the workload never writes 0;
//! - client `c` is the session `client-{c}`, and client 0 no session;
//! - the model's `CommandOutput::Done` is a `KvResult` that succeeded,
//!   `Swapped(swapped)` one whose `succeeded` is `swapped`; the model does
//!   not answer the value a command found, so the test takes it from the
//!   model's rows just before the command and compares it with the
//!   product's `previous`;
//! - a refusal's reason is text for people, worded differently on each
//!   side: only the refusal is compared;
//! - the product has no probe command (`KvCommand` is put, delete or
//!   compare-and-swap, and a command without one is refused before it is
//!   proposed); what its log carries in that place is the blank entry a
//!   leader appends, which also commits, changes nothing and answers
//!   nothing. The model's probe (never with a session, as the simulator
//!   proposes it) therefore meets a blank entry in Postgres.
//!
//! The model knows no `mod_index`: the product's is compared with the index
//! of the last write the model applied to the key. Deletes are not drawn:
//! the model has none.

mod mapping;
mod model;
mod product;
mod sequence;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use raftgres_sim::kv::Command;
use raftgres_tests::bounded;

use mapping::Answer;
use sequence::{Sequence, Step, ENTRIES_PER_SEQUENCE};

/// How many sequences run.
const SEQUENCES: u64 = 6;
/// Bound on one sequence's Postgres side, database creation included.
const SEQUENCE_TIME_MAX: Duration = Duration::from_secs(120);

/// One entry's outcome in terms both sides can be compared in.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    /// First application of a command.
    Applied(Answer),
    /// A retry of the session's latest sequence, answered with the first
    /// application's answer.
    Repeated { answer: Answer, first_index: u64 },
    /// An older sequence than the session's latest.
    Refused,
    /// At or below the applied index: delivered again.
    Unknown,
    /// A blank entry or the model's probe: committed, nothing changed.
    Nothing,
    /// Anything else: never expected, always a disagreement.
    Unexpected(String),
}

/// A session row in terms both sides can be compared in.
#[derive(Clone, Debug, PartialEq, Eq)]
struct SessionRow {
    sequence: u64,
    answer: Answer,
    /// Where the latest sequence was first applied.
    last_index: u64,
}

/// The rows and the applied index, compared after every apply transaction.
#[derive(Debug, PartialEq, Eq)]
struct State {
    /// key -> (value, mod_index).
    rows: BTreeMap<String, (String, u64)>,
    /// session name -> row.
    sessions: BTreeMap<String, SessionRow>,
    applied_index: u64,
}

/// What happened on one side.
struct Run {
    /// (log index, outcome), in the order the side reported them.
    outcomes: Vec<(u64, Outcome)>,
    /// The state after each Postgres apply transaction, the last one
    /// included: a difference that later commands would mask (a session
    /// one side forgot and the other kept, then written again) shows here.
    states: Vec<State>,
}

/// How often each rule was met, to prove the sequences are not vacuous.
#[derive(Debug, Default)]
struct Coverage {
    swaps_succeeded: usize,
    swaps_failed: usize,
    writes_without_session: usize,
    repeated: usize,
    repeated_in_one_batch: usize,
    refused: usize,
    redelivered: usize,
    nothing: usize,
    sessions_expired: usize,
    applied_again_after_expiry: usize,
}

fn count(coverage: &mut Coverage, sequence: &Sequence, outcomes: &[(u64, Outcome)]) {
    for (index, outcome) in outcomes {
        let step = sequence.step_at(*index);
        match (step, outcome) {
            (
                Step::Write {
                    command: Command::CompareAndSwap { .. },
                    ..
                },
                Outcome::Applied(answer),
            ) => {
                if answer.succeeded {
                    coverage.swaps_succeeded += 1;
                } else {
                    coverage.swaps_failed += 1;
                }
            }
            (_, Outcome::Repeated { .. }) => coverage.repeated += 1,
            (_, Outcome::Refused) => coverage.refused += 1,
            (_, Outcome::Unknown) => coverage.redelivered += 1,
            (_, Outcome::Nothing) => coverage.nothing += 1,
            _ => {}
        }
        if let (Step::Write { client_id: 0, .. }, Outcome::Applied(_)) = (step, outcome) {
            coverage.writes_without_session += 1;
        }
    }
}

fn compare(sequence: &Sequence, model: &Run, product: &Run) {
    let what = sequence.describe();
    assert_eq!(
        model.outcomes.len(),
        product.outcomes.len(),
        "{what}: outcome counts differ"
    );
    for ((model_index, model_outcome), (product_index, product_outcome)) in
        model.outcomes.iter().zip(&product.outcomes)
    {
        assert_eq!(model_index, product_index, "{what}: outcomes out of step");
        assert_eq!(
            model_outcome,
            product_outcome,
            "{what}: entry {model_index} ({:?}): the model (left) and Postgres (right) disagree",
            sequence.step_at(*model_index)
        );
    }
    assert_eq!(model.states.len(), product.states.len(), "{what}");
    for (model_state, product_state) in model.states.iter().zip(&product.states) {
        let at = product_state.applied_index;
        assert_eq!(
            model_state.applied_index, at,
            "{what}: applied indexes differ"
        );
        assert_eq!(
            model_state.rows, product_state.rows,
            "{what}: at {at}, the KV rows of the model (left) and Postgres (right) differ"
        );
        assert_eq!(
            model_state.sessions, product_state.sessions,
            "{what}: at {at}, the session rows of the model (left) and Postgres (right) differ"
        );
    }
    // The horizon itself: a session last used below it is gone after the
    // expiry point, one last used at it is not.
    for (index, kept) in sequence.horizon_retries {
        let outcome = product
            .outcomes
            .iter()
            .find(|(at, _)| *at == index)
            .map(|(_, outcome)| outcome);
        let repeated = matches!(outcome, Some(Outcome::Repeated { .. }));
        let applied = matches!(outcome, Some(Outcome::Applied(_)));
        assert!(
            if kept { repeated } else { applied },
            "{what}: the retry at {index} of a session {} the horizon answered {outcome:?}",
            if kept { "used at" } else { "last used below" }
        );
    }
    let end = product.states.last().expect("every sequence has batches");
    assert_eq!(end.applied_index, sequence.last_index());
    // Not vacuous: the sides end with rows and sessions to compare.
    assert!(
        end.rows.len() > 1,
        "{what}: too few KV rows: {:?}",
        end.rows
    );
    assert!(
        end.sessions.len() > 1,
        "{what}: too few session rows: {:?}",
        end.sessions
    );
}

#[tokio::test]
async fn the_simulator_kv_model_agrees_with_the_postgres_state_machine() {
    let started = Instant::now();
    let mut coverage = Coverage::default();
    for number in 0..SEQUENCES {
        let sequence = Sequence::draw(number);
        let model = model::run(&sequence, &mut coverage);
        let product = bounded(
            &sequence.describe(),
            SEQUENCE_TIME_MAX,
            product::run(&sequence, &mut coverage),
        )
        .await;
        compare(&sequence, &model, &product);
        count(&mut coverage, &sequence, &product.outcomes);
    }
    println!(
        "{SEQUENCES} sequences of {ENTRIES_PER_SEQUENCE} entries agree in {:?}: {coverage:?}",
        started.elapsed()
    );
    // Every rule was met somewhere, so agreement means something.
    let Coverage {
        swaps_succeeded,
        swaps_failed,
        writes_without_session,
        repeated,
        repeated_in_one_batch,
        refused,
        redelivered,
        nothing,
        sessions_expired,
        applied_again_after_expiry,
    } = coverage;
    for (rule, met) in [
        ("compare-and-swaps that succeeded", swaps_succeeded),
        ("compare-and-swaps that failed", swaps_failed),
        ("writes without a session", writes_without_session),
        ("retries answered as repeats", repeated),
        (
            "retries of a command applied in the same batch",
            repeated_in_one_batch,
        ),
        ("older sequences refused", refused),
        ("entries delivered again", redelivered),
        ("blank entries and probes", nothing),
        ("sessions expired", sessions_expired),
        (
            "session commands applied again after their session expired",
            applied_again_after_expiry,
        ),
    ] {
        assert!(met > 0, "no {rule} in {SEQUENCES} sequences: {coverage:?}");
    }
}
