//! Conversions between the core's types and the wire (`raftgres.v1`) and
//! storage (`raftgres-storage-pg`) types. No logic beyond mapping; a
//! malformed wire message is refused here, before it reaches the core.

use prost::Message as _;
use raftgres_proto::v1 as wire;
use raftgres_storage_pg as storage;

use crate::core::{
    Entry, EntryPayload, HardState, LogIndex, Membership, Message, MessageBody, NodeId,
    SnapshotChunk, SnapshotMeta, Term,
};

/// Why a wire message was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// A required part is missing or out of range.
    #[error("malformed peer message: {0}")]
    Malformed(&'static str),
}

/// A membership on the wire (and inside a stored membership entry).
pub fn membership_to_wire(membership: &Membership) -> wire::Membership {
    let ids = |set: &std::collections::BTreeSet<NodeId>| set.iter().map(|id| id.0).collect();
    wire::Membership {
        voters: ids(&membership.voters),
        voters_outgoing: ids(&membership.voters_outgoing),
        learners: ids(&membership.learners),
        addresses: membership
            .addresses
            .iter()
            .map(|(id, address)| (id.0, address.clone()))
            .collect(),
    }
}

/// A wire membership in the core (the core validates it).
pub fn membership_from_wire(membership: wire::Membership) -> Membership {
    let ids = |list: Vec<u64>| list.into_iter().map(NodeId).collect();
    Membership {
        voters: ids(membership.voters),
        voters_outgoing: ids(membership.voters_outgoing),
        learners: ids(membership.learners),
        addresses: membership
            .addresses
            .into_iter()
            .map(|(id, address)| (NodeId(id), address))
            .collect(),
    }
}

/// The bytes of a membership entry (on the wire and in storage).
pub fn membership_to_bytes(membership: &Membership) -> Vec<u8> {
    membership_to_wire(membership).encode_to_vec()
}

/// A membership from the bytes of a membership entry.
pub fn membership_from_bytes(bytes: &[u8]) -> Result<Membership, prost::DecodeError> {
    wire::Membership::decode(bytes).map(membership_from_wire)
}

/// A core entry on the wire.
pub fn entry_to_wire(entry: &Entry) -> wire::Entry {
    let (kind, data) = match &entry.payload {
        EntryPayload::Blank => (wire::EntryKind::Blank, Vec::new()),
        EntryPayload::Command(data) => (wire::EntryKind::Command, data.clone()),
        EntryPayload::Membership(membership) => {
            (wire::EntryKind::Config, membership_to_bytes(membership))
        }
    };
    wire::Entry {
        term: entry.term.0,
        index: entry.index.0,
        kind: kind as i32,
        data,
    }
}

/// A wire entry in the core.
pub fn entry_from_wire(entry: wire::Entry) -> Result<Entry, DecodeError> {
    let payload = match wire::EntryKind::try_from(entry.kind) {
        Ok(wire::EntryKind::Blank) => EntryPayload::Blank,
        Ok(wire::EntryKind::Command) => EntryPayload::Command(entry.data),
        Ok(wire::EntryKind::Config) => EntryPayload::Membership(Box::new(
            membership_from_bytes(&entry.data)
                .map_err(|_| DecodeError::Malformed("a membership entry does not decode"))?,
        )),
        _ => return Err(DecodeError::Malformed("unknown entry kind")),
    };
    if entry.index == 0 || entry.term == 0 {
        return Err(DecodeError::Malformed(
            "entry index and term must be non-zero",
        ));
    }
    Ok(Entry {
        term: Term(entry.term),
        index: LogIndex(entry.index),
        payload,
    })
}

/// A core entry as stored.
pub fn entry_to_storage(entry: &Entry) -> storage::LogEntry {
    let (kind, data) = match &entry.payload {
        EntryPayload::Blank => (storage::EntryKind::Blank, Vec::new()),
        EntryPayload::Command(data) => (storage::EntryKind::Command, data.clone()),
        EntryPayload::Membership(membership) => {
            (storage::EntryKind::Config, membership_to_bytes(membership))
        }
    };
    storage::LogEntry {
        index: entry.index.0,
        term: entry.term.0,
        kind,
        data,
    }
}

