//! The one place where a node's refusals become gRPC statuses a client can
//! act on (see `proto/raftgres/v1/client.proto`).

use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

pub use raftgres_proto::{LEADER_ADDRESS_KEY, LEADER_ID_KEY};

/// Why a client request was not served.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// This node is not the leader; retry at the leader when known.
    #[error("not the leader{}", leader_hint(*leader_id, leader_address))]
    NotLeader {
        /// The leader's id, if known.
        leader_id: Option<u64>,
        /// The leader's address, if known.
        leader_address: Option<String>,
    },
    /// No quorum, no leader, storage down or shutting down: retry later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The request is malformed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The request exceeds a configured limit.
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
    /// The outcome is unknown (it may still apply); retry with the same
    /// session to be safe.
    #[error("deadline exceeded: {0}")]
    DeadlineExceeded(String),
}

fn leader_hint(leader_id: Option<u64>, leader_address: &Option<String>) -> String {
    match (leader_id, leader_address) {
        (Some(id), Some(address)) => format!("; the leader is node {id} at {address}"),
        (Some(id), None) => format!("; the leader is node {id}"),
        _ => "; no leader is known".to_string(),
    }
}

impl From<ServiceError> for Status {
    fn from(error: ServiceError) -> Status {
        let message = error.to_string();
        match error {
            ServiceError::NotLeader {
                leader_id,
                leader_address,
            } => {
                let mut status = Status::new(Code::FailedPrecondition, message);
                if let Some(id) = leader_id {
                    status
                        .metadata_mut()
                        .insert(LEADER_ID_KEY, MetadataValue::from(id));
                }
                if let Some(address) = leader_address.and_then(|address| address.parse().ok()) {
                    status.metadata_mut().insert(LEADER_ADDRESS_KEY, address);
                }
                status
            }
            ServiceError::Unavailable(_) => Status::new(Code::Unavailable, message),
            ServiceError::InvalidArgument(_) => Status::new(Code::InvalidArgument, message),
            ServiceError::ResourceExhausted(_) => Status::new(Code::ResourceExhausted, message),
            ServiceError::DeadlineExceeded(_) => Status::new(Code::DeadlineExceeded, message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_leader_carries_the_leader_in_metadata() {
        let error = ServiceError::NotLeader {
            leader_id: Some(3),
            leader_address: Some("127.0.0.1:7003".into()),
        };
        let status = Status::from(error);
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(status.metadata().get(LEADER_ID_KEY).unwrap(), "3");
        assert_eq!(
            status.metadata().get(LEADER_ADDRESS_KEY).unwrap(),
            "127.0.0.1:7003"
        );
        assert!(status.message().contains("node 3"));
    }

    #[test]
    fn each_refusal_has_its_code() {
        let cases = [
            (ServiceError::Unavailable("x".into()), Code::Unavailable),
            (
                ServiceError::InvalidArgument("x".into()),
                Code::InvalidArgument,
            ),
            (
                ServiceError::ResourceExhausted("x".into()),
                Code::ResourceExhausted,
            ),
            (
                ServiceError::DeadlineExceeded("x".into()),
                Code::DeadlineExceeded,
            ),
            (
                ServiceError::NotLeader {
                    leader_id: None,
                    leader_address: None,
                },
                Code::FailedPrecondition,
            ),
        ];
        for (error, code) in cases {
            assert_eq!(Status::from(error).code(), code);
        }
    }
}
