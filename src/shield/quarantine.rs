//! The quarantine: store-and-forward for senders that do not retry long enough.
//!
//! GoToSocial gives up on a delivery after about four minutes (ANCHORS.md §B9), so a 429
//! during a two-hour shield would lose its mail. For senders like it pavise answers 202,
//! keeps the delivery durably — exact body, exact headers — and replays it to the
//! instance once the wave has passed. Only deliveries whose signature verified are held:
//! anything else is answered 429 and costs no disk.
//!
//! Held deliveries can be direct messages, so they are **sealed at rest** exactly like
//! the expiry credentials: the whole record (headers, body, targets) goes through
//! [`crate::expiry::seal::Sealer`] (ChaCha20-Poly1305 under the key file kept apart from
//! the store, a fresh nonce each, bound to the held id), and the store only ever sees
//! ciphertext. A delivery leaves the store the moment it is released, dropped by the
//! admin, or past its signature window — Mastodon accepts a Date-only signature for about
//! 65 minutes, so a replay after that would only be refused. What stays is the audit
//! trail (id, sender domain, what happened), never the message.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
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
use crate::{
    expiry::seal::{Sealer, Token},
    store::{AuditRecord, HeldDelivery, HeldState, SealedCredential, ShieldStore, StoreError, now_ms},
};

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
    /// The instance refused it (4xx, e.g. 401 for a signature past its window).
    Refused(u16),
    /// Not reachable or 5xx: try again later.
    Later(String),
}

/// Whether a delivery could be held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    Held(u64),
    /// The quarantine is at `max_held`.
    Full,
}

pub struct Quarantine {
    durable: Arc<dyn ShieldStore>,
    seal: HeldSeal,
    client: Client<HttpConnector, Full<Bytes>>,
    upstream: http::uri::Authority,
    next_id: AtomicU64,
    /// Deliveries in the store now (set at the first pass, kept up to date after).
    count: AtomicUsize,
    max_held: usize,
    migrated: AtomicBool,
}

impl Quarantine {
    pub fn new(
        durable: Arc<dyn ShieldStore>,
        upstream: http::uri::Authority,
        sealer: Arc<Sealer>,
        max_held: usize,
    ) -> Quarantine {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        // Ids stay unique and increasing across restarts: milliseconds since the epoch,
        // times 1024 (a restart would need over 1024 holds per millisecond to collide).
        let seed = now_ms() << 10;
        Quarantine {
            durable,
            seal: HeldSeal(sealer),
            client: Client::builder(TokioExecutor::new()).set_host(false).build(connector),
            upstream,
            next_id: AtomicU64::new(seed),
            count: AtomicUsize::new(0),
            max_held,
            migrated: AtomicBool::new(false),
        }
    }

    /// Keeps a verified delivery; `headers` must already be free of client-IP headers.
    pub async fn hold(
        &self,
        method: &http::Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: &Bytes,
        domain: &str,
        targets: Vec<String>,
    ) -> Result<Hold, ShieldError> {
        if self.count.load(Ordering::Relaxed) >= self.max_held {
            return Ok(Hold::Full);
        }
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
        self.durable.put_sealed_held(id, self.seal.seal(&held)?, audit).await?;
        self.count.fetch_add(1, Ordering::Relaxed);
        Ok(Hold::Held(id))
    }

    /// Every held delivery, opened (oldest first).
    pub async fn list(&self) -> Result<Vec<HeldDelivery>, ShieldError> {
        let mut out = Vec::new();
        for (id, sealed) in self.durable.list_sealed_held().await? {
            match self.seal.open(id, &sealed) {
                Ok(held) => out.push(held),
                Err(e) => tracing::error!(id, error = %e, "a held delivery does not open (another key file?)"),
            }
        }
        Ok(out)
    }

    pub async fn audit_log(&self, limit: usize) -> Result<Vec<AuditRecord>, ShieldError> {
        Ok(self.durable.audit_log(limit).await?)
    }

