//! A node's configuration: a TOML file, overridden by command-line flags
//! and `RAFTGRES_*` environment variables (see `raftgres serve --help`),
//! validated once with errors a person can act on.
//!
//! ```toml
//! cluster_id = "dev"
//! node_id = 1
//! listen_addr = "127.0.0.1:7001"      # gRPC for clients (and peers, unless peer_listen_addr)
//! peer_listen_addr = "127.0.0.1:7101" # optional: serve the peer API only here
//! insecure_peers = false              # serve peers without TLS on a non-loopback address
//! peer_source_addr = "127.0.0.1"      # optional: the local IP peer connections come from
//! metrics_addr = "127.0.0.1:9101"     # Prometheus text format (optional)
//! postgres = "host=127.0.0.1 port=5433 user=postgres dbname=postgres"
//!
//! [[peer]]                            # every voter, this node included
//! id = 1
//! address = "127.0.0.1:7001"
//! [[peer]]
//! id = 2
//! address = "127.0.0.1:7002"
//! [[peer]]
//! id = 3
//! address = "127.0.0.1:7003"
//!
//! [raft]                              # all optional; defaults shown
//! tick_ms = 50
//! compaction_entries = 100000
//! snapshot_chunks_in_flight = 4
//! snapshot_view_idle_ms = 60000
//! election_ticks_min = 10
//! election_ticks_max = 20
//! heartbeat_ticks = 2
//!
//! [tls]                               # optional; see docs/OPERATIONS.md
//! cert = "node1.pem"                  # names raftgres-node-1 (and the host clients dial)
//! key = "node1.key"
//! ca = "ca.pem"
//! require_client_certificate = true
//!
//! [limits]                            # all optional; defaults shown
//! command_bytes_max = 1048576
//! client_requests_max = 10000         # per node, across connections
//! connections_max = 4096
//! peer_streams_max = 64
//! peer_message_bytes_max = 67108864
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::core::{self, NodeId};

/// One voter of the cluster.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// The voter's node id (non-zero, unique).
    pub id: u64,
    /// Its peer API's address, `host:port` (its `peer_listen_addr` when it
    /// has one, else its `listen_addr`).
    pub address: String,
    /// Where clients reach it, when it serves peers on an address of its
    /// own; leader hints name this address. Defaults to `address`.
    #[serde(default)]
    pub client_address: Option<String>,
}

/// Timing and batching of the consensus core.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct RaftSettings {
    /// Wall-clock length of one core tick, in milliseconds.
    pub tick_ms: u64,
    /// See [`core::Config::election_ticks_min`].
    pub election_ticks_min: u64,
    /// See [`core::Config::election_ticks_max`].
    pub election_ticks_max: u64,
    /// See [`core::Config::heartbeat_ticks`].
    pub heartbeat_ticks: u64,
    /// See [`core::Config::pre_vote`].
    pub pre_vote: bool,
    /// See [`core::Config::check_quorum`].
    pub check_quorum: bool,
    /// See [`core::Config::entries_per_message_max`].
    pub entries_per_message_max: usize,
    /// See [`core::Config::message_bytes_max`].
    pub message_bytes_max: usize,
    /// See [`core::Config::inflight_messages_max`].
    pub inflight_messages_max: usize,
    /// See [`core::Config::uncommitted_entries_max`].
    pub uncommitted_entries_max: usize,
    /// See [`core::Config::apply_batch_entries_max`].
    pub apply_batch_entries_max: usize,
    /// See [`core::Config::pending_reads_max`].
    pub pending_reads_max: usize,
    /// Every this many applied entries the log (in memory and in
    /// Postgres) is compacted up to the point this many entries before, so
    /// a node holds between one and two times this many entries; a
    /// follower further behind is streamed a snapshot of the state
    /// machine (in chunks of about `message_bytes_max` bytes).
    pub compaction_entries: u64,
    /// Snapshot chunks sent and not yet staged by the follower, at most.
    pub snapshot_chunks_in_flight: u64,
    /// A leader holds a snapshot's view (a REPEATABLE READ transaction on
    /// its database) at most this long while the follower stages nothing
    /// of it; a dropped stream resumes within this time, and starts over
    /// after it. In milliseconds.
    pub snapshot_view_idle_ms: u64,
}

