//! The pipeline: one ordered list of stages between the listener and the instance.
//!
//! ```text
//! accept ─► entry (hop-by-hop out, route, pseudonym) ─► body cap ─► `_method`
//!   request:  hygiene ─► shield ─► client_ip ─► media ─► expiry ─► upstream ─► instance
//!   response: hygiene ◄─ shield ◄─ client_ip ◄─ media ◄─ expiry ◄─┘
//! ```
//! The stage order is written once, in `server::start`, with the reason for each
//! position. Before any stage, the entry phase ([`Pipeline::handle`]) refuses what no
//! Rails route serves and no proxy may pass on (`CONNECT`, `TRACE`, an over-long method,
//! two `Host`s or a `Host` that disagrees with the request target), cleans the head
//! ([`hop::clean_request_head`]), classifies the route once from the canonical path
//! ([`Route::classify`]), caps the body by that class, and reads the method Rails will
//! dispatch ([`super::method`]); after every stage, the upstream writes the forwarding
//! headers last ([`Upstream::forward`]). Whatever a stage holds of a body in memory is
//! charged to the relay's budgets ([`super::budget`]).

use std::{
    net::IpAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use bytes::Bytes;
use http::{HeaderMap, header};
use http_body::{Frame, SizeHint};
use ipnet::IpNet;

use super::{
    Body, BoxError, ClientConn, Flow, ProxyError, RequestCtx, Response, Route, RouteClass, Stage, boxed,
    budget::BodyMemoryFull, error::json_error, hop, method, upstream::Upstream,
};
use crate::{
    config::{ClientIpHeader, Config},
    metrics::{Metrics, MetricsSource},
    privacy::{ClientAddr, Pseudonymizer, client_ip::Unresolved},
    units::Size,
};

/// The body caps of `[public.body_limits]`, resolved per route class.
#[derive(Debug, Clone)]
pub struct BodyLimits([u64; RouteClass::ALL.len()]);

impl BodyLimits {
    pub fn from_config(config: &Config) -> BodyLimits {
        let limits = &config.file.public.body_limits;
        let default = limits.get("default").copied().unwrap_or(Size(16 << 20));
        BodyLimits(RouteClass::ALL.map(|class| {
            let builtin = match class {
                // Mastodon's own inbox cap.
                RouteClass::Inbox => Size(1 << 20),
                // 99 MB video plus multipart framing and a thumbnail.
                RouteClass::MediaUpload => Size(120 << 20),
                _ => default,
            };
            limits.get(class.config_name()).copied().unwrap_or(builtin).0
        }))
    }

    pub fn for_class(&self, class: RouteClass) -> u64 {
        self.0[class.index()]
    }
}

/// The error a capped body yields once the client sends more than its route allows.
#[derive(Debug, thiserror::Error)]
#[error("request body over the {0}-byte limit")]
pub struct BodyCapExceeded(pub u64);

/// The error a request body yields when the client sends it slower than
/// `public.min_body_rate` (the listener's body guard).
#[derive(Debug, thiserror::Error)]
#[error("request body slower than the minimum rate")]
pub struct BodyTooSlow;

/// A request body's read error as the relay's error: the client's own (413, 408) when
/// one of the body guards stopped it.
pub(crate) fn body_error(e: &BoxError) -> ProxyError {
    body_failure(&**e).unwrap_or_else(|| ProxyError::BadRequest("the request body could not be read".into()))
}

/// Whether an error (anywhere in its source chain) is one of the request body's own
/// guards: the route's size cap (413), the minimum body rate (408), a full body budget
/// (503, or 413 for a body alone too large), a long form's `_method` (400). Every stage
/// that reads a body, and the upstream client, answer these the same way.
pub(crate) fn body_failure(e: &(dyn std::error::Error + 'static)) -> Option<ProxyError> {
    let mut source = Some(e);
    while let Some(err) = source {
        if let Some(cap) = err.downcast_ref::<BodyCapExceeded>() {
            return Some(ProxyError::BodyTooLarge { limit: cap.0 });
        }
        if err.downcast_ref::<BodyTooSlow>().is_some() {
            return Some(ProxyError::BodyTooSlow);
        }
        if let Some(full) = err.downcast_ref::<BodyMemoryFull>() {
            return Some(ProxyError::from(*full));
        }
        if let Some(refused) = err.downcast_ref::<method::LongFormOverride>() {
            return Some(ProxyError::BadRequest(refused.to_string()));
        }
        source = err.source();
    }
    None
}

/// No real HTTP method is longer (IANA's longest is `UPDATEREDIRECTREF`, 17): a longer
/// one is refused before anything reads or logs it.
pub const MAX_METHOD_LEN: usize = 20;

pin_project_lite::pin_project! {
    /// Passes bytes through unchanged until `remaining` runs out.
    struct CappedBody {
        #[pin]
        inner: Body,
        limit: u64,
        remaining: u64,
    }
}

impl http_body::Body for CappedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > *this.remaining {
                        return Poll::Ready(Some(Err(Box::new(BodyCapExceeded(*this.limit)))));
                    }
                    *this.remaining -= len;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Everything a request needs, shared by all connections.
pub struct Pipeline {
    stages: Vec<Arc<dyn Stage>>,
    upstream: Upstream,
    pseudonymizer: Arc<Pseudonymizer>,
    trusted_proxies: Vec<IpNet>,
    client_ip_header: ClientIpHeader,
    unresolved: Arc<UnresolvedClients>,
    body_limits: BodyLimits,
    metrics: Arc<Metrics>,
    access_log: bool,
}

impl Pipeline {
    /// `stages` in request order; see the module docs for the standard order.
    pub fn new(
        config: &Config,
        stages: Vec<Arc<dyn Stage>>,
        upstream: Upstream,
        pseudonymizer: Arc<Pseudonymizer>,
        metrics: Arc<Metrics>,
    ) -> Pipeline {
        let unresolved = Arc::new(UnresolvedClients::default());
        metrics.register(unresolved.clone());
        Pipeline {
            stages,
            upstream,
            pseudonymizer,
            trusted_proxies: config.file.client_ip.trusted_proxies.clone(),
            client_ip_header: config.file.client_ip.header,
            unresolved,
            body_limits: BodyLimits::from_config(config),
            metrics,
            access_log: config.file.log.access_log,
        }
    }

    pub fn stage_names(&self) -> Vec<&'static str> {
        self.stages.iter().map(|s| s.name()).collect()
    }

    /// Serves one request. Never fails: every error becomes a response here.
    pub async fn handle(&self, conn: Arc<ClientConn>, req: super::Request) -> Response {
        let started = Instant::now();
        if let Some(refused) = refuse_on_entry(&req) {
            self.metrics.request_done(RouteClass::Web, refused.status());
            return refused;
        }
        let (mut parts, body) = req.into_parts();
        // What a trusted load balancer says about the client is read before the head is
        // cleaned: its `Connection` options were meant for this hop, which is us.
        let (client, unresolved) =
            ClientAddr::resolve(conn.peer, &parts.headers, &self.trusted_proxies, self.client_ip_header);
        if let Some(why) = unresolved {
            self.unresolved.count(why, self.client_ip_header);
        }
        let https = conn.https || (self.is_trusted(conn.peer) && forwarded_https(&parts.headers));
        let websocket = parts.version == http::Version::HTTP_11 && hop::websocket_requested(&parts.headers);
        hop::clean_request_head(&mut parts.headers);
        let route = Route::classify(&parts.method, parts.uri.path(), parts.uri.query());
        if websocket && route.class == RouteClass::Streaming && parts.method == http::Method::GET {
            hop::ask_for_websocket(&mut parts.headers);
        }
        let mut ctx = RequestCtx {
            route,
            pseudonym: self.pseudonymizer.pseudonym(&client),
            https,
            host: request_host(&parts.headers, &parts.uri),
            started,
            extensions: http::Extensions::new(),
            share: conn.share.clone(),
            held: std::sync::OnceLock::new(),
        };
        let method = parts.method.clone();

        let resp = match self.run(&mut ctx, super::Request::from_parts(parts, body), &conn).await {
            Ok(resp) => resp,
            Err(e) => e.into_response(),
        };
        self.metrics.request_done(ctx.route.class, resp.status());
        if self.access_log {
            tracing::info!(
                target: "pavise::access",
                client = %self.pseudonymizer.log_form(ctx.pseudonym),
                route = ctx.route.class.config_name(),
                method = %method,
                status = resp.status().as_u16(),
                latency_ms = started.elapsed().as_secs_f64() * 1000.0,
            );
        }
        resp
    }

    async fn run(
        &self,
        ctx: &mut RequestCtx,
        mut req: super::Request,
        conn: &ClientConn,
    ) -> Result<Response, ProxyError> {
        let limit = self.body_limits.for_class(ctx.route.class);
        if content_length(req.headers()).is_some_and(|len| len > limit) {
            return Err(ProxyError::BodyTooLarge { limit });
        }
        req = req.map(|inner| boxed(CappedBody { inner, limit, remaining: limit }));

        // Stages see the method Rails will dispatch; the instance gets the one sent.
        let (resolved, dispatched) = method::resolve(ctx, req).await?;
        req = resolved;
        let wire_method = match dispatched {
            Some(dispatched) => {
                ctx.route = Route::classify(&dispatched, req.uri().path(), req.uri().query());
                Some(std::mem::replace(req.method_mut(), dispatched))
            }
            None => None,
        };

        // Stages that passed the request on get to see the response, in reverse order. The
        // stage that answers (or fails) made the answer and is not asked about it again.
        let mut ran = 0;
        let mut resp = 'answer: {
            for stage in &self.stages {
                match stage.on_request(ctx, req).await {
                    Ok(Flow::Continue(next)) => {
                        req = next;
                        ran += 1;
                    }
                    Ok(Flow::Respond(resp)) => break 'answer resp,
                    Err(e) => break 'answer e.into_response(),
                }
            }
            match self.upstream.forward(ctx, req, wire_method, conn).await {
                Ok(resp) => resp,
                Err(e) => e.into_response(),
            }
        };
        for stage in self.stages[..ran].iter().rev() {
            resp = stage.on_response(ctx, resp).await?;
        }
        Ok(resp)
    }

    fn is_trusted(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.trusted_proxies.iter().any(|n| n.contains(&peer))
    }
}

