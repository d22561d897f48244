//! The shield: keyed rate limits and the harassment-wave defence, decided before any
//! stage spends work on a request body.
//!
//! - [`policy`]: `[[limit]]` and `[wave]` from `policies/*.toml`;
//! - [`limiter`]: governor GCRA limiters with a hard memory cap;
//! - [`signature`]: who signed a federation delivery, verified as the instance verifies it;
//! - [`keys`]: a signer's key, fetched from its owner through the egress proxy;
//! - [`mention`]: whom a delivery addresses, read as the instance reads it;
//! - [`accounts`]: numeric account ids to usernames, asking the instance;
//! - [`wave`]: the per-account wave detector;
//! - [`follows`]: whom local members follow, as the instance lists it;
//! - [`quarantine`]: sealed store-and-forward for senders that give up quickly;
//! - [`instance`]: the shield's own reads of the instance.
//!
//! A shield holds back a member's real mail too, so it must never become a weapon against
//! the member: only deliveries the instance would accept as signed by their actor count
//! toward a wave, a domain's budget, familiarity or follows. Everything else (unsigned,
//! forged, stale, with a body its digest does not cover, replayed, signed by one actor
//! for another's activity) is limited under the connecting client's pseudonym, is still
//! held back by a shield that real actors raised, and never raises, extends or prolongs
//! one. Follows are believed from the instance only.
//!
//! Durable state (first-seen senders, sealed held deliveries) goes through
//! [`crate::store::ShieldStore`].
//!
//! What a request gets:
//! - over a `[[limit]]`: 429 with `Retry-After` and Mastodon's `X-RateLimit-*` headers;
//! - an inbox delivery from an unfamiliar sender to a shielded account (or a hellthread):
//!   `action = "defer"` → 429 (Mastodon, Akkoma and Misskey retry for a day or more with
//!   fresh signatures), or 202 + quarantine for verified senders whose User-Agent says
//!   they give up within minutes (GoToSocial); `action = "reject"` → 403;
//! - everything else passes untouched. Non-inbox routes cost a few hash lookups and no
//!   allocation; inbox deliveries are buffered (≤ 1 MiB, Mastodon's own cap) — the
//!   signature's digest covers the body — and forwarded as the very same bytes.

pub mod accounts;
pub mod follows;
pub mod instance;
pub mod keys;
pub mod limiter;
pub mod mention;
pub mod policy;
pub mod quarantine;
pub mod signature;
pub mod wave;

use std::{
    fmt::Write as _,
    net::IpAddr,
    path::PathBuf,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, header};
use http_body_util::BodyExt;
use serde::Deserialize;

use self::{
    accounts::LocalAccounts,
    follows::Follows,
    instance::InstanceReader,
    keys::KeyFetcher,
    limiter::{Denied, KeyHasher, Limiter},
    mention::{InboxPath, LocalHosts, LocalRef},
    policy::{KeyKind, ShieldPolicy, WaveAction},
    quarantine::{Hold, Quarantine, Replay},
    signature::{Rejection, SignedBy, Verdict, Verifier},
    wave::{WaveDetector, WaveParams},
};
use crate::{
    admin::{AdminHandler, Reload, json},
    config::Config,
    metrics::MetricsSource,
    proxy::{Flow, ProxyError, Request, RequestCtx, Response, RouteClass, Stage, StageFuture, error::json_error},
    store::{HeldState, ShieldStore, now_ms},
    units::Span,
};

/// The shield's errors at its boundary.
#[derive(Debug, thiserror::Error)]
pub enum ShieldError {
    #[error(transparent)]
    Policy(#[from] policy::PolicyError),
    #[error("signing key: {0}")]
    Key(String),
    #[error("fetching the signing key: {0}")]
    Fetch(String),
    #[error("shield store: {0}")]
    Store(String),
    #[error("the quarantine's seal: {0}")]
    Seal(String),
}

/// How actor keys are fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyFetchMode {
    /// Through the egress proxy (`egress.listen`, Tor): the default.
    Egress,
    /// Straight to the actor's server (development, tests): reveals this server's address,
    /// so it is refused unless `egress.mode = "direct"` as well.
    Direct,
}

/// `[shield]` in the config file: the machinery; the rules are in `policies/`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShieldConfig {
    pub enabled: bool,
    /// At most this many keys per `[[limit]]` rule; newcomers past it share one bucket.
    pub max_keys: usize,
    pub key_fetch: KeyFetchMode,
    /// With `key_fetch = "direct"`: allow keyIds on loopback/private addresses (tests).
    pub key_fetch_allow_private: bool,
    pub key_fetch_timeout: Span,
    /// How long a fetched actor key is trusted before it is fetched again.
    pub key_cache_ttl: Span,
    pub key_cache_entries: u64,
    /// Local accounts with a live wave window at once (memory cap).
    pub wave_accounts: u64,
    /// First-seen records kept in memory in front of the store.
    pub familiar_cache: u64,
    /// When a shield goes up over a member, read the member's public `following`
    /// collection from the instance, so accounts they follow keep reaching them.
    pub learn_following: bool,
    /// Held deliveries (sealed, in the store) at most; past it, deferred with 429.
    pub max_held: usize,
    /// How often limiters are trimmed, first-seen records written, the quarantine checked.
    pub housekeeping: Span,
}

impl Default for ShieldConfig {
    fn default() -> Self {
        ShieldConfig {
            enabled: true,
            max_keys: 250_000,
            key_fetch: KeyFetchMode::Egress,
            key_fetch_allow_private: false,
            key_fetch_timeout: Span::secs(10),
            key_cache_ttl: Span::secs(3600),
            key_cache_entries: 10_000,
            wave_accounts: 10_000,
            familiar_cache: 100_000,
            learn_following: true,
            max_held: 1000,
            housekeeping: Span::secs(10),
        }
    }
}

