//! `raftgres serve`: one node, configured by a TOML file whose values flags
//! and `RAFTGRES_*` environment variables override.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use raftgres::server::config::ConfigError;
use raftgres::server::NodeConfig;

/// Flags of `raftgres serve`. Each overrides the same key of the file.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The node's TOML config file (format: see node/src/server/config.rs).
    #[arg(long, env = "RAFTGRES_CONFIG", value_name = "FILE")]
    pub config: PathBuf,
    /// Overrides `cluster_id`.
    #[arg(long, env = "RAFTGRES_CLUSTER_ID")]
    pub cluster_id: Option<String>,
    /// Overrides `node_id`.
    #[arg(long, env = "RAFTGRES_NODE_ID")]
    pub node_id: Option<u64>,
    /// Overrides `listen_addr` (gRPC for peers and clients).
    #[arg(long, env = "RAFTGRES_LISTEN_ADDR", value_name = "HOST:PORT")]
    pub listen_addr: Option<SocketAddr>,
    /// Overrides `peer_listen_addr` (serve the peer API on its own address).
    #[arg(long, env = "RAFTGRES_PEER_LISTEN_ADDR", value_name = "HOST:PORT")]
    pub peer_listen_addr: Option<SocketAddr>,
    /// Sets `insecure_peers`: serve peer RPCs without TLS on a non-loopback
    /// address. Anyone who reaches it can rewrite the replicated state.
    #[arg(long, env = "RAFTGRES_INSECURE_PEERS")]
    pub insecure_peers: bool,
    /// Sets `join`: start as a new member of a running cluster, which
    /// must have added this node first (`raftgres member add`); the
    /// `[[peer]]` list names nodes of that cluster to ask. Ignored once
    /// the node has stored a membership.
    #[arg(long, env = "RAFTGRES_JOIN")]
    pub join: bool,
    /// Overrides `tls.cert` (this node's certificate, PEM).
    #[arg(long, env = "RAFTGRES_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// Overrides `tls.key` (its private key, PEM).
    #[arg(long, env = "RAFTGRES_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Overrides `tls.ca` (the cluster's CA, PEM).
    #[arg(long, env = "RAFTGRES_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Overrides `tls.require_client_certificate`.
    #[arg(
        long,
        env = "RAFTGRES_TLS_REQUIRE_CLIENT_CERTIFICATE",
        value_name = "BOOL"
    )]
    pub tls_require_client_certificate: Option<bool>,
    /// Overrides `metrics_addr` (Prometheus text format).
    #[arg(long, env = "RAFTGRES_METRICS_ADDR", value_name = "HOST:PORT")]
    pub metrics_addr: Option<SocketAddr>,
    /// Overrides `postgres` (libpq connection string of this node's database).
    #[arg(long, env = "RAFTGRES_POSTGRES", value_name = "CONNINFO")]
    pub postgres: Option<String>,
    /// Overrides `raft.tick_ms`.
    #[arg(long, env = "RAFTGRES_TICK_MS")]
    pub tick_ms: Option<u64>,
    /// Accept a Postgres server that may lose acknowledged writes (fsync or
    /// synchronous_commit off). For throw-away benchmarks only.
    #[arg(long, env = "RAFTGRES_ALLOW_UNSAFE_DURABILITY")]
    pub allow_unsafe_durability: bool,
    /// Overrides `apply_async_commit` (commit state machine applies with
    /// synchronous_commit off; the log is always synchronous; a leader's
    /// batch applied ahead of its commit commits so either way).
    #[arg(long, env = "RAFTGRES_APPLY_ASYNC_COMMIT")]
    pub apply_async_commit: Option<bool>,
    /// Check the configuration as `serve` does before it starts (values,
    /// TLS files, the Postgres connection string) without opening Postgres
    /// or binding a port; print a summary and exit 0, or what is wrong and
    /// exit 2.
    #[arg(long)]
    pub check_config: bool,
}

