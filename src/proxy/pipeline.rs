//! The pipeline: one ordered list of stages between the listener and the instance.
//!
//! ```text
//! accept ─► entry (hop-by-hop out, route, pseudonym) ─► body cap ─► `_method`
//!   request:  hygiene ─► shield ─► client_ip ─► media ─► expiry ─► upstream ─► instance
//!   response: hygiene ◄─ shield ◄─ client_ip ◄─ media ◄─ expiry ◄─┘
//! ```
//! The stage order is written once, in `app::App::build` (the composition root), with
//! the reason for each position. Before any stage, the entry phase ([`Pipeline::handle`]) refuses what no
//! Rails route serves and no proxy may pass on (`CONNECT`, `TRACE`, an over-long method,
//! two `Host`s or a `Host` that disagrees with the request target), cleans the head
//! ([`hop::clean_request_head`]), classifies the route once from the canonical path
//! ([`Route::classify`]), caps the body by that class, and reads the method Rails will
//! dispatch ([`super::method`]); after every stage, the upstream writes the forwarding
//! headers last ([`Upstream::forward`]). Whatever a stage holds of a body in memory is
//! charged to the relay's budgets ([`super::contract::budget`]).

use std::{
    collections::BTreeMap,
    future::Future,
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
    contract::{
        Body, BoxError, ClientConn, Flow, ProxyError, Request, RequestCtx, Response, Route, RouteClass, Stage, boxed,
        error::BodyCapExceeded,
        hop::{self, MAX_METHOD_LEN},
    },
    method,
    upstream::Upstream,
};
use crate::{
    config::ClientIpHeader,
    metrics::{Metrics, MetricsSource},
    privacy::{ClientAddr, Pseudonymizer, client_ip::Unresolved},
    units::Size,
};

/// The body caps of `[public.body_limits]`, resolved per route class.
#[derive(Debug, Clone)]
pub struct BodyLimits([u64; RouteClass::ALL.len()]);

impl BodyLimits {
    /// `limits`: `[public.body_limits]`, by route class name (`default` for the rest).
    pub fn new(limits: &BTreeMap<String, Size>) -> BodyLimits {
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

    pub(crate) fn for_class(&self, class: RouteClass) -> u64 {
        self.0[class.index()]
    }
}

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

/// What the pipeline reads of the config: how the client is known, and the body caps.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// `client_ip.trusted_proxies`: edges whose client-address header is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// `client_ip.header`: the header they name the client in.
    pub client_ip_header: ClientIpHeader,
    pub body_limits: BodyLimits,
    /// `log.access_log`: one line per request.
    pub access_log: bool,
}

/// Where the pipeline sends what every stage passed on: the instance ([`Upstream`]), or
/// a stand-in in the pipeline's own tests.
pub trait Origin: Send + Sync + 'static {
    /// `wire_method`: the method the client sent, when the stages saw another (Rack's
    /// `_method`, see [`super::method`]).
    fn forward<'a>(
        &'a self,
        ctx: &'a RequestCtx,
        req: Request,
        wire_method: Option<http::Method>,
        conn: &'a ClientConn,
    ) -> impl Future<Output = Result<Response, ProxyError>> + Send + 'a;
}

impl Origin for Upstream {
    fn forward<'a>(
        &'a self,
        ctx: &'a RequestCtx,
        req: Request,
        wire_method: Option<http::Method>,
        conn: &'a ClientConn,
    ) -> impl Future<Output = Result<Response, ProxyError>> + Send + 'a {
        Upstream::forward(self, ctx, req, wire_method, conn)
    }
}

/// Everything a request needs, shared by all connections.
pub struct Pipeline<O = Upstream> {
    stages: Vec<Arc<dyn Stage>>,
    origin: O,
    pseudonymizer: Arc<Pseudonymizer>,
    trusted_proxies: Vec<IpNet>,
    client_ip_header: ClientIpHeader,
    unresolved: Arc<UnresolvedClients>,
    body_limits: BodyLimits,
    metrics: Arc<Metrics>,
    access_log: bool,
}

impl Pipeline<Upstream> {
    /// The WebSocket tunnels the upstream spliced, for the shutdown drain.
    pub(crate) fn tunnels(&self) -> super::upstream::TunnelDrain {
        self.origin.tunnels()
    }
}

