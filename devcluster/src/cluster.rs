//! Local development clusters: N `raftgres serve` processes, each with its
//! own Postgres instance, all on 127.0.0.1. Used by `raftgres dev up`,
//! `make run` and the end-to-end tests.
//!
//! Everything lives in one directory:
//!
//! ```text
//! DIR/pg-N/        node N's Postgres data directory (fsync on)
//! DIR/node-N.toml  node N's config, rewritten at every start
//! DIR/node-N.log   node N's output (appended across restarts)
//! DIR/node-N.pid   node N's process id while it runs
//! DIR/endpoints    every node's gRPC address, comma-separated (the
//!                  `raftgres` client commands read `.dev/endpoints` when
//!                  given no `--endpoints`)
//! DIR/cluster.json the nodes as `raftgres dev up --detach` printed them
//! ```
//!
//! Starting a cluster on a directory that already holds one reuses its data
//! and, when they are still free, its ports, so a full-cluster restart comes
//! back with the same addresses and the same log.
//!
//! Processes that a `DevCluster` did not spawn itself but that run one of
//! its configs (`raftgres dev start-node`) are found through the pid files
//! and treated as its own: they are counted as live and stopped with it.
//!
//! A running cluster can grow and shrink: [`DevCluster::add_node`] gives a
//! new node (the next id) a Postgres of its own and a config with `join =
//! true`, adds it to the membership as a learner and starts it;
//! [`DevCluster::forget_node`] stops a node removed from the membership
//! and its Postgres and drops it from the cluster's addresses. Their files
//! stay in the directory, which [`DevCluster::start`] then no longer
//! restarts (it restarts the nodes 1..=N it was started with, only).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::postgres::{self, PgInstance, PgInstanceError, PgInstanceOptions};

use raftgres::client::{Client, ClientError, ClientOptions, ClientTls, Role, StatusResponse};
use raftgres::server::config::ConfigError;
use raftgres::server::NodeConfig;

/// The first of the gRPC ports dev clusters used to take (node N on 7000 +
/// N); `raftgres dev up` now picks free ports unless given
/// `--grpc-port-first`.
pub const DEFAULT_GRPC_PORT_FIRST: u16 = 7001;
/// First metrics port `raftgres dev up` tries.
pub const DEFAULT_METRICS_PORT_FIRST: u16 = 9101;
/// Largest cluster a `DevCluster` starts: each node brings its own
/// Postgres, and a laptop runs out of memory long before Raft cares.
pub const NODES_MAX: usize = 9;
/// Lines of each node log quoted in errors.
const LOG_TAIL_LINES: usize = 20;
/// How often the cluster is polled while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Why a dev cluster operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// A file or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The options or the directory's contents do not fit together.
    #[error("{0}")]
    Invalid(String),
    /// A node's Postgres could not be started or controlled.
    #[error("postgres of node {node}: {source}")]
    Postgres {
        /// The node.
        node: u64,
        /// What went wrong.
        #[source]
        source: PgInstanceError,
    },
    /// A config written for a node does not validate (a bug in this
    /// module, or bad extra settings).
    #[error("config {path}: {source}")]
    NodeConfig {
        /// The config file.
        path: PathBuf,
        /// The validation error.
        #[source]
        source: ConfigError,
    },
    /// A node process exited while it was expected to run.
    #[error("node {node} exited ({status}); see {log_path}:\n{log_tail}")]
    NodeExited {
        /// The node.
        node: u64,
        /// Its exit status.
        status: String,
        /// Its log file.
        log_path: String,
        /// The end of its log.
        log_tail: String,
    },
    /// A node process is already running.
    #[error("node {node} is already running (pid {pid}); stop it first (`raftgres dev down --dir {dir}`)")]
    AlreadyRunning {
        /// The node.
        node: u64,
        /// Its process id.
        pid: u32,
        /// The cluster directory.
        dir: String,
    },
    /// A node process is not running.
    #[error("node {node} is not running")]
    NotRunning {
        /// The node.
        node: u64,
    },
    /// No leader emerged in time.
    #[error("no leader agreed on by every live node within {timeout:?}\n--- statuses ---\n{statuses}\n{log_tails}")]
    NoLeader {
        /// How long we waited.
        timeout: Duration,
        /// What each node last said.
        statuses: String,
        /// The end of every node log.
        log_tails: String,
    },
    /// A client could not be built.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The cluster refused, or did not answer, a change of its membership.
    #[error("cannot add node {node} to the cluster's membership: {source}")]
    AddMember {
        /// The node being added.
        node: u64,
        /// What the cluster said.
        #[source]
        source: ClientError,
    },
}

/// How to start a [`DevCluster`].
#[derive(Clone, Debug)]
pub struct DevClusterOptions {
    /// Number of voters (1..=[`NODES_MAX`]); ids are 1..=nodes.
    pub nodes: usize,
    /// The `raftgres` binary to run (see [`find_raftgres_binary`]).
    pub binary: PathBuf,
    /// The cluster id written into every config.
    pub cluster_id: String,
    /// Length of a core tick in milliseconds (`raft.tick_ms`).
    pub tick_ms: u64,
    /// Give node N gRPC port `grpc_port_first + N - 1` when it is free; a
    /// free port otherwise. `None` (the default, safe for tests running in
    /// parallel) always picks free ports.
    pub grpc_port_first: Option<u16>,
    /// The same for the metrics endpoint.
    pub metrics_port_first: Option<u16>,
    /// `RUST_LOG` for the nodes; `None` passes on this process's `RUST_LOG`,
    /// or `info` when unset.
    pub log_filter: Option<String>,
    /// Extra `[raft]` settings as (name, TOML literal), e.g.
    /// `("election_ticks_min", "10")`.
    pub raft_extra: Vec<(String, String)>,
    /// Extra `[limits]` settings as (name, TOML literal).
    pub limits_extra: Vec<(String, String)>,
    /// How long [`DevCluster::start`] waits for a leader.
    pub leader_timeout: Duration,
    /// How long a graceful stop waits before SIGKILL.
    pub stop_timeout: Duration,
    /// How long each Postgres may take to start (initdb included).
    pub postgres_start_timeout: Duration,
    /// TLS for every node (mutual between peers), from certificates the
    /// caller made; `None`: plain text on loopback.
    pub tls: Option<DevTls>,
    /// Serve the peer API on a port of its own (`peer_listen_addr`), apart
    /// from the clients' port.
    pub separate_peer_listener: bool,
    /// Rewrites the peer address of every node as the other nodes see it
    /// (in their configs and in `member add`), so that a proxy can stand
    /// in front of each node (the nemesis suite's fault-injecting proxies).
    /// `None`: nodes reach each other directly.
    pub peer_address_map: Option<PeerAddressMap>,
    /// Each node makes its peer connections from an address of its own,
    /// [`peer_source_address`] (`peer_source_addr` in its config), so that
    /// a proxy in front of a node can tell who is calling.
    pub distinct_peer_sources: bool,
}

/// One node as its peers see it: node `node` listens for peers at
/// `address`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerTarget<'a> {
    /// The node.
    pub node: u64,
    /// Where it really listens for peers.
    pub address: &'a str,
}

