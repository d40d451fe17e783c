//! The command sequences: drawn from a seed, with the batches Postgres
//! applies them in and the reads made after each batch.
//!
//! The workload keeps a shadow store (an [`MvccStore`] it applies every
//! step it draws to) so that compares, compactions and reads can aim at
//! what the store holds: a compare that holds, a compaction just above the
//! last one, a read just below the compaction point. The shadow only
//! steers the draw; the model side (`model.rs`) runs the sequence again
//! from an empty store.

use std::collections::BTreeSet;
use std::ops::Range;

use raftgres::mvcc::{
    self, Command, Compare, CompareResult, CompareTarget, DeleteRangeRequest, KeyRange, MvccStore,
    PutRequest, RangeRequest, RequestOp, Revision, SortOrder, SortTarget, TxnRequest,
};
use raftgres::pipeline::sessions::SESSION_EXPIRY_STRIDE;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::mapping::{raftgres_to_mvcc, RaftgresOp};

/// The seed of sequence `n` is `SEED_BASE + n`.
pub(crate) const SEED_BASE: u64 = 0x6574_0000;
/// The keys: few, and some the prefix of others, so that ranges, compares
/// and deletes meet the keys other commands wrote.
const KEYS: [&str; 8] = ["a", "a/1", "a/2", "b", "c", "d", "e", "f"];
/// Where ranges may end besides at a key: past every key, and the ends of
/// the prefixes `a` and `a/`.
const RANGE_ENDS: [&str; 3] = ["g", "b", "a0"];
/// Values: few, so that value compares hold now and then; the empty value
/// is a value like any other.
const VALUES: [&str; 5] = ["", "v1", "v2", "v3", "v4"];
/// Largest Postgres apply batch (new entries).
const BATCH_ENTRIES_MAX: usize = 24;
/// The share of batches drawn as plain puts only (etcd puts without a
/// lease and keeping neither value nor lease, and raftgres puts).
const PLAIN_PUT_BATCHES: f64 = 0.2;
/// Largest number of already applied entries a batch is delivered again
/// with.
const REDELIVERED_ENTRIES_MAX: usize = 4;
/// Ranges read at past, current, compacted and future revisions after
/// every batch.
const READS_PER_BATCH: usize = 4;
/// How deep transactions nest (1: a transaction inside the outer one).
const TXN_DEPTH_MAX: usize = 2;
/// Operations drawn per transaction branch at most.
const BRANCH_OPERATIONS_MAX: usize = 4;
/// Compares drawn per transaction at most.
const COMPARES_MAX: usize = 3;
/// Lease ids are drawn from `1..=LEASE_MAX`: few, so that grants meet
/// leases that exist (refused LEASE_EXISTS), revokes meet leases that do
/// not (refused LEASE_NOT_FOUND), and puts name both kinds.
pub(crate) const LEASE_MAX: i64 = 3;
/// Granted TTLs are drawn from `1..=LEASE_TTL_DRAWN_MAX` seconds (the
/// store keeps them; expiry is the leader's, not the state machine's).
const LEASE_TTL_DRAWN_MAX: i64 = 100;

/// One committed entry, before either side encodes it.
#[derive(Clone, Debug)]
pub(crate) enum Step {
    /// The blank entry a new leader appends.
    Blank,
    /// An etcd operation or compaction.
    Etcd(Command),
    /// A raftgres put, delete or compare-and-swap.
    Raftgres(RaftgresOp),
}

/// A command `mvcc::check_command` refused: never proposed, and the
/// product's `validate` must refuse it too.
#[derive(Clone, Debug)]
pub(crate) struct Refused {
    pub(crate) command: Command,
    pub(crate) reason: String,
}

/// One Postgres apply batch: `new` (positions in the sequence), delivered
/// with the `redelivered` entries before it, then `reads`.
#[derive(Clone, Debug)]
pub(crate) struct Batch {
    pub(crate) redelivered: usize,
    pub(crate) new: Range<usize>,
    /// Read from the tables once the batch committed.
    pub(crate) reads: Vec<RangeRequest>,
}

