//! The shield's half of `policies/*.toml`: `[[limit]]` rules and the `[wave]` section.
//!
//! The format is DESIGN.md's contract; this file only adds optional keys. Every file in
//! the policy directory is read; top-level keys that belong to other features
//! (`[[expire]]`) are left to them, but inside `[[limit]]` and `[wave]` an unknown key is
//! an error naming the file and the key, so `distinct_sender = 5` never silently means
//! "the default".

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

use crate::{proxy::RouteClass, units::Span};

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy directory {path}: {source}")]
    ReadDir { path: PathBuf, source: std::io::Error },
    #[error("cannot read policy file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("policy file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("policy file {path}: `{key}`: {message}")]
    Invalid { path: PathBuf, key: String, message: String },
}

/// What a limit counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyKind {
    /// The client's pseudonym (what the instance sees as its IP).
    Client,
    /// The bearer token (hashed in memory; unauthenticated requests count per client).
    Token,
    /// The verified signing domain of a federation request (unverified → per client).
    RemoteDomain,
    /// The verified signing actor (unverified → per client).
    RemoteActor,
    /// One bucket for everybody.
    Global,
}

impl KeyKind {
    pub fn name(self) -> &'static str {
        match self {
            KeyKind::Client => "client",
            KeyKind::Token => "token",
            KeyKind::RemoteDomain => "remote-domain",
            KeyKind::RemoteActor => "remote-actor",
            KeyKind::Global => "global",
        }
    }
}

/// `[[limit]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimit {
    name: String,
    route: String,
    key: KeyKind,
    rate: String,
    burst: Option<u32>,
    /// Extension: only these methods count (default: every method).
    #[serde(default)]
    methods: Vec<String>,
    /// Extension: only paths starting with one of these count (default: the whole route
    /// class); a trailing `$` means this exact path (with or without `.json`).
    #[serde(default)]
    paths: Vec<String>,
}

/// A validated `[[limit]]` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitRule {
    pub name: String,
    pub route: RouteClass,
    pub key: KeyKind,
    /// Requests allowed per `per` on average.
    pub count: u32,
    pub per: Duration,
    /// How many may arrive at once (the GCRA burst); defaults to `count`.
    pub burst: u32,
    /// Upper-case method names; empty = all.
    pub methods: Vec<http::Method>,
    /// Path prefixes; empty = all paths of the route class.
    pub paths: Vec<String>,
    /// The file it came from, for `pavise check` and error messages.
    pub file: PathBuf,
}

impl LimitRule {
    /// Whether this rule counts a request of this method and path (class already matched).
    pub fn matches(&self, method: &http::Method, path: &str) -> bool {
        (self.methods.is_empty() || self.methods.contains(method))
            && (self.paths.is_empty() || self.paths.iter().any(|p| path_has_prefix(path, p)))
    }

    /// `"300/min"`, as written back for summaries.
    pub fn rate_text(&self) -> String {
        format!("{}/{}", self.count, Span(self.per))
    }
}

/// `/auth` matches `/auth` and `/auth/sign_in`, not `/authors`; `/auth$` only `/auth`
/// (and `/auth.json`).
fn path_has_prefix(path: &str, prefix: &str) -> bool {
    if let Some(exact) = prefix.strip_suffix('$') {
        return path == exact || path.strip_prefix(exact) == Some(".json");
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || rest.starts_with('.') || prefix.ends_with('/'),
        None => false,
    }
}

/// What a shielded account's unfamiliar senders get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WaveAction {
    /// 429 + Retry-After, or hold in quarantine for senders that retry briefly.
    Defer,
    /// 403: the sender gives up (Mastodon, GoToSocial, Misskey) — loses the delivery.
    Reject,
}

/// `[wave]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWave {
    window: Option<Span>,
    distinct_senders: Option<usize>,
    familiar_after: Option<Span>,
    shield_for: Option<Span>,
    action: Option<WaveAction>,
    /// Extension: a delivery mentioning more than this many accounts (local + remote) from
    /// an unfamiliar sender is deferred; 0 disables.
    hellthread: Option<usize>,
    /// Extension: User-Agent substrings (case-insensitive) of senders that give up within
    /// minutes (GoToSocial): their deliveries are held instead of answered 429.
    short_retry_agents: Option<Vec<String>>,
    /// Extension: a held delivery is released at most this long after its `Date` (Mastodon
    /// accepts a signature up to about 65 minutes after it); later it stays for the admin.
    release_within: Option<Span>,
    /// Extension: the `Retry-After` sent with a deferral (senders mostly ignore it).
    retry_after: Option<Span>,
    /// Extension: the longest one shield lasts, extensions included.
    max_shield: Option<Span>,
    /// Extension: actors of one domain that count in full toward a wave; each further one
    /// of that domain counts a quarter.
    per_domain: Option<usize>,
}

