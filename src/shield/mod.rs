//! The shield: keyed rate limits and the harassment-wave defence, decided before any
//! stage spends work on a request body.
//!
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
//! - [`instance`]: the shield's own reads of the instance;
//! - [`inbox`]: the inbox path, phase by phase; [`release`]: the quarantine's releases.
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
pub mod budget;
pub mod document;
pub mod domains;
pub mod familiar;
pub mod follows;
mod inbox;
pub mod instance;
pub mod keys;
pub mod limiter;
pub mod mention;
pub mod policy;
pub mod quarantine;
mod release;
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
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, header};
use serde::Deserialize;

use self::{
    accounts::LocalAccounts,
    budget::FetchBudget,
    domains::{BlocksSource, DomainBlocks, InstanceDomains},
    familiar::Familiarity,
    follows::Follows,
    instance::InstanceReader,
    keys::KeyFetcher,
    limiter::{Denied, KeyHasher, Limiter},
    mention::InboxPath,
    policy::{KeyKind, ShieldPolicy, WaveAction},
    quarantine::{HoldLimits, Quarantine, Replay},
    signature::{Rejection, Verdict, Verifier},
    wave::{WaveDetector, WaveParams},
};
use crate::{
    admin::{AdminHandler, Readiness, ReadinessCheck, Reload, json},
    config::Config,
    metrics::MetricsSource,
    proxy::{Flow, ProxyError, Request, RequestCtx, Response, RouteClass, Stage, StageFuture, error::json_error},
    store::{HeldState, ShieldStore, now_ms},
    units::{Size, Span},
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
    #[error("shield config: {0}")]
    Config(String),
    #[error("reading the instance: {0}")]
    Instance(String),
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
    /// Key fetches one connecting client may cause (`"30/min"`; the count is the burst).
    pub key_fetches_per_client: String,
    /// Key fetches sent to one keyId host.
    pub key_fetches_per_host: String,
    /// Local accounts with a live wave window at once (memory cap).
    pub wave_accounts: u64,
    /// First-seen records kept in memory in front of the store.
    pub familiar_cache: u64,
    /// When a shield goes up over a member, read the member's public `following`
    /// collection from the instance, so accounts they follow keep reaching them.
    pub learn_following: bool,
    /// Held deliveries (sealed, in the store) at most; past it, deferred with 429.
    pub max_held: usize,
    /// Bytes of held deliveries at most.
    pub max_held_bytes: Size,
    /// Held deliveries per verified remote domain (and per client, for unverified ones).
    pub max_held_per_domain: usize,
    /// Held deliveries per verified remote actor.
    pub max_held_per_actor: usize,
    /// Where the instance's domain blocks are read: public | admin | off.
    pub domain_blocks: BlocksSource,
    /// A token with `admin:read:domain_blocks`, for `domain_blocks = "admin"`.
    pub domain_blocks_token_file: Option<PathBuf>,
    pub domain_blocks_refresh: Span,
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
            key_fetches_per_client: "30/min".into(),
            key_fetches_per_host: "60/min".into(),
            wave_accounts: 10_000,
            familiar_cache: 100_000,
            learn_following: true,
            max_held: 1000,
            max_held_bytes: Size(64 << 20),
            max_held_per_domain: 50,
            max_held_per_actor: 5,
            domain_blocks: BlocksSource::Public,
            domain_blocks_token_file: None,
            domain_blocks_refresh: Span::secs(600),
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
        for (key, rate) in [
            ("shield.key_fetches_per_client", &self.key_fetches_per_client),
            ("shield.key_fetches_per_host", &self.key_fetches_per_host),
        ] {
            policy::parse_rate(rate).map_err(|e| (key, e))?;
        }
        if self.max_held_per_domain == 0 || self.max_held_per_actor == 0 {
            return Err((
                "shield.max_held_per_domain",
                "max_held_per_domain and max_held_per_actor must be at least 1".into(),
            ));
        }
        if self.domain_blocks == BlocksSource::Admin && self.domain_blocks_token_file.is_none() {
            return Err((
                "shield.domain_blocks_token_file",
                "domain_blocks = \"admin\" reads the instance's admin API: give a token with the \
                        admin:read:domain_blocks scope in a file"
                    .into(),
            ));
        }
        if self.domain_blocks_refresh.get() < Duration::from_secs(1) {
            return Err(("shield.domain_blocks_refresh", "must be at least 1s".into()));
        }
        Ok(())
    }
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
    /// Loads the policies; fails (naming file and key) when they are invalid.
    pub fn new(
        config: &Config,
        durable: Arc<dyn ShieldStore>,
        fetcher: Option<Arc<dyn KeyFetcher>>,
    ) -> Result<Arc<Shield>, ShieldError> {
        let cfg = config.file.shield.clone();
        cfg.validate(config.file.egress.mode).map_err(|(key, e)| ShieldError::Config(format!("{key}: {e}")))?;
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
        let longest_shield = policy.wave.max_shield.max(policy.wave.window).max(Duration::from_secs(60));
        let reader = InstanceReader::new(config.upstream.authority.clone());
        // Nodes of one cluster name a limit key alike (in Redis): a hash keyed by the key file.
        let hasher = if config.file.cluster.enabled() {
            KeyHasher::keyed(sealer.store_key().derive_secret(crate::cluster::node::HASH_LABEL))
        } else {
            KeyHasher::default()
        };
        let rate = |text: &str| policy::parse_rate(text).map_err(ShieldError::Config);
        let budget = FetchBudget::new(rate(&cfg.key_fetches_per_client)?, rate(&cfg.key_fetches_per_host)?);
        let domains = InstanceDomains::new(
            config.file.local_domain.as_deref(),
            config.file.web_domain.as_deref(),
            &config.file.alternate_domains,
        );
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
                config.upstream.authority.clone(),
                Arc::new(sealer),
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
                .time_to_live((policy.wave.shield_for.max(Duration::from_secs(60)) * 4).max(inbox::WAVE_ACTOR_DEFERRAL))
                .build(),
            release_soon: tokio::sync::Notify::new(),
            active: RwLock::new(Arc::new(Active::new(policy, cfg.max_keys))),
            policies_dir: config.file.policies.clone(),
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
                    "at_most_secs": r.at_most.as_secs(),
                    "raised_secs_ago": r.raised_ago.as_secs(),
                    "why": {
                        "raised_by_actors": r.raised_by,
                        "actors_in_window": r.actors_in_window,
                        "deferred_in_window": r.deferred_in_window,
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
        let domains = tallies(&self.domain_tallies);
        let held: Vec<serde_json::Value> = self
            .quarantine
            .snapshot()
            .iter()
            .map(|h| {
                serde_json::json!({
                    "id": h.id.to_string(), "domain": h.domain, "targets": h.targets, "received": h.received,
                    "date": h.date, "bytes": h.bytes, "verified": h.verified || h.actor.is_some(),
                    "state": if h.state == HeldState::Held { "held" } else { "kept" },
                })
            })
            .collect();
        let (held_count, held_bytes) = self.quarantine.usage();
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
            "instance": {
                "domains": self.domains.names(),
                "ready": self.readiness().is_ready(),
                "readiness": self.readiness().detail(),
                "domain_blocks": self.blocks.report(),
            },
            "targets": tallies(&self.targets).iter().map(row).collect::<Vec<_>>(),
            "domains": domains.iter().map(row).collect::<Vec<_>>(),
            "top_offending_domains": domains.iter().take(10).map(row).collect::<Vec<_>>(),
            "held": held,
            "quarantine": {
                "held": held_count, "bytes": held_bytes,
                "max_held": self.cfg.max_held, "max_held_bytes": self.cfg.max_held_bytes.0,
                "max_held_per_domain": self.cfg.max_held_per_domain, "max_held_per_actor": self.cfg.max_held_per_actor,
            },
            "audit": audit,
            "limits": active.limiters.iter().map(|l| serde_json::json!({
                "name": l.rule.name, "route": l.rule.route.config_name(), "key": l.rule.key.name(),
                "rate": l.rule.rate_text(), "burst": l.rule.burst, "keys": l.keys(),
            })).collect::<Vec<_>>(),
            "totals": {
                "passed": self.stats.passed.load(Relaxed),
                "limited": self.stats.limited.load(Relaxed),
                "deferred": self.stats.deferred.load(Relaxed),
                "passed_after_deferral": self.stats.deferred_enough.load(Relaxed),
                "held": self.stats.held.load(Relaxed),
                "held_unverified": self.stats.held_unverified.load(Relaxed),
                "rejected": self.stats.rejected.load(Relaxed),
                "released": self.stats.released.load(Relaxed),
                "released_at_window": self.stats.released_at_window.load(Relaxed),
                "refused_on_release": self.stats.refused_on_release.load(Relaxed),
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

/// Set on a forwarded, verified delivery: if the instance accepts it (2xx), its sender
/// was seen delivering (familiarity).
#[derive(Clone)]
struct AcceptedFrom(String);

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
                Some(shield.check_limits(&active, class, parts, ctx.pseudonym, None, Rules::All).map(|()| {
                    // `[cluster]`: the rules this request matched, for one shared decision.
                    shield.shared_limits(&active, class, parts, ctx.pseudonym, None, Rules::All)
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
                    let parts = (req.method(), ctx.route.path.as_str(), req.headers());
                    if let Err(denied) = shield.check_limits(&active, class, parts, ctx.pseudonym, None, Rules::Local) {
                        shield.stats.limited.fetch_add(1, Relaxed);
                        return Ok(Flow::Respond(too_many(&denied)));
                    }
                    let (parts, body) = req.into_parts();
                    let verdict = shield.verify_fetch(ctx, &parts).await;
                    let request_parts = (&parts.method, ctx.route.path.as_str(), &parts.headers);
                    let checked = match shield.check_limits(
                        &active,
                        class,
                        request_parts,
                        ctx.pseudonym,
                        Some(&verdict),
                        Rules::Signer,
                    ) {
                        // `[cluster]`: every rule this request matched, decided once across the nodes.
                        Ok(()) => {
                            let limits = shield.shared_limits(
                                &active,
                                class,
                                request_parts,
                                ctx.pseudonym,
                                Some(&verdict),
                                Rules::All,
                            );
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

    fn on_response<'a>(
        &'a self,
        ctx: &'a mut RequestCtx,
        resp: Response,
    ) -> StageFuture<'a, Result<Response, ProxyError>> {
        let accepted = ctx.extensions.remove::<AcceptedFrom>();
        Box::pin(async move {
            if let Some(AcceptedFrom(actor)) = accepted
                && resp.status().is_success()
            {
                let after = self.0.active().policy.wave.familiar_after;
                self.0.familiar.accepted(&actor, now_ms(), after).await;
            }
            Ok(resp)
        })
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
                    if let Err(e) = self.0.quarantine.load().await {
                        return json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
                    }
                    match *action {
                        "release" => match self.0.quarantine.release(id, "released by the admin").await {
                            Ok(Some(Replay::Delivered(s))) => {
                                json(StatusCode::OK, serde_json::json!({ "released": true, "instance_status": s }))
                            }
                            Ok(Some(Replay::Refused(s))) => json(
                                StatusCode::CONFLICT,
                                serde_json::json!({ "released": false, "instance_status": s }),
                            ),
                            Ok(Some(Replay::Later(why))) => {
                                json(StatusCode::BAD_GATEWAY, serde_json::json!({ "released": false, "error": why }))
                            }
                            Ok(None) => json_error(StatusCode::NOT_FOUND, "no such held delivery"),
                            Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
                        },
                        "drop" => match self.0.quarantine.purge(id, "dropped", "dropped by the admin; purged").await {
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

/// The shield's line in `/readyz`: not ready when the wave shield cannot tell the
/// instance's deliveries (no `local_domain`) or cannot read the instance's domain blocks.
pub struct ShieldReadiness(pub Arc<Shield>);

impl ReadinessCheck for ShieldReadiness {
    fn name(&self) -> &'static str {
        "shield"
    }

    fn check(&self) -> StageFuture<'_, Readiness> {
        Box::pin(async move { self.0.readiness() })
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
            ("held_unverified", &s.held_unverified),
            ("passed_after_deferral", &s.deferred_enough),
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
            "# HELP pavise_shield_quarantine_total Held deliveries released to the instance (also: before their signature window closed, still shielded), refused by it, kept for the admin, or purged after being kept.\n",
        );
        out.push_str("# TYPE pavise_shield_quarantine_total counter\n");
        for (outcome, v) in [
            ("released", &s.released),
            ("released_at_window", &s.released_at_window),
            ("refused", &s.refused_on_release),
            ("kept", &s.kept),
            ("expired", &s.expired),
        ] {
            let _ = writeln!(out, "pavise_shield_quarantine_total{{outcome=\"{outcome}\"}} {}", v.load(Relaxed));
        }
        let (held, bytes) = self.quarantine.usage();
        out.push_str("# HELP pavise_shield_held Deliveries held in the quarantine now, and their bytes.\n");
        out.push_str("# TYPE pavise_shield_held gauge\n");
        let _ = writeln!(out, "pavise_shield_held {held}");
        let _ = writeln!(out, "pavise_shield_held_bytes {bytes}");
        out.push_str("# HELP pavise_shield_ready Whether the wave shield can tell the instance's deliveries and knows its domain blocks.\n");
        out.push_str("# TYPE pavise_shield_ready gauge\n");
        let _ = writeln!(out, "pavise_shield_ready {}", u8::from(self.readiness().is_ready()));
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
            "  one shield lasts {} at most; one domain's actors count in full up to {} (a quarter each beyond)",
            Span(w.max_shield),
            w.per_domain
        );
        let _ = writeln!(
            out,
            "  familiar after {} (mail to members accepted twice, {} apart); hellthread above {} mentions; held deliveries released within {} of their Date",
            Span(w.familiar_after),
            Span(w.familiar_after / 2),
            w.hellthread,
            Span(w.release_within)
        );
        let domains = InstanceDomains::new(
            config.file.local_domain.as_deref(),
            config.file.web_domain.as_deref(),
            &config.file.alternate_domains,
        );
        if domains.configured() {
            let _ = writeln!(out, "  counts deliveries addressed to {} only", domains.names().join(", "));
        } else {
            let _ = writeln!(
                out,
                "  WARNING: local_domain is not set: the wave shield counts nothing (set local_domain, web_domain, \
                 alternate_domains as in Mastodon's .env); /readyz reports it"
            );
        }
        let _ = writeln!(
            out,
            "  the instance's domain blocks: {}",
            match config.file.shield.domain_blocks {
                BlocksSource::Public =>
                    "read from /api/v1/instance/domain_blocks (the instance must show its blocks to everyone)",
                BlocksSource::Admin => "read from the admin API with shield.domain_blocks_token_file",
                BlocksSource::Off => "NOT read (domain_blocks = \"off\"): suspended domains count like any other",
            }
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
    let _ = writeln!(
        out,
        "  key fetches: {} per client, {} per keyId host; held at most {} deliveries, {}, {} per domain, {} per actor",
        config.file.shield.key_fetches_per_client,
        config.file.shield.key_fetches_per_host,
        config.file.shield.max_held,
        config.file.shield.max_held_bytes,
        config.file.shield.max_held_per_domain,
        config.file.shield.max_held_per_actor
    );
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
