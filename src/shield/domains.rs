//! Which deliveries the instance takes at all: addressed to one of its own domains, from a
//! domain it does not block.
//!
//! A delivery the instance would refuse must count for nothing, or the shield becomes a
//! weapon: deliveries signed for another instance (a hostile one relays what it received,
//! within the hour, mentioning *its* `alice`) would shield *our* `alice`, and a server the
//! admin suspended could still raise shields. So:
//!
//! - **The instance's domains come from the config, never from the request.** Rails
//!   answers 403 to any `Host` outside `LOCAL_DOMAIN`, `WEB_DOMAIN` and
//!   `ALTERNATE_DOMAINS` (`config/initializers/1_hosts.rb`, `config.hosts`: the host
//!   compared case-insensitively, any port). Pavise mirrors them as `local_domain`,
//!   `web_domain` and `alternate_domains`; a delivery whose `Host` is none of them is
//!   forwarded untouched (the instance refuses it) and counts toward nothing. Without
//!   `local_domain` nothing counts, and `/readyz` says so.
//! - **The instance's domain blocks are read from the instance**: suspended domains (and
//!   their subdomains, as `DomainBlock.rule_for` matches them) are refused by Mastodon's
//!   signature verification, so their deliveries count toward nothing. The list is read
//!   every `domain_blocks_refresh`, from `/api/v1/instance/domain_blocks` (public when the
//!   instance shows its blocks to everyone; obfuscated entries are matched by their
//!   SHA-256 digest) or from the admin API with a token (`admin:read:domain_blocks`).
//!   When it cannot be read, the last list read stays in force and `/readyz` and
//!   `/admin/shield` say why — never silently.

use std::{
    collections::HashSet,
    path::PathBuf,
    sync::RwLock,
    time::{Duration, SystemTime},
};

use serde::Deserialize;
use serde_json::Value;

use super::{
    ShieldError,
    instance::{Answer, InstanceReader},
    mention::LocalHosts,
};
use crate::proxy::OnBehalfOf;

/// The instance's own domains, as configured.
#[derive(Debug, Clone, Default)]
pub struct InstanceDomains {
    /// `Host` values Rails accepts: lower-cased, without a port.
    accepted: Vec<String>,
    /// The host names mention URLs are local on (Addressable-normalized).
    locals: LocalHosts,
    /// What the shield's own reads send as `Host`: `web_domain`, else `local_domain`.
    primary: Option<String>,
}

impl InstanceDomains {
    pub fn new(local_domain: Option<&str>, web_domain: Option<&str>, alternate: &[String]) -> InstanceDomains {
        let mut accepted: Vec<String> = local_domain
            .into_iter()
            .chain(web_domain)
            .chain(alternate.iter().map(String::as_str))
            .map(|d| without_port(d.trim()).to_ascii_lowercase())
            .filter(|d| !d.is_empty())
            .collect();
        accepted.dedup();
        InstanceDomains {
            locals: LocalHosts::new(accepted.iter().map(String::as_str)),
            primary: web_domain.or(local_domain).map(|d| d.trim().to_ascii_lowercase()),
            accepted,
        }
    }

    /// Whether Rails would serve a request with this `Host` (or `:authority`).
    pub fn accepts_host(&self, host: &str) -> bool {
        let bare = without_port(host.trim());
        self.accepted.iter().any(|d| d.eq_ignore_ascii_case(bare))
    }

    /// The hosts a mention's URL is local on.
    pub fn locals(&self) -> &LocalHosts {
        &self.locals
    }

    /// The `Host` for the shield's own reads of the instance.
    pub fn primary(&self) -> Option<&str> {
        self.primary.as_deref()
    }

    pub fn configured(&self) -> bool {
        !self.accepted.is_empty()
    }

    pub fn names(&self) -> &[String] {
        &self.accepted
    }
}

/// `host:port` or `[v6]:port` without the port (Rails compares hosts, any port).
fn without_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((h, port)) if !h.is_empty() && !h.ends_with(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            if h.starts_with('[') || !h.contains(':') { h } else { host }
        }
        _ => host,
    }
}

/// Where the instance's domain blocks are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlocksSource {
    /// `/api/v1/instance/domain_blocks`: needs the instance to show its blocks to everyone
    /// (Administration → Server settings → About → "Show domain blocks": to everyone).
    Public,
    /// `/api/v1/admin/domain_blocks` with the token in `domain_blocks_token_file`.
    Admin,
    /// Not read: suspended domains' deliveries count like any other (say so knowingly).
    Off,
}