impl Default for RaftSettings {
    fn default() -> RaftSettings {
        let defaults = core::Config::new(NodeId(1), vec![NodeId(1)]);
        RaftSettings {
            tick_ms: 50,
            election_ticks_min: defaults.election_ticks_min,
            election_ticks_max: defaults.election_ticks_max,
            heartbeat_ticks: defaults.heartbeat_ticks,
            pre_vote: defaults.pre_vote,
            check_quorum: defaults.check_quorum,
            entries_per_message_max: defaults.entries_per_message_max,
            message_bytes_max: defaults.message_bytes_max,
            inflight_messages_max: defaults.inflight_messages_max,
            uncommitted_entries_max: defaults.uncommitted_entries_max,
            apply_batch_entries_max: defaults.apply_batch_entries_max,
            pending_reads_max: defaults.pending_reads_max,
            compaction_entries: 100_000,
            snapshot_chunks_in_flight: 4,
            snapshot_view_idle_ms: 60_000,
        }
    }
}

/// Bounds on what clients and peers may send and queue.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest command a client may submit; larger ones get
    /// RESOURCE_EXHAUSTED.
    pub command_bytes_max: usize,
    /// Largest key of the KV service.
    pub key_bytes_max: usize,
    /// Most events (peer messages, client requests) queued for the driver.
    pub driver_events_max: usize,
    /// Most messages queued per peer connection; beyond it messages are
    /// dropped (Raft retransmits).
    pub peer_queue_messages_max: usize,
    /// Most client requests one node serves at once, across all
    /// connections; beyond it requests get RESOURCE_EXHAUSTED at once
    /// (queueing them would only turn overload into timeouts).
    pub client_requests_max: usize,
    /// Most open gRPC connections (clients and peers) per listener; a
    /// connection beyond it is closed as soon as it is accepted, so idle or
    /// slow clients cannot exhaust the node's memory and file descriptors.
    pub connections_max: usize,
    /// Most concurrent HTTP/2 streams (calls) on one connection.
    pub streams_per_connection_max: u32,
    /// Most inbound `Peer.Stream` calls open at once. Each peer keeps one
    /// (two while it reconnects); more can only be a misbehaving sender.
    pub peer_streams_max: usize,
    /// Largest peer message accepted or sent (an entries batch is bounded
    /// by `raft.message_bytes_max`; this leaves room for the envelope and
    /// bounds snapshot messages).
    pub peer_message_bytes_max: usize,
    /// Most pairs a Range returns.
    pub range_limit_max: u32,
    /// How long a client request may wait for commit and apply before
    /// DEADLINE_EXCEEDED (outcome unknown), in milliseconds.
    pub request_timeout_ms: u64,
    /// Longest a TLS handshake may take before the connection is dropped,
    /// in milliseconds.
    pub tls_handshake_timeout_ms: u64,
    /// Client sessions not used for this many log entries are forgotten;
    /// a retry older than that may apply twice.
    pub session_expiry_entries: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            command_bytes_max: 1 << 20,
            key_bytes_max: 4096,
            driver_events_max: 65_536,
            peer_queue_messages_max: 4096,
            client_requests_max: 10_000,
            connections_max: 4096,
            streams_per_connection_max: 1024,
            peer_streams_max: 64,
            peer_message_bytes_max: 64 << 20,
            range_limit_max: 10_000,
            request_timeout_ms: 10_000,
            tls_handshake_timeout_ms: 5_000,
            session_expiry_entries: 1_000_000,
        }
    }
}

