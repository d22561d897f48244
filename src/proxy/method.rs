//! The method Rails dispatches: Rack::MethodOverride, read the way Rack reads it.
//!
//! Every Rails app runs Rack::MethodOverride: a POST whose form body carries
//! `_method=get` (or whose `X-HTTP-Method-Override` header says so) is dispatched as a
//! GET. A relay that classified by the wire method alone would see a harmless POST where
//! Rails sees a read: `POST /api/v1/statuses/123` with `_method=get` would serve an
//! expired post, `_method=put` an edit pavise never learnt of.
//!
//! What pavise does, so the method it acts on is the one Rails dispatches:
//! - the header is removed on entry ([`super::hop::clean_request_head`]), together with
//!   every `_`-named header Rack would fold into the same CGI name;
//! - on routes where the method changes what pavise does ([`Route::method_sensitive`]:
//!   they name a status or the status collection), a POST whose body Rack parses as a form
//!   is read here, bounded by the route's body cap:
//!   - `application/x-www-form-urlencoded`, or no `Content-Type` at all (Rack parses a
//!     type-less POST body as a form too): `_method` is decoded as Rack decodes it (the
//!     last one wins, `+` and `%XX`, Ruby's Unicode `upcase`, so `poſt` is POST), and
//!     the request is classified and handed to the stages with that method. The wire
//!     method and the body reach the instance unchanged;
//!   - `multipart/form-data`, `multipart/mixed`, `multipart/related`: a `_method` field
//!     is refused with a 400 (such bodies are never sent to these routes by real
//!     clients, and reading one the way Rack's multipart parser does is a parser of its
//!     own);
//!   - a body Rack 2 and Rack 3 would read differently (a trailing NUL, bracketed
//!     `[_method]` keys) is refused with a 400 rather than guessed at.
//! - everywhere else the route class is the same whatever the method (or pavise's reading
//!   is the stricter one: an inbox POST overridden into a GET is still checked as an
//!   inbox delivery), and the body streams through unread.

use bytes::Bytes;
use http::{Method, header};
use http_body_util::BodyExt;

use super::{ProxyError, Request, Route, full, pipeline::body_error};

/// Rack::MethodOverride::HTTP_METHODS: what `_method` may turn a POST into.
const OVERRIDABLE: [&str; 9] = ["GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "PATCH", "LINK", "UNLINK"];

/// How Rack would parse a POST body, by its media type (Rack's `form_data?` and
/// `parseable_data?`: the type before any `;` or `,`, trimmed, lower-cased).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FormKind {
    UrlEncoded,
    Multipart,
    NotAForm,
}

fn form_kind(content_type: Option<&[u8]>) -> FormKind {
    let Some(raw) = content_type else { return FormKind::UrlEncoded };
    let end = raw.iter().position(|b| *b == b';' || *b == b',').unwrap_or(raw.len());
    let media = raw[..end].trim_ascii();
    if media.is_empty() {
        return FormKind::UrlEncoded;
    }
    if media.eq_ignore_ascii_case(b"application/x-www-form-urlencoded") {
        FormKind::UrlEncoded
    } else if [b"multipart/form-data".as_slice(), b"multipart/mixed", b"multipart/related"]
        .iter()
        .any(|t| media.eq_ignore_ascii_case(t))
    {
        FormKind::Multipart
    } else {
        FormKind::NotAForm
    }
}

/// What a form body says about the method.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reading {
    /// Rack keeps the wire method.
    Keep,
    /// Rack dispatches this method instead.
    Override(Method),
    /// Rack versions (or Rack and pavise) could disagree: refuse.
    Ambiguous(&'static str),
}

/// Reads `_method` from a POST's form body where it matters. Returns the request (its
/// body buffered if it was read) and the method Rails will dispatch, when that differs
/// from the wire method.
pub async fn resolve(req: Request, route: &Route) -> Result<(Request, Option<Method>), ProxyError> {
    if req.method() != Method::POST || !route.method_sensitive() {
        return Ok((req, None));
    }
    let kind = form_kind(req.headers().get(header::CONTENT_TYPE).map(|v| v.as_bytes()));
    if kind == FormKind::NotAForm || http_body::Body::is_end_stream(req.body()) {
        return Ok((req, None));
    }
    let (parts, body) = req.into_parts();
    let bytes = body.collect().await.map_err(|e| body_error(&e))?.to_bytes();
    let reading = match kind {
        FormKind::UrlEncoded => read_urlencoded(&bytes),
        FormKind::Multipart => read_multipart_or_fallback(&bytes),
        FormKind::NotAForm => Reading::Keep,
    };
    let req = Request::from_parts(parts, full(bytes));
    match reading {
        Reading::Keep => Ok((req, None)),
        Reading::Override(m) if m == Method::POST => Ok((req, None)),
        Reading::Override(m) => Ok((req, Some(m))),
        Reading::Ambiguous(why) => Err(ProxyError::BadRequest(format!(
            "{why}; send the request with its real method instead of a `_method` form field"
        ))),
    }
}