/// What is known of the instance's domain blocks.
#[derive(Debug, Clone, Default)]
struct BlocksState {
    /// Suspended domains, lower-cased (from unobfuscated entries).
    domains: HashSet<String>,
    /// SHA-256 digests (hex) of suspended domains (every entry carries one).
    digests: HashSet<String>,
    last_read: Option<SystemTime>,
    error: Option<String>,
}

/// The instance's suspended domains, read from the instance.
pub struct DomainBlocks {
    source: BlocksSource,
    token_file: Option<PathBuf>,
    refresh: Duration,
    state: RwLock<BlocksState>,
}

/// Admin API pages read at most (200 blocks each).
const MAX_PAGES: usize = 100;

impl DomainBlocks {
    pub fn new(source: BlocksSource, token_file: Option<PathBuf>, refresh: Duration) -> DomainBlocks {
        DomainBlocks { source, token_file, refresh, state: RwLock::default() }
    }

    pub fn source(&self) -> BlocksSource {
        self.source
    }

    pub fn refresh_every(&self) -> Duration {
        self.refresh
    }

    /// Whether the instance suspends `domain` (or a domain it is under).
    pub fn is_blocked(&self, domain: &str) -> bool {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        if state.domains.is_empty() && state.digests.is_empty() {
            return false;
        }
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let mut rest = domain.as_str();
        loop {
            if state.domains.contains(rest) || state.digests.contains(&sha256_hex(rest)) {
                return true;
            }
            match rest.split_once('.') {
                Some((_, parent)) if !parent.is_empty() => rest = parent,
                _ => return false,
            }
        }
    }

    /// Whether a read is due (never read, or `refresh` since the last attempt).
    pub fn due(&self, now: SystemTime) -> bool {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        self.source != BlocksSource::Off
            && state.last_read.is_none_or(|t| now.duration_since(t).unwrap_or_default() >= self.refresh)
    }

    /// Reads the list from the instance; on failure the last list stays and the error is kept.
    pub async fn refresh(&self, reader: &InstanceReader, host: Option<&str>) {
        if self.source == BlocksSource::Off {
            return;
        }
        let result = match host {
            None => Err(ShieldError::Instance("local_domain is not set: the instance cannot be asked".into())),
            Some(host) => self.read(reader, host).await,
        };
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        state.last_read = Some(SystemTime::now());
        match result {
            Ok((domains, digests)) => {
                if state.error.is_some() || state.domains.len() + state.digests.len() != domains.len() + digests.len() {
                    tracing::info!(suspended = digests.len(), "read the instance's domain blocks");
                }
                state.domains = domains;
                state.digests = digests;
                state.error = None;
            }
            Err(e) => {
                let why = e.to_string();
                if state.error.as_deref() != Some(why.as_str()) {
                    tracing::error!(error = %why, "cannot read the instance's domain blocks; deliveries from suspended domains may count toward waves");
                }
                state.error = Some(why);
            }
        }
    }

    async fn read(
        &self,
        reader: &InstanceReader,
        host: &str,
    ) -> Result<(HashSet<String>, HashSet<String>), ShieldError> {
        let mut domains = HashSet::new();
        let mut digests = HashSet::new();
        let (token, mut next) = match self.source {
            BlocksSource::Admin => {
                let file = self.token_file.as_ref().ok_or_else(|| {
                    ShieldError::Instance("domain_blocks = \"admin\" needs shield.domain_blocks_token_file".into())
                })?;
                let token = std::fs::read_to_string(file)
                    .map_err(|e| ShieldError::Instance(format!("reading {}: {e}", file.display())))?;
                (Some(token.trim().to_owned()), Some("/api/v1/admin/domain_blocks?limit=200".to_owned()))
            }
            _ => (None, Some("/api/v1/instance/domain_blocks".to_owned())),
        };
        let mut pages = 0;
        while let Some(path) = next.take() {
            pages += 1;
            if pages > MAX_PAGES {
                break;
            }
            let (answer, link) =
                reader.get_with(&path, host, "application/json", token.as_deref(), OnBehalfOf::Housekeeping).await?;
            let list = match answer {
                Answer::Json(Value::Array(list)) => list,
                Answer::Json(_) => return Err(ShieldError::Instance(format!("{path}: not a list of domain blocks"))),
                Answer::Status(404) if self.source == BlocksSource::Public => {
                    return Err(ShieldError::Instance(
                        "the instance does not show its domain blocks (404): set \"Show domain blocks\" to \
                         everyone, or use domain_blocks = \"admin\" with a token"
                            .into(),
                    ));
                }
                Answer::Status(s) => return Err(ShieldError::Instance(format!("{path}: the instance answered {s}"))),
            };
            for entry in &list {
                if entry.get("severity").and_then(Value::as_str) != Some("suspend") {
                    continue;
                }
                let domain = entry.get("domain").and_then(Value::as_str).unwrap_or("");
                // An obfuscated entry (`exa*ple.com`) is matched by its digest only.
                if !domain.contains('*') && !domain.is_empty() {
                    domains.insert(domain.to_ascii_lowercase());
                }
                match entry.get("digest").and_then(Value::as_str) {
                    Some(d) => digests.insert(d.to_ascii_lowercase()),
                    None if !domain.is_empty() && !domain.contains('*') => digests.insert(sha256_hex(domain)),
                    None => false,
                };
            }
            next = link.as_deref().and_then(next_link);
        }
        Ok((domains, digests))
    }

