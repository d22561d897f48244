//! The inbound proxy: route classification, the stage pipeline, the upstream client.
//!
//! A request is classified once ([`Route`]), given a [`RequestCtx`] that carries the
//! client's pseudonym (never the raw address), and then passed through the ordered
//! [`Stage`]s of [`pipeline`]. Each stage owns one concern, as pingora's phases do: the
//! shield decides pass/defer/reject, the privacy stage strips client-IP headers and
//! scrubs media, expiry answers for expired posts and learns new ones. Any stage may
//! end the request with its own response ([`Flow::Respond`]).
//!
//! What requests may hold of the relay (body bytes in memory, long-lived streams,
//! requests running at the instance) is budgeted per connection and in total
//! ([`budget`]); every request pavise itself sends to the instance says whom it is for
//! ([`behalf`]).

pub mod behalf;
pub mod budget;
pub mod error;
pub mod hop;
pub mod method;
pub mod pipeline;
pub mod route;
pub mod upstream;

use std::{future::Future, pin::Pin, sync::Arc, time::Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};

pub use behalf::OnBehalfOf;
pub use budget::ConnShare;
pub use error::ProxyError;
pub use route::{Route, RouteClass};

/// Errors carried inside streaming bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The one body type every stage sees: boxed, so a stage may swap the body (a scrubbed
/// upload, a synthetic answer) without changing the pipeline's types.
pub type Body = BoxBody<Bytes, BoxError>;

pub type Request = http::Request<Body>;
pub type Response = http::Response<Body>;

/// A boxed future, for the object-safe [`Stage`] trait.
pub type StageFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Wraps any body into [`Body`].
pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed()
}

pub fn empty() -> Body {
    boxed(Empty::<Bytes>::new())
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    boxed(Full::new(bytes.into()))
}

/// What pavise knows about one request, made once at accept.
///
/// The client's raw address is not here: it stays inside [`crate::privacy::ClientAddr`],
/// which only the pseudonymizer can read. Stages key on `pseudonym`.
#[derive(Debug)]
pub struct RequestCtx {
    pub route: Route,
    /// What the instance will see in `X-Forwarded-For`; also the shield's per-client key.
    pub pseudonym: std::net::IpAddr,
    /// Whether the client reached pavise over TLS (pavise's own, or a trusted edge's).
    pub https: bool,
    /// The `Host` (or `:authority`) the client addressed.
    pub host: Option<String>,
    pub started: Instant,
    /// Per-request state a stage hands to its own response phase (or to a later stage):
    /// e.g. the bearer token expiry saw on a status creation.
    pub extensions: http::Extensions,
    /// The connection's share of the relay's budgets (body memory, streams).
    pub share: Arc<ConnShare>,
    /// The body bytes this request holds in memory, once a stage holds any.
    held: std::sync::OnceLock<Arc<budget::Charge>>,
}

impl RequestCtx {
    /// A context for a request on `share`'s connection.
    pub fn new(
        route: Route,
        pseudonym: std::net::IpAddr,
        https: bool,
        host: Option<String>,
        share: Arc<ConnShare>,
    ) -> RequestCtx {
        RequestCtx {
            route,
            pseudonym,
            https,
            host,
            started: Instant::now(),
            extensions: http::Extensions::new(),
            share,
            held: std::sync::OnceLock::new(),
        }
    }

    /// Every stage that keeps body bytes in memory (to read a form, verify a digest,
    /// rewrite JSON) reads the body through this: its first `up_to` bytes are charged
    /// to the relay's body budgets as they arrive, until the request is answered. Past
    /// a budget the body fails with an error that every reader answers as `503` with
    /// `Retry-After` (`413` when this request alone is too large). See [`budget`].
    pub fn hold_body(&self, body: Body, up_to: u64) -> Body {
        let charge = self.held.get_or_init(|| budget::Charge::new(self.share.clone())).clone();
        boxed(budget::HeldBody::new(body, charge, up_to))
    }

    /// Body bytes this request holds in memory now.
    pub fn body_held(&self) -> u64 {
        self.held.get().map_or(0, |c| c.held())
    }
}

/// The client connection a request arrived on, as a listener hands it to the pipeline.
pub struct ClientConn {
    /// The connecting peer. Only [`crate::privacy::ClientAddr::resolve`] reads it: the
    /// pipeline turns it into the pseudonym at once.
    pub peer: std::net::IpAddr,
    /// Whether the connection is TLS (pavise's own).
    pub https: bool,
    /// The connection's place under `public.max_connections` and in
    /// `pavise_open_connections`, released when the last holder drops it: a WebSocket
    /// tunnel outlives the HTTP exchange that opened it, and keeps its slot.
    pub slot: Slot,
    /// The connection's share of the relay's budgets (see [`budget`]).
    pub share: Arc<ConnShare>,
}

/// Something kept alive for as long as it is held (see [`ClientConn::slot`]).
pub type Slot = std::sync::Arc<dyn std::any::Any + Send + Sync>;

/// What a stage decided about a request.
pub enum Flow {
    /// Hand the (possibly rewritten) request to the next stage.
    Continue(Request),
    /// Answer the client now; the upstream never sees this request.
    Respond(Response),
}

/// One concern of the pipeline. Both phases default to passing through.
///
/// Request phases run in pipeline order, response phases in reverse order (the stage
/// closest to the upstream sees the response first), like nested middleware.
pub trait Stage: Send + Sync + 'static {
    /// Short name for logs and metrics.
    fn name(&self) -> &'static str;

    /// Inspect or rewrite the request, or answer it.
    fn on_request<'a>(&'a self, _ctx: &'a mut RequestCtx, req: Request) -> StageFuture<'a, Result<Flow, ProxyError>> {
        Box::pin(async move { Ok(Flow::Continue(req)) })
    }

    /// Inspect or rewrite the instance's response.
    fn on_response<'a>(
        &'a self,
        _ctx: &'a mut RequestCtx,
        resp: Response,
    ) -> StageFuture<'a, Result<Response, ProxyError>> {
        Box::pin(async move { Ok(resp) })
    }
}
