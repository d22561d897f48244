//! The pooled client to the instance: web (puma) and streaming, one pool, under caps.
//!
//! Bodies stream both ways (no buffering), `Host` is kept as the client sent it
//! (Mastodon builds URLs and verifies signatures from it), the raw path and query go out
//! unchanged (inbox signatures cover `(request-target)`), and WebSocket upgrades are
//! spliced once both sides have switched protocols.
//!
//! # The last word
//! Just before a request leaves, [`forward`](Upstream::forward) writes `X-Forwarded-For`
//! (the pseudonym, one value), `X-Forwarded-Proto` and `X-Forwarded-Host` again, whatever
//! the stages did: nothing a client sends, and no stage, can make a request reach the
//! instance without the pseudonym (issue 16).
//!
//! # Caps
//! Every request in flight to the instance holds a permit until its response body ends
//! (an atomic semaphore, taken without waiting; past it, 503 with `Retry-After`): of
//! `upstream.max_in_flight` for the web process, of `public.max_sse` for the streaming
//! server. Two pools, because a streaming response lives as long as its client listens:
//! in one pool, 32 connections of 32 SSE streams held every permit and the web UI, the
//! API and federation all got 503 (red-team F2). A long-lived stream (SSE or WebSocket)
//! also counts against `public.max_streams_per_connection` and, per pseudonym,
//! `public.max_streams_per_client`, so the client that opens too many is the one turned
//! away, not everybody.
//!
//! A request whose client goes away (an HTTP/2 reset, a closed connection) while the
//! instance works on it keeps its permit until the instance answers (within
//! `idle_timeout`): the instance does that work either way, so a client resetting
//! streams must not get more of it than one that waits. Per connection, at most
//! `h2_max_streams` requests run at the instance at once, the reset ones included.
//!
//! Every connection to the instance holds a permit of `upstream.max_connections` (one
//! set per upstream) for as long as it is open, pooled, in use or spliced into a tunnel;
//! a request waits up to `connect_timeout` for one. A WebSocket tunnel holds a permit of
//! `public.max_websockets`, the client connection's slot (so it counts in
//! `pavise_open_connections` and under `max_connections`), and is closed after
//! `idle_timeout` with no byte either way.

