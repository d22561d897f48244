//! `[shield]`: the machinery (the rules are in `policies/`), validated beside its struct;
//! and [`ShieldSetup`], everything the shield is built from.

use std::{fmt::Write as _, net::SocketAddr, path::PathBuf, time::Duration};

use http::Method;
use serde::Deserialize;

use super::{ShieldError, domains::BlocksSource, policy::WaveAction};
use crate::units::{Size, Span};

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
    /// `egress_over_tor`: whether `egress.mode = "tor"`.
    pub fn validate(&self, egress_over_tor: bool) -> Result<(), (&'static str, String)> {
        if self.key_fetch == KeyFetchMode::Direct && egress_over_tor {
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
            super::policy::parse_rate(rate).map_err(|e| (key, e))?;
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

/// What the shield is built from: its own section, and the few facts it needs from the
/// rest of the config (the composition root gathers them, so the shield never reads the
/// whole config).
#[derive(Debug, Clone)]
pub struct ShieldSetup {
    pub shield: ShieldConfig,
    /// The policy directory: `[[limit]]` and `[wave]`.
    pub policies: PathBuf,
    /// Mastodon's `LOCAL_DOMAIN`, `WEB_DOMAIN` and `ALTERNATE_DOMAINS`: which deliveries
    /// are the instance's.
    pub local_domain: Option<String>,
    pub web_domain: Option<String>,
    pub alternate_domains: Vec<String>,
    /// The egress proxy key fetches go through (`egress.listen`), and its credentials.
    pub egress_listen: SocketAddr,
    pub egress_auth: Option<String>,
    /// `egress.mode = "tor"`: direct key fetches would reveal what Tor hides.
    pub egress_over_tor: bool,
    /// `[cluster]` is on: limit keys are hashed alike on every node (keyed by the shared
    /// key file), so the nodes name one budget alike in Redis.
    pub clustered: bool,
}

impl ShieldSetup {
    pub(super) fn domains(&self) -> super::domains::InstanceDomains {
        super::domains::InstanceDomains::new(
            self.local_domain.as_deref(),
            self.web_domain.as_deref(),
            &self.alternate_domains,
        )
    }
}

/// `pavise check`'s section: what the limit and wave policies will do.
pub fn check_summary(setup: &ShieldSetup) -> Result<String, ShieldError> {
    let policy = super::policy::load_dir(&setup.policies)?;
    let shield = &setup.shield;
    let mut out = String::new();
    if !shield.enabled {
        let _ = writeln!(out, "shield: OFF ([shield] enabled = false)");
        return Ok(out);
    }
    let _ = writeln!(out, "shield: {} limit rule(s) from {}", policy.limits.len(), setup.policies.display());
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
        let domains = setup.domains();
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
            match shield.domain_blocks {
                BlocksSource::Public =>
                    "read from /api/v1/instance/domain_blocks (the instance must show its blocks to everyone)",
                BlocksSource::Admin => "read from the admin API with shield.domain_blocks_token_file",
                BlocksSource::Off => "NOT read (domain_blocks = \"off\"): suspended domains count like any other",
            }
        );
    } else {
        let _ = writeln!(out, "  wave detector: off (no [wave] section)");
    }
    let fetch = match shield.key_fetch {
        KeyFetchMode::Egress => format!(
            "from their owners through the egress proxy {}{}",
            setup.egress_listen,
            if setup.egress_auth.is_some() { " (with its proxy credentials)" } else { "" }
        ),
        KeyFetchMode::Direct => {
            "DIRECT from this server's address — development only (egress.mode = \"direct\")".to_owned()
        }
    };
    let _ = writeln!(out, "  actor keys fetched {fetch}; at most {} keys per limit", shield.max_keys);
    let _ = writeln!(
        out,
        "  key fetches: {} per client, {} per keyId host; held at most {} deliveries, {}, {} per domain, {} per actor",
        shield.key_fetches_per_client,
        shield.key_fetches_per_host,
        shield.max_held,
        shield.max_held_bytes,
        shield.max_held_per_domain,
        shield.max_held_per_actor
    );
    Ok(out)
}