/// `application/x-www-form-urlencoded` as Rack reads `req.POST["_method"]`.
fn read_urlencoded(body: &Bytes) -> Reading {
    // Rack 2 drops one trailing NUL before parsing (an old Safari quirk); Rack 3 does not.
    let with_nul = read_pairs(body);
    match body.strip_suffix(b"\0") {
        Some(stripped) if read_pairs(stripped) != with_nul => {
            Reading::Ambiguous("a form body ending in NUL reads differently in Rack 2 and Rack 3")
        }
        _ => with_nul,
    }
}

fn read_pairs(body: &[u8]) -> Reading {
    let mut value: Option<Option<Vec<u8>>> = None;
    // Both Rack 2 and Rack 3 split on `& *`: spaces after an `&` are not part of the key.
    for pair in body.split(|b| *b == b'&').map(|p| &p[p.iter().take_while(|b| **b == b' ').count()..]) {
        if pair.is_empty() {
            continue;
        }
        let (key, val) = match pair.iter().position(|b| *b == b'=') {
            Some(i) => (&pair[..i], Some(&pair[i + 1..])),
            None => (pair, None),
        };
        // One bad `%` anywhere fails Rack's whole parse: MethodOverride rescues it and
        // keeps the wire method.
        let Some(key) = form_decode_bytes(key) else { return Reading::Keep };
        let val = match val.map(form_decode_bytes) {
            Some(None) => return Reading::Keep,
            Some(Some(v)) => Some(v),
            None => None,
        };
        if key == b"_method" {
            value = Some(val);
        } else if key.windows(7).any(|w| w == b"_method") {
            // Rack 2 reads `[_method]` as `_method`, Rack 3 as a key of its own.
            return Reading::Ambiguous("a form key around `_method` reads differently in Rack 2 and Rack 3");
        }
    }
    match value.flatten() {
        Some(v) => match ruby_upcase(&v) {
            Some(m) if OVERRIDABLE.contains(&m.as_str()) => {
                Method::from_bytes(m.as_bytes()).map_or(Reading::Keep, Reading::Override)
            }
            _ => Reading::Keep,
        },
        None => Reading::Keep,
    }
}

