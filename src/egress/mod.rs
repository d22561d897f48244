//! Outbound federation over Tor: the forward proxy the instance sends its own requests
//! through (`http_proxy=http://127.0.0.1:8118`), replacing tor + privoxy.
//!
//! Every peer the instance federates with would otherwise learn the server's IP
//! address, and from it the hosting provider and country. Here every outbound
//! connection leaves through Tor (arti-client, in-process), .onion peers included.
//!
//! ```text
//!  instance ──CONNECT host:443──► listener ──► policy ──► connector ──► Tor ──► peer
//!           ──GET http://x/ ────►  (HTTP)       (403)      tor (503/502, never direct)
//!  other software ──SOCKS5──► socks                        direct (development only)
//! ```
//!
//! - [`listener`]: the HTTP forward proxy (`CONNECT` tunnels, absolute-form requests,
//!   optional `Proxy-Authorization: Basic`).
//! - [`socks`]: SOCKS5 with remote DNS on an optional second port.
//! - [`policy`]: allowed ports, the SSRF guard on private/loopback/... addresses,
//!   the domain deny-list; decided before any connection is attempted.
//! - [`tor`]: the arti client — bootstrap, isolation, fail closed.
//! - [`direct`]: the explicit development mode.
//!
//! The order of the checks on a request is fixed: authentication, then the policy,
//! then the connector. So a refused destination sees no packet, and an unbootstrapped
//! Tor never turns into a direct connection.

pub mod direct;
pub mod listener;
pub mod policy;
pub mod socks;
#[cfg(feature = "tor")]
pub mod tor;

use std::{
    fmt::Write as _,
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicI64, AtomicU64, Ordering::Relaxed},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use http::StatusCode;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpListener,
};
use tokio_util::sync::CancellationToken;

use crate::{
    admin::{Readiness, ReadinessCheck},
    config::{Config, EgressMode},
    metrics::{Histogram, LATENCY_BUCKETS, MetricsSource},
    proxy::StageFuture,
};

#[cfg(feature = "tor")]
use self::tor::{BootState, TorConnector};
use self::{
    direct::DirectConnector,
    policy::{Destination, Policy, Refusal},
};

/// Why an egress request did not get its connection. Each variant is one status code,
/// and its text is the reason the client reads in the response body.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("proxy authentication required")]
    AuthRequired,
    #[error("refused: {0}")]
    Refused(#[from] Refusal),
    #[error("{0}; pavise never connects directly (fail closed)")]
    NotBootstrapped(String),
    #[error("Tor could not open a stream ({}): {detail}", failure.label())]
    Tor { failure: TorFailure, detail: String },
    #[error("direct connection failed: {0}")]
    Direct(String),
    #[error("HTTP exchange with the destination failed: {0}")]
    Http(String),
    #[error("{0}")]
    Config(String),
}

/// arti's failure, coarsened for a metric label and for SOCKS reply codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TorFailure {
    Refused,
    Timeout,
    NotFound,
    Rejected,
    Onion,
    Other,
}

impl TorFailure {
    pub fn label(self) -> &'static str {
        match self {
            TorFailure::Refused => "connection refused at the exit",
            TorFailure::Timeout => "timeout",
            TorFailure::NotFound => "host not found",
            TorFailure::Rejected => "rejected by exit policy or address filter",
            TorFailure::Onion => "onion service unreachable",
            TorFailure::Other => "Tor error",
        }
    }
}

impl EgressError {
    pub fn status(&self) -> StatusCode {
        match self {
            EgressError::BadRequest(_) => StatusCode::BAD_REQUEST,
            EgressError::AuthRequired => StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            EgressError::Refused(_) => StatusCode::FORBIDDEN,
            EgressError::NotBootstrapped(_) | EgressError::Config(_) => StatusCode::SERVICE_UNAVAILABLE,
            EgressError::Tor { .. } | EgressError::Direct(_) | EgressError::Http(_) => StatusCode::BAD_GATEWAY,
        }
    }

    /// A metric label (and the `X-Pavise-Egress` response header).
    pub fn label(&self) -> &'static str {
        match self {
            EgressError::BadRequest(_) => "bad_request",
            EgressError::AuthRequired => "auth_required",
            EgressError::Refused(r) => r.label(),
            EgressError::NotBootstrapped(_) => "not_bootstrapped",
            EgressError::Tor { failure, .. } => match failure {
                TorFailure::Refused => "tor_refused",
                TorFailure::Timeout => "tor_timeout",
                TorFailure::NotFound => "tor_not_found",
                TorFailure::Rejected => "tor_rejected",
                TorFailure::Onion => "tor_onion",
                TorFailure::Other => "tor_other",
            },
            EgressError::Direct(_) => "direct_failed",
            EgressError::Http(_) => "http_failed",
            EgressError::Config(_) => "config",
        }
    }
}

