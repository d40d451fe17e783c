//! The nemesis campaign's clients: concurrent workers doing puts, deletes,
//! compare-and-swaps and reads in all three modes on a small key set,
//! through the public gRPC API, each operation recorded (see
//! [`crate::history`]).
//!
//! Half the workers (the even ones) write through [`raftgres::client::Client`],
//! which carries a session on every write and retries it with the same
//! (client_id, sequence), and leaves an attempt at a leader that stopped
//! answering once another node leads (its leader check, every
//! [`WorkloadOptions::leader_check_interval`]); the others send single
//! attempts with no session to the node they believe leads, following
//! leader hints. Stale reads go
//! straight to one node chosen at random, and name it in the record.
//!
//! The nodes come from an [`AddressBook`] the campaign keeps current as
//! membership changes add and remove nodes: before each operation a
//! worker that sees a new version of the book drops what it knew of nodes
//! no longer listed (channels, its leader guess) and makes a new retrying
//! client of the nodes listed, so that new members are reached and
//! removed ones are not asked forever.
//!
//! Keys come in generations: every `generation_length` the workers move to
//! a fresh set of `keys_per_generation` keys, which bounds the history of
//! each key (and so the linearizability search) however long the campaign.
//! Every loop is bounded by `operations_max` and by a deadline.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raftgres::client::{Client, ClientError, ClientOptions, LEADER_ADDRESS_KEY};
use raftgres_proto::v1::kv_client::KvClient;
use raftgres_proto::v1::{CompareAndSwapRequest, DeleteRequest, GetRequest, PutRequest, ReadMode};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tonic::transport::Channel;
use tonic::Code;

use crate::history::{
    key_name, parse_value, value_bytes, Clock, Outcome, Record, Request, VALUE_ABSENT,
};

/// How the workers run.
#[derive(Clone, Debug)]
pub struct WorkloadOptions {
    /// Concurrent workers.
    pub workers: usize,
    /// Keys per generation.
    pub keys_per_generation: u64,
    /// How long the workers stay on one generation of keys.
    pub generation_length: Duration,
    /// Operations per worker, at most.
    pub operations_per_worker_max: u64,
    /// Timeout of one attempt (single-attempt workers) or of one request
    /// of the retrying client.
    pub request_timeout: Duration,
    /// How long the retrying client keeps retrying one call.
    pub retry_duration_max: Duration,
    /// How long an attempt of the retrying client at the leader waits
    /// before it asks the other nodes who leads, and how often it asks
    /// again (`None`: never; see `ClientOptions::leader_check_interval`).
    pub leader_check_interval: Option<Duration>,
    /// Pause between a worker's operations.
    pub pause: Duration,
}

impl Default for WorkloadOptions {
    fn default() -> WorkloadOptions {
        WorkloadOptions {
            workers: 8,
            keys_per_generation: 5,
            generation_length: Duration::from_secs(10),
            operations_per_worker_max: 1_000_000,
            request_timeout: Duration::from_secs(2),
            retry_duration_max: Duration::from_secs(6),
            leader_check_interval: ClientOptions::default().leader_check_interval,
            pause: Duration::from_millis(5),
        }
    }
}

/// Live counts for a progress display.
#[derive(Debug, Default)]
pub struct Counters {
    /// Operations completed.
    pub operations: AtomicU64,
    /// Operations answered.
    pub ok: AtomicU64,
    /// Writes acknowledged.
    pub ok_writes: AtomicU64,
    /// Linearizable reads answered.
    pub ok_linearizable_reads: AtomicU64,
}

/// The nodes clients may talk to (node id -> gRPC address), shared by the
/// campaign, which changes it, and the workers, which read it.
#[derive(Clone, Debug, Default)]
pub struct AddressBook {
    /// (version, addresses); the version grows at every change.
    inner: Arc<Mutex<(u64, BTreeMap<u64, String>)>>,
}

impl AddressBook {
    /// A book of `addresses`.
    pub fn new(addresses: BTreeMap<u64, String>) -> AddressBook {
        let book = AddressBook::default();
        book.set(addresses);
        book
    }

