//! `raftgres.v1.Client`: opaque commands for the state machine.

use std::sync::Arc;

use raftgres_proto::v1 as wire;
use tonic::{Request, Response, Status};

use super::Shared;
use crate::server::error::ServiceError;
use crate::server::state_machine::StateMachine;

/// `raftgres.v1.Client`.
pub(crate) struct ClientService<S> {
    pub(crate) shared: Arc<Shared<S>>,
}

#[tonic::async_trait]
impl<S: StateMachine> wire::client_server::Client for ClientService<S> {
    async fn submit(
        &self,
        request: Request<wire::SubmitRequest>,
    ) -> Result<Response<wire::SubmitResponse>, Status> {
        let shared = &self.shared;
        shared.metrics.client_requests.submit.inc();
        let request = request.into_inner();
        if request.command.len() <= shared.config.limits.command_bytes_max {
            shared
                .state_machine
                .validate(&request.command)
                .map_err(|reason| shared.refused(ServiceError::InvalidArgument(reason)))?;
        }
        let session = wire::Session {
            client_id: request.client_id,
            sequence: request.sequence,
        };
        let applied = shared
            .submit(request.command, Some(&session))
            .await
            .map_err(|error| shared.refused(error))?;
        Ok(Response::new(wire::SubmitResponse {
            index: applied.index.0,
            response: applied.response,
        }))
    }
}