pub async fn run(arguments: ServeArgs) -> anyhow::Result<()> {
    let config = load_config(&arguments)?;
    if arguments.check_config {
        // The very checks `serve` makes before it opens Postgres or binds
        // a port; neither happens here.
        raftgres::server::check_config(&config)
            .with_context(|| format!("{} (with overrides applied)", arguments.config.display()))?;
        let peers = if config.join {
            let others = config.peers.iter().filter(|peer| peer.id != config.node_id);
            format!(
                "joining a running cluster through {} peer(s)",
                others.count()
            )
        } else {
            format!("{} voter(s)", config.peers.len())
        };
        println!(
            "{}: valid: node {} of cluster {:?}, {peers}, listening on {}",
            arguments.config.display(),
            config.node_id,
            config.cluster_id,
            config.listen_addr
        );
        return Ok(());
    }
    // Installed before serving so that a signal during startup also stops
    // the node gracefully instead of killing it.
    let shutdown = crate::signals::shutdown_signal()?;
    tracing::info!(
        node = config.node_id,
        cluster = %config.cluster_id,
        listen = %config.listen_addr,
        config = %arguments.config.display(),
        "starting node"
    );
    raftgres::server::serve(config, shutdown)
        .await
        .context("the node stopped with an error")?;
    tracing::info!("node stopped");
    Ok(())
}

/// Reads the file, applies the overrides, then validates the result once,
/// so that a value given only by a flag or variable is checked as well.
fn load_config(arguments: &ServeArgs) -> anyhow::Result<NodeConfig> {
    let path = &arguments.config;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let mut table: toml::Table = text.parse().map_err(|error: toml::de::Error| {
        anyhow::anyhow!("invalid config file {}: {error}", path.display())
    })?;
    apply_overrides(&mut table, arguments);
    let merged = toml::to_string(&table).context("re-encoding the config")?;
    NodeConfig::from_toml(&merged).map_err(|error| describe_config_error(path, error))
}

fn apply_overrides(table: &mut toml::Table, arguments: &ServeArgs) {
    use toml::Value;
    let mut set = |key: &str, value: Value| {
        table.insert(key.to_string(), value);
    };
    if let Some(cluster_id) = &arguments.cluster_id {
        set("cluster_id", Value::String(cluster_id.clone()));
    }
    if let Some(node_id) = arguments.node_id {
        // TOML integers are i64; larger ids are refused by validation.
        set(
            "node_id",
            Value::Integer(i64::try_from(node_id).unwrap_or(-1)),
        );
    }
    if let Some(address) = arguments.listen_addr {
        set("listen_addr", Value::String(address.to_string()));
    }
    if let Some(address) = arguments.peer_listen_addr {
        set("peer_listen_addr", Value::String(address.to_string()));
    }
    if arguments.insecure_peers {
        set("insecure_peers", Value::Boolean(true));
    }
    if arguments.join {
        set("join", Value::Boolean(true));
    }
    if let Some(asynchronous) = arguments.apply_async_commit {
        set("apply_async_commit", Value::Boolean(asynchronous));
    }
    if let Some(address) = arguments.metrics_addr {
        set("metrics_addr", Value::String(address.to_string()));
    }
    if let Some(postgres) = &arguments.postgres {
        set("postgres", Value::String(postgres.clone()));
    }
    if arguments.allow_unsafe_durability {
        set("allow_unsafe_durability", Value::Boolean(true));
    }
    let tls_overrides = [
        ("cert", arguments.tls_cert.as_ref()),
        ("key", arguments.tls_key.as_ref()),
        ("ca", arguments.tls_ca.as_ref()),
    ];
    let require = arguments.tls_require_client_certificate;
    if tls_overrides.iter().any(|(_, path)| path.is_some()) || require.is_some() {
        let tls = table
            .entry("tls")
            .or_insert_with(|| Value::Table(toml::Table::new()));
        if let Value::Table(tls) = tls {
            for (key, path) in tls_overrides {
                if let Some(path) = path {
                    tls.insert(key.into(), Value::String(path.display().to_string()));
                }
            }
            if let Some(require) = require {
                tls.insert("require_client_certificate".into(), Value::Boolean(require));
            }
        }
    }
    if let Some(tick_ms) = arguments.tick_ms {
        let raft = table
            .entry("raft")
            .or_insert_with(|| Value::Table(toml::Table::new()));
        if let Value::Table(raft) = raft {
            raft.insert(
                "tick_ms".to_string(),
                Value::Integer(i64::try_from(tick_ms).unwrap_or(-1)),
            );
        }
    }
}

