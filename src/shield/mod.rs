//! The shield: keyed rate limits and the harassment-wave defence, decided before any
//! stage spends work on a request body.
//!
//! - [`policy`]: `[[limit]]` and `[wave]` from `policies/*.toml`;
//! - [`limiter`]: governor GCRA limiters with a hard memory cap;
//! - [`signature`]: who signed a federation delivery, verified against the actor's key;
//! - [`wave`]: mentions of local accounts, the per-account wave detector;
//! - [`follows`]: whom local members follow (their chosen senders are never deferred);
//! - [`quarantine`]: store-and-forward for senders that give up quickly.
//!
//! Durable state (first-seen senders, follows, held deliveries) goes through [`crate::store::ShieldStore`].
//!
//! What a request gets:
//! - over a `[[limit]]`: 429 with `Retry-After` and Mastodon's `X-RateLimit-*` headers;
//! - an inbox delivery from an unfamiliar sender to a shielded account (or a hellthread):
//!   `action = "defer"` → 429 (Mastodon, Akkoma and Misskey retry for a day or more with
//!   fresh signatures), or 202 + quarantine for senders whose User-Agent says they give
//!   up within minutes (GoToSocial); `action = "reject"` → 403;
//! - everything else passes untouched. Non-inbox routes cost a few hash lookups and no
//!   allocation; only inbox deliveries are buffered (≤ 1 MB, Mastodon's own cap) and
//!   forwarded as the very same bytes.

pub mod follows;
pub mod limiter;
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
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, header};
use http_body_util::BodyExt;
use serde::Deserialize;

use self::{
    follows::Follows,
    limiter::{Denied, KeyHasher, Limiter},
    policy::{KeyKind, ShieldPolicy, WaveAction},
    quarantine::{Quarantine, Replay},
    signature::{KeyFetcher, Signed, Verdict, Verifier},
    wave::WaveDetector,
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
}

/// How actor keys are fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyFetchMode {
    /// Through the egress proxy (`egress.listen`, Tor): the default.
    Egress,
    /// Straight to the actor's server (development, tests): reveals this server's address.
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
    /// First-seen records (and follow answers) kept in memory in front of the store.
    pub familiar_cache: u64,
    /// When a shield goes up over a member, read the member's public `following`
    /// collection from the instance, so accounts they follow keep reaching them.
    pub learn_following: bool,
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
            housekeeping: Span::secs(10),
        }
    }
}

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
    unverified: AtomicU64,
    shields_raised: AtomicU64,
    follows_learned: AtomicU64,
    followed_passed: AtomicU64,
    released: AtomicU64,
    kept: AtomicU64,
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
    waves: WaveDetector,
    familiar: Familiarity,
    follows: Arc<Follows>,
    quarantine: Quarantine,
    stats: Stats,
    domains: moka::sync::Cache<String, Arc<Tally>>,
    targets: moka::sync::Cache<String, Arc<Tally>>,
    /// Hellthread deliveries (body hash) → first seen: deferred for `shield_for` at most,
    /// so a sender that retries for days gets through in the end.
    hellthreads: moka::sync::Cache<u64, Instant>,
}

/// Key namespaces, so a domain and a pseudonym never share a bucket.
mod ns {
    pub(super) const CLIENT: u8 = 1;
    pub(super) const TOKEN: u8 = 2;
    pub(super) const DOMAIN: u8 = 3;
    pub(super) const ACTOR: u8 = 4;
    pub(super) const UNVERIFIED: u8 = 5;
    pub(super) const SENDER: u8 = 6;
    pub(super) const CLAIMED: u8 = 7;
}