/// The validated `[wave]` section (defaults when a policy directory has none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WavePolicy {
    pub window: Duration,
    pub distinct_senders: usize,
    pub familiar_after: Duration,
    pub shield_for: Duration,
    pub action: WaveAction,
    pub hellthread: usize,
    /// Lower-cased.
    pub short_retry_agents: Vec<String>,
    pub release_within: Duration,
    pub retry_after: Duration,
    pub max_shield: Duration,
    pub per_domain: usize,
    /// Whether a `[wave]` section was present at all (no section: detector off).
    pub enabled: bool,
}

impl Default for WavePolicy {
    fn default() -> Self {
        WavePolicy {
            window: Duration::from_secs(600),
            distinct_senders: 20,
            familiar_after: Duration::from_secs(7 * 86_400),
            shield_for: Duration::from_secs(7200),
            action: WaveAction::Defer,
            hellthread: 20,
            short_retry_agents: vec!["gotosocial".into()],
            release_within: Duration::from_secs(55 * 60),
            retry_after: Duration::from_secs(300),
            max_shield: Duration::from_secs(12 * 3600),
            per_domain: 10,
            enabled: false,
        }
    }
}

impl WavePolicy {
    /// Whether a sender with this User-Agent gives up quickly (hold instead of 429).
    pub fn is_short_retry(&self, user_agent: &str) -> bool {
        let ua = user_agent.to_ascii_lowercase();
        self.short_retry_agents.iter().any(|s| ua.contains(s.as_str()))
    }
}

/// Everything the shield reads from the policy directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShieldPolicy {
    pub limits: Vec<LimitRule>,
    pub wave: WavePolicy,
    /// The files that contributed, for summaries.
    pub files: Vec<PathBuf>,
}

/// Reads every `*.toml` in `dir` (sorted by name). A missing directory means no policies.
pub fn load_dir(dir: &Path) -> Result<ShieldPolicy, PolicyError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ShieldPolicy::default()),
        Err(source) => return Err(PolicyError::ReadDir { path: dir.to_owned(), source }),
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    files.sort();
    let mut policy = ShieldPolicy::default();
    let mut wave_from: Option<PathBuf> = None;
    for path in files {
        let text = std::fs::read_to_string(&path).map_err(|source| PolicyError::Read { path: path.clone(), source })?;
        let (limits, wave) = parse_file(&path, &text)?;
        if !limits.is_empty() || wave.is_some() {
            policy.files.push(path.clone());
        }
        policy.limits.extend(limits);
        if let Some(wave) = wave {
            if let Some(first) = &wave_from {
                return Err(PolicyError::Invalid {
                    path,
                    key: "wave".into(),
                    message: format!("a [wave] section is already in {}; keep one", first.display()),
                });
            }
            policy.wave = wave;
            wave_from = Some(path);
        }
    }
    let mut names = std::collections::HashSet::new();
    for rule in &policy.limits {
        if !names.insert(rule.name.as_str()) {
            return Err(PolicyError::Invalid {
                path: rule.file.clone(),
                key: "limit.name".into(),
                message: format!("{:?} is used by two [[limit]] rules", rule.name),
            });
        }
    }
    Ok(policy)
}

/// Parses one file's `[[limit]]` and `[wave]`; other top-level keys are other features'.
pub fn parse_file(path: &Path, text: &str) -> Result<(Vec<LimitRule>, Option<WavePolicy>), PolicyError> {
    let parse_err = |message: String| PolicyError::Parse { path: path.to_owned(), message };
    let table: toml::Table = toml::from_str(text).map_err(|e| parse_err(e.to_string().trim_end().to_owned()))?;
    let mut limits = Vec::new();
    if let Some(value) = table.get("limit") {
        let raw: Vec<RawLimit> = value
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| parse_err(format!("[[limit]]: {}", e.to_string().trim_end())))?;
        for (i, raw) in raw.into_iter().enumerate() {
            limits.push(validate_limit(path, i, raw)?);
        }
    }
    let wave = match table.get("wave") {
        Some(value) => {
            let raw: RawWave = value
                .clone()
                .try_into()
                .map_err(|e: toml::de::Error| parse_err(format!("[wave]: {}", e.to_string().trim_end())))?;
            Some(validate_wave(path, raw)?)
        }
        None => None,
    };
    Ok((limits, wave))
}