use std::{
    collections::HashMap,
    fmt::Write as _,
    future::Future,
    io,
    net::IpAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{
    HeaderValue, Method, StatusCode, Uri, header,
    uri::{Authority, PathAndQuery},
};
use http_body::{Frame, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use self::pool::{Pool, PoolConfig, SendError, Sending};
use super::contract::{
    ClientConn, ProxyError, Request, RequestCtx, Response, RouteClass, boxed,
    budget::{ConnStream, ConnUpstream},
    error::body_failure,
    hop::{self, last_word},
};
use crate::{
    config::{PublicConfig, UpstreamConfig},
    metrics::{Metrics, MetricsSource},
};

/// The instance's side of a WebSocket tunnel, as the tunnel reads and writes it.
pub(crate) type TunnelIo = Pin<Box<dyn TunnelStream>>;

/// What a tunnel end must be.
pub(crate) trait TunnelStream: AsyncRead + AsyncWrite + Send {}

impl<T: AsyncRead + AsyncWrite + Send> TunnelStream for T {}

/// A say over what the instance sends down a WebSocket tunnel (expiry drops messages
/// that carry a hidden post): asked once per tunnel, when the handshake is forwarded,
/// for a wrapper around the instance's side. The composition root provides it, so the
/// upstream knows no feature.
pub(crate) trait TunnelFilter: Send + Sync {
    fn filter(&self, ctx: &RequestCtx) -> Box<dyn FnOnce(TunnelIo) -> TunnelIo + Send>;
}

mod pool;

/// The instance behind pavise.
pub struct Upstream {
    /// The web process's connections, and the streaming server's (the same pool when
    /// one upstream is configured twice).
    web: Arc<Pool>,
    streaming: Arc<Pool>,
    metrics: Arc<Metrics>,
    caps: Arc<Caps>,
    tunnels: Tunnels,
    tunnel_filter: Option<Arc<dyn TunnelFilter>>,
}

/// Spliced WebSocket connections: tracked so shutdown can wait for (then cut) them.
#[derive(Clone)]
struct Tunnels {
    tracker: TaskTracker,
    cut: CancellationToken,
    idle: Duration,
}

/// The server's handle on the WebSocket tunnels, for the shutdown drain.
#[derive(Clone)]
pub(crate) struct TunnelDrain {
    tracker: TaskTracker,
    cut: CancellationToken,
}

impl TunnelDrain {
    /// Once the listener is closed and its connections drained: waits for open tunnels
    /// to end, for at most `grace`, then cuts the rest.
    pub(crate) async fn drain(self, grace: Duration) {
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait()).await.is_err() {
            tracing::warn!("websocket tunnels still open after the grace period; closing them");
            self.cut.cancel();
            self.tracker.wait().await;
        }
    }
}

/// The permits, and how often each cap turned a request away (for `/metrics`).
struct Caps {
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    streaming_in_flight: Arc<Semaphore>,
    max_sse: usize,
    web_connections: Arc<Semaphore>,
    streaming_connections: Arc<Semaphore>,
    max_connections: usize,
    websockets: Arc<Semaphore>,
    max_websockets: usize,
    /// Long-lived streams open per pseudonym (only while any is open).
    client_streams: Mutex<HashMap<IpAddr, u32>>,
    max_streams_per_client: u32,
    refused_in_flight: AtomicU64,
    refused_sse: AtomicU64,
    refused_connections: AtomicU64,
    refused_websockets: AtomicU64,
    refused_client_streams: AtomicU64,
    refused_connection_streams: AtomicU64,
    refused_connection_requests: AtomicU64,
}

impl Upstream {
    /// `web` and `streaming`: the instance's two processes (`upstream.url`,
    /// `upstream.streaming_url`); `u` and `p` give the caps.
    pub fn new(
        u: &UpstreamConfig,
        p: &PublicConfig,
        web: Authority,
        streaming: Authority,
        metrics: Arc<Metrics>,
    ) -> Upstream {
        let caps = Arc::new(Caps {
            in_flight: Arc::new(Semaphore::new(u.max_in_flight)),
            max_in_flight: u.max_in_flight,
            streaming_in_flight: Arc::new(Semaphore::new(p.max_sse)),
            max_sse: p.max_sse,
            web_connections: Arc::new(Semaphore::new(u.max_connections)),
            // One upstream configured twice is one set of connections.
            streaming_connections: Arc::new(Semaphore::new(u.max_connections)),
            max_connections: u.max_connections,
            websockets: Arc::new(Semaphore::new(p.max_websockets)),
            max_websockets: p.max_websockets,
            client_streams: Mutex::new(HashMap::new()),
            max_streams_per_client: u32::try_from(p.max_streams_per_client).unwrap_or(u32::MAX),
            refused_in_flight: AtomicU64::new(0),
            refused_sse: AtomicU64::new(0),
            refused_connections: AtomicU64::new(0),
            refused_websockets: AtomicU64::new(0),
            refused_client_streams: AtomicU64::new(0),
            refused_connection_streams: AtomicU64::new(0),
            refused_connection_requests: AtomicU64::new(0),
        });
        // Its own pools, on the connector every client to the instance uses: these
        // connections hold the caps' permits (see `instance::client`).
        let http = crate::instance::client::connector(u.connect_timeout.get());
        let config = || PoolConfig {
            connect_timeout: u.connect_timeout.get(),
            idle_timeout: u.pool_idle_timeout.get(),
            // Idle connections hold connection permits too: leave most of them for work.
            max_idle: (u.max_connections / 4).max(1),
            // A response the client does not read stops being read from the instance
            // after one buffer, not after hyper's default 400 KB.
            max_buf_size: 64 * 1024,
            threads: crate::workers::count(p.workers),
        };
        let same = web == streaming;
        let web_pool = Arc::new(Pool::new(web, http.clone(), caps.web_connections.clone(), config()));
        let streaming_pool = match same {
            true => web_pool.clone(),
            false => Arc::new(Pool::new(streaming, http, caps.streaming_connections.clone(), config())),
        };
        metrics.register(Arc::new(CapsView(caps.clone())));
        Upstream {
            web: web_pool,
            streaming: streaming_pool,
            metrics,
            caps,
            tunnels: Tunnels { tracker: TaskTracker::new(), cut: CancellationToken::new(), idle: p.idle_timeout.get() },
            tunnel_filter: None,
        }
    }

    /// The tunnels this upstream spliced, for the shutdown drain.
    pub(crate) fn tunnels(&self) -> TunnelDrain {
        TunnelDrain { tracker: self.tunnels.tracker.clone(), cut: self.tunnels.cut.clone() }
    }

    /// Gives `filter` its say over every WebSocket tunnel.
    pub(crate) fn with_tunnel_filter(mut self, filter: Arc<dyn TunnelFilter>) -> Upstream {
        self.tunnel_filter = Some(filter);
        self
    }

    /// Sends the request to the instance and returns its response head with a streaming
    /// body. `wire_method` is the method the client sent, when the stages saw another
    /// (Rack's `_method`, see [`super::method`]): the instance gets the request as sent.
    pub async fn forward(
        &self,
        ctx: &RequestCtx,
        mut req: Request,
        wire_method: Option<Method>,
        conn: &ClientConn,
    ) -> Result<Response, ProxyError> {
        let streaming = ctx.route.class == RouteClass::Streaming;
        // Only a WebSocket handshake on the streaming route kept `Upgrade` on entry.
        let upgrade = hop::wants_upgrade(req.headers());
        // In order: what is this client's (its connection, its pseudonym), then what is
        // everybody's, so the one who takes too much is the one refused.
        let Some(running) = ctx.share.start_upstream() else {
            return Err(self.caps.refused(&self.caps.refused_connection_requests, "requests from this connection"));
        };
        let long_lived = match streaming {
            true => Some(self.caps.open_stream(ctx)?),
            false => None,
        };
        let tunnel_permit = match upgrade {
            true => match self.caps.websockets.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => return Err(self.caps.refused(&self.caps.refused_websockets, "WebSocket connections")),
            },
            false => None,
        };
        let (pool, refused, what) = match streaming {
            true => (&self.caps.streaming_in_flight, &self.caps.refused_sse, "streams to the streaming server"),
            false => (&self.caps.in_flight, &self.caps.refused_in_flight, "requests to the instance"),
        };
        let in_flight = match pool.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => return Err(self.caps.refused(refused, what)),
        };

        let pool = if streaming { &self.streaming } else { &self.web };
        // Origin form: the raw path and query, as the client sent them.
        let mut target = http::uri::Parts::default();
        target.path_and_query =
            Some(req.uri().path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/")));
        *req.uri_mut() = Uri::from_parts(target).map_err(|e| ProxyError::BadRequest(e.to_string()))?;
        *req.version_mut() = http::Version::HTTP_11;
        if let Some(method) = wire_method {
            *req.method_mut() = method;
        }
        if !req.headers().contains_key(header::HOST)
            && let Some(host) = ctx.host.as_deref().and_then(|h| HeaderValue::from_str(h).ok())
        {
            req.headers_mut().insert(header::HOST, host);
        }
        last_word(req.headers_mut(), ctx);
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));

        let started = Instant::now();
        let mut pending = Pending {
            response: Some(Box::pin(pool.clone().send(req))),
            held: Some(Held { _in_flight: in_flight, _running: running, long_lived }),
            wait: self.tunnels.idle,
        };
        let result = (&mut pending).await;
        self.metrics.upstream_latency(started.elapsed());
        let held = pending.held.take();
        let mut resp = match result {
            Ok(resp) => resp,
            Err(e) => return Err(classify_send_error(e, &self.metrics, &self.caps)),
        };

        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            let (Some(client_upgrade), Some(tunnel_permit)) = (client_upgrade, tunnel_permit) else {
                // Nothing was asked to switch: never tunnel past the stages.
                return Err(ProxyError::UpstreamMisbehaved("the instance switched protocols unasked"));
            };
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            let tunnels = self.tunnels.clone();
            let slot = conn.slot.clone();
            // The tunnel keeps its place among the client's streams; the handshake's
            // request permits end here.
            let long_lived = held.and_then(|h| h.long_lived);
            // Expiry drops messages that carry a hidden post on their way to the client.
            let filter = self.tunnel_filter.as_ref().map(|f| f.filter(ctx));
            self.tunnels.tracker.spawn(async move {
                let (Ok(client), Ok(upstream)) = (client_upgrade.await, upstream_upgrade.await) else {
                    tracing::debug!("websocket upgrade did not complete on one side");
                    return;
                };
                let upstream: TunnelIo = Box::pin(TokioIo::new(upstream));
                let upstream = match filter {
                    Some(filter) => filter(upstream),
                    None => upstream,
                };
                let client = TokioIo::new(client);
                splice(client, upstream, tunnels.idle, &tunnels.cut).await;
                // The tunnel's caps and the client connection's slot end with it.
                drop((tunnel_permit, long_lived, slot));
            });
            let (parts, _) = resp.into_parts();
            return Ok(Response::from_parts(parts, super::contract::empty()));
        }

        hop::strip_hop_by_hop(resp.headers_mut(), false);
        Ok(resp.map(|inner| boxed(InFlight { inner, _held: held })))
    }
}

