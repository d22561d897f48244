//! Configuration: one TOML file, every key optional, CLI flags on top.
//!
//! Two layers, as in sozu and rpxy: [`FileConfig`] mirrors the TOML exactly
//! (`deny_unknown_fields` everywhere, so a typo such as `expire_afer` is an error naming
//! the key, never a silent default), and [`Config`] is the validated, immutable value the
//! rest of the relay reads. Defaults are the embedded ones of DESIGN.md: pavise runs in
//! front of a stock Mastodon with no file at all.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
};

use serde::Deserialize;

pub use crate::privacy::{
    client_ip::{ClientIpConfig, ClientIpHeader, ClientIpMode},
    hygiene::ResponseHeadersConfig,
};
use crate::units::{Size, Span};

/// Why a configuration could not be loaded. Each message names the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key, message: message.into() }
}

// ---------------------------------------------------------------------------------------
// The file layer: exactly what an admin may write.
// ---------------------------------------------------------------------------------------

/// The TOML file, as written. Every field has a default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    /// Where durable state lives: the embedded store, the admin token, temp files.
    pub data_dir: PathBuf,
    /// Directory of `*.toml` policy files (expiry rules, limits, wave shield).
    pub policies: PathBuf,
    /// The instance's own domain, when it differs from the `Host` deliveries arrive with.
    /// Mastodon's `LOCAL_DOMAIN`; the wave shield counts only deliveries addressed to it
    /// (or to `web_domain` / `alternate_domains`).
    pub local_domain: Option<String>,
    /// Mastodon's `WEB_DOMAIN`, when it differs from `local_domain`.
    pub web_domain: Option<String>,
    /// Mastodon's `ALTERNATE_DOMAINS`: other host names the instance answers to.
    pub alternate_domains: Vec<String>,
    pub public: PublicConfig,
    pub upstream: UpstreamConfig,
    pub client_ip: ClientIpConfig,
    pub response_headers: ResponseHeadersConfig,
    pub egress: EgressConfig,
    pub admin: AdminConfig,
    pub log: LogConfig,
    pub media: crate::privacy::media::MediaConfig,
    /// Post expiry: the key file, pacing, retries (rules are in the policies dir).
    pub expiry: crate::expiry::ExpiryConfig,
    /// Rate limits and the wave shield: machinery here, rules in `policies/`.
    pub shield: crate::shield::ShieldConfig,
    /// Several nodes sharing state through PostgreSQL and Redis (absent: one node).
    pub cluster: crate::cluster::ClusterConfig,
}

impl Default for FileConfig {
    fn default() -> Self {
        FileConfig {
            data_dir: PathBuf::from("./data"),
            policies: PathBuf::from("./policies"),
            local_domain: None,
            web_domain: None,
            alternate_domains: Vec::new(),
            public: PublicConfig::default(),
            upstream: UpstreamConfig::default(),
            client_ip: ClientIpConfig::default(),
            response_headers: ResponseHeadersConfig::default(),
            egress: EgressConfig::default(),
            admin: AdminConfig::default(),
            log: LogConfig::default(),
            media: crate::privacy::media::MediaConfig::default(),
            expiry: crate::expiry::ExpiryConfig::default(),
            shield: crate::shield::ShieldConfig::default(),
            cluster: crate::cluster::ClusterConfig::default(),
        }
    }
}

