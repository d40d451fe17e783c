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

use super::convert;
use super::metrics::Metrics;
use super::tls::TlsMaterial;
use crate::core::{Message, NodeId};
use crate::pipeline::link::{LinkState, PeerLink};

/// How this node reaches its peers.
#[derive(Clone)]
pub(crate) struct PeerConnectSettings {
    /// Largest message sent or accepted (`limits.peer_message_bytes_max`).
    pub(crate) message_bytes_max: usize,
    /// Mutual TLS: this node's certificate as client identity, and the
    /// peer's certificate checked against the CA and the peer's node name.
    pub(crate) tls: Option<Arc<TlsMaterial>>,
}

/// Queues to every peer.
pub(crate) struct Transport {
    queues: BTreeMap<NodeId, mpsc::Sender<wire::RaftMessage>>,
    cluster_id: Arc<str>,
    metrics: Arc<Metrics>,
}

impl Transport {
    /// Starts one sender task per peer.
    pub(crate) fn start(
        cluster_id: &str,
        peers: &[(NodeId, String)],
        queue_messages_max: usize,
        connect: PeerConnectSettings,
        metrics: Arc<Metrics>,
        shutdown: watch::Receiver<bool>,
    ) -> Transport {
        let mut queues = BTreeMap::new();
        for (id, address) in peers {
            let (sender, receiver) = mpsc::channel(queue_messages_max);
            queues.insert(*id, sender);
            tokio::spawn(run_peer(
                *id,
                address.clone(),
                connect.clone(),
                receiver,
                metrics.clone(),
                shutdown.clone(),
            ));
        }
        Transport {
            queues,
            cluster_id: cluster_id.into(),
            metrics,
        }
    }

    /// Queues a message for its peer, or drops it.
    pub(crate) fn send(&self, message: &Message) {
        let Some(queue) = self.queues.get(&message.to) else {
            return;
        };
        let wire_message = convert::message_to_wire(&self.cluster_id, message);
        if queue.try_send(wire_message).is_ok() {
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

/// The longest a whole connect attempt may take.
const CONNECT_DEADLINE: Duration = Duration::from_secs(2);

/// Why a connect attempt failed.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
    #[error("no connection within {CONNECT_DEADLINE:?}")]
    Deadline,
}

async fn connect(
    peer: NodeId,
    address: &str,
    settings: &PeerConnectSettings,
) -> Result<PeerClient<tonic::transport::Channel>, ConnectError> {
    let scheme = if settings.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{address}"))?
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5));
    if let Some(tls) = &settings.tls {
        endpoint = endpoint.tls_config(tls.peer_client_config(peer))?;
    }
    let channel = endpoint.connect().await?;
    Ok(PeerClient::new(channel)
        .max_decoding_message_size(settings.message_bytes_max)
        .max_encoding_message_size(settings.message_bytes_max))
}
