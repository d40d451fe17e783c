//! The node: drives the pure core with tokio, persists to Postgres, talks
//! gRPC to peers and clients.
//!
//! - [`config`]: the node's configuration (TOML, flags, environment).
//! - `driver`: the event loop around the core (obeys `crate::core`'s
//!   driver obligations).
//! - `storage`: the log writer and the applier, each on its own Postgres
//!   connection; [`StandaloneApplier`]: the applier's transaction alone,
//!   for contract tests of state machine models.
//! - `snapshots`: snapshot transfers: views a leader streams from, the
//!   follower's staging (its own connection) and the install.
//! - `transport`: outgoing peer streams.
//! - `admission`: the node-wide bound on client requests in service.
//! - `listener`: accepting connections (a bound on open connections, TLS
//!   handshakes with a deadline); [`tls`]: certificates, keys and the node
//!   names that authenticate peers.
//! - `services`: the gRPC services, one file each; `error`: the one mapping of refusals
//!   to gRPC statuses.
//! - [`state_machine`]: the state machine trait; `kv`: the built-in KV
//!   state machine (etcd's MVCC store in Postgres); `etcd`: etcd's v3 API
//!   served over it.
//! - [`metrics`]: Prometheus metrics; `round_trip`: peer round-trip times
//!   for them.

mod admission;
pub mod config;
mod convert;
mod driver;
pub mod error;
mod etcd;
mod join;
mod kv;
mod listener;
pub mod metrics;
mod peers;
mod round_trip;
mod services;
mod snapshots;
pub mod state_machine;
mod storage;
pub mod tls;
pub(crate) mod transport;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use raftgres_proto::v1 as wire;
use raftgres_storage_pg::{LogStore, PgApplier, PgStore, PgStoreConfig, StoreError};
use tokio::sync::{mpsc, watch};
use tracing::Instrument as _;

pub use admission::Admitted;
pub use config::NodeConfig;
pub use kv::{KvStateMachine, RangeRead};
pub use raftgres_storage_pg::Prepared;
pub use services::{NodeApi, ReadClient};
pub use state_machine::StateMachine;
pub use storage::StandaloneApplier;

use crate::core::{DurableState, LogIndex, Membership, NodeId, Raft};

/// How long `serve` keeps trying to reach Postgres at start-up.
const STARTUP_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs a node with the built-in KV state machine until `shutdown`
/// resolves, then stops gracefully.
pub async fn serve(
    config: NodeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_with(config, KvStateMachine, shutdown).await
}

/// Runs a node with a custom state machine.
pub async fn serve_with<S: StateMachine>(
    config: NodeConfig,
    state_machine: S,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    check_config(&config)?;
    let config = Arc::new(config);
    let span = tracing::info_span!("node", node = config.node_id, cluster = %config.cluster_id);
    run(config, Arc::new(state_machine), shutdown)
        .instrument(span)
        .await
}

/// Everything a node checks before it opens Postgres or binds a port, so
/// that `raftgres serve --check-config` and [`serve_with`] refuse the same
/// configurations: every value ([`NodeConfig::validate`]); the TLS files
/// (readable, the key belongs to the certificate, the certificate names
/// this node and chains to the CA); the Postgres connection string (its
/// syntax, its `sslmode`, and its `sslrootcert` file if it names one).
pub fn check_config(config: &NodeConfig) -> anyhow::Result<()> {
    config.validate()?;
    load_tls(config)?;
    raftgres_storage_pg::PgConnector::new(&config.postgres)
        .context("cannot use the postgres connection string")?;
    Ok(())
}

/// The node's TLS material, read and checked, if it has a `[tls]` table.
fn load_tls(config: &NodeConfig) -> anyhow::Result<Option<Arc<tls::TlsMaterial>>> {
    let Some(settings) = &config.tls else {
        return Ok(None);
    };
    let material = tls::TlsMaterial::load(settings, NodeId(config.node_id))
        .context("cannot use the node's TLS files")?;
    Ok(Some(Arc::new(material)))
}