impl ShieldConfig {
    /// `key_fetch = "direct"` fetches keys from this server's own address: with Tor egress
    /// that would reveal what Tor hides, to anyone who sends a delivery.
    /// Errors name the key at fault.
    pub fn validate(&self, egress: crate::config::EgressMode) -> Result<(), (&'static str, String)> {
        if self.key_fetch == KeyFetchMode::Direct && egress == crate::config::EgressMode::Tor {
            return Err((
                "shield.key_fetch",
                "\"direct\" fetches actor keys from this server's own address, which egress.mode = \"tor\" \
                        hides: any delivery could make the server reveal it. Use key_fetch = \"egress\" \
                        (development setups may use direct only with egress.mode = \"direct\")"
                    .into(),
            ));
        }
        if self.key_fetch_allow_private && self.key_fetch != KeyFetchMode::Direct {
            return Err((
                "shield.key_fetch_allow_private",
                "key_fetch_allow_private only applies to key_fetch = \"direct\" (the egress proxy has its \
                        own guard, egress.allow_hosts)"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// Mastodon's inbox cap (`ActivityPub::Activity::MAX_JSON_SIZE`): a delivery the route
/// table did not classify as one is capped here.
const MAX_DELIVERY: usize = 1 << 20;
/// Numeric account ids looked up per delivery at most; the rest count as `#ID`.
const MAX_ID_LOOKUPS: usize = 8;
/// How long a seen signature is remembered as a replay: the longest window Mastodon
/// accepts (12 h after `created`, an hour of skew either side).
const REPLAY_MEMORY: Duration = Duration::from_secs(14 * 3600);

/// The policies in force, with their limiters, indexed by route class.
struct Active {
    policy: ShieldPolicy,
    limiters: Vec<Limiter>,
    by_route: [Vec<usize>; RouteClass::ALL.len()],
    /// Whether any rule on the class keys on the remote signer (needs verification).
    needs_signer: [bool; RouteClass::ALL.len()],
}

impl Active {
    fn new(policy: ShieldPolicy, max_keys: usize) -> Active {
        let limiters: Vec<Limiter> = policy.limits.iter().map(|r| Limiter::new(r.clone(), max_keys)).collect();
        let mut by_route: [Vec<usize>; RouteClass::ALL.len()] = Default::default();
        let mut needs_signer = [false; RouteClass::ALL.len()];
        for (i, l) in limiters.iter().enumerate() {
            by_route[l.rule.route.index()].push(i);
            if matches!(l.rule.key, KeyKind::RemoteDomain | KeyKind::RemoteActor) {
                needs_signer[l.rule.route.index()] = true;
            }
        }
        Active { policy, limiters, by_route, needs_signer }
    }

    fn wave_params(&self) -> WaveParams {
        let w = &self.policy.wave;
        WaveParams {
            window: w.window,
            distinct: w.distinct_senders,
            shield_for: w.shield_for,
            memory: sender_memory(&self.policy),
        }
    }
}

/// How long an account remembers an actor that mentioned it: until the actor would be
/// familiar anyway, so no actor ever counts twice toward one account's waves.
fn sender_memory(policy: &ShieldPolicy) -> Duration {
    let w = &policy.wave;
    w.familiar_after.max(w.window + w.shield_for).max(Duration::from_secs(60))
}

/// Counters per remote domain and per target account, for `/admin/shield`.
#[derive(Default)]
struct Tally {
    limited: AtomicU64,
    deferred: AtomicU64,
    held: AtomicU64,
    rejected: AtomicU64,
}

#[derive(Default)]
struct Stats {
    passed: AtomicU64,
    limited: AtomicU64,
    deferred: AtomicU64,
    held: AtomicU64,
    rejected: AtomicU64,
    verified: AtomicU64,
    unverified: [AtomicU64; Rejection::ALL.len()],
    shields_raised: AtomicU64,
    followed_passed: AtomicU64,
    released: AtomicU64,
    kept: AtomicU64,
    expired: AtomicU64,
}

impl Stats {
    fn unverified_total(&self) -> u64 {
        self.unverified.iter().map(|c| c.load(Relaxed)).sum()
    }
}

/// First-seen times: a bounded cache in front of the store, writes batched.
struct Familiarity {
    cache: moka::sync::Cache<String, u64>,
    pending: std::sync::Mutex<Vec<(String, u64)>>,
    durable: Arc<dyn ShieldStore>,
}

impl Familiarity {
    /// When `actor` was first seen, in unix ms (recording now if never).
    async fn first_seen(&self, actor: &str, now: u64) -> u64 {
        if let Some(t) = self.cache.get(actor) {
            return t;
        }
        let stored = match self.durable.first_seen(actor).await {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "cannot read first-seen senders; treating the sender as new");
                None
            }
        };
        let t = match stored {
            Some(t) => t,
            None => {
                // Written in the next housekeeping pass: losing it in a crash only makes
                // the sender look newer (stricter), never more familiar.
                let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                if pending.len() < 1_000_000 {
                    pending.push((actor.to_owned(), now));
                }
                now
            }
        };
        self.cache.insert(actor.to_owned(), t);
        t
    }

    async fn flush(&self) -> Result<usize, ShieldError> {
        let batch = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        if batch.is_empty() {
            return Ok(0);
        }
        let n = batch.len();
        self.durable.record_first_seen(batch).await?;
        Ok(n)
    }
}

/// Everything the stage, the admin endpoint, the reload hook and the metrics share.
pub struct Shield {
    cfg: ShieldConfig,
    policies_dir: PathBuf,
    local_domain: Option<String>,
    active: RwLock<Arc<Active>>,
    hasher: KeyHasher,
    verifier: Verifier,
    /// Signatures already seen (keyed hashes): the same signature again is a replay.
    seen_signatures: moka::sync::Cache<u64, ()>,
    waves: WaveDetector,
    familiar: Familiarity,
    follows: Arc<Follows>,
    accounts: LocalAccounts,
    quarantine: Quarantine,
    durable: Arc<dyn ShieldStore>,
    /// Whether the store's legacy (remote-taught) follows were forgotten this run.
    forgot_legacy_follows: AtomicBool,
    stats: Stats,
    domains: moka::sync::Cache<String, Arc<Tally>>,
    targets: moka::sync::Cache<String, Arc<Tally>>,
    /// Hellthread deliveries (body hash) → first seen: deferred for `shield_for` at most,
    /// so a sender that retries for days gets through in the end.
    hellthreads: moka::sync::Cache<u64, Instant>,
    /// `[cluster]`: the wave windows, shields and limit budgets shared through Redis, on
    /// top of this node's own (which decide alone when Redis does not answer in time).
    shared: std::sync::OnceLock<Arc<crate::cluster::redis::Shared>>,
}

/// Key namespaces, so a domain and a pseudonym never share a bucket.
mod ns {
    pub(super) const CLIENT: u8 = 1;
    pub(super) const TOKEN: u8 = 2;
    pub(super) const DOMAIN: u8 = 3;
    pub(super) const ACTOR: u8 = 4;
    pub(super) const UNVERIFIED: u8 = 5;
    pub(super) const SENDER: u8 = 6;
    pub(super) const SIGNATURE: u8 = 7;
    pub(super) const BODY: u8 = 8;
}

/// One inbox delivery as the shield sees it, once read and verified.
struct Delivery {
    parts: http::request::Parts,
    body: Bytes,
    doc: Option<serde_json::Value>,
    verdict: Verdict,
    /// For the tallies: the verified domain, or what an unverified one claimed.
    domain_label: String,
}

impl Delivery {
    fn actor(&self) -> Option<&str> {
        match &self.verdict {
            Verdict::Verified { actor, .. } => Some(actor),
            Verdict::Unverified(_) => None,
        }
    }

    fn forward(self) -> Flow {
        Flow::Continue(Request::from_parts(self.parts, crate::proxy::full(self.body)))
    }
}

impl Shield {
    /// Loads the policies; fails (naming file and key) when they are invalid.
    pub fn new(
        config: &Config,
        durable: Arc<dyn ShieldStore>,
        fetcher: Option<Arc<dyn KeyFetcher>>,
    ) -> Result<Arc<Shield>, ShieldError> {
        let cfg = config.file.shield.clone();
        cfg.validate(config.file.egress.mode).map_err(|(key, e)| ShieldError::Fetch(format!("{key}: {e}")))?;
        let policy = policy::load_dir(&config.file.policies)?;
        let fetcher: Arc<dyn KeyFetcher> = match fetcher {
            Some(f) => f,
            None => {
                let egress = cfg.key_fetch == KeyFetchMode::Egress;
                if !egress {
                    tracing::warn!(
                        "shield.key_fetch = \"direct\": actor keys are fetched from this server's own address \
                         (development only)"
                    );
                }
                Arc::new(keys::HttpKeyFetcher::new(
                    egress.then_some(config.file.egress.listen),
                    config.file.egress.proxy_auth.as_deref().filter(|_| egress),
                    cfg.key_fetch_allow_private,
                    cfg.key_fetch_timeout.get(),
                )?)
            }
        };
        let sealer = crate::expiry::seal::Sealer::load_or_create(&config.file.expiry.key_file(&config.file.data_dir))
            .map_err(|e| ShieldError::Seal(e.to_string()))?;
        let max_shield = policy.wave.shield_for.max(policy.wave.window).max(Duration::from_secs(60));
        let reader = InstanceReader::new(config.upstream.authority.clone());
        // Nodes of one cluster name a limit key alike (in Redis): a hash keyed by the key file.
        let hasher = if config.file.cluster.enabled() {
            KeyHasher::keyed(sealer.store_key().derive_secret(crate::cluster::node::HASH_LABEL))
        } else {
            KeyHasher::default()
        };
        Ok(Arc::new(Shield {
            hasher,
            verifier: Verifier::new(fetcher, cfg.key_cache_entries, cfg.key_cache_ttl.get()),
            seen_signatures: moka::sync::Cache::builder().max_capacity(100_000).time_to_live(REPLAY_MEMORY).build(),
            waves: WaveDetector::new(cfg.wave_accounts, sender_memory(&policy), max_shield),
            familiar: Familiarity {
                cache: moka::sync::Cache::new(cfg.familiar_cache),
                pending: std::sync::Mutex::new(Vec::new()),
                durable: durable.clone(),
            },
            follows: Arc::new(Follows::new(reader.clone(), cfg.wave_accounts, max_shield)),
            accounts: LocalAccounts::new(reader, 10_000),
            quarantine: Quarantine::new(
                durable.clone(),
                config.upstream.authority.clone(),
                Arc::new(sealer),
                cfg.max_held,
            ),
            durable,
            forgot_legacy_follows: AtomicBool::new(false),
            stats: Stats::default(),
            domains: moka::sync::Cache::new(10_000),
            targets: moka::sync::Cache::new(10_000),
            hellthreads: moka::sync::Cache::builder().max_capacity(100_000).time_to_live(max_shield * 2).build(),
            active: RwLock::new(Arc::new(Active::new(policy, cfg.max_keys))),
            policies_dir: config.file.policies.clone(),
            local_domain: config.file.local_domain.clone(),
            cfg,
            shared: std::sync::OnceLock::new(),
        }))
    }

    /// `[cluster]`: shares waves, shields and limits with the other nodes through Redis.
    pub fn share_through(&self, shared: Arc<crate::cluster::redis::Shared>) {
        let _ = self.shared.set(shared);
    }

    /// The limits of the rules `check_limits` just passed, for the shared decision (empty
    /// without a cluster).
    fn shared_limits(
        &self,
        active: &Active,
        class: RouteClass,
        (method, path, headers): (&Method, &str, &http::HeaderMap),
        pseudonym: IpAddr,
        signer: Option<&Verdict>,
    ) -> Vec<(usize, crate::cluster::redis::SharedLimit)> {
        if self.shared.get().is_none() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for &i in &active.by_route[class.index()] {
            let Some(limiter) = active.limiters.get(i) else { continue };
            if !limiter.rule.matches(method, path) {
                continue;
            }
            let rule = &limiter.rule;
            out.push((
                i,
                crate::cluster::redis::SharedLimit {
                    rule: rule.name.clone(),
                    key: self.limit_key(rule.key, headers, pseudonym, signer),
                    interval: (rule.per / rule.count.max(1)).max(Duration::from_nanos(1)),
                    burst: rule.burst.max(1),
                },
            ));
        }
        out
    }

    /// The shared decision over what this node's limiters allowed: the budget is the
    /// cluster's. Redis silent past its budget → this node's decision stands (degraded).
    async fn check_shared_limits(
        &self,
        active: &Active,
        limits: Vec<(usize, crate::cluster::redis::SharedLimit)>,
    ) -> Result<(), Denied> {
        let Some(shared) = self.shared.get() else { return Ok(()) };
        if limits.is_empty() {
            return Ok(());
        }
        let rules: Vec<_> = limits.iter().map(|(_, l)| l.clone()).collect();
        match shared.check_limits(&rules).await {
            Some(Err(denied)) => {
                let (i, _) = &limits[denied.index.min(limits.len() - 1)];
                let rule = active.limiters.get(*i).map(|l| &l.rule);
                let limit = rule.map_or(1, |r| r.burst);
                let full_after = rule.map_or(Duration::ZERO, |r| (r.per / r.count.max(1)) * r.burst);
                Err(Denied {
                    rule: rule.map_or_else(String::new, |r| r.name.clone()),
                    limit,
                    retry_after: denied.retry_after,
                    reset_after: denied.retry_after.max(full_after),
                })
            }
            Some(Ok(())) | None => Ok(()),
        }
    }

    /// The limiter key of one rule's kind for this request.
    fn limit_key(&self, kind: KeyKind, headers: &http::HeaderMap, pseudonym: IpAddr, signer: Option<&Verdict>) -> u64 {
        let client = || self.hasher.hash(ns::CLIENT, pseudonym);
        match kind {
            KeyKind::Global => 0,
            KeyKind::Client => client(),
            KeyKind::Token => match bearer(headers) {
                Some(token) => self.hasher.hash(ns::TOKEN, token),
                None => client(),
            },
            KeyKind::RemoteDomain => match signer {
                Some(Verdict::Verified { domain, .. }) => self.hasher.hash(ns::DOMAIN, domain),
                _ => self.hasher.hash(ns::UNVERIFIED, pseudonym),
            },
            KeyKind::RemoteActor => match signer {
                Some(Verdict::Verified { actor, .. }) => self.hasher.hash(ns::ACTOR, actor),
                _ => self.hasher.hash(ns::UNVERIFIED, pseudonym),
            },
        }
    }

    fn active(&self) -> Arc<Active> {
        self.active.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn tally(cache: &moka::sync::Cache<String, Arc<Tally>>, key: &str) -> Arc<Tally> {
        cache.get_with_by_ref(key, || Arc::new(Tally::default()))
    }

    /// Runs every `[[limit]]` rule of the request's class. `signer` is the verification
    /// verdict for federation routes (None elsewhere).
    fn check_limits(
        &self,
        active: &Active,
        class: RouteClass,
        (method, path, headers): (&Method, &str, &http::HeaderMap),
        pseudonym: IpAddr,
        signer: Option<&Verdict>,
    ) -> Result<(), Denied> {
        for &i in &active.by_route[class.index()] {
            let Some(limiter) = active.limiters.get(i) else { continue };
            let rule = &limiter.rule;
            if !rule.matches(method, path) {
                continue;
            }
            limiter.check(self.limit_key(rule.key, headers, pseudonym, signer))?;
        }
        Ok(())
    }

    /// The instance's own domain, for addressing it and for telling local URLs.
    fn instance_host<'a>(&'a self, ctx: &'a RequestCtx) -> &'a str {
        self.local_domain.as_deref().or(ctx.host.as_deref()).unwrap_or("")
    }

    fn local_hosts(&self, ctx: &RequestCtx) -> LocalHosts {
        LocalHosts::new(self.local_domain.iter().map(String::as_str).chain(ctx.host.as_deref()))
    }

    /// Verifies a request as the instance would: signature, window, digest, the key's
    /// owner, that owner being the activity's actor, and no replay.
    async fn verify(
        &self,
        ctx: &RequestCtx,
        parts: &http::request::Parts,
        body: &[u8],
        doc: Option<&serde_json::Value>,
    ) -> (Option<SignedBy>, Verdict) {
        let verdict = match signature::parse(&parts.headers) {
            Err(why) => return (None, self.count(Verdict::Unverified(why))),
            Ok(by) => {
                let host = ctx.host.as_deref().unwrap_or("");
                // Federation is https end to end even when a TLS edge talks plain HTTP to us:
                // RFC 9421 senders sign an https `@target-uri`.
                let signed = signature::Signed {
                    method: &parts.method,
                    uri: &parts.uri,
                    headers: &parts.headers,
                    host,
                    https: true,
                    body,
                };
                let verdict = self.verifier.verify(&by, &signed, SystemTime::now()).await;
                (Some(by), verdict)
            }
        };
        let (by, verdict) = verdict;
        let verdict = match verdict {
            Verdict::Verified { actor, domain } => {
                // Mastodon processes an activity as the signer's only when it names the
                // signer as its actor (or names none); another actor's needs a Linked Data
                // signature pavise does not check, so it proves nothing here.
                let named = doc.and_then(|d| d.get("actor")).and_then(mention::id_of);
                if named.is_some_and(|a| a != actor) {
                    Verdict::Unverified(Rejection::ForeignActor)
                } else if self.replayed(by.as_ref()) {
                    Verdict::Unverified(Rejection::Replayed)
                } else {
                    Verdict::Verified { actor, domain }
                }
            }
            other => other,
        };
        (by, self.count(verdict))
    }

    /// Whether this very signature was seen before (and remembers it if not).
    fn replayed(&self, by: Option<&SignedBy>) -> bool {
        let Some(by) = by else { return false };
        let sig = match &by.format {
            signature::Format::Cavage { signature, .. } | signature::Format::Rfc9421 { signature, .. } => signature,
        };
        let key = self.hasher.hash(ns::SIGNATURE, (&by.key_id, sig));
        let mut fresh = false;
        self.seen_signatures.get_with(key, || fresh = true);
        !fresh
    }

    fn count(&self, verdict: Verdict) -> Verdict {
        match &verdict {
            Verdict::Verified { .. } => self.stats.verified.fetch_add(1, Relaxed),
            Verdict::Unverified(why) => self.stats.unverified[why.index()].fetch_add(1, Relaxed),
        };
        verdict
    }

    /// Reads and verifies one delivery; the body stays exactly as received.
    async fn read_delivery(&self, ctx: &RequestCtx, req: Request) -> Result<Delivery, ProxyError> {
        let (parts, mut body) = req.into_parts();
        let mut buf = bytes::BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                crate::proxy::pipeline::body_failure(&*e)
                    .unwrap_or_else(|| ProxyError::BadRequest(format!("reading the delivery: {e}")))
            })?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > MAX_DELIVERY {
                    return Err(ProxyError::BodyTooLarge { limit: MAX_DELIVERY as u64 });
                }
                buf.extend_from_slice(&data);
            }
        }
        let body = buf.freeze();
        let doc = serde_json::from_slice::<serde_json::Value>(&body).ok();
        let (by, verdict) = self.verify(ctx, &parts, &body, doc.as_ref()).await;
        let domain_label = match (&verdict, &by) {
            (Verdict::Verified { domain, .. }, _) => domain.clone(),
            (_, Some(by)) => format!("{} (unverified)", by.domain),
            _ => "(unsigned)".to_owned(),
        };
        Ok(Delivery { parts, body, doc, verdict, domain_label })
    }

