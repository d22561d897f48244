//! Connections to one of the instance's processes, kept open and reused.
//!
//! The relay talks to one or two fixed addresses over HTTP/1.1, so a pool here is a
//! stack of idle connections and nothing more. hyper-util's general client, used before,
//! hashed a pool key, raced a checkout against a lazily cloned connector, rebuilt every
//! request's URI twice and wrapped each connection per request: a few per cent of the
//! relay's CPU per request (issue 15).
//!
//! Each connection runs in a task of its own (hyper's `Connection`, upgrades enabled for
//! WebSocket handshakes). Its socket holds a permit of `upstream.max_connections` for as
//! long as it is open: pooled, in use, or spliced into a tunnel once it switched
//! protocols. A connection goes back on the stack once it can take the next request, and
//! the most recently used is taken first (its socket is the one least likely to have been
//! closed by the instance's keep-alive timeout). One idle past `pool_idle_timeout` is
//! closed and its permit given back.
//!
//! Idle connections are kept per serving thread ([`crate::workers`]): a connection's task
//! runs on the thread that opened it, and a request served there that takes it wakes no
//! other thread. A thread with none idle takes another's before it opens one.
//!
//! A request that finds every permit taken waits for whichever comes first: a permit, or
//! a connection another request gives back (idle connections hold their permits, so
//! waiting for a permit alone would wait out `connect_timeout` beside them).
//!
//! A request sent on a pooled connection the instance closed before reading it is sent
//! again on a new one: hyper hands such a request back untouched, so nothing of it
//! reached the instance.

use std::{
    collections::VecDeque,
    io,
    pin::Pin,
    sync::{Arc, Mutex, OnceLock, Weak},
    task::{Context, Poll},
    time::Duration,
};

use http::{Request, Response, Uri, uri::Authority};
use hyper::{
    body::Incoming,
    client::conn::http1::{self, SendRequest},
};
use hyper_util::{client::legacy::connect::HttpConnector, rt::TokioIo};
use tokio::{
    net::TcpStream,
    sync::{OwnedSemaphorePermit, Semaphore, oneshot},
    time::Instant,
};

use crate::proxy::contract::{Body, BoxError};