async fn open_store(config: &NodeConfig) -> anyhow::Result<PgStore> {
    let mut store_config = PgStoreConfig::new(
        config.postgres.clone(),
        config.cluster_id.clone(),
        config.node_id,
    );
    store_config.allow_unsafe_durability = config.allow_unsafe_durability;
    let started = Instant::now();
    loop {
        match PgStore::open(store_config.clone()).await {
            Ok(store) => return Ok(store),
            Err(error) if error.is_retriable() && started.elapsed() < STARTUP_CONNECT_TIMEOUT => {
                tracing::warn!(%error, "waiting for postgres");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => return Err(error).context("cannot open this node's postgres log store"),
        }
    }
}

async fn load_durable_state(store: &mut PgStore) -> anyhow::Result<(DurableState, LogIndex)> {
    let loaded = store
        .load()
        .await
        .context("cannot load the durable state")?;
    let entries = loaded
        .entries
        .into_iter()
        .map(convert::entry_from_storage)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|reason| anyhow::anyhow!("cannot load the log: {reason}"))?;
    let applied = LogIndex(loaded.applied.index);
    let membership = load_membership(store).await?;
    let durable = DurableState {
        hard_state: convert::hard_state_from_storage(loaded.hard_state),
        snapshot: convert::snapshot_from_storage(loaded.snapshot),
        membership,
        entries,
        applied,
    };
    Ok((durable, applied))
}

/// The membership stored with the snapshot marker, if one was: empty
/// otherwise, and the core then starts from its configuration's voters (a
/// new cluster's bootstrap membership; see `store_bootstrap_membership`).
async fn load_membership(store: &mut PgStore) -> anyhow::Result<Membership> {
    let Some(stored) = store
        .load_membership()
        .await
        .context("cannot load the membership")?
    else {
        return Ok(Membership::default());
    };
    let membership = convert::membership_from_bytes(&stored)
        .map_err(|error| anyhow::anyhow!("the stored membership does not decode: {error}"))?;
    if let Some(reason) = membership.invalid_reason() {
        anyhow::bail!("the stored membership is impossible: {reason}");
    }
    Ok(membership)
}

/// Stores the membership the core started from at its snapshot index
/// when none was stored (the bootstrap membership the core took from the
/// configuration), durably, before the node takes part: later edits of
/// the configuration file then cannot change who votes, the log and the
/// stored membership decide.
async fn store_bootstrap_membership(
    store: &mut PgStore,
    stored: &Membership,
    raft: &Raft,
) -> anyhow::Result<()> {
    let bootstrap = raft.log().snapshot_membership();
    // A joining node has none to store: the membership reaches it with
    // the log or a snapshot.
    if !stored.voters.is_empty() || bootstrap.voters.is_empty() {
        return Ok(());
    }
    let bootstrap = convert::membership_to_bytes(bootstrap);
    store
        .bootstrap_membership(&bootstrap)
        .await
        .context("cannot store the bootstrap membership")?;
    Ok(())
}

/// A `peer_source_addr` that is not one of this host's addresses would
/// make every peer connection fail: refuse to start, naming it.
fn check_peer_source(config: &NodeConfig) -> anyhow::Result<()> {
    if let Some(address) = config.peer_source_addr {
        std::net::TcpListener::bind((address, 0)).with_context(|| {
            format!(
                "peer_source_addr {address} is not an address of this host (peer connections \
                 could not be made from it)"
            )
        })?;
    }
    Ok(())
}

