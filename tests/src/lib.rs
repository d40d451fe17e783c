//! End-to-end test support: real `raftgres serve` processes, each on its
//! own real Postgres instance, spoken to over real gRPC.
//!
//! - [`TestCluster`]: a [`DevCluster`] in a fresh temporary directory that
//!   prints every node's log tail when a test fails, and cleans up after a
//!   test that passed (the directory of a failed one is kept and named).
//! - Status polling with a bound on time: [`TestCluster::wait_for_status`],
//!   [`TestCluster::wait_for_leader_change`], [`TestCluster::wait_caught_up`].
//! - Membership changes on a running cluster: [`TestCluster::add_learner`],
//!   [`TestCluster::promote_when_caught_up`],
//!   [`TestCluster::wait_for_membership`], and reading writes back
//!   ([`read_prefix`], [`assert_present`]).
//! - Raw tonic clients ([`kv_client`], [`submit_client`], [`peer_client`])
//!   for tests that must see a status code exactly as a node returned it,
//!   with no retry or redirect in between.
//!
//! The nemesis suite (docs/NEMESIS.md) lives here too: [`proxy`] (a
//! fault-injecting TCP proxy per directed peer link), [`workload`] and
//! [`history`] (concurrent clients recording what they were told),
//! [`nemesis`] (faults against processes, Postgres and the network),
//! [`checks`] (one property per file), [`campaign`] (all of it together,
//! from a seed) and [`report`].
//!
//! [`etcd`] holds raftgres' etcd v3 API to a real etcd: a throw-away etcd
//! member, Debian's `etcdctl` run with bounds, and the normalization that
//! makes both sides' answers comparable.
#![forbid(unsafe_code)]

pub mod campaign;
pub mod certificates;
pub mod checks;
pub mod contract_log;
pub mod deploy;
pub mod etcd;
pub mod history;
pub mod nemesis;
pub mod proxy;
pub mod report;
pub mod workload;

use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use std::collections::BTreeMap;

use raftgres::client::{
    Client, ClientError, ClientOptions, MemberChangeResponse, MemberListResponse, ReadMode, Role,
    StatusResponse,
};
use raftgres_devcluster::cluster::{find_raftgres_binary, DevCluster, DevClusterOptions};
use raftgres_proto::v1::client_client::ClientClient;
use raftgres_proto::v1::kv_client::KvClient;
use raftgres_proto::v1::peer_client::PeerClient;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};

/// Length of a core tick in every test cluster.
pub const TICK_MS: u64 = 50;
/// How often the helpers poll.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Upper bound of any single wait in the helpers: generous, because two
/// cores are shared by several clusters and the compiler.
pub const WAIT_MAX: Duration = Duration::from_secs(30);
/// How close a learner's match index must come to the leader's before
/// [`TestCluster::promote_when_caught_up`] promotes it (as `raftgres member
/// add` does).
pub const CATCH_UP_ENTRIES_MAX: u64 = 64;
/// Timeout of every raw gRPC request (longer than the node's own 10 s
/// request timeout, so that the node's answer is what a test sees).
pub const RAW_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// A dev cluster owned by one test, in its own temporary directory.
/// Dereferences to the [`DevCluster`].
pub struct TestCluster {
    cluster: DevCluster,
    options: DevClusterOptions,
    dir: PathBuf,
    /// Asks one node at a time for its status: one attempt, short timeout.
    status_client: Client,
}

impl TestCluster {
    /// A 3-node cluster with [`TICK_MS`] ticks and default settings, with a
    /// leader. `name` names the temporary directory.
    pub async fn start(name: &str) -> TestCluster {
        TestCluster::start_with(name, 3, |_| {}).await
    }

    /// A cluster of `nodes` nodes whose options `configure` may change.
    pub async fn start_with(
        name: &str,
        nodes: usize,
        configure: impl FnOnce(&mut DevClusterOptions),
    ) -> TestCluster {
        let binary = find_raftgres_binary()
            .expect("the node binary; build it first with `cargo build -p raftgres-cli`");
        let mut options = DevClusterOptions::new(nodes, binary);
        options.tick_ms = TICK_MS;
        configure(&mut options);
        let dir = fresh_dir(name);
        let cluster = match DevCluster::start(&dir, options.clone()).await {
            Ok(cluster) => cluster,
            Err(error) => panic!(
                "cannot start a {nodes}-node cluster in {}: {error}",
                dir.display()
            ),
        };
        let status_client = status_client(&cluster, &options);
        TestCluster {
            cluster,
            options,
            dir,
            status_client,
        }
    }

