//! `raftgres.v1.Peer`: who may send peer messages, and which messages
//! reach the driver.

use std::sync::Arc;

use prost::Message as _;
use raftgres_proto::v1 as wire;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::Shared;
use crate::core::NodeId;
use crate::server::convert;
use crate::server::driver::Event;
use crate::server::state_machine::StateMachine;

/// Why a peer message was refused.
#[derive(Debug)]
enum PeerRejection {
    /// Not decodable, or breaking the protocol's invariants.
    Malformed(String),
    /// From another cluster, or for another node.
    Foreign(String),
    /// From a node this one does not count as a member (`Raft::hears`);
    /// the refusal carries this node's term, so that a removed node
    /// learns the cluster moved on.
    NotMember { message: String, term: u64 },
    /// The sender did not prove who it is.
    Unauthenticated(String),
    /// The sender proved an identity that may not send this message.
    Forbidden(String),
    /// A limit is reached.
    Exhausted(String),
}

impl From<PeerRejection> for Status {
    fn from(rejection: PeerRejection) -> Status {
        match rejection {
            PeerRejection::Malformed(message) => Status::invalid_argument(message),
            PeerRejection::Foreign(message) => Status::failed_precondition(message),
            PeerRejection::NotMember { message, term } => {
                let mut status = Status::failed_precondition(message);
                status.metadata_mut().insert(NOT_MEMBER_TERM, term.into());
                status
            }
            PeerRejection::Unauthenticated(message) => Status::unauthenticated(message),
            PeerRejection::Forbidden(message) => Status::permission_denied(message),
            PeerRejection::Exhausted(message) => Status::resource_exhausted(message),
        }
    }
}

/// Metadata key of a refusal for not being a member: the refusing node's
/// term (read by the sender's transport).
pub(crate) const NOT_MEMBER_TERM: &str = "raftgres-term";

/// Who is on the other end of a peer RPC, as far as the transport proves.
enum PeerCredentials {
    /// A TLS client certificate chain, verified against the CA during the
    /// handshake; its leaf must name the sending node.
    Certificate(Arc<Vec<rustls::pki_types::CertificateDer<'static>>>),
    /// Plain text from an address this node admits (loopback, or any with
    /// `insecure_peers`): nothing is proven beyond the header.
    Plaintext,
}

/// Checks every peer message of one RPC: the sender's identity once, the
/// header and the protocol's invariants for each message. A stream speaks
/// for one node: the first message's sender is pinned.
struct PeerGate<'a, S> {
    service: &'a PeerService<S>,
    credentials: PeerCredentials,
    sender: Option<NodeId>,
}

impl<S: StateMachine> PeerGate<'_, S> {
    fn check(&mut self, message: wire::RaftMessage) -> Result<crate::core::Message, PeerRejection> {
        let config = &self.service.shared.config;
        let Some(header) = &message.header else {
            return Err(PeerRejection::Malformed(
                "peer message without a header".into(),
            ));
        };
        if header.cluster_id != config.cluster_id {
            return Err(PeerRejection::Foreign(format!(
                "message for cluster {:?} reached node {} of cluster {:?}",
                header.cluster_id, config.node_id, config.cluster_id
            )));
        }
        if header.to != config.node_id {
            return Err(PeerRejection::Foreign(format!(
                "message for node {} reached node {} (is an address reused?)",
                header.to, config.node_id
            )));
        }
        if header.from == config.node_id {
            return Err(PeerRejection::Foreign(format!(
                "a message claims to come from node {}, the node it reached",
                header.from
            )));
        }
        self.check_sender(NodeId(header.from))?;
        let message = convert::message_from_wire(message)
            .map_err(|error| PeerRejection::Malformed(error.to_string()))?;
        let term = crate::core::Term(self.service.shared.metrics.term.get());
        if !self.service.shared.peers.borrow().hears(&message, term) {
            return Err(PeerRejection::NotMember {
                message: format!(
                    "node {} is not a member of the cluster as node {} knows it, and its {} is not a current leader's or a campaign",
                    message.from,
                    config.node_id,
                    message.body.kind()
                ),
                term: term.0,
            });
        }
        crate::core::validate_message(&message)
            .map_err(|error| PeerRejection::Malformed(error.to_string()))?;
        if let crate::core::MessageBody::AppendRequest { entries, .. } = &message.body {
            for entry in entries {
                self.check_command(entry)?;
            }
        }
        if let crate::core::MessageBody::SnapshotChunk(chunk) = &message.body {
            let state_machine = &*self.service.shared.state_machine;
            crate::server::snapshots::validate_chunk_data(state_machine, &chunk.data)
                .map_err(PeerRejection::Malformed)?;
        }
        Ok(message)
    }

    /// A replicated command must be what a leader proposes: a session
    /// envelope. The command inside is not checked against the state
    /// machine's `validate` here: the leader checked it before proposing,
    /// and a stricter `validate` in a newer version would otherwise make
    /// followers refuse their leader's log for good during an upgrade.
    fn check_command(&self, entry: &crate::core::Entry) -> Result<(), PeerRejection> {
        let crate::core::EntryPayload::Command(data) = &entry.payload else {
            return Ok(());
        };
        wire::LogCommand::decode(data.as_slice())
            .map(|_| ())
            .map_err(|error| {
                PeerRejection::Malformed(format!(
                    "entry {} holds no command envelope: {error}",
                    entry.index
                ))
            })
    }

    /// The message's sender must be the node the credentials prove, and
    /// the same node for a whole stream.
    fn check_sender(&mut self, from: NodeId) -> Result<(), PeerRejection> {
        if let Some(sender) = self.sender {
            if sender != from {
                return Err(PeerRejection::Forbidden(format!(
                    "a stream opened by node {sender} carried a message from node {from}"
                )));
            }
            return Ok(());
        }
        if let PeerCredentials::Certificate(chain) = &self.credentials {
            let names_sender = chain
                .first()
                .is_some_and(|leaf| crate::server::tls::certificate_names_node(leaf, from));
            if !names_sender {
                return Err(PeerRejection::Forbidden(format!(
                    "the client certificate does not name {}, the node the message claims to come from",
                    crate::server::tls::node_name(from)
                )));
            }
        }
        self.sender = Some(from);
        Ok(())
    }
}