fn describe_config_error(path: &Path, error: ConfigError) -> anyhow::Error {
    match error {
        ConfigError::Parse { message, .. } => {
            anyhow::anyhow!(
                "invalid config file {} (with overrides applied): {message}",
                path.display()
            )
        }
        other => anyhow::anyhow!(
            "{} (file {}, with overrides applied)",
            other,
            path.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
        cluster_id = "test"
        listen_addr = "127.0.0.1:7001"
        postgres = "host=127.0.0.1 port=5432 user=postgres"
        [[peer]]
        id = 1
        address = "127.0.0.1:7001"
        [[peer]]
        id = 2
        address = "127.0.0.1:7002"
    "#;

    fn arguments(file: &Path) -> ServeArgs {
        ServeArgs {
            config: file.to_path_buf(),
            cluster_id: None,
            node_id: None,
            listen_addr: None,
            peer_listen_addr: None,
            insecure_peers: false,
            join: false,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            tls_require_client_certificate: None,
            metrics_addr: None,
            postgres: None,
            tick_ms: None,
            allow_unsafe_durability: false,
            apply_async_commit: None,
            check_config: false,
        }
    }

    fn write(name: &str, text: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "raftgres-serve-test-{}-{name}.toml",
            std::process::id()
        ));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn flags_fill_in_and_override_the_file() {
        let path = write("override", FILE);
        let mut arguments = arguments(&path);
        // The file has no node_id: the flag supplies it.
        arguments.node_id = Some(2);
        arguments.listen_addr = Some("127.0.0.1:7002".parse().unwrap());
        arguments.tick_ms = Some(20);
        arguments.allow_unsafe_durability = true;
        let config = load_config(&arguments).unwrap();
        assert_eq!(config.node_id, 2);
        assert_eq!(config.listen_addr.port(), 7002);
        assert_eq!(config.raft.tick_ms, 20);
        assert!(config.allow_unsafe_durability);
        assert!(config.tls.is_none());
        arguments.tls_cert = Some("node.pem".into());
        arguments.tls_key = Some("node.key".into());
        arguments.tls_ca = Some("ca.pem".into());
        arguments.tls_require_client_certificate = Some(false);
        arguments.listen_addr = Some("0.0.0.0:7002".parse().unwrap());
        let tls = load_config(&arguments).unwrap().tls.unwrap();
        assert_eq!(tls.cert, PathBuf::from("node.pem"));
        assert!(!tls.require_client_certificate);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn join_is_off_unless_the_flag_or_the_file_turns_it_on() {
        let without = write("join", FILE);
        let with = write("join-file", &format!("join = true\n{FILE}"));
        let mut flag = arguments(&without);
        flag.node_id = Some(2);
        assert!(!load_config(&flag).unwrap().join);
        flag.join = true;
        assert!(load_config(&flag).unwrap().join);
        let mut file = arguments(&with);
        file.node_id = Some(2);
        assert!(load_config(&file).unwrap().join);
        std::fs::remove_file(without).unwrap();
        std::fs::remove_file(with).unwrap();
    }

    #[test]
    fn mistakes_name_the_file_and_the_problem() {
        let path = write("invalid", FILE);
        let mut arguments = arguments(&path);
        arguments.node_id = Some(9);
        let error = load_config(&arguments).unwrap_err().to_string();
        assert!(
            error.contains("not among the voters") && error.contains(&path.display().to_string()),
            "{error}"
        );
        arguments.node_id = None;
        let error = load_config(&arguments).unwrap_err().to_string();
        assert!(error.contains("node_id"), "{error}");
        std::fs::remove_file(&path).unwrap();
        let error = load_config(&arguments).unwrap_err().to_string();
        assert!(error.contains("cannot read config file"), "{error}");
    }
}
