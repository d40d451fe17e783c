//! Admission of client requests: at most `limits.client_requests_max` are
//! served at once by one node, across all connections. A request beyond
//! that is answered RESOURCE_EXHAUSTED at once, before it is decoded:
//! queueing it would only turn overload into timeouts.
//!
//! Every client-facing service is wrapped in one [`Admitted`] sharing one
//! semaphore, so the bound is a single mechanism rather than a check at the
//! top of each handler. Peer RPCs are not admitted here (they have their
//! own bound on streams, `limits.peer_streams_max`).

use std::sync::Arc;

use tokio::sync::Semaphore;
use tonic::body::BoxBody;
use tonic::codegen::http;
use tonic::codegen::{BoxFuture, Context, Poll, Service};
use tonic::server::NamedService;
use tonic::Status;

use super::metrics::Metrics;

/// The node-wide bound, shared by every [`Admitted`] service.
#[derive(Clone, Debug)]
pub(crate) struct Admission {
    slots: Arc<Semaphore>,
    requests_max: usize,
    metrics: Arc<Metrics>,
}

impl Admission {
    /// A bound of `requests_max` requests in service at once.
    pub(crate) fn new(requests_max: usize, metrics: Arc<Metrics>) -> Admission {
        Admission {
            slots: Arc::new(Semaphore::new(requests_max)),
            requests_max,
            metrics,
        }
    }

    /// `service`, admitting requests through this bound.
    pub(crate) fn wrap<S>(&self, service: S) -> Admitted<S> {
        Admitted {
            inner: service,
            admission: self.clone(),
        }
    }
}

/// A gRPC service whose requests each hold one admission slot until their
/// response is ready (see [`crate::server::NodeApi::admit`]).
#[derive(Clone, Debug)]
pub struct Admitted<S> {
    inner: S,
    admission: Admission,
}

impl<S: NamedService> NamedService for Admitted<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for Admitted<S>
where
    S: Service<http::Request<B>, Response = http::Response<BoxBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<BoxBody>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let Ok(slot) = self.admission.slots.clone().try_acquire_owned() else {
            self.admission.metrics.client_requests.refused.inc();
            let status = Status::resource_exhausted(format!(
                "resource exhausted: the node is serving limits.client_requests_max ({}) requests; retry later",
                self.admission.requests_max
            ));
            return Box::pin(async move { Ok(status.into_http()) });
        };
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            drop(slot);
            response
        })
    }
}
