//! One client HTTP connection under limits, for every listener that serves HTTP to
//! clients (the public one and the admin one): accept under a cap, speak HTTP/1.1 and
//! HTTP/2 with bounded resources, and close what holds a slot without using it.
//!
//! Issue 16 took the relay down with a handful of connections; each limit here answers
//! one way it was done:
//! - **h2 fan-out**: at most `h2_max_streams` concurrent streams per connection (hyper's
//!   default is 200) and `h2_stream_send_buffer` bytes buffered per stream (hyper's is
//!   400 KB), so unread responses cost tens of KB each, not the relay's memory; the
//!   global caps on requests and connections to the instance are in
//!   [`crate::proxy::upstream`].
//! - **slots held forever**: a connection must start a request within
//!   `header_read_timeout` (HTTP/1.1 and HTTP/2: an h2 client that only sends SETTINGS
//!   and PINGs never does), and is closed once it has made no *progress* for
//!   `idle_timeout`. Progress is a request starting, or a body frame moving either way:
//!   control frames (PING, SETTINGS, WINDOW_UPDATE) and the bytes of a head that never
//!   completes are not progress. The request body must also keep up `min_body_rate`
//!   bytes/s after a grace of `header_read_timeout`, counting only the time pavise waited
//!   for the client ([`Guarded`]), or the request ends with a 408. The rate is a
//!   sliding window, not a lifetime average: bytes sent early buy at most
//!   `body_rate_window` of silence (red-team F1: 15 MiB sent at once bought four hours
//!   of a held connection under the average).
//! - **memory**: each connection gets its [`ConnShare`] of the relay's budgets (body bytes
//!   held in memory, long-lived streams, requests running at the instance), see
//!   [`crate::proxy::contract::budget`].
//! - **one slot per connection, also after an upgrade**: the connection's permit and its
//!   count in `pavise_open_connections` live in a [`Slot`] that a WebSocket tunnel
//!   keeps after hyper hands the connection over.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::{
    net::TcpStream,
    sync::OwnedSemaphorePermit,
    time::{Instant, Sleep},
};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::{
    accept::Acceptor,
    config::PublicConfig,
    metrics::Metrics,
    proxy::contract::{
        BoxError, ClientConn, ConnShare, Request, Response, Slot, boxed, budget::Budgets, error::BodyTooSlow,
    },
    workers::Workers,
};

/// The per-connection limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_header_bytes: usize,
    /// The TLS handshake, the first request's start and every HTTP/1.1 head.
    pub header_read_timeout: Duration,
    /// No progress for this long closes the connection.
    pub idle_timeout: Duration,
    /// Bytes per second a request body must keep up (after `header_read_timeout`)...
    pub min_body_rate: u64,
    /// ...measured over this window: early bytes buy at most this much silence.
    pub body_rate_window: Duration,
    pub h2_max_streams: u32,
    pub h2_stream_send_buffer: usize,
    /// How long open connections may take to finish once shutdown begins.
    pub grace: Duration,
}

impl Limits {
    /// The public listener's, from `[public]`.
    pub fn public(p: &PublicConfig) -> Limits {
        Limits {
            max_header_bytes: p.max_header_bytes.0 as usize,
            header_read_timeout: p.header_read_timeout.get(),
            idle_timeout: p.idle_timeout.get(),
            min_body_rate: p.min_body_rate.0,
            body_rate_window: p.body_rate_window.get(),
            h2_max_streams: p.h2_max_streams,
            h2_stream_send_buffer: p.h2_stream_send_buffer.0 as usize,
            grace: p.shutdown_grace.get(),
        }
    }

    /// The admin listener's: the public listener's rules (its own connection cap is
    /// `admin.max_connections`, given to its [`Acceptor`]).
    pub fn admin(p: &PublicConfig) -> Limits {
        Limits::public(p)
    }