    async fn get(&self, id: u64) -> Result<Option<HeldDelivery>, ShieldError> {
        match self.durable.sealed_held(id).await? {
            Some(sealed) => Ok(Some(self.seal.open(id, &sealed)?)),
            None => Ok(None),
        }
    }

    /// Marks a delivery kept for the admin (until its window closes).
    async fn keep(&self, mut held: HeldDelivery, detail: &str) -> Result<(), ShieldError> {
        held.state = HeldState::Kept;
        let audit = record(&held, "kept", detail);
        Ok(self.durable.put_sealed_held(held.id, self.seal.seal(&held)?, audit).await?)
    }

    /// Purges a delivery from the store, with an audit record.
    async fn remove(&self, held: &HeldDelivery, action: &str, detail: &str) -> Result<bool, ShieldError> {
        let removed = self.durable.remove_sealed_held(held.id, record(held, action, detail)).await?;
        if removed {
            let _ = self.count.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n.saturating_sub(1)));
        }
        Ok(removed)
    }

    /// Sends a held delivery to the instance, byte for byte.
    pub async fn replay(&self, held: &HeldDelivery) -> Replay {
        let uri = format!("http://{}{}", self.upstream, held.path_and_query);
        let mut req = http::Request::new(Full::new(Bytes::from(held.body.clone())));
        *req.method_mut() = http::Method::from_bytes(held.method.as_bytes()).unwrap_or(http::Method::POST);
        match uri.parse() {
            Ok(u) => *req.uri_mut() = u,
            Err(e) => {
                tracing::warn!(reason = %e, "quarantine replay impossible: bad stored path");
                return Replay::Refused(0);
            }
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

    /// Seals what an older pavise kept in clear, once per start.
    async fn migrate(&self) -> Result<(), ShieldError> {
        if self.migrated.swap(true, Ordering::Relaxed) {
            return Ok(());
        }
        for held in self.durable.list_held().await? {
            let audit = record(&held, "sealed", "kept in clear by an older pavise; sealed");
            self.durable.put_sealed_held(held.id, self.seal.seal(&held)?, audit.clone()).await?;
            self.durable.remove_held(held.id, audit).await?;
        }
        let n = self.durable.list_sealed_held().await?.len();
        self.count.store(n, Ordering::Relaxed);
        Ok(())
    }

    /// One pass over the quarantine: purge what outlived its signature window; release
    /// what is no longer shielded. `shielded(targets)` says whether any target is still
    /// under a shield.
    pub async fn tick(
        &self,
        release_within: Duration,
        shielded: impl Fn(&[String]) -> bool,
    ) -> Result<TickReport, ShieldError> {
        self.migrate().await?;
        let mut report = TickReport::default();
        let now = now_ms();
        for held in self.list().await? {
            let deadline = held.date.unwrap_or(held.received).saturating_add(release_within.as_millis() as u64);
            if now >= deadline {
                self.remove(&held, "expired", "its signature window closed before the wave passed; purged").await?;
                report.expired += 1;
                continue;
            }
            if held.state != HeldState::Held || shielded(&held.targets) {
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
                    tracing::warn!(reason = %why, "quarantine release postponed");
                    report.postponed += 1;
                }
            }
        }
        Ok(report)
    }

    /// Admin: release one delivery now, whatever the shield says.
    pub async fn release(&self, id: u64) -> Result<Option<Replay>, ShieldError> {
        let Some(held) = self.get(id).await? else { return Ok(None) };
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
                self.durable.put_sealed_held(held.id, self.seal.seal(&held)?, audit).await?;
            }
        }
        Ok(Some(result))
    }

    /// Admin: drop one delivery (purged, with an audit record).
    pub async fn drop_held(&self, id: u64) -> Result<bool, ShieldError> {
        let Some(held) = self.get(id).await? else { return Ok(false) };
        self.remove(&held, "dropped", "dropped by the admin; purged").await
    }
}

