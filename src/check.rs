//! `pavise check`: what the relay would do with this configuration, in plain words.
//! Each feature appends its own section (policies, egress, ...).

use std::fmt::Write as _;

use crate::{
    config::{ClientIpHeader, ClientIpMode, Config, EgressMode},
    expiry::policy::{Policies, PostFacts},
};

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("{0}")]
    Policy(String),
    #[error("--sample-post: {0}")]
    Sample(String),
    #[error("{0}")]
    Egress(String),
    #[error("{0}")]
    Expiry(String),
}

/// The egress details under its one-line summary: what the instance may reach, and how.
fn egress_section(out: &mut String, config: &Config) -> Result<(), CheckError> {
    let e = &config.file.egress;
    if let Some(socks) = e.socks_listen {
        let _ = writeln!(out, "  SOCKS5 (remote DNS): {socks}");
    }
    let ports: Vec<String> = e.allow_ports.iter().map(u16::to_string).collect();
    let _ = writeln!(
        out,
        "  allowed ports: {}; every IANA special-purpose address refused (private, loopback, link-local, CGNAT, documentation, benchmarking, multicast, reserved; IPv4 inside IPv6: mapped, compatible, 6to4, Teredo, local NAT64){}",
        ports.join(", "),
        if e.allow_hosts.is_empty() { String::new() } else { format!(" except {}", e.allow_hosts.join(", ")) }
    );
    if !e.deny_domains.is_empty() {
        let _ = writeln!(out, "  denied domains (and their subdomains): {}", e.deny_domains.join(", "));
    }
    let _ =
        writeln!(out, "  proxy authentication: {}", if e.proxy_auth.is_some() { "required (Basic)" } else { "none" });
    if e.mode == EgressMode::Tor {
        // Parse arti's configuration as `run` would (no network): a typo fails here.
        #[cfg(feature = "tor")]
        crate::egress::tor::arti_config(&config.file.data_dir, e.tor.arti_config.as_deref())
            .map_err(|err| CheckError::Egress(err.to_string()))?;
        if cfg!(not(feature = "tor")) {
            return Err(CheckError::Egress(
                "egress.mode = \"tor\", but this pavise was built without the `tor` feature".into(),
            ));
        }
        let isolation = match e.tor.isolation {
            crate::config::Isolation::PerHost => "a circuit per destination host",
            crate::config::Isolation::PerRequest => "a circuit per request",
            crate::config::Isolation::None => "circuits shared (no isolation)",
        };
        let arti = e.tor.arti_config.as_ref().map_or("arti defaults (the public Tor network)".to_owned(), |p| {
            format!("arti defaults + {}", p.display())
        });
        let _ = writeln!(
            out,
            "  Tor: {isolation}; {arti}; state in {}; bootstrap timeout {}",
            config.file.data_dir.join("arti").display(),
            e.tor.bootstrap_timeout
        );
    }
    Ok(())
}

/// A human-readable summary; an error when anything (config or policy) would not load.
pub fn summary(config: &Config) -> Result<String, CheckError> {
    let f = &config.file;
    let mut out = String::new();
    let source = config.source.as_ref().map_or("embedded defaults".to_owned(), |p| p.display().to_string());
    let _ = writeln!(out, "config: {source} — OK");
    let tls = if config.tls_enabled() { "TLS (h2, http/1.1)" } else { "plain HTTP (put a TLS edge in front)" };
    let _ = writeln!(out, "public listener: {} — {tls}", f.public.listen);
    let _ = writeln!(
        out,
        "instance: web http://{}, streaming http://{}",
        config.upstream.authority, config.streaming_upstream.authority
    );
    let ip = match f.client_ip.mode {
        ClientIpMode::Pseudonym => format!("pseudonyms in 2001:db8::/32, key rotated every {}", f.client_ip.rotate),
        ClientIpMode::Drop => "one constant address for every client".to_owned(),
        ClientIpMode::Truncate => "real address truncated to /24 (IPv4) or /48 (IPv6)".to_owned(),
    };
    let _ = writeln!(out, "client IPs: {ip}; trusted proxies: {}", f.client_ip.trusted_proxies.len());
    trusted_edge_section(&mut out, config);
    let egress = match f.egress.mode {
        EgressMode::Tor => "over Tor".to_owned(),
        EgressMode::Direct => "DIRECT — development only, reveals this server's address".to_owned(),
    };
    let _ = writeln!(out, "egress listener: {} — {egress}", f.egress.listen);
    egress_section(&mut out, config)?;
    let _ = writeln!(out, "admin listener: {} (token file {})", f.admin.listen, config.admin_token_file().display());
    let _ = writeln!(out, "data dir: {}; policies: {}", f.data_dir.display(), f.policies.display());
    limits_section(&mut out, config);
    expiry_section(config, &mut out)?;
    out.push_str(&crate::shield::check_summary(&config.shield_setup()).map_err(|e| CheckError::Policy(e.to_string()))?);
    let _ = writeln!(
        out,
        "media: every uploaded file scrubbed of location (unknown or broken files refused); images up to {}, video/audio up to {}; spooled to disk above {}",
        f.media.max_image, f.media.max_video, f.media.spill_threshold
    );
    Ok(out)
}