impl<O: Origin> Pipeline<O> {
    /// `stages` in request order (the composition root, `app`, gives the order and the
    /// reason for each place).
    pub fn new(
        config: PipelineConfig,
        stages: Vec<Arc<dyn Stage>>,
        origin: O,
        pseudonymizer: Arc<Pseudonymizer>,
        metrics: Arc<Metrics>,
    ) -> Pipeline<O> {
        let unresolved = Arc::new(UnresolvedClients::default());
        metrics.register(unresolved.clone());
        Pipeline {
            stages,
            origin,
            pseudonymizer,
            trusted_proxies: config.trusted_proxies,
            client_ip_header: config.client_ip_header,
            unresolved,
            body_limits: config.body_limits,
            metrics,
            access_log: config.access_log,
        }
    }

    pub(crate) fn stage_names(&self) -> Vec<&'static str> {
        self.stages.iter().map(|s| s.name()).collect()
    }

    /// Serves one request. Never fails: every error becomes a response here.
    pub async fn handle(&self, conn: Arc<ClientConn>, req: Request) -> Response {
        let started = Instant::now();
        if let Some(refused) = refuse_on_entry(&req) {
            let resp = refused.into_response();
            self.metrics.request_done(RouteClass::Web, resp.status());
            return resp;
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
        let pseudonym = self.pseudonymizer.pseudonym(&client);
        let host = request_host(&parts.headers, &parts.uri);
        let mut ctx = RequestCtx::new(route, pseudonym, https, host, conn.share.clone());
        ctx.started = started;
        let method = parts.method.clone();

        let resp = self.run(&mut ctx, Request::from_parts(parts, body), &conn).await;
        self.metrics.request_done(ctx.route.class, resp.status());
        if self.access_log {
            // The text the instance got, unless the log must name something else.
            let logged = self.pseudonymizer.log_form(ctx.pseudonym);
            let hashed;
            let client = match logged == ctx.pseudonym {
                true => ctx.forwarded_for().to_str().unwrap_or_default(),
                false => {
                    hashed = logged.to_string();
                    hashed.as_str()
                }
            };
            crate::telemetry::access(&crate::telemetry::Access {
                client,
                route: ctx.route.class.config_name(),
                method: &method,
                status: resp.status().as_u16(),
                latency_ms: started.elapsed().as_secs_f64() * 1000.0,
            });
        }
        resp
    }

    /// The request pass, the origin, the response pass. Every failure on the way becomes
    /// its response here, through the one mapping ([`ProxyError::into_response`]).
    ///
    /// Stages that passed the request on see the response, in reverse order, whoever made
    /// it. The stage that answers (or fails) made the answer and is not asked about it
    /// again; one whose response phase fails is replaced by its failure's answer, and the
    /// stages outside it still see that (hygiene, outermost, sees every response).
    async fn run(&self, ctx: &mut RequestCtx, req: Request, conn: &ClientConn) -> Response {
        let mut ran = 0;
        let mut resp = match self.request_pass(ctx, req, conn, &mut ran).await {
            Ok(resp) => resp,
            Err(e) => e.into_response(),
        };
        for stage in self.stages[..ran].iter().rev() {
            resp = match stage.on_response(ctx, resp).await {
                Ok(resp) => resp,
                Err(e) => e.into_response(),
            };
        }
        resp
    }

    /// The body cap, the dispatched method, then each stage's request phase until one
    /// answers; then the origin. `ran` counts the stages that passed the request on.
    async fn request_pass(
        &self,
        ctx: &mut RequestCtx,
        mut req: Request,
        conn: &ClientConn,
        ran: &mut usize,
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

        for stage in &self.stages {
            match stage.on_request(ctx, req).await? {
                Flow::Continue(next) => {
                    req = next;
                    *ran += 1;
                }
                Flow::Respond(resp) => return Ok(resp),
            }
        }
        self.origin.forward(ctx, req, wire_method, conn).await
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
fn refuse_on_entry(req: &Request) -> Option<ProxyError> {
    let method = req.method();
    if method.as_str().len() > MAX_METHOD_LEN {
        return Some(ProxyError::Malformed("unknown request method"));
    }
    if *method == http::Method::CONNECT || *method == http::Method::TRACE || method.as_str() == "TRACK" {
        return Some(ProxyError::MethodNotAllowed);
    }
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Some(ProxyError::Malformed("more than one Host header"));
    }
    if let (Some(host), Some(authority)) = (host, req.uri().authority())
        && !host.as_bytes().eq_ignore_ascii_case(authority.as_str().as_bytes())
    {
        return Some(ProxyError::Malformed("the Host header disagrees with the request's authority"));
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

#[cfg(test)]
mod tests;