/// What a request to the instance holds until its response body ends: its in-flight
/// permit, its place among its connection's running requests, and (a long-lived
/// stream) its place among its client's streams.
struct Held {
    _in_flight: OwnedSemaphorePermit,
    _running: ConnUpstream,
    long_lived: Option<LongLived>,
}

/// The instance's answer on its way, and what it holds. Dropped before the answer came
/// (the client reset the stream or went away), the wait goes on in a task of its own,
/// for at most `wait`, and only then are the permits given back: the instance is doing
/// the work either way.
struct Pending {
    response: Option<Sending>,
    held: Option<Held>,
    wait: Duration,
}

impl Future for Pending {
    type Output = Result<http::Response<hyper::body::Incoming>, SendError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(response) = self.response.as_mut() else { return Poll::Pending };
        let result = std::task::ready!(Pin::new(response).poll(cx));
        self.response = None;
        Poll::Ready(result)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let (Some(response), Some(held)) = (self.response.take(), self.held.take()) else { return };
        let wait = self.wait;
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = tokio::time::timeout(wait, response).await;
                drop(held);
            });
        }
    }
}

/// A long-lived stream's place among its connection's and its client's streams.
struct LongLived {
    caps: Arc<Caps>,
    client: IpAddr,
    _connection: ConnStream,
}

