//! The quarantine: store-and-forward for senders that do not retry long enough.
//!
//! GoToSocial gives up on a delivery after about four minutes (ANCHORS.md §B9), so a 429
//! during a two-hour shield would lose its mail. For senders like it pavise answers 202,
//! keeps the delivery durably — exact body, exact headers — and replays it to the
//! instance once the wave has passed. Pavise cannot re-sign as the remote actor, so the
//! replay must happen while the sender's signature is still good: Mastodon accepts a
//! Date-only signature for about 65 minutes. A delivery still shielded when its window
//! closes is kept for the admin (`GET /admin/shield`, release or drop), with an audit
//! record of everything that happened to it. Nothing is ever dropped silently.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, UNIX_EPOCH},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body_util::Full;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

use super::ShieldError;
use crate::store::{AuditRecord, HeldDelivery, HeldState, ShieldStore, StoreError, now_ms};

impl From<StoreError> for ShieldError {
    fn from(e: StoreError) -> Self {
        ShieldError::Store(e.to_string())
    }
}

/// What a replay to the instance came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay {
    /// The instance took it (2xx).
    Delivered(u16),
    /// The instance refused it for good (4xx, e.g. 401 for a signature past its window).
    Refused(u16),
    /// Not reachable or 5xx: try again later.
    Later(String),
}

pub struct Quarantine {
    durable: Arc<dyn ShieldStore>,
    client: Client<HttpConnector, Full<Bytes>>,
    upstream: http::uri::Authority,
    next_id: AtomicU64,
}

impl Quarantine {
    pub fn new(durable: Arc<dyn ShieldStore>, upstream: http::uri::Authority) -> Quarantine {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        // Ids stay unique and increasing across restarts: milliseconds since the epoch,
        // times 1024 (a restart would need over 1024 holds per millisecond to collide).
        let seed = now_ms() << 10;
        Quarantine {
            durable,
            client: Client::builder(TokioExecutor::new()).set_host(false).build(connector),
            upstream,
            next_id: AtomicU64::new(seed),
        }
    }