/// A stored entry in the core.
pub fn entry_from_storage(entry: storage::LogEntry) -> Result<Entry, String> {
    let payload = match entry.kind {
        storage::EntryKind::Blank => EntryPayload::Blank,
        storage::EntryKind::Command => EntryPayload::Command(entry.data),
        storage::EntryKind::Config => {
            let membership = membership_from_bytes(&entry.data).map_err(|error| {
                format!(
                    "log entry {} is a membership that does not decode: {error}",
                    entry.index
                )
            })?;
            EntryPayload::Membership(Box::new(membership))
        }
    };
    Ok(Entry {
        term: Term(entry.term),
        index: LogIndex(entry.index),
        payload,
    })
}

/// Term and vote as stored.
pub fn hard_state_to_storage(hard_state: HardState) -> storage::HardState {
    storage::HardState {
        term: hard_state.term.0,
        voted_for: hard_state.voted_for.map(|node| node.0),
    }
}

/// Stored term and vote in the core.
pub fn hard_state_from_storage(hard_state: storage::HardState) -> HardState {
    HardState {
        term: Term(hard_state.term),
        voted_for: hard_state.voted_for.map(NodeId),
    }
}

/// Stored snapshot marker in the core.
pub fn snapshot_from_storage(meta: storage::SnapshotMeta) -> SnapshotMeta {
    SnapshotMeta {
        index: LogIndex(meta.index),
        term: Term(meta.term),
    }
}

/// A core message on the wire, with the sender's header; `None` for an
/// `InstallSnapshot`, which never leaves a node (snapshots travel as
/// chunks).
pub fn message_to_wire(cluster_id: &str, message: &Message) -> Option<wire::RaftMessage> {
    use wire::raft_message::Body;
    let body = match &message.body {
        MessageBody::VoteRequest {
            pre_vote,
            last_log_index,
            last_log_term,
            leadership_transfer,
        } => Body::VoteRequest(wire::VoteRequest {
            pre_vote: *pre_vote,
            last_log_index: last_log_index.0,
            last_log_term: last_log_term.0,
            leadership_transfer: *leadership_transfer,
        }),
        MessageBody::VoteResponse { pre_vote, granted } => Body::VoteResponse(wire::VoteResponse {
            pre_vote: *pre_vote,
            granted: *granted,
        }),
        MessageBody::AppendRequest {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
        } => Body::AppendRequest(wire::AppendRequest {
            prev_log_index: prev_log_index.0,
            prev_log_term: prev_log_term.0,
            entries: entries.iter().map(entry_to_wire).collect(),
            leader_commit: leader_commit.0,
        }),
        MessageBody::AppendResponse {
            index,
            rejected,
            reject_hint_index,
            reject_hint_term,
        } => Body::AppendResponse(wire::AppendResponse {
            index: index.0,
            rejected: *rejected,
            reject_hint_index: reject_hint_index.0,
            reject_hint_term: reject_hint_term.0,
        }),
        MessageBody::HeartbeatRequest {
            leader_commit,
            read_round,
        } => Body::HeartbeatRequest(wire::HeartbeatRequest {
            leader_commit: leader_commit.0,
            read_round: *read_round,
        }),
        MessageBody::HeartbeatResponse { read_round } => {
            Body::HeartbeatResponse(wire::HeartbeatResponse {
                read_round: *read_round,
            })
        }
        MessageBody::TimeoutNow => Body::TimeoutNow(wire::TimeoutNow {}),
        MessageBody::InstallSnapshot { .. } => return None,
        MessageBody::SnapshotChunk(chunk) => Body::SnapshotChunk(wire::SnapshotChunk {
            view: chunk.view,
            last_included_index: chunk.meta.index.0,
            last_included_term: chunk.meta.term.0,
            membership: Some(membership_to_wire(&chunk.membership)),
            seq: chunk.seq,
            data: chunk.data.clone(),
            last: chunk.last,
            checksum: chunk.checksum,
            running: chunk.running,
        }),
        MessageBody::SnapshotChunkAck {
            view,
            index,
            next_seq,
        } => Body::SnapshotChunkAck(wire::SnapshotChunkAck {
            view: *view,
            index: index.0,
            next_seq: *next_seq,
        }),
        MessageBody::ReadIndexRequest { context } => {
            Body::ReadIndexRequest(wire::ReadIndexRequest { context: *context })
        }
        MessageBody::ReadIndexResponse {
            context,
            index,
            refused,
        } => Body::ReadIndexResponse(wire::ReadIndexResponse {
            context: *context,
            index: index.0,
            refused: *refused,
        }),
    };
    Some(wire::RaftMessage {
        header: Some(wire::PeerHeader {
            cluster_id: cluster_id.to_string(),
            from: message.from.0,
            to: message.to.0,
        }),
        term: message.term.0,
        body: Some(body),
    })
}

