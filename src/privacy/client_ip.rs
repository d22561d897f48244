//! The client's address, and the pseudonym the instance sees instead.
//!
//! [`ClientAddr`] is the only place a raw client IP lives. It has no accessor outside
//! this module and prints as `[scrubbed]`, so it cannot reach a log line, a metric label,
//! a file or the upstream by accident. [`Pseudonymizer`] turns it into what Mastodon
//! stores: by default an HMAC-SHA256 of the address under a key that exists only in
//! memory and is replaced every `rotate` period, placed in `2001:db8::/32`:
//!
//! - same client, same period → same pseudonym, so Mastodon's per-IP rate limits,
//!   IP-keyed sign-up rules and suspicious-sign-in checks keep working;
//! - across a rotation or a restart → unlinkable: the key is gone;
//! - the hash fills the first 64 bits after the prefix because Rack::Attack and the
//!   suspicious-sign-in detector group IPv6 by /64;
//! - not `fc00::/7`: Rails treats unique-local addresses as proxies and skips them.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::RwLock,
    time::{Duration, Instant},
};

use http::HeaderMap;
use ipnet::IpNet;
use ring::{hmac, rand::SecureRandom};

use serde::Deserialize;

use crate::units::Span;

/// `[client_ip]` in the config file.
/// What the instance learns instead of a member's IP address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientIpMode {
    /// HMAC of the address under a rotating in-memory key, inside 2001:db8::/32.
    Pseudonym,
    /// One constant address for everybody (the instance's per-IP limits become global).
    Drop,
    /// The real address cut to /24 (IPv4) or /48 (IPv6): coarse, but real.
    Truncate,
}

/// Which header a trusted edge names the client in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ClientIpHeader {
    /// The right-most address that is not itself a trusted proxy (what an edge that
    /// overwrites or appends leaves there).
    #[serde(rename = "X-Forwarded-For", alias = "x-forwarded-for")]
    XForwardedFor,
    /// Exactly one address in exactly one header (nginx: `X-Real-IP $remote_addr`).
    #[serde(rename = "X-Real-IP", alias = "x-real-ip")]
    XRealIp,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientIpConfig {
    pub mode: ClientIpMode,
    /// How long one pseudonym key lives. Same client, same period → same pseudonym.
    pub rotate: Span,
    /// Load balancers or CDNs in front of pavise whose client-address header is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// The header those trusted proxies name the client in.
    pub header: ClientIpHeader,
    /// Request headers forwarded besides pavise's allowlist (`privacy::headers::ALLOW`);
    /// never one that can carry a client address or location.
    pub allow_headers: Vec<String>,
}

impl Default for ClientIpConfig {
    fn default() -> Self {
        ClientIpConfig {
            mode: ClientIpMode::Pseudonym,
            rotate: Span::secs(86_400),
            trusted_proxies: vec![],
            header: ClientIpHeader::XForwardedFor,
            allow_headers: vec![],
        }
    }
}

impl ClientIpConfig {
    /// Errors name the key at fault.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.rotate.get().as_secs() == 0 {
            return Err(("client_ip.rotate", "must be at least 1s".into()));
        }
        super::headers::check_allow_headers(&self.allow_headers).map_err(|m| ("client_ip.allow_headers", m))
    }
}

/// A client's real address. Deliberately opaque: see the module docs.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientAddr(IpAddr);

impl fmt::Debug for ClientAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientAddr([scrubbed])")
    }
}

impl fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[scrubbed]")
    }
}

/// Why the client address a trusted proxy gave was not believed (the connecting peer,
/// the proxy itself, stands in for the client then: one pseudonym for everybody behind
/// it, never one the client chose). Each one points at the edge's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unresolved {
    /// The header is missing: the edge does not set it, so whatever a client sends under
    /// that name passes through it unchecked (red-team F3).
    Missing,
    /// More than one value where exactly one was asked for (`X-Real-IP`).
    Multiple,
    /// A value that is not an address.
    Malformed,
}

impl Unresolved {
    pub const ALL: [Unresolved; 3] = [Unresolved::Missing, Unresolved::Multiple, Unresolved::Malformed];