    /// The usernames a delivery addresses (numeric ids asked of the instance).
    async fn addressed_accounts(&self, refs: &[LocalRef], host: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::with_capacity(refs.len());
        let mut lookups = 0;
        for r in refs {
            let key = match r {
                LocalRef::Name(name) => Some(name.clone()),
                LocalRef::Id(id) if lookups >= MAX_ID_LOOKUPS => Some(accounts::unnamed(*id)),
                LocalRef::Id(_) => {
                    lookups += 1;
                    self.accounts.key(r, host).await
                }
            };
            if let Some(key) = key
                && !out.contains(&key)
            {
                out.push(key);
            }
        }
        out
    }

    async fn inbox(
        &self,
        ctx: &mut RequestCtx,
        req: Request,
        active: Arc<Active>,
        inbox: InboxPath,
    ) -> Result<Flow, ProxyError> {
        let d = self.read_delivery(ctx, req).await?;
        let request_parts = (&d.parts.method, ctx.route.path.as_str(), &d.parts.headers);
        let checked =
            match self.check_limits(&active, RouteClass::Inbox, request_parts, ctx.pseudonym, Some(&d.verdict)) {
                Ok(()) => {
                    let limits =
                        self.shared_limits(&active, RouteClass::Inbox, request_parts, ctx.pseudonym, Some(&d.verdict));
                    self.check_shared_limits(&active, limits).await
                }
                Err(denied) => Err(denied),
            };
        if let Err(denied) = checked {
            self.stats.limited.fetch_add(1, Relaxed);
            Self::tally(&self.domains, &d.domain_label).limited.fetch_add(1, Relaxed);
            return Ok(Flow::Respond(too_many(&denied)));
        }
        let wave = &active.policy.wave;
        // Every verified delivery is remembered: that is what makes a sender familiar later.
        let familiar = match d.actor() {
            Some(a) => {
                let now = now_ms();
                now.saturating_sub(self.familiar.first_seen(a, now).await) >= wave.familiar_after.as_millis() as u64
            }
            None => false,
        };
        if !wave.enabled || familiar {
            self.stats.passed.fetch_add(1, Relaxed);
            return Ok(d.forward());
        }

        let host = self.instance_host(ctx).to_owned();
        let locals = self.local_hosts(ctx);
        let mut addressed = d.doc.as_ref().map(|doc| mention::read(doc, &locals)).unwrap_or_default();
        // A post delivered to a member's own inbox reaches the member whatever its
        // addressing (Mastodon's `delivered_to_account_id` silent mention).
        if let InboxPath::Personal(owner) = inbox
            && d.doc.as_ref().is_some_and(mention::carries_a_post)
            && !addressed.local.contains(&owner)
        {
            addressed.local.push(owner);
            addressed.total += 1;
        }
        let accounts = self.addressed_accounts(&addressed.local, &host).await;
        let now = Instant::now();
        if let (Some(doc), Some(_)) = (&d.doc, d.actor())
            && let Some(member) = follows::accept_hint(doc, &locals)
            && self.waves.shield_until(&member, now).is_some()
        {
            // Only a hint: the instance's collection is read again, and only it is believed.
            self.follows.hint(&member, &host);
        }

        // A member's own follows are wanted by that member: never counted, never deferred.
        let mut followed_by_any = false;
        let mut strangers_to = Vec::with_capacity(accounts.len());
        for account in accounts {
            if d.actor().is_some_and(|a| self.follows.follows(&account, a)) {
                followed_by_any = true;
            } else {
                strangers_to.push(account);
            }
        }
        if let Verdict::Verified { actor, domain } = &d.verdict {
            let sender = self.hasher.hash(ns::SENDER, actor.as_str());
            let params = active.wave_params();
            for account in &strangers_to {
                let mut raised =
                    self.waves.observe(account, sender, domain, now, &params) == wave::Observed::ShieldRaised;
                // Counted across every node too (this node's own count stays the fallback).
                if let Some(shared) = self.shared.get()
                    && let Some(crate::cluster::redis::SharedWave::Raised { senders }) =
                        shared.observe_wave(account, actor, &params).await
                {
                    tracing::warn!(account, actors = senders, "mention wave (across the cluster): account shielded");
                    raised = true;
                }
                if raised {
                    self.stats.shields_raised.fetch_add(1, Relaxed);
                    if self.cfg.learn_following {
                        self.follows.learn_from_instance(account, &host);
                    }
                }
            }
        }
        let shared_shields = match self.shared.get() {
            Some(shared) => shared.shielded(&strangers_to).await.unwrap_or_default(),
            None => Vec::new(),
        };
        let mut targets: Vec<String> = strangers_to
            .iter()
            .enumerate()
            .filter(|(i, a)| self.waves.shield_until(a, now).is_some() || shared_shields.get(*i) == Some(&true))
            .map(|(_, a)| a.clone())
            .collect();
        if addressed.opaque && targets.is_empty() {
            // The instance will fetch the object and may find any member mentioned in it.
            let mut shielded = self.waves.shielded(now);
            if let Some(shared) = self.shared.get()
                && let Some(more) = shared.shielded_accounts().await
            {
                shielded.extend(more);
                shielded.sort();
                shielded.dedup();
            }
            targets = shielded
                .into_iter()
                .filter(|a| !d.actor().is_some_and(|actor| self.follows.follows(a, actor)))
                .collect();
        }
        let hellthread = wave.hellthread > 0 && addressed.total > wave.hellthread && !followed_by_any && {
            // The same activity comes back with every retry: defer it for `shield_for`
            // from its first attempt, then let it through (the sender would give up).
            let first = self.hellthreads.get_with(self.hasher.hash(ns::BODY, &d.body[..]), || now);
            now.saturating_duration_since(first) < wave.shield_for
        };
        if targets.is_empty() && !hellthread {
            if followed_by_any {
                self.stats.followed_passed.fetch_add(1, Relaxed);
            }
            self.stats.passed.fetch_add(1, Relaxed);
            return Ok(d.forward());
        }
        if targets.is_empty() {
            targets = strangers_to;
        }
        self.hold_back(ctx, d, targets, wave).await
    }