/// Maps each [`PeerTarget`] to the address its peers are given for it.
/// Called at every (re)start of the cluster for every node, and when a
/// node is added; a node's own config entry is never mapped.
#[derive(Clone)]
pub struct PeerAddressMap(pub std::sync::Arc<dyn Fn(PeerTarget<'_>) -> String + Send + Sync>);

/// The loopback address node `id` makes its peer connections from in a
/// cluster with [`DevClusterOptions::distinct_peer_sources`]: 127.1.0.0
/// plus the id (every 127/8 address is the loopback interface's).
pub fn peer_source_address(id: u64) -> std::net::Ipv4Addr {
    let id = u32::try_from(id).unwrap_or(u32::MAX).min(0xffff);
    std::net::Ipv4Addr::from(0x7f01_0000 + id)
}

/// The node whose [`peer_source_address`] `address` is, if it is one.
pub fn peer_source_node(address: std::net::IpAddr) -> Option<u64> {
    let std::net::IpAddr::V4(address) = address else {
        return None;
    };
    let bits = u32::from(address);
    (bits >> 16 == 0x7f01).then_some(u64::from(bits & 0xffff))
}

impl std::fmt::Debug for PeerAddressMap {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("PeerAddressMap(..)")
    }
}

/// Certificates for a TLS dev cluster, in one directory: `ca.pem`, the CA;
/// `node-N.pem` and `node-N.key` for node N (naming `raftgres-node-N` and
/// the loopback address); `client.pem` and `client.key`, a client
/// certificate the cluster's own clients present.
#[derive(Clone, Debug)]
pub struct DevTls {
    /// The directory holding the files.
    pub dir: PathBuf,
    /// `tls.require_client_certificate` of every node.
    pub require_client_certificate: bool,
}

impl DevTls {
    /// The client side: trust the CA, present `client.pem`.
    pub fn client_tls(&self) -> Result<ClientTls, ClientError> {
        let certificate = self.dir.join("client.pem");
        let key = self.dir.join("client.key");
        ClientTls::from_files(
            &self.dir.join("ca.pem"),
            Some((certificate.as_path(), key.as_path())),
        )
    }
}

impl DevClusterOptions {
    /// Defaults for `nodes` nodes running `binary`: cluster id `dev`, 50 ms
    /// ticks, free ports, a 60 s leader timeout.
    pub fn new(nodes: usize, binary: impl Into<PathBuf>) -> DevClusterOptions {
        DevClusterOptions {
            nodes,
            binary: binary.into(),
            cluster_id: "dev".to_string(),
            tick_ms: 50,
            grpc_port_first: None,
            metrics_port_first: None,
            log_filter: None,
            raft_extra: Vec::new(),
            limits_extra: Vec::new(),
            leader_timeout: Duration::from_secs(60),
            stop_timeout: Duration::from_secs(10),
            postgres_start_timeout: Duration::from_secs(60),
            tls: None,
            separate_peer_listener: false,
            peer_address_map: None,
            distinct_peer_sources: false,
        }
    }

    fn validate(&self) -> Result<(), DevError> {
        if self.nodes == 0 || self.nodes > NODES_MAX {
            return Err(DevError::Invalid(format!(
                "nodes must be between 1 and {NODES_MAX}, not {}",
                self.nodes
            )));
        }
        if self.tick_ms == 0 {
            return Err(DevError::Invalid("tick_ms must be at least 1".into()));
        }
        if !self.binary.is_file() {
            return Err(DevError::Invalid(format!(
                "the raftgres binary {} does not exist; build it with `cargo build -p raftgres-cli`",
                self.binary.display()
            )));
        }
        Ok(())
    }
}

/// The raftgres binary to run nodes with: `RAFTGRES_BIN` if set, else a
/// `raftgres` next to the running executable or one directory up (where it
/// sits relative to test binaries in `target/debug/deps`).
pub fn find_raftgres_binary() -> Result<PathBuf, DevError> {
    if let Some(path) = std::env::var_os("RAFTGRES_BIN") {
        return Ok(PathBuf::from(path));
    }
    let current = std::env::current_exe().map_err(|source| DevError::Io {
        context: "locating the running executable".into(),
        source,
    })?;
    let candidates = current
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join("raftgres"));
    for candidate in candidates {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(DevError::Invalid(format!(
        "no raftgres binary next to {}; build it with `cargo build -p raftgres-cli` or set RAFTGRES_BIN",
        current.display()
    )))
}

/// The files of a dev cluster directory.
#[derive(Clone, Debug)]
pub struct DevLayout {
    dir: PathBuf,
}

impl DevLayout {
    /// The layout of `dir` (made absolute, so that child processes and
    /// pid-file checks agree on paths).
    pub fn new(dir: &Path) -> Result<DevLayout, DevError> {
        let dir = std::path::absolute(dir).map_err(|source| DevError::Io {
            context: format!("resolving {}", dir.display()),
            source,
        })?;
        Ok(DevLayout { dir })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `DIR/node-N.toml`.
    pub fn config_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("node-{id}.toml"))
    }

    /// `DIR/node-N.log`.
    pub fn log_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("node-{id}.log"))
    }

    /// `DIR/node-N.pid`.
    pub fn pid_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("node-{id}.pid"))
    }

    /// `DIR/pg-N`.
    pub fn postgres_dir(&self, id: u64) -> PathBuf {
        self.dir.join(format!("pg-{id}"))
    }

    /// `DIR/endpoints`.
    pub fn endpoints_path(&self) -> PathBuf {
        self.dir.join("endpoints")
    }

    /// Ids of the nodes that have a config in the directory, ascending.
    pub fn configured_node_ids(&self) -> Result<Vec<u64>, DevError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(DevError::Io {
                    context: format!("listing {}", self.dir.display()),
                    source,
                })
            }
        };
        let mut ids: Vec<u64> = entries
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                name.strip_prefix("node-")?
                    .strip_suffix(".toml")?
                    .parse()
                    .ok()
            })
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// The pid of a live `raftgres serve` of node `id`'s config: the one
    /// its pid file names, else any found in /proc (a pid file can be
    /// stale, or lost when two processes manage one directory).
    pub fn running_pid(&self, id: u64) -> Option<u32> {
        let config = self.config_path(id).display().to_string();
        let from_file = fs::read_to_string(self.pid_path(id))
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok())
            .filter(|pid| serves_config(*pid, &config));
        from_file.or_else(|| {
            let processes = fs::read_dir("/proc").ok()?;
            processes
                .flatten()
                .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
                .find(|pid| serves_config(*pid, &config))
        })
    }

    /// Removes node `id`'s pid file if it still names `pid` (a newer
    /// process of the node may have replaced it).
    pub fn remove_pid_file(&self, id: u64, pid: u32) {
        let path = self.pid_path(id);
        let names_pid = fs::read_to_string(&path).is_ok_and(|text| text.trim() == pid.to_string());
        if names_pid {
            let _ = fs::remove_file(path);
        }
    }

    /// The last `lines` lines of node `id`'s log.
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        let text = fs::read_to_string(self.log_path(id)).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// One node as `raftgres dev up` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevNodeInfo {
    /// Node id.
    pub id: u64,
    /// gRPC address.
    pub address: String,
    /// Metrics address.
    pub metrics_address: String,
    /// Process id, when running.
    pub pid: Option<u32>,
    /// Port of its Postgres.
    pub postgres_port: u16,
    /// Its Postgres data directory.
    pub postgres_data_dir: PathBuf,
    /// Whether its Postgres runs.
    pub postgres_running: bool,
    /// Its log file.
    pub log_path: PathBuf,
}

/// The nodes of a dev cluster as one JSON object, for scripts:
/// `{"dir", "leader", "endpoints", "nodes": [{"id", "address",
/// "metrics_address", "pid", "log", "postgres": {"port", "data_dir",
/// "running", "conninfo"}}]}`. `leader` and a node's `pid` are `null` when
/// unknown or not running.
pub fn nodes_json(dir: &Path, leader: Option<u64>, nodes: &[DevNodeInfo]) -> String {
    let string = json_string;
    let path = |path: &Path| json_string(&path.display().to_string());
    let optional = |value: Option<u64>| value.map_or("null".to_string(), |value| value.to_string());
    let endpoints: Vec<String> = nodes.iter().map(|node| string(&node.address)).collect();
    let described: Vec<String> = nodes
        .iter()
        .map(|node| {
            format!(
                "{{\"id\": {}, \"address\": {}, \"metrics_address\": {}, \"pid\": {}, \"log\": {}, \"postgres\": {{\"port\": {}, \"data_dir\": {}, \"running\": {}, \"conninfo\": {}}}}}",
                node.id,
                string(&node.address),
                string(&node.metrics_address),
                optional(node.pid.map(u64::from)),
                path(&node.log_path),
                node.postgres_port,
                path(&node.postgres_data_dir),
                node.postgres_running,
                string(&format!(
                    "host={} port={} user=postgres dbname=postgres",
                    postgres::HOST,
                    node.postgres_port
                )),
            )
        })
        .collect();
    format!(
        "{{\"dir\": {}, \"leader\": {}, \"endpoints\": [{}], \"nodes\": [{}]}}",
        path(dir),
        optional(leader),
        endpoints.join(", "),
        described.join(", ")
    )
}

struct DevNode {
    address: String,
    /// Where peers reach it, when it is not `address`.
    peer_address: Option<String>,
    metrics_address: String,
    postgres: PgInstance,
    /// The process this value spawned, until it is reaped.
    child: Option<Child>,
}

/// A running local cluster. Dropping it stops every process and Postgres
/// it started (see [`DevCluster::shutdown`]).
pub struct DevCluster {
    layout: DevLayout,
    options: DevClusterOptions,
    nodes: BTreeMap<u64, DevNode>,
    /// Asks single nodes for their status (no retries, short timeouts).
    status_client: Client,
    shut_down: bool,
}