    pub fn label(self) -> &'static str {
        match self {
            Unresolved::Missing => "missing",
            Unresolved::Multiple => "multiple",
            Unresolved::Malformed => "malformed",
        }
    }
}

impl ClientAddr {
    /// The client behind this connection. When the connecting peer is a trusted proxy (a
    /// load balancer or CDN in front of pavise), the client is what that proxy names in
    /// `header`:
    /// - `X-Forwarded-For`: the right-most address that is not itself trusted (an edge
    ///   that overwrites the header leaves one address, one that appends leaves the
    ///   client's own claims to the left of it: both are read right);
    /// - `X-Real-IP`: exactly one header holding exactly one address.
    ///
    /// A header that is missing, repeated (`X-Real-IP`) or not an address is not
    /// believed: the peer stands in, and the reason is returned for the operator.
    pub fn resolve(
        peer: IpAddr,
        headers: &HeaderMap,
        trusted: &[IpNet],
        header: ClientIpHeader,
    ) -> (ClientAddr, Option<Unresolved>) {
        let peer = peer.to_canonical();
        if !trusted.iter().any(|net| net.contains(&peer)) {
            return (ClientAddr(peer), None);
        }
        match header {
            ClientIpHeader::XForwardedFor => Self::from_forwarded_for(peer, headers, trusted),
            ClientIpHeader::XRealIp => Self::from_real_ip(peer, headers),
        }
    }

    fn from_forwarded_for(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> (ClientAddr, Option<Unresolved>) {
        let mut values = headers.get_all(http::header::HeaderName::from_static("x-forwarded-for")).iter().peekable();
        if values.peek().is_none() {
            return (ClientAddr(peer), Some(Unresolved::Missing));
        }
        let mut hops = Vec::with_capacity(4);
        for value in values {
            let Ok(text) = value.to_str() else { return (ClientAddr(peer), Some(Unresolved::Malformed)) };
            hops.extend(text.split(',').map(str::trim));
        }
        for hop in hops.iter().rev() {
            let Some(ip) = parse_hop(hop) else {
                // An unparsable hop means nothing to its left can be trusted.
                return (ClientAddr(peer), Some(Unresolved::Malformed));
            };
            if !trusted.iter().any(|net| net.contains(&ip)) {
                return (ClientAddr(ip), None);
            }
        }
        // Every hop is one of our own proxies: the request started there.
        (ClientAddr(peer), None)
    }

    fn from_real_ip(peer: IpAddr, headers: &HeaderMap) -> (ClientAddr, Option<Unresolved>) {
        let mut values = headers.get_all(http::header::HeaderName::from_static("x-real-ip")).iter();
        let Some(value) = values.next() else { return (ClientAddr(peer), Some(Unresolved::Missing)) };
        if values.next().is_some() || value.as_bytes().contains(&b',') {
            return (ClientAddr(peer), Some(Unresolved::Multiple));
        }
        match value.to_str().ok().map(str::trim).and_then(|v| v.parse::<IpAddr>().ok()) {
            Some(ip) => (ClientAddr(ip.to_canonical()), None),
            None => (ClientAddr(peer), Some(Unresolved::Malformed)),
        }
    }

    /// For tests and the rare caller that already holds a resolved address.
    pub fn from_ip(ip: IpAddr) -> ClientAddr {
        ClientAddr(ip.to_canonical())
    }
}

/// One `X-Forwarded-For` hop: `1.2.3.4`, `1.2.3.4:567`, `2001:db8::1`, `[2001:db8::1]:567`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(sock) = hop.parse::<std::net::SocketAddr>() {
        return Some(sock.ip().to_canonical());
    }
    None
}

/// One HMAC key and when it was made.
struct Epoch {
    key: hmac::Key,
    born: Instant,
}

/// Maps client addresses to what the instance is told. Shared by all connections.
pub struct Pseudonymizer {
    mode: ClientIpMode,
    rotate: Duration,
    epoch: RwLock<Epoch>,
}

impl fmt::Debug for Pseudonymizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pseudonymizer").field("mode", &self.mode).field("rotate", &self.rotate).finish_non_exhaustive()
    }
}

/// The address every client gets in `drop` mode.
pub const DROP_ADDRESS: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);

