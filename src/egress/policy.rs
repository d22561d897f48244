//! Where the instance may connect: the destination policy, checked before any
//! connection is attempted (so a refused destination never sees a packet).
//!
//! The instance fetches URLs that remote servers hand it (actor documents, media,
//! link previews): without a guard, a hostile peer could point it at the host's own
//! services (`127.0.0.1:22`), the private network, or a cloud metadata endpoint
//! (`169.254.169.254`). Through Tor such an address would be dialled *by the exit*,
//! not by us, but in `direct` mode it would be ours, and either way there is no
//! legitimate federation traffic to those ranges. Exceptions are spelled out as
//! `"host:port"` in `allow_hosts`.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use crate::config::EgressConfig;

/// A destination as the client asked for it: a name (resolved at the Tor exit) or an
/// IP literal, and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub host: Host,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// Lower-cased DNS name (or `.onion` address), without a trailing dot.
    Name(String),
    Ip(IpAddr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
        }
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl Host {
    /// The host as arti and the resolver want it (IPv6 without brackets).
    pub fn connect_str(&self) -> String {
        match self {
            Host::Name(n) => n.clone(),
            Host::Ip(ip) => ip.to_string(),
        }
    }

    pub fn is_onion(&self) -> bool {
        matches!(self, Host::Name(n) if n.ends_with(".onion"))
    }

    /// Parses a host as it appears in an authority or a SOCKS request.
    pub fn parse(raw: &str) -> Result<Host, String> {
        if let Some(inner) = raw.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            return inner
                .parse::<Ipv6Addr>()
                .map(|ip| Host::Ip(IpAddr::V6(ip)))
                .map_err(|_| format!("bad IPv6 literal {raw:?}"));
        }
        if let Ok(ip) = raw.parse::<IpAddr>() {
            return Ok(Host::Ip(ip));
        }
        let name = raw.strip_suffix('.').unwrap_or(raw).to_ascii_lowercase();
        let valid_chars = name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
        if name.is_empty() || name.len() > 253 || !valid_chars || name.split('.').any(str::is_empty) {
            return Err(format!("bad host name {raw:?}"));
        }
        Ok(Host::Name(name))
    }
}

impl Destination {
    /// Parses `host:port` / `[v6]:port`.
    pub fn parse(authority: &str) -> Result<Destination, String> {
        let (host, port) = authority.rsplit_once(':').ok_or_else(|| format!("{authority:?}: no port"))?;
        let port = port.parse::<u16>().map_err(|_| format!("{authority:?}: bad port"))?;
        if port == 0 {
            return Err(format!("{authority:?}: port 0"));
        }
        Ok(Destination { host: Host::parse(host)?, port })
    }
}

/// Why a destination was refused; the text goes back to the client in the 403.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("port {0} is not in egress.allow_ports")]
    Port(u16),
    #[error("{0} is a {1} address (SSRF guard); list \"host:port\" in egress.allow_hosts to allow it")]
    PrivateAddress(String, &'static str),
    #[error("{0} is on egress.deny_domains")]
    DeniedDomain(String),
}

impl Refusal {
    /// A metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::Port(_) => "refused_port",
            Refusal::PrivateAddress(..) => "refused_private_address",
            Refusal::DeniedDomain(_) => "refused_denied_domain",
        }
    }
}

/// The destination rules from `[egress]`, compiled once.
#[derive(Debug, Clone)]
pub struct Policy {
    allow_ports: Vec<u16>,
    allow_hosts: Vec<String>,
    deny_domains: Vec<String>,
}

impl Policy {
    pub fn new(config: &EgressConfig) -> Policy {
        Policy {
            allow_ports: config.allow_ports.clone(),
            allow_hosts: config.allow_hosts.iter().map(|h| normalize_allow(h)).collect(),
            deny_domains: config
                .deny_domains
                .iter()
                .map(|d| d.trim_start_matches('.').trim_end_matches('.').to_ascii_lowercase())
                .collect(),
        }
    }

    /// An `allow_hosts` entry is an explicit, exact exception: it lifts the port rule and
    /// the private-address guard for that one `host:port` (not the deny list).
    pub fn explicitly_allowed(&self, dest: &Destination) -> bool {
        self.allow_hosts.contains(&dest.to_string())
    }

