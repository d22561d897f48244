//! Hop-by-hop headers (RFC 9110 §7.6.1), and the request head as a client may send it.
//!
//! Hop-by-hop headers describe one connection and must not be forwarded, and neither may
//! any header the `Connection` header names. The order matters: the client's request is
//! cleaned *on entry* ([`clean_request_head`]), before the route is classified and before
//! any stage runs, so every stage sees exactly the head the instance will see, and
//! nothing pavise writes later (the pseudonym in `X-Forwarded-For`, `X-Forwarded-Proto`,
//! `X-Forwarded-Host`) can be named away by a `Connection: X-Forwarded-For` (issue 16:
//! that one header used to reach Mastodon without any `X-Forwarded-For`, so the instance
//! saw 127.0.0.1 and Rack::Attack's localhost safelist skipped every throttle).
//!
//! On entry, besides the hop-by-hop set:
//! - `Host` is never removed by a `Connection` option: RFC 9110 forbids listing it, and
//!   the instance's routing, URLs and signatures read it;
//! - `X-HTTP-Method-Override` (and its cousins) go: Rack::MethodOverride would let it turn
//!   a POST into another method behind pavise's back (see `proxy::method`);
//! - every header whose name holds `_` goes, as nginx does by default
//!   (`underscores_in_headers off`): Rack folds `-` and `_` into one CGI name, so
//!   `X_Forwarded_For` or `X_HTTP_Method_Override` would reach Rails as the header pavise
//!   set or removed. Mastodon's own nginx setup already drops them, so no client needs one.
//! - every header that tells a framework the request's scheme, host, port or path goes
//!   ([`is_forwarding_header`]): Rack reads the scheme from `X-Forwarded-Ssl: on`,
//!   `X-Forwarded-Scheme`, `X-Forwarded-Proto` and `Forwarded: proto=`, the host and port
//!   from `X-Forwarded-Host`, `X-Forwarded-Port` and `Forwarded: host=`; Puma reads
//!   `X-Forwarded-Ssl`/`-Scheme`/`-Proto` for its default port; middlewares read
//!   `Front-End-Https`, `X-Url-Scheme`, `X-Forwarded-Prefix` and IIS-style path overrides
//!   (`X-Original-URL`, `X-Rewrite-URL`). A client over plain HTTP that sent
//!   `X-Forwarded-Ssl: on` was https to Rails (red-team F5). Whatever a client sends
//!   under these names is gone; the ones the instance needs (`X-Forwarded-For`,
//!   `X-Forwarded-Proto`, `X-Forwarded-Host`) are pavise's own, written last
//!   ([`last_word`]);
//! - `Upgrade` only survives as `Upgrade: websocket` on the streaming route
//!   ([`websocket_requested`], [`ask_for_websocket`]); any other token (`h2c`, ...) or
//!   route would tunnel a connection past every stage.

use http::{HeaderMap, HeaderName, HeaderValue, header};

use super::RequestCtx;

/// No real HTTP method is longer (IANA's longest is `UPDATEREDIRECTREF`, 17): a longer
/// one is refused before anything reads or logs it.
pub(crate) const MAX_METHOD_LEN: usize = 20;

const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Method overrides some framework reads; Rack reads the first.
const METHOD_OVERRIDES: [HeaderName; 3] = [
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-http-method"),
    HeaderName::from_static("x-method-override"),
];

/// Removes hop-by-hop headers and every header `Connection` names, except `Host`.
/// `Upgrade` goes too, unless `keep_websocket`, which leaves exactly a WebSocket
/// handshake ([`ask_for_websocket`]).
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, keep_websocket: bool) {
    remove_connection_options(headers);
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if keep_websocket {
        ask_for_websocket(headers);
    }
}

/// The client's head, cleaned on entry: see the module docs for what goes and why.
pub(crate) fn clean_request_head(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers, false);
    // The client's `Expect: 100-continue` is answered by our own server when the body is
    // first read; the instance gets the body at once.
    headers.remove(header::EXPECT);
    for name in &METHOD_OVERRIDES {
        headers.remove(name);
    }
    let doomed = |n: &HeaderName| n.as_str().contains('_') || is_forwarding_header(n);
    // One pass over the names; a list only when something must go.
    if headers.keys().any(doomed) {
        let names: Vec<HeaderName> = headers.keys().filter(|n| doomed(n)).cloned().collect();
        for name in names {
            headers.remove(name);
        }
    }
}