    /// Defers, holds or rejects a delivery addressed to shielded `targets`.
    async fn hold_back(
        &self,
        ctx: &RequestCtx,
        d: Delivery,
        targets: Vec<String>,
        wave: &policy::WavePolicy,
    ) -> Result<Flow, ProxyError> {
        let tally = |f: fn(&Tally) -> &AtomicU64| {
            f(&Self::tally(&self.domains, &d.domain_label)).fetch_add(1, Relaxed);
            for t in &targets {
                f(&Self::tally(&self.targets, t)).fetch_add(1, Relaxed);
            }
        };
        let short_retry = d
            .parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ua| wave.is_short_retry(ua));
        let defer = || {
            let mut resp = json_error(StatusCode::TOO_MANY_REQUESTS, "Too many requests");
            let secs = wave.retry_after.as_secs().max(1);
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            resp
        };
        match wave.action {
            WaveAction::Reject => {
                self.stats.rejected.fetch_add(1, Relaxed);
                tally(|t| &t.rejected);
                Ok(Flow::Respond(json_error(
                    StatusCode::FORBIDDEN,
                    "this account is not accepting mentions from new senders right now",
                )))
            }
            // Only a verified delivery is worth a place in the store.
            WaveAction::Defer if short_retry && d.verdict.is_verified() => {
                let mut headers = d.parts.headers.clone();
                crate::privacy::headers::strip_client_ip_and_geo(&mut headers);
                crate::privacy::headers::set_forwarded(&mut headers, ctx.pseudonym, ctx.https, ctx.host.as_deref());
                let path = d.parts.uri.path_and_query().map_or("/", |p| p.as_str());
                match self
                    .quarantine
                    .hold(&d.parts.method, path, &headers, &d.body, &d.domain_label, targets.clone())
                    .await
                {
                    Ok(Hold::Held(_)) => {
                        self.stats.held.fetch_add(1, Relaxed);
                        tally(|t| &t.held);
                        let mut resp = Response::new(crate::proxy::empty());
                        *resp.status_mut() = StatusCode::ACCEPTED;
                        Ok(Flow::Respond(resp))
                    }
                    Ok(Hold::Full) => {
                        self.stats.deferred.fetch_add(1, Relaxed);
                        tally(|t| &t.deferred);
                        Ok(Flow::Respond(defer()))
                    }
                    // Could not keep it: let the sender keep it (503 is retried by all).
                    Err(e) => {
                        tracing::error!(error = %e, "quarantine write failed; answering 503 so the sender keeps the delivery");
                        let mut resp = json_error(StatusCode::SERVICE_UNAVAILABLE, "try again later");
                        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
                        Ok(Flow::Respond(resp))
                    }
                }
            }
            WaveAction::Defer => {
                self.stats.deferred.fetch_add(1, Relaxed);
                tally(|t| &t.deferred);
                Ok(Flow::Respond(defer()))
            }
        }
    }

    /// One housekeeping pass: trim limiters, write first-seen records, work the quarantine.
    pub async fn housekeep(&self) {
        let active = self.active();
        for l in &active.limiters {
            l.housekeep();
        }
        if let Err(e) = self.familiar.flush().await {
            tracing::error!(error = %e, "could not record first-seen senders");
        }
        if !self.forgot_legacy_follows.swap(true, Relaxed) {
            // Older versions believed follows from remote Accepts and kept them on disk.
            match self.durable.forget_follows().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(n, "forgot follows an older pavise learned from remote servers"),
                Err(e) => tracing::error!(error = %e, "could not forget the legacy follows"),
            }
        }
        let release_within = active.policy.wave.release_within;
        let now = Instant::now();
        match self
            .quarantine
            .tick(release_within, |targets| targets.iter().any(|t| self.waves.shield_until(t, now).is_some()))
            .await
        {
            Ok(r) => {
                self.stats.released.fetch_add(r.released, Relaxed);
                self.stats.kept.fetch_add(r.kept, Relaxed);
                self.stats.expired.fetch_add(r.expired, Relaxed);
            }
            Err(e) => tracing::error!(error = %e, "quarantine pass failed"),
        }
    }

    /// Runs [`Shield::housekeep`] every `housekeeping` until `shutdown`.
    pub async fn run_housekeeping(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(self.cfg.housekeeping.get().max(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => self.housekeep().await,
            }
        }
        let _ = self.familiar.flush().await;
    }

    /// Re-reads the policy directory; the previous policies stay on error.
    pub fn reload_policies(&self) -> Result<String, ShieldError> {
        let policy = policy::load_dir(&self.policies_dir)?;
        let summary = format!(
            "{} limit rule(s); wave detector {}",
            policy.limits.len(),
            if policy.wave.enabled { "on" } else { "off" }
        );
        *self.active.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Active::new(policy, self.cfg.max_keys));
        Ok(summary)
    }

    /// The `/admin/shield` report.
    pub async fn report(&self) -> serde_json::Value {
        let now = Instant::now();
        let active = self.active();
        let shields: Vec<serde_json::Value> = self
            .waves
            .report(now, active.policy.wave.window)
            .into_iter()
            .map(|r| {
                serde_json::json!({
                    "account": r.account,
                    "remaining_secs": r.remaining.as_secs(),
                    "raised_secs_ago": r.raised_ago.as_secs(),
                    "why": {
                        "raised_by_actors": r.raised_by,
                        "actors_in_window": r.actors_in_window,
                        "actors": r.actors_remembered,
                        "domains": r.domains,
                        "top_domains": r.top_domains.iter().map(|(d, n)| serde_json::json!({ "domain": d, "actors": n })).collect::<Vec<_>>(),
                    },
                })
            })
            .collect();
        let tallies = |cache: &moka::sync::Cache<String, Arc<Tally>>| {
            let mut rows: Vec<(String, [u64; 4])> = cache
                .iter()
                .map(|(k, t)| {
                    (
                        (*k).clone(),
                        [
                            t.limited.load(Relaxed),
                            t.deferred.load(Relaxed),
                            t.held.load(Relaxed),
                            t.rejected.load(Relaxed),
                        ],
                    )
                })
                .collect();
            rows.sort_by(|a, b| b.1.iter().sum::<u64>().cmp(&a.1.iter().sum::<u64>()).then(a.0.cmp(&b.0)));
            rows
        };
        let row = |(k, [limited, deferred, held, rejected]): &(String, [u64; 4])| serde_json::json!({ "name": k, "limited": limited, "deferred": deferred, "held": held, "rejected": rejected });
        let domains = tallies(&self.domains);
        let held: Vec<serde_json::Value> = self
            .quarantine
            .list()
            .await
            .unwrap_or_default()
            .iter()
            .map(|h| {
                serde_json::json!({
                    "id": h.id.to_string(), "domain": h.domain, "targets": h.targets, "received": h.received,
                    "date": h.date, "bytes": h.body.len(),
                    "state": if h.state == HeldState::Held { "held" } else { "kept" },
                })
            })
            .collect();
        let audit: Vec<serde_json::Value> = self
            .quarantine
            .audit_log(100)
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|a| serde_json::json!({ "at": a.at, "id": a.id.to_string(), "domain": a.domain, "action": a.action, "detail": a.detail }))
            .collect();
        let unverified: serde_json::Map<String, serde_json::Value> = Rejection::ALL
            .iter()
            .map(|r| (r.name().to_owned(), self.stats.unverified[r.index()].load(Relaxed).into()))
            .collect();
        serde_json::json!({
            "shields": shields,
            "targets": tallies(&self.targets).iter().map(row).collect::<Vec<_>>(),
            "domains": domains.iter().map(row).collect::<Vec<_>>(),
            "top_offending_domains": domains.iter().take(10).map(row).collect::<Vec<_>>(),
            "held": held,
            "audit": audit,
            "limits": active.limiters.iter().map(|l| serde_json::json!({
                "name": l.rule.name, "route": l.rule.route.config_name(), "key": l.rule.key.name(),
                "rate": l.rule.rate_text(), "burst": l.rule.burst, "keys": l.keys(),
            })).collect::<Vec<_>>(),
            "totals": {
                "passed": self.stats.passed.load(Relaxed),
                "limited": self.stats.limited.load(Relaxed),
                "deferred": self.stats.deferred.load(Relaxed),
                "held": self.stats.held.load(Relaxed),
                "rejected": self.stats.rejected.load(Relaxed),
                "released": self.stats.released.load(Relaxed),
                "kept_for_admin": self.stats.kept.load(Relaxed),
                "expired_from_quarantine": self.stats.expired.load(Relaxed),
                "shields_raised": self.stats.shields_raised.load(Relaxed),
                "signatures_verified": self.stats.verified.load(Relaxed),
                "signatures_unverified": self.stats.unverified_total(),
                "unverified_by_reason": unverified,
                "passed_as_followed": self.stats.followed_passed.load(Relaxed),
            },
        })
    }
}

