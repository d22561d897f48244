//! Which request headers reach the instance: an allowlist, with a hard deny table under it.
//!
//! A denylist of client-IP and location headers can never be complete: every CDN, load
//! balancer and WAF invents its own (`Cdn-Src-Ip`, `Fly-Region`, `Fastly-FF`, `CF-Ray`'s
//! colo suffix, `X-Vercel-Id`'s region, ...). So a client request carries on only the
//! headers the instance needs ([`ALLOW`]): HTTP itself, authentication, content and
//! caching, CORS and fetch metadata, WebSocket handshakes, Mastodon's own
//! (`Idempotency-Key`, `X-CSRF-Token`, `X-Requested-With`), and what federation needs
//! (`Signature`, `Signature-Input`, `Digest`, `Content-Digest`, `Date`,
//! `Collection-Synchronization`). A signed request also keeps every header its signature
//! covers, read from the `headers="..."` list of a draft-cavage `Signature` (or
//! `Authorization: Signature`) and the component list of an RFC 9421 `Signature-Input`, so
//! an inbox delivery or an authorized fetch still verifies. The admin may add names
//! (`[client_ip] allow_headers`, [`RequestHeaders::new`]).
//!
//! Under the allowlist stays the old table ([`STRIP_EXACT`], [`STRIP_PREFIXES`]), now a
//! hard deny: nothing, not the admin's list and not a signature, lets one of those names
//! through. Families that CDNs keep growing (Cloudflare's visitor-location headers,
//! CloudFront-Viewer-*, Vercel's x-vercel-ip-*, ad-hoc GeoIP headers) are matched by
//! prefix. Sources: ../shared/METADATA.md §2.
//!
//! Names are compared as Rack reads them: Rack turns a header into `HTTP_` + the name
//! upper-cased with `-` replaced by `_`, so `X_Forwarded_For` and `X-Forwarded-For` are
//! one key to the instance. Every name is folded (`_` to `-`; case is already folded by
//! `http`, which keeps names lowercase) before the deny table is consulted; no allowed
//! name has a `_`, and names with one are dropped on entry anyway (`proxy::contract::hop`).
//!
//! Cost: one pass over the headers, a `match` on each name (no hashing, no allocation);
//! only a request with something to drop collects those names, and only a signed one
//! reads its covered list.

use http::{HeaderMap, HeaderName, HeaderValue};

/// Headers removed by exact (case-insensitive) name.
pub const STRIP_EXACT: &[&str] = &[
    "forwarded",
    "forwarded-for",
    "x-forwarded",
    "x-forwarded-for",
    "x-original-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-proto",
    "x-forwarded-server",
    "client-ip",
    "x-cluster-client-ip",
    "cf-connecting-ip",
    "cf-connecting-ipv6",
    "cf-pseudo-ipv4",
    "fastly-client-ip",
    "fly-client-ip",
    "x-vercel-forwarded-for",
    "x-azure-clientip",
    "x-azure-socketip",
    "do-connecting-ip",
    "x-envoy-external-address",
    "x-proxyuser-ip",
    "wl-proxy-client-ip",
    "proxy-client-ip",
    "x-nf-client-connection-ip",
    "x-akamai-edgescape",
    "x-real-country",
    "x-arr-clientip",
    "incap-client-ip",
    "x-sucuri-clientip",
    "x-sucuri-country",
    "x-sp-forwarded-ip",
    "ali-cdn-real-ip",
    "x-wap-network-client-ip",
    "cdn-requestcountrycode",
    // Envoy's client certificate details (subject, URI and DNS SANs): who the client is.
    "x-forwarded-client-cert",
    // `Via` names the proxies a request crossed; it can identify a client's network.
    "via",
    // Issue 10, red team: CDNetworks' client address, and the ones ad-hoc setups invent.
    "cdn-src-ip",
    "x-cdn-src-ip",
    "x-real-client-ip",
    "x-client-real-ip",
    "x-original-ip",
    "x-original-remote-addr",
    "x-forwarded-for-original",
    "x-envoy-original-forwarded-for",
    "x-source-ip",
    "x-amzn-source-ip",
    "x-ms-client-ip",
    "x-client-address",
    "x-forwarded-client-ip",
    "x-trusted-client-ip",
    "cdn-clientip",
    "x-cdn-client-ip",
    "x-forwarded-ip",
    "real-ip",
    "x-user-ip",
    "x-device-ip",
    "remote-addr",
    "remote-host",
    // The edge a client reached names where it is: Fastly's POP chain, Vercel's region id.
    "x-served-by",
    "x-vercel-id",
    // Mobile carriers' subscriber headers: the phone number or subscriber id itself.
    "x-msisdn",
    "x-up-calling-line-id",
    "x-nokia-msisdn",
    "x-imsi",
    "x-wap-profile",
];