    /// Decides before any connection is made.
    pub fn check(&self, dest: &Destination) -> Result<(), Refusal> {
        if let Host::Name(name) = &dest.host
            && let Some(d) = self.deny_domains.iter().find(|d| name == *d || name.ends_with(&format!(".{d}")))
        {
            return Err(Refusal::DeniedDomain(d.clone()));
        }
        if self.explicitly_allowed(dest) {
            return Ok(());
        }
        if !self.allow_ports.contains(&dest.port) {
            return Err(Refusal::Port(dest.port));
        }
        match &dest.host {
            Host::Ip(ip) => {
                if let Some(range) = non_public(*ip) {
                    return Err(Refusal::PrivateAddress(dest.host.to_string(), range));
                }
            }
            Host::Name(name) => {
                if name == "localhost" || name.ends_with(".localhost") {
                    return Err(Refusal::PrivateAddress(name.clone(), "loopback"));
                }
                // A numeric last label is an IP address in disguise (`2130706433`,
                // `0x7f.1`): resolvers would read it as one. No real TLD is numeric.
                let tld = name.rsplit('.').next().unwrap_or(name);
                if tld.bytes().all(|b| b.is_ascii_digit()) || tld.starts_with("0x") {
                    return Err(Refusal::PrivateAddress(name.clone(), "numeric (ambiguous)"));
                }
            }
        }
        Ok(())
    }

    /// For `direct` mode: the addresses a name resolved to must pass the same guard.
    pub fn check_resolved(&self, dest: &Destination, ip: IpAddr) -> Result<(), Refusal> {
        if self.explicitly_allowed(dest) {
            return Ok(());
        }
        match non_public(ip) {
            Some(range) => Err(Refusal::PrivateAddress(format!("{} (resolved to {ip})", dest.host), range)),
            None => Ok(()),
        }
    }
}

fn normalize_allow(entry: &str) -> String {
    match Destination::parse(entry) {
        Ok(d) => d.to_string(),
        Err(_) => entry.to_ascii_lowercase(),
    }
}

/// The name of the non-public range `ip` falls in, if any.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => non_public_v6(v6),
    }
}

/// The IANA IPv4 Special-Purpose Address Registry (RFC 6890 and its updates, as of
/// 2025), multicast and the reserved class E: no federation peer lives in any of them,
/// including the few that are globally reachable (anycast relays, AS112 sinks).
const SPECIAL_V4: &[(Ipv4Addr, u8, &str)] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 8, "\"this network\" (0.0.0.0/8)"),
    (Ipv4Addr::new(10, 0, 0, 0), 8, "private (10.0.0.0/8)"),
    (Ipv4Addr::new(100, 64, 0, 0), 10, "CGNAT (100.64.0.0/10)"),
    (Ipv4Addr::new(127, 0, 0, 0), 8, "loopback"),
    (Ipv4Addr::new(169, 254, 0, 0), 16, "link-local"),
    (Ipv4Addr::new(172, 16, 0, 0), 12, "private (172.16.0.0/12)"),
    (Ipv4Addr::new(192, 0, 0, 0), 24, "IETF protocol assignments (192.0.0.0/24)"),
    (Ipv4Addr::new(192, 0, 2, 0), 24, "documentation (TEST-NET-1)"),
    (Ipv4Addr::new(192, 31, 196, 0), 24, "AS112 (192.31.196.0/24)"),
    (Ipv4Addr::new(192, 52, 193, 0), 24, "AMT (192.52.193.0/24)"),
    (Ipv4Addr::new(192, 88, 99, 0), 24, "6to4 relay anycast (deprecated)"),
    (Ipv4Addr::new(192, 168, 0, 0), 16, "private (192.168.0.0/16)"),
    (Ipv4Addr::new(192, 175, 48, 0), 24, "AS112 direct delegation (192.175.48.0/24)"),
    (Ipv4Addr::new(198, 18, 0, 0), 15, "benchmarking (198.18.0.0/15)"),
    (Ipv4Addr::new(198, 51, 100, 0), 24, "documentation (TEST-NET-2)"),
    (Ipv4Addr::new(203, 0, 113, 0), 24, "documentation (TEST-NET-3)"),
    (Ipv4Addr::new(224, 0, 0, 0), 4, "multicast"),
    (Ipv4Addr::new(240, 0, 0, 0), 4, "reserved (240.0.0.0/4, broadcast)"),
];

/// The IANA IPv6 Special-Purpose Address Registry, and everything outside `2000::/3`
/// (the only block IANA allocates as global unicast). Checked after the embeddings of
/// [`non_public_v6`].
const SPECIAL_V6: &[(Ipv6Addr, u8, &str)] = &[
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 32, "Teredo (2001::/32)"),
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 23, "IETF protocol assignments (2001::/23)"),
    (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32, "documentation (2001:db8::/32)"),
    (Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16, "6to4 (2002::/16)"),
    (Ipv6Addr::new(0x2620, 0x4f, 0x8000, 0, 0, 0, 0, 0), 48, "AS112 direct delegation (2620:4f:8000::/48)"),
    (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20, "documentation (3fff::/20)"),
];