impl Drop for LongLived {
    fn drop(&mut self) {
        let mut streams = self.caps.client_streams.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = streams.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                streams.remove(&self.client);
            }
        }
    }
}

impl Caps {
    fn refused(&self, counter: &AtomicU64, what: &'static str) -> ProxyError {
        counter.fetch_add(1, Relaxed);
        ProxyError::Busy(what)
    }

    /// A place for one more long-lived stream of this client on this connection.
    fn open_stream(self: &Arc<Self>, ctx: &RequestCtx) -> Result<LongLived, ProxyError> {
        let Some(connection) = ctx.share.open_stream() else {
            return Err(self.refused(&self.refused_connection_streams, "streams on this connection"));
        };
        let mut streams = self.client_streams.lock().unwrap_or_else(|e| e.into_inner());
        let open = streams.entry(ctx.pseudonym).or_insert(0);
        if *open >= self.max_streams_per_client {
            if *open == 0 {
                streams.remove(&ctx.pseudonym);
            }
            drop(streams);
            return Err(self.refused(&self.refused_client_streams, "streams from this client"));
        }
        *open += 1;
        Ok(LongLived { caps: self.clone(), client: ctx.pseudonym, _connection: connection })
    }
}

/// Splices a switched client connection to the instance's until either side has closed
/// both ways, nothing has moved either way for `idle`, or `cut` fires. The two
/// directions are separate pumps, so a filter on one of them has one place to go.
async fn splice<C, U>(client: C, upstream: U, idle: Duration, cut: &CancellationToken)
where
    C: AsyncRead + AsyncWrite,
    U: AsyncRead + AsyncWrite,
{
    let (mut from_client, mut to_client) = tokio::io::split(client);
    let (mut from_upstream, mut to_upstream) = tokio::io::split(upstream);
    let moved = Moved::new();
    let client_to_upstream = pump(&mut from_client, &mut to_upstream, &moved);
    let upstream_to_client = pump(&mut from_upstream, &mut to_client, &moved);
    tokio::select! {
        result = async { tokio::try_join!(client_to_upstream, upstream_to_client) } => {
            if let Err(e) = result { tracing::debug!(error = %e, "websocket tunnel ended with an error") }
        }
        _ = moved.quiet_for(idle) => tracing::debug!("websocket tunnel idle; closed"),
        // The shutdown drain decides how long tunnels may stay; cut when it says.
        _ = cut.cancelled() => {}
    }
}

