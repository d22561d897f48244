//! The admin listener: health, readiness, metrics, and the endpoints each feature adds.
//!
//! Loopback only (config validation refuses anything else) and, except `/healthz`,
//! behind `Authorization: Bearer <token>` from a token file created 0600 on first run.
//! Features plug in through three small traits: [`AdminHandler`] (an `/admin/...`
//! endpoint), [`ReadinessCheck`] (a line in `/readyz`) and [`Reload`] (run on
//! `POST /admin/reload` and on SIGHUP).

use std::{
    io::Write as _,
    path::Path,
    sync::{Arc, RwLock},
    time::Duration,
};

use bytes::Bytes;
use http::{Method, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use ring::rand::SecureRandom;
use tokio_util::sync::CancellationToken;

use crate::{
    config::Config,
    metrics::Metrics,
    proxy::{Response, StageFuture, error::json_error, full},
};

/// An `/admin/...` endpoint contributed by a feature (expiry, shield, ...).
pub trait AdminHandler: Send + Sync {
    /// The path prefix this handler owns, e.g. `/admin/expiry`.
    fn prefix(&self) -> &'static str;
    /// `body` is the whole request body (admin bodies are small; capped at 1 MiB).
    fn handle<'a>(
        &'a self,
        method: &'a Method,
        path: &'a str,
        query: Option<&'a str>,
        body: Bytes,
    ) -> StageFuture<'a, Response>;
}

/// What one readiness check found.
///
/// `Degraded` is the visible middle: pavise serves safely, but a feature works less well
/// than configured (a setting missing, a dependency unreadable). It is named in `/readyz`
/// and in its metrics, yet `/readyz` stays 200, so a load balancer keeps routing members to
/// a relay that protects them. Only `NotReady` (the instance unreachable, Tor not
/// bootstrapped: nothing could be served correctly) answers 503.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready(String),
    Degraded(String),
    NotReady(String),
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        matches!(self, Readiness::Ready(_))
    }

    pub fn detail(&self) -> &str {
        match self {
            Readiness::Ready(d) | Readiness::Degraded(d) | Readiness::NotReady(d) => d,
        }
    }
}

/// One line of `/readyz`.
pub trait ReadinessCheck: Send + Sync {
    fn name(&self) -> &'static str;
    fn check(&self) -> StageFuture<'_, Readiness>;
}

/// Something that re-reads its files on `POST /admin/reload` and SIGHUP.
pub trait Reload: Send + Sync {
    fn name(&self) -> &'static str;
    fn reload(&self) -> Result<String, String>;
}

pub struct Admin {
    token: String,
    metrics: Arc<Metrics>,
    handlers: RwLock<Vec<Arc<dyn AdminHandler>>>,
    checks: RwLock<Vec<Arc<dyn ReadinessCheck>>>,
    reloads: RwLock<Vec<Arc<dyn Reload>>>,
}

impl Admin {
    pub fn new(token: String, metrics: Arc<Metrics>, config: &Config) -> Admin {
        let admin = Admin {
            token,
            metrics,
            handlers: RwLock::default(),
            checks: RwLock::default(),
            reloads: RwLock::default(),
        };
        admin.add_check(Arc::new(UpstreamCheck::new(config)));
        admin
    }

    pub fn add_handler(&self, h: Arc<dyn AdminHandler>) {
        self.handlers.write().unwrap_or_else(|e| e.into_inner()).push(h);
    }

    pub fn add_check(&self, c: Arc<dyn ReadinessCheck>) {
        self.checks.write().unwrap_or_else(|e| e.into_inner()).push(c);
    }

    pub fn add_reload(&self, r: Arc<dyn Reload>) {
        self.reloads.write().unwrap_or_else(|e| e.into_inner()).push(r);
    }

    /// Runs every reload hook; the summary names each, and whether it worked.
    pub fn reload_all(&self) -> (bool, serde_json::Value) {
        let reloads = self.reloads.read().unwrap_or_else(|e| e.into_inner()).clone();
        let mut ok = true;
        let mut out = serde_json::Map::new();
        for r in reloads {
            let v = match r.reload() {
                Ok(msg) => serde_json::json!({ "ok": true, "detail": msg }),
                Err(msg) => {
                    ok = false;
                    tracing::error!(what = r.name(), error = %msg, "reload failed; keeping the previous version");
                    serde_json::json!({ "ok": false, "error": msg })
                }
            };
            out.insert(r.name().to_owned(), v);
        }
        (ok, serde_json::Value::Object(out))
    }

    fn authorized(&self, req: &crate::proxy::Request) -> bool {
        let Some(given) = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        constant_time_eq(given.trim().as_bytes(), self.token.as_bytes())
    }