fn in_v4(ip: Ipv4Addr, net: Ipv4Addr, len: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    u32::from(ip) & mask == u32::from(net) & mask
}

fn in_v6(ip: Ipv6Addr, net: Ipv6Addr, len: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
    u128::from(ip) & mask == u128::from(net) & mask
}

fn non_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    SPECIAL_V4.iter().find(|(net, len, _)| in_v4(ip, *net, *len)).map(|(_, _, name)| *name)
}

fn non_public_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    let o = ip.octets();
    // The global NAT64 prefix (64:ff9b::/96) reaches the IPv4 address it embeds: judge that.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return non_public_v4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    }
    let embedded = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    let range = if ip.is_unspecified() {
        "unspecified"
    } else if ip.is_loopback() {
        "loopback"
    } else if s[..4] == [0, 0, 0, 0]
        && (s[4..6] == [0, 0xffff] || s[4..6] == [0xffff, 0] || s[4..6] == [0, 0])
        && let Some(v4_range) = non_public_v4(embedded)
    {
        // Mapped, translated or compatible: name the IPv4 range it hides.
        v4_range
    } else if s[..5] == [0, 0, 0, 0, 0] && s[5] == 0xffff {
        // A peer is named by its IPv4 address, not this socket-API spelling of it.
        "IPv4-mapped (::ffff:0:0/96; write the IPv4 address)"
    } else if s[..4] == [0, 0, 0, 0] && s[4] == 0xffff && s[5] == 0 {
        "IPv4-translated (::ffff:0:0:0/96)"
    } else if s[..6] == [0, 0, 0, 0, 0, 0] {
        "IPv4-compatible (deprecated)"
    } else if s[..3] == [0x64, 0xff9b, 1] {
        // RFC 8215: a site's own translator, reaching whatever its IPv4 side reaches.
        "local-use NAT64 (64:ff9b:1::/48)"
    } else if (s[0] & 0xfe00) == 0xfc00 {
        "private (unique local)"
    } else if (s[0] & 0xffc0) == 0xfe80 {
        "link-local"
    } else if (s[0] & 0xffc0) == 0xfec0 {
        "site-local (deprecated)"
    } else if (s[0] & 0xff00) == 0xff00 {
        "multicast"
    } else if let Some((_, _, name)) = SPECIAL_V6.iter().find(|(net, len, _)| in_v6(ip, *net, *len)) {
        name
    } else if (s[0] & 0xe000) != 0x2000 {
        // 100::/64 discard, 5f00::/16 SRv6 SIDs and every block IANA has not allocated.
        "reserved (outside 2000::/3 global unicast)"
    } else {
        return None;
    };
    Some(range)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn policy(allow_hosts: &[&str], deny: &[&str]) -> Policy {
        let c = EgressConfig {
            allow_hosts: allow_hosts.iter().map(|s| s.to_string()).collect(),
            deny_domains: deny.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        Policy::new(&c)
    }

    fn check(p: &Policy, authority: &str) -> Result<(), Refusal> {
        p.check(&Destination::parse(authority).unwrap())
    }

    #[test]
    fn issue_ssrf_examples_are_refused() {
        let p = policy(&[], &[]);
        for a in ["10.0.0.1:443", "127.0.0.1:443", "[::1]:443", "169.254.169.254:80"] {
            assert!(matches!(check(&p, a), Err(Refusal::PrivateAddress(..))), "{a}");
        }
        assert_eq!(check(&p, "127.0.0.1:22"), Err(Refusal::Port(22)));
    }

    #[test]
    fn every_guarded_range_v4_and_v6() {
        let p = policy(&[], &[]);
        for a in [
            "0.0.0.0:443",
            "0.1.2.3:443",
            "127.255.0.1:443",
            "172.16.5.4:443",
            "172.31.255.255:443",
            "192.168.1.1:443",
            "100.64.0.1:443",
            "100.127.255.254:443",
            "224.0.0.1:443",
            "239.255.255.250:443",
            "255.255.255.255:443",
            "[::]:443",
            "[::ffff:127.0.0.1]:443",
            "[::ffff:10.1.2.3]:443",
            "[::ffff:169.254.169.254]:443",
            "[::ffff:1.1.1.1]:443",
            "[::ffff:0:127.0.0.1]:443",
            "[64:ff9b::a00:1]:443",
            "[64:ff9b::127.0.0.1]:443",
            "[64:ff9b:1::a00:1]:443",
            "[64:ff9b:1:ffff::1]:443",
            "[::127.0.0.1]:443",
            "[2002:a00:1::1]:443",
            "[2002:101:101::1]:443",
            "[2001:0:4136:e378:8000:63bf:3fff:fdd2]:443",
            "[2001:2::1]:443",
            "[2001:10::1]:443",
            "[2001:db8::1]:443",
            "[3fff::1]:443",
            "[100::1]:443",
            "[5f00::1]:443",
            "[2620:4f:8000::1]:443",
            "[4000::1]:443",
            "192.0.0.9:443",
            "192.0.2.1:443",
            "198.51.100.7:443",
            "203.0.113.250:443",
            "198.18.0.1:443",
            "198.19.255.255:443",
            "192.88.99.1:443",
            "192.31.196.1:443",
            "192.52.193.1:443",
            "192.175.48.1:443",
            "240.0.0.1:443",
            "[fd00::1]:443",
            "[fc12::1]:443",
            "[fe80::1]:443",
            "[ff02::1]:443",
            "localhost:443",
            "db.localhost:443",
            "2130706433:443",
            "0x7f.1:443",
        ] {
            assert!(matches!(check(&p, a), Err(Refusal::PrivateAddress(..))), "{a} must be refused");
        }
    }

    #[test]
    fn public_addresses_and_names_pass() {
        let p = policy(&[], &[]);
        for a in [
            "mastodon.social:443",
            "remote.test:80",
            "abcdefghijklmnopabcdefghijklmnopabcdefghijklmnopabcdefgh.onion:80",
            "1.1.1.1:443",
            "100.128.0.1:443",
            "172.32.0.1:443",
            "[2a01:4f8::1]:443",
            "[2001:200::1]:443",
            "[2600::1]:443",
            "[64:ff9b::101:101]:443",
            "192.0.1.1:443",
            "198.20.0.1:443",
            "203.0.114.1:443",
            "223.255.255.254:443",
        ] {
            assert_eq!(check(&p, a), Ok(()), "{a}");
        }
    }

    #[test]
    fn port_allowlist() {
        let p = policy(&[], &[]);
        assert_eq!(check(&p, "example.com:8443"), Err(Refusal::Port(8443)));
        assert_eq!(check(&p, "example.com:80"), Ok(()));
    }

    #[test]
    fn allow_hosts_is_an_exact_exception() {
        let p = policy(&["127.0.0.1:8080", "[::1]:443", "Intranet.Example:8443"], &[]);
        assert_eq!(check(&p, "127.0.0.1:8080"), Ok(()));
        assert_eq!(check(&p, "[::1]:443"), Ok(()));
        assert_eq!(check(&p, "intranet.example:8443"), Ok(()));
        assert!(check(&p, "127.0.0.1:8081").is_err());
        assert!(check(&p, "127.0.0.2:8080").is_err());
    }

    #[test]
    fn deny_domains_suffix_match() {
        let p = policy(&[], &["bad.example", ".worse.example"]);
        assert!(matches!(check(&p, "bad.example:443"), Err(Refusal::DeniedDomain(_))));
        assert!(matches!(check(&p, "a.b.bad.example:443"), Err(Refusal::DeniedDomain(_))));
        assert!(matches!(check(&p, "worse.example:443"), Err(Refusal::DeniedDomain(_))));
        assert_eq!(check(&p, "notbad.example:443"), Ok(()));
    }

    #[test]
    fn parse_rejects_garbage() {
        for a in ["", "host", "host:", "host:99999", "host:0", "ho st:80", "[::1:80", "a..b:80", "[zz]:80"] {
            assert!(Destination::parse(a).is_err(), "{a}");
        }
        assert_eq!(Destination::parse("Example.COM.:443").unwrap().to_string(), "example.com:443");
        assert_eq!(Destination::parse("[::1]:443").unwrap().to_string(), "[::1]:443");
    }

    #[test]
    fn resolved_addresses_are_guarded_too() {
        let p = policy(&[], &[]);
        let d = Destination::parse("rebind.example:443").unwrap();
        assert!(p.check_resolved(&d, "10.1.1.1".parse().unwrap()).is_err());
        assert!(p.check_resolved(&d, "8.8.8.8".parse().unwrap()).is_ok());
    }
}
