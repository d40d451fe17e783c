//! Outgoing peer traffic: one long-lived gRPC stream per peer, fed by a
//! bounded queue. Sending never blocks the driver: when a peer's queue is
//! full or the peer is unreachable, messages are dropped, which Raft
//! tolerates (it retransmits what matters).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use raftgres_proto::v1 as wire;
use raftgres_proto::v1::peer_client::PeerClient;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;
use tracing::Instrument as _;

use super::config::NodeConfig;
use super::convert;
use super::driver::Event;
use super::metrics::Metrics;
use super::peers::PeerDirectory;
use super::services::NOT_MEMBER_TERM;
use super::tls::TlsMaterial;
use crate::core::{Message, NodeId, Term};
use crate::pipeline::link::{LinkState, PeerLink};

/// How this node reaches its peers.
#[derive(Clone)]
pub(crate) struct PeerConnectSettings {
    /// Largest message sent or accepted (`limits.peer_message_bytes_max`).
    pub(crate) message_bytes_max: usize,
    /// Mutual TLS: this node's certificate as client identity, and the
    /// peer's certificate checked against the CA and the peer's node name.
    pub(crate) tls: Option<Arc<TlsMaterial>>,
    /// The local address outgoing connections are made from
    /// (`peer_source_addr`); `None`: the operating system's choice.
    pub(crate) source_address: Option<std::net::IpAddr>,
}

impl PeerConnectSettings {
    /// The settings `config` asks for, with `tls` loaded from it.
    pub(crate) fn of(config: &NodeConfig, tls: Option<Arc<TlsMaterial>>) -> PeerConnectSettings {
        PeerConnectSettings {
            message_bytes_max: config.limits.peer_message_bytes_max,
            tls,
            source_address: config.peer_source_addr,
        }
    }
}

/// Queues to every peer, one sender task each, following the peer
/// directory: a peer that joins gets a task, one that leaves (or moves to
/// another address) has its task stopped.
pub(crate) struct Transport {
    links: BTreeMap<NodeId, Link>,
    cluster_id: Arc<str>,
    queue_messages_max: usize,
    connect: PeerConnectSettings,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
    /// Where refusals for not being a member go (the driver).
    refusals: mpsc::Sender<Event>,
    /// The directory followed last, published to the peer gate.
    published: watch::Sender<Arc<PeerDirectory>>,
}

