//! The bearer token of a request, read the way the instance reads it: one function for
//! every feature (expiry schedules deletions with it and sweeps archives on it; the shield
//! keys per-token limits on it; admin could too).
//!
//! Mastodon authenticates the client API with Doorkeeper, whose default
//! `access_token_methods` are tried in order, the first *present* (non-blank) one wins:
//! 1. `from_bearer_authorization`: the `Authorization` header matching `/^Bearer /i`, the
//!    token being everything after that prefix (not trimmed);
//! 2. `from_access_token_param`: `request.parameters[:access_token]`;
//! 3. `from_bearer_param`: `request.parameters[:bearer_token]`.
//!
//! Rails' `request.parameters` is the body's parameters (form, JSON, multipart) merged
//! with the query's, the query winning. So a token may come in four places, and a feature
//! that only looks at the header misses a member whose app sends `?access_token=`.
//!
//! Reading the body costs a copy of it, so it is the caller's: [`bearer_token`] takes a
//! lookup into the body's parameters (the expiry stage passes one for the bodies it reads
//! anyway); [`bearer_token_in_head`] reads what needs no body (header and query), which
//! is all the hot path may look at.
//!
//! [`Token`] never prints its value.

use http::{HeaderMap, HeaderValue, header};

/// A bearer token. Its `Debug` is redacted and it has no `Display`: it cannot end up in a
/// log line by accident.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Token(String);

impl Token {
    pub fn new(value: impl Into<String>) -> Token {
        Token(value.into())
    }

    /// The raw value, for the `Authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// From an `Authorization` header value, as Doorkeeper reads it: `Bearer ` (any case)
    /// and the rest as it is; `None` for another scheme or a blank token.
    pub fn from_authorization(value: &HeaderValue) -> Option<Token> {
        let v = value.to_str().ok()?;
        let prefix = v.get(..7)?;
        if !prefix.eq_ignore_ascii_case("bearer ") {
            return None;
        }
        present(&v[7..])
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token([redacted])")
    }
}

/// Ruby's `present?`: not empty and not only whitespace.
fn present(value: &str) -> Option<Token> {
    (!value.trim().is_empty()).then(|| Token(value.to_owned()))
}

/// The token Doorkeeper would authenticate the request with (see the module docs).
/// `body_param` looks a top-level parameter up in the request body (`None` when there is
/// no body, or it was not read).
pub fn bearer_token(
    headers: &HeaderMap,
    query: Option<&str>,
    body_param: &dyn Fn(&str) -> Option<String>,
) -> Option<Token> {
    let mut auth = headers.get_all(header::AUTHORIZATION).iter();
    if let Some(first) = auth.next() {
        // Two headers reach Rails joined into one value, which names no token.
        if auth.next().is_some() {
            return None;
        }
        if let Some(token) = Token::from_authorization(first) {
            return Some(token);
        }
    }
    for name in ["access_token", "bearer_token"] {
        let value = query.and_then(|q| query_param(q, name)).or_else(|| body_param(name));
        if let Some(token) = value.as_deref().and_then(present) {
            return Some(token);
        }
    }
    None
}

/// [`bearer_token`] from the header and the query alone.
pub fn bearer_token_in_head(headers: &HeaderMap, query: Option<&str>) -> Option<Token> {
    bearer_token(headers, query, &|_| None)
}

/// A top-level query parameter as Rack reads it: keys and values decoded, the last
/// occurrence winning. Rack 3 splits on `&`; Rack 2 also on `;`: where only the second
/// reading finds it, that one is taken.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    let last =
        |pairs: &mut dyn Iterator<Item = (String, String)>| pairs.filter(|(k, _)| k == name).map(|(_, v)| v).last();
    let rack3 = last(&mut url::form_urlencoded::parse(query.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())));
    rack3.or_else(|| {
        last(&mut query.split(';').flat_map(|part| {
            url::form_urlencoded::parse(part.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect::<Vec<_>>()
        }))
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn headers(auth: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for a in auth {
            h.append(header::AUTHORIZATION, a.parse().unwrap());
        }
        h
    }

    fn token(h: &HeaderMap, q: Option<&str>, body: &[(&str, &str)]) -> Option<String> {
        let body: Vec<(String, String)> = body.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        bearer_token(h, q, &|name| body.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
            .map(|t| t.expose().to_owned())
    }

    #[test]
    fn read_the_way_doorkeeper_reads_it() {
        assert_eq!(token(&headers(&["Bearer abc"]), None, &[]).as_deref(), Some("abc"));
        assert_eq!(token(&headers(&["bearer abc"]), None, &[]).as_deref(), Some("abc"));
        assert_eq!(token(&headers(&["BEARER abc"]), Some("access_token=q"), &[]).as_deref(), Some("abc"));
        // Another scheme, or a blank token: the parameters are tried next.
        assert_eq!(token(&headers(&["Basic Zm9v"]), Some("access_token=q"), &[]).as_deref(), Some("q"));
        assert_eq!(token(&headers(&["Bearer "]), Some("access_token=q"), &[]).as_deref(), Some("q"));
        assert_eq!(token(&headers(&["Bearer"]), None, &[("access_token", "b")]).as_deref(), Some("b"));
        // The query wins over the body; access_token over bearer_token.
        assert_eq!(token(&headers(&[]), Some("access_token=q"), &[("access_token", "b")]).as_deref(), Some("q"));
        assert_eq!(token(&headers(&[]), Some("bearer_token=q"), &[("access_token", "b")]).as_deref(), Some("b"));
        assert_eq!(token(&headers(&[]), Some("bearer_token=q"), &[]).as_deref(), Some("q"));
        assert_eq!(token(&headers(&[]), None, &[("bearer_token", "b")]).as_deref(), Some("b"));
        // Rack decodes keys; the last occurrence wins; Rack 2 also splits on `;`.
        assert_eq!(token(&headers(&[]), Some("access%5Ftoken=a&access_token=z"), &[]).as_deref(), Some("z"));
        assert_eq!(token(&headers(&[]), Some("x=1;access_token=s"), &[]).as_deref(), Some("s"));
        assert_eq!(token(&headers(&[]), Some("access_token=+"), &[]), None, "blank");
        assert_eq!(token(&headers(&["Bearer a", "Bearer b"]), None, &[]), None, "two headers name none");
        assert!(format!("{:?}", Token::new("secret")).contains("redacted"));
    }
}
