//! Who signed a federation request — verified the way the instance will verify it.
//!
//! The shield counts a delivery toward a wave, a domain's budget, familiarity or follow
//! learning only when the instance would accept its signature; anything else could be
//! sent by anyone with a script, so it counts under the connecting client's pseudonym and
//! never raises, extends or prolongs a shield. "The way the instance would accept it" is
//! Mastodon's `SignedRequest` (`app/lib/signed_request.rb`), read line by line:
//!
//! - **draft-cavage** `Signature: keyId=..,algorithm=..,headers=..,signature=..`: the
//!   parameters parsed as Mastodon's grammar does (case-sensitive names, quoted strings
//!   with escapes); `algorithm` absent means `hs2019`, and only `rsa-sha256`/`hs2019` are
//!   accepted; `headers` absent means `(created)` for hs2019 and `date` otherwise;
//!   `(created)`/`(expires)` only with hs2019 and their parameter present;
//!   `(request-target)` with the query string, or (Mastodon's compatibility fallback)
//!   without it. `Authorization: Signature` is not read: Mastodon does not read it.
//! - **RFC 9421** `Signature-Input` + `Signature`: `created` and `keyid` required,
//!   `@method` and `@target-uri` covered, `rsa-v1_5-sha256` keys.
//! - **The time window**: `created` (hs2019 `created`, RFC 9421 `created`, else `Date`)
//!   no more than `CLOCK_SKEW_MARGIN` (1 h) ahead; the signature expires at `expires`, or
//!   5 minutes after `created` when none is given, capped at `EXPIRATION_WINDOW_LIMIT`
//!   (12 h), and is refused once more than 1 h past that. A signature with no time at
//!   all (neither `Date` nor `created`) never expires: pavise does not count it (weak),
//!   nor call it refused, since Mastodon may take it.
//! - **The body**: a POST must cover `Digest` (`SHA-256=`, exactly as Mastodon splits the
//!   header) or, for RFC 9421, `Content-Digest` (an RFC 8941 dictionary with `sha-256`),
//!   and the digest must be the body's. So a captured signature cannot carry a new body.
//!
//! Pavise asks a little more than Mastodon: a cavage signature must also cover
//! `(request-target)` and `host` (Mastodon wants one of `(request-target)`/`digest`, and
//! `host` for GETs only). Every server that federates with Mastodon signs both, and a
//! signature that does not could be replayed to another inbox or another instance.
//!
//! The key comes from its owner ([`super::keys`]): the verified identity is the key's
//! *owner* as its own document states it, not whatever the keyId's path suggests.
//! Cheap checks (grammar, coverage, window, digest) run before any key is fetched, so a
//! forgery costs pavise no network request; a fetch happens only within the budgets of
//! [`super::budget`].
//!
//! [`Rejection::instance_refuses`] tells the reasons for which the instance itself refuses
//! a delivery (so forwarding it changes nothing) from those where pavise cannot tell.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::Engine as _;
use http::{HeaderMap, Method, Uri};
use ring::signature::{self, UnparsedPublicKey};

use super::{
    ShieldError,
    budget::FetchBudget,
    keys::{ActorKey, KeyFetcher},
};

/// Mastodon's `SignedRequest::EXPIRATION_WINDOW_LIMIT`.
pub const EXPIRATION_WINDOW_LIMIT: i64 = 12 * 3600;
/// Mastodon's `SignedRequest::CLOCK_SKEW_MARGIN`.
pub const CLOCK_SKEW_MARGIN: i64 = 3600;
/// Without `expires`, a signature is good for this long after `created`.
pub const DEFAULT_EXPIRY: i64 = 5 * 60;

/// Why a request does not count as signed by anyone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// No `Signature` header.
    Unsigned,
    /// The signature header does not parse, or uses what Mastodon refuses (algorithm, keyId).
    Malformed,
    /// It does not cover what it must (`(request-target)`, `host`, a time, the digest).
    Weak,
    /// Outside the instance's time window (or no time at all).
    Stale,
    /// The digest is missing or is not the body's.
    Digest,
    /// The key could not be fetched from its owner, or its owner could not be confirmed.
    KeyUnavailable,
    /// The signature does not verify against the owner's key.
    BadSignature,
    /// It verifies, but the activity names another actor than the key's owner.
    ForeignActor,
    /// The very same signature was seen before: a replay, not a new delivery.
    Replayed,
    /// Addressed to a `Host` that is not one of the instance's domains (Rails refuses it).
    ForeignHost,
    /// Signed by a domain the instance suspends (its signature verification refuses it).
    DomainBlocked,
    /// The key was not fetched now: the client's or the keyId host's fetch budget is spent,
    /// or the fetcher is busy ([`super::budget`]).
    FetchRefused,
}