/// The public listener that browsers, apps and remote servers talk to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PublicConfig {
    pub listen: SocketAddr,
    /// PEM certificate chain; with `tls_key`, the listener speaks TLS (h2 + http/1.1).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Connections beyond this wait in the kernel backlog instead of costing memory.
    pub max_connections: usize,
    /// Threads that serve the connections, each with a single-threaded runtime; `0`
    /// (the default): one per core.
    pub workers: usize,
    /// Largest request head (request line + headers) accepted.
    pub max_header_bytes: Size,
    /// Slowloris guard: the whole request head must arrive within this.
    pub header_read_timeout: Span,
    /// A connection with no bytes either way for this long is closed.
    pub idle_timeout: Span,
    /// How long in-flight requests and open streams may take to finish on shutdown.
    pub shutdown_grace: Span,
    /// Request body caps by route class (`inbox`, `media_upload`, ...); `default` for the rest.
    pub body_limits: BTreeMap<String, Size>,
    /// HTTP/2 streams one connection may have open at once (hyper's default is 200).
    pub h2_max_streams: u32,
    /// Response bytes buffered per HTTP/2 stream for a client that is slow to read.
    pub h2_stream_send_buffer: Size,
    /// A request body must keep up at least this many bytes a second (after
    /// `header_read_timeout` of grace), measured over `body_rate_window`, or the request
    /// ends with a 408.
    pub min_body_rate: Size,
    /// The window the body rate is measured over: bytes sent early buy at most this much
    /// silence later (a front-loaded body cannot stall for hours).
    pub body_rate_window: Span,
    /// WebSocket tunnels (streaming API) open at once; each holds a client connection
    /// and a connection to the streaming server until it closes or idles out.
    pub max_websockets: usize,
    /// Requests to the streaming server in flight at once (SSE streams live as long as
    /// the client listens); apart from `upstream.max_in_flight`, so streams can never
    /// starve the web UI, the API or federation.
    pub max_sse: usize,
    /// Long-lived streams (SSE responses and WebSocket tunnels) one client (one
    /// pseudonym) may have open at once; past it that client gets 503, nobody else.
    pub max_streams_per_client: usize,
    /// Long-lived streams one connection may have open at once.
    pub max_streams_per_connection: usize,
    /// Request-body bytes all requests together may hold in memory before the instance
    /// has them (`_method` forms, signed deliveries, status creations, JSON and form
    /// bodies being scrubbed); past it, 503 with `Retry-After`.
    pub body_memory: Size,
    /// The same, for the requests of one connection (HTTP/2 multiplies requests).
    pub body_memory_per_connection: Size,
}

impl Default for PublicConfig {
    fn default() -> Self {
        PublicConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tls_cert: None,
            tls_key: None,
            max_connections: 10_000,
            workers: 0,
            max_header_bytes: Size(64 * 1024),
            header_read_timeout: Span::secs(10),
            idle_timeout: Span::secs(120),
            shutdown_grace: Span::secs(10),
            body_limits: BTreeMap::new(),
            h2_max_streams: 32,
            h2_stream_send_buffer: Size(64 * 1024),
            min_body_rate: Size(1024),
            body_rate_window: Span::secs(10),
            max_websockets: 1024,
            max_sse: 1024,
            max_streams_per_client: 64,
            max_streams_per_connection: 8,
            body_memory: Size(64 << 20),
            body_memory_per_connection: Size(8 << 20),
        }
    }
}

/// The instance behind pavise.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// Mastodon's web process (puma).
    pub url: String,
    /// Mastodon's streaming server; `/api/v1/streaming` goes here.
    pub streaming_url: String,
    pub connect_timeout: Span,
    /// Pooled keep-alive connections idle longer than this are closed.
    pub pool_idle_timeout: Span,
    /// Connections to each upstream (web, streaming) at once: in use, pooled or spliced.
    pub max_connections: usize,
    /// Requests to the instance in flight at once (until their response body ends);
    /// past it, clients get 503 with `Retry-After`.
    pub max_in_flight: usize,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            url: "http://127.0.0.1:3000".into(),
            streaming_url: "http://127.0.0.1:4000".into(),
            connect_timeout: Span::secs(5),
            pool_idle_timeout: Span::secs(90),
            max_connections: 1024,
            max_in_flight: 1024,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EgressMode {
    /// Every outbound connection through Tor (arti-client).
    Tor,
    /// Straight to the destination. For development only: it reveals the server's address.
    Direct,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// Streams to different hosts never share a circuit.
    PerHost,
    /// Every request gets its own circuit.
    PerRequest,
    /// arti's default sharing.
    None,
}

/// The forward proxy the instance's outbound federation goes through.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EgressConfig {
    /// privoxy's port, so Mastodon's existing `http_proxy` setting works unchanged.
    pub listen: SocketAddr,
    /// Optional SOCKS5 listener (remote DNS) for software that prefers it.
    pub socks_listen: Option<SocketAddr>,
    pub mode: EgressMode,
    pub allow_ports: Vec<u16>,
    /// `"host:port"` exceptions to the private-address guard.
    pub allow_hosts: Vec<String>,
    /// Domains never connected to (a suffix match: `"example.com"` covers subdomains).
    pub deny_domains: Vec<String>,
    /// `"user:password"` required as `Proxy-Authorization: Basic` when set.
    pub proxy_auth: Option<String>,
    pub tor: TorConfig,
}