/// The bearer token of a request, if any (never logged; only hashed).
fn bearer(headers: &http::HeaderMap) -> Option<&[u8]> {
    let v = headers.get(header::AUTHORIZATION)?.as_bytes();
    let token = v.strip_prefix(b"Bearer ").or_else(|| v.strip_prefix(b"bearer "))?;
    (!token.is_empty()).then_some(token)
}

/// 429 with `Retry-After` and Mastodon's `X-RateLimit-Limit/-Remaining/-Reset`.
fn too_many(denied: &Denied) -> Response {
    let mut resp = json_error(StatusCode::TOO_MANY_REQUESTS, "Too many requests");
    let h = resp.headers_mut();
    let retry = denied.retry_after.as_secs() + u64::from(denied.retry_after.subsec_nanos() > 0);
    let reset = std::time::SystemTime::now() + denied.reset_after;
    for (name, value) in [
        ("retry-after", retry.max(1).to_string()),
        ("x-ratelimit-limit", denied.limit.to_string()),
        ("x-ratelimit-remaining", "0".to_owned()),
        ("x-ratelimit-reset", iso8601(reset)),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(http::HeaderName::from_static(name), v);
        }
    }
    resp
}

/// `2026-11-26T13:45:18.000Z`, the form Mastodon's `X-RateLimit-Reset` uses.
pub fn iso8601(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// The pipeline stage.
pub struct ShieldStage(pub Arc<Shield>);

impl Stage for ShieldStage {
    fn name(&self) -> &'static str {
        "shield"
    }

    fn on_request<'a>(&'a self, ctx: &'a mut RequestCtx, req: Request) -> StageFuture<'a, Result<Flow, ProxyError>> {
        let shield = &self.0;
        let class = ctx.route.class;
        // The route read the path as Rails routes it: every spelling of an inbox
        // (`/inbox.json`, `//users/alice/inbox/`, `/ap/users/ID/inbox`) is an `Inbox`.
        let inbox = InboxPath::of(&ctx.route);
        let decision = {
            // The cheap path decides under the read lock, without touching the Arc's count.
            let active = shield.active.read().unwrap_or_else(|e| e.into_inner());
            let inbox_work = inbox.is_some() && (active.policy.wave.enabled || active.needs_signer[class.index()]);
            if inbox_work || active.needs_signer[class.index()] {
                None
            } else if active.by_route[class.index()].is_empty() {
                Some(Ok(Vec::new()))
            } else {
                let parts = (req.method(), ctx.route.path.as_str(), req.headers());
                Some(shield.check_limits(&active, class, parts, ctx.pseudonym, None).map(|()| {
                    // `[cluster]`: the rules this request matched, for one shared decision.
                    shield.shared_limits(&active, class, parts, ctx.pseudonym, None)
                }))
            }
        };
        match (decision, inbox) {
            // A few hash lookups, no body, no allocation beyond the stage's future (and,
            // in a cluster, one Redis round trip when a rule matched).
            (Some(decision), _) => Box::pin(async move {
                let decision = match decision {
                    Ok(limits) if !limits.is_empty() => {
                        let active = shield.active();
                        shield.check_shared_limits(&active, limits).await
                    }
                    Ok(_) => Ok(()),
                    Err(denied) => Err(denied),
                };
                match decision {
                    Ok(()) => Ok(Flow::Continue(req)),
                    Err(denied) => {
                        shield.stats.limited.fetch_add(1, Relaxed);
                        Ok(Flow::Respond(too_many(&denied)))
                    }
                }
            }),
            (None, Some(inbox)) => {
                let active = shield.active();
                Box::pin(async move { shield.inbox(ctx, req, active, inbox).await })
            }
            // Signed fetches of objects (authorized fetch) with per-signer rules: verify, then count.
            (None, None) => {
                let active = shield.active();
                Box::pin(async move {
                    let (parts, body) = req.into_parts();
                    let (_, verdict) = shield.verify(ctx, &parts, b"", None).await;
                    let request_parts = (&parts.method, ctx.route.path.as_str(), &parts.headers);
                    let checked =
                        match shield.check_limits(&active, class, request_parts, ctx.pseudonym, Some(&verdict)) {
                            Ok(()) => {
                                let limits =
                                    shield.shared_limits(&active, class, request_parts, ctx.pseudonym, Some(&verdict));
                                shield.check_shared_limits(&active, limits).await
                            }
                            Err(denied) => Err(denied),
                        };
                    match checked {
                        Ok(()) => Ok(Flow::Continue(Request::from_parts(parts, body))),
                        Err(denied) => {
                            shield.stats.limited.fetch_add(1, Relaxed);
                            Ok(Flow::Respond(too_many(&denied)))
                        }
                    }
                })
            }
        }
    }
}