/// What is refused before anything reads the request: methods no Rails route serves and
/// no relay may pass on (`CONNECT` would ask the instance to open a tunnel, `TRACE` to
/// echo the head back), a method longer than any real one (never logged), and a `Host`
/// that is not one: two of them (RFC 9112 §3.2; Puma would join them, and pavise's
/// `X-Forwarded-Host` would name the first), or one that disagrees with the authority
/// of the request target (HTTP/2's `:authority`, an absolute-form target).
fn refuse_on_entry(req: &super::Request) -> Option<Response> {
    let method = req.method();
    if method.as_str().len() > MAX_METHOD_LEN {
        return Some(json_error(http::StatusCode::BAD_REQUEST, "unknown request method"));
    }
    if *method == http::Method::CONNECT || *method == http::Method::TRACE || method.as_str() == "TRACK" {
        let mut resp = json_error(http::StatusCode::METHOD_NOT_ALLOWED, "this method is not served here");
        resp.headers_mut()
            .insert(header::ALLOW, http::HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"));
        return Some(resp);
    }
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Some(json_error(http::StatusCode::BAD_REQUEST, "more than one Host header"));
    }
    if let (Some(host), Some(authority)) = (host, req.uri().authority())
        && !host.as_bytes().eq_ignore_ascii_case(authority.as_str().as_bytes())
    {
        return Some(json_error(
            http::StatusCode::BAD_REQUEST,
            "the Host header disagrees with the request's authority",
        ));
    }
    None
}