/// Everything `raftgres serve` needs.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Names the cluster; peers and the database must carry the same id.
    pub cluster_id: String,
    /// This node's id (one of the peers).
    pub node_id: u64,
    /// Address the gRPC server listens on: clients, and peers too unless
    /// `peer_listen_addr` is set.
    pub listen_addr: SocketAddr,
    /// A separate address for the peer API. When set, `listen_addr` serves
    /// only clients and this one serves only peers (and health checks).
    #[serde(default)]
    pub peer_listen_addr: Option<SocketAddr>,
    /// Without TLS, peer RPCs are served only on a loopback address and
    /// only to loopback connections, because anyone who can send one peer
    /// message can rewrite the replicated state. This turns that refusal
    /// off: for trusted, isolated networks only.
    #[serde(default)]
    pub insecure_peers: bool,
    /// The local IP address this node's connections to its peers are made
    /// from (it must be one of this machine's addresses). Absent: the
    /// operating system picks it. For hosts with several addresses where
    /// peers or firewalls tell nodes apart by source address.
    #[serde(default)]
    pub peer_source_addr: Option<std::net::IpAddr>,
    /// TLS for the listeners and for peer connections (mutual TLS between
    /// peers). Absent: plain text.
    #[serde(default)]
    pub tls: Option<super::tls::TlsSettings>,
    /// Address of the Prometheus metrics endpoint, if any.
    #[serde(default)]
    pub metrics_addr: Option<SocketAddr>,
    /// libpq-style connection string of this node's own database.
    pub postgres: String,
    /// Open a database whose server may lose acknowledged writes (fsync or
    /// synchronous_commit off). For throwaway benchmarks only.
    #[serde(default)]
    pub allow_unsafe_durability: bool,
    /// Commit state machine applies with synchronous_commit off (the log
    /// itself is always synchronous; applies replay after a crash). A
    /// leader's batch applied ahead of its commit commits so whatever
    /// this says (see `docs/STORAGE.md`).
    #[serde(default)]
    pub apply_async_commit: bool,
    /// A new cluster's voters, this node included, with their addresses.
    /// With `join`, nodes of the running cluster to contact instead. The
    /// list only bootstraps: once a node has stored a membership, its log
    /// decides who the members are and where they listen (addresses given
    /// to `member add`), and this list only supplies addresses of members
    /// added without one.
    #[serde(rename = "peer")]
    pub peers: Vec<PeerConfig>,
    /// Start as a node to be added to a running cluster: bootstrap no
    /// membership, ask the nodes `peer` lists whether the cluster added
    /// this node (refuse to start if not), then wait for the leader to
    /// send it the log. Ignored once the node has stored a membership.
    #[serde(default)]
    pub join: bool,
    /// Core timing and batching.
    #[serde(default)]
    pub raft: RaftSettings,
    /// Client and queue limits.
    #[serde(default)]
    pub limits: Limits,
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's explanation.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid config: {0}")]
    Invalid(String),
}