/// A multipart body with a field named `_method` (however its `name=` is quoted or
/// escaped, or given RFC 5987-style) is refused; one without keeps the wire method.
fn read_multipart(body: &Bytes) -> Reading {
    let lower = body.to_ascii_lowercase();
    let mut at = 0;
    while let Some(i) = find(&lower[at..], b"name") {
        let start = at + i + 4;
        at = start;
        let rest = &lower[start..];
        let (extended, rest) = match rest.strip_prefix(b"*") {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let Some(rest) = rest.trim_ascii_start().strip_prefix(b"=") else { continue };
        let value: Vec<u8> = rest
            .trim_ascii_start()
            .iter()
            .copied()
            .filter(|b| *b != b'\\' && *b != b'"')
            .take_while(|b| !matches!(b, b';' | b'\r' | b'\n' | b' ' | b'\t'))
            .collect();
        let named = if extended {
            form_decode_bytes(&value).is_some_and(|v| v.windows(7).any(|w| w == b"_method"))
        } else {
            value == b"_method"
        };
        if named {
            return Reading::Ambiguous("a multipart `_method` field is not accepted on this route");
        }
    }
    Reading::Keep
}

/// A multipart type without a usable boundary is parsed by Rack as urlencoded instead
/// (`parse_multipart` gives up, `req.POST` reads the body as a query string): a
/// `_method` in either reading is refused.
fn read_multipart_or_fallback(body: &Bytes) -> Reading {
    match read_multipart(body) {
        Reading::Keep => match read_urlencoded(body) {
            Reading::Keep => Reading::Keep,
            _ => Reading::Ambiguous("a `_method` in a multipart body is not accepted on this route"),
        },
        refused => refused,
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `URI.decode_www_form_component`, strictly: `+` is a space, `%XX` a byte, and a `%`
/// not followed by two hex digits fails.
fn form_decode_bytes(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = |b: u8| (b as char).to_digit(16);
                let hi = raw.get(i + 1).copied().and_then(hex)?;
                let lo = raw.get(i + 2).copied().and_then(hex)?;
                out.push((hi * 16 + lo) as u8);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    Some(out)
}

/// [`form_decode_bytes`] of a query component, for the route classifier.
pub(crate) fn form_decode(raw: &str) -> Option<Vec<u8>> {
    form_decode_bytes(raw.as_bytes())
}

/// Ruby's `String#upcase` (full Unicode case mapping), as far as it can produce one of
/// the ASCII method names: ASCII letters, and the few non-ASCII letters whose upper case
/// is ASCII (`ı` → I, `ſ` → S, the Latin ligatures `ﬀ ﬁ ﬂ ﬃ ﬄ ﬅ ﬆ`). `None` for bytes
/// that are not UTF-8 (`upcase` raises, and MethodOverride keeps the wire method).
fn ruby_upcase(raw: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(raw).ok()?;
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            'ı' => out.push('I'),
            'ſ' => out.push('S'),
            'ﬀ' => out.push_str("FF"),
            'ﬁ' => out.push_str("FI"),
            'ﬂ' => out.push_str("FL"),
            'ﬃ' => out.push_str("FFI"),
            'ﬄ' => out.push_str("FFL"),
            'ﬅ' | 'ﬆ' => out.push_str("ST"),
            c => out.push(c.to_ascii_uppercase()),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn url(body: &str) -> Reading {
        read_urlencoded(&Bytes::from(body.to_owned()))
    }

    #[test]
    fn urlencoded_method_as_rack_reads_it() {
        assert_eq!(url("status=hi&_method=get"), Reading::Override(Method::GET));
        assert_eq!(url("_method=delete"), Reading::Override(Method::DELETE));
        assert_eq!(url("%5Fmethod=pUt"), Reading::Override(Method::PUT));
        assert_eq!(url("_method=get&_method=patch"), Reading::Override(Method::PATCH), "the last one wins");
        assert_eq!(url("_method=%67%65%74"), Reading::Override(Method::GET));
        assert_eq!(url("_method=po%C5%BFt"), Reading::Override(Method::POST), "ſ upcases to S");
        assert_eq!(url("_method=opt%C4%B1ons"), Reading::Override(Method::OPTIONS), "ı upcases to I");
        assert_eq!(url("_method=po%EF%AC%86"), Reading::Override(Method::POST), "ﬆ upcases to ST");
        assert_eq!(url("_method=get&_method"), Reading::Keep, "a bare key resets it to nil");
        assert_eq!(url("_method=trace"), Reading::Keep, "not an overridable method");
        assert_eq!(url("_method=+get"), Reading::Keep, "a space is part of the value");
        assert_eq!(url("_method=%ff"), Reading::Keep, "not UTF-8: upcase raises");
        assert_eq!(url("_method=get&x=%zz"), Reading::Keep, "one bad escape fails the whole parse");
        assert!(matches!(url("_methods=get&x_method_y=1"), Reading::Ambiguous(_)), "keys around _method are refused");
        assert!(matches!(url("[_method]=get"), Reading::Ambiguous(_)));
        assert!(matches!(url("_method=get\0"), Reading::Ambiguous(_)), "Rack 2 strips the NUL, Rack 3 does not");
        assert_eq!(url("status=hi\0"), Reading::Keep);
        assert_eq!(url("a=1&  _method=delete"), Reading::Override(Method::DELETE), "`& *` is the separator");
    }

    #[test]
    fn multipart_method_fields_are_refused() {
        let form = |name: &str| {
            Bytes::from(format!(
                "--b\r\nContent-Disposition: form-data; {name}\r\n\r\nget\r\n--b\r\nContent-Disposition: form-data; name=\"status\"\r\n\r\nhello _method\r\n--b--\r\n"
            ))
        };
        for name in
            ["name=\"_method\"", "name=_method", "NAME = \"_method\"", "name=\"_\\method\"", "name*=utf-8''%5Fmethod"]
        {
            assert!(matches!(read_multipart(&form(name)), Reading::Ambiguous(_)), "{name}");
        }
        assert_eq!(read_multipart(&form("name=\"visibility\"")), Reading::Keep);
        // `multipart/form-data` without a boundary: Rack reads the body as urlencoded.
        let fallback = Bytes::from_static(b"status=x&_method=get");
        assert!(matches!(read_multipart_or_fallback(&fallback), Reading::Ambiguous(_)));
        assert_eq!(read_multipart_or_fallback(&form("name=\"visibility\"")), Reading::Keep);
    }

    #[test]
    fn media_types_rack_parses_as_forms() {
        assert_eq!(form_kind(None), FormKind::UrlEncoded);
        assert_eq!(form_kind(Some(b"Application/X-WWW-Form-Urlencoded; charset=utf-8")), FormKind::UrlEncoded);
        assert_eq!(form_kind(Some(b"application/x-www-form-urlencoded, text/plain")), FormKind::UrlEncoded);
        assert_eq!(form_kind(Some(b"multipart/form-data; boundary=x")), FormKind::Multipart);
        assert_eq!(form_kind(Some(b"multipart/related; boundary=x")), FormKind::Multipart);
        assert_eq!(form_kind(Some(b"application/json")), FormKind::NotAForm);
        assert_eq!(form_kind(Some(b"multipart/alternative; boundary=x")), FormKind::NotAForm);
    }
}