/// Header families removed by name prefix.
pub const STRIP_PREFIXES: &[&str] = &[
    // Cloudflare: IP geolocation, the visitor-location managed transform, and `CF-Ray`,
    // whose suffix is the colo (city) the client reached; the instance needs none of them.
    "cf-",
    // Fly.io (`Fly-Region`, `Fly-Request-Id` ending in the region) and Fastly
    // (`Fastly-FF`: the POP chain), the same.
    "fly-",
    "fastly-",
    // CloudFront's `X-Amz-Cf-Pop` (the edge location) and id; Akamai's edge headers.
    "x-amz-cf-",
    "akamai-",
    "x-akamai-",
    "x-edge-",
    // AWS CloudFront: viewer address and every location header.
    "cloudfront-viewer-",
    // Google App Engine: country, region, city, city lat/long, user IP.
    "x-appengine-",
    // Vercel geolocation.
    "x-vercel-ip-",
    // Netlify geolocation.
    "x-nf-geo",
    // The ad-hoc client-address families: `X-Client-IP-Address`, `X-Originating-Addr`,
    // `X-Remote-Host`, `X-Real-IP-Address`, `True-Client-IP-*` (red-team media pass 10:
    // a signature covering one kept it).
    "x-client-ip",
    "x-originating-",
    "x-remote-",
    "x-real-ip",
    "true-client-",
    // Custom GeoIP headers (nginx geoip2 modules, CDN rules).
    "x-geo-",
    "x-geoip-",
    "geoip-",
    "x-country",
    "x-city",
    "x-fastly-country",
    // Google Cloud load balancers' custom headers, Azure Front Door's geo header.
    "x-client-geo",
    "x-client-region",
    "x-client-city",
];

/// Whether `name` (lowercase, as `http` stores it) carries client address or location,
/// in any spelling Rack reads as the same header.
pub fn is_client_ip_or_geo(name: &HeaderName) -> bool {
    let name = name.as_str().as_bytes();
    if memchr::memchr(b'_', name).is_none() {
        return in_table(name);
    }
    let folded: Vec<u8> = name.iter().map(|&b| if b == b'_' { b'-' } else { b }).collect();
    in_table(&folded)
}

fn in_table(name: &[u8]) -> bool {
    // Most of a request's headers (host, user-agent, sec-*, origin, referer) start with a
    // letter no entry starts with: one lookup instead of a scan of the table.
    if !name.first().is_some_and(|&b| FIRST_BYTES[usize::from(b)]) {
        return false;
    }
    STRIP_EXACT.iter().any(|e| e.as_bytes() == name) || STRIP_PREFIXES.iter().any(|p| name.starts_with(p.as_bytes()))
}

/// The first bytes of every table entry.
const FIRST_BYTES: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < STRIP_EXACT.len() {
        t[STRIP_EXACT[i].as_bytes()[0] as usize] = true;
        i += 1;
    }
    let mut i = 0;
    while i < STRIP_PREFIXES.len() {
        t[STRIP_PREFIXES[i].as_bytes()[0] as usize] = true;
        i += 1;
    }
    t
};

/// Request headers the instance needs (lowercase), and the `match` that reads them.
macro_rules! allowlist {
    ($($name:literal),+ $(,)?) => {
        /// Every request header a client request keeps (besides what its signature
        /// covers and `[client_ip] allow_headers`). None of them is in the deny table.
        pub const ALLOW: &[&str] = &[$($name),+];

        fn in_allowlist(name: &str) -> bool {
            matches!(name, $($name)|+)
        }
    };
}

