//! Which request headers may carry a client's address or location, and removing them.
//!
//! One table ([`STRIP_EXACT`], [`STRIP_PREFIXES`]) so that a reviewer can read the whole
//! policy at a glance; each entry has its own test. Families that CDNs keep growing
//! (Cloudflare's visitor-location headers, CloudFront-Viewer-*, Vercel's x-vercel-ip-*,
//! ad-hoc GeoIP headers) are matched by prefix. Sources: ../shared/METADATA.md §2.
//!
//! Names are compared as Rack reads them: Rack turns a header into `HTTP_` + the name
//! upper-cased with `-` replaced by `_`, so `X_Forwarded_For` and `X-Forwarded-For` are
//! one key to the instance. Every name is folded (`_` to `-`; case is already folded by
//! `http`, which keeps names lowercase) before it is looked up.
//!
//! None of these is ever part of an HTTP signature, so stripping them from a signed
//! federation delivery keeps the signature valid.

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
    "x-real-ip",
    "client-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "true-client-ip",
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
    "x-originating-ip",
    "x-arr-clientip",
    "incap-client-ip",
    "x-sucuri-clientip",
    "x-sucuri-country",
    "x-remote-ip",
    "x-remote-addr",
    "x-sp-forwarded-ip",
    "ali-cdn-real-ip",
    "x-wap-network-client-ip",
    "cdn-requestcountrycode",
    // Envoy's client certificate details (subject, URI and DNS SANs): who the client is.
    "x-forwarded-client-cert",
    // `Via` names the proxies a request crossed; it can identify a client's network.
    "via",
];

/// Header families removed by name prefix.
pub const STRIP_PREFIXES: &[&str] = &[
    // Cloudflare IP geolocation + visitor-location managed transform.
    "cf-ip",
    "cf-region",
    "cf-postal-code",
    "cf-timezone",
    "cf-metro-code",
    // AWS CloudFront: viewer address and every location header.
    "cloudfront-viewer-",
    // Google App Engine: country, region, city, city lat/long, user IP.
    "x-appengine-",
    // Vercel geolocation.
    "x-vercel-ip-",
    // Netlify geolocation.
    "x-nf-geo",
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

/// Removes every client-IP and geolocation header.
pub fn strip_client_ip_and_geo(headers: &mut HeaderMap) {
    let doomed: Vec<HeaderName> = headers.keys().filter(|n| is_client_ip_or_geo(n)).cloned().collect();
    for name in doomed {
        headers.remove(name);
    }
}

/// Writes what the instance may know: the pseudonym, the scheme and the host.
pub fn set_forwarded(headers: &mut HeaderMap, pseudonym: std::net::IpAddr, https: bool, host: Option<&str>) {
    if let Ok(v) = HeaderValue::from_str(&pseudonym.to_string()) {
        headers.insert(HeaderName::from_static("x-forwarded-for"), v);
    }
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

    #[test]
    fn signed_and_ordinary_headers_pass() {
        for name in [
            "host",
            "date",
            "digest",
            "content-type",
            "content-length",
            "signature",
            "signature-input",
            "content-digest",
            "authorization",
            "accept",
            "user-agent",
            "cookie",
            "cf-ray",
            "cdn-loop",
            "x-csrf-token",
            "x-request-id",
            "x-client-request-id",
            "x_csrf_token",
        ] {
            assert!(!is_client_ip_or_geo(&HeaderName::from_static(name)), "{name} must pass");
        }
    }

    #[test]
    fn forwarded_headers_carry_only_the_pseudonym() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", "203.0.113.9".parse().unwrap());
        h.append("x-forwarded-for", "198.51.100.1".parse().unwrap());
        strip_client_ip_and_geo(&mut h);
        set_forwarded(&mut h, "2001:db8::5".parse().unwrap(), true, Some("social.example"));
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-for"], "2001:db8::5");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "social.example");
    }
}