impl Batch {
    /// The positions delivered: the redelivered ones, then the new ones.
    pub(crate) fn delivered(&self) -> Range<usize> {
        self.new.start - self.redelivered..self.new.end
    }
}

/// A sequence and how it is run.
pub(crate) struct Sequence {
    pub(crate) seed: u64,
    /// The installed snapshot's index; the first entry is the next one.
    pub(crate) snapshot_index: u64,
    pub(crate) steps: Vec<Step>,
    pub(crate) batches: Vec<Batch>,
    /// Commands drawn and refused before proposal.
    pub(crate) refused: Vec<Refused>,
}

impl Sequence {
    /// The sequence of `seed`, `entries` long. It starts 50 to 250 entries
    /// below a session expiry point, so that the applier splits a batch
    /// there into two calls of the state machine in one transaction.
    pub(crate) fn draw(seed: u64, entries: usize) -> Sequence {
        let mut random = ChaCha8Rng::seed_from_u64(seed);
        let expiry_point = SESSION_EXPIRY_STRIDE * random.gen_range(1..=4);
        let snapshot_index = expiry_point - random.gen_range(50..=250);
        let mut workload = Workload {
            random: ChaCha8Rng::seed_from_u64(random.gen()),
            shadow: MvccStore::default(),
            refused: Vec::new(),
        };
        let mut steps = Vec::with_capacity(entries);
        let mut batches = Vec::new();
        while steps.len() < entries {
            let start = steps.len();
            let end = (start + random.gen_range(1..=BATCH_ENTRIES_MAX)).min(entries);
            // Some batches are plain puts only, which the product applies
            // in one statement of their own: over eight keys, most of
            // them put some key more than once.
            if random.gen_bool(PLAIN_PUT_BATCHES) {
                steps.extend((start..end).map(|_| workload.plain_put()));
            } else {
                steps.extend((start..end).map(|_| workload.step()));
            }
            let redelivered = if random.gen_bool(0.15) {
                random.gen_range(1..=REDELIVERED_ENTRIES_MAX).min(start)
            } else {
                0
            };
            let reads = (0..READS_PER_BATCH).map(|_| workload.read()).collect();
            batches.push(Batch {
                redelivered,
                new: start..end,
                reads,
            });
        }
        Sequence {
            seed,
            snapshot_index,
            steps,
            batches,
            refused: workload.refused,
        }
    }

    /// Appends a batch putting every key, so that the state ends with a
    /// row for each (the snapshot round trip wants rows enough for several
    /// pages).
    pub(crate) fn put_every_key(&mut self) {
        let start = self.steps.len();
        self.steps.extend(KEYS.iter().map(|key| {
            Step::Etcd(Command::Op(RequestOp::Put(PutRequest {
                key: key.as_bytes().to_vec(),
                value: b"last".to_vec(),
                ..PutRequest::default()
            })))
        }));
        self.batches.push(Batch {
            redelivered: 0,
            new: start..self.steps.len(),
            reads: Vec::new(),
        });
    }

    /// The log index of the step at `position`.
    pub(crate) fn index(&self, position: usize) -> u64 {
        self.snapshot_index + 1 + position as u64
    }

    /// The last entry's index.
    pub(crate) fn last_index(&self) -> u64 {
        self.index(self.steps.len() - 1)
    }

    pub(crate) fn step_at(&self, index: u64) -> &Step {
        &self.steps[(index - self.snapshot_index - 1) as usize]
    }

    /// What a failure of the contract test names: the command that
    /// replays it alone.
    pub(crate) fn describe(&self) -> String {
        format!(
            "seed {seed:#x} (entries {first}..={last}; replay: {variable}={seed:#x} cargo nextest run -p raftgres-tests --test etcd_contract {test})",
            seed = self.seed,
            first = self.index(0),
            last = self.last_index(),
            variable = crate::SEED_VARIABLE,
            test = crate::CONTRACT_TEST,
        )
    }
}

/// Draws steps. It reads the shadow store to aim, never the sides
/// compared.
struct Workload {
    random: ChaCha8Rng,
    shadow: MvccStore,
    refused: Vec<Refused>,
}