/// `GET /admin/shield`; `POST /admin/shield/held/<id>/release|drop`; `POST /admin/shield/lift/<account>`.
pub struct ShieldAdmin(pub Arc<Shield>);

impl AdminHandler for ShieldAdmin {
    fn prefix(&self) -> &'static str {
        "/admin/shield"
    }

    fn handle<'a>(
        &'a self,
        method: &'a Method,
        path: &'a str,
        _query: Option<&'a str>,
        _body: Bytes,
    ) -> StageFuture<'a, Response> {
        Box::pin(async move {
            let rest = path.trim_start_matches("/admin/shield").trim_matches('/');
            let parts: Vec<&str> = rest.split('/').collect();
            match (method, parts.as_slice()) {
                (&Method::GET, [""]) => json(StatusCode::OK, self.0.report().await),
                (&Method::POST, ["held", id, action]) => {
                    let Ok(id) = id.parse::<u64>() else { return json_error(StatusCode::BAD_REQUEST, "bad id") };
                    match *action {
                        "release" => match self.0.quarantine.release(id).await {
                            Ok(Some(Replay::Delivered(s))) => {
                                json(StatusCode::OK, serde_json::json!({ "released": true, "instance_status": s }))
                            }
                            Ok(Some(Replay::Refused(s))) => json(
                                StatusCode::CONFLICT,
                                serde_json::json!({ "released": false, "instance_status": s, "kept": true }),
                            ),
                            Ok(Some(Replay::Later(why))) => {
                                json(StatusCode::BAD_GATEWAY, serde_json::json!({ "released": false, "error": why }))
                            }
                            Ok(None) => json_error(StatusCode::NOT_FOUND, "no such held delivery"),
                            Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
                        },
                        "drop" => match self.0.quarantine.drop_held(id).await {
                            Ok(true) => json(StatusCode::OK, serde_json::json!({ "dropped": true })),
                            Ok(false) => json_error(StatusCode::NOT_FOUND, "no such held delivery"),
                            Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
                        },
                        _ => json_error(StatusCode::NOT_FOUND, "use release or drop"),
                    }
                }
                (&Method::POST, ["lift", account]) => {
                    self.0.waves.lift(&account.to_ascii_lowercase(), Instant::now());
                    if let Some(shared) = self.0.shared.get() {
                        shared.lift(&account.to_ascii_lowercase()).await;
                    }
                    json(StatusCode::OK, serde_json::json!({ "lifted": account }))
                }
                _ => json_error(StatusCode::NOT_FOUND, "no such shield endpoint"),
            }
        })
    }
}