    /// `Ok(detail)` or `Err(why)`, for `/readyz`.
    pub fn readiness(&self) -> Result<String, String> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        match (self.source, &state.error, state.last_read) {
            (BlocksSource::Off, _, _) => Ok("instance domain blocks not read (domain_blocks = \"off\")".into()),
            (_, Some(e), _) => Err(format!("cannot read the instance's domain blocks: {e}")),
            (_, None, None) => Err("the instance's domain blocks are not read yet".into()),
            (_, None, Some(_)) => Ok(format!("{} suspended domains known", state.digests.len())),
        }
    }

    /// For `/admin/shield`.
    pub fn report(&self) -> Value {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        serde_json::json!({
            "source": match self.source { BlocksSource::Public => "public", BlocksSource::Admin => "admin", BlocksSource::Off => "off" },
            "suspended": state.digests.len(),
            "read_secs_ago": state.last_read.and_then(|t| SystemTime::now().duration_since(t).ok()).map(|d| d.as_secs()),
            "error": state.error,
        })
    }
}

/// The `rel="next"` target of a `Link` header, as a path on the instance.
fn next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        if !params.split(';').any(|p| p.trim().replace(' ', "") == "rel=\"next\"") {
            return None;
        }
        let uri: http::Uri = target.trim().trim_start_matches('<').trim_end_matches('>').parse().ok()?;
        Some(uri.path_and_query()?.as_str().to_owned())
    })
}

fn sha256_hex(s: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, s.as_bytes()).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_configured_domains_are_the_instance() {
        let d = InstanceDomains::new(Some("Social.Example"), Some("web.example"), &["alt.example".into()]);
        for ok in ["social.example", "SOCIAL.example:443", "web.example", "alt.example:8080"] {
            assert!(d.accepts_host(ok), "{ok}");
        }
        // Rails compares the host exactly: no trailing dot, no suffix, nothing else.
        for no in ["social.example.", "evil.example", "social.example.evil.example", "", "127.0.0.1"] {
            assert!(!d.accepts_host(no), "{no}");
        }
        assert_eq!(d.primary(), Some("web.example"));
        assert!(d.locals().contains("ALT.example."));
        assert!(!InstanceDomains::new(None, None, &[]).configured());
    }

    #[test]
    fn suspended_domains_and_their_subdomains_are_blocked() {
        let b = DomainBlocks::new(BlocksSource::Public, None, Duration::from_secs(60));
        {
            let mut s = b.state.write().unwrap();
            s.domains.insert("evil.example".into());
            s.digests.insert(sha256_hex("evil.example"));
            // An obfuscated entry: known by its digest only.
            s.digests.insert(sha256_hex("hidden.example"));
        }
        assert!(b.is_blocked("evil.example") && b.is_blocked("a.b.EVIL.example") && b.is_blocked("hidden.example"));
        assert!(!b.is_blocked("notevil.example") && !b.is_blocked("example") && !b.is_blocked("good.example"));
    }

    #[test]
    fn pagination_links() {
        let link = r#"<https://social.example/api/v1/admin/domain_blocks?limit=200&max_id=7>; rel="next", <https://social.example/api/v1/admin/domain_blocks?min_id=9>; rel="prev""#;
        assert_eq!(next_link(link).as_deref(), Some("/api/v1/admin/domain_blocks?limit=200&max_id=7"));
        assert_eq!(next_link(r#"<https://x/y>; rel="prev""#), None);
    }
}