/// What a transaction branch wrote so far, so that the draw mostly avoids
/// what `check_command` refuses (a key written twice in one branch).
#[derive(Clone, Debug, Default)]
struct Written {
    /// Keys that may be neither put again nor deleted.
    puts: BTreeSet<Vec<u8>>,
    /// Keys the other branch of the same nested transaction puts: they may
    /// be put once more here (only one branch runs), but not deleted.
    other_branch_puts: BTreeSet<Vec<u8>>,
    deletes: Vec<KeyRange>,
}

impl Written {
    fn may_put(&self, key: &[u8]) -> bool {
        !self.puts.contains(key) && !self.deletes.iter().any(|range| range.contains(key))
    }

    fn may_delete(&self, range: &KeyRange) -> bool {
        !self
            .puts
            .iter()
            .chain(&self.other_branch_puts)
            .any(|key| range.contains(key))
    }
}

impl Workload {
    /// The next step the shadow accepts a proposal of; refused ones are
    /// noted and drawn again.
    fn step(&mut self) -> Step {
        loop {
            let step = self.candidate();
            let applied = match &step {
                Step::Blank => None,
                Step::Etcd(command) => {
                    if let Err(reason) = mvcc::check_command(command) {
                        self.refused.push(Refused {
                            command: command.clone(),
                            reason,
                        });
                        continue;
                    }
                    Some(command.clone())
                }
                Step::Raftgres(operation) => Some(raftgres_to_mvcc(operation)),
            };
            if let Some(command) = applied {
                self.shadow.apply(&command);
            }
            return step;
        }
    }

    fn candidate(&mut self) -> Step {
        match self.random.gen_range(0..100) {
            0..=3 => Step::Blank,
            4..=22 => Step::Etcd(Command::Op(RequestOp::Put(self.put()))),
            23..=32 => Step::Etcd(Command::Op(RequestOp::DeleteRange(self.delete()))),
            33..=36 => Step::Etcd(Command::Op(RequestOp::Range(self.range_request(0)))),
            37..=69 => {
                let sloppy = self.random.gen_bool(0.05);
                let txn = self.txn(0, &mut Written::default(), sloppy);
                Step::Etcd(Command::Op(RequestOp::Txn(txn)))
            }
            70..=75 => Step::Etcd(Command::Compact(self.compact_revision())),
            76..=78 => Step::Etcd(Command::LeaseGrant {
                id: self.lease_id(),
                ttl: self.random.gen_range(1..=LEASE_TTL_DRAWN_MAX),
            }),
            79..=80 => Step::Etcd(Command::LeaseRevoke(self.granted_lease_id())),
            81..=96 => Step::Raftgres(self.raftgres_op()),
            _ => Step::Etcd(self.invalid()),
        }
    }

    /// A plain put: an etcd put without a lease that keeps neither value
    /// nor lease (answering prev_kv or not), or a raftgres put.
    fn plain_put(&mut self) -> Step {
        let key = self.key();
        let value = self.value();
        let step = if self.random.gen_bool(0.5) {
            Step::Etcd(Command::Op(RequestOp::Put(PutRequest {
                key,
                value,
                prev_kv: self.random.gen_bool(0.5),
                ..PutRequest::default()
            })))
        } else {
            Step::Raftgres(RaftgresOp::Put { key, value })
        };
        let command = match &step {
            Step::Etcd(command) => command.clone(),
            Step::Raftgres(operation) => raftgres_to_mvcc(operation),
            Step::Blank => unreachable!("a put"),
        };
        self.shadow.apply(&command);
        step
    }

    fn lease_id(&mut self) -> i64 {
        self.random.gen_range(1..=LEASE_MAX)
    }

    /// Mostly a lease that exists, when one does.
    fn granted_lease_id(&mut self) -> i64 {
        let granted: Vec<i64> = self.shadow.leases().keys().copied().collect();
        if granted.is_empty() || self.random.gen_bool(0.3) {
            return self.lease_id();
        }
        granted[self.random.gen_range(0..granted.len())]
    }