impl std::fmt::Debug for DevCluster {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("DevCluster")
            .field("dir", &self.layout.dir)
            .field("addresses", &self.addresses())
            .finish()
    }
}

/// Ports a node had in an earlier config (or the ones it should get).
#[derive(Clone, Copy, Debug, Default)]
struct PreviousPorts {
    grpc: Option<u16>,
    peer: Option<u16>,
    metrics: Option<u16>,
    postgres: Option<u16>,
}

impl DevNode {
    /// A node not started yet on `postgres`, its gRPC, metrics and (with
    /// a separate peer listener) peer ports the `wanted` ones when free,
    /// else free ones not in `taken`, which then holds them.
    fn on_free_ports(
        postgres: PgInstance,
        wanted: PreviousPorts,
        options: &DevClusterOptions,
        taken: &mut BTreeSet<u16>,
    ) -> Result<DevNode, DevError> {
        let grpc = pick_port(wanted.grpc, taken)?;
        let metrics = pick_port(wanted.metrics, taken)?;
        let peer_address = if options.separate_peer_listener {
            let port = pick_port(wanted.peer, taken)?;
            Some(format!("{}:{port}", postgres::HOST))
        } else {
            None
        };
        Ok(DevNode {
            address: format!("{}:{grpc}", postgres::HOST),
            peer_address,
            metrics_address: format!("{}:{metrics}", postgres::HOST),
            postgres,
            child: None,
        })
    }
}

impl DevCluster {
    /// Starts (or restarts, on a directory that holds one) a cluster in
    /// `dir` and waits until it has a leader.
    pub async fn start(dir: &Path, options: DevClusterOptions) -> Result<DevCluster, DevError> {
        options.validate()?;
        let layout = DevLayout::new(dir)?;
        fs::create_dir_all(layout.dir()).map_err(|source| DevError::Io {
            context: format!("creating {}", layout.dir().display()),
            source,
        })?;
        let previous = previous_ports(&layout, options.nodes)?;
        for id in node_ids(options.nodes) {
            if let Some(pid) = layout.running_pid(id) {
                return Err(DevError::AlreadyRunning {
                    node: id,
                    pid,
                    dir: layout.dir().display().to_string(),
                });
            }
        }
        let postgres = start_postgres_instances(&layout, &options, &previous).await?;
        let mut taken: BTreeSet<u16> = postgres.values().map(PgInstance::port).collect();
        let mut nodes = BTreeMap::new();
        for (id, instance) in postgres {
            let ports = previous.get(&id).copied().unwrap_or_default();
            let preferred = |first: Option<u16>| {
                first.and_then(|first| first.checked_add(u16::try_from(id - 1).ok()?))
            };
            let wanted = PreviousPorts {
                grpc: ports.grpc.or(preferred(options.grpc_port_first)),
                metrics: ports.metrics.or(preferred(options.metrics_port_first)),
                ..ports
            };
            let node = DevNode::on_free_ports(instance, wanted, &options, &mut taken)?;
            nodes.insert(id, node);
        }
        let addresses: Vec<String> = nodes.values().map(|node| node.address.clone()).collect();
        let status_options = ClientOptions {
            request_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_millis(500),
            tls: options.tls.as_ref().map(DevTls::client_tls).transpose()?,
            ..ClientOptions::default()
        };
        let mut cluster = DevCluster {
            status_client: Client::with_options(addresses.clone(), status_options)?,
            layout,
            options,
            nodes,
            shut_down: false,
        };
        cluster.write_configs()?;
        write_file(
            &cluster.layout.endpoints_path(),
            &format!("{}\n", addresses.join(",")),
        )?;
        for id in cluster.node_ids() {
            cluster.start_node(id)?;
        }
        // On error `cluster` is dropped here, which stops what was started.
        cluster
            .wait_for_leader_or_exit(cluster.options.leader_timeout, true)
            .await?;
        Ok(cluster)
    }

    /// The cluster directory.
    pub fn dir(&self) -> &Path {
        self.layout.dir()
    }

    /// The directory's file layout.
    pub fn layout(&self) -> &DevLayout {
        &self.layout
    }

    /// Node ids, ascending: 1..=nodes, then those added since (less those
    /// forgotten).
    pub fn node_ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// Every node's gRPC address, by node id.
    pub fn addresses(&self) -> Vec<String> {
        self.nodes
            .values()
            .map(|node| node.address.clone())
            .collect()
    }

    /// Node `id`'s gRPC address. Panics if `id` is not a node of this
    /// cluster (as do the other accessors taking an id).
    pub fn node_address(&self, id: u64) -> &str {
        &self.node(id).address
    }

    /// Node `id`'s peer API address (its gRPC address unless the cluster
    /// runs with separate peer listeners).
    pub fn peer_address(&self, id: u64) -> &str {
        let node = self.node(id);
        node.peer_address.as_deref().unwrap_or(&node.address)
    }

    /// Node `id`'s metrics address.
    pub fn metrics_address(&self, id: u64) -> &str {
        &self.node(id).metrics_address
    }

    /// Node `id`'s config file.
    pub fn config_path(&self, id: u64) -> PathBuf {
        self.node(id);
        self.layout.config_path(id)
    }

    /// Node `id`'s log file.
    pub fn log_path(&self, id: u64) -> PathBuf {
        self.node(id);
        self.layout.log_path(id)
    }

    /// Node `id`'s Postgres, to kill, stop or restart it under the node.
    pub fn postgres(&mut self, id: u64) -> &mut PgInstance {
        &mut self.node_mut(id).postgres
    }

    /// A client of every node, with default options (and the cluster's
    /// client certificate when it runs TLS).
    pub fn client(&self) -> Result<Client, ClientError> {
        let options = ClientOptions {
            tls: self
                .options
                .tls
                .as_ref()
                .map(DevTls::client_tls)
                .transpose()?,
            ..ClientOptions::default()
        };
        Client::with_options(self.addresses(), options)
    }

    /// Node `id`'s process id, if it runs.
    pub fn pid(&mut self, id: u64) -> Option<u32> {
        let node = self
            .nodes
            .get_mut(&id)
            .unwrap_or_else(|| panic!("node {id} is not in this dev cluster"));
        if let Some(child) = &mut node.child {
            if matches!(child.try_wait(), Ok(None)) {
                return Some(child.id());
            }
            node.child = None;
        }
        self.layout.running_pid(id)
    }

    /// Whether node `id`'s process runs.
    pub fn is_running(&mut self, id: u64) -> bool {
        self.pid(id).is_some()
    }

    /// Every node, for display.
    pub fn nodes(&mut self) -> Vec<DevNodeInfo> {
        self.node_ids()
            .into_iter()
            .map(|id| DevNodeInfo {
                id,
                address: self.node(id).address.clone(),
                metrics_address: self.node(id).metrics_address.clone(),
                pid: self.pid(id),
                postgres_port: self.node(id).postgres.port(),
                postgres_data_dir: self.layout.postgres_dir(id),
                postgres_running: self.layout.postgres_dir(id).join("postmaster.pid").exists(),
                log_path: self.layout.log_path(id),
            })
            .collect()
    }

    /// Reaps the processes this value spawned that have exited, returning
    /// each one's id and exit status.
    pub fn reap_exited(&mut self) -> Vec<(u64, String)> {
        let mut exited = Vec::new();
        for (id, node) in &mut self.nodes {
            if let Some(child) = &mut node.child {
                if let Ok(Some(status)) = child.try_wait() {
                    exited.push((*id, status.to_string()));
                    self.layout.remove_pid_file(*id, child.id());
                    node.child = None;
                }
            }
        }
        exited
    }

    /// Starts node `id`'s process on its existing config and data. Returns
    /// at once; use [`DevCluster::wait_for_leader`] to wait for it to join.
    pub fn start_node(&mut self, id: u64) -> Result<u32, DevError> {
        if let Some(pid) = self.pid(id) {
            return Err(DevError::AlreadyRunning {
                node: id,
                pid,
                dir: self.layout.dir().display().to_string(),
            });
        }
        self.free_metrics_port(id)?;
        let child = spawn_node(
            &self.layout,
            id,
            &self.options.binary,
            self.options.log_filter.as_deref(),
        )?;
        let pid = child.id();
        self.node_mut(id).child = Some(child);
        Ok(pid)
    }