/// What a trusted edge must send, when one is configured: pavise believes the client
/// address it names, so an edge that passes a client's own header through lets every
/// client choose its pseudonym (red-team F3).
fn trusted_edge_section(out: &mut String, config: &Config) {
    let c = &config.file.client_ip;
    if c.trusted_proxies.is_empty() {
        return;
    }
    let nets: Vec<String> = c.trusted_proxies.iter().map(ToString::to_string).collect();
    let (name, reading) = match c.header {
        ClientIpHeader::XForwardedFor => ("X-Forwarded-For", "its right-most address that is not itself trusted"),
        ClientIpHeader::XRealIp => ("X-Real-IP", "its one address (a repeated or comma-separated one is not believed)"),
    };
    let _ = writeln!(
        out,
        "  WARNING: requests from {} name their client in {name}, and pavise believes {reading}. The edge must OVERWRITE that header with the address it accepted the connection from, on every location (nginx: `proxy_set_header {name} $remote_addr;`); an edge that does not set it passes a client's own value through, and every client chooses its pseudonym. A request from the edge without a usable {name} gets the edge's pseudonym (and counts in pavise_client_ip_unresolved_total). Behind Docker's published ports the edge is the bridge gateway, not 127.0.0.1 (see docker/compose.yml).",
        nets.join(", ")
    );
}

/// The connection caps, and whether the descriptor limit can hold them.
fn limits_section(out: &mut String, config: &Config) {
    let (p, u) = (&config.file.public, &config.file.upstream);
    let _ = writeln!(
        out,
        "limits: {} client connections ({} admin), {} HTTP/2 streams each, {} WebSockets; to the instance {} requests in flight, {} connections per upstream; past a cap: 503 + Retry-After",
        p.max_connections,
        config.file.admin.max_connections,
        p.h2_max_streams,
        p.max_websockets,
        u.max_in_flight,
        u.max_connections
    );
    let _ = writeln!(
        out,
        "  streams: {} SSE to the streaming server (apart from the web's requests), {} per client, {} per connection; request bodies held in memory: {} in all, {} per connection; bodies at least {}/s over {}",
        p.max_sse,
        p.max_streams_per_client,
        p.max_streams_per_connection,
        p.body_memory,
        p.body_memory_per_connection,
        p.min_body_rate,
        p.body_rate_window
    );
    let need = crate::accept::descriptor_need(config);
    match crate::accept::nofile_limit() {
        Ok(limit) => {
            let _ = writeln!(out, "{}", crate::accept::describe_descriptors(limit, need));
        }
        Err(e) => {
            let _ = writeln!(out, "descriptors: cannot read RLIMIT_NOFILE ({e}); the caps need up to {need}");
        }
    }
}

/// The expiry rules, in the order they are tried.
fn expiry_section(config: &Config, out: &mut String) -> Result<(), CheckError> {
    let f = &config.file;
    let policies = Policies::load_dir(&f.policies).map_err(|e| CheckError::Policy(e.to_string()))?;
    let state = if f.expiry.enabled { "on" } else { "OFF (expiry.enabled = false)" };
    let _ = writeln!(
        out,
        "expiry: {state}; {} rule(s) from {} file(s); expires_in accepted from {}; key file {}",
        policies.rules.len(),
        policies.files.len(),
        f.expiry.min_expires_in,
        f.expiry.key_file(&f.data_dir).display()
    );
    let development = f.egress.mode == EgressMode::Direct;
    if let Some(warning) = f.expiry.check_key_placement(&f.data_dir, development).map_err(CheckError::Expiry)? {
        let _ = writeln!(out, "  WARNING: {warning}");
    }
    let _ = writeln!(
        out,
        "  archive sweeps on a member's first request: {}; deletions confirmed after {}, then purged",
        if f.expiry.sweep_archives { "on" } else { "off (expiry.sweep_archives = false)" },
        f.expiry.confirm_after
    );
    for (i, r) in policies.rules.iter().enumerate() {
        let _ = writeln!(
            out,
            "  {}. {:?} after {} ({}){}",
            i + 1,
            r.name,
            r.after,
            r.file.display(),
            describe_keep(&r.keep)
        );
    }
    Ok(())
}