    /// The cluster's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops every node and every Postgres, then starts the whole cluster
    /// again on the same directory (same data, and the same ports where
    /// they are still free) and waits for a leader.
    pub async fn restart_all(&mut self) {
        if let Err(error) = self.cluster.shutdown() {
            panic!("cannot stop the cluster: {error}");
        }
        self.cluster = match DevCluster::start(&self.dir, self.options.clone()).await {
            Ok(cluster) => cluster,
            Err(error) => panic!("cannot restart the cluster: {error}"),
        };
        self.status_client = status_client(&self.cluster, &self.options);
    }

    /// Node `id`'s process id, if it runs.
    pub fn pid(&mut self, id: u64) -> Option<u32> {
        self.cluster.pid(id)
    }

    /// A leader-finding client with default retries.
    pub fn client(&self) -> Client {
        self.cluster.client().expect("a client of the cluster")
    }

    /// Node `id`'s status: one attempt, no redirect.
    pub async fn status(&self, id: u64) -> Result<StatusResponse, raftgres::client::ClientError> {
        self.status_client
            .status(self.cluster.node_address(id))
            .await
    }

    /// The current leader (agreed by every running node) and its status.
    pub async fn leader_status(&mut self) -> (u64, StatusResponse) {
        let leader = self.wait_leader().await;
        let status = self
            .wait_for_status(leader, "to answer as leader", |status| {
                status.role == Role::Leader as i32
            })
            .await;
        (leader, status)
    }

    /// The leader every running node agrees on, waiting up to [`WAIT_MAX`].
    pub async fn wait_leader(&mut self) -> u64 {
        match self.cluster.wait_for_leader(WAIT_MAX).await {
            Ok(leader) => leader,
            Err(error) => panic!("{error}"),
        }
    }

    /// Node ids other than `id`, ascending.
    pub fn others(&self, id: u64) -> Vec<u64> {
        self.cluster
            .node_ids()
            .into_iter()
            .filter(|other| *other != id)
            .collect()
    }