impl Shield {
    /// Loads the policies; fails (naming file and key) when they are invalid.
    pub fn new(
        config: &Config,
        durable: Arc<dyn ShieldStore>,
        fetcher: Option<Arc<dyn KeyFetcher>>,
    ) -> Result<Arc<Shield>, ShieldError> {
        let cfg = config.file.shield.clone();
        let policy = policy::load_dir(&config.file.policies)?;
        let fetcher: Arc<dyn KeyFetcher> = match fetcher {
            Some(f) => f,
            None => {
                let proxy = (cfg.key_fetch == KeyFetchMode::Egress).then_some(config.file.egress.listen);
                Arc::new(signature::HttpKeyFetcher::new(
                    proxy,
                    cfg.key_fetch_allow_private,
                    cfg.key_fetch_timeout.get(),
                )?)
            }
        };
        let max_shield = policy.wave.shield_for.max(policy.wave.window).max(Duration::from_secs(60));
        Ok(Arc::new(Shield {
            active: RwLock::new(Arc::new(Active::new(policy, cfg.max_keys))),
            hasher: KeyHasher::default(),
            verifier: Verifier::new(fetcher, cfg.key_cache_entries, cfg.key_cache_ttl.get()),
            waves: WaveDetector::new(cfg.wave_accounts, max_shield),
            familiar: Familiarity {
                cache: moka::sync::Cache::new(cfg.familiar_cache),
                pending: std::sync::Mutex::new(Vec::new()),
                durable: durable.clone(),
            },
            follows: Arc::new(Follows::new(
                durable.clone(),
                config.upstream.authority.clone(),
                cfg.familiar_cache,
                max_shield,
            )),
            quarantine: Quarantine::new(durable, config.upstream.authority.clone()),
            stats: Stats::default(),
            domains: moka::sync::Cache::new(10_000),
            targets: moka::sync::Cache::new(10_000),
            hellthreads: moka::sync::Cache::builder().max_capacity(100_000).time_to_live(max_shield * 2).build(),
            policies_dir: config.file.policies.clone(),
            local_domain: config.file.local_domain.clone(),
            cfg,
        }))
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
        req: &Request,
        pseudonym: IpAddr,
        signer: Option<&Verdict>,
    ) -> Result<(), Denied> {
        let (method, path, headers) = (req.method(), req.uri().path(), req.headers());
        for &i in &active.by_route[class.index()] {
            let Some(limiter) = active.limiters.get(i) else { continue };
            let rule = &limiter.rule;
            if !rule.matches(method, path) {
                continue;
            }
            let client = || self.hasher.hash(ns::CLIENT, pseudonym);
            let key = match rule.key {
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
            };
            limiter.check(key)?;
        }
        Ok(())
    }

    fn local_host<'a>(&'a self, ctx: &'a RequestCtx) -> &'a str {
        self.local_domain.as_deref().or(ctx.host.as_deref()).unwrap_or("")
    }

    async fn verify(&self, ctx: &RequestCtx, req: &Request) -> (Option<signature::SignedBy>, Verdict) {
        let signed = signature::parse(req.headers());
        let verdict = match &signed {
            Some(by) => {
                let host = ctx.host.as_deref().unwrap_or("");
                // Federation is https end to end even when a TLS edge talks plain HTTP to us:
                // RFC 9421 senders sign an https `@target-uri`.
                let parts = Signed { method: req.method(), uri: req.uri(), headers: req.headers(), host, https: true };
                self.verifier.verify(by, &parts).await
            }
            None => Verdict::Unverified,
        };
        match verdict {
            Verdict::Verified { .. } => self.stats.verified.fetch_add(1, Relaxed),
            Verdict::Unverified => self.stats.unverified.fetch_add(1, Relaxed),
        };
        (signed, verdict)
    }

