//! The admin listener: health, readiness, metrics, and the endpoints each feature adds.
//!
//! Loopback only (config validation refuses anything else) and, except `/healthz`,
//! behind `Authorization: Bearer <token>` from a token file created 0600 on first run
//! ([`load_or_create_token`]). `/readyz` asks the instance itself ([`UpstreamCheck`]).
//! Features plug in through the three small traits of [`hooks`]: [`AdminHandler`] (an
//! `/admin/...` endpoint), [`ReadinessCheck`] (a line in `/readyz`) and [`Reload`] (run
//! on `POST /admin/reload` and on SIGHUP).

pub mod hooks;
mod token;
mod upstream;

use std::sync::{Arc, RwLock};

use bytes::Bytes;
use http::{Method, StatusCode, header};
use http_body_util::BodyExt;
use tokio_util::sync::CancellationToken;

use self::{
    hooks::{AdminHandler, Readiness, ReadinessCheck, Reload, json},
    token::constant_time_eq,
};
pub use self::{token::load_or_create_token, upstream::UpstreamCheck};

use crate::{
    metrics::Metrics,
    proxy::contract::{Body, ClientConn, Request, Response, error::json_error, full},
};

pub struct Admin {
    token: String,
    metrics: Arc<Metrics>,
    handlers: RwLock<Vec<Arc<dyn AdminHandler>>>,
    checks: RwLock<Vec<Arc<dyn ReadinessCheck>>>,
    reloads: RwLock<Vec<Arc<dyn Reload>>>,
}

impl Admin {
    /// An admin API with no feature plugged in yet: `/healthz`, `/metrics` and an empty
    /// `/readyz` (the composition root adds the checks, handlers and reload hooks).
    pub fn new(token: String, metrics: Arc<Metrics>) -> Admin {
        Admin { token, metrics, handlers: RwLock::default(), checks: RwLock::default(), reloads: RwLock::default() }
    }

    pub(crate) fn add_handler(&self, h: Arc<dyn AdminHandler>) {
        self.handlers.write().unwrap_or_else(|e| e.into_inner()).push(h);
    }

    pub(crate) fn add_check(&self, c: Arc<dyn ReadinessCheck>) {
        self.checks.write().unwrap_or_else(|e| e.into_inner()).push(c);
    }

    pub(crate) fn add_reload(&self, r: Arc<dyn Reload>) {
        self.reloads.write().unwrap_or_else(|e| e.into_inner()).push(r);
    }

    /// Runs every reload hook; the summary names each, and whether it worked.
    pub(crate) fn reload_all(&self) -> (bool, serde_json::Value) {
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

    // TODO(issue 13): one bearer_token() for the crate lives in src/auth.rs (branch
    // expiry2); use it here once merged.
    fn authorized(&self, req: &Request) -> bool {
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

    async fn handle(&self, req: Request) -> Response {
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
async fn collect_limited(mut body: Body, limit: usize) -> Option<Bytes> {
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
    crate::conn::serve(listener, shutdown, move |_conn: Arc<ClientConn>, req: Request| {
        let admin = admin.clone();
        async move { admin.handle(req).await }
    })
    .await;
}