impl Reload for Shield {
    fn name(&self) -> &'static str {
        "shield"
    }

    fn reload(&self) -> Result<String, String> {
        self.reload_policies().map_err(|e| e.to_string())
    }
}

impl MetricsSource for Shield {
    fn render(&self, out: &mut String) {
        let s = &self.stats;
        out.push_str("# HELP pavise_shield_decisions_total Shield decisions on requests, by outcome.\n");
        out.push_str("# TYPE pavise_shield_decisions_total counter\n");
        for (outcome, v) in [
            ("passed", &s.passed),
            ("limited", &s.limited),
            ("deferred", &s.deferred),
            ("held", &s.held),
            ("rejected", &s.rejected),
        ] {
            let _ = writeln!(out, "pavise_shield_decisions_total{{outcome=\"{outcome}\"}} {}", v.load(Relaxed));
        }
        out.push_str("# HELP pavise_shield_signatures_total Federation signatures, by verification result (verified, or why not).\n");
        out.push_str("# TYPE pavise_shield_signatures_total counter\n");
        let _ = writeln!(out, "pavise_shield_signatures_total{{result=\"verified\"}} {}", s.verified.load(Relaxed));
        let _ = writeln!(out, "pavise_shield_signatures_total{{result=\"unverified\"}} {}", s.unverified_total());
        for r in Rejection::ALL {
            let _ = writeln!(
                out,
                "pavise_shield_unverified_total{{reason=\"{}\"}} {}",
                r.name(),
                s.unverified[r.index()].load(Relaxed)
            );
        }
        out.push_str("# HELP pavise_shield_shields_raised_total Local accounts shielded by the wave detector.\n");
        out.push_str("# TYPE pavise_shield_shields_raised_total counter\n");
        let _ = writeln!(out, "pavise_shield_shields_raised_total {}", s.shields_raised.load(Relaxed));
        out.push_str("# HELP pavise_shield_followed_passed_total Deliveries from unfamiliar senders passed because a mentioned member follows them (as the instance lists).\n");
        out.push_str("# TYPE pavise_shield_followed_passed_total counter\n");
        let _ = writeln!(out, "pavise_shield_followed_passed_total {}", s.followed_passed.load(Relaxed));
        out.push_str(
            "# HELP pavise_shield_quarantine_total Held deliveries released to the instance, kept for the admin, or purged past their signature window.\n",
        );
        out.push_str("# TYPE pavise_shield_quarantine_total counter\n");
        let _ = writeln!(out, "pavise_shield_quarantine_total{{outcome=\"released\"}} {}", s.released.load(Relaxed));
        let _ = writeln!(out, "pavise_shield_quarantine_total{{outcome=\"kept\"}} {}", s.kept.load(Relaxed));
        let _ = writeln!(out, "pavise_shield_quarantine_total{{outcome=\"expired\"}} {}", s.expired.load(Relaxed));
        out.push_str("# HELP pavise_shield_limiter_keys Keys tracked per limit rule.\n");
        out.push_str("# TYPE pavise_shield_limiter_keys gauge\n");
        for l in &self.active().limiters {
            let _ =
                writeln!(out, "pavise_shield_limiter_keys{{rule=\"{}\"}} {}", l.rule.name.replace('"', "'"), l.keys());
        }
    }
}

