//! The command sequences: drawn from a seed the way clients would send
//! them, with the batches Postgres applies them in.

use std::collections::BTreeMap;
use std::ops::Range;

use prost::Message as _;
use raftgres::core::{Entry, EntryPayload, LogIndex, Term};
use raftgres::pipeline::sessions::SESSION_EXPIRY_STRIDE;
use raftgres_proto::v1 as wire;
use raftgres_sim::kv::{self, Command, Envelope, VALUE_ABSENT};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::mapping::{product_command, session_name};

/// The seed of sequence `n` is `SEED_BASE + n`.
const SEED_BASE: u64 = 0x6b76_0000;
/// Entries per sequence.
pub(crate) const ENTRIES_PER_SEQUENCE: usize = 400;
/// Keys are drawn from `1..=KEYS_MAX`: few, so that compare-and-swaps meet
/// the values other commands wrote.
const KEYS_MAX: u64 = 10;
/// New session writes come from this many consecutive clients at a time...
const CLIENTS_ACTIVE_MAX: u64 = 6;
/// ...and the window moves on by one client every this many entries, so
/// that clients fall idle, their sessions expire, and some of them retry
/// later.
const CLIENT_TURNOVER_ENTRIES: u64 = 20;
/// The first of the two clients that write only around the expiry
/// horizon (far from the clients the workload draws).
const HORIZON_CLIENTS_FIRST: u64 = 1_000_000;
/// Largest Postgres apply batch (new entries).
const BATCH_ENTRIES_MAX: usize = 48;
/// Largest number of already applied entries a batch is delivered again
/// with.
const REDELIVERED_ENTRIES_MAX: usize = 4;

/// One committed entry, before either side encodes it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Step {
    /// The blank entry a new leader appends.
    Blank,
    /// The simulator's liveness probe (without a session).
    Probe,
    /// A write with its session (client 0: none).
    Write {
        client_id: u64,
        sequence: u64,
        command: Command,
    },
}

/// Draws steps the way clients would send them: sequences grow per client,
/// retries repeat a client's latest command, and compare-and-swaps mostly
/// expect a value some earlier command proposed for the key. It never
/// looks at either side's state.
struct Workload {
    random: ChaCha8Rng,
    /// Per client, the (sequence, command) pairs it proposed, in order.
    proposed: BTreeMap<u64, Vec<(u64, Command)>>,
    /// Per key, the values commands proposed to write, in order.
    values_proposed: BTreeMap<u64, Vec<u64>>,
    /// The last value handed out (values are unique and never 0).
    value_last: u64,
    /// Steps drawn so far.
    steps_drawn: u64,
}

impl Workload {
    fn step(&mut self) -> Step {
        self.steps_drawn += 1;
        match self.random.gen_range(0..100) {
            0..=5 => Step::Blank,
            6..=9 => Step::Probe,
            10..=29 => Step::Write {
                client_id: 0,
                sequence: 0,
                command: self.command(),
            },
            30..=44 => self
                .retry_latest()
                .unwrap_or_else(|| self.new_session_write()),
            45..=52 => self
                .older_sequence()
                .unwrap_or_else(|| self.new_session_write()),
            _ => self.new_session_write(),
        }
    }

    fn new_session_write(&mut self) -> Step {
        let first_active = 1 + self.steps_drawn / CLIENT_TURNOVER_ENTRIES;
        let client_id = self
            .random
            .gen_range(first_active..first_active + CLIENTS_ACTIVE_MAX);
        let latest = self
            .proposed
            .get(&client_id)
            .and_then(|proposed| proposed.last())
            .map_or(0, |(sequence, _)| *sequence);
        // Mostly the next sequence; sometimes one skips ahead, which the
        // rules allow (only older sequences are refused).
        let step = if self.random.gen_bool(0.9) { 1 } else { 2 };
        let command = self.command();
        let sequence = latest + step;
        self.proposed
            .entry(client_id)
            .or_default()
            .push((sequence, command));
        Step::Write {
            client_id,
            sequence,
            command,
        }
    }