    /// Replaces the addresses (a new version even when they are equal).
    pub fn set(&self, addresses: BTreeMap<u64, String>) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.0 += 1;
        inner.1 = addresses;
    }

    /// The current version and addresses.
    pub fn read(&self) -> (u64, BTreeMap<u64, String>) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The running workers.
pub struct Workload {
    stop: Arc<AtomicBool>,
    records: Arc<Mutex<Vec<Record>>>,
    /// Live counts.
    pub counters: Arc<Counters>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// What one worker needs.
struct Worker {
    id: u64,
    options: WorkloadOptions,
    clock: Clock,
    random: ChaCha8Rng,
    /// Where the nodes are; `addresses` is its version `book_version`.
    book: AddressBook,
    book_version: u64,
    /// Node addresses, by node id (never empty).
    addresses: BTreeMap<u64, String>,
    /// The session-carrying, retrying client (even workers).
    client: Option<Client>,
    /// The node believed to lead (a key of `addresses`).
    leader_guess: u64,
    /// Lazily made raw channels, by node id.
    channels: BTreeMap<u64, Channel>,
    next_value: u64,
    stop: Arc<AtomicBool>,
    deadline: Instant,
}

impl Workload {
    /// Starts `options.workers` workers against the nodes in `book`
    /// (which must list one at least), stopping by themselves at
    /// `deadline`; their random choices come from `seed`.
    pub fn start(
        book: AddressBook,
        options: WorkloadOptions,
        seed: u64,
        clock: Clock,
        deadline: Instant,
    ) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let records = Arc::new(Mutex::new(Vec::new()));
        let counters = Arc::new(Counters::default());
        let mut tasks = Vec::new();
        for id in 0..options.workers as u64 {
            let mut worker = Worker {
                id,
                options: options.clone(),
                clock,
                random: ChaCha8Rng::seed_from_u64(
                    seed ^ (id + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                ),
                book: book.clone(),
                book_version: 0,
                addresses: BTreeMap::new(),
                channels: BTreeMap::new(),
                client: None,
                leader_guess: 0,
                next_value: 0,
                stop: stop.clone(),
                deadline,
            };
            worker.refresh_addresses();
            let (records, counters) = (records.clone(), counters.clone());
            tasks.push(tokio::spawn(async move {
                worker.run(&records, &counters).await;
            }));
        }
        Workload {
            stop,
            records,
            counters,
            tasks,
        }
    }

    /// The number of workers.
    pub fn workers(&self) -> usize {
        self.tasks.len()
    }

    /// Stops the workers, waits for their last operations, and returns
    /// every record in invocation order.
    pub async fn finish(self) -> Vec<Record> {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            let _ = task.await;
        }
        let mut records = std::mem::take(&mut *self.records.lock().expect("records"));
        records.sort_by_key(|record| (record.invoked_ns, record.worker));
        records
    }
}

impl Worker {
    /// Takes a new version of the address book, if there is one: forgets
    /// channels to nodes no longer listed, makes the retrying client anew
    /// (even workers) and moves a leader guess off a node no longer listed.
    fn refresh_addresses(&mut self) {
        let (version, addresses) = self.book.read();
        if version == self.book_version || addresses.is_empty() {
            return;
        }
        self.book_version = version;
        self.channels
            .retain(|id, _| addresses.get(id) == self.addresses.get(id));
        self.addresses = addresses;
        if self.id.is_multiple_of(2) {
            let client_options = ClientOptions {
                request_timeout: self.options.request_timeout,
                retry_duration_max: self.options.retry_duration_max,
                leader_check_interval: self.options.leader_check_interval,
                backoff_max: Duration::from_millis(250),
                connect_timeout: Duration::from_millis(500),
                ..ClientOptions::default()
            };
            let addresses: Vec<String> = self.addresses.values().cloned().collect();
            self.client = Some(
                Client::with_options(addresses, client_options).expect("a client of the cluster"),
            );
        }
        if !self.addresses.contains_key(&self.leader_guess) {
            let ids: Vec<u64> = self.addresses.keys().copied().collect();
            self.leader_guess = ids[self.id as usize % ids.len()];
        }
    }