fn validate_limit(path: &Path, index: usize, raw: RawLimit) -> Result<LimitRule, PolicyError> {
    let invalid = |key: &str, message: String| PolicyError::Invalid {
        path: path.to_owned(),
        key: format!("limit[{index}] ({}).{key}", raw.name),
        message,
    };
    if raw.name.trim().is_empty() {
        return Err(invalid("name", "must not be empty".into()));
    }
    let route = RouteClass::from_config_name(&raw.route).ok_or_else(|| {
        invalid(
            "route",
            format!("unknown route class {:?}; use one of {}", raw.route, RouteClass::CONFIG_NAMES.join(", ")),
        )
    })?;
    let (count, per) = parse_rate(&raw.rate).map_err(|m| invalid("rate", m))?;
    let burst = raw.burst.unwrap_or(count);
    if burst == 0 {
        return Err(invalid("burst", "must be at least 1".into()));
    }
    let mut methods = Vec::new();
    for m in &raw.methods {
        let method = http::Method::from_bytes(m.to_ascii_uppercase().as_bytes())
            .map_err(|_| invalid("methods", format!("{m:?} is not an HTTP method")))?;
        methods.push(method);
    }
    for p in &raw.paths {
        if !p.starts_with('/') {
            return Err(invalid("paths", format!("{p:?} must start with '/'")));
        }
    }
    if matches!(raw.key, KeyKind::RemoteDomain | KeyKind::RemoteActor)
        && !matches!(route, RouteClass::Inbox | RouteClass::ActivityPubObject)
    {
        return Err(invalid(
            "key",
            format!("{} only makes sense for signed federation routes (inbox, activitypub_object)", raw.key.name()),
        ));
    }
    Ok(LimitRule {
        name: raw.name.clone(),
        route,
        key: raw.key,
        count,
        per,
        burst,
        methods,
        paths: raw.paths.clone(),
        file: path.to_owned(),
    })
}

/// `"300/min"`, `"5/30m"`, `"10/s"`, `"1000/day"`.
pub fn parse_rate(text: &str) -> Result<(u32, Duration), String> {
    let hint = "write <count>/<period>, e.g. \"300/min\", \"5/30m\", \"10/s\"";
    let (n, period) = text.split_once('/').ok_or_else(|| format!("{text:?}: {hint}"))?;
    let count: u32 = n.trim().parse().map_err(|_| format!("{text:?}: {n:?} is not a count; {hint}"))?;
    if count == 0 {
        return Err(format!("{text:?}: the count must be at least 1"));
    }
    let period = period.trim();
    let per = match period {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        "d" | "day" => Duration::from_secs(86_400),
        other => other.parse::<Span>().map_err(|e| format!("{text:?}: {e}; {hint}"))?.get(),
    };
    if per.is_zero() {
        return Err(format!("{text:?}: the period must be longer than zero"));
    }
    Ok((count, per))
}

