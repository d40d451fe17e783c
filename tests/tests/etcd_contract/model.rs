//! The model's side: the sequence through [`MvccStore::apply`], entry by
//! entry, from an empty store. The model knows no log: the test notes the
//! index of the last entry that changed each key (the product's
//! `mod_index`).

use std::collections::BTreeMap;

use raftgres::mvcc::MvccStore;
use raftgres::server::RangeRead;

use crate::mapping::{raftgres_to_mvcc, Outcome};
use crate::sequence::{Sequence, Step};
use crate::{Run, State};

/// Runs `sequence` through the model. Where Postgres gets entries again,
/// the model answers them as delivered again, as the applier must.
pub(crate) fn run(sequence: &Sequence) -> Run {
    let mut store = MvccStore::default();
    let mut mod_indexes = BTreeMap::new();
    let mut run = Run::default();
    for batch in &sequence.batches {
        for position in batch.new.start - batch.redelivered..batch.new.start {
            run.outcomes
                .push((sequence.index(position), Outcome::Unknown));
        }
        for position in batch.new.clone() {
            let index = sequence.index(position);
            let outcome = apply(
                &mut store,
                &mut mod_indexes,
                index,
                &sequence.steps[position],
            );
            run.outcomes.push((index, outcome));
        }
        let applied_index = sequence.index(batch.new.end - 1);
        run.states.push(state(&store, &mod_indexes, applied_index));
        let reads = batch
            .reads
            .iter()
            .map(|request| RangeRead {
                applied_index,
                revision: store.revisions().current,
                answer: store.range(request),
            })
            .collect();
        run.reads.push(reads);
    }
    run
}

/// Applies the entry at `index`; notes it as the `mod_index` of every key
/// it changed.
fn apply(
    store: &mut MvccStore,
    mod_indexes: &mut BTreeMap<Vec<u8>, u64>,
    index: u64,
    step: &Step,
) -> Outcome {
    let (outcome, events) = match step {
        Step::Blank => return Outcome::Nothing,
        Step::Etcd(command) => {
            let (outcome, events) = store.apply(command);
            let outcome = Outcome::Etcd {
                revision: outcome.revision,
                result: outcome.result,
            };
            (outcome, events)
        }
        Step::Raftgres(operation) => {
            let previous = store.get(operation.key()).map(|kv| kv.value.clone());
            let (outcome, events) = store.apply(&raftgres_to_mvcc(operation));
            if let Err(error) = outcome.result {
                panic!("the model refused the raftgres operation {operation:?}: {error}");
            }
            let outcome = Outcome::Raftgres {
                revision: outcome.revision,
                succeeded: operation.succeeds(previous.as_deref()),
                previous,
            };
            (outcome, events)
        }
    };
    for event in events {
        match event.kv {
            Some(_) => mod_indexes.insert(event.key, index),
            None => mod_indexes.remove(&event.key),
        };
    }
    outcome
}

fn state(store: &MvccStore, mod_indexes: &BTreeMap<Vec<u8>, u64>, applied_index: u64) -> State {
    let rows = store
        .rows()
        .iter()
        .map(|(key, kv)| {
            let mod_index = *mod_indexes
                .get(key)
                .expect("every current row was written by an entry");
            (key.clone(), (kv.clone(), mod_index))
        })
        .collect();
    State {
        applied_index,
        revisions: store.revisions(),
        rows,
        history: store.history().into_iter().cloned().collect(),
        leases: store.leases().clone(),
    }
}