impl Rejection {
    pub const ALL: [Rejection; 12] = [
        Rejection::Unsigned,
        Rejection::Malformed,
        Rejection::Weak,
        Rejection::Stale,
        Rejection::Digest,
        Rejection::KeyUnavailable,
        Rejection::BadSignature,
        Rejection::ForeignActor,
        Rejection::Replayed,
        Rejection::ForeignHost,
        Rejection::DomainBlocked,
        Rejection::FetchRefused,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Rejection::Unsigned => "unsigned",
            Rejection::Malformed => "malformed",
            Rejection::Weak => "weak",
            Rejection::Stale => "stale",
            Rejection::Digest => "digest",
            Rejection::KeyUnavailable => "key_unavailable",
            Rejection::BadSignature => "bad_signature",
            Rejection::ForeignActor => "foreign_actor",
            Rejection::Replayed => "replayed",
            Rejection::ForeignHost => "foreign_host",
            Rejection::DomainBlocked => "domain_blocked",
            Rejection::FetchRefused => "key_fetch_refused",
        }
    }

    /// Whether the instance itself refuses such a delivery, so that forwarding it as it is
    /// changes nothing: no signature, one outside the window or over another body, another
    /// instance's `Host`, a suspended domain. For every other reason pavise cannot tell
    /// whether the instance accepts it (a key pavise cannot fetch but the instance has, a
    /// relayed activity with a Linked Data signature, a signature weaker than pavise asks).
    pub fn instance_refuses(self) -> bool {
        matches!(
            self,
            Rejection::Unsigned
                | Rejection::Stale
                | Rejection::Digest
                | Rejection::ForeignHost
                | Rejection::DomainBlocked
        )
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// The signing identity a request names (not yet verified).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedBy {
    /// The keyId as written.
    pub key_id: String,
    /// The keyId's host, lower-cased (what it claims; the verified domain is the owner's).
    pub domain: String,
    pub format: Format,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// draft-cavage.
    Cavage {
        /// `rsa-sha256` or `hs2019` (the default).
        algorithm: String,
        /// The covered headers, lower-cased, in order.
        headers: Vec<String>,
        signature: Vec<u8>,
        created: Option<String>,
        expires: Option<String>,
    },
    /// RFC 9421: the covered components, the exact `@signature-params` text, the signature.
    Rfc9421 { components: Vec<String>, params: String, signature: Vec<u8>, created: Option<i64>, expires: Option<i64> },
}

impl SignedBy {
    fn signature(&self) -> &[u8] {
        match &self.format {
            Format::Cavage { signature, .. } | Format::Rfc9421 { signature, .. } => signature,
        }
    }
}

/// Reads the signature headers as Mastodon reads them.
pub fn parse(headers: &HeaderMap) -> Result<SignedBy, Rejection> {
    // Rack joins repeated headers into one value, which Mastodon then parses as a whole;
    // pavise does not guess which of several signatures the instance would end up with.
    if ["signature", "signature-input"].iter().any(|h| headers.get_all(*h).iter().nth(1).is_some()) {
        return Err(Rejection::Malformed);
    }
    let text = |name: &str| headers.get(name).map(|v| v.to_str().map_err(|_| Rejection::Malformed));
    if let Some(input) = text("signature-input") {
        let sig = text("signature").ok_or(Rejection::Malformed)??;
        return parse_rfc9421(input?, sig).ok_or(Rejection::Malformed);
    }
    let Some(sig) = text("signature") else { return Err(Rejection::Unsigned) };
    parse_cavage(sig?).ok_or(Rejection::Malformed)
}