    fn key(&mut self) -> Vec<u8> {
        KEYS[self.random.gen_range(0..KEYS.len())]
            .as_bytes()
            .to_vec()
    }

    fn value(&mut self) -> Vec<u8> {
        VALUES[self.random.gen_range(0..VALUES.len())]
            .as_bytes()
            .to_vec()
    }

    /// A single key, a `[start, end)` range (now and then an empty one,
    /// end before start), a prefix, every key from one on, or every key.
    fn key_range(&mut self) -> KeyRange {
        match self.random.gen_range(0..100) {
            0..=39 => KeyRange::single(self.key()),
            40..=64 => {
                let key = self.key();
                let range_end = if self.random.gen_bool(0.5) {
                    self.key()
                } else {
                    RANGE_ENDS[self.random.gen_range(0..RANGE_ENDS.len())]
                        .as_bytes()
                        .to_vec()
                };
                KeyRange { key, range_end }
            }
            65..=79 => {
                let (key, range_end) = if self.random.gen_bool(0.5) {
                    ("a", "b")
                } else {
                    ("a/", "a0")
                };
                KeyRange {
                    key: key.as_bytes().to_vec(),
                    range_end: range_end.as_bytes().to_vec(),
                }
            }
            80..=94 => KeyRange {
                key: self.key(),
                range_end: vec![0],
            },
            _ => KeyRange {
                key: vec![0],
                range_end: vec![0],
            },
        }
    }

    /// A put: mostly plain, some keeping the value or the lease (refused
    /// KEY_NOT_FOUND when the key is missing), some attaching a lease
    /// (refused LEASE_NOT_FOUND when it does not exist).
    fn put(&mut self) -> PutRequest {
        let key = self.key();
        let prev_kv = self.random.gen_bool(0.5);
        let (ignore_value, ignore_lease, lease) = match self.random.gen_range(0..100) {
            0..=59 => (false, false, 0),
            60..=71 => (true, false, 0),
            72..=81 => (false, true, 0),
            82..=86 => (true, true, 0),
            _ => (false, false, self.granted_lease_id()),
        };
        let value = if ignore_value {
            Vec::new()
        } else {
            self.value()
        };
        PutRequest {
            key,
            value,
            lease,
            prev_kv,
            ignore_value,
            ignore_lease,
        }
    }

    fn delete(&mut self) -> DeleteRangeRequest {
        DeleteRangeRequest {
            range: self.key_range(),
            prev_kv: self.random.gen_bool(0.5),
        }
    }

    /// A range at `revision`: sorted or not, limited or not, keys only or
    /// count only now and then, and now and then with revision filters.
    fn range_request(&mut self, revision: Revision) -> RangeRequest {
        let sort_order = match self.random.gen_range(0..4) {
            0 | 1 => SortOrder::None,
            2 => SortOrder::Ascend,
            _ => SortOrder::Descend,
        };
        let sort_target = match self.random.gen_range(0..8) {
            0 => SortTarget::Version,
            1 => SortTarget::Create,
            2 => SortTarget::Mod,
            3 => SortTarget::Value,
            _ => SortTarget::Key,
        };
        let current = self.shadow.revisions().current;
        let bound = |random: &mut ChaCha8Rng| {
            if random.gen_bool(0.12) {
                random.gen_range(1..=current)
            } else {
                0
            }
        };
        RangeRequest {
            range: self.key_range(),
            limit: if self.random.gen_bool(0.3) {
                self.random.gen_range(1..=3)
            } else {
                0
            },
            revision,
            sort_order,
            sort_target,
            keys_only: self.random.gen_bool(0.15),
            count_only: self.random.gen_bool(0.1),
            min_mod_revision: bound(&mut self.random),
            max_mod_revision: bound(&mut self.random),
            min_create_revision: bound(&mut self.random),
            max_create_revision: bound(&mut self.random),
        }
    }