    /// Keeps a delivery; `headers` must already be free of client-IP headers.
    pub async fn hold(
        &self,
        method: &http::Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: &Bytes,
        domain: &str,
        targets: Vec<String>,
    ) -> Result<u64, ShieldError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let date = headers
            .get(http::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|d| httpdate::parse_http_date(d).ok())
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as u64);
        let held = HeldDelivery {
            id,
            received: now_ms(),
            date,
            method: method.as_str().to_owned(),
            path_and_query: path_and_query.to_owned(),
            headers: headers.iter().map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec())).collect(),
            body: body.to_vec(),
            domain: domain.to_owned(),
            targets,
            state: HeldState::Held,
        };
        let audit = record(&held, "held", "accepted (202) during a wave; the sender does not retry long");
        self.durable.put_held(held, audit).await?;
        Ok(id)
    }

    pub async fn list(&self) -> Result<Vec<HeldDelivery>, ShieldError> {
        Ok(self.durable.list_held().await?)
    }

    pub async fn audit_log(&self, limit: usize) -> Result<Vec<AuditRecord>, ShieldError> {
        Ok(self.durable.audit_log(limit).await?)
    }

    /// Marks a delivery kept for the admin.
    async fn keep(&self, mut held: HeldDelivery, detail: &str) -> Result<(), ShieldError> {
        held.state = HeldState::Kept;
        let audit = record(&held, "kept", detail);
        Ok(self.durable.put_held(held, audit).await?)
    }

    async fn remove(&self, held: &HeldDelivery, action: &str, detail: &str) -> Result<bool, ShieldError> {
        Ok(self.durable.remove_held(held.id, record(held, action, detail)).await?.is_some())
    }

    /// Sends a held delivery to the instance, byte for byte.
    pub async fn replay(&self, held: &HeldDelivery) -> Replay {
        let uri = format!("http://{}{}", self.upstream, held.path_and_query);
        let mut req = http::Request::new(Full::new(Bytes::from(held.body.clone())));
        *req.method_mut() = http::Method::from_bytes(held.method.as_bytes()).unwrap_or(http::Method::POST);
        match uri.parse() {
            Ok(u) => *req.uri_mut() = u,
            Err(e) => return Replay::Refused(0).or_log(&format!("bad stored path: {e}")),
        }
        for (name, value) in &held.headers {
            if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_bytes(value)) {
                req.headers_mut().append(n, v);
            }
        }
        crate::proxy::hop::strip_hop_by_hop(req.headers_mut(), false);
        match tokio::time::timeout(Duration::from_secs(30), self.client.request(req)).await {
            Ok(Ok(resp)) if resp.status().is_success() => Replay::Delivered(resp.status().as_u16()),
            Ok(Ok(resp)) if resp.status().is_client_error() => Replay::Refused(resp.status().as_u16()),
            Ok(Ok(resp)) => Replay::Later(format!("the instance answered {}", resp.status().as_u16())),
            Ok(Err(e)) => Replay::Later(format!("the instance is not reachable: {e}")),
            Err(_) => Replay::Later("the instance did not answer within 30s".into()),
        }
    }

    /// One pass over the quarantine: release what is no longer shielded while its
    /// signature is still good; keep for the admin what outlived its window.
    /// `shielded(targets)` says whether any target is still under a shield.
    pub async fn tick(
        &self,
        release_within: Duration,
        shielded: impl Fn(&[String]) -> bool,
    ) -> Result<TickReport, ShieldError> {
        let mut report = TickReport::default();
        let now = now_ms();
        for held in self.durable.list_held().await? {
            if held.state != HeldState::Held {
                continue;
            }
            let deadline = held.date.unwrap_or(held.received).saturating_add(release_within.as_millis() as u64);
            if now >= deadline {
                self.keep(held, "the wave outlasted the signature window; kept for the admin").await?;
                report.kept += 1;
                continue;
            }
            if shielded(&held.targets) {
                continue;
            }
            match self.replay(&held).await {
                Replay::Delivered(status) => {
                    self.remove(&held, "released", &format!("the wave passed; the instance answered {status}")).await?;
                    report.released += 1;
                }
                Replay::Refused(status) => {
                    self.keep(held, &format!("the instance refused the release ({status}); kept for the admin"))
                        .await?;
                    report.kept += 1;
                }
                Replay::Later(why) => {
                    tracing::warn!(id = held.id, reason = %why, "quarantine release postponed");
                    report.postponed += 1;
                }
            }
        }
        Ok(report)
    }

    /// Admin: release one delivery now, whatever the shield says.
    pub async fn release(&self, id: u64) -> Result<Option<Replay>, ShieldError> {
        let Some(held) = self.durable.held(id).await? else { return Ok(None) };
        let result = self.replay(&held).await;
        match &result {
            Replay::Delivered(status) => {
                self.remove(&held, "released", &format!("released by the admin; the instance answered {status}"))
                    .await?;
            }
            Replay::Refused(status) => {
                self.keep(held, &format!("the admin's release was refused by the instance ({status})")).await?;
            }
            Replay::Later(why) => {
                let audit = record(&held, "release-failed", why);
                self.durable.put_held(held, audit).await?;
            }
        }
        Ok(Some(result))
    }

    /// Admin: drop one delivery (with an audit record).
    pub async fn drop_held(&self, id: u64) -> Result<bool, ShieldError> {
        let Some(held) = self.durable.held(id).await? else { return Ok(false) };
        self.remove(&held, "dropped", "dropped by the admin").await
    }
}

fn record(held: &HeldDelivery, action: &str, detail: &str) -> AuditRecord {
    tracing::info!(id = held.id, domain = %held.domain, action, detail, "quarantine");
    AuditRecord {
        at: now_ms(),
        id: held.id,
        domain: held.domain.clone(),
        action: action.to_owned(),
        detail: detail.to_owned(),
    }
}

trait OrLog {
    fn or_log(self, why: &str) -> Self;
}

impl OrLog for Replay {
    fn or_log(self, why: &str) -> Self {
        tracing::warn!(reason = why, "quarantine replay impossible");
        self
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TickReport {
    pub released: u64,
    pub kept: u64,
    pub postponed: u64,
}