fn parse_cavage(value: &str) -> Option<SignedBy> {
    let params = cavage_params(value)?;
    let get = |k: &str| params.iter().rev().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    let present = |k: &str| get(k).filter(|v| !v.trim().is_empty());
    let key_id = present("keyId")?.to_owned();
    let algorithm = get("algorithm").unwrap_or("hs2019").to_owned();
    if algorithm != "rsa-sha256" && algorithm != "hs2019" {
        return None;
    }
    let default_headers = if algorithm == "hs2019" { "(created)" } else { "date" };
    let headers =
        get("headers").unwrap_or(default_headers).to_lowercase().split_whitespace().map(str::to_owned).collect();
    // Ruby's `Base64.decode64` skips characters outside the alphabet; a signature that
    // only decodes that way is garbage, and garbage does not verify.
    let signature = base64::engine::general_purpose::STANDARD.decode(present("signature")?.trim()).ok()?;
    let domain = url_host(&key_id)?;
    Some(SignedBy {
        key_id,
        domain,
        format: Format::Cavage {
            algorithm,
            headers,
            signature,
            created: present("created").map(str::to_owned),
            expires: present("expires").map(str::to_owned),
        },
    })
}

/// Mastodon's `SignatureParser`: `token=token` or `token="quoted \" string"` pairs,
/// comma-separated with optional whitespace, after an optional buggy `Signature ` prefix.
/// Anything else fails the whole header (Mastodon answers 401 to it).
fn cavage_params(value: &str) -> Option<Vec<(String, String)>> {
    let is_token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+.^_`|~-".contains(c);
    let mut rest = value.strip_prefix("Signature ").unwrap_or(value);
    let mut out = Vec::new();
    loop {
        let key_len = rest.find(|c: char| !is_token(c)).unwrap_or(rest.len());
        if key_len == 0 {
            return None;
        }
        let key = &rest[..key_len];
        rest = rest[key_len..].trim_start().strip_prefix('=')?.trim_start();
        let val = if let Some(quoted) = rest.strip_prefix('"') {
            let mut val = String::new();
            let mut chars = quoted.char_indices();
            let end = loop {
                match chars.next()? {
                    (i, '"') => break i,
                    (_, '\\') => val.push(chars.next()?.1),
                    (_, c) => val.push(c),
                }
            };
            rest = &quoted[end + 1..];
            val
        } else {
            let len = rest.find(|c: char| !is_token(c)).unwrap_or(rest.len());
            if len == 0 {
                return None;
            }
            let val = rest[..len].to_owned();
            rest = &rest[len..];
            val
        };
        out.push((key.to_owned(), val));
        rest = rest.trim_start();
        if rest.is_empty() {
            return Some(out);
        }
        rest = rest.strip_prefix(',')?.trim_start();
    }
}

fn parse_rfc9421(input: &str, sig: &str) -> Option<SignedBy> {
    // The first signature label; senders send one.
    let (label, params_text) = input.split_once('=')?;
    let label = label.trim();
    let params_text = first_member(params_text.trim());
    let open = params_text.find('(')?;
    let close = params_text.find(')')?;
    let mut components = Vec::new();
    for c in params_text.get(open + 1..close)?.split_ascii_whitespace() {
        // `"name"`, without component parameters (`;sf`, `;key=`): pavise reads no others.
        let name = c.strip_prefix('"')?.strip_suffix('"')?;
        if name.is_empty() || name.contains('"') || name.chars().any(|c| c.is_ascii_uppercase()) {
            return None;
        }
        components.push(name.to_owned());
    }
    let (mut key_id, mut created, mut expires) = (None, None, None);
    for p in params_text.get(close + 1..)?.split(';').skip(1) {
        let (k, v) = p.split_once('=')?;
        match k.trim() {
            "keyid" => key_id = Some(v.trim().strip_prefix('"')?.strip_suffix('"')?.to_owned()),
            "created" => created = Some(v.trim().parse::<i64>().ok()?),
            "expires" => expires = Some(v.trim().parse::<i64>().ok()?),
            // Mastodon verifies with the actor's RSA key; another algorithm cannot verify.
            "alg" if v.trim() != "\"rsa-v1_5-sha256\"" => return None,
            _ => {}
        }
    }
    let key_id = key_id.filter(|k| !k.is_empty())?;
    let signature = sig.split(',').find_map(|m| {
        let (l, v) = m.split_once('=')?;
        if l.trim() != label {
            return None;
        }
        let v = v.trim().strip_prefix(':')?;
        let v = v.split(':').next()?;
        base64::engine::general_purpose::STANDARD.decode(v).ok()
    })?;
    let domain = url_host(&key_id)?;
    Some(SignedBy {
        key_id,
        domain,
        format: Format::Rfc9421 { components, params: params_text.to_owned(), signature, created, expires },
    })
}

/// The first member of a structured-field dictionary value (up to a top-level comma).
fn first_member(text: &str) -> &str {
    let mut depth = 0i32;
    let mut quoted = false;
    for (i, c) in text.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => return &text[..i],
            _ => {}
        }
    }
    text
}

/// The lower-cased host of an http(s) URL (`acct:` keyIds cannot be fetched: webfinger
/// is the instance's business, not the shield's).
pub fn url_host(url: &str) -> Option<String> {
    let uri: Uri = url.split('#').next()?.parse().ok()?;
    if !matches!(uri.scheme_str(), Some("https" | "http")) {
        return None;
    }
    Some(uri.host()?.to_ascii_lowercase())
}

/// The request parts a signature covers.
pub struct Signed<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    /// The `Host` the client addressed (for `@authority`, `@target-uri`).
    pub host: &'a str,
    pub https: bool,
    /// The body exactly as received (the digest covers these bytes).
    pub body: &'a [u8],
}

impl Signed<'_> {
    /// One header as Rack hands it to Mastodon: repeated values joined by ", ".
    fn header(&self, name: &str) -> Option<String> {
        let values: Vec<&str> = self.headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect();
        (!values.is_empty()).then(|| values.join(", "))
    }
}

/// Everything Mastodon checks before it looks at the key: coverage, time window, digest.
pub fn check_request(by: &SignedBy, req: &Signed<'_>, now: SystemTime) -> Result<(), Rejection> {
    let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let post = req.method == Method::POST;
    match &by.format {
        Format::Cavage { algorithm, headers, created, expires, .. } => {
            let has = |h: &str| headers.iter().any(|x| x == h);
            if !(has("date") || has("(created)"))
                || !has("(request-target)")
                || !has("host")
                || (post && !has("digest"))
            {
                return Err(Rejection::Weak);
            }
            let hs2019 = algorithm == "hs2019";
            if (has("(created)") && (!hs2019 || created.is_none()))
                || (has("(expires)") && (!hs2019 || expires.is_none()))
            {
                return Err(Rejection::Malformed);
            }
            let created_at = match (hs2019, created) {
                (true, Some(c)) => Some(ruby_to_i(c)),
                _ => match req.header("date") {
                    Some(date) => Some(
                        httpdate::parse_http_date(&date)
                            .ok()
                            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                            .map(|d| d.as_secs() as i64)
                            .ok_or(Rejection::Stale)?,
                    ),
                    None => None,
                },
            };
            // A covered `date` without a `Date` header: no time at all, which Mastodon may
            // not refuse; pavise cannot count it, and cannot call it refused either.
            if created_at.is_none() {
                return Err(Rejection::Weak);
            }
            if !within_window(created_at, expires.as_deref().map(ruby_to_i), now) {
                return Err(Rejection::Stale);
            }
            if has("digest") {
                check_digest(req)?;
            }
        }
        Format::Rfc9421 { components, created, expires, .. } => {
            let has = |c: &str| components.iter().any(|x| x == c);
            if created.is_none() || !has("@method") || !has("@target-uri") || (post && !has("content-digest")) {
                return Err(Rejection::Weak);
            }
            if !within_window(*created, *expires, now) {
                return Err(Rejection::Stale);
            }
            if has("content-digest") {
                check_content_digest(req)?;
            }
        }
    }
    Ok(())
}

/// `SignedRequest#matches_time_window?`, except that no time at all is not accepted.
pub fn within_window(created: Option<i64>, expires: Option<i64>, now: i64) -> bool {
    let Some(created) = created else { return false };
    let expires = expires
        .unwrap_or_else(|| created.saturating_add(DEFAULT_EXPIRY))
        .min(created.saturating_add(EXPIRATION_WINDOW_LIMIT));
    created <= now.saturating_add(CLOCK_SKEW_MARGIN) && now <= expires.saturating_add(CLOCK_SKEW_MARGIN)
}

/// Ruby's `String#to_i`: leading whitespace, a sign, the digits up to the first non-digit
/// (underscores between digits allowed), 0 when there are none.
fn ruby_to_i(s: &str) -> i64 {
    let s = s.trim_start();
    let (neg, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let mut n: i64 = 0;
    let mut prev_digit = false;
    for b in digits.bytes() {
        match b {
            b'0'..=b'9' => {
                n = n.saturating_mul(10).saturating_add(i64::from(b - b'0'));
                prev_digit = true;
            }
            b'_' if prev_digit => prev_digit = false,
            _ => break,
        }
    }
    if neg { -n } else { n }
}

fn body_sha256(body: &[u8]) -> ring::digest::Digest {
    ring::digest::digest(&ring::digest::SHA256, body)
}

/// `verify_body_digest!` for `Digest`: split on `,`, each on the first `=`, the first
/// `sha-256` (case-insensitive name, nothing trimmed) must equal the body's digest.
fn check_digest(req: &Signed<'_>) -> Result<(), Rejection> {
    let header = req.header("digest").ok_or(Rejection::Digest)?;
    let sha256 = header
        .split(',')
        .filter_map(|d| {
            let (k, v) = d.split_once('=').unwrap_or((d, ""));
            k.eq_ignore_ascii_case("sha-256").then_some(v)
        })
        .next()
        .ok_or(Rejection::Digest)?;
    let expected = base64::engine::general_purpose::STANDARD.encode(body_sha256(req.body));
    if sha256 == expected { Ok(()) } else { Err(Rejection::Digest) }
}

/// `verify_body_digest!` for RFC 9530 `Content-Digest`: an RFC 8941 dictionary whose
/// `sha-256` member is a byte sequence equal to the body's digest.
fn check_content_digest(req: &Signed<'_>) -> Result<(), Rejection> {
    let header = req.header("content-digest").ok_or(Rejection::Digest)?;
    let mut found = None;
    for member in header.split(',') {
        let member = member.trim_matches([' ', '\t']);
        let (key, value) = member.split_once('=').ok_or(Rejection::Digest)?;
        if key.is_empty()
            || key.bytes().any(|b| !(b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.*".contains(&b)))
        {
            return Err(Rejection::Digest);
        }
        let bytes = value.strip_prefix(':').and_then(|v| v.split_once(':')).ok_or(Rejection::Digest)?.0;
        let decoded = base64::engine::general_purpose::STANDARD.decode(bytes).map_err(|_| Rejection::Digest)?;
        if key == "sha-256" {
            // A later duplicate overrides an earlier one, as in an RFC 8941 dictionary.
            found = Some(decoded);
        }
    }
    match found {
        Some(d) if d == body_sha256(req.body).as_ref() => Ok(()),
        _ => Err(Rejection::Digest),
    }
}

/// The texts the sender may have signed: one for RFC 9421; for draft-cavage the one with
/// the query string in `(request-target)`, then the one without (Mastodon's fallback).
pub fn signing_strings(by: &SignedBy, req: &Signed<'_>) -> Option<Vec<String>> {
    let path_and_query = req.uri.path_and_query().map_or("/", |p| p.as_str());
    match &by.format {
        Format::Cavage { headers, created, expires, .. } => {
            let build = |target: &str| -> Option<String> {
                let mut lines = Vec::with_capacity(headers.len());
                for h in headers {
                    let line = match h.as_str() {
                        "(request-target)" => {
                            format!("(request-target): {} {target}", req.method.as_str().to_ascii_lowercase())
                        }
                        "(created)" => format!("(created): {}", created.as_deref()?),
                        "(expires)" => format!("(expires): {}", expires.as_deref()?),
                        "host" => format!("host: {}", req.header("host").unwrap_or_else(|| req.host.to_owned())),
                        name => format!("{name}: {}", req.header(name)?),
                    };
                    lines.push(line);
                }
                Some(lines.join("\n"))
            };
            let mut out = vec![build(path_and_query)?];
            if req.uri.query().is_some() {
                out.push(build(req.uri.path())?);
            }
            Some(out)
        }
        Format::Rfc9421 { components, params, .. } => {
            let scheme = if req.https { "https" } else { "http" };
            let mut out = String::new();
            for c in components {
                let value = match c.as_str() {
                    "@method" => req.method.as_str().to_owned(),
                    "@target-uri" => format!("{scheme}://{}{path_and_query}", req.host),
                    "@authority" => req.host.to_ascii_lowercase(),
                    "@scheme" => scheme.to_owned(),
                    "@path" => req.uri.path().to_owned(),
                    "@query" => format!("?{}", req.uri.query().unwrap_or("")),
                    "@request-target" => path_and_query.to_owned(),
                    name if name.starts_with('@') => return None,
                    name => {
                        let values: Vec<&str> =
                            req.headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).map(str::trim).collect();
                        if values.is_empty() {
                            return None;
                        }
                        values.join(", ")
                    }
                };
                out.push_str(&format!("\"{c}\": {value}\n"));
            }
            out.push_str(&format!("\"@signature-params\": {params}"));
            Some(vec![out])
        }
    }
}

/// An actor's RSA public key (PKCS#1 `RSAPublicKey` DER), ready for ring. Mastodon
/// verifies with the actor's RSA key only (`RSASSA-PKCS1-v1_5` with SHA-256), so a key of
/// another kind makes nothing verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey(Vec<u8>);

impl PublicKey {
    /// From the `publicKeyPem` of an actor document (SPKI, "BEGIN PUBLIC KEY"; or PKCS#1).
    pub fn from_pem(pem: &str) -> Result<PublicKey, ShieldError> {
        let bad = |why: &str| ShieldError::Key(why.to_owned());
        let rsa_pkcs1 = pem.contains("BEGIN RSA PUBLIC KEY");
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).map(str::trim).collect();
        let der =
            base64::engine::general_purpose::STANDARD.decode(b64).map_err(|_| bad("publicKeyPem is not base64"))?;
        if rsa_pkcs1 {
            return Ok(PublicKey(der));
        }
        // SubjectPublicKeyInfo ::= SEQUENCE { algorithm SEQUENCE { oid, params }, subjectPublicKey BIT STRING }
        let (spki, _) = der_take(&der, 0x30).ok_or_else(|| bad("not a SubjectPublicKeyInfo"))?;
        let (alg, rest) = der_take(spki, 0x30).ok_or_else(|| bad("no algorithm identifier"))?;
        let (oid, _) = der_take(alg, 0x06).ok_or_else(|| bad("no algorithm OID"))?;
        let (bits, _) = der_take(rest, 0x03).ok_or_else(|| bad("no key bit string"))?;
        let key = bits.get(1..).ok_or_else(|| bad("empty key"))?;
        const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
        if oid == RSA { Ok(PublicKey(key.to_vec())) } else { Err(bad("not an RSA key (Mastodon verifies RSA only)")) }
    }

    pub fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, &self.0).verify(message, sig).is_ok()
    }
}