    fn retry_latest(&mut self) -> Option<Step> {
        let client_id = self.client_with_proposals(1)?;
        let (sequence, command) = *self.proposed[&client_id].last()?;
        Some(Step::Write {
            client_id,
            sequence,
            command,
        })
    }

    fn older_sequence(&mut self) -> Option<Step> {
        let client_id = self.client_with_proposals(2)?;
        let proposed = &self.proposed[&client_id];
        let (sequence, command) = proposed[self.random.gen_range(0..proposed.len() - 1)];
        Some(Step::Write {
            client_id,
            sequence,
            command,
        })
    }

    /// A client that proposed at least `count` commands, if any.
    fn client_with_proposals(&mut self, count: usize) -> Option<u64> {
        let eligible: Vec<u64> = self
            .proposed
            .iter()
            .filter(|(_, proposed)| proposed.len() >= count)
            .map(|(client_id, _)| *client_id)
            .collect();
        (!eligible.is_empty()).then(|| eligible[self.random.gen_range(0..eligible.len())])
    }

    fn command(&mut self) -> Command {
        let key = self.random.gen_range(1..=KEYS_MAX);
        self.value_last += 1;
        let value = self.value_last;
        let known = self.values_proposed.entry(key).or_default();
        let command = if self.random.gen_bool(0.45) {
            Command::Put {
                key,
                value,
                lease: 0,
            }
        } else {
            let expected = match self.random.gen_range(0..100) {
                0..=14 => VALUE_ABSENT,
                // The latest value proposed for the key: usually current.
                15..=69 => known.last().copied().unwrap_or(VALUE_ABSENT),
                // An older one, or one never written: usually a failure.
                70..=89 if !known.is_empty() => known[self.random.gen_range(0..known.len())],
                _ => value + 1_000_000,
            };
            Command::CompareAndSwap {
                key,
                expected,
                new: value,
            }
        };
        known.push(value);
        command
    }
}

/// One Postgres apply batch: `new` (positions in the sequence), delivered
/// with the `redelivered` entries before it.
#[derive(Clone, Debug)]
pub(crate) struct Batch {
    pub(crate) redelivered: usize,
    pub(crate) new: Range<usize>,
}

impl Batch {
    /// The positions delivered: the redelivered ones, then the new ones.
    pub(crate) fn delivered(&self) -> Range<usize> {
        self.new.start - self.redelivered..self.new.end
    }
}

/// A sequence and how it is run.
pub(crate) struct Sequence {
    number: u64,
    seed: u64,
    /// The installed snapshot's index; the first entry is the next one.
    pub(crate) snapshot_index: u64,
    pub(crate) session_expiry_entries: u64,
    pub(crate) steps: Vec<Step>,
    pub(crate) batches: Vec<Batch>,
    /// Retries right after the expiry point of a session last used just
    /// below the horizon (forgotten: applied again) and of one last used
    /// at the horizon (kept: answered as a repeat): (index, kept).
    pub(crate) horizon_retries: [(u64, bool); 2],
}

impl Sequence {
    /// Sequence `number`: it starts 100 to 260 entries below expiry point
    /// `number + 1`, so that it crosses that point with sessions last used
    /// on both sides of the horizon.
    pub(crate) fn draw(number: u64) -> Sequence {
        let seed = SEED_BASE + number;
        let mut random = ChaCha8Rng::seed_from_u64(seed);
        let expiry_point = SESSION_EXPIRY_STRIDE * (number + 1);
        let snapshot_index = expiry_point - random.gen_range(100..=260);
        let session_expiry_entries = random.gen_range(8..=80);
        let mut workload = Workload {
            random: ChaCha8Rng::seed_from_u64(random.gen()),
            proposed: BTreeMap::new(),
            values_proposed: BTreeMap::new(),
            value_last: 0,
            steps_drawn: 0,
        };
        // Two sessions used once, by clients nothing else uses, right
        // below and right at the horizon, and retried right after the
        // expiry point.
        let horizon = expiry_point - session_expiry_entries;
        let position = |index: u64| (index - snapshot_index - 1) as usize;
        let mut pinned = BTreeMap::new();
        let mut horizon_retries = [(0, false); 2];
        for (offset, last_used) in [horizon - 1, horizon].into_iter().enumerate() {
            let write = Step::Write {
                client_id: HORIZON_CLIENTS_FIRST + offset as u64,
                sequence: 1,
                command: workload.command(),
            };
            let retry = expiry_point + 1 + offset as u64;
            pinned.insert(position(last_used), write);
            pinned.insert(position(retry), write);
            horizon_retries[offset] = (retry, last_used >= horizon);
        }
        let steps = (0..ENTRIES_PER_SEQUENCE)
            .map(|position| {
                pinned
                    .get(&position)
                    .copied()
                    .unwrap_or_else(|| workload.step())
            })
            .collect();
        Sequence {
            number,
            seed,
            snapshot_index,
            session_expiry_entries,
            steps,
            batches: draw_batches(&mut random),
            horizon_retries,
        }
    }