async fn run<S: StateMachine>(
    config: Arc<NodeConfig>,
    state_machine: Arc<S>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // TLS material is checked before anything else, so a wrong file stops
    // the node at once with the file's name.
    let tls = load_tls(&config)?;
    check_peer_source(&config)?;
    let mut store = open_store(&config).await?;
    let (durable, applied) = load_durable_state(&mut store).await?;
    let store_config = store.config().clone();
    let entries_per_append_max = store_config.entries_per_append_max;
    let applier = PgApplier::open(store_config.clone())
        .await
        .context("cannot open the apply connection")?;
    let mut stager = raftgres_storage_pg::PgStager::open(store_config.clone())
        .await
        .context("cannot open the snapshot staging connection")?;
    let staged = snapshots::load_staged(&mut stager)
        .await
        .context("cannot read the staged snapshot")?;
    let reads = services::ReadConnection::new(
        raftgres_storage_pg::PgConnector::new(&config.postgres)
            .context("cannot use the postgres connection string")?,
    );
    let read_client = reads
        .client()
        .await
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    state_machine::migrate_tables(state_machine.as_ref(), &read_client)
        .await
        .context("cannot create the state machine's tables and the session table")?;
    tracing::info!(
        term = durable.hard_state.term.0,
        last_index = durable
            .entries
            .last()
            .map_or(durable.snapshot.index.0, |entry| entry.index.0),
        applied = applied.0,
        "recovered durable state"
    );
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64)
        ^ config.node_id.rotate_left(32);
    let stored_membership = durable.membership.clone();
    if config.join && durable.waits_to_be_added() {
        join::wait_until_added(&config, tls.as_ref()).await?;
    }
    let raft = Raft::new(config.core_config(), durable, seed)?;
    store_bootstrap_membership(&mut store, &stored_membership, &raft).await?;

    let metrics = Arc::new(metrics::Metrics::default());
    let (events, event_receiver) = mpsc::channel(config.limits.driver_events_max);
    let (directory, peers) = watch::channel(Arc::default());
    let (shutdown_sender, shutdown_receiver) = watch::channel(false);
    let transport = transport::Transport::new(
        &config.cluster_id,
        config.limits.peer_queue_messages_max,
        transport::PeerConnectSettings::of(&config, tls.clone()),
        metrics.clone(),
        shutdown_receiver.clone(),
        events.clone(),
        directory,
    );

    let applier_settings = storage::ApplierSettings {
        asynchronous_commit: config.apply_async_commit,
        session_expiry_entries: config.limits.session_expiry_entries,
    };
    let (write_jobs, write_job_receiver) = mpsc::channel(1);
    let (write_done_sender, write_done) = mpsc::channel(1);
    // At most one apply is in flight, so at most one report waits here.
    let (outcomes_sender, outcomes) = mpsc::unbounded_channel();
    let writer = tokio::spawn(
        storage::run_writer(
            store,
            state_machine.clone(),
            applier_settings,
            write_job_receiver,
            write_done_sender,
            outcomes_sender.clone(),
            metrics.clone(),
        )
        .in_current_span(),
    );
    // A batch, and for a batch applied ahead, the pipeline's word on it.
    let (apply_batches, apply_batch_receiver) = mpsc::channel(2);
    let (apply_done_sender, apply_done) = mpsc::channel(1);
    let applier_task = tokio::spawn(
        storage::run_applier(
            applier,
            state_machine.clone(),
            applier_settings,
            apply_batch_receiver,
            apply_done_sender,
            outcomes_sender,
            metrics.clone(),
        )
        .in_current_span(),
    );

    let (transfer_report_sender, transfer_reports) = mpsc::channel(64);
    let (stage_jobs, stage_job_receiver) = mpsc::channel(1);
    let stager_task = tokio::spawn(
        snapshots::run_stager(
            stager,
            stage_job_receiver,
            transfer_report_sender.clone(),
            metrics.clone(),
        )
        .in_current_span(),
    );
    let open_view =
        snapshots::view_opener(store_config, state_machine.clone(), transfer_report_sender);
    let channels = driver::StorageChannels {
        write_jobs,
        write_done,
        apply_batches,
        apply_done,
        outcomes,
        stage_jobs,
        transfer_reports,
        open_view,
        entries_per_append_max,
    };
    let driver = driver::Driver::new(
        raft,
        config.clone(),
        transport,
        channels,
        metrics.clone(),
        seed.rotate_left(17),
        staged,
    );
    let applied = driver.applied();
    let mut driver_task = tokio::spawn(
        driver
            .run(event_receiver, shutdown_receiver.clone())
            .in_current_span(),
    );

    if let Some(address) = config.metrics_addr {
        let listener = metrics::bind_metrics(address)
            .await
            .with_context(|| format!("cannot listen on metrics address {address}"))?;
        tokio::spawn(metrics::serve_metrics(listener, metrics.clone()));
    }

    let shared = Arc::new(services::Shared {
        config: config.clone(),
        events,
        metrics,
        state_machine,
        reads,
        peers,
        peer_connect: transport::PeerConnectSettings::of(&config, tls.clone()),
        applied,
    });
    let mut server_task = serve_grpc(shared, tls, shutdown_receiver.clone()).await?;
    // Which task ended, so that it is not awaited twice (a JoinHandle
    // polled after completion panics, and the panic hid the error that
    // stopped the node).
    let (outcome, driver_done, server_done) = tokio::select! {
        () = shutdown => {
            tracing::info!("shutting down");
            (Ok(()), false, false)
        }
        result = &mut driver_task => (match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(anyhow::Error::new(error).context("storage failed; the node stops")),
            Err(error) => Err(anyhow::anyhow!("the driver panicked: {error}")),
        }, true, false),
        result = &mut server_task => {
            (result.map_err(anyhow::Error::new).and_then(|served| served), false, true)
        }
    };
    if let Err(error) = &outcome {
        tracing::error!("{error:#}");
    }
    let _ = shutdown_sender.send(true);
    if !server_done {
        let _ = tokio::time::timeout(Duration::from_secs(5), server_task).await;
    }
    if !driver_done {
        let _ = tokio::time::timeout(Duration::from_secs(5), driver_task).await;
    }
    // The driver dropped its channels: the writer finishes its write and
    // returns the store, whose fencing lock is released by closing it.
    if let Ok(Ok(store)) = tokio::time::timeout(Duration::from_secs(5), writer).await {
        store.close().await;
    }
    applier_task.abort();
    stager_task.abort();
    outcome
}