impl Pseudonymizer {
    pub fn new(cfg: &ClientIpConfig) -> Pseudonymizer {
        Pseudonymizer { mode: cfg.mode, rotate: cfg.rotate.get(), epoch: RwLock::new(fresh_epoch()) }
    }

    pub fn mode(&self) -> ClientIpMode {
        self.mode
    }

    /// What the instance sees for this client, now.
    pub fn pseudonym(&self, addr: &ClientAddr) -> IpAddr {
        match self.mode {
            ClientIpMode::Drop => IpAddr::V6(DROP_ADDRESS),
            ClientIpMode::Truncate => truncate(addr.0),
            ClientIpMode::Pseudonym => IpAddr::V6(self.hash(addr.0)),
        }
    }

    /// How a client is written in pavise's own logs, given what the instance was told.
    ///
    /// In `truncate` mode the instance sees the real /24 (or /48); pavise's access log must
    /// not keep it too, so it gets that network's keyed pseudonym (stable for the key's
    /// period, like every pseudonym). The other modes already tell the instance nothing
    /// real, and log exactly that.
    pub fn log_form(&self, shown: IpAddr) -> IpAddr {
        match self.mode {
            ClientIpMode::Truncate => IpAddr::V6(self.hash(shown)),
            ClientIpMode::Pseudonym | ClientIpMode::Drop => shown,
        }
    }

    /// Replaces the key at once: every client gets a new, unlinkable pseudonym.
    pub fn rotate_now(&self) {
        let mut epoch = self.epoch.write().unwrap_or_else(|e| e.into_inner());
        *epoch = fresh_epoch();
    }

    /// Takes the key several nodes share (`[cluster]`, from Redis) for the `valid_for` left
    /// of its period: after that, unless a newer one is installed, the usual lazy rotation
    /// replaces it with a fresh key of this node's own.
    pub fn install_shared_key(&self, secret: &[u8; 32], valid_for: Duration) {
        let born = Instant::now().checked_sub(self.rotate.saturating_sub(valid_for)).unwrap_or_else(Instant::now);
        let mut epoch = self.epoch.write().unwrap_or_else(|e| e.into_inner());
        *epoch = Epoch { key: hmac::Key::new(hmac::HMAC_SHA256, secret), born };
    }

    fn hash(&self, ip: IpAddr) -> Ipv6Addr {
        let input = hash_input(ip);
        {
            let epoch = self.epoch.read().unwrap_or_else(|e| e.into_inner());
            if epoch.born.elapsed() < self.rotate {
                return to_documentation_range(&hmac::sign(&epoch.key, &input));
            }
        }
        // Rotation is lazy: the first request after the period ends replaces the key.
        let mut epoch = self.epoch.write().unwrap_or_else(|e| e.into_inner());
        if epoch.born.elapsed() >= self.rotate {
            *epoch = fresh_epoch();
        }
        to_documentation_range(&hmac::sign(&epoch.key, &input))
    }
}

fn fresh_epoch() -> Epoch {
    let mut secret = [0u8; 32];
    // SystemRandom only fails when the OS has no entropy source at all; a relay that
    // cannot make a secret key must not run with a guessable one.
    #[allow(clippy::expect_used)]
    ring::rand::SystemRandom::new().fill(&mut secret).expect("the OS random source failed");
    Epoch { key: hmac::Key::new(hmac::HMAC_SHA256, &secret), born: Instant::now() }
}

/// IPv4: the whole address. IPv6: the /64 a device's privacy addresses rotate inside.
fn hash_input(ip: IpAddr) -> Vec<u8> {
    match ip.to_canonical() {
        IpAddr::V4(v4) => [&[4u8][..], &v4.octets()].concat(),
        IpAddr::V6(v6) => [&[6u8][..], &v6.octets()[..8]].concat(),
    }
}

