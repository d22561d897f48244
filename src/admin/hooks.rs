//! How a feature plugs into the admin listener: an `/admin/...` endpoint
//! ([`AdminHandler`]), a line in `/readyz` ([`ReadinessCheck`]), a reload hook
//! ([`Reload`], run on `POST /admin/reload` and on SIGHUP).
//!
//! A leaf over the stage contract: features implement these and never import the admin
//! listener itself, so the listener can change without them.

use bytes::Bytes;
use http::{Method, StatusCode, header};

use crate::proxy::contract::{Response, StageFuture, full};

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

/// An admin answer: `value` as JSON.
pub fn json(status: StatusCode, value: serde_json::Value) -> Response {
    let mut resp = Response::new(full(value.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    resp
}
