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

async fn run_peer(
    peer: NodeId,
    address: String,
    settings: PeerConnectSettings,
    mut queue: mpsc::Receiver<wire::RaftMessage>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut attempt: u32 = 0;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let connected = tokio::select! {
            _ = shutdown.changed() => return,
            connected = connect(peer, &address, &settings) => connected,
        };
        let mut client = match connected {
            Ok(client) => client,
            Err(error) => {
                if attempt.is_multiple_of(20) {
                    tracing::debug!(%peer, %address, %error, "peer unreachable");
                }
                // Messages queued meanwhile are stale by the time the peer
                // is back; Raft will send what is still needed.
                while let Ok(_message) = queue.try_recv() {
                    metrics.peer_messages_dropped.inc();
                }
                attempt += 1;
                tokio::time::sleep(Duration::from_millis((50u64 << attempt.min(4)).min(1000)))
                    .await;
                continue;
            }
        };
        attempt = 0;
        let (stream_sender, stream_receiver) = mpsc::channel::<wire::RaftMessage>(64);
        let call = client.stream(ReceiverStream::new(stream_receiver));
        tokio::pin!(call);
        let forward = async {
            while let Some(message) = queue.recv().await {
                if stream_sender.send(message).await.is_err() {
                    return;
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
            () = forward => return,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn connect(
    peer: NodeId,
    address: &str,
    settings: &PeerConnectSettings,
) -> Result<PeerClient<tonic::transport::Channel>, tonic::transport::Error> {
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