async fn wait_for(mut shutdown: watch::Receiver<bool>) {
    while !*shutdown.borrow() {
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

/// Binds the listeners and serves gRPC until shutdown: one listener for
/// everything, or, with `peer_listen_addr`, clients on `listen_addr` and
/// peers on their own. The returned task ends when a server fails or after
/// shutdown.
async fn serve_grpc<S: StateMachine>(
    shared: Arc<services::Shared<S>>,
    tls: Option<Arc<tls::TlsMaterial>>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
    let config = shared.config.clone();
    let (mut health_reporter, health_service) = tonic_health::server::health_reporter();
    tokio::spawn(async move {
        health_reporter
            .set_serving::<wire::client_server::ClientServer<services::ClientService<S>>>()
            .await;
    });
    let peer = wire::peer_server::PeerServer::new(services::PeerService {
        shared: shared.clone(),
        streams: Arc::new(tokio::sync::Semaphore::new(config.limits.peer_streams_max)),
    })
    .max_decoding_message_size(config.limits.peer_message_bytes_max);
    let mut servers = Vec::new();
    let clients = client_router(&shared, health_service.clone())?;
    match config.peer_listen_addr {
        Some(peer_address) => {
            servers.push((config.listen_addr, clients));
            let peers = server_builder(&config)
                .add_service(health_service)
                .add_service(peer);
            servers.push((peer_address, peers));
        }
        None => servers.push((config.listen_addr, clients.add_service(peer))),
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (address, router) in servers {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen on {address}"))?;
        tracing::info!(%address, tls = tls.is_some(), "serving");
        let accept = listener::AcceptSettings {
            connections_max: config.limits.connections_max,
            handshake_timeout: Duration::from_millis(config.limits.tls_handshake_timeout_ms),
            metrics: shared.metrics.clone(),
        };
        let stopped = wait_for(shutdown.clone());
        match &tls {
            Some(material) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(material.server_config());
                let incoming = listener::accept_tls(listener, acceptor, accept, shutdown.clone());
                tasks.spawn(router.serve_with_incoming_shutdown(incoming, stopped));
            }
            None => {
                let incoming = listener::accept_plain(listener, accept, shutdown.clone());
                tasks.spawn(router.serve_with_incoming_shutdown(incoming, stopped));
            }
        }
    }
    Ok(tokio::spawn(async move {
        while let Some(served) = tasks.join_next().await {
            served
                .map_err(anyhow::Error::new)?
                .context("the gRPC server failed")?;
        }
        Ok(())
    }))
}

/// Every connection: bounded streams per connection, keep-alives that
/// find dead peers and clients.
fn server_builder(config: &NodeConfig) -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .max_concurrent_streams(config.limits.streams_per_connection_max)
        .http2_keepalive_interval(Some(SERVER_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(SERVER_KEEPALIVE_TIMEOUT))
}

/// HTTP/2 pings on idle connections: a client or peer that vanished
/// without closing is found within interval + timeout and its connection
/// slot freed.
const SERVER_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const SERVER_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// The client-facing services: health, reflection, Client, Kv, Cluster.
fn client_router<S: StateMachine>(
    shared: &Arc<services::Shared<S>>,
    health_service: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
) -> anyhow::Result<tonic::transport::server::Router> {
    let mut reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(raftgres_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
    let mut reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(raftgres_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
    for set in S::file_descriptor_sets() {
        reflection_v1 = reflection_v1.register_encoded_file_descriptor_set(set);
        reflection_v1alpha = reflection_v1alpha.register_encoded_file_descriptor_set(set);
    }
    let reflection_v1 = reflection_v1.build_v1()?;
    let reflection_v1alpha = reflection_v1alpha.build_v1alpha()?;
    let client_bytes_max = shared.config.limits.command_bytes_max + 64 * 1024;
    // Health and reflection stay outside the bound, so that monitoring
    // still gets answers from an overloaded node.
    let admission = admission::Admission::new(
        shared.config.limits.client_requests_max,
        shared.metrics.clone(),
    );
    let node = services::NodeApi::new(shared.clone(), admission.clone());
    let client = admission.wrap(
        wire::client_server::ClientServer::new(services::ClientService {
            shared: shared.clone(),
        })
        .max_decoding_message_size(client_bytes_max),
    );
    let cluster = admission.wrap(wire::cluster_server::ClusterServer::new(
        services::ClusterService {
            shared: shared.clone(),
        },
    ));
    // The state machine's own API (the built-in KV serves raftgres.v1.Kv).
    let routes = S::client_routes(node).unwrap_or_default();
    Ok(server_builder(&shared.config)
        .add_routes(routes)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(client)
        .add_service(cluster))
}

impl From<StoreError> for error::ServiceError {
    fn from(error: StoreError) -> error::ServiceError {
        error::ServiceError::Unavailable(error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_source_address_must_be_one_of_the_hosts() {
        let config = |source: &str| {
            NodeConfig::from_toml(&format!(
                "cluster_id = \"dev\"\nnode_id = 1\nlisten_addr = \"127.0.0.1:7001\"\n\
                 postgres = \"host=127.0.0.1\"\npeer_source_addr = \"{source}\"\n\
                 [[peer]]\nid = 1\naddress = \"127.0.0.1:7001\"\n"
            ))
            .unwrap()
        };
        assert!(check_peer_source(&config("127.1.0.3")).is_ok());
        // Documentation space (RFC 5737): no host has it.
        let error = check_peer_source(&config("192.0.2.1")).unwrap_err();
        assert!(
            format!("{error:#}").contains("peer_source_addr 192.0.2.1 is not an address"),
            "{error:#}"
        );
        let mut without = config("127.0.0.1");
        without.peer_source_addr = None;
        assert!(check_peer_source(&without).is_ok());
    }
}