const FAILURE_LABELS: &[&str] = &[
    "bad_request",
    "auth_required",
    "refused_port",
    "refused_private_address",
    "refused_denied_domain",
    "not_bootstrapped",
    "tor_refused",
    "tor_timeout",
    "tor_not_found",
    "tor_rejected",
    "tor_onion",
    "tor_other",
    "direct_failed",
    "http_failed",
    "config",
];

/// A byte stream to the destination, whichever way it was opened.
pub trait EgressIo: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> EgressIo for T {}

enum Connector {
    #[cfg(feature = "tor")]
    Tor(Arc<TorConnector>),
    Direct(DirectConnector),
}

/// The shared state of both egress listeners.
pub struct Egress {
    policy: Policy,
    connector: Connector,
    /// `Basic base64(user:password)`, when the listener requires it.
    auth: Option<String>,
    metrics: Arc<EgressMetrics>,
}

impl std::fmt::Debug for Egress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Egress").field("policy", &self.policy).finish_non_exhaustive()
    }
}

impl Egress {
    /// Builds the connector (and, in Tor mode, starts bootstrapping in the background).
    /// Must run inside the tokio runtime.
    pub fn start(config: &Config, shutdown: CancellationToken) -> Result<Arc<Egress>, EgressError> {
        let e = &config.file.egress;
        let policy = Policy::new(e);
        let connector = match e.mode {
            #[cfg(feature = "tor")]
            EgressMode::Tor => {
                let tor = Arc::new(TorConnector::new(config)?);
                tor.start_bootstrap(e.tor.bootstrap_timeout.get(), shutdown);
                Connector::Tor(tor)
            }
            #[cfg(not(feature = "tor"))]
            EgressMode::Tor => {
                drop(shutdown);
                return Err(EgressError::Config(
                    "egress.mode = \"tor\", but this pavise was built without the `tor` feature; rebuild with default features".into(),
                ));
            }
            EgressMode::Direct => Connector::Direct(DirectConnector::new(policy.clone())),
        };
        let auth = e.proxy_auth.as_ref().map(|cred| {
            use base64::Engine as _;
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(cred))
        });
        Ok(Arc::new(Egress { policy, connector, auth, metrics: Arc::new(EgressMetrics::default()) }))
    }

    /// Whether a `Proxy-Authorization` / SOCKS credential is acceptable.
    fn authorized(&self, presented: Option<&[u8]>) -> bool {
        match &self.auth {
            None => true,
            Some(expected) => presented.is_some_and(|p| constant_time_eq(p, expected.as_bytes())),
        }
    }

    fn requires_auth(&self) -> bool {
        self.auth.is_some()
    }

    /// Policy, then connector; counts the outcome. The only way egress opens anything.
    pub async fn open(&self, dest: &Destination) -> Result<Box<dyn EgressIo>, EgressError> {
        if let Err(refusal) = self.policy.check(dest) {
            return Err(self.failed(EgressError::Refused(refusal)));
        }
        let started = Instant::now();
        let result: Result<Box<dyn EgressIo>, EgressError> = match &self.connector {
            #[cfg(feature = "tor")]
            Connector::Tor(tor) => tor.connect(dest).await.map(|s| Box::new(s) as Box<dyn EgressIo>),
            Connector::Direct(direct) => direct.connect(dest).await.map(|s| Box::new(s) as Box<dyn EgressIo>),
        };
        match result {
            Ok(stream) => {
                self.metrics.tor_failing.store(0, Relaxed);
                self.metrics.connect_latency.observe(started.elapsed());
                self.metrics.streams_total.fetch_add(1, Relaxed);
                Ok(Box::new(Counted::new(stream, self.metrics.clone())))
            }
            Err(e) => {
                tracing::debug!(error = %e, "egress connection failed");
                if let EgressError::Tor { failure: TorFailure::Other | TorFailure::Timeout, .. } = &e {
                    self.metrics.tor_failing.fetch_add(1, Relaxed);
                    *self.metrics.last_tor_failure.lock().unwrap_or_else(|p| p.into_inner()) = e.to_string();
                }
                Err(self.failed(e))
            }
        }
    }

    fn failed(&self, e: EgressError) -> EgressError {
        self.metrics.failure(e.label());
        e
    }

    pub fn metrics_source(self: &Arc<Self>) -> Arc<dyn MetricsSource> {
        Arc::new(EgressMetricsView(self.clone()))
    }

    pub fn readiness(self: &Arc<Self>) -> Arc<dyn ReadinessCheck> {
        Arc::new(TorReadiness(self.clone()))
    }

    /// `true` once outbound connections can be made.
    pub fn ready(&self) -> bool {
        match &self.connector {
            #[cfg(feature = "tor")]
            Connector::Tor(t) => matches!(t.state(), BootState::Ready { .. }),
            Connector::Direct(_) => true,
        }
    }
}