    /// The node listed after `id` (wrapping around).
    fn next_node(&self, id: u64) -> u64 {
        self.addresses
            .range(id + 1..)
            .chain(self.addresses.iter())
            .map(|(next, _)| *next)
            .next()
            .expect("a node in the address book")
    }

    async fn run(&mut self, records: &Mutex<Vec<Record>>, counters: &Counters) {
        for _ in 0..self.options.operations_per_worker_max {
            if self.stop.load(Ordering::SeqCst) || Instant::now() >= self.deadline {
                return;
            }
            self.refresh_addresses();
            let record = self.one_operation().await;
            counters.operations.fetch_add(1, Ordering::Relaxed);
            if record.outcome == Outcome::Ok {
                counters.ok.fetch_add(1, Ordering::Relaxed);
                if record.request.is_write() {
                    counters.ok_writes.fetch_add(1, Ordering::Relaxed);
                }
                if record.request
                    == (Request::Get {
                        mode: ReadMode::Linearizable,
                    })
                {
                    counters
                        .ok_linearizable_reads
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
            records.lock().expect("records").push(record);
            tokio::time::sleep(self.options.pause).await;
        }
    }

    /// A value no other worker writes: the worker id in the high bits.
    fn fresh_value(&mut self) -> u64 {
        self.next_value += 1;
        ((self.id + 1) << 40) | self.next_value
    }

    async fn one_operation(&mut self) -> Record {
        let generation =
            self.clock.now_ns() / self.options.generation_length.as_nanos().max(1) as u64;
        let key = generation * self.options.keys_per_generation
            + self.random.gen_range(0..self.options.keys_per_generation);
        let request = match self.random.gen_range(0..100) {
            0..=24 => Request::Put {
                value: self.fresh_value(),
            },
            25..=29 => Request::Delete,
            30..=44 => {
                // Expect a value this worker saw or wrote recently, or absence.
                let expected = if self.random.gen_bool(0.3) {
                    VALUE_ABSENT
                } else {
                    ((self.random.gen_range(0..self.options.workers as u64) + 1) << 40)
                        | self.next_value.saturating_sub(self.random.gen_range(0..3))
                };
                Request::CompareAndSwap {
                    expected,
                    new: self.fresh_value(),
                }
            }
            45..=69 => Request::Get {
                mode: ReadMode::Linearizable,
            },
            70..=84 => Request::Get {
                mode: ReadMode::Lease,
            },
            _ => Request::Get {
                mode: ReadMode::Stale,
            },
        };
        let mut record = Record::invoked(self.id, key, request, &self.clock);
        match (request, self.client.clone()) {
            (
                Request::Get {
                    mode: ReadMode::Stale,
                },
                _,
            ) => self.stale_read(&mut record).await,
            (_, Some(client)) => self.through_client(&client, &mut record).await,
            (_, None) => self.single_attempt(&mut record).await,
        }
        record.completed_ns = self.clock.now_ns();
        record
    }

    /// Through the retrying client, writes with sessions.
    async fn through_client(&mut self, client: &Client, record: &mut Record) {
        record.session = record.request.is_write();
        let key = key_name(record.key);
        let result = match record.request {
            Request::Put { value } => client
                .put(key, value_bytes(value))
                .await
                .map(|response| record.index = Some(response.index)),
            Request::Delete => client
                .delete(key)
                .await
                .map(|response| record.index = Some(response.index)),
            Request::CompareAndSwap { expected, new } => client
                .compare_and_swap(key, optional_value(expected), Some(value_bytes(new)))
                .await
                .map(|response| {
                    record.index = Some(response.index);
                    record.swapped = Some(response.succeeded);
                }),
            Request::Get { mode } => client.get_key_value(key, mode).await.map(|pair| {
                record.value_read = Some(
                    pair.as_ref()
                        .map_or(VALUE_ABSENT, |pair| parse_value(&pair.value)),
                );
                record.index = pair.map(|pair| pair.mod_index);
            }),
        };
        match result {
            Ok(()) => record.outcome = Outcome::Ok,
            Err(error) => {
                record.outcome = client_error_outcome(&error, record.request.is_write());
                record.error = Some(error.to_string());
            }
        }
    }

    /// One attempt, no session, at the node believed to lead.
    async fn single_attempt(&mut self, record: &mut Record) {
        let target = self.leader_guess;
        let Some(mut kv) = self.kv_client(target).await else {
            record.outcome = if record.request.is_write() {
                Outcome::Failed
            } else {
                Outcome::Unknown
            };
            record.error = Some(format!("cannot connect to {}", self.addresses[&target]));
            self.leader_guess = self.next_node(target);
            return;
        };
        let key = key_name(record.key).into_bytes();
        let timeout = self.options.request_timeout;
        let result = match record.request {
            Request::Put { value } => kv
                .put(with_timeout(
                    PutRequest {
                        key,
                        value: value_bytes(value),
                        session: None,
                    },
                    timeout,
                ))
                .await
                .map(|response| record.index = Some(response.into_inner().index)),
            Request::Delete => kv
                .delete(with_timeout(DeleteRequest { key, session: None }, timeout))
                .await
                .map(|response| record.index = Some(response.into_inner().index)),
            Request::CompareAndSwap { expected, new } => kv
                .compare_and_swap(with_timeout(
                    CompareAndSwapRequest {
                        key,
                        expected: optional_value(expected),
                        value: Some(value_bytes(new)),
                        session: None,
                    },
                    timeout,
                ))
                .await
                .map(|response| {
                    let response = response.into_inner();
                    record.index = Some(response.index);
                    record.swapped = Some(response.succeeded);
                }),
            Request::Get { mode } => kv
                .get(with_timeout(
                    GetRequest {
                        key,
                        mode: mode.into(),
                    },
                    timeout,
                ))
                .await
                .map(|response| {
                    let pair = response.into_inner().kv;
                    record.value_read = Some(
                        pair.as_ref()
                            .map_or(VALUE_ABSENT, |pair| parse_value(&pair.value)),
                    );
                    record.index = pair.map(|pair| pair.mod_index);
                }),
        };
        match result {
            Ok(()) => record.outcome = Outcome::Ok,
            Err(status) => {
                record.outcome = status_outcome(status.code());
                record.error = Some(format!("{:?}: {}", status.code(), status.message()));
                self.follow_hint(&status, target);
            }
        }
    }

    /// A Stale read at one node chosen at random.
    async fn stale_read(&mut self, record: &mut Record) {
        let ids: Vec<u64> = self.addresses.keys().copied().collect();
        let target = ids[self.random.gen_range(0..ids.len())];
        record.node = Some(target);
        let Some(mut kv) = self.kv_client(target).await else {
            record.error = Some(format!("cannot connect to {}", self.addresses[&target]));
            return;
        };
        let request = GetRequest {
            key: key_name(record.key).into_bytes(),
            mode: ReadMode::Stale.into(),
        };
        match kv
            .get(with_timeout(request, self.options.request_timeout))
            .await
        {
            Ok(response) => {
                let pair = response.into_inner().kv;
                record.outcome = Outcome::Ok;
                record.value_read = Some(
                    pair.as_ref()
                        .map_or(VALUE_ABSENT, |pair| parse_value(&pair.value)),
                );
                record.index = pair.map(|pair| pair.mod_index);
            }
            Err(status) => {
                record.outcome = status_outcome(status.code());
                record.error = Some(format!("{:?}: {}", status.code(), status.message()));
            }
        }
    }

    async fn kv_client(&mut self, target: u64) -> Option<KvClient<Channel>> {
        if !self.channels.contains_key(&target) {
            let endpoint = tonic::transport::Endpoint::from_shared(format!(
                "http://{}",
                self.addresses.get(&target)?
            ))
            .ok()?
            .connect_timeout(Duration::from_millis(500));
            // Lazy: a node that is down fails the call, not the worker.
            self.channels.insert(target, endpoint.connect_lazy());
        }
        self.channels.get(&target).cloned().map(KvClient::new)
    }

    /// After a refusal: go where the node says the leader is, or try the
    /// next node.
    fn follow_hint(&mut self, status: &tonic::Status, target: u64) {
        let hinted = status
            .metadata()
            .get(LEADER_ADDRESS_KEY)
            .and_then(|value| value.to_str().ok())
            .and_then(|address| {
                let address = address.trim_start_matches("http://");
                self.addresses
                    .iter()
                    .find(|(_, known)| *known == address)
                    .map(|(id, _)| *id)
            });
        self.leader_guess = match hinted {
            Some(leader) if leader != target => leader,
            _ => self.next_node(target),
        };
    }
}

fn optional_value(value: u64) -> Option<Vec<u8>> {
    (value != VALUE_ABSENT).then(|| value_bytes(value))
}

fn with_timeout<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

/// What a status code says about a write: refused before it was proposed
/// (not the leader, malformed, too large), or unknown.
fn status_outcome(code: Code) -> Outcome {
    match code {
        Code::FailedPrecondition | Code::InvalidArgument | Code::ResourceExhausted => {
            Outcome::Failed
        }
        _ => Outcome::Unknown,
    }
}

/// The same for the retrying client: only a final, definite refusal
/// counts as failed; a call that gave up may have been applied by any of
/// its attempts.
fn client_error_outcome(error: &ClientError, write: bool) -> Outcome {
    match error {
        ClientError::Rejected { code, .. } => status_outcome(*code),
        ClientError::OutcomeUnknown { .. } => Outcome::Unknown,
        _ if !write => Outcome::Failed,
        _ => Outcome::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book(nodes: &[u64]) -> BTreeMap<u64, String> {
        nodes
            .iter()
            .map(|id| (*id, format!("127.0.0.1:{id}")))
            .collect()
    }

    fn worker(id: u64, book: &AddressBook) -> Worker {
        let mut worker = Worker {
            id,
            options: WorkloadOptions::default(),
            clock: Clock::start(),
            random: ChaCha8Rng::seed_from_u64(1),
            book: book.clone(),
            book_version: 0,
            addresses: BTreeMap::new(),
            client: None,
            leader_guess: 0,
            channels: BTreeMap::new(),
            next_value: 0,
            stop: Arc::new(AtomicBool::new(false)),
            deadline: Instant::now(),
        };
        worker.refresh_addresses();
        worker
    }

    #[tokio::test]
    async fn workers_follow_the_address_book_to_new_members_and_off_removed_ones() {
        let addresses = AddressBook::new(book(&[1, 2, 3]));
        let mut worker = worker(2, &addresses);
        assert_eq!(worker.leader_guess, 3);
        assert_eq!(
            worker
                .client
                .as_ref()
                .expect("an even worker's client")
                .endpoints()
                .len(),
            3
        );
        worker.kv_client(3).await.expect("a channel to node 3");
        worker.kv_client(1).await.expect("a channel to node 1");

        // Node 3 replaced by node 4: the guess, the channel and the
        // client's endpoints move with the book.
        addresses.set(book(&[1, 2, 4]));
        worker.refresh_addresses();
        assert_ne!(worker.leader_guess, 3);
        assert!(worker.addresses.contains_key(&worker.leader_guess));
        assert_eq!(worker.channels.keys().copied().collect::<Vec<_>>(), [1]);
        let endpoints = worker
            .client
            .as_ref()
            .expect("a client")
            .endpoints()
            .to_vec();
        assert!(
            endpoints.iter().any(|address| address.ends_with(":4")),
            "{endpoints:?}"
        );
        assert!(
            !endpoints.iter().any(|address| address.ends_with(":3")),
            "{endpoints:?}"
        );
        assert_eq!(worker.next_node(2), 4);
        assert_eq!(worker.next_node(4), 1);
        // A refused node that is gone from the book is passed over too.
        assert_eq!(worker.next_node(3), 4);
        for _ in 0..20 {
            let mut record = Record::invoked(
                worker.id,
                1,
                Request::Get {
                    mode: ReadMode::Stale,
                },
                &worker.clock,
            );
            worker.stale_read(&mut record).await;
            assert_ne!(record.node, Some(3), "a stale read at a removed node");
        }
    }
}