/// A wire message in the core (the header was checked by the caller).
pub fn message_from_wire(message: wire::RaftMessage) -> Result<Message, DecodeError> {
    use wire::raft_message::Body;
    let header = message
        .header
        .ok_or(DecodeError::Malformed("missing header"))?;
    let body = match message.body.ok_or(DecodeError::Malformed("missing body"))? {
        Body::VoteRequest(request) => MessageBody::VoteRequest {
            pre_vote: request.pre_vote,
            last_log_index: LogIndex(request.last_log_index),
            last_log_term: Term(request.last_log_term),
            leadership_transfer: request.leadership_transfer,
        },
        Body::VoteResponse(response) => MessageBody::VoteResponse {
            pre_vote: response.pre_vote,
            granted: response.granted,
        },
        Body::AppendRequest(request) => {
            let entries = request
                .entries
                .into_iter()
                .map(entry_from_wire)
                .collect::<Result<Vec<_>, _>>()?;
            let contiguous = entries
                .iter()
                .enumerate()
                .all(|(offset, entry)| entry.index.0 == request.prev_log_index + 1 + offset as u64);
            if !contiguous {
                return Err(DecodeError::Malformed(
                    "append entries are not contiguous after prev_log_index",
                ));
            }
            MessageBody::AppendRequest {
                prev_log_index: LogIndex(request.prev_log_index),
                prev_log_term: Term(request.prev_log_term),
                entries,
                leader_commit: LogIndex(request.leader_commit),
            }
        }
        Body::AppendResponse(response) => MessageBody::AppendResponse {
            index: LogIndex(response.index),
            rejected: response.rejected,
            reject_hint_index: LogIndex(response.reject_hint_index),
            reject_hint_term: Term(response.reject_hint_term),
        },
        Body::HeartbeatRequest(request) => MessageBody::HeartbeatRequest {
            leader_commit: LogIndex(request.leader_commit),
            read_round: request.read_round,
        },
        Body::HeartbeatResponse(response) => MessageBody::HeartbeatResponse {
            read_round: response.read_round,
        },
        Body::TimeoutNow(_) => MessageBody::TimeoutNow,
        Body::SnapshotChunk(chunk) => MessageBody::SnapshotChunk(Box::new(SnapshotChunk {
            view: chunk.view,
            meta: SnapshotMeta {
                index: LogIndex(chunk.last_included_index),
                term: Term(chunk.last_included_term),
            },
            membership: membership_from_wire(chunk.membership.ok_or(DecodeError::Malformed(
                "a snapshot chunk without its membership",
            ))?),
            seq: chunk.seq,
            data: chunk.data,
            last: chunk.last,
            checksum: chunk.checksum,
            running: chunk.running,
        })),
        Body::SnapshotChunkAck(ack) => MessageBody::SnapshotChunkAck {
            view: ack.view,
            index: LogIndex(ack.index),
            next_seq: ack.next_seq,
        },
        Body::ReadIndexRequest(request) => MessageBody::ReadIndexRequest {
            context: request.context,
        },
        Body::ReadIndexResponse(response) => MessageBody::ReadIndexResponse {
            context: response.context,
            index: LogIndex(response.index),
            refused: response.refused,
        },
    };
    Ok(Message {
        from: NodeId(header.from),
        to: NodeId(header.to),
        term: Term(message.term),
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_kind_of_message() -> Vec<Message> {
        let entry = Entry {
            term: Term(2),
            index: LogIndex(5),
            payload: EntryPayload::Command(b"x".to_vec()),
        };
        let bodies = vec![
            MessageBody::VoteRequest {
                pre_vote: true,
                last_log_index: LogIndex(4),
                last_log_term: Term(1),
                leadership_transfer: true,
            },
            MessageBody::VoteResponse {
                pre_vote: false,
                granted: true,
            },
            MessageBody::AppendRequest {
                prev_log_index: LogIndex(4),
                prev_log_term: Term(1),
                entries: vec![
                    entry.clone(),
                    Entry {
                        index: LogIndex(6),
                        payload: EntryPayload::Blank,
                        ..entry.clone()
                    },
                    Entry {
                        index: LogIndex(7),
                        payload: EntryPayload::Membership(Box::new(Membership {
                            voters: [NodeId(1), NodeId(2)].into(),
                            learners: [NodeId(3)].into(),
                            addresses: [(NodeId(3), "node3:7000".to_string())].into(),
                            ..Membership::default()
                        })),
                        ..entry
                    },
                ],
                leader_commit: LogIndex(3),
            },
            MessageBody::AppendResponse {
                index: LogIndex(9),
                rejected: true,
                reject_hint_index: LogIndex(2),
                reject_hint_term: Term(1),
            },
            MessageBody::HeartbeatRequest {
                leader_commit: LogIndex(7),
                read_round: 11,
            },
            MessageBody::HeartbeatResponse { read_round: 11 },
            MessageBody::TimeoutNow,
            MessageBody::SnapshotChunk(Box::new(SnapshotChunk {
                view: 17,
                membership: Membership {
                    voters: [NodeId(1), NodeId(2), NodeId(4)].into(),
                    voters_outgoing: [NodeId(1), NodeId(2), NodeId(3)].into(),
                    learners: [NodeId(5)].into(),
                    addresses: [(NodeId(4), "10.0.0.4:7000".to_string())].into(),
                },
                meta: SnapshotMeta {
                    index: LogIndex(8),
                    term: Term(2),
                },
                seq: 4,
                data: vec![1, 2],
                last: true,
                checksum: SnapshotChunk::crc(0, &[1, 2]),
                running: 99,
            })),
            MessageBody::SnapshotChunkAck {
                view: 17,
                index: LogIndex(8),
                next_seq: 5,
            },
            MessageBody::ReadIndexRequest { context: 3 },
            MessageBody::ReadIndexResponse {
                context: 3,
                index: LogIndex(8),
                refused: false,
            },
        ];
        bodies
            .into_iter()
            .map(|body| Message {
                from: NodeId(1),
                to: NodeId(2),
                term: Term(3),
                body,
            })
            .collect()
    }

    #[test]
    fn every_message_survives_the_wire() {
        for message in every_kind_of_message() {
            let wire_message = message_to_wire("c", &message).unwrap();
            assert_eq!(wire_message.header.as_ref().unwrap().cluster_id, "c");
            assert_eq!(message_from_wire(wire_message).unwrap(), message);
        }
    }

    #[test]
    fn a_whole_snapshot_never_goes_on_the_wire() {
        let message = Message {
            from: NodeId(1),
            to: NodeId(2),
            term: Term(3),
            body: MessageBody::InstallSnapshot {
                snapshot: crate::core::Snapshot {
                    meta: SnapshotMeta {
                        index: LogIndex(8),
                        term: Term(2),
                    },
                    membership: Box::default(),
                },
            },
        };
        assert_eq!(message_to_wire("c", &message), None);
    }

    /// Decodes bytes as a peer message the way the peer service does:
    /// protobuf, then the core's types, then the protocol's invariants.
    fn decode_and_validate(bytes: &[u8]) {
        use prost::Message as _;
        if let Ok(message) = wire::RaftMessage::decode(bytes) {
            if let Ok(message) = message_from_wire(message) {
                let _ = crate::core::validate_message(&message);
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_bytes_never_panic_the_peer_decoder(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)
        ) {
            decode_and_validate(&bytes);
        }

        #[test]
        fn mutated_messages_never_panic_the_peer_decoder(
            which in 0usize..11,
            flips in proptest::collection::vec((proptest::prelude::any::<usize>(), proptest::prelude::any::<u8>()), 1..8),
            cut in proptest::prelude::any::<usize>(),
        ) {
            use prost::Message as _;
            let message = &every_kind_of_message()[which];
            let mut bytes = message_to_wire("c", message).unwrap().encode_to_vec();
            for (position, value) in flips {
                let length = bytes.len();
                bytes[position % length] ^= value;
            }
            bytes.truncate(cut % (bytes.len() + 1));
            decode_and_validate(&bytes);
        }
    }

    #[test]
    fn malformed_messages_are_refused() {
        let mut message = message_to_wire("c", &every_kind_of_message()[2]).unwrap();
        if let Some(wire::raft_message::Body::AppendRequest(request)) = message.body.as_mut() {
            request.entries[1].index = 9;
        }
        assert!(message_from_wire(message).is_err(), "a gap in the entries");
        let mut message = message_to_wire("c", &every_kind_of_message()[0]).unwrap();
        message.body = None;
        assert_eq!(
            message_from_wire(message),
            Err(DecodeError::Malformed("missing body"))
        );
    }
}