/// `pavise check`'s section: what the limit and wave policies will do.
pub fn check_summary(config: &Config) -> Result<String, ShieldError> {
    let policy = policy::load_dir(&config.file.policies)?;
    let mut out = String::new();
    if !config.file.shield.enabled {
        let _ = writeln!(out, "shield: OFF ([shield] enabled = false)");
        return Ok(out);
    }
    let _ = writeln!(out, "shield: {} limit rule(s) from {}", policy.limits.len(), config.file.policies.display());
    for l in &policy.limits {
        let filter = match (l.methods.is_empty(), l.paths.is_empty()) {
            (true, true) => String::new(),
            _ => format!(
                " [{}{}]",
                l.methods.iter().map(Method::as_str).collect::<Vec<_>>().join(","),
                if l.paths.is_empty() { String::new() } else { format!(" {}", l.paths.join(" ")) }
            ),
        };
        let _ = writeln!(
            out,
            "  limit {:<24} {}{filter} per {}: {} burst {}",
            l.name,
            l.route.config_name(),
            l.key.name(),
            l.rate_text(),
            l.burst
        );
    }
    let w = &policy.wave;
    if w.enabled {
        let action = match w.action {
            WaveAction::Defer => format!("defer (429; hold + 202 for {})", w.short_retry_agents.join(", ")),
            WaveAction::Reject => "reject (403)".to_owned(),
        };
        let _ = writeln!(
            out,
            "  wave: > {} unfamiliar senders mentioning one account within {} → shield for {}: {action}",
            w.distinct_senders,
            Span(w.window),
            Span(w.shield_for)
        );
        let _ = writeln!(
            out,
            "  familiar after {}; hellthread above {} mentions; held deliveries released within {} of their Date",
            Span(w.familiar_after),
            w.hellthread,
            Span(w.release_within)
        );
    } else {
        let _ = writeln!(out, "  wave detector: off (no [wave] section)");
    }
    let fetch = match config.file.shield.key_fetch {
        KeyFetchMode::Egress => format!(
            "from their owners through the egress proxy {}{}",
            config.file.egress.listen,
            if config.file.egress.proxy_auth.is_some() { " (with its proxy credentials)" } else { "" }
        ),
        KeyFetchMode::Direct => {
            "DIRECT from this server's address — development only (egress.mode = \"direct\")".to_owned()
        }
    };
    let _ = writeln!(out, "  actor keys fetched {fetch}; at most {} keys per limit", config.file.shield.max_keys);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_matches_known_dates() {
        let t = std::time::UNIX_EPOCH + Duration::from_millis(1_795_009_518_123);
        assert_eq!(iso8601(t), "2026-11-18T13:45:18.123Z");
        assert_eq!(iso8601(std::time::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = std::time::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(iso8601(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn bearer_tokens() {
        let mut h = http::HeaderMap::new();
        assert!(bearer(&h).is_none());
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&h), Some(&b"abc"[..]));
    }
}
