//! The quarantine: store-and-forward, so a delivery the shield holds back is delayed,
//! never lost.
//!
//! GoToSocial gives up on a delivery after about four minutes (ANCHORS.md §B9), so a 429
//! during a two-hour shield would lose its mail. For senders like it pavise answers 202,
//! keeps the delivery durably — exact body, exact headers — and replays it to the
//! instance later. Deliveries pavise cannot verify *now* (a key it cannot fetch, a
//! signature the instance may accept on grounds pavise cannot check) are held the same way,
//! whatever the shields say, and looked at again before release.
//!
//! **Nothing held is purged undelivered.** A held delivery is released when the shield over
//! its targets is gone — or, at the latest, before its signature window closes even if the
//! shield is still up (Mastodon accepts a Date-only signature for about 65 minutes; the
//! stage releases at `release_within` of its `Date`): a delay, not a drop. It leaves the
//! store when the instance took it, when the instance refused an unverified one, or when
//! the admin drops it; a verified one the instance refused (or could not be reached for) is
//! kept for the admin for [`KEPT_FOR`], then purged with an audit record.
//!
//! **Nobody can fill it.** At most `max_held` deliveries and `max_held_bytes` in all; of
//! those, at most `max_held_per_domain` per verified domain and `max_held_per_actor` per
//! verified actor; unverified ones at most half of `max_held` (and of `max_held_bytes`), and `max_held_per_domain`
//! per connecting client. The stage adds: the wave's own actors hold nothing.
//!
//! Held deliveries can be direct messages, so they are **sealed at rest** exactly like
//! the expiry credentials: the whole record (headers, body, targets) goes through
//! [`crate::expiry::seal::Sealer`] (ChaCha20-Poly1305 under the key file kept apart from
//! the store, a fresh nonce each, bound to the held id), and the store only ever sees
//! ciphertext. What the housekeeping pass needs (id, dates, targets, size, state) is kept
//! in an index in memory, built once at start: a pass opens a sealed record only to release
//! it. What stays after a delivery leaves is the audit trail (id, sender domain, what
//! happened), never the message.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, UNIX_EPOCH},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

use super::ShieldError;
use crate::{
    expiry::seal::{Sealer, Token},
    instance::InstanceClient,
    proxy::contract::full,
    store::{AuditRecord, HeldDelivery, HeldState, SealedCredential, ShieldStore, StoreError, now_ms},
};

impl From<StoreError> for ShieldError {
    fn from(e: StoreError) -> Self {
        ShieldError::Store(e.to_string())
    }
}

/// How long a verified delivery the instance refused stays for the admin.
pub const KEPT_FOR: Duration = Duration::from_secs(7 * 86_400);
/// The target that stands for "every member under a shield" (whom it mentions is unknown).
pub const ANY_SHIELDED: &str = "*";
/// The target that stands for "deliveries pavise cannot read" (an opaque body: whom it
/// addresses may be built by JSON-LD compaction from parts no string holds whole). A wave
/// of them shields this target, and so every such delivery; no account has this name,
/// and it needs no escaping in `/admin/shield/lift/(unreadable)`.
pub const UNREADABLE: &str = "(unreadable)";

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
    /// The quarantine, or this sender's share of it, is full.
    Full,
}

/// The quarantine's caps (`[shield] max_held*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldLimits {
    pub max_held: usize,
    pub max_bytes: u64,
    pub per_domain: usize,
    pub per_actor: usize,
}

/// Whose share a held delivery uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Share {
    Verified {
        domain: u64,
        actor: u64,
    },
    /// Unverified: the connecting client's (unknown after a restart).
    Unverified {
        client: Option<u64>,
    },
}

/// What the index knows of one held delivery: no body, no headers.
#[derive(Debug, Clone)]
pub struct HeldMeta {
    pub id: u64,
    pub received: u64,
    /// Its `Date`, when it had one.
    pub date: Option<u64>,
    /// Local accounts it is held back from ([`ANY_SHIELDED`]: every shielded member).
    pub targets: Vec<String>,
    pub bytes: u64,
    pub state: HeldState,
    pub domain: String,
    /// The verified actor: when held, or found by a later verification.
    pub actor: Option<String>,
    /// Whether its signature verified when it was held.
    pub verified: bool,
    /// Not released before this (a hellthread's deferral), unless its window closes.
    pub not_before: Option<u64>,
    /// When it was kept for the admin.
    pub kept_at: Option<u64>,
    /// When pavise last tried to verify it again (unverified ones only).
    pub rechecked_at: Option<u64>,
    share: Share,
    /// Its place is taken but the store write is not done yet: not to be acted on.
    writing: bool,
}