impl NodeConfig {
    /// Reads and validates a TOML file.
    pub fn from_file(path: &Path) -> Result<NodeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        NodeConfig::from_toml(&text).map_err(|error| match error {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.display().to_string(),
                message,
            },
            other => other,
        })
    }

    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<NodeConfig, ConfigError> {
        let config: NodeConfig = toml::from_str(text).map_err(|error| ConfigError::Parse {
            path: "<text>".into(),
            message: error.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value, with a message a person can act on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid(message));
        if self.cluster_id.trim().is_empty() {
            return invalid("cluster_id must not be empty".into());
        }
        if self.raft.tick_ms == 0 {
            return invalid("raft.tick_ms must be at least 1".into());
        }
        let id_range = format!("from 1 to {}", NodeId::MAX);
        if !NodeId(self.node_id).is_valid() {
            return invalid(format!(
                "node_id is {}; node ids run {id_range}",
                self.node_id
            ));
        }
        let mut addresses = BTreeMap::new();
        for peer in &self.peers {
            if !NodeId(peer.id).is_valid() {
                return invalid(format!(
                    "peer id {} is not a node id; node ids run {id_range}",
                    peer.id
                ));
            }
            if addresses.insert(peer.id, peer.address.clone()).is_some() {
                return invalid(format!("peer id {} appears twice", peer.id));
            }
            if peer.address.parse::<SocketAddr>().is_err() && !peer.address.contains(':') {
                return invalid(format!(
                    "peer {} address {:?} is not host:port",
                    peer.id, peer.address
                ));
            }
        }
        if self.join && !self.peers.iter().any(|peer| peer.id != self.node_id) {
            return invalid(
                "join needs at least one [[peer]] of the running cluster to contact".into(),
            );
        }
        self.validate_peer_exposure()?;
        let limits = [
            (
                "limits.command_bytes_max",
                self.limits.command_bytes_max as u64,
            ),
            ("limits.key_bytes_max", self.limits.key_bytes_max as u64),
            (
                "limits.driver_events_max",
                self.limits.driver_events_max as u64,
            ),
            (
                "limits.peer_queue_messages_max",
                self.limits.peer_queue_messages_max as u64,
            ),
            (
                "limits.client_requests_max",
                self.limits.client_requests_max as u64,
            ),
            ("limits.connections_max", self.limits.connections_max as u64),
            (
                "limits.streams_per_connection_max",
                u64::from(self.limits.streams_per_connection_max),
            ),
            (
                "limits.peer_streams_max",
                self.limits.peer_streams_max as u64,
            ),
            (
                "limits.peer_message_bytes_max",
                self.limits.peer_message_bytes_max as u64,
            ),
            ("limits.range_limit_max", self.limits.range_limit_max as u64),
            ("limits.request_timeout_ms", self.limits.request_timeout_ms),
            (
                "limits.tls_handshake_timeout_ms",
                self.limits.tls_handshake_timeout_ms,
            ),
            (
                "limits.session_expiry_entries",
                self.limits.session_expiry_entries,
            ),
            ("raft.compaction_entries", self.raft.compaction_entries),
            (
                "raft.snapshot_chunks_in_flight",
                self.raft.snapshot_chunks_in_flight,
            ),
            (
                "raft.snapshot_view_idle_ms",
                self.raft.snapshot_view_idle_ms,
            ),
        ];
        for (name, value) in limits {
            if value == 0 {
                return invalid(format!("{name} must be greater than 0"));
            }
        }
        if self.limits.command_bytes_max > self.raft.message_bytes_max {
            return invalid(format!(
                "limits.command_bytes_max ({}) exceeds raft.message_bytes_max ({}): such a command could never be replicated",
                self.limits.command_bytes_max, self.raft.message_bytes_max
            ));
        }
        if self.raft.message_bytes_max >= self.limits.peer_message_bytes_max {
            return invalid(format!(
                "raft.message_bytes_max ({}) must be below limits.peer_message_bytes_max ({}), which also holds the envelope",
                self.raft.message_bytes_max, self.limits.peer_message_bytes_max
            ));
        }
        self.core_config()
            .validate()
            .map_err(|error| ConfigError::Invalid(error.to_string()))?;
        Ok(())
    }

    /// The address peers reach this node's peer API at.
    pub fn peer_listener(&self) -> SocketAddr {
        self.peer_listen_addr.unwrap_or(self.listen_addr)
    }

    /// Without TLS, a peer API reachable from other hosts lets anyone
    /// rewrite the replicated state: refuse to start that way unless the
    /// operator says the network is trusted.
    fn validate_peer_exposure(&self) -> Result<(), ConfigError> {
        let listener = self.peer_listener();
        if self.tls.is_none() && !self.insecure_peers && !listener.ip().is_loopback() {
            return Err(ConfigError::Invalid(format!(
                "the peer API would listen on {listener}, a non-loopback address, without TLS: \
                 anyone who reaches it could rewrite the replicated state. Configure [tls] \
                 (mutual TLS between peers), listen on a loopback address, or set \
                 insecure_peers = true for a trusted, isolated network"
            )));
        }
        if self.peer_listen_addr == Some(self.listen_addr) {
            return Err(ConfigError::Invalid(format!(
                "peer_listen_addr equals listen_addr ({}); leave it out to serve both on one address",
                self.listen_addr
            )));
        }
        Ok(())
    }

    /// Whether a peer RPC arriving from `remote` may be served: always with
    /// TLS (the peer's certificate is checked per RPC instead), otherwise
    /// only from loopback unless `insecure_peers`.
    pub fn admits_plaintext_peer(&self, remote: Option<SocketAddr>) -> bool {
        self.tls.is_some()
            || self.insecure_peers
            || remote.is_some_and(|address| address.ip().is_loopback())
    }

    /// The consensus core's configuration.
    pub fn core_config(&self) -> core::Config {
        let voters = if self.join {
            Vec::new()
        } else {
            self.peers.iter().map(|peer| NodeId(peer.id)).collect()
        };
        let mut config = core::Config::new(NodeId(self.node_id), voters);
        let raft = &self.raft;
        config.election_ticks_min = raft.election_ticks_min;
        config.election_ticks_max = raft.election_ticks_max;
        config.heartbeat_ticks = raft.heartbeat_ticks;
        config.pre_vote = raft.pre_vote;
        config.check_quorum = raft.check_quorum;
        config.entries_per_message_max = raft.entries_per_message_max;
        config.message_bytes_max = raft.message_bytes_max;
        config.inflight_messages_max = raft.inflight_messages_max;
        config.uncommitted_entries_max = raft.uncommitted_entries_max;
        config.apply_batch_entries_max = raft.apply_batch_entries_max;
        config.pending_reads_max = raft.pending_reads_max;
        config
    }

    /// The address of node `id`'s peer API, if it is a peer.
    pub fn peer_address(&self, id: u64) -> Option<&str> {
        self.peers
            .iter()
            .find(|peer| peer.id == id)
            .map(|peer| peer.address.as_str())
    }

    /// The address clients reach node `id` at, if it is a peer.
    pub fn client_address(&self, id: u64) -> Option<&str> {
        self.peers
            .iter()
            .find(|peer| peer.id == id)
            .map(|peer| peer.client_address.as_deref().unwrap_or(&peer.address))
    }

    /// One core tick of wall-clock time.
    pub fn tick(&self) -> Duration {
        Duration::from_millis(self.raft.tick_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = r#"
        cluster_id = "test"
        node_id = 2
        listen_addr = "127.0.0.1:7002"
        postgres = "host=127.0.0.1 port=5432 user=postgres dbname=node2"
        [[peer]]
        id = 1
        address = "127.0.0.1:7001"
        [[peer]]
        id = 2
        address = "127.0.0.1:7002"
        [[peer]]
        id = 3
        address = "127.0.0.1:7003"
    "#;

    #[test]
    fn a_valid_file_parses_with_defaults() {
        let config = NodeConfig::from_toml(VALID).unwrap();
        assert_eq!(config.node_id, 2);
        assert_eq!(config.peer_address(3), Some("127.0.0.1:7003"));
        assert_eq!(config.limits.command_bytes_max, 1 << 20);
        assert_eq!(config.core_config().voters.len(), 3);
        assert!(
            !config.apply_async_commit,
            "applies commit synchronously by default"
        );
    }

    #[test]
    fn peers_without_tls_are_served_on_loopback_only_unless_insecure() {
        let exposed = VALID.replace(
            "listen_addr = \"127.0.0.1:7002\"",
            "listen_addr = \"0.0.0.0:7002\"",
        );
        assert!(NodeConfig::from_toml(&exposed).is_err());
        let config = NodeConfig::from_toml(&format!("insecure_peers = true\n{exposed}")).unwrap();
        assert!(config.admits_plaintext_peer(Some("10.0.0.7:5000".parse().unwrap())));

        let local = NodeConfig::from_toml(VALID).unwrap();
        assert!(local.admits_plaintext_peer(Some("127.0.0.1:5000".parse().unwrap())));
        assert!(local.admits_plaintext_peer(Some("[::1]:5000".parse().unwrap())));
        assert!(!local.admits_plaintext_peer(Some("10.0.0.7:5000".parse().unwrap())));
        assert!(!local.admits_plaintext_peer(None));
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            (
                VALID.replace("node_id = 2", "node_id = 9"),
                "not among the voters",
            ),
            (VALID.replace("id = 3", "id = 2"), "appears twice"),
            (
                VALID.replace("node_id = 2", "node_id = 0"),
                "node_id is 0; node ids run from 1 to 9223372036854775807",
            ),
            (
                VALID.replace("id = 3", "id = 0"),
                "peer id 0 is not a node id",
            ),
            (
                VALID.replace("cluster_id = \"test\"", "cluster_id = \"\""),
                "cluster_id",
            ),
            (
                VALID.to_string() + "\n[raft]\nelection_ticks_min = 1\n",
                "election_ticks_min",
            ),
            (
                VALID.to_string() + "\n[limits]\ncommand_bytes_max = 0\n",
                "command_bytes_max",
            ),
            (
                VALID.to_string() + "\nunknown_setting = 1\n",
                "unknown field",
            ),
            (
                VALID.replace(
                    "listen_addr = \"127.0.0.1:7002\"",
                    "listen_addr = \"nowhere\"",
                ),
                "listen_addr",
            ),
            (
                VALID.replace(
                    "listen_addr = \"127.0.0.1:7002\"",
                    "listen_addr = \"0.0.0.0:7002\"",
                ),
                "non-loopback address, without TLS",
            ),
            (
                VALID.replace(
                    "listen_addr = \"127.0.0.1:7002\"",
                    "listen_addr = \"127.0.0.1:7002\"\npeer_listen_addr = \"10.1.2.3:7102\"",
                ),
                "10.1.2.3:7102, a non-loopback address",
            ),
            (
                VALID.to_string() + "\n[limits]\npeer_message_bytes_max = 1000\n",
                "peer_message_bytes_max",
            ),
        ];
        for (text, expected) in cases {
            let error = NodeConfig::from_toml(&text)
                .expect_err(expected)
                .to_string();
            assert!(
                error.contains(expected),
                "{error:?} should mention {expected:?}"
            );
        }
    }
}
