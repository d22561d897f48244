//! One concern of the pipeline, as pingora's phases are: a request phase and a response
//! phase, each a no-op unless the stage has something to do there.

use std::{future::Future, pin::Pin};

use super::{ProxyError, Request, RequestCtx, Response};

/// A boxed future, for the object-safe [`Stage`] trait.
pub type StageFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a stage decided about a request.
pub enum Flow {
    /// Hand the (possibly rewritten) request to the next stage.
    Continue(Request),
    /// Answer the client now, deliberately (a limit, a deferral, a hidden post): the
    /// upstream never sees this request. A stage that *cannot* go on returns a
    /// [`ProxyError`] instead, and the pipeline answers it through the one mapping.
    Respond(Response),
}

/// One concern of the pipeline. Both phases default to passing through.
///
/// Request phases run in pipeline order, response phases in reverse order (the stage
/// closest to the upstream sees the response first), like nested middleware. A stage
/// whose request phase ran sees the response, whoever made it: the instance, a later
/// stage's [`Flow::Respond`], or the mapping of a later stage's failure.
pub trait Stage: Send + Sync + 'static {
    /// Short name for logs and metrics.
    fn name(&self) -> &'static str;

    /// Inspect or rewrite the request, or answer it.
    fn on_request<'a>(&'a self, _ctx: &'a mut RequestCtx, req: Request) -> StageFuture<'a, Result<Flow, ProxyError>> {
        Box::pin(async move { Ok(Flow::Continue(req)) })
    }

    /// Inspect or rewrite the response.
    fn on_response<'a>(
        &'a self,
        _ctx: &'a mut RequestCtx,
        resp: Response,
    ) -> StageFuture<'a, Result<Response, ProxyError>> {
        Box::pin(async move { Ok(resp) })
    }
}
