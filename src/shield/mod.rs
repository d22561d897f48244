//! The shield: keyed rate limits and the harassment-wave defence, decided before any
//! stage spends work on a request body.
//!
//! - [`config`]: `[shield]` and what the shield is built from; `pavise check`'s summary;
//! - [`stage`]: the pipeline stage (the cheap path, signed fetches, familiarity on 2xx);
//! - `inbox`: the inbox path, phase by phase; `decision`: the pure decision over one
//!   delivery and the one mapping to its answer; `release`: the quarantine's releases;
//! - [`admin`]: `/admin/shield`, the `/readyz` line, the reload hook; `metrics`: its
//!   figures in `/metrics`;
//! - [`policy`]: `[[limit]]` and `[wave]` from `policies/*.toml`;
//! - [`limiter`]: governor GCRA limiters with a hard memory cap;
//! - [`signature`]: who signed a federation delivery, verified as the instance verifies it;
//! - [`keys`]: a signer's key, fetched from its owner through the egress proxy;
//! - [`budget`]: what a key fetch may cost, and who pays for it;
//! - [`domains`]: which deliveries the instance takes at all (its domains, its blocks);
//! - [`document`]: the delivery's body as the instance reads it, exactly or not at all;
//! - [`mention`]: whom a delivery addresses, read as the instance reads it;
//! - [`accounts`]: numeric account and status ids to usernames, asking the instance;
//! - [`wave`]: the per-account wave detector;
//! - [`familiar`]: who is familiar (accepted by the instance, over time);
//! - [`follows`]: whom local members follow, as the instance lists it;
//! - [`quarantine`]: sealed store-and-forward, so what is held back is delayed, not lost;
//! - [`instance`]: the shield's own reads of the instance.
//!
//! A shield holds back a member's real mail too, so it must never become a weapon against
//! the member. Three kinds of delivery, told apart before anything costly happens:
//! - **refused by the instance anyway** — unsigned, outside the signature window, a body
//!   its digest does not cover, addressed to a `Host` that is not one of the instance's
//!   domains, signed by a domain the instance suspends: forwarded as they are (the
//!   instance refuses them), whatever the shields say, and counted toward nothing;
//! - **not verifiable now** — a key pavise cannot fetch (or not within its budget), a
//!   relayed activity, a signature weaker than pavise asks: the instance may accept them,
//!   so when they address a member they are held (202) whatever the shields say, and
//!   released when no shield covers them (at once, usually), or before their signature
//!   window closes. The answer never depends on a shield, so they cannot probe one; they
//!   never raise, extend or prolong one;
//! - **verified** as the instance would accept them: only these count toward a wave, a
//!   domain's budget, familiarity, and only a verified delivery the instance accepted
//!   (2xx) that carried something to a member makes its sender familiar. Follows are
//!   believed from the instance only. What reaches a member is [`mention`]'s to say.
//!
//! Nothing held back is lost: a deferral (429) is retried by the sender, and any one
//! delivery is deferred at most `shield_for` from its first attempt (a wave's own actors:
//! while their shield is up, a day at most); a held delivery is released at the latest
//! before its signature window closes.
//!
//! Durable state (first-seen senders, sealed held deliveries) goes through
//! [`crate::store::ShieldStore`].
//!
//! What a request gets:
//! - over a `[[limit]]`: 429 with `Retry-After` and Mastodon's `X-RateLimit-*` headers;
//! - an inbox delivery from an unfamiliar verified sender to a shielded account (or a
//!   hellthread): `action = "defer"` → 429 (Mastodon, Akkoma and Misskey retry for a day or
//!   more with fresh signatures), or 202 + quarantine for senders whose User-Agent says
//!   they give up within minutes (GoToSocial) and who are not the wave's own actors;
//!   `action = "reject"` → 403;
//! - everything else passes untouched. Non-inbox routes cost a few hash lookups and no
//!   allocation; inbox deliveries are buffered (≤ 1 MiB, Mastodon's own cap) — the
//!   signature's digest covers the body — and forwarded as the very same bytes.

pub mod accounts;
pub mod admin;
pub mod budget;
pub mod clock;
pub mod config;
mod decision;
pub mod document;
pub mod domains;
pub mod familiar;
pub mod follows;
mod inbox;
pub mod instance;
pub mod keys;
pub mod limiter;
pub mod mention;
mod metrics;
pub mod policy;
pub mod quarantine;
mod release;
pub mod signature;
pub mod stage;
pub mod wave;

