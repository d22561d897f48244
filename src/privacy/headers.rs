//! Which request headers may carry a client's address or location, and removing them.
//!
//! One table ([`STRIP_EXACT`], [`STRIP_PREFIXES`]) so that a reviewer can read the whole
//! policy at a glance; each entry has its own test. Families that CDNs keep growing
//! (Cloudflare's visitor-location headers, CloudFront-Viewer-*, Vercel's x-vercel-ip-*,
//! ad-hoc GeoIP headers) are matched by prefix. Sources: ../shared/METADATA.md §2.
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
];

/// Whether `name` (lowercase, as `http` stores it) carries client address or location.
pub fn is_client_ip_or_geo(name: &HeaderName) -> bool {
    let name = name.as_str();
    STRIP_EXACT.contains(&name) || STRIP_PREFIXES.iter().any(|p| name.starts_with(p))
}

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

    #[test]
    fn every_table_entry_matches_its_own_name() {
        for name in STRIP_EXACT {
            assert!(is_client_ip_or_geo(&HeaderName::from_static(name)), "{name}");
        }
        for prefix in STRIP_PREFIXES {
            let name = format!("{prefix}something");
            assert!(is_client_ip_or_geo(&HeaderName::from_bytes(name.as_bytes()).unwrap()), "{name}");
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
            "x-csrf-token",
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