    async fn inbox(&self, ctx: &mut RequestCtx, req: Request, active: Arc<Active>) -> Result<Flow, ProxyError> {
        let (signed, verdict) = self.verify(ctx, &req).await;
        let domain = match (&verdict, &signed) {
            (Verdict::Verified { domain, .. }, _) => domain.clone(),
            (_, Some(by)) => format!("{} (unverified)", by.domain),
            _ => "(unsigned)".to_owned(),
        };
        if let Err(denied) = self.check_limits(&active, ctx.route.class, &req, ctx.pseudonym, Some(&verdict)) {
            self.stats.limited.fetch_add(1, Relaxed);
            Self::tally(&self.domains, &domain).limited.fetch_add(1, Relaxed);
            return Ok(Flow::Respond(too_many(&denied)));
        }
        let now_ms = now_ms();
        let wave = &active.policy.wave;
        let actor = match &verdict {
            Verdict::Verified { actor, .. } => Some(actor.as_str()),
            Verdict::Unverified => None,
        };
        // Every verified delivery is remembered: that is what makes a sender familiar later.
        let familiar = match actor {
            Some(a) => {
                now_ms.saturating_sub(self.familiar.first_seen(a, now_ms).await)
                    >= wave.familiar_after.as_millis() as u64
            }
            None => false,
        };
        if !wave.enabled || familiar {
            self.stats.passed.fetch_add(1, Relaxed);
            return Ok(Flow::Continue(req));
        }

        // Read the (≤ 1 MB, capped by the pipeline) body once; forward those same bytes.
        let (parts, body) = req.into_parts();
        let bytes: Bytes = match body.collect().await {
            Ok(c) => c.to_bytes(),
            Err(e) => {
                return Err(match e.downcast_ref::<crate::proxy::pipeline::BodyCapExceeded>() {
                    Some(cap) => ProxyError::BodyTooLarge { limit: cap.0 },
                    None => ProxyError::BadRequest(format!("reading the delivery: {e}")),
                });
            }
        };
        if let Some(actor) = actor
            && let Some(change) = follows::follow_answer(&bytes, actor, self.local_host(ctx))
        {
            match self.follows.record(vec![change]).await {
                Ok(()) => _ = self.stats.follows_learned.fetch_add(1, Relaxed),
                Err(e) => tracing::error!(error = %e, "could not record a follow"),
            }
        }
        let mut mentions = wave::mentions(&bytes, self.local_host(ctx));
        // A member's own follows are familiar to that member: never counted, never deferred.
        let mut followed_by_any = false;
        if let Some(actor) = actor {
            let mut strangers_to = Vec::with_capacity(mentions.local.len());
            for account in std::mem::take(&mut mentions.local) {
                if self.follows.follows(&account, actor).await {
                    followed_by_any = true;
                } else {
                    strangers_to.push(account);
                }
            }
            mentions.local = strangers_to;
        }
        let now = Instant::now();
        let hellthread = wave.hellthread > 0 && mentions.total > wave.hellthread && !followed_by_any && {
            // The same activity comes back with every retry: defer it for `shield_for`
            // from its first attempt, then let it through (the sender would give up).
            let first = self.hellthreads.get_with(self.hasher.hash(ns::SENDER, &bytes[..]), || now);
            now.saturating_duration_since(first) < wave.shield_for
        };
        if !mentions.local.is_empty() {
            let sender = match (actor, &signed) {
                (Some(a), _) => self.hasher.hash(ns::SENDER, a),
                (None, Some(by)) => self.hasher.hash(ns::CLAIMED, &by.actor),
                (None, None) => self.hasher.hash(ns::UNVERIFIED, ctx.pseudonym),
            };
            for account in &mentions.local {
                let observed =
                    self.waves.observe(account, sender, now, wave.window, wave.distinct_senders, wave.shield_for);
                if observed == wave::Observed::ShieldRaised {
                    self.stats.shields_raised.fetch_add(1, Relaxed);
                    if self.cfg.learn_following {
                        self.follows.learn_from_instance(account, self.local_host(ctx));
                    }
                }
            }
        }
        let shielded: Vec<String> =
            mentions.local.iter().filter(|a| self.waves.shield_until(a, now).is_some()).cloned().collect();
        if shielded.is_empty() && !hellthread {
            if followed_by_any {
                self.stats.followed_passed.fetch_add(1, Relaxed);
            }
            self.stats.passed.fetch_add(1, Relaxed);
            return Ok(Flow::Continue(Request::from_parts(parts, crate::proxy::full(bytes))));
        }
        let targets = if shielded.is_empty() { mentions.local.clone() } else { shielded };
        let short_retry = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ua| wave.is_short_retry(ua));
        let tally = |f: fn(&Tally) -> &AtomicU64| {
            f(&Self::tally(&self.domains, &domain)).fetch_add(1, Relaxed);
            for t in &targets {
                f(&Self::tally(&self.targets, t)).fetch_add(1, Relaxed);
            }
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
            WaveAction::Defer if short_retry => {
                let mut headers = parts.headers.clone();
                crate::privacy::headers::strip_client_ip_and_geo(&mut headers);
                crate::privacy::headers::set_forwarded(&mut headers, ctx.pseudonym, ctx.https, ctx.host.as_deref());
                let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
                let durable_domain = match &verdict {
                    Verdict::Verified { domain, .. } => domain.clone(),
                    Verdict::Unverified => domain.clone(),
                };
                match self
                    .quarantine
                    .hold(&parts.method, path, &headers, &bytes, &durable_domain, targets.clone())
                    .await
                {
                    Ok(_) => {
                        self.stats.held.fetch_add(1, Relaxed);
                        tally(|t| &t.held);
                        let mut resp = Response::new(crate::proxy::empty());
                        *resp.status_mut() = StatusCode::ACCEPTED;
                        Ok(Flow::Respond(resp))
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
                let mut resp = json_error(StatusCode::TOO_MANY_REQUESTS, "Too many requests");
                let secs = wave.retry_after.as_secs().max(1);
                if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                    resp.headers_mut().insert(header::RETRY_AFTER, v);
                }
                Ok(Flow::Respond(resp))
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
            .active(now)
            .into_iter()
            .map(|(account, left)| serde_json::json!({ "account": account, "remaining_secs": left.as_secs() }))
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
                "signatures_verified": self.stats.verified.load(Relaxed),
                "signatures_unverified": self.stats.unverified.load(Relaxed),
                "follows_learned": self.stats.follows_learned.load(Relaxed),
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
        let decision = {
            // The cheap path decides under the read lock, without touching the Arc's count.
            let active = shield.active.read().unwrap_or_else(|e| e.into_inner());
            let inbox_work =
                class == RouteClass::Inbox && (active.policy.wave.enabled || active.needs_signer[class.index()]);
            if inbox_work || active.needs_signer[class.index()] {
                None
            } else if active.by_route[class.index()].is_empty() {
                Some(Ok(()))
            } else {
                Some(shield.check_limits(&active, class, &req, ctx.pseudonym, None))
            }
        };
        match decision {
            // A few hash lookups, no body, no allocation beyond the stage's future.
            Some(decision) => Box::pin(async move {
                match decision {
                    Ok(()) => Ok(Flow::Continue(req)),
                    Err(denied) => {
                        shield.stats.limited.fetch_add(1, Relaxed);
                        Ok(Flow::Respond(too_many(&denied)))
                    }
                }
            }),
            None if class == RouteClass::Inbox => {
                let active = shield.active();
                Box::pin(async move { shield.inbox(ctx, req, active).await })
            }
            // Signed fetches of objects (authorized fetch) with per-signer rules: verify, then count.
            None => {
                let active = shield.active();
                Box::pin(async move {
                    let (_, verdict) = shield.verify(ctx, &req).await;
                    match shield.check_limits(&active, class, &req, ctx.pseudonym, Some(&verdict)) {
                        Ok(()) => Ok(Flow::Continue(req)),
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
                    self.0.waves.lift(&account.to_ascii_lowercase());
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
        out.push_str("# HELP pavise_shield_signatures_total Inbox signatures, by verification result.\n");
        out.push_str("# TYPE pavise_shield_signatures_total counter\n");
        let _ = writeln!(out, "pavise_shield_signatures_total{{result=\"verified\"}} {}", s.verified.load(Relaxed));
        let _ = writeln!(out, "pavise_shield_signatures_total{{result=\"unverified\"}} {}", s.unverified.load(Relaxed));
        out.push_str("# HELP pavise_shield_shields_raised_total Local accounts shielded by the wave detector.\n");
        out.push_str("# TYPE pavise_shield_shields_raised_total counter\n");
        let _ = writeln!(out, "pavise_shield_shields_raised_total {}", s.shields_raised.load(Relaxed));
        out.push_str("# HELP pavise_shield_follows_learned_total Follows of remote actors by members, learned from Accept/Reject deliveries.\n");
        out.push_str("# TYPE pavise_shield_follows_learned_total counter\n");
        let _ = writeln!(out, "pavise_shield_follows_learned_total {}", s.follows_learned.load(Relaxed));
        out.push_str("# HELP pavise_shield_followed_passed_total Deliveries from unfamiliar senders passed because a mentioned member follows them.\n");
        out.push_str("# TYPE pavise_shield_followed_passed_total counter\n");
        let _ = writeln!(out, "pavise_shield_followed_passed_total {}", s.followed_passed.load(Relaxed));
        out.push_str(
            "# HELP pavise_shield_quarantine_total Held deliveries released to the instance or kept for the admin.\n",
        );
        out.push_str("# TYPE pavise_shield_quarantine_total counter\n");
        let _ = writeln!(out, "pavise_shield_quarantine_total{{outcome=\"released\"}} {}", s.released.load(Relaxed));
        let _ = writeln!(out, "pavise_shield_quarantine_total{{outcome=\"kept\"}} {}", s.kept.load(Relaxed));
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
        KeyFetchMode::Egress => format!("through the egress proxy {}", config.file.egress.listen),
        KeyFetchMode::Direct => "DIRECT — development only".to_owned(),
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