use std::{
    net::IpAddr,
    path::PathBuf,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use http::Method;

use self::{
    accounts::LocalAccounts,
    budget::FetchBudget,
    domains::{DomainBlocks, InstanceDomains},
    familiar::Familiarity,
    follows::Follows,
    instance::InstanceReader,
    keys::KeyFetcher,
    limiter::{Denied, KeyHasher, Limiter},
    policy::{KeyKind, ShieldPolicy},
    quarantine::{HoldLimits, Quarantine},
    signature::{Rejection, Verdict, Verifier},
    wave::{WaveDetector, WaveParams},
};
pub use self::{
    admin::{ShieldAdmin, ShieldReadiness},
    config::{KeyFetchMode, ShieldConfig, ShieldSetup, check_summary},
    stage::ShieldStage,
};
use crate::{admin::hooks::Readiness, proxy::contract::RouteClass, store::ShieldStore};

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
    #[error("shield config: {0}")]
    Config(String),
    #[error("reading the instance: {0}")]
    Instance(String),
}

/// Mastodon's inbox cap (`ActivityPub::Activity::MAX_JSON_SIZE`): a delivery the route
/// table did not classify as one is capped here.
const MAX_DELIVERY: usize = 1 << 20;
/// Numeric ids looked up per delivery at most; the rest count as `#ID` (or as unknown).
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
            per_domain: w.per_domain,
            max_shield: w.max_shield,
        }
    }
}

/// How long an account remembers an actor that mentioned it: until the actor would be
/// familiar anyway, so no actor ever counts twice toward one account's waves.
fn sender_memory(policy: &ShieldPolicy) -> Duration {
    let w = &policy.wave;
    w.familiar_after.max(w.window + w.shield_for).max(Duration::from_secs(60))
}

/// Which `[[limit]]` rules a check runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Rules {
    /// Every rule of the class.
    All,
    /// Rules keyed on the client, its token or nothing: they need no verification, so
    /// they run before the body is read or any key is fetched.
    Local,
    /// Rules keyed on the verified signer (per client when unverified).
    Signer,
}

impl Rules {
    fn runs(self, key: KeyKind) -> bool {
        let signer = matches!(key, KeyKind::RemoteDomain | KeyKind::RemoteActor);
        match self {
            Rules::All => true,
            Rules::Local => !signer,
            Rules::Signer => signer,
        }
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
    held_unverified: AtomicU64,
    rejected: AtomicU64,
    verified: AtomicU64,
    unverified: [AtomicU64; Rejection::ALL.len()],
    shields_raised: AtomicU64,
    followed_passed: AtomicU64,
    /// Passed after being deferred `shield_for` (a delay, never a drop).
    deferred_enough: AtomicU64,
    released: AtomicU64,
    /// Released before their signature window closed, their targets still shielded.
    released_at_window: AtomicU64,
    kept: AtomicU64,
    refused_on_release: AtomicU64,
    expired: AtomicU64,
}

impl Stats {
    fn unverified_total(&self) -> u64 {
        self.unverified.iter().map(|c| c.load(Relaxed)).sum()
    }
}

/// What became of a signed delivery: remembered per signature, so that a replay gets the
/// first one's answer (a replay is not a new delivery, nor a way around a deferral).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Being decided (a concurrent copy): deferred.
    Pending,
    Forwarded,
    Deferred,
    Held,
}