allowlist![
    // The request itself, as HTTP/1.1 and HTTP/2 clients send it.
    "host",
    "user-agent",
    "accept",
    "accept-language", // Mastodon picks the UI and e-mail locale from it.
    "accept-encoding",
    "accept-charset",
    "content-type",
    "content-length",
    "content-encoding", // the media stage refuses anything but `identity`
    "content-language",
    // Caching, conditional and partial requests.
    "cache-control",
    "pragma",
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
    "if-range",
    "range",
    // Authentication and sessions.
    "authorization",
    "cookie",
    // CORS and fetch metadata (Rails' origin check, rack-cors preflights).
    "origin",
    "referer",
    "access-control-request-method",
    "access-control-request-headers",
    "sec-fetch-site",
    "sec-fetch-mode",
    "sec-fetch-dest",
    "sec-fetch-user",
    // WebSocket handshakes (the streaming API's token may ride in Sec-WebSocket-Protocol);
    // `Connection` and `Upgrade` only survive entry as exactly a WebSocket request.
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-extensions",
    // Mastodon's own.
    "idempotency-key",
    "x-csrf-token",
    "x-requested-with",
    // Federation: HTTP signatures (draft-cavage and RFC 9421), and the followers-sync
    // header Mastodon reads beside them on an inbox delivery.
    "signature",
    "signature-input",
    "digest",
    "content-digest",
    "date",
    "collection-synchronization",
];

/// Which request headers reach the instance: [`ALLOW`], the admin's additions, and on a
/// signed request what the signature covers; never a name of the deny table.
#[derive(Debug, Clone, Default)]
pub struct RequestHeaders {
    /// `[client_ip] allow_headers`, validated ([`check_allow_headers`]).
    extra: Vec<HeaderName>,
}

impl RequestHeaders {
    /// The policy with the admin's additions (checked by [`check_allow_headers`] when the
    /// config was validated; a name that does not parse is skipped here).
    pub fn new(extra: &[String]) -> RequestHeaders {
        RequestHeaders {
            extra: extra
                .iter()
                .filter(|n| check_allow_header(n).is_ok())
                .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
                .collect(),
        }
    }

    /// Removes every header the instance is not to see. `federation`: the request is on
    /// a route where the instance verifies HTTP signatures (the inbox, ActivityPub objects
    /// and the pages that serve them), so what its signature covers is kept too; on the
    /// client API a signature is no reason (a web page could send one through CORS).
    pub fn filter(&self, headers: &mut HeaderMap, federation: bool) {
        let doomed: Vec<HeaderName> = {
            // Read only when a header is neither allowed nor denied: most requests never
            // get that far.
            let mut covered: Option<Covered<'_>> = None;
            let mut doomed = Vec::new();
            for name in headers.keys() {
                if in_allowlist(name.as_str()) {
                    continue;
                }
                let keep = !is_client_ip_or_geo(name)
                    && (self.extra.iter().any(|e| e == name)
                        || (federation && covered.get_or_insert_with(|| Covered::of(headers)).covers(name.as_str())));
                if !keep {
                    doomed.push(name.clone());
                }
            }
            doomed
        };
        for name in doomed {
            headers.remove(name);
        }
    }
}

/// The header names a request's signatures cover: borrowed from the signature headers,
/// and empty (no allocation) for the unsigned requests of clients.
#[derive(Default)]
struct Covered<'a>(Vec<&'a [u8]>);

