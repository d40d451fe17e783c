//! The simulator's side: the sequence through the simulated store
//! (`raftgres_sim::store::Store::apply`, which applies to
//! `raftgres_sim::kv::KvStore` and expires sessions where
//! `raftgres::pipeline::sessions` says), entry by entry so that the value
//! each command found can be read from the model just before it.

use std::collections::{BTreeMap, BTreeSet};

use raftgres::core::{Entry, EntryPayload, LogIndex, Term};
use raftgres::pipeline::sessions::SESSION_EXPIRY_STRIDE;
use raftgres::pipeline::{ApplyBatch, ApplyOutcome};
use raftgres_sim::kv::{Command, CommandOutput, KvStore};
use raftgres_sim::store::{ApplySettings, Store};

use crate::mapping::{key_bytes, session_name, text, value_bytes, Answer};
use crate::sequence::{Sequence, Step};
use crate::{Coverage, Outcome, Run, SessionRow, State};

/// Runs `sequence` through the model. Where Postgres gets a batch again,
/// the model gets those entries again too.
pub(crate) fn run(sequence: &Sequence, coverage: &mut Coverage) -> Run {
    let entries = sequence.model_entries();
    let mut model = Model::new(sequence);
    let mut outcomes = Vec::with_capacity(entries.len());
    let mut states = Vec::with_capacity(sequence.batches.len());
    for batch in &sequence.batches {
        let again = &entries[batch.new.start - batch.redelivered..batch.new.start];
        if !again.is_empty() {
            outcomes.extend(model.deliver_again(again));
        }
        for entry in &entries[batch.new.clone()] {
            let outcome = model.apply(entry, coverage);
            outcomes.push((entry.index.0, outcome));
        }
        states.push(model.state());
    }
    Run { outcomes, states }
}

/// The simulated store and what the test notes about it on the way.
struct Model<'a> {
    sequence: &'a Sequence,
    store: Store,
    settings: ApplySettings,
    /// The value the key held just before each command, by index.
    previous_at: BTreeMap<u64, u64>,
    /// The index of the last write to each key (the product's mod_index).
    written_at: BTreeMap<u64, u64>,
    /// (client, sequence) pairs applied as new.
    applied_new: BTreeSet<(u64, u64)>,
}