/// Copies one direction of a tunnel until end of stream, then half-closes the other side.
async fn pump<R, W>(from: &mut R, to: &mut W, moved: &Moved) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 8 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        to.write_all(&buf[..n]).await?;
        moved.touch();
    }
}

/// When a tunnel last moved a byte, on tokio's clock (a paused one drives it in tests).
struct Moved {
    epoch: tokio::time::Instant,
    last_ms: AtomicU64,
}

impl Moved {
    fn new() -> Moved {
        Moved { epoch: tokio::time::Instant::now(), last_ms: AtomicU64::new(0) }
    }

    fn touch(&self) {
        self.last_ms.store(self.epoch.elapsed().as_millis() as u64, Relaxed);
    }

    async fn quiet_for(&self, idle: Duration) {
        loop {
            let quiet = self.epoch.elapsed().saturating_sub(Duration::from_millis(self.last_ms.load(Relaxed)));
            if quiet >= idle {
                return;
            }
            tokio::time::sleep(idle - quiet).await;
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body that holds its request's permits until it ends.
    struct InFlight<B> {
        #[pin]
        inner: B,
        _held: Option<Held>,
    }
}

impl<B> http_body::Body for InFlight<B>
where
    B: http_body::Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A send error caused by our own body guards is the client's doing (413, 408), a full
/// connection cap is a 503, anything else is the instance's (502).
fn classify_send_error(e: SendError, metrics: &Metrics, caps: &Caps) -> ProxyError {
    if let Some(guard) = body_failure(&e) {
        return guard;
    }
    if let SendError::Busy = e {
        return caps.refused(&caps.refused_connections, "connections to the instance");
    }
    metrics.upstream_error();
    tracing::warn!(error = %e, "upstream request failed");
    ProxyError::UpstreamUnavailable(Box::new(e))
}

struct CapsView(Arc<Caps>);

impl MetricsSource for CapsView {
    fn render(&self, out: &mut String) {
        let c = &self.0;
        let used = |s: &Semaphore, max: usize| max.saturating_sub(s.available_permits());
        out.push_str("# HELP pavise_upstream_in_flight Requests to the instance in flight (upstream.max_in_flight).\n");
        out.push_str("# TYPE pavise_upstream_in_flight gauge\n");
        let _ = writeln!(out, "pavise_upstream_in_flight {}", used(&c.in_flight, c.max_in_flight));
        out.push_str(
            "# HELP pavise_upstream_connections Connections to the instance open, pooled or spliced (upstream.max_connections per upstream).\n",
        );
        out.push_str("# TYPE pavise_upstream_connections gauge\n");
        let _ = writeln!(
            out,
            "pavise_upstream_connections{{upstream=\"web\"}} {}",
            used(&c.web_connections, c.max_connections)
        );
        let _ = writeln!(
            out,
            "pavise_upstream_connections{{upstream=\"streaming\"}} {}",
            used(&c.streaming_connections, c.max_connections)
        );
        out.push_str(
            "# HELP pavise_streaming_in_flight Requests to the streaming server in flight, SSE streams included (public.max_sse).\n",
        );
        out.push_str("# TYPE pavise_streaming_in_flight gauge\n");
        let _ = writeln!(out, "pavise_streaming_in_flight {}", used(&c.streaming_in_flight, c.max_sse));
        out.push_str("# HELP pavise_websocket_tunnels WebSocket tunnels open (public.max_websockets).\n");
        out.push_str("# TYPE pavise_websocket_tunnels gauge\n");
        let _ = writeln!(out, "pavise_websocket_tunnels {}", used(&c.websockets, c.max_websockets));
        out.push_str("# HELP pavise_capped_total Requests answered 503 because a cap was full, by cap.\n");
        out.push_str("# TYPE pavise_capped_total counter\n");
        for (cap, n) in [
            ("upstream_in_flight", &c.refused_in_flight),
            ("sse", &c.refused_sse),
            ("upstream_connections", &c.refused_connections),
            ("websockets", &c.refused_websockets),
            ("client_streams", &c.refused_client_streams),
            ("connection_streams", &c.refused_connection_streams),
            ("connection_requests", &c.refused_connection_requests),
        ] {
            let _ = writeln!(out, "pavise_capped_total{{cap=\"{cap}\"}} {}", n.load(Relaxed));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use tokio::io::duplex;

    use super::*;

    async fn read_n<R: AsyncRead + Unpin>(from: &mut R, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        from.read_exact(&mut buf).await.unwrap();
        buf
    }

    /// A spliced tunnel, without sockets: bytes either way keep it open, `idle` of
    /// silence closes it, on a paused clock.
    #[tokio::test(start_paused = true)]
    async fn a_tunnel_carries_both_ways_and_closes_after_idle() {
        let (client, mut client_side) = duplex(1024);
        let (upstream, mut instance_side) = duplex(1024);
        let idle = Duration::from_secs(60);
        let cut = CancellationToken::new();
        let tunnel = tokio::spawn(async move { splice(client, upstream, idle, &cut).await });
        client_side.write_all(b"ping").await.unwrap();
        assert_eq!(read_n(&mut instance_side, 4).await, b"ping");
        instance_side.write_all(b"pong").await.unwrap();
        assert_eq!(read_n(&mut client_side, 4).await, b"pong");
        for _ in 0..3 {
            tokio::time::advance(Duration::from_secs(50)).await;
            client_side.write_all(b"x").await.unwrap();
            assert_eq!(read_n(&mut instance_side, 1).await, b"x");
        }
        assert!(!tunnel.is_finished(), "traffic keeps it open past `idle` in all");
        tokio::time::sleep(Duration::from_secs(61)).await;
        tunnel.await.unwrap();
        let mut rest = Vec::new();
        assert_eq!(instance_side.read_to_end(&mut rest).await.unwrap(), 0, "the instance's side is closed");
    }

    #[tokio::test(start_paused = true)]
    async fn one_side_closing_half_closes_the_other_and_the_cut_ends_it() {
        let (client, mut client_side) = duplex(1024);
        let (upstream, mut instance_side) = duplex(1024);
        let cut = CancellationToken::new();
        let stop = cut.clone();
        let tunnel = tokio::spawn(async move { splice(client, upstream, Duration::from_secs(600), &cut).await });
        client_side.shutdown().await.unwrap();
        let mut rest = Vec::new();
        assert_eq!(instance_side.read_to_end(&mut rest).await.unwrap(), 0, "EOF passed on");
        // The other way still carries until the shutdown drain cuts it.
        instance_side.write_all(b"late").await.unwrap();
        assert_eq!(read_n(&mut client_side, 4).await, b"late");
        stop.cancel();
        tunnel.await.unwrap();
    }
}