    fn builder(&self) -> auto::Builder<TokioExecutor> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            .max_buf_size(self.max_header_bytes.max(8192))
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(self.max_header_bytes as u32)
            .max_concurrent_streams(self.h2_max_streams)
            .max_send_buf_size(self.h2_stream_send_buffer);
        builder
    }
}

/// A connection's place: its permit under the listener's cap and, on the public
/// listener, its count in `pavise_open_connections`; both end when the last holder
/// drops it.
struct ConnSlot {
    _permit: OwnedSemaphorePermit,
    metrics: Option<Arc<Metrics>>,
}

impl ConnSlot {
    fn new(permit: OwnedSemaphorePermit, metrics: Option<Arc<Metrics>>) -> ConnSlot {
        if let Some(m) = &metrics {
            m.connection_opened();
        }
        ConnSlot { _permit: permit, metrics }
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        if let Some(m) = &self.metrics {
            m.connection_closed();
        }
    }
}

/// How one listener serves its connections.
pub struct Listener {
    pub acceptor: Acceptor,
    pub tls: Option<TlsAcceptor>,
    pub limits: Limits,
    /// Counts connections in `pavise_open_connections` (the public listener).
    pub metrics: Option<Arc<Metrics>>,
    /// Whether a request may switch protocols (WebSocket, on the public listener).
    pub upgrades: bool,
    /// The budgets every connection of this listener shares.
    pub budgets: Arc<Budgets>,
    /// Where connections are served: these threads ([`crate::workers`]), or the accept
    /// loop's own runtime.
    pub workers: Option<Arc<Workers>>,
}

/// Accepts and serves until `shutdown`, then lets open connections finish for up to
/// `limits.grace`. `handler` answers each request.
pub async fn serve<H, F>(listener: Listener, shutdown: CancellationToken, handler: H)
where
    H: Fn(Arc<ClientConn>, Request) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    let Listener { acceptor, tls, limits, metrics, upgrades, budgets, workers } = listener;
    let graceful = GracefulShutdown::new();
    let builder = Arc::new(limits.builder());
    while let Some((stream, peer, permit)) = acceptor.next(&shutdown).await {
        let slot: Slot = Arc::new(ConnSlot::new(permit, metrics.clone()));
        let share = ConnShare::new(budgets.clone());
        let conn = Arc::new(ClientConn { peer: peer.ip(), https: tls.is_some(), slot, share });
        let one = One { builder: builder.clone(), limits, upgrades, watcher: graceful.watcher() };
        let (tls, handler) = (tls.clone(), handler.clone());
        match &workers {
            // The socket leaves this runtime's reactor for the worker's.
            Some(workers) => match stream.into_std() {
                Ok(stream) => workers.spawn(async move {
                    match TcpStream::from_std(stream) {
                        Ok(stream) => one.serve(stream, tls, conn, handler).await,
                        Err(e) => tracing::debug!(error = %e, "could not hand a connection to a worker"),
                    }
                }),
                Err(e) => tracing::debug!(error = %e, "could not hand a connection to a worker"),
            },
            None => drop(tokio::spawn(one.serve(stream, tls, conn, handler))),
        }
    }
    drop(acceptor);
    if tokio::time::timeout(limits.grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(grace = ?limits.grace, "connections still open after the grace period; closing them");
    }
}

/// One accepted connection, served.
struct One {
    builder: Arc<auto::Builder<TokioExecutor>>,
    limits: Limits,
    upgrades: bool,
    watcher: hyper_util::server::graceful::Watcher,
}