/// One peer's queue and the task that feeds its stream.
struct Link {
    address: String,
    queue: mpsc::Sender<wire::RaftMessage>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Transport {
    /// A transport without peers yet (see [`Transport::follow`]).
    pub(crate) fn new(
        cluster_id: &str,
        queue_messages_max: usize,
        connect: PeerConnectSettings,
        metrics: Arc<Metrics>,
        shutdown: watch::Receiver<bool>,
        refusals: mpsc::Sender<Event>,
        published: watch::Sender<Arc<PeerDirectory>>,
    ) -> Transport {
        Transport {
            links: BTreeMap::new(),
            cluster_id: cluster_id.into(),
            queue_messages_max,
            connect,
            metrics,
            shutdown,
            refusals,
            published,
        }
    }

    /// Opens links to the directory's peers that have none (or moved),
    /// closes those to nodes no longer in it, and hands the directory to
    /// the peer gate.
    pub(crate) fn follow(&mut self, directory: PeerDirectory) {
        let wanted = directory.addresses();
        self.links.retain(|id, link| {
            wanted
                .get(id)
                .is_some_and(|address| *address == link.address)
        });
        for (id, address) in wanted {
            if self.links.contains_key(id) {
                continue;
            }
            tracing::info!(peer = id.0, %address, "opening a link to a peer");
            let (queue, receiver) = mpsc::channel(self.queue_messages_max);
            let task = tokio::spawn(
                run_peer(
                    *id,
                    address.clone(),
                    self.connect.clone(),
                    receiver,
                    self.metrics.clone(),
                    self.shutdown.clone(),
                    self.refusals.clone(),
                )
                .in_current_span(),
            );
            self.links.insert(
                *id,
                Link {
                    address: address.clone(),
                    queue,
                    task,
                },
            );
        }
        self.published.send_replace(Arc::new(directory));
    }

    /// The directory followed last.
    pub(crate) fn directory(&self) -> Arc<PeerDirectory> {
        self.published.borrow().clone()
    }

    /// Queues a message for its peer, or drops it (no link: the peer is
    /// not in the directory).
    pub(crate) fn send(&self, message: &Message) {
        let Some(link) = self.links.get(&message.to) else {
            self.metrics.peer_messages_dropped.inc();
            return;
        };
        let Some(wire_message) = convert::message_to_wire(&self.cluster_id, message) else {
            // The pipeline streams snapshots as chunks; a whole one never
            // leaves the node.
            self.metrics.peer_messages_dropped.inc();
            return;
        };
        if link.queue.try_send(wire_message).is_ok() {
            self.metrics.peer_messages_sent.inc();
        } else {
            self.metrics.peer_messages_dropped.inc();
        }
    }
}

/// How a stream's forwarding ended.
enum Forwarding {
    /// The transport is gone: the node is shutting down.
    QueueClosed,
    /// The stream's body was dropped (the connection or the call ended).
    StreamClosed,
}

/// Feeds one peer's stream for as long as the node runs. When to connect
/// and to wait is [`PeerLink`]'s decision (pure, and driven by the
/// simulator too); this task only carries it out. A stream that ends, in
/// whatever way, is followed by another: only shutdown or the transport
/// being dropped ends the task.
async fn run_peer(
    peer: NodeId,
    address: String,
    settings: PeerConnectSettings,
    mut queue: mpsc::Receiver<wire::RaftMessage>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
    refusals: mpsc::Sender<Event>,
) {
    let mut link = PeerLink::new();
    let mut failures: u32 = 0;
    loop {
        if let LinkState::Waiting(wait) = link.state() {
            if !wait.is_zero() {
                tokio::select! {
                    _ = shutdown.changed() => return,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
        if *shutdown.borrow() || link.state() == LinkState::Closed {
            return;
        }
        // One deadline for the whole connect (TCP, TLS and the HTTP/2
        // handshake): a peer that accepts and then says nothing must not
        // hold the link forever.
        let connecting = tokio::time::timeout(CONNECT_DEADLINE, connect(peer, &address, &settings));
        let connected = tokio::select! {
            _ = shutdown.changed() => return,
            connected = connecting => connected.unwrap_or_else(|_| Err(ConnectError::Deadline)),
        };
        let mut client = match connected {
            Ok(client) => client,
            Err(error) => {
                if failures.is_multiple_of(20) {
                    tracing::debug!(%peer, %address, %error, "peer unreachable");
                }
                failures = failures.wrapping_add(1);
                // Messages queued meanwhile are stale by the time the peer
                // is back; Raft will send what is still needed.
                while let Ok(_message) = queue.try_recv() {
                    metrics.peer_messages_dropped.inc();
                }
                link.connect_failed();
                continue;
            }
        };
        failures = 0;
        link.connected();
        let (stream_sender, stream_receiver) = mpsc::channel::<wire::RaftMessage>(64);
        let call = client.stream(ReceiverStream::new(stream_receiver));
        tokio::pin!(call);
        let forward = async {
            loop {
                let Some(message) = queue.recv().await else {
                    return Forwarding::QueueClosed;
                };
                if stream_sender.send(message).await.is_err() {
                    metrics.peer_messages_dropped.inc();
                    return Forwarding::StreamClosed;
                }
            }
        };
        tokio::select! {
            _ = shutdown.changed() => return,
            result = &mut call => {
                if let Err(status) = result {
                    tracing::debug!(%peer, %address, %status, "peer stream ended");
                    if let Some(term) = not_member_term(&status) {
                        let _ = refusals.try_send(Event::NotHeard { by: peer, term });
                    }
                }
            }
            forwarding = forward => match forwarding {
                Forwarding::QueueClosed => return,
                Forwarding::StreamClosed => {
                    tracing::debug!(%peer, %address, "peer stream closed before its answer");
                }
            },
        }
        link.stream_ended();
    }
}

/// The refusing node's term, when `status` refused this node for not
/// being a member.
fn not_member_term(status: &tonic::Status) -> Option<Term> {
    if status.code() != tonic::Code::FailedPrecondition {
        return None;
    }
    let term = status.metadata().get(NOT_MEMBER_TERM)?.to_str().ok()?;
    term.parse().ok().map(Term)
}

/// The longest a whole connect attempt may take.
const CONNECT_DEADLINE: Duration = Duration::from_secs(2);

/// Why a connect attempt failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
    #[error("no connection within {CONNECT_DEADLINE:?}")]
    Deadline,
}

pub(super) async fn connect(
    peer: NodeId,
    address: &str,
    settings: &PeerConnectSettings,
) -> Result<PeerClient<tonic::transport::Channel>, ConnectError> {
    let channel = connect_channel(peer, address, settings).await?;
    Ok(PeerClient::new(channel)
        .max_decoding_message_size(settings.message_bytes_max)
        .max_encoding_message_size(settings.message_bytes_max))
}

/// A channel to node `peer` at `address`, made as peer connections are
/// (TLS with this node's certificate, the peer's checked; the configured
/// source address).
pub(crate) async fn connect_channel(
    peer: NodeId,
    address: &str,
    settings: &PeerConnectSettings,
) -> Result<tonic::transport::Channel, ConnectError> {
    let scheme = if settings.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{address}"))?
        .connect_timeout(Duration::from_millis(500))
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5));
    if let Some(tls) = &settings.tls {
        endpoint = endpoint.tls_config(tls.peer_client_config(peer))?;
    }
    // The connector `Endpoint::connect` would make, bound to the source
    // address when the configuration names one (tonic adds TLS on top).
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.enforce_http(false);
    connector.set_nodelay(true);
    connector.set_local_address(settings.source_address);
    Ok(endpoint.connect_with_connector(connector).await?)
}