/// Why a request got no answer from the instance.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// Every permit of `upstream.max_connections` stayed taken for `connect_timeout`.
    #[error("every connection to the instance is busy")]
    Busy,
    #[error("could not connect to the instance: {0}")]
    Connect(#[source] BoxError),
    #[error("the connection to the instance failed: {0}")]
    Request(#[source] hyper::Error),
}

/// A request on its way, until the instance's response head.
pub(super) type Sending = Pin<Box<dyn std::future::Future<Output = Result<Response<Incoming>, SendError>> + Send>>;

/// How the pool is sized and timed (`[upstream]`).
pub(super) struct PoolConfig {
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_idle: usize,
    /// A response the client does not read stops being read from the instance after
    /// this much is buffered.
    pub max_buf_size: usize,
    /// Serving threads, each with its stack of idle connections.
    pub threads: usize,
}

/// One process of the instance (the web process, or the streaming server) and its
/// idle connections.
pub(super) struct Pool {
    http: HttpConnector,
    target: Uri,
    permits: Arc<Semaphore>,
    /// One stack per serving thread, and a last one for every other thread.
    idle: Box<[Mutex<Vec<Idle>>]>,
    /// Requests waiting for a permit, which take a connection given back first.
    waiters: Mutex<VecDeque<oneshot::Sender<Pooled>>>,
    config: PoolConfig,
    reaper: OnceLock<()>,
}

struct Idle {
    send: SendRequest<Body>,
    since: Instant,
}

/// A connection, and the idle stack of the thread its task runs on.
struct Pooled {
    send: SendRequest<Body>,
    home: usize,
}

impl Pool {
    /// `permits`: the connection cap this process's connections count against.
    pub(super) fn new(authority: Authority, http: HttpConnector, permits: Arc<Semaphore>, config: PoolConfig) -> Pool {
        let target = Uri::builder().scheme("http").authority(authority).path_and_query("/").build();
        Pool {
            http,
            target: target.unwrap_or_default(),
            permits,
            idle: (0..=config.threads).map(|_| Mutex::new(Vec::new())).collect(),
            waiters: Mutex::new(VecDeque::new()),
            config,
            reaper: OnceLock::new(),
        }
    }

    /// Sends `req` (origin-form target, `Host` set) and returns the response head; the
    /// body streams from the connection's task.
    pub(super) async fn send(self: Arc<Self>, mut req: Request<Body>) -> Result<Response<Incoming>, SendError> {
        loop {
            let (Pooled { mut send, home }, reused) = self.connection().await?;
            match send.try_send_request(req).await {
                Ok(resp) => {
                    self.give_back(Pooled { send, home });
                    return Ok(resp);
                }
                Err(mut e) => match e.take_message() {
                    // Never written: the instance closed this idle connection first.
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(SendError::Request(e.into_error())),
                },
            }
        }
    }

    /// An idle connection; else a new one once a permit of the cap is free, or a
    /// connection another request gives back, whichever comes first (within
    /// `connect_timeout`). `true` for a connection that served a request before.
    async fn connection(&self) -> Result<(Pooled, bool), SendError> {
        if let Some(pooled) = self.take_idle() {
            return Ok((pooled, true));
        }
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let (given, handed) = oneshot::channel();
                {
                    let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
                    waiters.retain(|w| !w.is_closed());
                    waiters.push_back(given);
                }
                let permit = tokio::time::timeout(self.config.connect_timeout, self.permits.clone().acquire_owned());
                tokio::select! {
                    biased;
                    Ok(send) = handed => return Ok((send, true)),
                    permit = permit => match permit {
                        Ok(Ok(permit)) => permit,
                        _ => return Err(SendError::Busy),
                    },
                }
            }
        };
        Ok((self.connect(permit).await?, false))
    }

    /// This thread's idle stack.
    fn here(&self) -> usize {
        let others = self.idle.len() - 1;
        crate::workers::current().filter(|&i| i < others).unwrap_or(others)
    }

    /// The most recently used idle connection that can take a request now: this
    /// thread's first, then any other's.
    fn take_idle(&self) -> Option<Pooled> {
        let here = self.here();
        let stacks = self.idle.len();
        (0..stacks).map(|i| (here + i) % stacks).find_map(|home| {
            let mut idle = self.idle[home].lock().unwrap_or_else(|e| e.into_inner());
            while let Some(Idle { send, since }) = idle.pop() {
                if send.is_ready() && since.elapsed() < self.config.idle_timeout {
                    return Some(Pooled { send, home });
                }
            }
            None
        })
    }

    /// A new connection, holding `permit` for as long as it is open.
    async fn connect(&self, permit: OwnedSemaphorePermit) -> Result<Pooled, SendError> {
        let mut http = self.http.clone();
        let io = tower_service::Service::call(&mut http, self.target.clone())
            .await
            .map_err(|e| SendError::Connect(Box::new(e)))?;
        let io = CappedStream { io, _permit: permit };
        let (send, conn) = http1::Builder::new()
            .max_buf_size(self.config.max_buf_size)
            .handshake(io)
            .await
            .map_err(SendError::Request)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "connection to the instance ended");
            }
        });
        Ok(Pooled { send, home: self.here() })
    }

    /// Back on the stack once it can take the next request: at once when the response
    /// was read whole with its head, else from a task that waits for the body's end.
    /// A connection that switched protocols, or closed, is not kept.
    fn give_back(self: Arc<Self>, mut pooled: Pooled) {
        if pooled.send.is_closed() {
            return;
        }
        if pooled.send.is_ready() {
            return self.keep(pooled);
        }
        tokio::spawn(async move {
            if pooled.send.ready().await.is_ok() {
                self.keep(pooled);
            }
        });
    }

    /// To the request waiting longest for a connection, else onto the stack.
    fn keep(self: &Arc<Self>, mut pooled: Pooled) {
        {
            let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
            while let Some(waiter) = waiters.pop_front() {
                match waiter.send(pooled) {
                    Ok(()) => return,
                    // That request got a permit, or went away.
                    Err(back) => pooled = back,
                }
            }
        }
        let mut idle = self.idle[pooled.home].lock().unwrap_or_else(|e| e.into_inner());
        // `max_idle` shared out among the stacks.
        if idle.len() >= self.config.max_idle.div_ceil(self.idle.len()) {
            return;
        }
        idle.push(Idle { send: pooled.send, since: Instant::now() });
        drop(idle);
        self.reaper.get_or_init(|| spawn_reaper(Arc::downgrade(self), self.config.idle_timeout));
    }

    /// Closes idle connections past the timeout, and forgets those the instance closed.
    fn reap(&self) {
        let timeout = self.config.idle_timeout;
        for stack in &self.idle {
            let mut idle = stack.lock().unwrap_or_else(|e| e.into_inner());
            idle.retain(|i| i.since.elapsed() < timeout && !i.send.is_closed());
        }
    }

    #[cfg(test)]
    fn idle_len(&self) -> usize {
        self.idle.iter().map(|stack| stack.lock().unwrap().len()).sum()
    }
}

/// Ends with the pool.
fn spawn_reaper(pool: Weak<Pool>, timeout: Duration) {
    let period = (timeout / 2).max(Duration::from_millis(100));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match pool.upgrade() {
                Some(pool) => pool.reap(),
                None => return,
            }
        }
    });
}

pin_project_lite::pin_project! {
    /// A connection to the instance and its permit.
    struct CappedStream {
        #[pin]
        io: TokioIo<TcpStream>,
        _permit: OwnedSemaphorePermit,
    }
}

impl hyper::rt::Read for CappedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().io.poll_read(cx, buf)
    }
}