impl Default for EgressConfig {
    fn default() -> Self {
        EgressConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8118)),
            socks_listen: None,
            mode: EgressMode::Tor,
            allow_ports: vec![443, 80],
            allow_hosts: vec![],
            deny_domains: vec![],
            proxy_auth: None,
            tor: TorConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TorConfig {
    pub isolation: Isolation,
    /// Extra arti configuration, in arti's own TOML, layered over pavise's defaults.
    pub arti_config: Option<PathBuf>,
    /// How long to wait for bootstrap before `/readyz` reports the failure.
    pub bootstrap_timeout: Span,
}

impl Default for TorConfig {
    fn default() -> Self {
        TorConfig { isolation: Isolation::PerHost, arti_config: None, bootstrap_timeout: Span::secs(120) }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// Bearer token file; created (0600, random) on first run. Default: `<data_dir>/admin.token`.
    pub token_file: Option<PathBuf>,
    /// Admin connections at once; the header timeout and idle rules are `[public]`'s.
    pub max_connections: usize,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig { listen: SocketAddr::from(([127, 0, 0, 1], 9180)), token_file: None, max_connections: 64 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// One structured line per request (pseudonym, route class, status, latency).
    pub access_log: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: LogFormat::Text, access_log: true }
    }
}

// ---------------------------------------------------------------------------------------
// CLI overrides: the `pavise run` flags of DESIGN.md's contract.
// ---------------------------------------------------------------------------------------

/// Flags that override the file, one for one.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub upstream: Option<String>,
    pub streaming_upstream: Option<String>,
    pub egress_listen: Option<SocketAddr>,
    pub egress_mode: Option<EgressMode>,
    pub admin_listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub policies: Option<PathBuf>,
    pub arti_config: Option<PathBuf>,
    /// `--expiry-key-file` / `PAVISE_EXPIRY_KEY_FILE`.
    pub expiry_key_file: Option<PathBuf>,
}

// ---------------------------------------------------------------------------------------
// The validated layer.
// ---------------------------------------------------------------------------------------

/// An upstream address, checked to be plain `http://host:port` (the instance is local).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    /// `host:port`, as the URI authority the pooled client connects to.
    pub authority: http::uri::Authority,
}

impl UpstreamUrl {
    fn parse(key: &'static str, raw: &str) -> Result<Self, ConfigError> {
        let uri: http::Uri = raw.parse().map_err(|e| invalid(key, format!("{raw:?} is not a URL: {e}")))?;
        if uri.scheme_str() != Some("http") {
            return Err(invalid(
                key,
                format!("{raw:?}: only http:// upstreams are supported (the instance runs beside pavise)"),
            ));
        }
        if uri.path() != "/" && !uri.path().is_empty() {
            return Err(invalid(key, format!("{raw:?}: give scheme, host and port only, no path")));
        }
        let authority = uri.authority().cloned().ok_or_else(|| invalid(key, format!("{raw:?} has no host")))?;
        let authority = if authority.port_u16().is_some() {
            authority
        } else {
            format!("{}:80", authority.host()).parse().map_err(|_| invalid(key, "bad host"))?
        };
        Ok(UpstreamUrl { authority })
    }
}

/// Everything the relay reads at run time, validated once.
#[derive(Debug, Clone)]
pub struct Config {
    pub file: FileConfig,
    pub upstream: UpstreamUrl,
    pub streaming_upstream: UpstreamUrl,
    /// Whether a config file was read (for `pavise check`'s summary).
    pub source: Option<PathBuf>,
}