/// Everything the stage, the admin endpoint, the reload hook and the metrics share.
pub struct Shield {
    cfg: ShieldConfig,
    policies_dir: PathBuf,
    active: RwLock<Arc<Active>>,
    hasher: KeyHasher,
    verifier: Verifier,
    domains: InstanceDomains,
    blocks: DomainBlocks,
    reader: InstanceReader,
    /// Signatures already seen (keyed hashes), and what became of them.
    seen_signatures: moka::sync::Cache<u64, Outcome>,
    waves: WaveDetector,
    familiar: Familiarity,
    follows: Arc<Follows>,
    accounts: LocalAccounts,
    quarantine: Quarantine,
    durable: Arc<dyn ShieldStore>,
    /// Whether the store's legacy (remote-taught) follows were forgotten this run.
    forgot_legacy_follows: AtomicBool,
    stats: Stats,
    domain_tallies: moka::sync::Cache<String, Arc<Tally>>,
    targets: moka::sync::Cache<String, Arc<Tally>>,
    /// Deliveries (body hash) → their first deferral: no delivery is deferred for longer
    /// than `shield_for`, so a sender that retries gets through in the end, whatever the
    /// shields do.
    deferrals: moka::sync::Cache<u64, Instant>,
    /// Wakes the housekeeping task for a quarantine pass (a held delivery that no shield
    /// covers goes out at once).
    release_soon: tokio::sync::Notify,
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

impl Shield {
    /// Loads the policies; fails (naming file and key) when they are invalid. `sealer`
    /// seals held deliveries; `instance` carries the shield's reads of the instance and
    /// the quarantine's replays; `fetcher` replaces the HTTP key fetcher (tests).
    pub fn new(
        setup: ShieldSetup,
        durable: Arc<dyn ShieldStore>,
        sealer: Arc<crate::expiry::seal::Sealer>,
        instance: crate::instance::InstanceClient,
        fetcher: Option<Arc<dyn KeyFetcher>>,
    ) -> Result<Arc<Shield>, ShieldError> {
        let cfg = setup.shield.clone();
        cfg.validate(setup.egress_over_tor).map_err(|(key, e)| ShieldError::Config(format!("{key}: {e}")))?;
        let policy = policy::load_dir(&setup.policies)?;
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
                    egress.then_some(setup.egress_listen),
                    setup.egress_auth.as_deref().filter(|_| egress),
                    cfg.key_fetch_allow_private,
                    cfg.key_fetch_timeout.get(),
                )?)
            }
        };
        let longest_shield = policy.wave.max_shield.max(policy.wave.window).max(Duration::from_secs(60));
        let reader = InstanceReader::new(instance.clone());
        // Nodes of one cluster name a limit key alike (in Redis): a hash keyed by the key file.
        let hasher = if setup.clustered {
            KeyHasher::keyed(sealer.store_key().derive_secret(crate::cluster::node::HASH_LABEL))
        } else {
            KeyHasher::default()
        };
        let rate = |text: &str| policy::parse_rate(text).map_err(ShieldError::Config);
        let budget = FetchBudget::new(rate(&cfg.key_fetches_per_client)?, rate(&cfg.key_fetches_per_host)?);
        let domains = setup.domains();
        if policy.wave.enabled && !domains.configured() {
            tracing::warn!(
                "the wave shield counts nothing: set local_domain (and web_domain, alternate_domains as in \
                 Mastodon's .env) so pavise knows which deliveries are the instance's"
            );
        }
        Ok(Arc::new(Shield {
            hasher,
            verifier: Verifier::new(fetcher, cfg.key_cache_entries, cfg.key_cache_ttl.get()).with_budget(budget),
            blocks: DomainBlocks::new(
                cfg.domain_blocks,
                cfg.domain_blocks_token_file.clone(),
                cfg.domain_blocks_refresh.get(),
            ),
            domains,
            seen_signatures: moka::sync::Cache::builder().max_capacity(100_000).time_to_live(REPLAY_MEMORY).build(),
            waves: WaveDetector::new(cfg.wave_accounts, sender_memory(&policy)),
            familiar: Familiarity::new(durable.clone(), cfg.familiar_cache),
            follows: Arc::new(Follows::new(reader.clone(), cfg.wave_accounts, longest_shield)),
            accounts: LocalAccounts::new(reader.clone(), 10_000),
            reader,
            quarantine: Quarantine::new(
                durable.clone(),
                instance,
                sealer,
                HoldLimits {
                    max_held: cfg.max_held,
                    max_bytes: cfg.max_held_bytes.0,
                    per_domain: cfg.max_held_per_domain,
                    per_actor: cfg.max_held_per_actor,
                },
            ),
            durable,
            forgot_legacy_follows: AtomicBool::new(false),
            stats: Stats::default(),
            domain_tallies: moka::sync::Cache::new(10_000),
            targets: moka::sync::Cache::new(10_000),
            deferrals: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(
                    (policy.wave.shield_for.max(Duration::from_secs(60)) * 4).max(decision::WAVE_ACTOR_DEFERRAL),
                )
                .build(),
            release_soon: tokio::sync::Notify::new(),
            active: RwLock::new(Arc::new(Active::new(policy, cfg.max_keys))),
            policies_dir: setup.policies,
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
        rules: Rules,
    ) -> Vec<(usize, crate::cluster::redis::SharedLimit)> {
        if self.shared.get().is_none() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for &i in &active.by_route[class.index()] {
            let Some(limiter) = active.limiters.get(i) else { continue };
            if !rules.runs(limiter.rule.key) || !limiter.rule.matches(method, path) {
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

    /// The members shielded now: this node's, and in a cluster every node's.
    async fn shielded_everywhere(&self, now: Instant) -> Vec<String> {
        let mut shielded = self.waves.shielded(now);
        if let Some(shared) = self.shared.get()
            && let Some(more) = shared.shielded_accounts().await
        {
            shielded.extend(more);
            shielded.sort();
            shielded.dedup();
        }
        shielded
    }

    /// The limiter key of one rule's kind for this request.
    fn limit_key(&self, kind: KeyKind, headers: &http::HeaderMap, pseudonym: IpAddr, signer: Option<&Verdict>) -> u64 {
        let client = || self.hasher.hash(ns::CLIENT, pseudonym);
        match kind {
            KeyKind::Global => 0,
            KeyKind::Client => client(),
            // The header form only: a token in the query or body is the client's.
            KeyKind::Token => match crate::auth::bearer_token_in_head(headers, None) {
                Some(token) => self.hasher.hash(ns::TOKEN, token.expose()),
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

    /// Runs the `[[limit]]` rules of the request's class that `rules` selects. `signer` is
    /// the verification verdict for federation routes (None elsewhere, or not yet).
    fn check_limits(
        &self,
        active: &Active,
        class: RouteClass,
        (method, path, headers): (&Method, &str, &http::HeaderMap),
        pseudonym: IpAddr,
        signer: Option<&Verdict>,
        rules: Rules,
    ) -> Result<(), Denied> {
        for &i in &active.by_route[class.index()] {
            let Some(limiter) = active.limiters.get(i) else { continue };
            let rule = &limiter.rule;
            if !rules.runs(rule.key) || !rule.matches(method, path) {
                continue;
            }
            limiter.check(self.limit_key(rule.key, headers, pseudonym, signer))?;
        }
        Ok(())
    }

    fn count(&self, verdict: Verdict) -> Verdict {
        match &verdict {
            Verdict::Verified { .. } => self.stats.verified.fetch_add(1, Relaxed),
            Verdict::Unverified(why) => self.stats.unverified[why.index()].fetch_add(1, Relaxed),
        };
        verdict
    }

    /// One housekeeping pass: trim limiters, write first-seen records, re-read the
    /// instance's domain blocks when due, work the quarantine.
    pub async fn housekeep(&self) {
        let active = self.active();
        for l in &active.limiters {
            l.housekeep();
        }
        self.verifier.budget().housekeep();
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
        if active.policy.wave.enabled && self.blocks.due(std::time::SystemTime::now()) {
            self.blocks.refresh(&self.reader, self.domains.primary()).await;
        }
        self.quarantine_pass().await;
    }

    /// Runs [`Shield::housekeep`] every `housekeeping` until `shutdown`, and a quarantine
    /// pass whenever a held delivery can go out at once.
    pub async fn run_housekeeping(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(self.cfg.housekeeping.get().max(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => self.housekeep().await,
                _ = self.release_soon.notified() => self.quarantine_pass().await,
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

    /// `Ok(detail)` when the shield can do what it promises, `Err(why)` when not.
    /// Degraded, never not-ready: without its domains or the instance's blocks the wave
    /// shield counts less (or nothing), but everything it passes is still safe to serve.
    fn readiness(&self) -> Readiness {
        if !self.active().policy.wave.enabled {
            return Readiness::Ready("wave detector off".into());
        }
        if !self.domains.configured() {
            return Readiness::Degraded(
                "local_domain is not set: the wave shield cannot tell the instance's deliveries and counts none".into(),
            );
        }
        match self.blocks.readiness() {
            Ok(blocks) => Readiness::Ready(format!("wave shield for {}; {blocks}", self.domains.names().join(", "))),
            Err(reason) => Readiness::Degraded(reason),
        }
    }
}