/// One DER TLV with the expected tag: (contents, rest).
fn der_take(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    if *input.first()? != tag {
        return None;
    }
    let first = *input.get(1)? as usize;
    let (len, header) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *input.get(2 + i)? as usize;
        }
        (len, 2 + n)
    };
    let end = header.checked_add(len)?;
    Some((input.get(header..end)?, input.get(end..)?))
}

/// What verification found out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The signature verifies against the key its owner publishes; `actor` is that owner.
    Verified { actor: String, domain: String },
    /// Nothing the instance would accept as this actor's, and why.
    Unverified(Rejection),
}

impl Verdict {
    pub fn is_verified(&self) -> bool {
        matches!(self, Verdict::Verified { .. })
    }
}

/// A fetched key and whose it is.
#[derive(Debug)]
struct OwnedKey {
    key: PublicKey,
    owner: String,
    domain: String,
}

/// Caches keys (and failures) so a flood costs one fetch per keyId; fetches only within
/// their budgets.
pub struct Verifier {
    fetcher: Arc<dyn KeyFetcher>,
    keys: moka::future::Cache<String, Option<Arc<OwnedKey>>>,
    budget: FetchBudget,
    /// keyIds fetched again after a failed verification in the last minute.
    refetched: moka::sync::Cache<String, ()>,
}