    /// A read after a batch: at the current revision (0, -1 or named), at
    /// a past one still kept, at the compaction point, below it (refused
    /// COMPACTED) or beyond the current one (refused FUTURE_REVISION).
    fn read(&mut self) -> RangeRequest {
        let revisions = self.shadow.revisions();
        let kept_from = revisions.compacted.max(1);
        let revision = match self.random.gen_range(0..100) {
            0..=9 => 0,
            10..=14 => -1,
            15..=24 => revisions.current,
            25..=34 => kept_from,
            35..=49 if revisions.compacted > 1 => self.random.gen_range(1..revisions.compacted),
            50..=64 => revisions.current + self.random.gen_range(1..=3),
            _ => self.random.gen_range(kept_from..=revisions.current),
        };
        self.range_request(revision)
    }

    /// A compaction: mostly above the last one and at most the current
    /// revision; some at or below the last one (refused COMPACTED), some
    /// beyond the current revision (refused FUTURE_REVISION).
    fn compact_revision(&mut self) -> Revision {
        let revisions = self.shadow.revisions();
        match self.random.gen_range(0..100) {
            0..=59 if revisions.current > revisions.compacted => {
                // Mostly a short way above the last one, so that some
                // history is kept below the current revision.
                let step_max = ((revisions.current - revisions.compacted) / 2).max(1);
                revisions.compacted + self.random.gen_range(1..=step_max)
            }
            0..=79 => self.random.gen_range(0..=revisions.compacted),
            _ => revisions.current + self.random.gen_range(1..=3),
        }
    }

    /// A transaction: compares over single keys and ranges, and branches
    /// of ranges, puts, deletes and nested transactions. Unless `sloppy`,
    /// it avoids writing a key twice in a branch.
    fn txn(&mut self, depth: usize, written: &mut Written, sloppy: bool) -> TxnRequest {
        let compares = self.random.gen_range(0..=COMPARES_MAX);
        let compare = (0..compares).map(|_| self.compare()).collect();
        let before = written.clone();
        let success = self.branch(depth, written, sloppy);
        let success_puts: BTreeSet<Vec<u8>> =
            written.puts.difference(&before.puts).cloned().collect();
        let mut failure_written = Written {
            puts: before.puts.clone(),
            other_branch_puts: &before.other_branch_puts | &success_puts,
            deletes: written.deletes.clone(),
        };
        let failure = self.branch(depth, &mut failure_written, sloppy);
        written.puts.extend(failure_written.puts);
        written.deletes = failure_written.deletes;
        TxnRequest {
            compare,
            success,
            failure,
        }
    }

    fn branch(&mut self, depth: usize, written: &mut Written, sloppy: bool) -> Vec<RequestOp> {
        let operations = self.random.gen_range(0..=BRANCH_OPERATIONS_MAX);
        let mut branch = Vec::with_capacity(operations);
        for _ in 0..operations {
            let operation = match self.random.gen_range(0..100) {
                0..=29 => RequestOp::Range(self.range_request(0)),
                30..=64 => {
                    let put = self.put();
                    if sloppy || written.may_put(&put.key) {
                        written.puts.insert(put.key.clone());
                        RequestOp::Put(put)
                    } else {
                        RequestOp::Range(self.range_request(0))
                    }
                }
                65..=84 => {
                    let delete = self.delete();
                    if sloppy || written.may_delete(&delete.range) {
                        written.deletes.push(delete.range.clone());
                        RequestOp::DeleteRange(delete)
                    } else {
                        RequestOp::Range(self.range_request(0))
                    }
                }
                _ if depth < TXN_DEPTH_MAX => RequestOp::Txn(self.txn(depth + 1, written, sloppy)),
                _ => RequestOp::Range(self.range_request(0)),
            };
            branch.push(operation);
        }
        branch
    }

