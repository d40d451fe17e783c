//! Model-based test: random sequences of appends (including conflicting
//! suffixes and invalid batches), compactions, hard state saves and reopens
//! run against `PgStore` and `MemStore`, and after every step both must load
//! exactly what a simple model says.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use raftgres_devcluster::testing::TestDatabase;
use raftgres_storage_pg::{
    AppendBatch, EntryKind, HardState, LoadedState, LogEntry, LogStore, MemStore, PgStore,
    PgStoreConfig, SnapshotMeta,
};

#[derive(Clone, Debug)]
enum Operation {
    /// Append `count` entries starting `back` entries before the end (0 =
    /// right after the last), in a term `term_step` above the current one.
    Append {
        back: u64,
        count: u64,
        term_step: u64,
    },
    /// Append leaving a gap: must fail and change nothing.
    AppendWithGap { gap: u64 },
    /// Compact a fraction (in eighths) of the log.
    Compact { eighths: u64 },
    /// Raise the term (or keep it) and maybe vote.
    SaveHardState { term_step: u64, vote: Option<u64> },
    /// Close and open the Postgres store again.
    Reopen,
}

fn operation() -> impl Strategy<Value = Operation> {
    prop_oneof![
        5 => (0..6_u64, 1..12_u64, 0..2_u64)
            .prop_map(|(back, count, term_step)| Operation::Append { back, count, term_step }),
        1 => (1..4_u64).prop_map(|gap| Operation::AppendWithGap { gap }),
        2 => (0..9_u64).prop_map(|eighths| Operation::Compact { eighths }),
        2 => (0..2_u64, proptest::option::of(1..4_u64))
            .prop_map(|(term_step, vote)| Operation::SaveHardState { term_step, vote }),
        1 => Just(Operation::Reopen),
    ]
}

/// The simplest thing that could be a log store.
#[derive(Default)]
struct Model {
    state: LoadedState,
}

impl Model {
    fn entries(&self, first: u64, count: u64, term: u64) -> Vec<LogEntry> {
        (first..first + count)
            .map(|index| LogEntry {
                index,
                term,
                kind: EntryKind::Command,
                data: format!("{index}/{term}").into_bytes(),
            })
            .collect()
    }

    /// The request for an operation and whether it must succeed; applies it
    /// to the model when it does.
    fn step(&mut self, operation: &Operation) -> Request {
        let last_index = self.state.last_index();
        let snapshot = self.state.snapshot;
        let term = self.state.hard_state.term.max(1);
        match *operation {
            Operation::Append {
                back,
                count,
                term_step,
            } => {
                let first = (last_index + 1)
                    .saturating_sub(back)
                    .max(snapshot.index + 1);
                // Entries in the same term keep their term; a conflicting
                // suffix uses a newer term, as a new leader would.
                let entry_term = term + term_step;
                let new_entries = self.entries(first, count, entry_term);
                let hard_state = HardState {
                    term: entry_term.max(self.state.hard_state.term),
                    voted_for: None,
                };
                let hard_state = if hard_state.term == self.state.hard_state.term {
                    self.state.hard_state
                } else {
                    hard_state
                };
                self.state.entries.retain(|entry| entry.index < first);
                self.state.entries.extend(new_entries.clone());
                self.state.hard_state = hard_state;
                Request::Append(
                    AppendBatch {
                        hard_state: Some(hard_state),
                        entries: new_entries,
                    },
                    true,
                )
            }
            Operation::AppendWithGap { gap } => {
                let entries = self.entries(last_index + 1 + gap, 2, term);
                Request::Append(
                    AppendBatch {
                        hard_state: None,
                        entries,
                    },
                    false,
                )
            }
            Operation::Compact { eighths } => {
                let length = last_index - snapshot.index;
                let up_to = snapshot.index + length * eighths / 8;
                if up_to > snapshot.index {
                    let term = self.state.entries[(up_to - snapshot.index - 1) as usize].term;
                    self.state.entries.retain(|entry| entry.index > up_to);
                    self.state.snapshot = SnapshotMeta { index: up_to, term };
                    Request::Compact(up_to, term)
                } else {
                    Request::Compact(up_to, snapshot.term)
                }
            }
            Operation::SaveHardState { term_step, vote } => {
                let current = self.state.hard_state;
                let next = if term_step == 0 {
                    // Same term: a vote may be cast only if none was.
                    HardState {
                        term: current.term,
                        voted_for: current.voted_for.or(vote),
                    }
                } else {
                    HardState {
                        term: current.term + term_step,
                        voted_for: vote,
                    }
                };
                self.state.hard_state = next;
                Request::SaveHardState(next)
            }
            Operation::Reopen => Request::Reopen,
        }
    }
}

enum Request {
    Append(AppendBatch, bool),
    Compact(u64, u64),
    SaveHardState(HardState),
    Reopen,
}

async fn perform(store: &mut impl LogStore, request: &Request) -> Result<(), String> {
    let result = match request {
        Request::Append(batch, must_succeed) => {
            let result = store.append(batch.clone()).await;
            if result.is_ok() != *must_succeed {
                return Err(format!("append {batch:?}: {result:?}"));
            }
            Ok(())
        }
        Request::Compact(up_to, term) => store.compact(*up_to, *term).await,
        Request::SaveHardState(hard_state) => store.save_hard_state(*hard_state).await,
        Request::Reopen => Ok(()),
    };
    result.map_err(|error| error.to_string())
}

async fn run_case(config: &PgStoreConfig, operations: &[Operation]) -> Result<(), TestCaseError> {
    let mut model = Model::default();
    let mut memory = MemStore::new();
    let mut postgres = PgStore::open(config.clone()).await.unwrap();
    for operation in operations {
        let request = model.step(operation);
        if let Request::Reopen = request {
            postgres.close().await;
            postgres = PgStore::open(config.clone()).await.unwrap();
        }
        perform(&mut memory, &request)
            .await
            .map_err(|error| TestCaseError::fail(format!("memory: {error}")))?;
        perform(&mut postgres, &request)
            .await
            .map_err(|error| TestCaseError::fail(format!("postgres: {error}")))?;
        let expected = &model.state;
        prop_assert_eq!(
            &memory.load().await.unwrap(),
            expected,
            "memory after {:?}",
            operation
        );
        prop_assert_eq!(
            &postgres.load().await.unwrap(),
            expected,
            "postgres after {:?}",
            operation
        );
    }
    postgres.close().await;
    Ok(())
}

#[test]
fn stores_match_the_model() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // One database for the whole run; each case starts from an empty schema.
    let database = runtime.block_on(TestDatabase::create()).unwrap();
    let admin = runtime.block_on(database.client()).unwrap();
    let mut runner = TestRunner::new(Config {
        cases: 24,
        ..Config::default()
    });
    let result = runner.run(
        &proptest::collection::vec(operation(), 1..30),
        |operations| {
            runtime.block_on(async {
                admin
                    .batch_execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
                    .await
                    .unwrap();
                run_case(&database.store_config("model", 1), &operations).await
            })
        },
    );
    drop(admin);
    drop(database);
    if let Err(error) = result {
        panic!("{error}");
    }
}
