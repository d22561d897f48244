//! Test harness: a recording upstream (an in-process hyper server standing in for the
//! instance) and pavise itself started in-process on loopback ports the OS picks.

#![allow(dead_code)]

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use pavise::config::{Config, FileConfig, Overrides};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub type TestBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// What arrived at the upstream: the whole request, body included.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: http::Method,
    pub uri: http::Uri,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    pub peer: SocketAddr,
}

type Handler = Arc<dyn Fn(Recorded) -> BoxFut<http::Response<TestBody>> + Send + Sync>;

/// An upstream that records every request and answers with `handler`.
pub struct RecordingUpstream {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    stop: CancellationToken,
}

pub fn text(status: u16, body: &str) -> http::Response<TestBody> {
    let mut r = http::Response::new(Full::new(Bytes::from(body.to_owned())).map_err(|e| match e {}).boxed());
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
    r
}

impl RecordingUpstream {
    /// Answers 200 "ok" to everything.
    pub async fn start() -> RecordingUpstream {
        Self::with_handler(|_| text(200, "ok")).await
    }

    pub async fn with_handler(
        handler: impl Fn(&Recorded) -> http::Response<TestBody> + Send + Sync + 'static,
    ) -> RecordingUpstream {
        Self::with_async_handler(move |rec| {
            let resp = handler(&rec);
            Box::pin(async move { resp })
        })
        .await
    }

    /// The handler may wait (to hold a response open) without blocking the runtime.
    pub async fn with_async_handler(
        handler: impl Fn(Recorded) -> BoxFut<http::Response<TestBody>> + Send + Sync + 'static,
    ) -> RecordingUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let handler: Handler = Arc::new(handler);
        let (reqs, token) = (requests.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    _ = token.cancelled() => return,
                    a = listener.accept() => a.unwrap(),
                };
                let (reqs, handler) = (reqs.clone(), handler.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: http::Request<Incoming>| {
                        let (reqs, handler) = (reqs.clone(), handler.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                            let rec =
                                Recorded { method: parts.method, uri: parts.uri, headers: parts.headers, body, peer };
                            reqs.lock().unwrap().push(rec.clone());
                            Ok::<_, Infallible>(handler(rec).await)
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        RecordingUpstream { addr, requests, stop }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn recorded(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    pub fn last(&self) -> Recorded {
        self.recorded().pop().expect("the upstream received nothing")
    }
}

impl Drop for RecordingUpstream {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A running pavise, on loopback ports chosen by the OS.
pub struct Pavise {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub egress: SocketAddr,
    pub token: String,
    pub data_dir: tempfile::TempDir,
    pub shutdown: CancellationToken,
    pub done: Option<tokio::task::JoinHandle<()>>,
}

impl Pavise {
    /// Starts pavise in front of `upstream` (both web and streaming), after `tweak` edits
    /// the file-level config. Ports are 0 (OS-chosen); the data dir is a fresh temp dir.
    pub async fn start(upstream: &str, tweak: impl FnOnce(&mut FileConfig)) -> Pavise {
        let data_dir = tempfile::tempdir().unwrap();
        let mut file = FileConfig::default();
        file.public.listen = "127.0.0.1:0".parse().unwrap();
        file.admin.listen = "127.0.0.1:0".parse().unwrap();
        file.egress.listen = "127.0.0.1:0".parse().unwrap();
        // Tor mode with arti's defaults would bootstrap against the public Tor network:
        // tests that want Tor point it at scripts/tornet (tests/egress.rs) in `tweak`.
        file.egress.mode = pavise::config::EgressMode::Direct;
        file.data_dir = data_dir.path().to_owned();
        file.policies = data_dir.path().join("policies");
        // A test's key may sit in its temp data dir (in Tor mode too, against scripts/tornet);
        // the expiry tests that seize a data dir keep it apart, as production must.
        file.expiry.allow_key_in_data_dir = true;
        file.upstream.url = upstream.to_owned();
        file.upstream.streaming_url = upstream.to_owned();
        tweak(&mut file);
        capture_logs();
        let config = Config::validate(file, &Overrides::default(), None).unwrap();
        let token_file = config.admin_token_file();
        let shutdown = CancellationToken::new();
        let (bound, done) = pavise::app::start(config, shutdown.clone()).await.unwrap();
        let token = std::fs::read_to_string(token_file).unwrap().trim().to_owned();
        Pavise {
            addr: bound.public,
            admin: bound.admin,
            egress: bound.egress,
            token,
            data_dir,
            shutdown,
            done: Some(done),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    /// Stops pavise and waits for the drain to finish.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(done) = self.done.take() {
            tokio::time::timeout(Duration::from_secs(30), done).await.expect("shutdown drained in time").unwrap();
        }
    }
}

impl Drop for Pavise {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A plain HTTP/1.1 client whose socket is bound to `source` (a distinctive loopback
/// address such as 127.13.37.42), so tests can look for that address in what leaked.
pub async fn send_from(
    source: std::net::IpAddr,
    to: SocketAddr,
    req: http::Request<Full<Bytes>>,
) -> (http::response::Parts, Bytes) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    let stream = socket.connect(to).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    (parts, body.collect().await.unwrap().to_bytes())
}

/// Every file below `dir`, read whole (to search for leaked values).
pub fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                out.push((p, bytes));
            }
        }
    }
    out
}

/// Where ../shared lives (beside the checkout); None when absent. Under CI=true its
/// absence is a failure, never a skip.
pub fn shared_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared");
    if dir.is_dir() {
        return Some(dir);
    }
    assert!(std::env::var("CI").as_deref() != Ok("true"), "../shared is missing under CI=true");
    None
}

/// Boxes a future (for handler tables in tests).
pub type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Everything pavise logged in this test process (all levels from info, access log included).
static LOGS: std::sync::OnceLock<Arc<Mutex<Vec<u8>>>> = std::sync::OnceLock::new();

#[derive(Clone)]
struct LogSink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogSink {
    type Writer = LogSink;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Routes pavise's tracing output (debug level, so nothing hides) into a buffer tests can search.
pub fn capture_logs() {
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = LogSink(buf.clone());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "debug,h2=info,hyper=info,hyper_util=info,rustls=info,tor_=info,arti_=info",
            ))
            .with_writer(sink)
            .with_ansi(false)
            .try_init();
        buf
    });
}

/// The captured log text so far.
pub fn logs() -> String {
    LOGS.get().map(|b| String::from_utf8_lossy(&b.lock().unwrap()).into_owned()).unwrap_or_default()
}