impl<'a> Covered<'a> {
    fn of(headers: &'a HeaderMap) -> Covered<'a> {
        let mut covered = Covered::default();
        for v in headers.get_all(http::header::AUTHORIZATION) {
            let v = v.as_bytes();
            if v.len() > 10 && v[..10].eq_ignore_ascii_case(b"signature ") {
                covered.cavage(&v[10..]);
            }
        }
        for v in headers.get_all("signature") {
            covered.cavage(v.as_bytes());
        }
        for v in headers.get_all("signature-input") {
            covered.rfc9421(v.as_bytes());
        }
        covered
    }

    /// draft-cavage: `keyId="...",headers="(request-target) host date digest",...`; the
    /// pseudo-headers in parentheses name no header.
    fn cavage(&mut self, value: &'a [u8]) {
        for param in value.split(|&b| b == b',') {
            let Some(eq) = memchr::memchr(b'=', param) else { continue };
            if !param[..eq].trim_ascii().eq_ignore_ascii_case(b"headers") {
                continue;
            }
            let list = param[eq + 1..].trim_ascii();
            let list = list.strip_prefix(b"\"").unwrap_or(list);
            let list = list.strip_suffix(b"\"").unwrap_or(list);
            self.0.extend(list.split(|b| b.is_ascii_whitespace()).filter(|n| !n.is_empty() && n[0] != b'('));
        }
    }

    /// RFC 9421: `sig1=("@method" "content-digest" "date");created=...;keyid="..."`: the
    /// quoted components inside the parentheses; derived ones (`@...`) name no header.
    fn rfc9421(&mut self, value: &'a [u8]) {
        let (mut depth, mut i) = (0usize, 0usize);
        while i < value.len() {
            match value[i] {
                b'(' => depth += 1,
                b')' => depth = depth.saturating_sub(1),
                b'"' => {
                    let len = memchr::memchr(b'"', &value[i + 1..]).unwrap_or(value.len() - i - 1);
                    let component = &value[i + 1..i + 1 + len];
                    if depth > 0 && component.first().is_some_and(|&b| b != b'@') {
                        self.0.push(component);
                    }
                    i += len + 1;
                }
                _ => {}
            }
            i += 1;
        }
    }

    fn covers(&self, name: &str) -> bool {
        self.0.iter().any(|c| c.eq_ignore_ascii_case(name.as_bytes()))
    }
}

/// Why a name cannot be added to the allowlist (`[client_ip] allow_headers`).
pub fn check_allow_header(name: &str) -> Result<(), String> {
    let name = name.trim();
    let parsed = HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("{name:?} is not a header name"))?;
    if name.contains('_') {
        return Err(format!("{name:?}: names with `_` are dropped on entry (Rack reads `_` as `-`)"));
    }
    if is_client_ip_or_geo(&parsed) {
        return Err(format!("{name:?} can carry a client address or location and is never forwarded"));
    }
    Ok(())
}

/// [`check_allow_header`] for every name of `[client_ip] allow_headers`.
pub fn check_allow_headers(names: &[String]) -> Result<(), String> {
    names.iter().try_for_each(|n| check_allow_header(n))
}

/// Removes every header the instance does not need and every client-IP or geolocation
/// header ([`RequestHeaders`] with no additions): for requests pavise holds and replays
/// itself (the shield's quarantine), which never see the client-IP stage.
pub fn strip_client_ip_and_geo(headers: &mut HeaderMap) {
    RequestHeaders::default().filter(headers, true);
}