    async fn handle(&self, req: crate::proxy::Request) -> Response {
        let path = req.uri().path().to_owned();
        if path == "/healthz" {
            return json(StatusCode::OK, serde_json::json!({ "status": "ok" }));
        }
        if !self.authorized(&req) {
            let mut resp =
                json_error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token (see the admin token file)");
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
            return resp;
        }
        let method = req.method().clone();
        match (&method, path.as_str()) {
            (&Method::GET, "/readyz") => self.readyz().await,
            (&Method::GET, "/metrics") => {
                let mut resp = Response::new(full(self.metrics.render()));
                resp.headers_mut()
                    .insert(header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; version=0.0.4"));
                resp
            }
            (&Method::POST, "/admin/reload") => {
                let (ok, detail) = self.reload_all();
                json(if ok { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY }, detail)
            }
            _ => {
                let handler = self
                    .handlers
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .find(|h| path.starts_with(h.prefix()))
                    .cloned();
                let Some(handler) = handler else {
                    return json_error(StatusCode::NOT_FOUND, "no such admin endpoint");
                };
                let query = req.uri().query().map(str::to_owned);
                let Some(body) = collect_limited(req.into_body(), 1 << 20).await else {
                    return json_error(StatusCode::PAYLOAD_TOO_LARGE, "admin request body over 1 MiB (or unreadable)");
                };
                handler.handle(&method, &path, query.as_deref(), body).await
            }
        }
    }

    async fn readyz(&self) -> Response {
        let checks = self.checks.read().unwrap_or_else(|e| e.into_inner()).clone();
        let mut ready = true;
        let mut degraded = Vec::new();
        let mut out = serde_json::Map::new();
        for c in checks {
            let v = match c.check().await {
                Readiness::Ready(detail) => serde_json::json!({ "ready": true, "detail": detail }),
                Readiness::Degraded(reason) => {
                    degraded.push(c.name());
                    serde_json::json!({ "ready": true, "degraded": true, "reason": reason })
                }
                Readiness::NotReady(reason) => {
                    ready = false;
                    serde_json::json!({ "ready": false, "reason": reason })
                }
            };
            out.insert(c.name().to_owned(), v);
        }
        let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
        json(status, serde_json::json!({ "ready": ready, "degraded": degraded, "checks": out }))
    }
}

/// The whole body, or `None` past `limit` bytes or on a read error.
async fn collect_limited(mut body: crate::proxy::Body, limit: usize) -> Option<Bytes> {
    let mut out = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.ok()?.into_data() else { continue };
        if out.len() + data.len() > limit {
            return None;
        }
        out.extend_from_slice(&data);
    }
    Some(out.freeze())
}

pub fn json(status: StatusCode, value: serde_json::Value) -> Response {
    let mut resp = Response::new(full(value.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    resp
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Reads the admin token, or makes one (32 random bytes, hex, mode 0600) on first run.
pub fn load_or_create_token(path: &Path) -> std::io::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_owned()),
        Ok(_) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "the token file is empty")),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        Err(_) => {}
    }
    let mut raw = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut raw).map_err(|_| std::io::Error::other("no OS randomness"))?;
    let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut file = opts.open(path)?;
    file.write_all(token.as_bytes())?;
    file.write_all(b"\n")?;
    tracing::info!(path = %path.display(), "created the admin token file");
    Ok(token)
}

/// `/readyz`: does the instance's web process answer HTTP at all?
struct UpstreamCheck {
    client: Client<HttpConnector, Empty<Bytes>>,
    uri: http::Uri,
}

impl UpstreamCheck {
    fn new(config: &Config) -> UpstreamCheck {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let uri = format!("http://{}/health", config.upstream.authority).parse().unwrap_or_default();
        UpstreamCheck { client: Client::builder(TokioExecutor::new()).build(connector), uri }
    }
}

impl ReadinessCheck for UpstreamCheck {
    fn name(&self) -> &'static str {
        "upstream"
    }

    fn check(&self) -> StageFuture<'_, Readiness> {
        Box::pin(async move {
            match tokio::time::timeout(Duration::from_secs(3), self.client.get(self.uri.clone())).await {
                Ok(Ok(resp)) => Readiness::Ready(format!("instance answered {}", resp.status().as_u16())),
                Ok(Err(e)) => Readiness::NotReady(format!("instance not reachable: {e}")),
                Err(_) => Readiness::NotReady("instance did not answer within 3s".into()),
            }
        })
    }
}

/// Serves the admin API until shutdown, under the same connection rules as the public
/// listener (its own cap, `admin.max_connections`; the header timeout, body rate and
/// idle rule of `[public]`): 1,000 half-sent requests cost at most the cap's descriptors
/// and are closed at the header timeout (issue 16). SIGHUP reloads, as `/admin/reload`.
pub async fn serve(listener: crate::conn::Listener, admin: Arc<Admin>, shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        let (admin, shutdown) = (admin.clone(), shutdown.clone());
        tokio::spawn(async move {
            let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
                return;
            };
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    received = hup.recv() => {
                        if received.is_none() {
                            return;
                        }
                        let (ok, detail) = admin.reload_all();
                        tracing::info!(ok, %detail, "SIGHUP: reloaded");
                    }
                }
            }
        });
    }
    crate::conn::serve(listener, shutdown, move |_conn: Arc<crate::proxy::ClientConn>, req: crate::proxy::Request| {
        let admin = admin.clone();
        async move { admin.handle(req).await }
    })
    .await;
}