    /// The log index of the step at `position`.
    pub(crate) fn index(&self, position: usize) -> u64 {
        self.snapshot_index + 1 + position as u64
    }

    /// The last entry's index.
    pub(crate) fn last_index(&self) -> u64 {
        self.index(self.steps.len() - 1)
    }

    pub(crate) fn step_at(&self, index: u64) -> Step {
        self.steps[(index - self.snapshot_index - 1) as usize]
    }

    /// The entries the model applies.
    pub(crate) fn model_entries(&self) -> Vec<Entry> {
        let payload = |position: usize, step: Step| match step {
            Step::Blank => EntryPayload::Blank,
            Step::Probe => EntryPayload::Command(kv::encode(Envelope {
                client_id: 0,
                sequence: 0,
                operation_id: position as u64,
                attempt: 0,
                command: Command::Probe,
            })),
            Step::Write {
                client_id,
                sequence,
                command,
            } => EntryPayload::Command(kv::encode(Envelope {
                client_id,
                sequence,
                operation_id: position as u64,
                attempt: 1,
                command,
            })),
        };
        self.entries(payload)
    }

    /// The entries Postgres applies: a probe is a blank entry.
    pub(crate) fn product_entries(&self) -> Vec<Entry> {
        let payload = |_: usize, step: Step| match step {
            Step::Blank | Step::Probe => EntryPayload::Blank,
            Step::Write {
                client_id,
                sequence,
                command,
            } => EntryPayload::Command(
                wire::LogCommand {
                    client_id: session_name(client_id),
                    sequence,
                    command: product_command(command),
                }
                .encode_to_vec(),
            ),
        };
        self.entries(payload)
    }

    fn entries(&self, payload: impl Fn(usize, Step) -> EntryPayload) -> Vec<Entry> {
        self.steps
            .iter()
            .enumerate()
            .map(|(position, step)| Entry {
                term: Term(1),
                index: LogIndex(self.index(position)),
                payload: payload(position, *step),
            })
            .collect()
    }

    /// What a failure message names: enough to replay it.
    pub(crate) fn describe(&self) -> String {
        format!(
            "sequence {} (seed {:#x}, entries {}..={}, session_expiry_entries {})",
            self.number,
            self.seed,
            self.index(0),
            self.last_index(),
            self.session_expiry_entries
        )
    }
}

/// Batches of 1 to `BATCH_ENTRIES_MAX` new entries; about one in seven is
/// delivered again with up to `REDELIVERED_ENTRIES_MAX` entries before it.
fn draw_batches(random: &mut ChaCha8Rng) -> Vec<Batch> {
    let mut batches = Vec::new();
    let mut start = 0;
    while start < ENTRIES_PER_SEQUENCE {
        let end = (start + random.gen_range(1..=BATCH_ENTRIES_MAX)).min(ENTRIES_PER_SEQUENCE);
        let redelivered = if random.gen_bool(0.15) {
            random.gen_range(1..=REDELIVERED_ENTRIES_MAX).min(start)
        } else {
            0
        };
        batches.push(Batch {
            redelivered,
            new: start..end,
        });
        start = end;
    }
    batches
}