/// Serves the HTTP proxy (and SOCKS5 when bound) until `shutdown`.
pub async fn serve(
    egress: Arc<Egress>,
    http: TcpListener,
    socks: Option<TcpListener>,
    grace: Duration,
    shutdown: CancellationToken,
) {
    let socks_task = socks.map(|l| tokio::spawn(socks::serve(egress.clone(), l, shutdown.clone())));
    listener::serve(egress, http, grace, shutdown).await;
    if let Some(t) = socks_task {
        let _ = t.await;
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Counters for `/metrics`.
struct EgressMetrics {
    /// Streams in a row that failed for a reason of Tor's own (no circuit, timeout) —
    /// not the destination's (refused, not found). Reset by any success.
    tor_failing: AtomicU64,
    last_tor_failure: std::sync::Mutex<String>,
    streams_open: AtomicI64,
    streams_total: AtomicU64,
    connect_latency: Histogram,
    failures: Vec<AtomicU64>,
}

impl Default for EgressMetrics {
    fn default() -> Self {
        EgressMetrics {
            tor_failing: AtomicU64::new(0),
            last_tor_failure: std::sync::Mutex::new(String::new()),
            streams_open: AtomicI64::new(0),
            streams_total: AtomicU64::new(0),
            connect_latency: Histogram::new(LATENCY_BUCKETS),
            failures: FAILURE_LABELS.iter().map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl EgressMetrics {
    fn failure(&self, label: &str) {
        if let Some(i) = FAILURE_LABELS.iter().position(|l| *l == label)
            && let Some(c) = self.failures.get(i)
        {
            c.fetch_add(1, Relaxed);
        }
    }
}

struct EgressMetricsView(Arc<Egress>);

impl MetricsSource for EgressMetricsView {
    fn render(&self, out: &mut String) {
        let e = &self.0;
        let m = &e.metrics;
        let (mode, bootstrapped, bootstrap_secs, groups) = match &e.connector {
            #[cfg(feature = "tor")]
            Connector::Tor(t) => match t.state() {
                BootState::Ready { took } => ("tor", 1, took.as_secs_f64(), t.isolation_groups()),
                _ => ("tor", 0, 0.0, t.isolation_groups()),
            },
            Connector::Direct(_) => ("direct", 0, 0.0, 0),
        };
        out.push_str("# HELP pavise_egress_tor_bootstrapped 1 once arti has bootstrapped (always 0 in direct mode).\n");
        out.push_str("# TYPE pavise_egress_tor_bootstrapped gauge\n");
        let _ = writeln!(out, "pavise_egress_tor_bootstrapped{{mode=\"{mode}\"}} {bootstrapped}");
        out.push_str("# HELP pavise_egress_tor_bootstrap_seconds How long arti's bootstrap took.\n");
        out.push_str("# TYPE pavise_egress_tor_bootstrap_seconds gauge\n");
        let _ = writeln!(out, "pavise_egress_tor_bootstrap_seconds {bootstrap_secs}");
        out.push_str(
            "# HELP pavise_egress_tor_isolation_groups Destination hosts holding their own circuit isolation token (per-host isolation).\n",
        );
        out.push_str("# TYPE pavise_egress_tor_isolation_groups gauge\n");
        let _ = writeln!(out, "pavise_egress_tor_isolation_groups {groups}");
        out.push_str("# HELP pavise_egress_streams_open Egress streams (tunnels, forwarded requests) open now.\n");
        out.push_str("# TYPE pavise_egress_streams_open gauge\n");
        let _ = writeln!(out, "pavise_egress_streams_open {}", m.streams_open.load(Relaxed));
        out.push_str("# HELP pavise_egress_streams_total Egress streams opened.\n");
        out.push_str("# TYPE pavise_egress_streams_total counter\n");
        let _ = writeln!(out, "pavise_egress_streams_total {}", m.streams_total.load(Relaxed));
        out.push_str("# HELP pavise_egress_connect_seconds Time to open a stream to the destination (through Tor: circuit + BEGIN).\n");
        out.push_str("# TYPE pavise_egress_connect_seconds histogram\n");
        m.connect_latency.render(out, "pavise_egress_connect_seconds", "");
        out.push_str("# HELP pavise_egress_failures_total Egress requests not connected, by reason.\n");
        out.push_str("# TYPE pavise_egress_failures_total counter\n");
        for (label, n) in FAILURE_LABELS.iter().zip(&m.failures) {
            let _ = writeln!(out, "pavise_egress_failures_total{{reason=\"{label}\"}} {}", n.load(Relaxed));
        }
    }
}

/// Streams failing in a row inside Tor before `/readyz` says Tor is unreachable. arti
/// itself keeps reporting "connecting successfully" for a while after every relay
/// has gone; one success clears it.
#[cfg(feature = "tor")]
const FAILING_AFTER: u64 = 3;

struct TorReadiness(Arc<Egress>);

impl ReadinessCheck for TorReadiness {
    fn name(&self) -> &'static str {
        "tor"
    }

    fn check(&self) -> StageFuture<'_, Readiness> {
        Box::pin(async move {
            let tor = match &self.0.connector {
                // Served, but visibly not what production must run.
                Connector::Direct(_) => return Readiness::Degraded(format!("WARNING: {}", direct::WARNING)),
                #[cfg(feature = "tor")]
                Connector::Tor(t) => match t.state() {
                    BootState::Ready { .. } if let Some(stuck) = t.blockage() => {
                        Err(format!("bootstrapped, but Tor is unreachable now: {stuck}"))
                    }
                    BootState::Ready { .. } if self.0.metrics.tor_failing.load(Relaxed) >= FAILING_AFTER => {
                        let last = self.0.metrics.last_tor_failure.lock().unwrap_or_else(|p| p.into_inner()).clone();
                        Err(format!(
                            "the last {} streams failed inside Tor (latest: {last})",
                            self.0.metrics.tor_failing.load(Relaxed)
                        ))
                    }
                    BootState::Ready { took } => Ok(format!(
                        "bootstrapped in {:.1}s; {}; {} streams open",
                        took.as_secs_f64(),
                        t.progress(),
                        self.0.metrics.streams_open.load(Relaxed)
                    )),
                    BootState::Bootstrapping { since } => {
                        Err(format!("bootstrapping for {:.0}s: {}", since.elapsed().as_secs_f64(), t.progress()))
                    }
                    BootState::Late { since, waited } => Err(format!(
                        "not bootstrapped after {}s (egress.tor.bootstrap_timeout {}s), still trying: {}",
                        since.elapsed().as_secs(),
                        waited.as_secs(),
                        t.progress()
                    )),
                    BootState::Failed { reason } => Err(format!("bootstrap failed: {reason}")),
                },
            };
            // Outbound federation fails closed without Tor: nothing can be sent correctly.
            match tor {
                Ok(detail) => Readiness::Ready(detail),
                Err(reason) => Readiness::NotReady(reason),
            }
        })
    }
}

pin_project_lite::pin_project! {
    /// A destination stream that keeps `streams_open` right, however it ends.
    struct Counted {
        #[pin]
        inner: Box<dyn EgressIo>,
        metrics: Arc<EgressMetrics>,
    }
    impl PinnedDrop for Counted {
        fn drop(this: Pin<&mut Self>) {
            this.metrics.streams_open.fetch_sub(1, Relaxed);
        }
    }
}

impl Counted {
    fn new(inner: Box<dyn EgressIo>, metrics: Arc<EgressMetrics>) -> Counted {
        metrics.streams_open.fetch_add(1, Relaxed);
        Counted { inner, metrics }
    }
}

impl AsyncRead for Counted {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_error_label_is_counted() {
        let errors = [
            EgressError::BadRequest(String::new()),
            EgressError::AuthRequired,
            EgressError::Refused(Refusal::Port(1)),
            EgressError::Refused(Refusal::PrivateAddress(String::new(), "")),
            EgressError::Refused(Refusal::DeniedDomain(String::new())),
            EgressError::NotBootstrapped(String::new()),
            EgressError::Direct(String::new()),
            EgressError::Http(String::new()),
            EgressError::Config(String::new()),
        ];
        for e in errors {
            assert!(FAILURE_LABELS.contains(&e.label()), "{}", e.label());
        }
        for f in [
            TorFailure::Refused,
            TorFailure::Timeout,
            TorFailure::NotFound,
            TorFailure::Rejected,
            TorFailure::Onion,
            TorFailure::Other,
        ] {
            let e = EgressError::Tor { failure: f, detail: String::new() };
            assert!(FAILURE_LABELS.contains(&e.label()));
            assert_eq!(e.status(), StatusCode::BAD_GATEWAY);
        }
    }

    #[test]
    fn fail_closed_statuses() {
        assert_eq!(EgressError::NotBootstrapped(String::new()).status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(EgressError::Refused(Refusal::Port(22)).status(), StatusCode::FORBIDDEN);
    }
}