fn describe_keep(k: &crate::expiry::policy::Keep) -> String {
    let mut parts = Vec::new();
    if k.pinned {
        parts.push("pinned".to_owned());
    }
    if k.self_favourited {
        parts.push("self-favourited".to_owned());
    }
    if k.self_bookmarked {
        parts.push("self-bookmarked".to_owned());
    }
    if let Some(n) = k.min_favourites {
        parts.push(format!(">= {n} favourites"));
    }
    if let Some(n) = k.min_boosts {
        parts.push(format!(">= {n} boosts"));
    }
    parts.extend(k.hashtags.iter().map(|t| format!("#{}", t.trim_start_matches('#'))));
    if parts.is_empty() { String::new() } else { format!("; keeps {}", parts.join(", ")) }
}

/// Which rule would apply to a sample post (JSON: a Mastodon Status, or the short form
/// `{"visibility": "direct", "account": "alice", "tags": ["x"], "has_media": false,
/// "is_reply": false, "pinned": false, "favourites_count": 0}`), and whether it would be kept.
pub fn sample_post(config: &Config, json: &str) -> Result<String, CheckError> {
    let policies = Policies::load_dir(&config.file.policies).map_err(|e| CheckError::Policy(e.to_string()))?;
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| CheckError::Sample(e.to_string()))?;
    let post = PostFacts::from_sample(&v).map_err(CheckError::Sample)?;
    Ok(match policies.evaluate(&post) {
        Some(rule) => {
            let keep = rule.keep.reason(&post).map(|r| format!("; it would be KEPT ({r})")).unwrap_or_default();
            format!("sample post: rule {:?} applies: deleted {} after creation{keep}\n", rule.name, rule.after)
        }
        None => "sample post: no rule matches; it never expires (unless sent with expires_in)\n".to_owned(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::config::{FileConfig, Overrides};

    #[test]
    fn lists_rules_and_explains_a_sample_post() {
        let keys = tempfile::tempdir().unwrap();
        let mut file = FileConfig {
            policies: std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"),
            ..FileConfig::default()
        };
        // A key file in the data dir is refused, and the way out named.
        file.expiry.key_file = Some(file.data_dir.join("expiry.key"));
        let config = Config::validate(file.clone(), &Overrides::default(), None).unwrap();
        let refused = summary(&config).unwrap_err().to_string();
        assert!(refused.contains("expiry.key_file") && refused.contains("inside the data dir"), "{refused}");
        file.expiry.key_file = Some(keys.path().join("expiry.key"));
        let config = Config::validate(file, &Overrides::default(), None).unwrap();
        let out = summary(&config).unwrap();
        assert!(out.contains("\"direct-messages\" after 1w"), "{out}");
        let s = sample_post(&config, r#"{"visibility":"direct","account":"alice"}"#).unwrap();
        assert!(s.contains("direct-messages"), "{s}");
        let s = sample_post(&config, r#"{"visibility":"public","tags":["Keep"]}"#).unwrap();
        assert!(s.contains("everything-else") && s.contains("KEPT"), "{s}");
        assert!(sample_post(&config, r#"{"visiblity":"public"}"#).unwrap_err().to_string().contains("visiblity"));
        assert!(!out.contains("must OVERWRITE"), "no edge configured, nothing to warn about:\n{out}");
    }

    /// Red-team F3: a trusted edge that passes a client's header through lets clients
    /// choose their pseudonyms; `check` says what the edge must send.
    #[test]
    fn a_trusted_edge_is_told_what_it_must_send() {
        for (header, name) in
            [(ClientIpHeader::XForwardedFor, "X-Forwarded-For"), (ClientIpHeader::XRealIp, "X-Real-IP")]
        {
            let mut file = FileConfig {
                policies: std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"),
                ..FileConfig::default()
            };
            file.client_ip.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
            file.client_ip.header = header;
            let out = summary(&Config::validate(file, &Overrides::default(), None).unwrap()).unwrap();
            assert!(
                out.contains("WARNING") && out.contains(&format!("proxy_set_header {name} $remote_addr;")),
                "{out}"
            );
        }
    }
}