impl One {
    async fn serve<H, F>(self, stream: TcpStream, tls: Option<TlsAcceptor>, conn: Arc<ClientConn>, handler: H)
    where
        H: Fn(Arc<ClientConn>, Request) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response> + Send + 'static,
    {
        let One { builder, limits, upgrades, watcher } = self;
        let progress = Arc::new(Progress::new());
        let service = {
            let progress = progress.clone();
            service_fn(move |req: http::Request<Incoming>| {
                progress.request_started();
                let guarded = Guarded::new(progress.clone(), &limits);
                let req = req.map(|inner| boxed(guarded.wrap(inner)));
                let (handler, conn, progress) = (handler.clone(), conn.clone(), progress.clone());
                async move {
                    let resp = handler(conn, req).await;
                    Ok::<_, Infallible>(resp.map(|inner| Tracked { inner, progress }))
                }
            })
        };
        let watchdog = progress.watchdog(limits);
        match tls {
            Some(acceptor) => {
                let stream = match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => return tracing::debug!(error = %e, "TLS handshake failed"),
                    Err(_) => return tracing::debug!("TLS handshake timed out"),
                };
                let io = TokioIo::new(stream);
                if upgrades {
                    run(watcher.watch(builder.serve_connection_with_upgrades(io, service).into_owned()), watchdog).await
                } else {
                    run(watcher.watch(builder.serve_connection(io, service).into_owned()), watchdog).await
                }
            }
            None => {
                let io = TokioIo::new(stream);
                if upgrades {
                    run(watcher.watch(builder.serve_connection_with_upgrades(io, service).into_owned()), watchdog).await
                } else {
                    run(watcher.watch(builder.serve_connection(io, service).into_owned()), watchdog).await
                }
            }
        }
    }
}

async fn run<C, E>(conn: C, watchdog: impl Future<Output = &'static str>)
where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    tokio::select! {
        result = conn => if let Err(e) = result { tracing::debug!(error = %e, "connection ended with an error") },
        why = watchdog => tracing::debug!(why, "connection closed"),
    }
}

/// How a connection is getting on: when it was accepted, when it last made progress,
/// how many requests it has started. Shared by its watchdog and its bodies.
pub struct Progress {
    epoch: Instant,
    last_ms: AtomicU64,
    requests: AtomicU64,
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}

impl Progress {
    pub fn new() -> Progress {
        Progress { epoch: Instant::now(), last_ms: AtomicU64::new(0), requests: AtomicU64::new(0) }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// A body frame moved.
    pub fn touch(&self) {
        self.last_ms.store(self.now_ms(), Relaxed);
    }

    pub fn request_started(&self) {
        self.requests.fetch_add(1, Relaxed);
        self.touch();
    }

    /// Resolves, with the reason, once the connection should be closed: no request
    /// started within `header_read_timeout` of the accept, or no progress for
    /// `idle_timeout`.
    pub async fn watchdog(self: Arc<Self>, limits: Limits) -> &'static str {
        loop {
            let now = self.epoch.elapsed();
            if self.requests.load(Relaxed) == 0 {
                if now >= limits.header_read_timeout {
                    return "no request started in time";
                }
                // A request may start meanwhile: look again in time to see it go idle.
                tokio::time::sleep((limits.header_read_timeout - now).min(limits.idle_timeout)).await;
                continue;
            }
            let quiet = now.saturating_sub(Duration::from_millis(self.last_ms.load(Relaxed)));
            if quiet >= limits.idle_timeout {
                return "no progress (idle)";
            }
            tokio::time::sleep(limits.idle_timeout - quiet).await;
        }
    }
}

/// The body guard's settings, made once per request.
pub struct Guarded {
    progress: Arc<Progress>,
    min_rate: u64,
    grace: Duration,
    window: Duration,
}

impl Guarded {
    pub fn new(progress: Arc<Progress>, limits: &Limits) -> Guarded {
        Guarded {
            progress,
            min_rate: limits.min_body_rate.max(1),
            grace: limits.header_read_timeout,
            window: limits.body_rate_window,
        }
    }

    pub fn wrap<B>(self, inner: B) -> GuardedBody<B> {
        let credit = self.grace;
        GuardedBody { inner, guard: self, credit, pending_since: None, timer: None, failed: false }
    }
}