impl<'a> Model<'a> {
    /// The model after `snapshot_index` blank entries: no rows, no
    /// sessions, applied at `snapshot_index`, which is what Postgres holds
    /// once the snapshot of an empty state is installed.
    fn new(sequence: &'a Sequence) -> Model<'a> {
        let mut start = KvStore::default();
        for index in 1..=sequence.snapshot_index {
            start.apply(&Entry {
                term: Term(1),
                index: LogIndex(index),
                payload: EntryPayload::Blank,
            });
        }
        let mut store = Store::default();
        store.state_machine = start;
        let settings = ApplySettings {
            asynchronous_commit: false,
            session_expiry_entries: sequence.session_expiry_entries,
            // The product's stride: the model must expire where it does.
            session_expiry_stride: SESSION_EXPIRY_STRIDE,
            compaction_entries: u64::MAX,
            entries_per_write_max: raftgres::pipeline::WRITE_ENTRIES_MAX_DEFAULT,
            expiry_at_batch_end: false,
            apply_ahead: false,
            follower_apply_wait: std::time::Duration::ZERO,
        };
        Model {
            sequence,
            store,
            settings,
            previous_at: BTreeMap::new(),
            written_at: BTreeMap::new(),
            applied_new: BTreeSet::new(),
        }
    }

    /// Entries at or below the applied index, delivered again.
    fn deliver_again(&mut self, entries: &[Entry]) -> Vec<(u64, Outcome)> {
        let report = self
            .store
            .apply(&no_snapshot(entries), self.settings)
            .expect("the model applies");
        report
            .done
            .outcomes
            .into_iter()
            .map(|(index, _, outcome)| (index.0, self.outcome(index.0, outcome)))
            .collect()
    }

    /// The next entry, alone in its batch.
    fn apply(&mut self, entry: &Entry, coverage: &mut Coverage) -> Outcome {
        let index = entry.index.0;
        let step = self.sequence.step_at(index);
        let sessions_before = self.store.state_machine.sessions().clone();
        if let Step::Write { command, .. } = step {
            let previous = self.store.state_machine.get(command_key(command));
            self.previous_at.insert(index, previous);
        }
        let report = self
            .store
            .apply(&no_snapshot(std::slice::from_ref(entry)), self.settings)
            .expect("the model applies");
        let [(_, _, outcome)] =
            <[_; 1]>::try_from(report.done.outcomes).expect("one outcome for one entry");
        if let (
            Step::Write {
                client_id,
                sequence: session_sequence,
                command,
            },
            ApplyOutcome::Response(response),
        ) = (step, &outcome)
        {
            let output = CommandOutput::from_bytes(response).expect("the model's output");
            if output != CommandOutput::Swapped(false) {
                self.written_at.insert(command_key(command), index);
            }
            if client_id != 0 && !self.applied_new.insert((client_id, session_sequence)) {
                coverage.applied_again_after_expiry += 1;
            }
        }
        if index.is_multiple_of(SESSION_EXPIRY_STRIDE) {
            let after = self.store.state_machine.sessions();
            coverage.sessions_expired += sessions_before
                .keys()
                .filter(|client_id| !after.contains_key(client_id))
                .count();
        }
        self.outcome(index, outcome)
    }

    /// The model's outcome for the entry at `index` in comparable terms.
    fn outcome(&self, index: u64, outcome: ApplyOutcome) -> Outcome {
        let answer = |response: &[u8], at: u64| {
            let output = CommandOutput::from_bytes(response).expect("the model's output");
            Answer::of_model(output, self.previous_at[&at])
        };
        match (self.sequence.step_at(index), outcome) {
            (_, ApplyOutcome::Unknown) => Outcome::Unknown,
            (_, ApplyOutcome::Refused(_)) => Outcome::Refused,
            (Step::Blank, ApplyOutcome::Response(response)) if response.is_empty() => {
                Outcome::Nothing
            }
            (Step::Probe, ApplyOutcome::Response(response))
                if response == CommandOutput::Done.to_bytes() =>
            {
                Outcome::Nothing
            }
            (Step::Write { .. }, ApplyOutcome::Response(response)) => {
                Outcome::Applied(answer(&response, index))
            }
            (
                Step::Write { .. },
                ApplyOutcome::Repeated {
                    response,
                    first_index,
                },
            ) => Outcome::Repeated {
                answer: answer(&response, first_index.0),
                first_index: first_index.0,
            },
            (step, outcome) => Outcome::Unexpected(format!("{step:?} answered {outcome:?}")),
        }
    }

    /// The model's rows in comparable terms.
    fn state(&self) -> State {
        let model = &self.store.state_machine;
        let rows = model
            .values()
            .iter()
            .map(|(key, value)| {
                let value = value_bytes(*value)
                    .map(text)
                    .expect("no row holds VALUE_ABSENT");
                let written = self.written_at[key];
                (text(key_bytes(*key)), (value, written))
            })
            .collect();
        let sessions = model
            .sessions()
            .iter()
            .map(|(client_id, session)| {
                let previous = self.previous_at[&session.index.0];
                let row = SessionRow {
                    sequence: session.sequence,
                    answer: Answer::of_model(session.output, previous),
                    last_index: session.index.0,
                };
                (session_name(*client_id), row)
            })
            .collect();
        State {
            rows,
            sessions,
            applied_index: model.applied_index().0,
        }
    }
}

fn command_key(command: Command) -> u64 {
    match command {
        Command::Put { key, .. } | Command::CompareAndSwap { key, .. } => key,
        Command::Probe
        | Command::Compact { .. }
        | Command::LeaseGrant { .. }
        | Command::LeaseRevoke { .. } => {
            unreachable!("probes, compactions and leases are not writes to a key")
        }
    }
}

/// `entries` as one apply batch that takes no snapshot (the product side
/// takes none either).
fn no_snapshot(entries: &[Entry]) -> ApplyBatch {
    ApplyBatch {
        entries: entries.to_vec(),
    }
}