/// One delivery to hold.
pub struct HoldRequest<'a> {
    pub method: &'a http::Method,
    pub path_and_query: &'a str,
    /// Already free of client-IP headers.
    pub headers: &'a HeaderMap,
    pub body: &'a Bytes,
    /// The verified domain, or the keyId's host marked unverified.
    pub domain: &'a str,
    pub targets: Vec<String>,
    /// The verified actor (None: not verified).
    pub actor: Option<&'a str>,
    /// Keyed hashes: the verified domain and actor, or the client's pseudonym.
    pub share_keys: (u64, u64),
    pub not_before: Option<u64>,
}

/// The sealed record: the delivery and what pavise knows about it.
#[derive(Serialize, Deserialize)]
pub struct HeldRecord {
    pub held: HeldDelivery,
    #[serde(default)]
    pub extra: HeldExtra,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HeldExtra {
    /// None in records of older versions, which held verified deliveries only.
    pub verified: Option<bool>,
    pub actor: Option<String>,
    pub not_before: Option<u64>,
    pub kept_at: Option<u64>,
}

pub struct Quarantine {
    durable: Arc<dyn ShieldStore>,
    seal: HeldSeal,
    instance: InstanceClient,
    next_id: AtomicU64,
    limits: HoldLimits,
    index: Mutex<BTreeMap<u64, HeldMeta>>,
    loaded: tokio::sync::OnceCell<()>,
}

fn meta_of(record: &HeldRecord, share: Share) -> HeldMeta {
    let h = &record.held;
    HeldMeta {
        id: h.id,
        received: h.received,
        date: h.date,
        targets: h.targets.clone(),
        bytes: (h.body.len() + h.headers.iter().map(|(n, v)| n.len() + v.len()).sum::<usize>()) as u64,
        state: h.state,
        domain: h.domain.clone(),
        actor: record.extra.actor.clone(),
        verified: record.extra.verified.unwrap_or(true),
        not_before: record.extra.not_before,
        kept_at: record.extra.kept_at,
        rechecked_at: None,
        share,
        writing: false,
    }
}

impl Quarantine {
    pub fn new(
        durable: Arc<dyn ShieldStore>,
        instance: InstanceClient,
        sealer: Arc<Sealer>,
        limits: HoldLimits,
    ) -> Quarantine {
        // Ids stay unique and increasing across restarts: milliseconds since the epoch,
        // times 1024 (a restart would need over 1024 holds per millisecond to collide).
        let seed = now_ms() << 10;
        Quarantine {
            durable,
            seal: HeldSeal(sealer),
            instance,
            next_id: AtomicU64::new(seed),
            limits,
            index: Mutex::new(BTreeMap::new()),
            loaded: tokio::sync::OnceCell::new(),
        }
    }