    /// A compare of one of the five targets with one of the four results.
    /// Half the operands are the field of a key the store holds in the
    /// range, so that equal compares hold now and then.
    fn compare(&mut self) -> Compare {
        let range = if self.random.gen_bool(0.7) {
            KeyRange::single(self.key())
        } else {
            self.key_range()
        };
        let result = match self.random.gen_range(0..4) {
            0 => CompareResult::Equal,
            1 => CompareResult::Greater,
            2 => CompareResult::Less,
            _ => CompareResult::NotEqual,
        };
        let held = self
            .shadow
            .range(&RangeRequest {
                range: range.clone(),
                ..RangeRequest::default()
            })
            .expect("the current revision is always readable")
            .kvs;
        let aimed = held.first().filter(|_| self.random.gen_bool(0.5)).cloned();
        let current = self.shadow.revisions().current;
        let target = match self.random.gen_range(0..5) {
            0 => CompareTarget::Version(
                aimed.map_or_else(|| self.random.gen_range(0..=4), |kv| kv.version),
            ),
            1 => CompareTarget::Create(aimed.map_or_else(
                || self.random.gen_range(0..=current),
                |kv| kv.create_revision,
            )),
            2 => CompareTarget::Mod(
                aimed.map_or_else(|| self.random.gen_range(0..=current), |kv| kv.mod_revision),
            ),
            3 => CompareTarget::Value(aimed.map_or_else(|| self.value(), |kv| kv.value)),
            _ => CompareTarget::Lease(
                aimed.map_or_else(|| self.random.gen_range(0..=LEASE_MAX), |kv| kv.lease),
            ),
        };
        Compare {
            range,
            result,
            target,
        }
    }

    /// A raftgres operation: a put, a delete, or a compare-and-swap that
    /// mostly expects what the key holds (or that it is missing).
    fn raftgres_op(&mut self) -> RaftgresOp {
        let key = self.key();
        match self.random.gen_range(0..100) {
            0..=29 => RaftgresOp::Put {
                value: self.value(),
                key,
            },
            30..=44 => RaftgresOp::Delete { key },
            _ => {
                let held = self.shadow.get(&key).map(|kv| kv.value.clone());
                let expected = match self.random.gen_range(0..100) {
                    0..=44 => held,
                    45..=64 => None,
                    _ => Some(self.value()),
                };
                let value = (!self.random.gen_bool(0.15)).then(|| self.value());
                RaftgresOp::CompareAndSwap {
                    key,
                    expected,
                    value,
                }
            }
        }
    }

    /// A command `check_command` refuses: a put that keeps its value or
    /// lease but names one, a key written twice in a branch, a range in a
    /// transaction at a past revision, an empty key, a negative
    /// compaction, a lease that is not a positive number, a TTL out of
    /// range.
    fn invalid(&mut self) -> Command {
        let put = |key: Vec<u8>| {
            RequestOp::Put(PutRequest {
                key,
                value: b"v".to_vec(),
                ..PutRequest::default()
            })
        };
        let txn = |success: Vec<RequestOp>| {
            Command::Op(RequestOp::Txn(TxnRequest {
                compare: Vec::new(),
                success,
                failure: Vec::new(),
            }))
        };
        let key = self.key();
        match self.random.gen_range(0..9) {
            0 => Command::Op(RequestOp::Put(PutRequest {
                key,
                value: b"v".to_vec(),
                ignore_value: true,
                ..PutRequest::default()
            })),
            1 => Command::Op(RequestOp::Put(PutRequest {
                key,
                lease: 1,
                ignore_lease: true,
                ..PutRequest::default()
            })),
            2 => txn(vec![put(key.clone()), put(key)]),
            3 => txn(vec![
                RequestOp::DeleteRange(DeleteRangeRequest {
                    range: KeyRange {
                        key: key.clone(),
                        range_end: vec![0],
                    },
                    prev_kv: false,
                }),
                put(key),
            ]),
            4 => txn(vec![RequestOp::Range(self.range_request(1))]),
            5 => Command::Op(RequestOp::Put(PutRequest::default())),
            6 => Command::Compact(-self.random.gen_range(1..=3)),
            7 => Command::LeaseGrant {
                id: self.random.gen_range(-1..=1),
                ttl: if self.random.gen_bool(0.5) {
                    0
                } else {
                    mvcc::LEASE_TTL_MAX + 1
                },
            },
            _ => Command::LeaseRevoke(-self.random.gen_range(0..=1)),
        }
    }
}