/// Requests from a trusted proxy whose client address was not believed, by reason; the
/// log says so once a minute at most, with what the edge must send.
#[derive(Default)]
struct UnresolvedClients {
    counts: [std::sync::atomic::AtomicU64; 3],
    last_warned_ms: std::sync::atomic::AtomicU64,
    epoch: std::sync::OnceLock<Instant>,
}

impl UnresolvedClients {
    fn count(&self, why: Unresolved, header: ClientIpHeader) {
        use std::sync::atomic::Ordering::Relaxed;
        let i = Unresolved::ALL.iter().position(|u| *u == why).unwrap_or(0);
        self.counts[i].fetch_add(1, Relaxed);
        let epoch = *self.epoch.get_or_init(Instant::now);
        let now = epoch.elapsed().as_millis() as u64 + 1;
        let last = self.last_warned_ms.load(Relaxed);
        if (last == 0 || now.saturating_sub(last) >= 60_000)
            && self.last_warned_ms.compare_exchange(last, now, Relaxed, Relaxed).is_ok()
        {
            let name = match header {
                ClientIpHeader::XForwardedFor => "X-Forwarded-For",
                ClientIpHeader::XRealIp => "X-Real-IP",
            };
            tracing::warn!(
                reason = why.label(),
                header = name,
                "a trusted proxy sent a request without one usable client address: it was given the proxy's own pseudonym; the edge must overwrite the header with the address it accepted the connection from (nginx: proxy_set_header {name} $remote_addr;), or clients can choose their own"
            );
        }
    }
}

impl MetricsSource for UnresolvedClients {
    fn render(&self, out: &mut String) {
        use std::{fmt::Write as _, sync::atomic::Ordering::Relaxed};
        out.push_str("# HELP pavise_client_ip_unresolved_total Requests from a trusted proxy without one usable client address (given the proxy's pseudonym), by reason.\n");
        out.push_str("# TYPE pavise_client_ip_unresolved_total counter\n");
        for (why, n) in Unresolved::ALL.iter().zip(&self.counts) {
            let _ =
                writeln!(out, "pavise_client_ip_unresolved_total{{reason=\"{}\"}} {}", why.label(), n.load(Relaxed));
        }
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

fn forwarded_https(headers: &HeaderMap) -> bool {
    headers.get("x-forwarded-proto").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
}

fn request_host(headers: &HeaderMap, uri: &http::Uri) -> Option<String> {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| uri.authority().map(|a| a.to_string()))
}

/// A 404 in the instance's style, for stages that hide things (expired posts).
pub fn not_found() -> Response {
    json_error(http::StatusCode::NOT_FOUND, "Record not found")
}