/// `raftgres.v1.Peer`.
pub(crate) struct PeerService<S> {
    pub(crate) shared: Arc<Shared<S>>,
    /// Bounds concurrent inbound `Peer.Stream` calls.
    pub(crate) streams: Arc<tokio::sync::Semaphore>,
}

impl<S: StateMachine> PeerService<S> {
    /// What the transport proves about the caller. With TLS, a client
    /// certificate is required (whatever `require_client_certificate`
    /// says for clients); without, the caller must be admitted by address.
    fn authenticate<T>(&self, request: &Request<T>) -> Result<PeerGate<'_, S>, PeerRejection> {
        let config = &self.shared.config;
        let credentials = if config.tls.is_some() {
            match request.peer_certs() {
                Some(chain) if !chain.is_empty() => PeerCredentials::Certificate(chain),
                _ => {
                    return Err(PeerRejection::Unauthenticated(
                        "peer RPCs need a client certificate signed by the cluster's CA and naming the sending node".into(),
                    ))
                }
            }
        } else if config.admits_plaintext_peer(request.remote_addr()) {
            PeerCredentials::Plaintext
        } else {
            return Err(PeerRejection::Forbidden(format!(
                "without TLS, node {} serves peer RPCs only to loopback connections (see insecure_peers)",
                config.node_id
            )));
        };
        Ok(PeerGate {
            service: self,
            credentials,
            sender: None,
        })
    }

    fn refused(&self, rejection: PeerRejection, remote: Option<std::net::SocketAddr>) -> Status {
        self.shared.metrics.peer_messages_refused.inc();
        tracing::warn!(?remote, reason = ?rejection, "refused a peer message");
        Status::from(rejection)
    }

    async fn deliver(&self, message: crate::core::Message) -> Result<(), Status> {
        self.shared
            .events
            .send(Event::Peer(message))
            .await
            .map_err(|_| Status::unavailable("shutting down"))
    }
}

#[tonic::async_trait]
impl<S: StateMachine> wire::peer_server::Peer for PeerService<S> {
    async fn stream(
        &self,
        request: Request<Streaming<wire::RaftMessage>>,
    ) -> Result<Response<wire::StreamAck>, Status> {
        let remote = request.remote_addr();
        let mut gate = self
            .authenticate(&request)
            .map_err(|rejection| self.refused(rejection, remote))?;
        let Ok(_slot) = self.streams.clone().try_acquire_owned() else {
            return Err(self.refused(
                PeerRejection::Exhausted(format!(
                    "limits.peer_streams_max ({}) peer streams are open",
                    self.shared.config.limits.peer_streams_max
                )),
                remote,
            ));
        };
        let mut stream = request.into_inner();
        let mut accepted = 0;
        while let Some(message) = stream.next().await {
            let message = gate
                .check(message?)
                .map_err(|rejection| self.refused(rejection, remote))?;
            self.deliver(message).await?;
            accepted += 1;
        }
        Ok(Response::new(wire::StreamAck { accepted }))
    }

    async fn join(
        &self,
        request: Request<wire::JoinRequest>,
    ) -> Result<Response<wire::JoinResponse>, Status> {
        let remote = request.remote_addr();
        let mut gate = self
            .authenticate(&request)
            .map_err(|rejection| self.refused(rejection, remote))?;
        let config = &self.shared.config;
        let header = request.into_inner().header.unwrap_or_default();
        if header.cluster_id != config.cluster_id || header.to != config.node_id || header.from == 0
        {
            return Err(self.refused(
                PeerRejection::Foreign(format!(
                    "a join request from node {} of cluster {:?} for node {} reached node {} of cluster {:?}",
                    header.from, header.cluster_id, header.to, config.node_id, config.cluster_id
                )),
                remote,
            ));
        }
        gate.check_sender(NodeId(header.from))
            .map_err(|rejection| self.refused(rejection, remote))?;
        let status = super::node_status(&self.shared).await?;
        Ok(Response::new(wire::JoinResponse {
            membership: Some(convert::membership_to_wire(&status.core.membership)),
            leader_id: status.core.leader.map_or(0, |leader| leader.0),
        }))
    }

    async fn send(
        &self,
        request: Request<wire::RaftMessage>,
    ) -> Result<Response<wire::SendAck>, Status> {
        let remote = request.remote_addr();
        let mut gate = self
            .authenticate(&request)
            .map_err(|rejection| self.refused(rejection, remote))?;
        let message = gate
            .check(request.into_inner())
            .map_err(|rejection| self.refused(rejection, remote))?;
        self.deliver(message).await?;
        Ok(Response::new(wire::SendAck {}))
    }
}