/// How often one keyId may be fetched again because a signature did not verify: often
/// enough that an actor's key rotation is picked up within a minute, rarely enough that
/// a forger reusing a real keyId cannot turn every bad delivery into a fetch.
const REFETCH_EVERY: Duration = Duration::from_secs(60);

impl Verifier {
    pub fn new(fetcher: Arc<dyn KeyFetcher>, capacity: u64, ttl: Duration) -> Verifier {
        Verifier {
            fetcher,
            keys: moka::future::Cache::builder()
                .max_capacity(capacity)
                .expire_after(KeyExpiry { ttl, negative_ttl: ttl.min(Duration::from_secs(60)) })
                .build(),
            budget: FetchBudget::default(),
            refetched: moka::sync::Cache::builder().max_capacity(capacity).time_to_live(REFETCH_EVERY).build(),
        }
    }

    /// The same, fetching within `budget`.
    pub fn with_budget(mut self, budget: FetchBudget) -> Verifier {
        self.budget = budget;
        self
    }

    pub fn budget(&self) -> &FetchBudget {
        &self.budget
    }

    /// Verifies a request as the instance would, at `now`. `client` (a keyed hash of the
    /// connecting client's pseudonym) pays for a fetch; None for pavise's own re-checks.
    pub async fn verify(&self, by: &SignedBy, req: &Signed<'_>, now: SystemTime, client: Option<u64>) -> Verdict {
        if let Err(why) = check_request(by, req, now) {
            return Verdict::Unverified(why);
        }
        let Some(texts) = signing_strings(by, req) else { return Verdict::Unverified(Rejection::BadSignature) };
        let sig = by.signature();
        let verifies = |key: &Option<Arc<OwnedKey>>| {
            key.as_ref().filter(|k| texts.iter().any(|t| k.key.verify(t.as_bytes(), sig))).cloned()
        };
        let Some(key) = self.keys.optionally_get_with(by.key_id.clone(), self.fetch_key(by, client)).await else {
            return Verdict::Unverified(Rejection::FetchRefused);
        };
        if let Some(k) = verifies(&key) {
            return Verdict::Verified { actor: k.owner.clone(), domain: k.domain.clone() };
        }
        // The actor may have rotated its key since we cached it.
        if key.is_some() && !self.refetched.contains_key(&by.key_id) {
            self.refetched.insert(by.key_id.clone(), ());
            self.keys.invalidate(&by.key_id).await;
            if let Some(fresh) = self.keys.optionally_get_with(by.key_id.clone(), self.fetch_key(by, client)).await
                && let Some(k) = verifies(&fresh)
            {
                return Verdict::Verified { actor: k.owner.clone(), domain: k.domain.clone() };
            }
        }
        Verdict::Unverified(if key.is_some() { Rejection::BadSignature } else { Rejection::KeyUnavailable })
    }