fn to_documentation_range(tag: &hmac::Tag) -> Ipv6Addr {
    let h = tag.as_ref();
    let mut octets = [0u8; 16];
    octets[0..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    octets[4..16].copy_from_slice(&h[..12]);
    Ipv6Addr::from(octets)
}

fn truncate(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::V4(Ipv4Addr::new(a, b, c, 0))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::Span;

    fn cfg(mode: ClientIpMode) -> ClientIpConfig {
        ClientIpConfig { mode, rotate: Span::secs(3600), ..ClientIpConfig::default() }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn raw_address_never_prints() {
        let a = ClientAddr::from_ip(ip("203.0.113.9"));
        assert_eq!(format!("{a}"), "[scrubbed]");
        assert!(!format!("{a:?}").contains("203"));
    }

    #[test]
    fn pseudonyms_are_stable_distinct_and_in_the_documentation_range() {
        let p = Pseudonymizer::new(&cfg(ClientIpMode::Pseudonym));
        let a = p.pseudonym(&ClientAddr::from_ip(ip("203.0.113.9")));
        let a2 = p.pseudonym(&ClientAddr::from_ip(ip("203.0.113.9")));
        let b = p.pseudonym(&ClientAddr::from_ip(ip("203.0.113.10")));
        assert_eq!(a, a2);
        assert_ne!(a, b);
        let doc: IpNet = "2001:db8::/32".parse().unwrap();
        assert!(doc.contains(&a) && doc.contains(&b));
        // Distinct clients differ inside the first 64 bits (Rack::Attack groups by /64).
        let (IpAddr::V6(a), IpAddr::V6(b)) = (a, b) else { panic!() };
        assert_ne!(a.segments()[..4], b.segments()[..4]);
    }

    #[test]
    fn rotation_unlinks() {
        let p = Pseudonymizer::new(&cfg(ClientIpMode::Pseudonym));
        let c = ClientAddr::from_ip(ip("198.51.100.7"));
        let before = p.pseudonym(&c);
        p.rotate_now();
        assert_ne!(before, p.pseudonym(&c));
    }

    #[test]
    fn rotation_happens_when_the_period_ends() {
        let p = Pseudonymizer::new(&ClientIpConfig {
            rotate: Span(Duration::from_millis(20)),
            ..cfg(ClientIpMode::Pseudonym)
        });
        let c = ClientAddr::from_ip(ip("198.51.100.7"));
        let before = p.pseudonym(&c);
        std::thread::sleep(Duration::from_millis(40));
        assert_ne!(before, p.pseudonym(&c));
    }

    #[test]
    fn ipv6_privacy_addresses_of_one_prefix_share_a_pseudonym() {
        let p = Pseudonymizer::new(&cfg(ClientIpMode::Pseudonym));
        let a = p.pseudonym(&ClientAddr::from_ip(ip("2a01:4f8:1:2::aaaa")));
        let b = p.pseudonym(&ClientAddr::from_ip(ip("2a01:4f8:1:2::bbbb")));
        let c = p.pseudonym(&ClientAddr::from_ip(ip("2a01:4f8:1:3::aaaa")));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn drop_and_truncate_modes() {
        let d = Pseudonymizer::new(&cfg(ClientIpMode::Drop));
        assert_eq!(d.pseudonym(&ClientAddr::from_ip(ip("1.2.3.4"))), IpAddr::V6(DROP_ADDRESS));
        let t = Pseudonymizer::new(&cfg(ClientIpMode::Truncate));
        assert_eq!(t.pseudonym(&ClientAddr::from_ip(ip("1.2.3.4"))), ip("1.2.3.0"));
        assert_eq!(t.pseudonym(&ClientAddr::from_ip(ip("2a01:4f8:1:2::aaaa"))), ip("2a01:4f8:1::"));
        assert_eq!(t.pseudonym(&ClientAddr::from_ip(ip("::ffff:1.2.3.4"))), ip("1.2.3.0"));
    }

    #[test]
    fn truncate_mode_logs_a_pseudonym_not_the_network() {
        let t = Pseudonymizer::new(&cfg(ClientIpMode::Truncate));
        let shown = t.pseudonym(&ClientAddr::from_ip(ip("203.0.113.9")));
        assert_eq!(shown, ip("203.0.113.0"), "the instance gets the /24");
        let logged = t.log_form(shown);
        assert!(!logged.to_string().contains("203.0.113"), "{logged}");
        let doc: IpNet = "2001:db8::/32".parse().unwrap();
        assert!(doc.contains(&logged));
        // One network, one log name (the instance's own grouping is kept in the log).
        assert_eq!(logged, t.log_form(t.pseudonym(&ClientAddr::from_ip(ip("203.0.113.77")))));
        assert_ne!(logged, t.log_form(t.pseudonym(&ClientAddr::from_ip(ip("203.0.114.9")))));
        let v6 = t.log_form(t.pseudonym(&ClientAddr::from_ip(ip("2a01:4f8:1:2::aaaa"))));
        assert!(!v6.to_string().starts_with("2a01"), "{v6}");
        // The other modes log what the instance was told.
        let p = Pseudonymizer::new(&cfg(ClientIpMode::Pseudonym));
        let shown = p.pseudonym(&ClientAddr::from_ip(ip("203.0.113.9")));
        assert_eq!(p.log_form(shown), shown);
    }

    #[test]
    fn trusted_proxy_chain_is_walked_from_the_right() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let xff = ClientIpHeader::XForwardedFor;
        let resolve = |peer: &str, h: &HeaderMap| ClientAddr::resolve(ip(peer), h, &trusted, xff);
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "6.6.6.6, 203.0.113.9, 10.0.0.2".parse().unwrap());
        // Behind the trusted LB the client is 203.0.113.9; 6.6.6.6 is a spoof it appended to.
        assert_eq!(resolve("10.0.0.1", &h), (ClientAddr::from_ip(ip("203.0.113.9")), None));
        // From an untrusted peer the header is ignored.
        assert_eq!(resolve("192.0.2.1", &h), (ClientAddr::from_ip(ip("192.0.2.1")), None));
        h.insert("x-forwarded-for", "[2001:db8::5]:443".parse().unwrap());
        assert_eq!(resolve("10.0.0.1", &h).0, ClientAddr::from_ip(ip("2001:db8::5")));
        // Two header lines are one list (the right-most line is the edge's).
        h.insert("x-forwarded-for", "6.6.6.6".parse().unwrap());
        h.append("x-forwarded-for", "198.51.100.4".parse().unwrap());
        assert_eq!(resolve("10.0.0.1", &h).0, ClientAddr::from_ip(ip("198.51.100.4")));
        h.insert("x-forwarded-for", "garbage".parse().unwrap());
        assert_eq!(resolve("10.0.0.1", &h), (ClientAddr::from_ip(ip("10.0.0.1")), Some(Unresolved::Malformed)));
        h.insert("x-forwarded-for", "203.0.113.9, garbage".parse().unwrap());
        assert_eq!(resolve("10.0.0.1", &h).1, Some(Unresolved::Malformed), "nothing left of a bad hop counts");
        // An edge that sets nothing: nobody gets to choose a pseudonym.
        assert_eq!(
            resolve("10.0.0.1", &HeaderMap::new()),
            (ClientAddr::from_ip(ip("10.0.0.1")), Some(Unresolved::Missing))
        );
    }

    #[test]
    fn x_real_ip_is_exactly_one_address() {
        let trusted: Vec<IpNet> = vec!["127.0.0.1/32".parse().unwrap()];
        let resolve = |h: &HeaderMap| ClientAddr::resolve(ip("127.0.0.1"), h, &trusted, ClientIpHeader::XRealIp);
        let edge = ClientAddr::from_ip(ip("127.0.0.1"));
        let mut h = HeaderMap::new();
        h.insert("x-real-ip", " 203.0.113.9 ".parse().unwrap());
        // X-Forwarded-For is not read in this mode, whatever it says.
        h.insert("x-forwarded-for", "6.6.6.6".parse().unwrap());
        assert_eq!(resolve(&h), (ClientAddr::from_ip(ip("203.0.113.9")), None));
        h.insert("x-real-ip", "6.6.6.6, 203.0.113.9".parse().unwrap());
        assert_eq!(resolve(&h), (edge.clone(), Some(Unresolved::Multiple)));
        h.insert("x-real-ip", "203.0.113.9".parse().unwrap());
        h.append("x-real-ip", "6.6.6.6".parse().unwrap());
        assert_eq!(resolve(&h), (edge.clone(), Some(Unresolved::Multiple)));
        h.insert("x-real-ip", "203.0.113.9:443".parse().unwrap());
        assert_eq!(resolve(&h), (edge.clone(), Some(Unresolved::Malformed)));
        h.remove("x-real-ip");
        assert_eq!(resolve(&h), (edge, Some(Unresolved::Missing)));
    }
}