/// Names that carry a scheme, host, port or path some framework believes, besides the
/// `x-forwarded-` and `x-original-` families (see the module docs).
const FORWARDING_EXACT: [&str; 8] =
    ["forwarded", "x-forwarded", "front-end-https", "x-url-scheme", "x-scheme", "x-rewrite-url", "x-host", "https"];

/// Whether a client-sent header would tell the instance (Rack, Rails, Puma, a
/// middleware) its scheme, host, port or path: removed on entry.
pub(crate) fn is_forwarding_header(name: &HeaderName) -> bool {
    let n = name.as_str().as_bytes();
    // Most names (accept, host, user-agent, content-*, sec-*, authorization, cookie)
    // are out at the first byte.
    match n.first() {
        Some(b'x') => {
            n.starts_with(b"x-forwarded-")
                || n.starts_with(b"x-original-")
                || FORWARDING_EXACT.iter().any(|e| e.as_bytes() == n)
        }
        Some(b'f' | b'h') => FORWARDING_EXACT.iter().any(|e| e.as_bytes() == n),
        _ => false,
    }
}

/// Tokens of a comma-separated header (`Connection`, `Upgrade`).
fn tokens(headers: &HeaderMap, name: HeaderName) -> impl Iterator<Item = &str> {
    headers
        .get_all(name)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Connection options that are not also the name of a header still to remove.
fn is_bare_option(token: &str) -> bool {
    ["close", "keep-alive", "upgrade"].iter().any(|o| token.eq_ignore_ascii_case(o))
}

fn remove_connection_options(headers: &mut HeaderMap) {
    // The common case (`keep-alive`, `close`, `Upgrade`) allocates nothing.
    if tokens(headers, header::CONNECTION).all(is_bare_option) {
        return;
    }
    let named: Vec<HeaderName> = tokens(headers, header::CONNECTION)
        .filter(|t| !is_bare_option(t))
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .filter(|n| *n != header::HOST)
        .collect();
    for name in named {
        headers.remove(name);
    }
}

/// Whether the client asked to switch to WebSocket (`Connection: upgrade` and a
/// `websocket` token in `Upgrade`). Read before [`clean_request_head`] removes both.
pub(crate) fn websocket_requested(headers: &HeaderMap) -> bool {
    tokens(headers, header::CONNECTION).any(|t| t.eq_ignore_ascii_case("upgrade"))
        && tokens(headers, header::UPGRADE).any(|t| t.eq_ignore_ascii_case("websocket"))
}

/// Puts back exactly the handshake headers for a WebSocket the instance may accept.
pub(crate) fn ask_for_websocket(headers: &mut HeaderMap) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
}

/// Whether a cleaned request still asks to switch protocols (only a WebSocket does).
pub(crate) fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
}

/// Writes what the instance may know, after every stage: exactly one `X-Forwarded-For`
/// (the pseudonym), `X-Forwarded-Proto`, and `X-Forwarded-Host` (the host the client
/// addressed, or none). Allocates only when a value has to change, which the client-IP
/// stage normally made unnecessary. Every path that sends a client's request to the
/// instance (the pipeline's upstream, expiry's detached status creation) calls it last.
pub(crate) fn last_word(headers: &mut HeaderMap, ctx: &RequestCtx) {
    set_single(headers, HeaderName::from_static("x-forwarded-for"), ctx.forwarded_for().as_bytes());
    let proto: &[u8] = if ctx.https { b"https" } else { b"http" };
    set_single(headers, HeaderName::from_static("x-forwarded-proto"), proto);
    let forwarded_host = HeaderName::from_static("x-forwarded-host");
    match ctx.host.as_deref() {
        Some(host) => set_single(headers, forwarded_host, host.as_bytes()),
        None => {
            headers.remove(forwarded_host);
        }
    }
}