    /// The key, `Some(None)` when it could not be had (cached as such for a minute), or
    /// None when the fetch was not admitted (nothing cached: another try may be).
    async fn fetch_key(&self, by: &SignedBy, client: Option<u64>) -> Option<Option<Arc<OwnedKey>>> {
        let _admitted = match self.budget.admit(client, &by.domain).await {
            Ok(a) => a,
            Err(why) => {
                tracing::debug!(domain = %by.domain, ?why, "key fetch not admitted");
                return None;
            }
        };
        let fetched = self.fetcher.fetch(&by.key_id).await.and_then(|ActorKey { pem, owner }| {
            let domain = url_host(&owner).ok_or_else(|| ShieldError::Key("the key's owner is not a URL".into()))?;
            Ok(OwnedKey { key: PublicKey::from_pem(&pem)?, owner, domain })
        });
        Some(match fetched {
            Ok(k) => Some(Arc::new(k)),
            Err(e) => {
                tracing::debug!(domain = %by.domain, error = %e, "signing key unavailable");
                None
            }
        })
    }
}

struct KeyExpiry {
    ttl: Duration,
    negative_ttl: Duration,
}

impl moka::Expiry<String, Option<Arc<OwnedKey>>> for KeyExpiry {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Option<Arc<OwnedKey>>,
        _now: std::time::Instant,
    ) -> Option<Duration> {
        Some(if value.is_some() { self.ttl } else { self.negative_ttl })
    }
}

#[cfg(test)]
pub(crate) mod tests;