    fn index(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, HeldMeta>> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Builds the index from the store, once (sealing what an older pavise kept in clear).
    pub async fn load(&self) -> Result<(), ShieldError> {
        self.loaded
            .get_or_try_init(|| async {
                for held in self.durable.list_held().await? {
                    let record = HeldRecord { held, extra: HeldExtra::default() };
                    let audit = record_of(&record.held, "sealed", "kept in clear by an older pavise; sealed");
                    self.durable.put_sealed_held(record.held.id, self.seal.seal(&record)?, audit.clone()).await?;
                    self.durable.remove_held(record.held.id, audit).await?;
                }
                let mut index = BTreeMap::new();
                for (id, sealed) in self.durable.list_sealed_held().await? {
                    match self.seal.open(id, &sealed) {
                        Ok(record) => {
                            index.insert(id, meta_of(&record, Share::Unverified { client: None }));
                        }
                        Err(e) => tracing::error!(id, error = %e, "a held delivery does not open (another key file?)"),
                    }
                }
                *self.index() = index;
                Ok::<(), ShieldError>(())
            })
            .await?;
        Ok(())
    }

    /// Keeps a delivery, within the caps; `headers` must already be free of client-IP headers.
    pub async fn hold(&self, req: HoldRequest<'_>) -> Result<Hold, ShieldError> {
        self.load().await?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let date = req
            .headers
            .get(http::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|d| httpdate::parse_http_date(d).ok())
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as u64);
        let record = HeldRecord {
            held: HeldDelivery {
                id,
                received: now_ms(),
                date,
                method: req.method.as_str().to_owned(),
                path_and_query: req.path_and_query.to_owned(),
                headers: req.headers.iter().map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec())).collect(),
                body: req.body.to_vec(),
                domain: req.domain.to_owned(),
                targets: req.targets,
                state: HeldState::Held,
            },
            extra: HeldExtra {
                verified: Some(req.actor.is_some()),
                actor: req.actor.map(str::to_owned),
                not_before: req.not_before,
                kept_at: None,
            },
        };
        let share = match req.actor {
            Some(_) => Share::Verified { domain: req.share_keys.0, actor: req.share_keys.1 },
            None => Share::Unverified { client: Some(req.share_keys.0) },
        };
        let meta = HeldMeta { writing: true, ..meta_of(&record, share) };
        // Reserve the place first, so concurrent holds see it.
        {
            let mut index = self.index();
            if !self.fits(&index, &meta) {
                return Ok(Hold::Full);
            }
            index.insert(id, meta);
        }
        let detail = if req.actor.is_some() {
            "accepted (202) and held back: the sender does not retry long"
        } else {
            "accepted (202) and held: pavise cannot verify it now"
        };
        let audit = record_of(&record.held, "held", detail);
        let stored = match self.seal.seal(&record) {
            Ok(sealed) => self.durable.put_sealed_held(id, sealed, audit).await.map_err(ShieldError::from),
            Err(e) => Err(e),
        };
        if let Err(e) = stored {
            self.index().remove(&id);
            return Err(e);
        }
        if let Some(m) = self.index().get_mut(&id) {
            m.writing = false;
        }
        Ok(Hold::Held(id))
    }

    fn fits(&self, index: &BTreeMap<u64, HeldMeta>, new: &HeldMeta) -> bool {
        let l = &self.limits;
        let bytes: u64 = index.values().map(|m| m.bytes).sum();
        if index.len() >= l.max_held || bytes.saturating_add(new.bytes) > l.max_bytes {
            return false;
        }
        let count = |f: &dyn Fn(&Share) -> bool| index.values().filter(|m| f(&m.share)).count();
        match new.share {
            Share::Verified { domain, actor } => {
                count(&|s| matches!(s, Share::Verified { domain: d, .. } if *d == domain)) < l.per_domain
                    && count(&|s| matches!(s, Share::Verified { actor: a, .. } if *a == actor)) < l.per_actor
            }
            // Half of the room by count *and* by bytes: a flood of large unverifiable
            // deliveries must leave room for the verified mail the shield holds back.
            Share::Unverified { client } => {
                let unverified_bytes: u64 =
                    index.values().filter(|m| matches!(m.share, Share::Unverified { .. })).map(|m| m.bytes).sum();
                count(&|s| matches!(s, Share::Unverified { .. })) < l.max_held / 2
                    && unverified_bytes.saturating_add(new.bytes) <= l.max_bytes / 2
                    && count(&|s| matches!(s, Share::Unverified { client: c } if *c == client)) < l.per_domain
            }
        }
    }

    /// What is held, oldest first, without opening anything.
    pub fn snapshot(&self) -> Vec<HeldMeta> {
        self.index().values().filter(|m| !m.writing).cloned().collect()
    }

    /// How many deliveries and bytes are held.
    pub fn usage(&self) -> (usize, u64) {
        let index = self.index();
        (index.len(), index.values().map(|m| m.bytes).sum())
    }

    pub async fn audit_log(&self, limit: usize) -> Result<Vec<AuditRecord>, ShieldError> {
        Ok(self.durable.audit_log(limit).await?)
    }

    /// Opens one held delivery.
    pub async fn open(&self, id: u64) -> Result<Option<HeldRecord>, ShieldError> {
        match self.durable.sealed_held(id).await? {
            Some(sealed) => Ok(Some(self.seal.open(id, &sealed)?)),
            None => Ok(None),
        }
    }

    /// Records what a later verification found (in memory: it is cheap to find again).
    pub fn note_checked(&self, id: u64, actor: Option<String>, at: u64) {
        if let Some(m) = self.index().get_mut(&id) {
            m.rechecked_at = Some(at);
            if actor.is_some() {
                m.actor = actor;
            }
        }
    }

    /// Replays one held delivery to the instance and settles it: gone when delivered (or
    /// refused, unverified), kept for the admin when refused (verified). `why` goes into the
    /// audit trail.
    pub async fn release(&self, id: u64, why: &str) -> Result<Option<Replay>, ShieldError> {
        let Some(record) = self.open(id).await? else {
            self.index().remove(&id);
            return Ok(None);
        };
        let verified = self.index().get(&id).is_some_and(|m| m.verified || m.actor.is_some());
        let result = self.replay(&record.held).await;
        match &result {
            Replay::Delivered(status) => {
                self.remove(&record.held, "released", &format!("{why}; the instance answered {status}")).await?;
            }
            Replay::Refused(status) if verified => {
                self.keep(record, &format!("{why}; the instance refused it ({status}); kept for the admin")).await?;
            }
            Replay::Refused(status) => {
                let detail = format!("{why}; the instance refused it ({status}): it was not the sender's; purged");
                self.remove(&record.held, "refused", &detail).await?;
            }
            Replay::Later(e) => tracing::warn!(id, reason = %e, "quarantine release postponed"),
        }
        Ok(Some(result))
    }

    /// Marks a delivery kept for the admin.
    pub async fn keep(&self, mut record: HeldRecord, detail: &str) -> Result<(), ShieldError> {
        let now = now_ms();
        record.held.state = HeldState::Kept;
        record.extra.kept_at = Some(now);
        let audit = record_of(&record.held, "kept", detail);
        self.durable.put_sealed_held(record.held.id, self.seal.seal(&record)?, audit).await?;
        if let Some(m) = self.index().get_mut(&record.held.id) {
            m.state = HeldState::Kept;
            m.kept_at = Some(now);
        }
        Ok(())
    }

    /// Purges a delivery from the store, with an audit record.
    async fn remove(&self, held: &HeldDelivery, action: &str, detail: &str) -> Result<bool, ShieldError> {
        let removed = self.durable.remove_sealed_held(held.id, record_of(held, action, detail)).await?;
        self.index().remove(&held.id);
        Ok(removed)
    }

    /// Purges one delivery by id (admin drop, or kept past [`KEPT_FOR`]).
    pub async fn purge(&self, id: u64, action: &str, detail: &str) -> Result<bool, ShieldError> {
        let Some(record) = self.open(id).await? else {
            self.index().remove(&id);
            return Ok(false);
        };
        self.remove(&record.held, action, detail).await
    }

    /// Sends a held delivery to the instance, byte for byte.
    pub async fn replay(&self, held: &HeldDelivery) -> Replay {
        let mut req = http::Request::new(full(held.body.clone()));
        *req.method_mut() = http::Method::from_bytes(held.method.as_bytes()).unwrap_or(http::Method::POST);
        match self.instance.uri(&held.path_and_query) {
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
        // The client removes hop-by-hop headers on the way out.
        match tokio::time::timeout(Duration::from_secs(30), self.instance.send(req)).await {
            Ok(Ok(resp)) if resp.status().is_success() => Replay::Delivered(resp.status().as_u16()),
            Ok(Ok(resp)) if resp.status().is_client_error() => Replay::Refused(resp.status().as_u16()),
            Ok(Ok(resp)) => Replay::Later(format!("the instance answered {}", resp.status().as_u16())),
            Ok(Err(e)) => Replay::Later(format!("the instance is not reachable: {e}")),
            Err(_) => Replay::Later("the instance did not answer within 30s".into()),
        }
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

    fn seal(&self, record: &HeldRecord) -> Result<Vec<u8>, ShieldError> {
        let json = serde_json::to_string(record).map_err(|e| ShieldError::Store(e.to_string()))?;
        let sealed = self
            .0
            .seal(&Self::label(record.held.id), &Token::new(json))
            .map_err(|e| ShieldError::Store(format!("sealing a held delivery: {e}")))?;
        let id = sealed.id.as_bytes();
        let mut out = Vec::with_capacity(2 + id.len() + sealed.sealed.len());
        out.push(SEAL_VERSION);
        out.push(u8::try_from(id.len()).map_err(|_| ShieldError::Store("sealed id too long".into()))?);
        out.extend_from_slice(id);
        out.extend_from_slice(&sealed.sealed);
        Ok(out)
    }

    fn open(&self, id: u64, bytes: &[u8]) -> Result<HeldRecord, ShieldError> {
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
        // Older versions sealed the bare delivery.
        let record = serde_json::from_str::<HeldRecord>(json.expose())
            .or_else(|_| {
                serde_json::from_str::<HeldDelivery>(json.expose())
                    .map(|held| HeldRecord { held, extra: HeldExtra::default() })
            })
            .map_err(|_| bad())?;
        if record.held.id != id {
            return Err(bad());
        }
        Ok(record)
    }
}

fn record_of(held: &HeldDelivery, action: &str, detail: &str) -> AuditRecord {
    tracing::info!(id = held.id, domain = %held.domain, action, detail, "quarantine");
    AuditRecord {
        at: now_ms(),
        id: held.id,
        domain: held.domain.clone(),
        action: action.to_owned(),
        detail: detail.to_owned(),
    }
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

    fn record(id: u64) -> HeldRecord {
        HeldRecord { held: held(id), extra: HeldExtra { verified: Some(true), ..HeldExtra::default() } }
    }

    #[test]
    fn a_held_delivery_is_sealed_and_bound_to_its_id() {
        let dir = tempfile::tempdir().unwrap();
        let seal = HeldSeal(Arc::new(Sealer::load_or_create(&dir.path().join("k")).unwrap()));
        let sealed = seal.seal(&record(7)).unwrap();
        for clear in [&b"private word"[..], b"alice", b"inbox", b"r.example", b"keyId"] {
            assert!(!sealed.windows(clear.len()).any(|w| w == clear), "{:?} in clear", String::from_utf8_lossy(clear));
        }
        assert_eq!(seal.open(7, &sealed).unwrap().held, held(7));
        assert!(seal.open(8, &sealed).is_err(), "moved to another id");
        let mut damaged = sealed.clone();
        *damaged.last_mut().unwrap() ^= 1;
        assert!(seal.open(7, &damaged).is_err());
        let other = HeldSeal(Arc::new(Sealer::load_or_create(&dir.path().join("other")).unwrap()));
        assert!(other.open(7, &sealed).is_err(), "another key file");
    }

    #[tokio::test]
    async fn nobody_fills_the_quarantine_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(crate::store::EmbeddedStore::open(dir.path(), 1 << 20).unwrap());
        let sealer = Arc::new(Sealer::load_or_create(&dir.path().join("k")).unwrap());
        let limits = HoldLimits { max_held: 10, max_bytes: 4096, per_domain: 3, per_actor: 2 };
        let q =
            Quarantine::new(store.clone(), InstanceClient::new("127.0.0.1:9".parse().unwrap()), sealer.clone(), limits);
        let body = Bytes::from_static(b"{\"type\":\"Create\"}");
        let (method, headers) = (http::Method::POST, HeaderMap::new());
        let hold = |actor: Option<&'static str>, keys: (u64, u64), body: Bytes| {
            let (q, method, headers) = (&q, &method, &headers);
            async move {
                let req = HoldRequest {
                    method,
                    path_and_query: "/inbox",
                    headers,
                    body: &body,
                    domain: "d",
                    targets: vec!["alice".into()],
                    actor,
                    share_keys: keys,
                    not_before: None,
                };
                q.hold(req).await.unwrap()
            }
        };
        // One actor: two. Its domain: three.
        assert!(matches!(hold(Some("a"), (1, 10), body.clone()).await, Hold::Held(_)));
        assert!(matches!(hold(Some("a"), (1, 10), body.clone()).await, Hold::Held(_)));
        assert_eq!(hold(Some("a"), (1, 10), body.clone()).await, Hold::Full, "per actor");
        assert!(matches!(hold(Some("b"), (1, 11), body.clone()).await, Hold::Held(_)));
        assert_eq!(hold(Some("c"), (1, 12), body.clone()).await, Hold::Full, "per domain");
        // Unverified: per client, and half of the whole at most (by count and by bytes).
        assert_eq!(hold(None, (49, 0), Bytes::from(vec![b' '; 2100])).await, Hold::Full, "half the bytes");
        for _ in 0..3 {
            assert!(matches!(hold(None, (50, 0), body.clone()).await, Hold::Held(_)));
        }
        assert_eq!(hold(None, (50, 0), body.clone()).await, Hold::Full, "per client");
        assert!(matches!(hold(None, (51, 0), body.clone()).await, Hold::Held(_)));
        assert!(matches!(hold(None, (52, 0), body.clone()).await, Hold::Held(_)));
        assert_eq!(hold(None, (53, 0), body.clone()).await, Hold::Full, "unverified: half at most");
        // Bytes.
        assert_eq!(hold(Some("e"), (2, 20), Bytes::from(vec![b' '; 5000])).await, Hold::Full, "max_held_bytes");
        assert_eq!(q.usage().0, 8);
        // The index survives a restart, from the sealed records (opened once).
        let q2 = Quarantine::new(store, InstanceClient::new("127.0.0.1:9".parse().unwrap()), sealer, limits);
        q2.load().await.unwrap();
        let metas = q2.snapshot();
        assert_eq!(metas.len(), 8);
        assert_eq!(metas.iter().filter(|m| m.verified).count(), 3);
        assert!(metas.iter().all(|m| m.targets == ["alice"]));
    }
}