/// Writes what the instance may know: the pseudonym, the scheme and the host.
/// `forwarded_for`: the pseudonym as text ([`RequestCtx::forwarded_for`]).
///
/// [`RequestCtx::forwarded_for`]: crate::proxy::contract::RequestCtx::forwarded_for
pub fn set_forwarded(headers: &mut HeaderMap, forwarded_for: &HeaderValue, https: bool, host: Option<&str>) {
    headers.insert(HeaderName::from_static("x-forwarded-for"), forwarded_for.clone());
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(if https { "https" } else { "http" }),
    );
    if let Some(v) = host.and_then(|h| HeaderValue::from_str(h).ok()) {
        headers.insert(HeaderName::from_static("x-forwarded-host"), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every header the foundation issue lists, spelled as clients send them.
    const ISSUE_LIST: &[&str] = &[
        "Forwarded",
        "Client-IP",
        "X-Forwarded-For",
        "X-Real-IP",
        "True-Client-IP",
        "CF-Connecting-IP",
        "CF-Connecting-IPv6",
        "CF-IPCountry",
        "CF-IPCity",
        "CF-IPContinent",
        "CF-IPLatitude",
        "CF-IPLongitude",
        "CF-Region",
        "CF-Region-Code",
        "CF-Postal-Code",
        "CF-Timezone",
        "CF-Metro-Code",
        "CF-Pseudo-IPv4",
        "Fastly-Client-IP",
        "X-Client-IP",
        "X-Cluster-Client-IP",
        "X-Forwarded",
        "Forwarded-For",
        "CloudFront-Viewer-Address",
        "CloudFront-Viewer-Country",
        "CloudFront-Viewer-Country-Name",
        "CloudFront-Viewer-Country-Region",
        "CloudFront-Viewer-City",
        "CloudFront-Viewer-Postal-Code",
        "CloudFront-Viewer-Time-Zone",
        "CloudFront-Viewer-Latitude",
        "CloudFront-Viewer-Longitude",
        "CloudFront-Viewer-Metro-Code",
        "CloudFront-Viewer-ASN",
        "X-AppEngine-Country",
        "X-AppEngine-Region",
        "X-AppEngine-City",
        "X-AppEngine-CityLatLong",
        "X-AppEngine-User-IP",
        "X-Geo-Country",
        "X-Geo-City",
        "X-GeoIP-Country-Code",
        "X-GeoIP-Latitude",
        "GeoIP-Country",
        "X-Country-Code",
        "X-Real-Country",
        "X-City",
        "Fly-Client-IP",
        "x-vercel-forwarded-for",
        "x-vercel-ip-country",
        "x-vercel-ip-country-region",
        "x-vercel-ip-city",
        "x-vercel-ip-latitude",
        "x-vercel-ip-longitude",
        "x-vercel-ip-timezone",
        "x-vercel-ip-postal-code",
        "X-Azure-ClientIP",
        "X-Azure-SocketIP",
        "DO-Connecting-IP",
        "X-Original-Forwarded-For",
        "X-Envoy-External-Address",
        "X-ProxyUser-Ip",
        "WL-Proxy-Client-IP",
        "Proxy-Client-IP",
        "X-Nf-Client-Connection-Ip",
        "X-Nf-Geo",
        "X-Akamai-Edgescape",
        "X-Fastly-Country-Code",
        // Issue 10.
        "X-Originating-IP",
        "X-ARR-ClientIP",
        "Incap-Client-IP",
        "X-Sucuri-ClientIP",
        "X-Sucuri-Country",
        "X-Remote-IP",
        "X-Remote-Addr",
        "X-SP-Forwarded-IP",
        "Ali-CDN-Real-IP",
        "X-Client-Geo-Location",
        "X-Client-Region",
        "X-Client-Region-Subdivision",
        "X-Client-City-Lat-Long",
        "CDN-RequestCountryCode",
        "X-Forwarded-Client-Cert",
        "X_Forwarded_For",
        "Client_IP",
        "x_real_ip",
        "CF_Connecting_IP",
        "X-Forwarded_For",
    ];

    #[test]
    fn every_listed_header_is_stripped() {
        for name in ISSUE_LIST {
            let parsed = HeaderName::from_bytes(name.as_bytes()).unwrap();
            assert!(is_client_ip_or_geo(&parsed), "{name} would reach the instance");
            let mut h = HeaderMap::new();
            h.insert(parsed, HeaderValue::from_static("203.0.113.9"));
            strip_client_ip_and_geo(&mut h);
            assert!(h.is_empty(), "{name} survived");
        }
    }

    /// Every spelling Rack reads as `name`: as listed, upper case, mixed case, and with
    /// every `-` (or just the first) written `_`.
    fn spellings(name: &str) -> Vec<String> {
        let mixed: String =
            name.chars().enumerate().map(|(i, c)| if i % 2 == 0 { c.to_ascii_uppercase() } else { c }).collect();
        vec![
            name.to_owned(),
            name.to_ascii_uppercase(),
            mixed,
            name.replace('-', "_"),
            name.to_ascii_uppercase().replace('-', "_"),
            name.replacen('-', "_", 1),
        ]
    }

    fn stripped(spelling: &str) -> bool {
        let parsed = HeaderName::from_bytes(spelling.as_bytes()).unwrap();
        let mut h = HeaderMap::new();
        h.insert(parsed.clone(), HeaderValue::from_static("203.0.113.9"));
        strip_client_ip_and_geo(&mut h);
        is_client_ip_or_geo(&parsed) && h.is_empty()
    }

    #[test]
    fn every_exact_entry_is_stripped_in_every_spelling() {
        for entry in STRIP_EXACT {
            for spelling in spellings(entry) {
                assert!(stripped(&spelling), "table entry {entry:?}: {spelling:?} would reach the instance");
            }
        }
    }

    #[test]
    fn every_prefix_entry_is_stripped_in_every_spelling() {
        for prefix in STRIP_PREFIXES {
            for spelling in spellings(&format!("{prefix}something")) {
                assert!(stripped(&spelling), "table prefix {prefix:?}: {spelling:?} would reach the instance");
            }
        }
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn names(h: &HeaderMap) -> Vec<&str> {
        let mut n: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        n.sort_unstable();
        n
    }

    #[test]
    fn the_allowlist_holds_no_denied_name_and_every_entry_passes() {
        for name in ALLOW {
            let parsed = HeaderName::from_static(name);
            assert!(!is_client_ip_or_geo(&parsed), "{name} is in the deny table");
            assert!(check_allow_header(name).is_ok(), "{name}");
            let mut h = map(&[(name, "1")]);
            RequestHeaders::default().filter(&mut h, true);
            assert_eq!(names(&h), vec![*name], "{name} must reach the instance");
        }
    }

    /// What Mastodon's web UI, Mastodon.py, toot, Tusky/Ivory-style apps, browsers and
    /// federating servers send and the instance reads.
    #[test]
    fn what_clients_and_servers_send_and_mastodon_reads_passes() {
        let sent = [
            ("host", "social.example"),
            ("user-agent", "Tusky/27.0 Android/14"),
            ("accept", "application/json"),
            ("accept-language", "fa-IR,fa;q=0.9"),
            ("accept-encoding", "gzip, br"),
            ("authorization", "Bearer token"),
            ("cookie", "_session_id=abc"),
            ("x-csrf-token", "t"),
            ("x-requested-with", "XMLHttpRequest"),
            ("idempotency-key", "k-1"),
            ("origin", "https://social.example"),
            ("referer", "https://social.example/home"),
            ("sec-fetch-site", "same-origin"),
            ("sec-fetch-mode", "cors"),
            ("sec-fetch-dest", "empty"),
            ("content-type", "multipart/form-data; boundary=x"),
            ("content-length", "10"),
            ("if-none-match", "W/\"x\""),
            ("cache-control", "no-cache"),
            ("range", "bytes=0-"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-version", "13"),
            ("sec-websocket-protocol", "token"),
            ("date", "Tue, 01 Dec 2026 10:00:00 GMT"),
            ("digest", "SHA-256=x"),
            ("signature", "keyId=\"k\",headers=\"(request-target) host date digest\",signature=\"s\""),
            ("collection-synchronization", "collectionId=\"x\""),
        ];
        let mut h = map(&sent);
        RequestHeaders::default().filter(&mut h, true);
        assert_eq!(h.len(), sent.len(), "{:?}", names(&h));
    }

    /// The red team's edge headers (issue 10, H1): each names the client or the edge the
    /// client's phone reached. The allowlist drops them all; those that name a client or
    /// an edge are in the deny table too, so nothing can let them through.
    #[test]
    fn edge_and_cdn_headers_outside_the_table_are_dropped() {
        let mut h = map(&[
            ("cdn-src-ip", "203.0.113.77"),
            ("cf-ray", "8e9c1b2a3f4d5e6f-TLV"),
            ("cf-visitor", "{\"scheme\":\"https\"}"),
            ("fly-region", "otp"),
            ("fly-request-id", "01JAB4Y0W2Q3ZC7M6T9N5K8R1S-otp"),
            ("fastly-ff", "cache-tlv3200-TLV"),
            ("x-served-by", "cache-tlv3200-TLV"),
            ("x-vercel-id", "tlv1::iad1::abcde"),
            ("x-real-client-ip", "203.0.113.77"),
            ("x-amzn-trace-id", "Root=1-abc"),
            ("x-request-id", "abc"),
            ("traceparent", "00-abc-def-01"),
            ("sec-ch-ua-platform", "\"Android\""),
            ("x-msisdn", "+972500000000"),
            ("geo", "32.09;34.86"),
            ("accept", "*/*"),
        ]);
        let edge: Vec<HeaderName> = h.keys().filter(|n| n.as_str() != "accept").cloned().collect();
        RequestHeaders::default().filter(&mut h, true);
        assert_eq!(names(&h), vec!["accept"]);
        for name in edge {
            let denied = is_client_ip_or_geo(&name);
            let benign = ["x-amzn-trace-id", "x-request-id", "traceparent", "sec-ch-ua-platform", "geo"];
            assert!(denied || benign.contains(&name.as_str()), "{name} should be in the deny table");
        }
    }

    #[test]
    fn a_signed_request_keeps_every_header_its_signature_covers_but_never_a_denied_one() {
        let cavage = map(&[
            (
                "signature",
                "keyId=\"https://a.example/u#k\",algorithm=\"rsa-sha256\",\
                 headers=\"(request-target) host date digest content-type x-custom-one\",signature=\"s\"",
            ),
            ("x-custom-one", "1"),
            ("x-custom-two", "2"),
            ("host", "social.example"),
        ]);
        let mut h = cavage.clone();
        RequestHeaders::default().filter(&mut h, true);
        assert_eq!(names(&h), vec!["host", "signature", "x-custom-one"]);

        let mut h = map(&[
            ("authorization", "Signature keyId=\"k\",headers=\"(request-target) x-custom-one\",signature=\"s\""),
            ("x-custom-one", "1"),
            ("x-custom-two", "2"),
        ]);
        RequestHeaders::default().filter(&mut h, true);
        assert_eq!(names(&h), vec!["authorization", "x-custom-one"]);

        let mut h = map(&[
            (
                "signature-input",
                "sig1=(\"@method\" \"@target-uri\" \"content-digest\" \"x-custom-two\";sf \"x-real-ip\");\
                 created=1;keyid=\"x-custom-one\"",
            ),
            ("signature", "sig1=:abc:"),
            ("x-custom-one", "1"),
            ("x-custom-two", "2"),
            ("x-real-ip", "203.0.113.9"),
        ]);
        RequestHeaders::default().filter(&mut h, true);
        // The keyid parameter is outside the component list; X-Real-IP is denied, signed or not.
        assert_eq!(names(&h), vec!["signature", "signature-input", "x-custom-two"]);

        // An unsigned request keeps neither, and neither does the client API, signed or not.
        let mut h = map(&[("x-custom-one", "1"), ("x-custom-two", "2")]);
        RequestHeaders::default().filter(&mut h, true);
        assert!(h.is_empty());
        let mut h = cavage.clone();
        RequestHeaders::default().filter(&mut h, false);
        assert_eq!(names(&h), vec!["host", "signature"]);
        // A signature cannot carry a denied name either.
        let mut h = map(&[("signature", "headers=\"cf-ray fly-region\""), ("cf-ray", "x-TLV"), ("fly-region", "otp")]);
        RequestHeaders::default().filter(&mut h, true);
        assert_eq!(names(&h), vec!["signature"]);
    }

    #[test]
    fn the_admin_may_add_names_but_never_a_denied_one() {
        let policy = RequestHeaders::new(&["X-Custom-App".into(), "x-real-ip".into()]);
        let mut h = map(&[("x-custom-app", "1"), ("x-real-ip", "203.0.113.9"), ("x-other", "2")]);
        policy.filter(&mut h, false);
        assert_eq!(names(&h), vec!["x-custom-app"]);
        assert!(check_allow_headers(&["X-Custom-App".into()]).is_ok());
        for bad in ["x-real-ip", "CF-IPCountry", "X-Forwarded-For", "x_custom", "bad header", "X-Geo-City"] {
            assert!(check_allow_header(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn forwarded_headers_carry_only_the_pseudonym() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", "203.0.113.9".parse().unwrap());
        h.append("x-forwarded-for", "198.51.100.1".parse().unwrap());
        RequestHeaders::default().filter(&mut h, true);
        set_forwarded(&mut h, &HeaderValue::from_static("2001:db8::5"), true, Some("social.example"));
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-for"], "2001:db8::5");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "social.example");
    }
}
