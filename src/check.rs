//! `pavise check`: what the relay would do with this configuration, in plain words.
//! Each feature appends its own section (policies, egress, ...).

use std::fmt::Write as _;

use crate::config::{ClientIpMode, Config, EgressMode};

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("{0}")]
    Policy(String),
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
    let _ = writeln!(out, "admin listener: {} (token file {})", f.admin.listen, config.admin_token_file().display());
    let _ = writeln!(out, "data dir: {}; policies: {}", f.data_dir.display(), f.policies.display());
    let _ = writeln!(
        out,
        "media: every uploaded file scrubbed of location (unknown or broken files refused); images up to {}, video/audio up to {}; spooled to disk above {}",
        f.media.max_image, f.media.max_video, f.media.spill_threshold
    );
    Ok(out)
}