impl Config {
    /// Reads `path` (if any), applies the CLI overrides and validates the result.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let file = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
                Self::parse_file(path, &text)?
            }
            None => FileConfig::default(),
        };
        Self::validate(file, overrides, path.map(Path::to_owned))
    }

    /// Parses TOML text; errors name the file, line and key.
    pub fn parse_file(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
        toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: path.to_owned(), message: e.to_string().trim_end().to_owned() })
    }

    pub fn validate(mut file: FileConfig, o: &Overrides, source: Option<PathBuf>) -> Result<Config, ConfigError> {
        macro_rules! apply {
            ($($flag:ident => $($field:ident).+;)*) => { $( if let Some(v) = o.$flag.clone() { file.$($field).+ = v; } )* };
        }
        apply! {
            listen => public.listen;
            upstream => upstream.url;
            streaming_upstream => upstream.streaming_url;
            egress_listen => egress.listen;
            egress_mode => egress.mode;
            admin_listen => admin.listen;
            data_dir => data_dir;
            policies => policies;
        }
        if let Some(path) = &o.arti_config {
            file.egress.tor.arti_config = Some(path.clone());
        }
        if let Some(path) = &o.expiry_key_file {
            file.expiry.key_file = Some(path.clone());
        }

        file.cluster.apply_env(|name| std::env::var(name).ok());
        file.cluster.validate().map_err(|(key, message)| invalid(key, message))?;

        let upstream = UpstreamUrl::parse("upstream.url", &file.upstream.url)?;
        let streaming_upstream = UpstreamUrl::parse("upstream.streaming_url", &file.upstream.streaming_url)?;

        match (&file.public.tls_cert, &file.public.tls_key) {
            (Some(_), None) => return Err(invalid("public.tls_key", "tls_cert is set but tls_key is not")),
            (None, Some(_)) => return Err(invalid("public.tls_cert", "tls_key is set but tls_cert is not")),
            (Some(cert), Some(key)) => {
                for (k, p) in [("public.tls_cert", cert), ("public.tls_key", key)] {
                    if !p.is_file() {
                        return Err(invalid(
                            k,
                            format!("{} does not exist (see certs/README.md to make a pair)", p.display()),
                        ));
                    }
                }
            }
            (None, None) => {}
        }
        if file.public.max_connections == 0 {
            return Err(invalid("public.max_connections", "must be at least 1"));
        }
        if file.public.workers > 1024 {
            return Err(invalid("public.workers", "must be at most 1024 (0: one per core)"));
        }
        for (key, n) in [
            ("public.max_websockets", file.public.max_websockets),
            ("public.max_sse", file.public.max_sse),
            ("public.max_streams_per_client", file.public.max_streams_per_client),
            ("public.max_streams_per_connection", file.public.max_streams_per_connection),
            ("admin.max_connections", file.admin.max_connections),
            ("upstream.max_connections", file.upstream.max_connections),
            ("upstream.max_in_flight", file.upstream.max_in_flight),
        ] {
            if n == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if file.public.max_websockets > file.upstream.max_connections {
            return Err(invalid(
                "public.max_websockets",
                "must not exceed upstream.max_connections: each tunnel holds a connection to the streaming server",
            ));
        }
        if file.public.body_rate_window.get() < std::time::Duration::from_secs(1) {
            return Err(invalid("public.body_rate_window", "must be at least 1s"));
        }
        if file.public.body_memory_per_connection.0 < 64 * 1024 {
            return Err(invalid("public.body_memory_per_connection", "must be at least 64KiB"));
        }
        if file.public.body_memory.0 < file.public.body_memory_per_connection.0 {
            return Err(invalid("public.body_memory", "must not be smaller than public.body_memory_per_connection"));
        }
        if !(1..=1000).contains(&file.public.h2_max_streams) {
            return Err(invalid("public.h2_max_streams", "must be between 1 and 1000 (tens is plenty)"));
        }
        if file.public.h2_stream_send_buffer.0 < 16 * 1024 {
            return Err(invalid("public.h2_stream_send_buffer", "must be at least 16KiB (one HTTP/2 frame)"));
        }
        if file.public.min_body_rate.0 == 0 {
            return Err(invalid("public.min_body_rate", "must be at least 1B (bytes a second)"));
        }
        if file.public.max_header_bytes.0 < 8192 {
            return Err(invalid("public.max_header_bytes", "must be at least 8KiB (hyper's minimum buffer)"));
        }
        for key in file.public.body_limits.keys() {
            if key != "default" && crate::proxy::contract::RouteClass::from_config_name(key).is_none() {
                return Err(invalid(
                    "public.body_limits",
                    format!(
                        "unknown route class {key:?}; use default or one of {}",
                        crate::proxy::contract::RouteClass::CONFIG_NAMES.join(", ")
                    ),
                ));
            }
        }
        file.client_ip.validate().map_err(|(key, message)| invalid(key, message))?;
        file.response_headers.validate().map_err(|(key, message)| invalid(key, message))?;
        if file.egress.allow_ports.is_empty() {
            return Err(invalid("egress.allow_ports", "empty: the egress proxy could reach nothing"));
        }
        for host in &file.egress.allow_hosts {
            let ok = host.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
            if !ok {
                return Err(invalid("egress.allow_hosts", format!("{host:?}: write \"host:port\"")));
            }
        }
        if let Some(auth) = &file.egress.proxy_auth
            && !auth.contains(':')
        {
            return Err(invalid("egress.proxy_auth", "write \"user:password\""));
        }
        file.shield.validate(file.egress.mode == EgressMode::Tor).map_err(|(key, message)| invalid(key, message))?;
        if let Some(path) = &file.egress.tor.arti_config
            && !path.is_file()
        {
            return Err(invalid("egress.tor.arti_config", format!("{} does not exist", path.display())));
        }
        let listeners = [
            ("public.listen", Some(file.public.listen)),
            ("egress.listen", Some(file.egress.listen)),
            ("egress.socks_listen", file.egress.socks_listen),
            ("admin.listen", Some(file.admin.listen)),
        ];
        for (i, (key, addr)) in listeners.iter().enumerate() {
            let Some(addr) = addr else { continue };
            if addr.port() != 0 && listeners[..i].iter().any(|(_, other)| *other == Some(*addr)) {
                return Err(invalid(key, format!("{addr} is already used by another listener")));
            }
        }
        for (key, span) in [
            ("expiry.min_expires_in", file.expiry.min_expires_in),
            ("expiry.lease", file.expiry.lease),
            ("expiry.request_timeout", file.expiry.request_timeout),
            ("expiry.backoff", file.expiry.backoff),
        ] {
            if span.get().as_secs() == 0 {
                return Err(invalid(key, "must be at least 1s"));
            }
        }
        if file.expiry.max_backoff < file.expiry.backoff {
            return Err(invalid("expiry.max_backoff", "must not be shorter than expiry.backoff"));
        }
        if let Err((key, why)) = file.expiry.validate() {
            return Err(invalid(key, why));
        }

        if !is_loopback(file.admin.listen.ip()) {
            return Err(invalid(
                "admin.listen",
                format!("{} is not a loopback address; the admin API stays on this host", file.admin.listen),
            ));
        }
        if !is_loopback(file.egress.listen.ip()) {
            return Err(invalid(
                "egress.listen",
                "must be a loopback address: an open forward proxy would let anyone use the instance's Tor",
            ));
        }
        if let Some(socks) = file.egress.socks_listen
            && !is_loopback(socks.ip())
        {
            return Err(invalid(
                "egress.socks_listen",
                format!(
                    "{socks} is not a loopback address: an open SOCKS proxy would let anyone use the instance's Tor (or, in direct mode, this server's address)"
                ),
            ));
        }
        file.media.validate().map_err(|(key, message)| invalid(key, message))?;
        let not_a_domain = |d: &str| d.is_empty() || d.contains(['/', ' ', '@']);
        if let Some(domain) = &file.local_domain
            && not_a_domain(domain)
        {
            return Err(invalid("local_domain", format!("{domain:?} is not a domain name")));
        }
        if let Some(domain) = &file.web_domain
            && not_a_domain(domain)
        {
            return Err(invalid("web_domain", format!("{domain:?} is not a domain name")));
        }
        if let Some(domain) = file.alternate_domains.iter().find(|d| not_a_domain(d)) {
            return Err(invalid("alternate_domains", format!("{domain:?} is not a domain name")));
        }
        Ok(Config { file, upstream, streaming_upstream, source })
    }

    pub fn admin_token_file(&self) -> PathBuf {
        self.file.admin.token_file.clone().unwrap_or_else(|| self.file.data_dir.join("admin.token"))
    }

    pub fn tls_enabled(&self) -> bool {
        self.file.public.tls_cert.is_some()
    }

    /// What `pavise expiry list|sweep` needs of the file.
    pub fn expiry_cli(&self) -> crate::expiry::cli::CliSetup {
        let f = &self.file;
        crate::expiry::cli::CliSetup {
            expiry: f.expiry.clone(),
            admin_listen: f.admin.listen,
            admin_token_file: self.admin_token_file(),
            data_dir: f.data_dir.clone(),
            policies: f.policies.clone(),
            instance: self.upstream.authority.clone(),
            local_domain: f.local_domain.clone(),
            postgres: f.cluster.enabled().then(|| crate::expiry::cli::ClusterStore {
                url: f.cluster.postgres.clone().unwrap_or_default(),
                node: f.cluster.node_name(),
            }),
        }
    }

    /// The shield's section and what it needs from the rest of the file.
    pub fn shield_setup(&self) -> crate::shield::ShieldSetup {
        let f = &self.file;
        crate::shield::ShieldSetup {
            shield: f.shield.clone(),
            policies: f.policies.clone(),
            local_domain: f.local_domain.clone(),
            web_domain: f.web_domain.clone(),
            alternate_domains: f.alternate_domains.clone(),
            egress_listen: f.egress.listen,
            egress_auth: f.egress.proxy_auth.clone(),
            egress_over_tor: f.egress.mode == EgressMode::Tor,
            clustered: f.cluster.enabled(),
        }
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    ip.is_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let file = Config::parse_file(Path::new("test.toml"), text)?;
        Config::validate(file, &Overrides::default(), None)
    }

    #[test]
    fn no_file_gives_the_documented_defaults() {
        let c = Config::load(None, &Overrides::default()).unwrap();
        assert_eq!(c.file.public.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.upstream.authority.as_str(), "127.0.0.1:3000");
        assert_eq!(c.streaming_upstream.authority.as_str(), "127.0.0.1:4000");
        assert_eq!(c.file.egress.listen.to_string(), "127.0.0.1:8118");
        assert_eq!(c.file.egress.mode, EgressMode::Tor);
        assert_eq!(c.file.admin.listen.to_string(), "127.0.0.1:9180");
        assert_eq!(c.file.data_dir, PathBuf::from("./data"));
        assert_eq!(c.file.policies, PathBuf::from("./policies"));
        assert_eq!(c.file.client_ip.mode, ClientIpMode::Pseudonym);
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key() {
        let e = parse("[public]\nlisen = \"127.0.0.1:1\"\n").unwrap_err().to_string();
        assert!(e.contains("lisen"), "{e}");
        let e = parse("expire_afer = \"7d\"\n").unwrap_err().to_string();
        assert!(e.contains("expire_afer"), "{e}");
    }

    #[test]
    fn design_egress_example_parses() {
        let c = parse(
            "[egress]\nlisten = \"127.0.0.1:8118\"\nmode = \"tor\"\nallow_ports = [443, 80]\nallow_hosts = []\n[egress.tor]\nisolation = \"per-host\"\n",
        )
        .unwrap();
        assert_eq!(c.file.egress.tor.isolation, Isolation::PerHost);
    }

    #[test]
    fn flags_override_the_file() {
        let file = Config::parse_file(Path::new("t.toml"), "[public]\nlisten = \"127.0.0.1:1111\"\n").unwrap();
        let o = Overrides {
            listen: Some("127.0.0.1:2222".parse().unwrap()),
            egress_mode: Some(EgressMode::Direct),
            ..Default::default()
        };
        let c = Config::validate(file, &o, None).unwrap();
        assert_eq!(c.file.public.listen.port(), 2222);
        assert_eq!(c.file.egress.mode, EgressMode::Direct);
    }

    #[test]
    fn bad_values_name_their_key() {
        for (text, key) in [
            ("[upstream]\nurl = \"https://x:3000\"\n", "upstream.url"),
            ("[upstream]\nurl = \"http://x:3000/path\"\n", "upstream.url"),
            ("[public]\ntls_cert = \"/nonexistent.pem\"\n", "public.tls_key"),
            ("[admin]\nlisten = \"0.0.0.0:9180\"\n", "admin.listen"),
            ("[egress]\nallow_ports = []\n", "egress.allow_ports"),
            ("[egress]\nallow_hosts = [\"nohost\"]\n", "egress.allow_hosts"),
            ("[public.body_limits]\ninbux = \"1MiB\"\n", "public.body_limits"),
            ("[response_headers]\nonion_location = \"http://example.com\"\n", "response_headers.onion_location"),
            ("[egress]\nlisten = \"127.0.0.1:9180\"\n", "admin.listen"),
            ("[egress]\nsocks_listen = \"0.0.0.0:9050\"\n", "egress.socks_listen"),
            ("[egress]\nsocks_listen = \"[::]:9050\"\n", "egress.socks_listen"),
            ("[egress]\nsocks_listen = \"192.168.1.5:9050\"\n", "egress.socks_listen"),
            ("[media]\nmax_file_parts = 0\n", "media.max_file_parts"),
            ("[expiry]\nlease = \"0s\"\n", "expiry.lease"),
            ("[expiry]\nmax_backoff = \"1s\"\n", "expiry.max_backoff"),
            ("[expiry]\nreserve = 5\n", "reserve"),
            ("[public]\nh2_max_streams = 0\n", "public.h2_max_streams"),
            ("[public]\nmin_body_rate = \"0B\"\n", "public.min_body_rate"),
            ("[public]\nmax_websockets = 5000\n", "public.max_websockets"),
            ("[admin]\nmax_connections = 0\n", "admin.max_connections"),
            ("[upstream]\nmax_in_flight = 0\n", "upstream.max_in_flight"),
            ("web_domain = \"a/b\"\n", "web_domain"),
            ("alternate_domains = [\"ok.example\", \"x@example\"]\n", "alternate_domains"),
            ("[public]\nmax_sse = 0\n", "public.max_sse"),
            ("[public]\nworkers = 5000\n", "public.workers"),
            ("[public]\nmax_streams_per_client = 0\n", "public.max_streams_per_client"),
            ("[public]\nbody_rate_window = \"0s\"\n", "public.body_rate_window"),
            ("[public]\nbody_memory = \"1MiB\"\n", "public.body_memory"),
            ("[client_ip]\nheader = \"Forwarded\"\n", "header"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text} → {e}");
        }
    }

    #[test]
    fn direct_key_fetches_need_direct_egress() {
        // Under Tor egress a direct key fetch would reveal the server's address.
        let e = parse("[shield]\nkey_fetch = \"direct\"\n").unwrap_err().to_string();
        assert!(e.contains("shield.key_fetch") && e.contains("tor"), "{e}");
        // The CLI's --egress-mode counts, in both directions.
        let file = Config::parse_file(Path::new("t.toml"), "[shield]\nkey_fetch = \"direct\"\n").unwrap();
        let direct = Overrides { egress_mode: Some(EgressMode::Direct), ..Overrides::default() };
        assert!(Config::validate(file, &direct, None).is_ok());
        let file =
            Config::parse_file(Path::new("t.toml"), "[egress]\nmode = \"direct\"\n[shield]\nkey_fetch = \"direct\"\n")
                .unwrap();
        let tor = Overrides { egress_mode: Some(EgressMode::Tor), ..Overrides::default() };
        assert!(Config::validate(file, &tor, None).is_err());
        let e = parse("[shield]\nkey_fetch_allow_private = true\n").unwrap_err().to_string();
        assert!(e.contains("shield.key_fetch_allow_private"), "{e}");
    }

    #[test]
    fn socks_listen_on_loopback_is_accepted() {
        for addr in ["127.0.0.1:9050", "[::1]:9050", "127.0.0.2:1080"] {
            let c = parse(&format!("[egress]\nsocks_listen = \"{addr}\"\n")).unwrap();
            assert_eq!(
                c.file.egress.socks_listen.unwrap().to_string().replace(['[', ']'], ""),
                addr.replace(['[', ']'], "")
            );
        }
    }

    #[test]
    fn bad_units_are_reported() {
        let e = parse("[client_ip]\nrotate = \"1day\"\n").unwrap_err().to_string();
        assert!(e.contains("rotate") && e.contains("unknown unit"), "{e}");
        let e = parse("[client_ip]\nmode = \"hash\"\n").unwrap_err().to_string();
        assert!(e.contains("mode"), "{e}");
    }
}