/// The whole [`HeldDelivery`] sealed with the expiry sealer: the record's JSON is the
/// secret, the label `shield-held/<id>` is bound in, so a sealed record cannot be moved
/// to another id (or taken for a credential). Stored as
/// `[1][len][the sealer's content id][nonce + ciphertext]`.
struct HeldSeal(Arc<Sealer>);

const SEAL_VERSION: u8 = 1;

impl HeldSeal {
    fn label(id: u64) -> String {
        format!("shield-held/{id}")
    }

    fn seal(&self, held: &HeldDelivery) -> Result<Vec<u8>, ShieldError> {
        let json = serde_json::to_string(held).map_err(|e| ShieldError::Store(e.to_string()))?;
        let sealed = self
            .0
            .seal(&Self::label(held.id), &Token::new(json))
            .map_err(|e| ShieldError::Store(format!("sealing a held delivery: {e}")))?;
        let id = sealed.id.as_bytes();
        let mut out = Vec::with_capacity(2 + id.len() + sealed.sealed.len());
        out.push(SEAL_VERSION);
        out.push(u8::try_from(id.len()).map_err(|_| ShieldError::Store("sealed id too long".into()))?);
        out.extend_from_slice(id);
        out.extend_from_slice(&sealed.sealed);
        Ok(out)
    }

    fn open(&self, id: u64, bytes: &[u8]) -> Result<HeldDelivery, ShieldError> {
        let bad = || ShieldError::Store(format!("held delivery {id} is damaged"));
        let (&version, rest) = bytes.split_first().ok_or_else(bad)?;
        let (&len, rest) = rest.split_first().ok_or_else(bad)?;
        if version != SEAL_VERSION || rest.len() < usize::from(len) {
            return Err(bad());
        }
        let (cid, sealed) = rest.split_at(usize::from(len));
        let cred = SealedCredential {
            id: String::from_utf8(cid.to_vec()).map_err(|_| bad())?,
            account: Self::label(id),
            sealed: sealed.to_vec(),
        };
        let json = self.0.open(&cred).map_err(|e| ShieldError::Store(format!("held delivery {id}: {e}")))?;
        let held: HeldDelivery = serde_json::from_str(json.expose()).map_err(|_| bad())?;
        if held.id != id {
            return Err(bad());
        }
        Ok(held)
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

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TickReport {
    pub released: u64,
    pub kept: u64,
    /// Purged: past their signature window.
    pub expired: u64,
    pub postponed: u64,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn held(id: u64) -> HeldDelivery {
        HeldDelivery {
            id,
            received: 1,
            date: Some(2),
            method: "POST".into(),
            path_and_query: "/users/alice/inbox".into(),
            headers: vec![("signature".into(), b"keyId=x".to_vec())],
            body: b"{\"content\":\"a private word\"}".to_vec(),
            domain: "r.example".into(),
            targets: vec!["alice".into()],
            state: HeldState::Held,
        }
    }

    #[test]
    fn a_held_delivery_is_sealed_and_bound_to_its_id() {
        let dir = tempfile::tempdir().unwrap();
        let seal = HeldSeal(Arc::new(Sealer::load_or_create(&dir.path().join("k")).unwrap()));
        let sealed = seal.seal(&held(7)).unwrap();
        for clear in [&b"private word"[..], b"alice", b"inbox", b"r.example", b"keyId"] {
            assert!(!sealed.windows(clear.len()).any(|w| w == clear), "{:?} in clear", String::from_utf8_lossy(clear));
        }
        assert_eq!(seal.open(7, &sealed).unwrap(), held(7));
        assert!(seal.open(8, &sealed).is_err(), "moved to another id");
        let mut damaged = sealed.clone();
        *damaged.last_mut().unwrap() ^= 1;
        assert!(seal.open(7, &damaged).is_err());
        let other = HeldSeal(Arc::new(Sealer::load_or_create(&dir.path().join("other")).unwrap()));
        assert!(other.open(7, &sealed).is_err(), "another key file");
    }
}