fn set_single(headers: &mut HeaderMap, name: HeaderName, value: &[u8]) {
    let mut values = headers.get_all(&name).iter();
    if values.next().is_some_and(|v| v.as_bytes() == value) && values.next().is_none() {
        return;
    }
    if let Ok(v) = HeaderValue::from_bytes(value) {
        headers.insert(name, v);
    } else {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn head(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    #[test]
    fn removes_standard_and_connection_named_headers() {
        let mut h = head(&[
            ("connection", "keep-alive, x-secret-hop"),
            ("keep-alive", "timeout=5"),
            ("x-secret-hop", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("upgrade", "websocket"),
            ("content-length", "5"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("content-length"));
    }

    /// Issue 16: `Connection` could name away the headers the instance's trust rests on.
    #[test]
    fn connection_cannot_remove_host() {
        let mut h = head(&[
            ("connection", "keep-alive, X-Forwarded-For, X-Forwarded-Proto, Host"),
            ("connection", "x-forwarded-host"),
            ("host", "social.example"),
            ("x-forwarded-for", "203.0.113.9"),
        ]);
        clean_request_head(&mut h);
        assert_eq!(h["host"], "social.example");
        // What the client sent under these names is gone; pavise writes its own after.
        assert!(!h.contains_key("x-forwarded-for"));
    }

    #[test]
    fn method_overrides_and_underscore_names_are_dropped_on_entry() {
        let mut h = head(&[
            ("x-http-method-override", "GET"),
            ("x-method-override", "DELETE"),
            ("x_http_method_override", "GET"),
            ("x_forwarded_for", "127.0.0.1"),
            ("client_ip", "127.0.0.1"),
            ("expect", "100-continue"),
            ("accept", "application/json"),
        ]);
        clean_request_head(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("accept"));
    }

    /// Red-team F5: each of these made (or could make) Rails, Rack, Puma or a middleware
    /// believe another scheme, host, port or path than the one pavise saw.
    #[test]
    fn every_scheme_host_port_and_path_header_is_dropped_on_entry() {
        let mut h = head(&[
            ("x-forwarded-ssl", "on"),
            ("x-forwarded-scheme", "https"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-protocol", "https"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-port", "443"),
            ("x-forwarded-prefix", "/admin"),
            ("x-forwarded-server", "evil.example"),
            ("x-forwarded-uri", "/admin"),
            ("x-forwarded", "for=1.2.3.4"),
            ("forwarded", "proto=https;host=evil.example"),
            ("front-end-https", "on"),
            ("x-url-scheme", "https"),
            ("x-scheme", "https"),
            ("x-original-url", "/admin/accounts"),
            ("x-original-uri", "/admin/accounts"),
            ("x-original-host", "evil.example"),
            ("x-rewrite-url", "/admin/accounts"),
            ("x-host", "evil.example"),
            ("https", "on"),
            ("host", "social.example"),
            ("x-csrf-token", "t"),
            ("x-requested-with", "XMLHttpRequest"),
            ("accept", "application/json"),
        ]);
        clean_request_head(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["accept", "host", "x-csrf-token", "x-requested-with"]);
    }

    #[test]
    fn only_a_websocket_upgrade_is_recognised() {
        let ws = head(&[("connection", "keep-alive, Upgrade"), ("upgrade", "WebSocket")]);
        assert!(websocket_requested(&ws));
        for h in [
            head(&[("connection", "Upgrade"), ("upgrade", "h2c")]),
            head(&[("upgrade", "websocket")]),
            head(&[("connection", "upgrade")]),
        ] {
            assert!(!websocket_requested(&h), "{h:?}");
        }
        let mut h = head(&[("connection", "Upgrade, HTTP2-Settings"), ("upgrade", "websocket, h2c")]);
        clean_request_head(&mut h);
        assert!(!wants_upgrade(&h));
        ask_for_websocket(&mut h);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
    }

    #[test]
    fn the_pseudonym_is_written_once_and_last() {
        let ctx = |https, host: Option<&str>| {
            RequestCtx::new(
                super::super::Route::classify(&http::Method::GET, "/", None),
                "2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff".parse().unwrap(),
                https,
                host.map(str::to_owned),
                super::super::ConnShare::detached(),
            )
        };
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", "127.0.0.1".parse().unwrap());
        h.append("x-forwarded-for", "2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff".parse().unwrap());
        h.insert("x-forwarded-host", "evil.example".parse().unwrap());
        last_word(&mut h, &ctx(true, Some("social.example")));
        assert_eq!(h.get_all("x-forwarded-for").iter().collect::<Vec<_>>(), ["2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff"]);
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "social.example");
        last_word(&mut h, &ctx(false, None));
        assert_eq!(h["x-forwarded-proto"], "http");
        assert!(!h.contains_key("x-forwarded-host"));
    }
}
