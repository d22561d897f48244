//! `pavise check`: what the relay would do with this configuration, in plain words.
//! Each feature appends its own section (policies, egress, ...).

use std::fmt::Write as _;

use crate::config::{ClientIpMode, Config, EgressMode};

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("{0}")]
    Policy(String),
    #[error("{0}")]
    Egress(String),
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
        "  allowed ports: {}; private/loopback/link-local/CGNAT/multicast addresses refused{}",
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
        crate::egress::tor::arti_config(&config.file.data_dir, e.tor.arti_config.as_deref())
            .map_err(|err| CheckError::Egress(err.to_string()))?;
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
    let egress = match f.egress.mode {
        EgressMode::Tor => "over Tor".to_owned(),
        EgressMode::Direct => "DIRECT — development only, reveals this server's address".to_owned(),
    };
    let _ = writeln!(out, "egress listener: {} — {egress}", f.egress.listen);
    egress_section(&mut out, config)?;
    let _ = writeln!(out, "admin listener: {} (token file {})", f.admin.listen, config.admin_token_file().display());
    let _ = writeln!(out, "data dir: {}; policies: {}", f.data_dir.display(), f.policies.display());
    Ok(out)
}