fn validate_wave(path: &Path, raw: RawWave) -> Result<WavePolicy, PolicyError> {
    let invalid = |key: &str, message: &str| PolicyError::Invalid {
        path: path.to_owned(),
        key: format!("wave.{key}"),
        message: message.into(),
    };
    let d = WavePolicy::default();
    let wave = WavePolicy {
        window: raw.window.map_or(d.window, Span::get),
        distinct_senders: raw.distinct_senders.unwrap_or(d.distinct_senders),
        familiar_after: raw.familiar_after.map_or(d.familiar_after, Span::get),
        shield_for: raw.shield_for.map_or(d.shield_for, Span::get),
        action: raw.action.unwrap_or(d.action),
        hellthread: raw.hellthread.unwrap_or(d.hellthread),
        short_retry_agents: raw
            .short_retry_agents
            .map(|v| v.into_iter().map(|s| s.to_ascii_lowercase()).collect())
            .unwrap_or(d.short_retry_agents),
        release_within: raw.release_within.map_or(d.release_within, Span::get),
        retry_after: raw.retry_after.map_or(d.retry_after, Span::get),
        max_shield: raw.max_shield.map_or(d.max_shield, Span::get),
        per_domain: raw.per_domain.unwrap_or_else(|| (raw.distinct_senders.unwrap_or(d.distinct_senders) / 2).max(1)),
        enabled: true,
    };
    if wave.window.is_zero() {
        return Err(invalid("window", "must be longer than zero"));
    }
    if wave.distinct_senders == 0 {
        return Err(invalid("distinct_senders", "must be at least 1"));
    }
    if wave.shield_for.is_zero() {
        return Err(invalid("shield_for", "must be longer than zero"));
    }
    if wave.release_within > Duration::from_secs(65 * 60) {
        return Err(invalid(
            "release_within",
            "longer than Mastodon's ~65-minute signature window: a later release would be refused (401)",
        ));
    }
    if wave.max_shield < wave.shield_for || wave.max_shield > super::wave::MAX_SHIELD_LIMIT {
        return Err(invalid("max_shield", "must be at least shield_for and at most 7d"));
    }
    if wave.per_domain == 0 {
        return Err(invalid("per_domain", "must be at least 1"));
    }
    if wave.short_retry_agents.iter().any(|s| s.trim().is_empty()) {
        return Err(invalid("short_retry_agents", "an empty entry would match every sender"));
    }
    Ok(wave)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<(Vec<LimitRule>, Option<WavePolicy>), PolicyError> {
        parse_file(Path::new("policies/test.toml"), text)
    }

    #[test]
    fn design_example_parses() {
        let (limits, wave) = parse(
            r#"
[[expire]]
name = "dm"
after = "7d"

[[limit]]
name  = "inbox-per-domain"
route = "inbox"
key   = "remote-domain"
rate  = "300/min"
burst = 100

[wave]
window           = "10m"
distinct_senders = 20
familiar_after   = "7d"
shield_for       = "2h"
action           = "defer"
"#,
        )
        .unwrap();
        assert_eq!(limits.len(), 1);
        let l = &limits[0];
        assert_eq!(
            (l.route, l.key, l.count, l.per, l.burst),
            (RouteClass::Inbox, KeyKind::RemoteDomain, 300, Duration::from_secs(60), 100)
        );
        let w = wave.unwrap();
        assert_eq!(w.distinct_senders, 20);
        assert_eq!(w.shield_for, Duration::from_secs(7200));
        assert!(w.enabled);
        assert!(w.is_short_retry("gotosocial/0.17.0 (+https://gts.example)"));
    }

    #[test]
    fn unknown_keys_name_file_and_key() {
        let e =
            parse("[[limit]]\nname='a'\nroute='auth'\nkey='client'\nrate='5/30m'\nbrst=3\n").unwrap_err().to_string();
        assert!(e.contains("policies/test.toml") && e.contains("brst"), "{e}");
        let e = parse("[wave]\ndistinct_sender = 5\n").unwrap_err().to_string();
        assert!(e.contains("policies/test.toml") && e.contains("distinct_sender"), "{e}");
        let e = parse("[[limit]]\nname='a'\nroute='inbx'\nkey='client'\nrate='5/min'\n").unwrap_err().to_string();
        assert!(e.contains("route") && e.contains("inbx"), "{e}");
        let e =
            parse("[[limit]]\nname='a'\nroute='auth'\nkey='remote-domain'\nrate='5/min'\n").unwrap_err().to_string();
        assert!(e.contains("key"), "{e}");
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("300/min").unwrap(), (300, Duration::from_secs(60)));
        assert_eq!(parse_rate("5/30m").unwrap(), (5, Duration::from_secs(1800)));
        assert_eq!(parse_rate("10/s").unwrap(), (10, Duration::from_secs(1)));
        assert!(parse_rate("0/min").is_err());
        assert!(parse_rate("ten/min").is_err());
        assert!(parse_rate("10").is_err());
        assert!(parse_rate("10/fortnight").is_err());
    }

    #[test]
    fn path_prefixes() {
        let (l, _) = parse("[[limit]]\nname='a'\nroute='auth'\nkey='client'\nrate='5/min'\nmethods=['post']\npaths=['/auth/sign_in']\n").unwrap();
        assert!(l[0].matches(&http::Method::POST, "/auth/sign_in"));
        assert!(!l[0].matches(&http::Method::GET, "/auth/sign_in"));
        assert!(!l[0].matches(&http::Method::POST, "/auth/sign_up"));
        assert!(path_has_prefix("/api/v1/accounts", "/api/v1/accounts"));
        assert!(!path_has_prefix("/api/v1/accountsx", "/api/v1/accounts"));
        assert!(path_has_prefix("/auth", "/auth$") && path_has_prefix("/auth.json", "/auth$"));
        assert!(!path_has_prefix("/auth/sign_in", "/auth$"));
    }

    #[test]
    fn shipped_policies_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let p = load_dir(&dir).unwrap();
        assert!(p.limits.iter().any(|l| l.name == "sign-ups" && l.count == 5));
        assert!(p.limits.iter().any(|l| l.route == RouteClass::Inbox && l.key == KeyKind::RemoteDomain));
        assert!(p.wave.enabled);
    }

    #[test]
    fn wave_bounds() {
        assert!(parse("[wave]\nrelease_within='2h'\n").is_err());
        assert!(parse("[wave]\ndistinct_senders=0\n").is_err());
        assert!(parse("[wave]\nshort_retry_agents=['']\n").is_err());
        assert!(parse("[wave]\nshield_for='2h'\nmax_shield='1h'\n").is_err());
        assert!(parse("[wave]\nmax_shield='8d'\n").is_err());
        assert!(parse("[wave]\nper_domain=0\n").is_err());
        let (_, w) = parse("[wave]\ndistinct_senders=7\n").unwrap();
        let w = w.unwrap();
        assert_eq!((w.per_domain, w.max_shield), (3, Duration::from_secs(12 * 3600)));
    }
}