impl hyper::rt::Write for CappedStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    use super::*;

    /// An instance that answers `n` requests on each connection it accepts, then
    /// closes it; it counts the connections.
    async fn instance(answers_per_connection: usize) -> (Authority, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority: Authority = listener.local_addr().unwrap().to_string().parse().unwrap();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    for _ in 0..answers_per_connection {
                        let mut got = Vec::new();
                        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                            let n = s.read(&mut buf).await.unwrap();
                            if n == 0 {
                                return;
                            }
                            got.extend_from_slice(&buf[..n]);
                        }
                        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await.unwrap();
                    }
                });
            }
        });
        (authority, accepted)
    }

    fn pool(authority: Authority, permits: usize, idle_timeout: Duration) -> Arc<Pool> {
        pool_on(authority, permits, idle_timeout, 0)
    }

    fn pool_on(authority: Authority, permits: usize, idle_timeout: Duration, threads: usize) -> Arc<Pool> {
        let config = PoolConfig {
            connect_timeout: Duration::from_secs(2),
            idle_timeout,
            max_idle: 4,
            max_buf_size: 64 * 1024,
            threads,
        };
        Arc::new(Pool::new(authority, HttpConnector::new(), Arc::new(Semaphore::new(permits)), config))
    }

    fn get() -> Request<Body> {
        Request::get("/").header("host", "x").body(crate::proxy::contract::empty()).unwrap()
    }

    async fn body(resp: Response<Incoming>) -> Vec<u8> {
        use http_body_util::BodyExt;
        resp.into_body().collect().await.unwrap().to_bytes().to_vec()
    }

    #[tokio::test]
    async fn one_connection_carries_requests_one_after_another() {
        let (authority, accepted) = instance(100).await;
        let pool = pool(authority, 1, Duration::from_secs(60));
        for _ in 0..5 {
            let resp = pool.clone().send(get()).await.unwrap();
            assert_eq!(body(resp).await, b"ok");
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(pool.idle_len(), 1);
    }

    #[tokio::test]
    async fn requests_past_the_cap_wait_for_a_connection_given_back() {
        // The one connection the cap allows sits in the pool between requests, its
        // permit with it: waiting for the permit alone would wait it out.
        let (authority, accepted) = instance(100).await;
        let pool = pool(authority, 1, Duration::from_secs(60));
        let sends = (0..5).map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { body(pool.send(get()).await.unwrap()).await })
        });
        for send in sends.collect::<Vec<_>>() {
            assert_eq!(send.await.unwrap(), b"ok");
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_the_instance_closed_is_replaced_and_the_request_still_answered() {
        // One answer per connection, then the instance closes it: every request after
        // the first finds its pooled connection closed and needs a new one, within the
        // single permit (the closed connection gave its permit back).
        let (authority, accepted) = instance(1).await;
        let pool = pool(authority, 1, Duration::from_secs(60));
        for _ in 0..3 {
            let resp = pool.clone().send(get()).await.unwrap();
            assert_eq!(body(resp).await, b"ok");
            // Let the connection's task see the instance's close.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn no_permit_within_the_connect_timeout_is_busy() {
        let (authority, _) = instance(100).await;
        let config = PoolConfig {
            connect_timeout: Duration::from_millis(50),
            idle_timeout: Duration::from_secs(60),
            max_idle: 4,
            max_buf_size: 65536,
            threads: 0,
        };
        let pool = Arc::new(Pool::new(authority, HttpConnector::new(), Arc::new(Semaphore::new(0)), config));
        assert!(matches!(pool.send(get()).await, Err(SendError::Busy)));
    }

    #[tokio::test]
    async fn an_idle_connection_past_the_timeout_is_closed_and_its_permit_given_back() {
        let (authority, _) = instance(100).await;
        let permits = Arc::new(Semaphore::new(1));
        let config = PoolConfig {
            connect_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_millis(200),
            max_idle: 4,
            max_buf_size: 65536,
            threads: 0,
        };
        let pool = Arc::new(Pool::new(authority, HttpConnector::new(), permits.clone(), config));
        let resp = pool.clone().send(get()).await.unwrap();
        assert_eq!(body(resp).await, b"ok");
        assert_eq!(permits.available_permits(), 0, "the pooled connection holds the permit");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(pool.idle_len(), 0);
        // Its task sees the socket dropped and ends; the permit comes back.
        for _ in 0..100 {
            if permits.available_permits() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(permits.available_permits(), 1);
    }

    #[tokio::test]
    async fn a_connection_goes_back_to_the_thread_that_opened_it_and_others_borrow_it() {
        let (authority, accepted) = instance(100).await;
        let workers = crate::workers::Workers::start(2).unwrap();
        let pool = pool_on(authority, 4, Duration::from_secs(60), 2);
        // The workers take tasks in turn: 0, 1, 0.
        for worker in [0, 1, 0] {
            let (tx, rx) = oneshot::channel();
            let sender = pool.clone();
            workers.spawn(async move {
                let here = crate::workers::current();
                let _ = tx.send((here, body(sender.send(get()).await.unwrap()).await));
            });
            let (here, got) = rx.await.unwrap();
            assert_eq!(got, b"ok");
            // Wherever it ran, the one connection is back on the stack of thread 0,
            // which opened it (its task runs there).
            assert_eq!(here, Some(worker));
            for _ in 0..100 {
                if pool.idle[0].lock().unwrap().len() == 1 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(pool.idle[0].lock().unwrap().len(), 1);
            assert_eq!(pool.idle_len(), 1);
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1, "thread 1 borrowed, it did not connect");
    }
}