    /// Moves node `id`'s metrics endpoint to a free port when another
    /// process took its port while the node was down (see
    /// [`move_taken_metrics_port`]).
    fn free_metrics_port(&mut self, id: u64) -> Result<(), DevError> {
        let address = self.node(id).metrics_address.clone();
        let path = self.layout.config_path(id);
        if let Some(moved) = move_taken_metrics_port(&path, &address, self.ports_in_use())? {
            self.node_mut(id).metrics_address = moved;
        }
        Ok(())
    }

    /// Kills node `id`'s process with SIGKILL, as a crash would, and waits
    /// until it is gone.
    pub fn kill_node(&mut self, id: u64) -> Result<(), DevError> {
        let pid = self.pid(id).ok_or(DevError::NotRunning { node: id })?;
        send_signal(pid, "KILL")?;
        let deadline = Instant::now() + self.options.stop_timeout;
        while self.pid(id).is_some() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.layout.remove_pid_file(id, pid);
        Ok(())
    }

    /// Sends SIGTERM to node `id` and waits for it to exit (SIGKILL after
    /// the stop timeout). Returns whether it exited by itself in time.
    pub async fn stop_node_gracefully(&mut self, id: u64) -> Result<bool, DevError> {
        let pid = self.pid(id).ok_or(DevError::NotRunning { node: id })?;
        send_signal(pid, "TERM")?;
        let deadline = Instant::now() + self.options.stop_timeout;
        while self.pid(id).is_some() {
            if Instant::now() >= deadline {
                tracing::warn!(node = id, pid, "node did not stop in time; killing it");
                self.kill_node(id)?;
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.layout.remove_pid_file(id, pid);
        Ok(true)
    }

    /// Adds a node to this running cluster and starts it: prepares it
    /// ([`DevCluster::prepare_node`]), asks the leader to add it as a
    /// learner at its peer address, then starts its process, which joins
    /// and receives the log (snapshot or entries). Returns its id, at once:
    /// promote it with [`Client::member_promote`] once it has caught up.
    ///
    /// The membership holds one address per node, so the other nodes reach
    /// the new one directly even when the options map peer addresses
    /// through proxies (its own links to them go through the map).
    pub async fn add_node(&mut self) -> Result<u64, DevError> {
        let id = self.prepare_node().await?;
        let address = self.advertised_peer_address(id);
        let added = match self.client() {
            Ok(client) => client.member_add(id, address).await,
            Err(error) => Err(error),
        };
        if let Err(source) = added {
            // Best effort: the error to report is the refusal.
            let _ = self.forget_node(id).await;
            return Err(DevError::AddMember { node: id, source });
        }
        tracing::info!(node = id, "added a learner to the dev cluster");
        self.start_node(id)?;
        Ok(id)
    }

    /// Prepares a node to join this running cluster without adding it to
    /// the membership or starting it: the next node id (above every id
    /// this directory has held), a fresh Postgres of its own, free ports,
    /// and a config with `join = true` whose peers are this cluster's
    /// nodes and itself. From here on every helper knows it (addresses,
    /// statuses, logs, shutdown, `DIR/endpoints`). Started without being
    /// added, the node exits saying so; [`DevCluster::add_node`] does both.
    /// With TLS, the certificate directory must hold the new node's
    /// `node-N.pem` and `node-N.key`.
    pub async fn prepare_node(&mut self) -> Result<u64, DevError> {
        if self.nodes.len() >= NODES_MAX {
            return Err(DevError::Invalid(format!(
                "a dev cluster runs at most {NODES_MAX} nodes"
            )));
        }
        let id = self.next_node_id()?;
        if let Some(tls) = &self.options.tls {
            let certificate = tls.dir.join(format!("node-{id}.pem"));
            if !certificate.is_file() || !tls.dir.join(format!("node-{id}.key")).is_file() {
                return Err(DevError::Invalid(format!(
                    "{} holds no certificate for node {id} (node-{id}.pem and node-{id}.key); \
                     make them before adding the node",
                    tls.dir.display()
                )));
            }
        }
        let mut postgres_options = PgInstanceOptions::new(self.layout.postgres_dir(id));
        postgres_options.start_timeout = self.options.postgres_start_timeout;
        let postgres = tokio::task::spawn_blocking(move || PgInstance::start(postgres_options))
            .await
            .unwrap_or_else(|error| std::panic::resume_unwind(error.into_panic()))
            .map_err(|source| DevError::Postgres { node: id, source })?;
        let mut taken = self.ports_in_use();
        taken.insert(postgres.port());
        let node = DevNode::on_free_ports(
            postgres,
            PreviousPorts::default(),
            &self.options,
            &mut taken,
        )?;
        self.nodes.insert(id, node);
        let written = self.write_config(id, true);
        if let Err(error) = written {
            // Dropping the node stops its Postgres.
            self.nodes.remove(&id);
            return Err(error);
        }
        self.write_directory_files().await?;
        tracing::info!(node = id, address = %self.node_address(id), "prepared a node to join the dev cluster");
        Ok(id)
    }

    /// Stops node `id`'s process if it runs (SIGTERM, SIGKILL after the
    /// stop timeout) and then its Postgres, and drops it from this cluster:
    /// helpers no longer list, ask or stop it, and `DIR/endpoints` no
    /// longer names it. Its config, log and data stay in the directory.
    /// For a node removed from the membership (a removed node that kept
    /// running would never agree with the others on a leader) or one that
    /// was never added.
    pub async fn forget_node(&mut self, id: u64) -> Result<(), DevError> {
        if self.is_running(id) {
            self.stop_node_gracefully(id).await?;
        }
        let mut node = self
            .nodes
            .remove(&id)
            .unwrap_or_else(|| panic!("node {id} is not in this dev cluster"));
        let stopped = tokio::task::spawn_blocking(move || node.postgres.stop())
            .await
            .unwrap_or_else(|error| std::panic::resume_unwind(error.into_panic()));
        self.write_directory_files().await?;
        tracing::info!(node = id, "forgot a node of the dev cluster");
        stopped.map_err(|source| DevError::Postgres { node: id, source })
    }

    /// One more than every node id this directory has held: a config's,
    /// a Postgres data directory's, or a node's of this cluster.
    fn next_node_id(&self) -> Result<u64, DevError> {
        let configured = self.layout.configured_node_ids()?;
        let highest = configured
            .into_iter()
            .chain(self.nodes.keys().copied())
            .max()
            .unwrap_or(0);
        let mut id = highest + 1;
        // Bounded: each data directory found skips one id, and a directory
        // holds finitely many.
        while self.layout.postgres_dir(id).exists() {
            id += 1;
        }
        Ok(id)
    }

    /// What every running node says about itself, by node id.
    pub async fn statuses(&mut self) -> Vec<(u64, Result<StatusResponse, ClientError>)> {
        let mut live: Vec<(u64, String)> = Vec::new();
        for id in self.node_ids() {
            if self.is_running(id) {
                live.push((id, self.node(id).address.clone()));
            }
        }
        let client = &self.status_client;
        let answers = live
            .iter()
            .map(|(id, address)| async move { (*id, client.status(address).await) });
        futures::future::join_all(answers).await
    }

    /// The leader every running node agrees on (and that says it leads),
    /// or `None` while there is no such agreement.
    pub async fn leader(&mut self) -> Option<u64> {
        agreed_leader(&self.statuses().await)
    }

    /// Waits until [`DevCluster::leader`] returns a leader.
    pub async fn wait_for_leader(&mut self, timeout: Duration) -> Result<u64, DevError> {
        self.wait_for_leader_or_exit(timeout, false).await
    }

    async fn wait_for_leader_or_exit(
        &mut self,
        timeout: Duration,
        fail_on_exit: bool,
    ) -> Result<u64, DevError> {
        let deadline = Instant::now() + timeout;
        loop {
            if fail_on_exit {
                if let Some((node, status)) = self.reap_exited().into_iter().next() {
                    return Err(DevError::NodeExited {
                        node,
                        status,
                        log_path: self.layout.log_path(node).display().to_string(),
                        log_tail: self.layout.log_tail(node, LOG_TAIL_LINES),
                    });
                }
            }
            let statuses = self.statuses().await;
            if let Some(leader) = agreed_leader(&statuses) {
                tracing::info!(leader, dir = %self.layout.dir().display(), "dev cluster has a leader");
                return Ok(leader);
            }
            if Instant::now() >= deadline {
                return Err(DevError::NoLeader {
                    timeout,
                    statuses: describe_statuses(&statuses),
                    log_tails: self.log_tails(),
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// The end of every node log, for error messages.
    pub fn log_tails(&self) -> String {
        self.node_ids()
            .into_iter()
            .map(|id| {
                let path = self.layout.log_path(id);
                format!(
                    "--- {} (last {LOG_TAIL_LINES} lines) ---\n{}\n",
                    path.display(),
                    self.layout.log_tail(id, LOG_TAIL_LINES)
                )
            })
            .collect()
    }

    /// Stops every node (SIGTERM, SIGKILL after the stop timeout), then
    /// every Postgres. Safe to call twice; also run on drop.
    pub fn shutdown(&mut self) -> Result<(), DevError> {
        if self.shut_down {
            return Ok(());
        }
        self.shut_down = true;
        let mut first_error = None;
        let running: Vec<(u64, u32)> = self
            .node_ids()
            .into_iter()
            .filter_map(|id| self.pid(id).map(|pid| (id, pid)))
            .collect();
        for (_, pid) in &running {
            if let Err(error) = send_signal(*pid, "TERM") {
                first_error.get_or_insert(error);
            }
        }
        let deadline = Instant::now() + self.options.stop_timeout;
        for (id, pid) in running {
            while self.pid(id).is_some() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if self.pid(id).is_some() {
                tracing::warn!(node = id, pid, "node did not stop in time; killing it");
                if let Err(error) = self.kill_node(id) {
                    first_error.get_or_insert(error);
                }
            }
            self.layout.remove_pid_file(id, pid);
        }
        for (id, node) in &mut self.nodes {
            if let Err(source) = node.postgres.stop() {
                first_error.get_or_insert(DevError::Postgres { node: *id, source });
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Leaves every node process and Postgres running after this value is
    /// gone (`raftgres dev up --detach`); stop them with
    /// [`stop_directory`]. Returns the nodes as they were.
    pub fn detach(mut self) -> Vec<DevNodeInfo> {
        let nodes = self.nodes();
        self.shut_down = true;
        for (_, node) in std::mem::take(&mut self.nodes) {
            // Dropping a `Child` leaves its process running.
            node.postgres.detach();
        }
        nodes
    }

    fn node(&self, id: u64) -> &DevNode {
        self.nodes
            .get(&id)
            .unwrap_or_else(|| panic!("node {id} is not in this dev cluster"))
    }

    fn node_mut(&mut self, id: u64) -> &mut DevNode {
        self.nodes
            .get_mut(&id)
            .unwrap_or_else(|| panic!("node {id} is not in this dev cluster"))
    }

    fn write_configs(&self) -> Result<(), DevError> {
        for id in self.nodes.keys() {
            self.write_config(*id, false)?;
        }
        Ok(())
    }

    /// Writes node `id`'s config, naming every node of this cluster as a
    /// peer; with `join`, one that asks them to be let in instead of
    /// bootstrapping a membership.
    fn write_config(&self, id: u64, join: bool) -> Result<(), DevError> {
        let node = self.node(id);
        let peers = self.peers_as_seen_by(id);
        let peers: Vec<DevPeer<'_>> = peers
            .iter()
            .map(|(peer, address, client_address)| DevPeer {
                id: *peer,
                address,
                client_address: client_address.as_deref(),
            })
            .collect();
        let conninfo = node.postgres.conninfo();
        let endpoints = NodeEndpoints {
            address: &node.address,
            peer_address: node.peer_address.as_deref(),
            metrics_address: &node.metrics_address,
            postgres: &conninfo,
        };
        let text = config_text(&self.options, id, &endpoints, &peers, join);
        let path = self.layout.config_path(id);
        write_file(&path, &text)?;
        NodeConfig::from_file(&path).map_err(|source| DevError::NodeConfig { path, source })?;
        Ok(())
    }

    /// Rewrites `DIR/endpoints` (and `DIR/cluster.json`, when `raftgres dev
    /// up --detach` wrote one) to name the nodes this cluster has now.
    async fn write_directory_files(&mut self) -> Result<(), DevError> {
        write_file(
            &self.layout.endpoints_path(),
            &format!("{}\n", self.addresses().join(",")),
        )?;
        let cluster_json = self.layout.dir().join("cluster.json");
        if cluster_json.is_file() {
            let leader = self.leader().await;
            let nodes = self.nodes();
            let json = nodes_json(self.layout.dir(), leader, &nodes);
            write_file(&cluster_json, &format!("{json}\n"))?;
        }
        Ok(())
    }

    /// Every port this cluster's nodes and their Postgres servers use.
    fn ports_in_use(&self) -> BTreeSet<u16> {
        let port = |address: &str| address.rsplit_once(':')?.1.parse::<u16>().ok();
        let mut ports = BTreeSet::new();
        for node in self.nodes.values() {
            let addresses = [
                Some(node.address.as_str()),
                node.peer_address.as_deref(),
                Some(node.metrics_address.as_str()),
            ];
            ports.extend(addresses.into_iter().flatten().filter_map(port));
            ports.insert(node.postgres.port());
        }
        ports
    }

    /// The `[[peer]]` entries of node `from`'s config as (id, peer address,
    /// client address): peer addresses go through the options' map when
    /// there is one, and then the client address is always written so that
    /// leader hints send clients to the node itself, not to a proxy.
    fn peers_as_seen_by(&self, from: u64) -> Vec<(u64, String, Option<String>)> {
        self.nodes
            .iter()
            .map(|(id, node)| {
                let address = node.peer_address.as_deref().unwrap_or(&node.address);
                match &self.options.peer_address_map {
                    Some(_) if *id != from => (
                        *id,
                        self.advertised_peer_address(*id),
                        Some(node.address.clone()),
                    ),
                    _ => (
                        *id,
                        address.to_string(),
                        node.peer_address.as_ref().map(|_| node.address.clone()),
                    ),
                }
            })
            .collect()
    }

    /// The address node `id`'s peers are given for it: its peer address,
    /// through the options' map when there is one.
    fn advertised_peer_address(&self, id: u64) -> String {
        let address = self.peer_address(id);
        match &self.options.peer_address_map {
            Some(map) => (map.0)(PeerTarget { node: id, address }),
            None => address.to_string(),
        }
    }
}

impl Drop for DevCluster {
    fn drop(&mut self) {
        if let Err(error) = self.shutdown() {
            tracing::warn!(%error, dir = %self.layout.dir().display(), "could not stop the dev cluster cleanly");
        }
    }
}

/// Spawns `raftgres serve` for node `id` of the cluster in `dir` on its
/// existing config (its Postgres must already run), records its pid, and
/// leaves it running: `raftgres dev start-node`.
pub fn start_node_process(
    dir: &Path,
    id: u64,
    binary: &Path,
    log_filter: Option<&str>,
) -> Result<u32, DevError> {
    let layout = DevLayout::new(dir)?;
    if !layout.config_path(id).is_file() {
        return Err(DevError::Invalid(format!(
            "{} does not exist: node {id} is not part of the dev cluster in {}",
            layout.config_path(id).display(),
            layout.dir().display()
        )));
    }
    if let Some(pid) = layout.running_pid(id) {
        return Err(DevError::AlreadyRunning {
            node: id,
            pid,
            dir: layout.dir().display().to_string(),
        });
    }
    let path = layout.config_path(id);
    let config =
        NodeConfig::from_file(&path).map_err(|source| DevError::NodeConfig { path, source })?;
    if let Some(metrics) = config.metrics_addr {
        let taken = configured_ports(&layout)?;
        move_taken_metrics_port(&layout.config_path(id), &metrics.to_string(), taken)?;
    }
    let child = spawn_node(&layout, id, binary, log_filter)?;
    Ok(child.id())
}

/// Moves the metrics endpoint `address` in the node config at `path` to a
/// free port not in `taken` when another process took its port while the
/// node was down (a node would refuse to start). Unlike the node's own
/// addresses, no other node names the metrics endpoint, so only its config
/// line changes. Returns the new address when it moved.
fn move_taken_metrics_port(
    path: &Path,
    address: &str,
    mut taken: BTreeSet<u16>,
) -> Result<Option<String>, DevError> {
    let port = address
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse::<u16>().ok());
    let Some(port) = port.filter(|port| !port_is_free(*port)) else {
        return Ok(None);
    };
    let text = fs::read_to_string(path).map_err(|source| DevError::Io {
        context: format!("reading {}", path.display()),
        source,
    })?;
    let quote = |text: &str| toml::Value::String(text.to_string()).to_string();
    let line = format!("metrics_addr = {}", quote(address));
    if !text.contains(&line) {
        return Ok(None);
    }
    taken.insert(port);
    let moved = format!("{}:{}", postgres::HOST, pick_port(None, &mut taken)?);
    let text = text.replace(&line, &format!("metrics_addr = {}", quote(&moved)));
    write_file(path, &text)?;
    Ok(Some(moved))
}

/// Every port the node configs in `layout` name: their gRPC, peer and
/// metrics ports and their Postgres servers'.
fn configured_ports(layout: &DevLayout) -> Result<BTreeSet<u16>, DevError> {
    let mut ports = BTreeSet::new();
    for id in layout.configured_node_ids()? {
        let path = layout.config_path(id);
        let config =
            NodeConfig::from_file(&path).map_err(|source| DevError::NodeConfig { path, source })?;
        ports.insert(config.listen_addr.port());
        ports.extend(config.peer_listen_addr.map(|address| address.port()));
        ports.extend(config.metrics_addr.map(|address| address.port()));
        ports.extend(postgres_port(&config.postgres));
    }
    Ok(ports)
}

/// The `port=` of a libpq connection string, if it names one.
fn postgres_port(conninfo: &str) -> Option<u16> {
    conninfo
        .split_whitespace()
        .find_map(|pair| pair.strip_prefix("port=")?.parse().ok())
}

/// `text` as a JSON string literal (for the CLI's `--json` outputs).
pub fn json_string(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for character in text.chars() {
        match character {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            control if u32::from(control) < 0x20 => {
                quoted.push_str(&format!("\\u{:04x}", u32::from(control)));
            }
            other => quoted.push(other),
        }
    }
    quoted.push('"');
    quoted
}

/// Stops node `id` of the cluster in `dir` (SIGTERM, SIGKILL after
/// `timeout`; with `kill`, SIGKILL at once, as a crash would):
/// `raftgres dev stop-node`. Returns the pid it stopped.
pub fn stop_node_process(
    dir: &Path,
    id: u64,
    timeout: Duration,
    kill: bool,
) -> Result<u32, DevError> {
    let layout = DevLayout::new(dir)?;
    let pid = layout
        .running_pid(id)
        .ok_or(DevError::NotRunning { node: id })?;
    send_signal(pid, if kill { "KILL" } else { "TERM" })?;
    let deadline = Instant::now() + timeout;
    while process_alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if process_alive(pid) {
        send_signal(pid, "KILL")?;
    }
    // The pid file is removed even after a SIGKILL, so it never names a
    // dead process (or, later, an unrelated one with the same pid).
    layout.remove_pid_file(id, pid);
    Ok(pid)
}

/// How `raftgres dev pg stop` stops a node's Postgres.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PostgresStop {
    /// `pg_ctl stop -m fast`: a clean shutdown with a checkpoint.
    Fast,
    /// `pg_ctl stop -m immediate`: every server process quits at once,
    /// nothing is flushed or checkpointed; the next start runs recovery.
    Immediate,
    /// SIGKILL of the postmaster, as a crash would; its backends notice
    /// and exit on their own.
    Kill,
}

/// Stops node `id`'s Postgres of the cluster in `dir` in `mode`: `raftgres
/// dev pg stop`. Start it again with [`start_postgres`].
pub fn stop_postgres(dir: &Path, id: u64, mode: PostgresStop) -> Result<(), DevError> {
    let layout = DevLayout::new(dir)?;
    let data_dir = layout.postgres_dir(id);
    let pid_file = data_dir.join("postmaster.pid");
    let postmaster = fs::read_to_string(&pid_file).ok().and_then(|text| {
        text.lines()
            .next()
            .and_then(|line| line.trim().parse::<u32>().ok())
    });
    let Some(postmaster) = postmaster.filter(|pid| process_alive(*pid)) else {
        return Err(DevError::Invalid(format!(
            "the Postgres of node {id} ({}) is not running",
            data_dir.display()
        )));
    };
    match mode {
        PostgresStop::Fast => PgInstance::stop_data_dir(&data_dir)
            .map_err(|source| DevError::Postgres { node: id, source }),
        PostgresStop::Immediate => pg_ctl_stop_immediate(&data_dir),
        PostgresStop::Kill => {
            send_signal(postmaster, "KILL")?;
            let deadline = Instant::now() + Duration::from_secs(10);
            while process_alive(postmaster) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(())
        }
    }
}

/// `pg_ctl stop -m immediate -w` on `data_dir`, as the `postgres` OS user
/// when running as root (the server refuses to be controlled by root).
fn pg_ctl_stop_immediate(data_dir: &Path) -> Result<(), DevError> {
    use std::os::unix::fs::MetadataExt;
    let bin_dir = postgres::find_bin_dir()
        .ok_or_else(|| DevError::Invalid("no PostgreSQL server binaries found".into()))?;
    let as_root = fs::metadata("/proc/self").is_ok_and(|metadata| metadata.uid() == 0);
    let mut command = if as_root {
        let mut command = Command::new("runuser");
        command
            .args(["-u", "postgres", "--"])
            .arg(bin_dir.join("pg_ctl"));
        command
    } else {
        Command::new(bin_dir.join("pg_ctl"))
    };
    command
        .arg("-D")
        .arg(data_dir)
        .args(["-m", "immediate", "-w", "-t", "30", "stop"])
        .current_dir("/");
    let output = command.output().map_err(|source| DevError::Io {
        context: "running pg_ctl stop -m immediate".into(),
        source,
    })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(DevError::Invalid(format!(
            "pg_ctl stop -m immediate on {} failed: {}",
            data_dir.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// Starts node `id`'s Postgres again on its data directory and the port
/// its config names, and leaves it running: `raftgres dev pg start`.
pub fn start_postgres(dir: &Path, id: u64, timeout: Duration) -> Result<u16, DevError> {
    let layout = DevLayout::new(dir)?;
    let path = layout.config_path(id);
    let config =
        NodeConfig::from_file(&path).map_err(|source| DevError::NodeConfig { path, source })?;
    let port = config
        .postgres
        .split_whitespace()
        .find_map(|pair| pair.strip_prefix("port=")?.parse::<u16>().ok());
    // After a crash the old backends may hold shared memory for a moment,
    // so start attempts repeat until the timeout (as `start_again` does).
    let deadline = Instant::now() + timeout;
    loop {
        let mut options = PgInstanceOptions::new(layout.postgres_dir(id));
        options.port = port;
        options.start_timeout = deadline.saturating_duration_since(Instant::now());
        match PgInstance::start(options) {
            Ok(instance) => {
                let port = instance.port();
                instance.detach();
                return Ok(port);
            }
            Err(source) if Instant::now() >= deadline => {
                return Err(DevError::Postgres { node: id, source })
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Stops whatever a dev cluster in `dir` left running: node processes named
/// by pid files (SIGTERM, then SIGKILL after `timeout`), then every
/// Postgres under `DIR/pg-N`: `raftgres dev down`. Returns what it stopped.
pub fn stop_directory(dir: &Path, timeout: Duration) -> Result<Vec<String>, DevError> {
    let layout = DevLayout::new(dir)?;
    let mut stopped = Vec::new();
    let ids = layout.configured_node_ids()?;
    let running: Vec<(u64, u32)> = ids
        .iter()
        .filter_map(|id| layout.running_pid(*id).map(|pid| (*id, pid)))
        .collect();
    for (_, pid) in &running {
        send_signal(*pid, "TERM")?;
    }
    let deadline = Instant::now() + timeout;
    for (id, pid) in running {
        while process_alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if process_alive(pid) {
            send_signal(pid, "KILL")?;
            stopped.push(format!("node {id} (pid {pid}, killed after {timeout:?})"));
        } else {
            stopped.push(format!("node {id} (pid {pid})"));
        }
        layout.remove_pid_file(id, pid);
    }
    for id in ids {
        let data_dir = layout.postgres_dir(id);
        if data_dir.join("postmaster.pid").exists() {
            PgInstance::stop_data_dir(&data_dir)
                .map_err(|source| DevError::Postgres { node: id, source })?;
            stopped.push(format!("postgres of node {id} ({})", data_dir.display()));
        }
    }
    Ok(stopped)
}

fn node_ids(nodes: usize) -> impl Iterator<Item = u64> {
    1..=nodes as u64
}

/// Ports of the configs already in `layout`, checked against `nodes`.
fn previous_ports(
    layout: &DevLayout,
    nodes: usize,
) -> Result<BTreeMap<u64, PreviousPorts>, DevError> {
    let existing = layout.configured_node_ids()?;
    if existing.is_empty() {
        return Ok(BTreeMap::new());
    }
    if existing != node_ids(nodes).collect::<Vec<_>>() {
        return Err(DevError::Invalid(format!(
            "{} holds a cluster of nodes {existing:?}, not of {nodes} node(s); use another directory or delete this one",
            layout.dir().display()
        )));
    }
    let mut ports = BTreeMap::new();
    for id in existing {
        let path = layout.config_path(id);
        let config =
            NodeConfig::from_file(&path).map_err(|source| DevError::NodeConfig { path, source })?;
        let postgres = postgres_port(&config.postgres);
        let previous = PreviousPorts {
            grpc: Some(config.listen_addr.port()),
            peer: config.peer_listen_addr.map(|address| address.port()),
            metrics: config.metrics_addr.map(|address| address.port()),
            postgres,
        };
        ports.insert(id, previous);
    }
    Ok(ports)
}

/// Starts every node's Postgres at once (initdb dominates a first start).
async fn start_postgres_instances(
    layout: &DevLayout,
    options: &DevClusterOptions,
    previous: &BTreeMap<u64, PreviousPorts>,
) -> Result<BTreeMap<u64, PgInstance>, DevError> {
    let mut starts = Vec::new();
    for id in node_ids(options.nodes) {
        let data_dir = layout.postgres_dir(id);
        let mut instance_options = PgInstanceOptions::new(&data_dir);
        instance_options.start_timeout = options.postgres_start_timeout;
        // Keep the old port when it is free so the config stays the same;
        // a taken one is replaced (the database does not record its port).
        instance_options.port = previous
            .get(&id)
            .and_then(|ports| ports.postgres)
            .filter(|port| port_is_free(*port));
        starts.push(tokio::task::spawn_blocking(move || {
            if data_dir.join("postmaster.pid").exists() {
                // Left running by a dev cluster that was killed: stop it so
                // this one owns the server it talks to.
                let _ = PgInstance::stop_data_dir(&data_dir);
            }
            (id, PgInstance::start(instance_options))
        }));
    }
    let mut instances = BTreeMap::new();
    let mut first_error = None;
    for start in futures::future::join_all(starts).await {
        match start {
            Ok((id, Ok(instance))) => {
                instances.insert(id, instance);
            }
            Ok((node, Err(source))) => {
                first_error.get_or_insert(DevError::Postgres { node, source });
            }
            Err(error) => std::panic::resume_unwind(error.into_panic()),
        }
    }
    // On error the instances that did start are stopped as they drop.
    first_error.map_or(Ok(instances), Err)
}

/// Where one node listens and stores, as written into its config.
struct NodeEndpoints<'a> {
    address: &'a str,
    peer_address: Option<&'a str>,
    metrics_address: &'a str,
    postgres: &'a str,
}

/// One `[[peer]]` of a dev node's config.
struct DevPeer<'a> {
    id: u64,
    address: &'a str,
    client_address: Option<&'a str>,
}

/// Node `id`'s config. With `join`, the node starts without bootstrapping
/// a membership and asks `peers` whether the cluster added it.
fn config_text(
    options: &DevClusterOptions,
    id: u64,
    node: &NodeEndpoints<'_>,
    peers: &[DevPeer<'_>],
    join: bool,
) -> String {
    let quote = |text: &str| toml::Value::String(text.to_string()).to_string();
    let mut text = format!(
        "# Written by `raftgres dev` at every start of this cluster; edits are lost.\n\
         cluster_id = {}\n\
         node_id = {id}\n\
         listen_addr = {}\n\
         metrics_addr = {}\n\
         postgres = {}\n",
        quote(&options.cluster_id),
        quote(node.address),
        quote(node.metrics_address),
        quote(node.postgres),
    );
    if let Some(peer_address) = node.peer_address {
        text.push_str(&format!("peer_listen_addr = {}\n", quote(peer_address)));
    }
    if options.distinct_peer_sources {
        text.push_str(&format!(
            "peer_source_addr = {}\n",
            quote(&peer_source_address(id).to_string())
        ));
    }
    if join {
        text.push_str("join = true\n");
    }
    for peer in peers {
        text.push_str(&format!(
            "\n[[peer]]\nid = {}\naddress = {}\n",
            peer.id,
            quote(peer.address)
        ));
        if let Some(client_address) = peer.client_address {
            text.push_str(&format!("client_address = {}\n", quote(client_address)));
        }
    }
    text.push_str(&format!("\n[raft]\ntick_ms = {}\n", options.tick_ms));
    for (name, value) in &options.raft_extra {
        text.push_str(&format!("{name} = {value}\n"));
    }
    if let Some(tls) = &options.tls {
        let path = |name: String| quote(&tls.dir.join(name).display().to_string());
        text.push_str(&format!(
            "\n[tls]\ncert = {}\nkey = {}\nca = {}\nrequire_client_certificate = {}\n",
            path(format!("node-{id}.pem")),
            path(format!("node-{id}.key")),
            path("ca.pem".into()),
            tls.require_client_certificate
        ));
    }
    if !options.limits_extra.is_empty() {
        text.push_str("\n[limits]\n");
        for (name, value) in &options.limits_extra {
            text.push_str(&format!("{name} = {value}\n"));
        }
    }
    text
}

/// Spawns `raftgres serve --config DIR/node-N.toml`, appending its output
/// to the node log, and writes its pid file.
fn spawn_node(
    layout: &DevLayout,
    id: u64,
    binary: &Path,
    log_filter: Option<&str>,
) -> Result<Child, DevError> {
    let log_path = layout.log_path(id);
    let mut log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|source| DevError::Io {
            context: format!("opening {}", log_path.display()),
            source,
        })?;
    let io_error = |source| DevError::Io {
        context: format!("writing {}", log_path.display()),
        source,
    };
    writeln!(log, "=== raftgres dev: starting node {id} ===").map_err(io_error)?;
    let stderr = log.try_clone().map_err(io_error)?;
    let filter = log_filter
        .map(str::to_string)
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".to_string());
    let child = Command::new(binary)
        .arg("serve")
        .arg("--config")
        .arg(layout.config_path(id))
        .env("RUST_LOG", filter)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(stderr)
        // Its own process group: a Ctrl-C in the terminal reaches only the
        // process managing the cluster, which then stops nodes in order.
        .process_group(0)
        .spawn()
        .map_err(|source| DevError::Io {
            context: format!("starting {} serve", binary.display()),
            source,
        })?;
    write_file(&layout.pid_path(id), &format!("{}\n", child.id()))?;
    tracing::info!(node = id, pid = child.id(), "started node process");
    Ok(child)
}

/// `port` if it can be bound now and is not `taken`, else a free port.
fn pick_port(preferred: Option<u16>, taken: &mut BTreeSet<u16>) -> Result<u16, DevError> {
    if let Some(port) = preferred {
        if !taken.contains(&port) && port_is_free(port) {
            taken.insert(port);
            return Ok(port);
        }
    }
    // free_port asks the kernel; it may hand out one we already chose for
    // a process that has not bound it yet.
    for _ in 0..100 {
        let port = postgres::free_port()
            .map_err(|error| DevError::Invalid(format!("probing for a free port: {error}")))?;
        if taken.insert(port) {
            return Ok(port);
        }
    }
    Err(DevError::Invalid(
        "could not find a free port on 127.0.0.1".into(),
    ))
}

fn port_is_free(port: u16) -> bool {
    TcpListener::bind((postgres::HOST, port)).is_ok()
}

/// Sends `signal` (a `kill -s` name) to `pid` with the `kill` program,
/// which keeps this crate free of unsafe libc calls.
fn send_signal(pid: u32, signal: &str) -> Result<(), DevError> {
    let output = Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .output()
        .map_err(|source| DevError::Io {
            context: format!("running kill -s {signal} {pid}"),
            source,
        })?;
    // A process that exited in the meantime is not an error.
    if output.status.success() || !process_alive(pid) {
        Ok(())
    } else {
        Err(DevError::Io {
            context: format!("kill -s {signal} {pid}"),
            source: std::io::Error::other(
                String::from_utf8_lossy(&output.stderr).trim().to_string(),
            ),
        })
    }
}

/// Whether `pid` is a live `raftgres serve` of the config at `config`.
fn serves_config(pid: u32, config: &str) -> bool {
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let arguments: Vec<&[u8]> = cmdline.split(|byte| *byte == 0).collect();
    arguments.contains(&b"serve".as_slice())
        && arguments.contains(&config.as_bytes())
        && process_alive(pid)
}

/// Alive and not a zombie.
fn process_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

fn write_file(path: &Path, text: &str) -> Result<(), DevError> {
    fs::write(path, text).map_err(|source| DevError::Io {
        context: format!("writing {}", path.display()),
        source,
    })
}

/// The leader every running node names, provided every one answered
/// (see [`raftgres::client::agreed_leader`]).
fn agreed_leader(statuses: &[(u64, Result<StatusResponse, ClientError>)]) -> Option<u64> {
    let answered: Option<Vec<&StatusResponse>> = statuses
        .iter()
        .map(|(_, status)| status.as_ref().ok())
        .collect();
    raftgres::client::agreed_leader(answered?)
}

fn describe_statuses(statuses: &[(u64, Result<StatusResponse, ClientError>)]) -> String {
    if statuses.is_empty() {
        return "no node is running\n".to_string();
    }
    statuses
        .iter()
        .map(|(id, status)| match status {
            Ok(status) => format!(
                "node {id}: role {:?}, term {}, leader {}, commit {}\n",
                Role::try_from(status.role).unwrap_or(Role::Unspecified),
                status.term,
                status.leader_id,
                status.commit_index
            ),
            Err(error) => format!("node {id}: {error}\n"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Statuses from (node, Some((role, leader it names))) or None for a
    /// node that did not answer.
    fn statuses(
        nodes: &[(u64, Option<(Role, u64)>)],
    ) -> Vec<(u64, Result<StatusResponse, ClientError>)> {
        let answer = |node_id: u64, answer: Option<(Role, u64)>| match answer {
            Some((role, leader_id)) => Ok(StatusResponse {
                node_id,
                role: role as i32,
                leader_id,
                term: 2,
                ..StatusResponse::default()
            }),
            None => Err(ClientError::NoEndpoints),
        };
        nodes
            .iter()
            .map(|(id, status)| (*id, answer(*id, *status)))
            .collect()
    }

    #[test]
    fn every_running_node_must_answer_and_agree() {
        use Role::{Follower, Leader};
        let agreeing = [
            (1, Some((Follower, 2))),
            (2, Some((Leader, 2))),
            (3, Some((Follower, 2))),
        ];
        assert_eq!(agreed_leader(&statuses(&agreeing)), Some(2));
        // A running node that does not answer may be one that disagrees.
        let unreachable = [(1, None), (2, Some((Leader, 2))), (3, Some((Follower, 2)))];
        assert_eq!(agreed_leader(&statuses(&unreachable)), None);
        assert_eq!(agreed_leader(&[]), None);
        let description = describe_statuses(&statuses(&unreachable));
        assert!(
            description.contains("node 2: role Leader, term 2, leader 2"),
            "{description}"
        );
        assert!(
            description.contains("node 1: no node addresses"),
            "{description}"
        );
    }

    #[test]
    fn the_layout_finds_configured_nodes_and_ignores_stale_pid_files() {
        let dir = std::env::temp_dir().join(format!("raftgres-dev-layout-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let layout = DevLayout::new(&dir).unwrap();
        for name in ["node-2.toml", "node-1.toml", "node-x.toml", "node-3.log"] {
            fs::write(dir.join(name), "").unwrap();
        }
        assert_eq!(layout.configured_node_ids().unwrap(), [1, 2]);
        // Our own pid is alive but does not serve node 1's config.
        fs::write(layout.pid_path(1), std::process::id().to_string()).unwrap();
        assert_eq!(layout.running_pid(1), None);
        fs::write(layout.log_path(1), "a\nb\nc\n").unwrap();
        assert_eq!(layout.log_tail(1, 2), "b\nc");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn configs_are_valid_and_carry_every_peer() {
        let mut options = DevClusterOptions::new(3, "/bin/true");
        options
            .raft_extra
            .push(("election_ticks_min".into(), "12".into()));
        options
            .limits_extra
            .push(("command_bytes_max".into(), "1000".into()));
        let peers: Vec<DevPeer<'_>> = [
            (1, "127.0.0.1:7101", "127.0.0.1:7001"),
            (2, "127.0.0.1:7102", "127.0.0.1:7002"),
            (3, "127.0.0.1:7103", "127.0.0.1:7003"),
        ]
        .into_iter()
        .map(|(id, address, client_address)| DevPeer {
            id,
            address,
            client_address: Some(client_address),
        })
        .collect();
        let node = NodeEndpoints {
            address: "127.0.0.1:7002",
            peer_address: Some("127.0.0.1:7102"),
            metrics_address: "127.0.0.1:9102",
            postgres: "host=127.0.0.1 port=5999 user=postgres dbname=postgres",
        };
        let text = config_text(&options, 2, &node, &peers, false);
        let config = NodeConfig::from_toml(&text).unwrap();
        assert!(!config.join);
        let joining = NodeConfig::from_toml(&config_text(&options, 2, &node, &peers, true));
        assert!(joining.unwrap().join);
        assert_eq!(config.node_id, 2);
        assert_eq!(config.peers.len(), 3);
        assert_eq!(config.peer_address(3), Some("127.0.0.1:7103"));
        assert_eq!(config.client_address(3), Some("127.0.0.1:7003"));
        assert_eq!(config.peer_listener().port(), 7102);
        assert_eq!(config.raft.election_ticks_min, 12);
        assert_eq!(config.limits.command_bytes_max, 1000);
        assert_eq!(config.metrics_addr.unwrap().port(), 9102);
        assert_eq!(config.peer_source_addr, None);
        options.distinct_peer_sources = true;
        let text = config_text(&options, 2, &node, &peers, false);
        let config = NodeConfig::from_toml(&text).unwrap();
        assert_eq!(
            config.peer_source_addr,
            Some(std::net::IpAddr::V4(peer_source_address(2)))
        );
    }

    #[test]
    fn each_node_has_its_own_peer_source_address() {
        for id in [1, 2, 9, 255, 256, 4_000] {
            let address = peer_source_address(id);
            assert!(address.is_loopback(), "{address}");
            assert_eq!(peer_source_node(address.into()), Some(id));
        }
        assert_ne!(peer_source_address(1), peer_source_address(2));
        let localhost: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(peer_source_node(localhost), None);
        assert_eq!(peer_source_node("::1".parse().unwrap()), None);
    }

    #[test]
    fn preferred_ports_are_used_when_free_and_not_taken() {
        let mut taken = BTreeSet::new();
        let listener = TcpListener::bind((postgres::HOST, 0)).unwrap();
        let busy = listener.local_addr().unwrap().port();
        let port = pick_port(Some(busy), &mut taken).unwrap();
        assert_ne!(port, busy);
        drop(listener);
        let free = pick_port(None, &mut taken).unwrap();
        assert!(taken.contains(&free));
        let again = pick_port(Some(free), &mut taken).unwrap();
        assert_ne!(again, free, "a port already handed out is not reused");
    }

    #[test]
    fn the_nodes_json_names_every_node_and_escapes_paths() {
        let node = DevNodeInfo {
            id: 2,
            address: "127.0.0.1:7002".into(),
            metrics_address: "127.0.0.1:9102".into(),
            pid: None,
            postgres_port: 5999,
            postgres_data_dir: PathBuf::from("/tmp/a \"b\"/pg-2"),
            postgres_running: true,
            log_path: PathBuf::from("/tmp/node-2.log"),
        };
        let json = nodes_json(Path::new("/tmp/x"), Some(2), &[node]);
        assert!(
            json.starts_with(
                "{\"dir\": \"/tmp/x\", \"leader\": 2, \"endpoints\": [\"127.0.0.1:7002\"]"
            ),
            "{json}"
        );
        assert!(json.contains("\"pid\": null"), "{json}");
        assert!(
            json.contains("\"data_dir\": \"/tmp/a \\\"b\\\"/pg-2\""),
            "{json}"
        );
        assert!(json.contains("port=5999"), "{json}");
        assert_eq!(json_string("a\\b\n"), "\"a\\\\b\\n\"");
    }

    #[test]
    fn processes_are_told_apart_from_zombies_and_the_dead() {
        assert!(process_alive(std::process::id()));
        assert!(!process_alive(u32::MAX));
    }
}