    /// Polls node `id` until its status satisfies `accept`; panics after
    /// [`WAIT_MAX`] with the last answer. `what` completes "node N ...".
    pub async fn wait_for_status(
        &self,
        id: u64,
        what: &str,
        accept: impl Fn(&StatusResponse) -> bool,
    ) -> StatusResponse {
        let deadline = Instant::now() + WAIT_MAX;
        loop {
            let last = self.status(id).await;
            if let Ok(status) = &last {
                if accept(status) {
                    return status.clone();
                }
            }
            if Instant::now() >= deadline {
                panic!("node {id} did not come {what} within {WAIT_MAX:?}; last status: {last:?}");
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits until every running node agrees on a leader other than
    /// `old_leader`; returns it.
    pub async fn wait_for_leader_change(&mut self, old_leader: u64) -> u64 {
        let deadline = Instant::now() + WAIT_MAX;
        loop {
            if let Some(leader) = self.cluster.leader().await {
                if leader != old_leader {
                    return leader;
                }
            }
            if Instant::now() >= deadline {
                let statuses = self.cluster.statuses().await;
                panic!("no new leader other than {old_leader} within {WAIT_MAX:?}: {statuses:#?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until node `id` has applied everything the leader had
    /// committed when this was called; returns that commit index.
    pub async fn wait_caught_up(&mut self, id: u64) -> u64 {
        let (_, leader) = self.leader_status().await;
        let commit = leader.commit_index;
        self.wait_for_status(id, &format!("to apply up to index {commit}"), |status| {
            status.applied_index >= commit
        })
        .await;
        commit
    }

    /// Adds a node to the running cluster as a learner and starts it
    /// ([`DevCluster::add_node`]); returns its id once the leader lists it
    /// as a learner.
    pub async fn add_learner(&mut self) -> u64 {
        let id = match self.cluster.add_node().await {
            Ok(id) => id,
            Err(error) => panic!("cannot add a node: {error}"),
        };
        self.wait_for_membership(&format!("node {id} listed as a learner"), |listing| {
            let membership = listing.membership.clone().unwrap_or_default();
            membership.learners.contains(&id)
        })
        .await;
        id
    }

    /// Waits until the leader has heard from learner `id` and finds it
    /// within [`CATCH_UP_ENTRIES_MAX`] of its own log, then promotes it,
    /// retrying while the leader refuses because it is behind (or another
    /// change is in flight), up to [`WAIT_MAX`] each.
    pub async fn promote_when_caught_up(&self, id: u64) -> MemberChangeResponse {
        self.wait_for_membership(&format!("node {id} caught up"), |listing| {
            let match_index = |member_id: u64| {
                let member = listing.members.iter().find(|member| member.id == member_id);
                member.map_or(0, |member| member.match_index)
            };
            let (learner, leader) = (match_index(id), match_index(listing.leader_id));
            learner > 0 && learner + CATCH_UP_ENTRIES_MAX >= leader
        })
        .await;
        let client = self.client();
        let deadline = Instant::now() + WAIT_MAX;
        loop {
            let error = match client.member_promote(id).await {
                Ok(response) => return response,
                Err(error) => error,
            };
            let retryable = error.code() == Some(Code::Unavailable);
            if !retryable || Instant::now() >= deadline {
                panic!("cannot promote node {id} within {WAIT_MAX:?}: {error}");
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Reads the leader's member list until `accept` holds; panics after
    /// [`WAIT_MAX`] with the last answer. `what` says what is awaited.
    pub async fn wait_for_membership(
        &self,
        what: &str,
        accept: impl Fn(&MemberListResponse) -> bool,
    ) -> MemberListResponse {
        let client = self.client();
        let deadline = Instant::now() + WAIT_MAX;
        loop {
            let last = client.member_list().await;
            if let Ok(listing) = &last {
                if accept(listing) {
                    return listing.clone();
                }
            }
            if Instant::now() >= deadline {
                panic!("no {what} within {WAIT_MAX:?}; last member list: {last:?}");
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits until the leader's membership is committed, not joint, and
    /// made of exactly `voters` and no learner.
    pub async fn wait_for_voters(&self, voters: &[u64]) -> MemberListResponse {
        self.wait_for_membership(
            &format!("settled membership of voters {voters:?}"),
            |listing| settled_voters(listing) == Some(voters.to_vec()),
        )
        .await
    }

    /// Asserts that every node process is still running and that none has
    /// exited since the cluster started it.
    pub fn assert_no_node_exited(&mut self) {
        let exited = self.cluster.reap_exited();
        assert!(exited.is_empty(), "node processes exited: {exited:?}");
        for id in self.cluster.node_ids() {
            assert!(self.cluster.is_running(id), "node {id} is not running");
        }
    }
}

impl Deref for TestCluster {
    type Target = DevCluster;

    fn deref(&self) -> &DevCluster {
        &self.cluster
    }
}

impl DerefMut for TestCluster {
    fn deref_mut(&mut self) -> &mut DevCluster {
        &mut self.cluster
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        if failed {
            eprintln!(
                "=== test failed; cluster directory kept: {} ===\n{}",
                self.dir.display(),
                self.cluster.log_tails()
            );
        }
        if let Err(error) = self.cluster.shutdown() {
            eprintln!(
                "could not stop the cluster in {}: {error}",
                self.dir.display()
            );
        }
        if !failed {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The voters of `listing`, sorted, when its membership is committed, not
/// joint, and has no learner; `None` while a change is under way.
pub fn settled_voters(listing: &MemberListResponse) -> Option<Vec<u64>> {
    let membership = listing.membership.clone().unwrap_or_default();
    let settled = listing.committed
        && membership.voters_outgoing.is_empty()
        && membership.learners.is_empty();
    let mut voters = membership.voters;
    voters.sort_unstable();
    settled.then_some(voters)
}

/// Every pair under `prefix`, read linearizably through the cluster.
pub async fn read_prefix(client: &Client, prefix: &str) -> BTreeMap<String, String> {
    let range = client
        .range(prefix, 10_000, ReadMode::Linearizable)
        .await
        .unwrap_or_else(|error| panic!("range {prefix}: {error}"));
    assert!(!range.more, "range {prefix} was truncated");
    range
        .kvs
        .into_iter()
        .map(|pair| {
            (
                String::from_utf8(pair.key).expect("utf-8 key"),
                String::from_utf8(pair.value).expect("utf-8 value"),
            )
        })
        .collect()
}

/// Asserts that `stored` holds `prefix{i:04}` = `value-{i}` for every `i`
/// in `written` (the keys [`BackgroundWriter`] writes).
pub fn assert_present(stored: &BTreeMap<String, String>, prefix: &str, written: &[usize]) {
    for i in written {
        let key = format!("{prefix}{i:04}");
        assert_eq!(
            stored.get(&key).map(String::as_str),
            Some(format!("value-{i}").as_str()),
            "acknowledged write {key} is missing or wrong"
        );
    }
}

/// Writes `count` keys `prefix{i:04}` = `value-{i}` one after another and
/// asserts each is acknowledged; returns the highest log index.
pub async fn write_keys(client: &Client, prefix: &str, count: usize) -> u64 {
    let mut index = 0;
    for i in 0..count {
        let put = client
            .put(format!("{prefix}{i:04}"), format!("value-{i}"))
            .await
            .unwrap_or_else(|error: ClientError| {
                panic!("write {prefix}{i:04} was not acknowledged: {error}")
            });
        index = index.max(put.index);
    }
    index
}

fn status_client(cluster: &DevCluster, cluster_options: &DevClusterOptions) -> Client {
    let tls = cluster_options.tls.as_ref().map(|tls| {
        tls.client_tls()
            .expect("the cluster's client certificate files")
    });
    let options = ClientOptions {
        request_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_millis(500),
        tls,
        ..ClientOptions::default()
    };
    Client::with_options(cluster.addresses(), options).expect("a status client")
}

/// A new, empty directory under the system temp dir, unique to this
/// process and moment.
pub fn fresh_dir(name: &str) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "raftgres-e2e-{name}-{}-{nanos}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating the test directory");
    dir
}

async fn channel(address: &str) -> Channel {
    match try_channel(address, None).await {
        Ok(channel) => channel,
        Err(error) => panic!("cannot connect to {address}: {error}"),
    }
}

/// A raw channel to the one node at `address`, over TLS when `tls` is
/// given; the error of a refused handshake is returned, not a panic.
pub async fn try_channel(
    address: &str,
    tls: Option<ClientTlsConfig>,
) -> Result<Channel, tonic::transport::Error> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{address}"))
        .expect("a valid address")
        .connect_timeout(Duration::from_secs(2))
        .timeout(RAW_REQUEST_TIMEOUT);
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls)?;
    }
    endpoint.connect().await
}

/// A raw `Kv` client of the one node at `address`.
pub async fn kv_client(address: &str) -> KvClient<Channel> {
    KvClient::new(channel(address).await)
}

/// A raw `Client` (Submit) client of the one node at `address`, accepting
/// messages up to 8 MiB so that oversized commands reach the node.
pub async fn submit_client(address: &str) -> ClientClient<Channel> {
    ClientClient::new(channel(address).await).max_encoding_message_size(8 << 20)
}

/// A raw `Peer` client of the one node at `address`.
pub async fn peer_client(address: &str) -> PeerClient<Channel> {
    PeerClient::new(channel(address).await)
}

/// Asserts that `result` is an error with `code`; returns the status.
pub fn expect_code<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: Code,
    context: &str,
) -> Status {
    match result {
        Ok(answer) => panic!("{context}: expected {code:?}, got a success: {answer:?}"),
        Err(status) => {
            assert_eq!(
                status.code(),
                code,
                "{context}: expected {code:?}, got {:?}: {}",
                status.code(),
                status.message()
            );
            status
        }
    }
}

/// Runs `future` with a time bound; panics naming `what` when it expires.
pub async fn bounded<T>(what: &str, limit: Duration, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what} did not finish within {limit:?}"),
    }
}

/// What a [`BackgroundWriter`] saw.
#[derive(Debug, Default)]
pub struct WriterOutcome {
    /// Write numbers the cluster acknowledged.
    pub acknowledged: Vec<usize>,
    /// Write numbers that failed (outcome unknown), with the error.
    pub failed: Vec<(usize, String)>,
    /// Slowest single write.
    pub latency_max: Duration,
}

/// A background task that writes `{prefix}{i:04}` = `value-{i}` one after
/// another until stopped, bounded by `writes_max` writes and `time_max`.
pub struct BackgroundWriter {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    acknowledged: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<WriterOutcome>,
}

impl BackgroundWriter {
    /// Starts writing through `client`, pausing `pause` between writes.
    pub fn start(
        client: Client,
        prefix: &str,
        writes_max: usize,
        time_max: Duration,
        pause: Duration,
    ) -> BackgroundWriter {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let acknowledged = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (task_stop, task_acknowledged, prefix) =
            (stop.clone(), acknowledged.clone(), prefix.to_string());
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut outcome = WriterOutcome::default();
            for i in 0..writes_max {
                if task_stop.load(Ordering::SeqCst) || started.elapsed() > time_max {
                    break;
                }
                let sent = Instant::now();
                match client
                    .put(format!("{prefix}{i:04}"), format!("value-{i}"))
                    .await
                {
                    Ok(_) => {
                        outcome.acknowledged.push(i);
                        task_acknowledged.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(error) => outcome.failed.push((i, error.to_string())),
                }
                outcome.latency_max = outcome.latency_max.max(sent.elapsed());
                tokio::time::sleep(pause).await;
            }
            outcome
        });
        BackgroundWriter {
            stop,
            acknowledged,
            task,
        }
    }

    /// Writes acknowledged so far.
    pub fn acknowledged(&self) -> usize {
        self.acknowledged.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits until `more` further writes are acknowledged (bounded by
    /// [`WAIT_MAX`]); panics naming `what` if they stall.
    pub async fn wait_for_writes(&self, more: usize, what: &str) {
        let target = self.acknowledged() + more;
        let deadline = Instant::now() + WAIT_MAX;
        while self.acknowledged() < target {
            assert!(
                Instant::now() < deadline,
                "writes stalled {what}: fewer than {more} acknowledged in {WAIT_MAX:?}"
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Stops the writer and returns what it saw.
    pub async fn finish(self) -> WriterOutcome {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.task.await.expect("the background writer panicked")
    }
}