pin_project_lite::pin_project! {
    /// A request body that counts as progress and must keep up the minimum rate, as a
    /// bucket of waiting time: it starts with the grace, every byte received adds
    /// `1 / min_rate` seconds, the bucket never holds more than the window, and the time
    /// pavise spends waiting for the client drains it; empty, the body fails. So a body
    /// at the minimum rate never fails, a slower one does within the window, and bytes
    /// sent early cannot buy more than one window of silence. Time the consumer spends
    /// not asking (the instance reading slowly) does not count.
    pub struct GuardedBody<B> {
        #[pin]
        inner: B,
        guard: Guarded,
        credit: Duration,
        pending_since: Option<Instant>,
        timer: Option<Pin<Box<Sleep>>>,
        failed: bool,
    }
}

impl<B> http_body::Body for GuardedBody<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if *this.failed {
            return Poll::Ready(None);
        }
        match this.inner.poll_frame(cx) {
            Poll::Pending => {
                let now = Instant::now();
                let since = *this.pending_since.get_or_insert(now);
                let deadline = since + *this.credit;
                if now >= deadline {
                    *this.failed = true;
                    return Poll::Ready(Some(Err(Box::new(BodyTooSlow))));
                }
                let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                if timer.as_mut().poll(cx).is_ready() {
                    *this.failed = true;
                    return Poll::Ready(Some(Err(Box::new(BodyTooSlow))));
                }
                Poll::Pending
            }
            Poll::Ready(frame) => {
                if let Some(since) = this.pending_since.take() {
                    *this.credit = this.credit.saturating_sub(since.elapsed());
                }
                if let Some(Ok(frame)) = &frame
                    && let Some(data) = frame.data_ref()
                {
                    let earned = Duration::from_secs_f64(data.len() as f64 / this.guard.min_rate as f64);
                    *this.credit = (*this.credit + earned).min(this.guard.window.max(*this.credit));
                    this.guard.progress.touch();
                }
                Poll::Ready(frame.map(|r| r.map_err(Into::into)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// A response body whose frames count as the connection's progress: a client that
    /// stops reading stops it.
    pub struct Tracked<B> {
        #[pin]
        inner: B,
        progress: Arc<Progress>,
    }
}

impl<B> http_body::Body for Tracked<B>
where
    B: http_body::Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &polled {
            this.progress.touch();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    fn limits() -> Limits {
        Limits {
            max_header_bytes: 8192,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            min_body_rate: 1000,
            body_rate_window: Duration::from_secs(10),
            h2_max_streams: 8,
            h2_stream_send_buffer: 16 * 1024,
            grace: Duration::from_secs(1),
        }
    }

    type Chunks = tokio::sync::mpsc::Sender<Result<Frame<Bytes>, Infallible>>;

    fn channel_body(limits: &Limits) -> (Chunks, GuardedBody<impl http_body::Body<Data = Bytes, Error = Infallible>>) {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
        let body = Guarded::new(Arc::new(Progress::new()), limits).wrap(StreamBody::new(Box::pin(stream)));
        (tx, body)
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickled_body_fails_once_the_grace_and_its_bytes_are_used_up() {
        let limits = limits();
        let (tx, mut body) = channel_body(&limits);
        let trickle = tokio::spawn(async move {
            for _ in 0..100 {
                if tx.send(Ok(Frame::data(Bytes::from_static(b"x")))).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        });
        let started = Instant::now();
        let err = loop {
            match body.frame().await {
                Some(Ok(_)) => continue,
                Some(Err(e)) => break e,
                None => panic!("the body ended"),
            }
        };
        assert!(err.downcast_ref::<BodyTooSlow>().is_some());
        // 10 s of grace, and a few bytes bought a few milliseconds more.
        let took = started.elapsed();
        assert!(took >= Duration::from_secs(10) && took < Duration::from_secs(11), "{took:?}");
        trickle.abort();
    }

    /// Red-team F1: a lifetime average let 15 MiB sent at once buy hours of silence.
    #[tokio::test(start_paused = true)]
    async fn bytes_sent_early_buy_at_most_one_window_of_silence() {
        let limits = limits();
        let (tx, mut body) = channel_body(&limits);
        let sender = tokio::spawn(async move {
            // A megabyte at once (worth 1,000 s under an average), then nothing.
            for _ in 0..64 {
                tx.send(Ok(Frame::data(Bytes::from(vec![b'x'; 16 * 1024])))).await.unwrap();
            }
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(tx);
        });
        let mut started = None;
        let err = loop {
            match body.frame().await {
                Some(Ok(_)) => {
                    started.get_or_insert_with(Instant::now);
                }
                Some(Err(e)) => break e,
                None => panic!("the body ended"),
            }
        };
        assert!(err.downcast_ref::<BodyTooSlow>().is_some());
        let silent = started.unwrap().elapsed();
        assert!(silent <= limits.body_rate_window + Duration::from_millis(10), "{silent:?} of silence");
        sender.abort();
    }

    /// A body slower than the minimum fails even after a fast start: the window slides.
    #[tokio::test(start_paused = true)]
    async fn a_body_that_slows_below_the_rate_fails_within_the_window() {
        let limits = limits();
        let (tx, mut body) = channel_body(&limits);
        let sender = tokio::spawn(async move {
            tx.send(Ok(Frame::data(Bytes::from(vec![b'x'; 500_000])))).await.unwrap();
            // Then 500 bytes a second: half the minimum, forever.
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if tx.send(Ok(Frame::data(Bytes::from(vec![b'x'; 500])))).await.is_err() {
                    return;
                }
            }
        });
        let started = Instant::now();
        let err = loop {
            match body.frame().await {
                Some(Ok(_)) => continue,
                Some(Err(e)) => break e,
                None => panic!("the body ended"),
            }
        };
        assert!(err.downcast_ref::<BodyTooSlow>().is_some());
        // A full window of credit, drained at half a second per second.
        let took = started.elapsed();
        assert!(took >= Duration::from_secs(19) && took <= Duration::from_secs(22), "{took:?}");
        sender.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_at_the_minimum_rate_passes_and_idle_consumers_do_not_count() {
        let limits = limits();
        let (tx, mut body) = channel_body(&limits);
        tokio::spawn(async move {
            for _ in 0..30 {
                // 2,000 bytes a second, twice the minimum.
                tx.send(Ok(Frame::data(Bytes::from(vec![b'x'; 1000])))).await.unwrap();
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        let mut got = 0;
        while let Some(frame) = body.frame().await {
            got += frame.unwrap().into_data().unwrap().len();
            // A consumer that pauses (the instance reading slowly) is not the client's fault.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        assert_eq!(got, 30_000);
    }

    #[tokio::test(start_paused = true)]
    async fn watchdog_closes_a_connection_without_a_request_or_without_progress() {
        let limits = limits();
        let started = Instant::now();
        let progress = Arc::new(Progress::new());
        assert_eq!(progress.clone().watchdog(limits).await, "no request started in time");
        assert_eq!(started.elapsed(), limits.header_read_timeout);

        let progress = Arc::new(Progress::new());
        let kept = progress.clone();
        tokio::spawn(async move {
            // The request starts a second after the accept, then its body moves.
            tokio::time::sleep(Duration::from_secs(1)).await;
            kept.request_started();
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_secs(30)).await;
                kept.touch();
            }
        });
        let started = Instant::now();
        assert_eq!(progress.watchdog(limits).await, "no progress (idle)");
        // Five touches 30 s apart, then 60 s of nothing.
        assert_eq!(started.elapsed().as_secs(), 1 + 150 + 60);

        // Idle sooner than the request-start timeout: seen when it comes, not at the timeout.
        let limits = Limits { idle_timeout: Duration::from_secs(2), ..limits };
        let progress = Arc::new(Progress::new());
        progress.request_started();
        let started = Instant::now();
        assert_eq!(progress.watchdog(limits).await, "no progress (idle)");
        assert_eq!(started.elapsed().as_secs(), 2);
    }
}
