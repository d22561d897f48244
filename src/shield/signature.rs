//! Who signed a federation request: parse the signature headers, fetch the actor's key,
//! verify — without touching a byte the instance will verify again.
//!
//! Two formats are in use: draft-cavage `Signature: keyId=...,headers=...,signature=...`
//! (Mastodon, Akkoma, GoToSocial, Misskey) and RFC 9421 `Signature-Input` + `Signature`
//! (Mastodon ≥ 4.4). The shield needs the signing actor and its domain to count a
//! delivery against the right budget. A keyId alone proves nothing — anyone can write
//! `keyId="https://big.example/users/x#main-key"` — so a delivery only counts against a
//! domain once its signature verifies against that actor's published key; otherwise it
//! counts under the connecting client's pseudonym and cannot burn the real domain's quota.
//!
//! Keys are fetched through a [`KeyFetcher`]: in production an HTTP client that goes out
//! through the egress proxy (Tor), so fetching a key reveals no more than the instance's
//! own fetch would. Keys and failures are cached (moka) so a flood costs one fetch per key.

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, Method, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use ring::signature::{self, UnparsedPublicKey};

use super::ShieldError;
use crate::proxy::StageFuture;

/// The signing identity named by a request (not yet verified).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedBy {
    /// The keyId as written.
    pub key_id: String,
    /// The keyId without its fragment: the actor URL (or the key document's URL).
    pub actor: String,
    /// The keyId's host, lower-cased.
    pub domain: String,
    pub format: Format,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// draft-cavage: the covered headers, the signature, and `(created)`/`(expires)`.
    Cavage { headers: Vec<String>, signature: Vec<u8>, created: Option<String>, expires: Option<String> },
    /// RFC 9421: the covered components, the exact `@signature-params` text, the signature.
    Rfc9421 { components: Vec<String>, params: String, signature: Vec<u8> },
}

/// Reads the signature headers. `None` when there is no usable signature.
pub fn parse(headers: &HeaderMap) -> Option<SignedBy> {
    if let Some(input) = headers.get("signature-input").and_then(|v| v.to_str().ok()) {
        let sig = headers.get("signature").and_then(|v| v.to_str().ok())?;
        return parse_rfc9421(input, sig);
    }
    let sig = headers.get("signature").and_then(|v| v.to_str().ok()).or_else(|| {
        headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Signature "))
    })?;
    parse_cavage(sig)
}

fn parse_cavage(value: &str) -> Option<SignedBy> {
    let params = split_params(value);
    let key_id = params.get("keyid")?.clone();
    let headers = params
        .get("headers")
        .map(|h| h.split_ascii_whitespace().map(str::to_ascii_lowercase).collect())
        .unwrap_or_else(|| vec!["date".to_owned()]);
    let signature = base64::engine::general_purpose::STANDARD.decode(params.get("signature")?.trim()).ok()?;
    let (actor, domain) = actor_and_domain(&key_id)?;
    Some(SignedBy {
        key_id,
        actor,
        domain,
        format: Format::Cavage {
            headers,
            signature,
            created: params.get("created").cloned(),
            expires: params.get("expires").cloned(),
        },
    })
}

/// `a="x",b=1` → {a: x, b: 1}; keys lower-cased; commas inside quotes are kept.
fn split_params(value: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = value.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else { break };
        let key = key.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (val, next) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        out.insert(key, val.to_owned());
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

fn parse_rfc9421(input: &str, sig: &str) -> Option<SignedBy> {
    // Take the first signature label; senders send one.
    let (label, params_text) = input.split_once('=')?;
    let label = label.trim();
    let params_text = first_member(params_text.trim());
    let open = params_text.find('(')?;
    let close = params_text.find(')')?;
    let components: Vec<String> = params_text
        .get(open + 1..close)?
        .split_ascii_whitespace()
        .map(|c| c.trim_matches('"').to_ascii_lowercase())
        .collect();
    let key_id = params_text.get(close + 1..)?.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case("keyid").then(|| v.trim().trim_matches('"').to_owned())
    })?;
    let signature = sig.split(',').find_map(|m| {
        let (l, v) = m.split_once('=')?;
        if l.trim() != label {
            return None;
        }
        base64::engine::general_purpose::STANDARD.decode(v.trim().trim_matches(':')).ok()
    })?;
    let (actor, domain) = actor_and_domain(&key_id)?;
    Some(SignedBy {
        key_id,
        actor,
        domain,
        format: Format::Rfc9421 { components, params: params_text.to_owned(), signature },
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

fn actor_and_domain(key_id: &str) -> Option<(String, String)> {
    let actor = key_id.split('#').next().unwrap_or(key_id);
    let uri: Uri = actor.parse().ok()?;
    if !matches!(uri.scheme_str(), Some("https" | "http")) {
        return None;
    }
    let domain = uri.host()?.to_ascii_lowercase();
    Some((actor.to_owned(), domain))
}

/// The request parts a signature covers.
pub struct Signed<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    /// The `Host` the client addressed (for `@authority`, `@target-uri`).
    pub host: &'a str,
    pub https: bool,
}

/// The exact text the sender signed.
pub fn signing_string(by: &SignedBy, req: &Signed<'_>) -> Option<String> {
    let path_and_query = req.uri.path_and_query().map_or("/", |p| p.as_str());
    let header_text = |name: &str| -> Option<String> {
        let values: Vec<&str> =
            req.headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).map(str::trim).collect();
        (!values.is_empty()).then(|| values.join(", "))
    };
    match &by.format {
        Format::Cavage { headers, created, expires, .. } => {
            let mut lines = Vec::with_capacity(headers.len());
            for h in headers {
                let line = match h.as_str() {
                    "(request-target)" => {
                        format!("(request-target): {} {path_and_query}", req.method.as_str().to_ascii_lowercase())
                    }
                    "(created)" => format!("(created): {}", created.as_deref()?),
                    "(expires)" => format!("(expires): {}", expires.as_deref()?),
                    "host" => format!("host: {}", header_text("host").unwrap_or_else(|| req.host.to_owned())),
                    name => format!("{name}: {}", header_text(name)?),
                };
                lines.push(line);
            }
            Some(lines.join("\n"))
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
                    name => header_text(name)?,
                };
                out.push_str(&format!("\"{c}\": {value}\n"));
            }
            out.push_str(&format!("\"@signature-params\": {params}"));
            Some(out)
        }
    }
}

/// An actor's public key, ready for ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// PKCS#1 `RSAPublicKey` DER (unwrapped from the SPKI PEM actors publish).
    Rsa(Vec<u8>),
    Ed25519([u8; 32]),
}

impl PublicKey {
    /// From the `publicKeyPem` of an actor document (SPKI, "BEGIN PUBLIC KEY"; or PKCS#1).
    pub fn from_pem(pem: &str) -> Result<PublicKey, ShieldError> {
        let bad = |why: &str| ShieldError::Key(why.to_owned());
        let rsa_pkcs1 = pem.contains("BEGIN RSA PUBLIC KEY");
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).map(str::trim).collect();
        let der =
            base64::engine::general_purpose::STANDARD.decode(b64).map_err(|_| bad("publicKeyPem is not base64"))?;
        if rsa_pkcs1 {
            return Ok(PublicKey::Rsa(der));
        }
        // SubjectPublicKeyInfo ::= SEQUENCE { algorithm SEQUENCE { oid, params }, subjectPublicKey BIT STRING }
        let (spki, _) = der_take(&der, 0x30).ok_or_else(|| bad("not a SubjectPublicKeyInfo"))?;
        let (alg, rest) = der_take(spki, 0x30).ok_or_else(|| bad("no algorithm identifier"))?;
        let (oid, _) = der_take(alg, 0x06).ok_or_else(|| bad("no algorithm OID"))?;
        let (bits, _) = der_take(rest, 0x03).ok_or_else(|| bad("no key bit string"))?;
        let key = bits.get(1..).ok_or_else(|| bad("empty key"))?;
        const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
        const ED25519: &[u8] = &[0x2b, 0x65, 0x70];
        if oid == RSA {
            Ok(PublicKey::Rsa(key.to_vec()))
        } else if oid == ED25519 {
            Ok(PublicKey::Ed25519(key.try_into().map_err(|_| bad("Ed25519 key is not 32 bytes"))?))
        } else {
            Err(bad("unsupported key algorithm (RSA and Ed25519 are)"))
        }
    }

    pub fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        match self {
            PublicKey::Rsa(der) => {
                UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, der).verify(message, sig).is_ok()
            }
            PublicKey::Ed25519(raw) => UnparsedPublicKey::new(&signature::ED25519, raw).verify(message, sig).is_ok(),
        }
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

/// Where actor keys come from. The production fetcher goes through the egress proxy.
pub trait KeyFetcher: Send + Sync {
    /// The `publicKeyPem` for `key_id`, whose owner must be `actor`.
    fn fetch<'a>(&'a self, key_id: &'a str, actor: &'a str) -> StageFuture<'a, Result<String, ShieldError>>;
}

/// Fetches actor documents over HTTP(S), through an `http_proxy`-style forward proxy
/// (pavise's egress listener, 127.0.0.1:8118) when one is set.
pub struct HttpKeyFetcher {
    proxy: Option<SocketAddr>,
    /// Without the egress proxy (whose destination guard refuses private addresses),
    /// keyIds on loopback or private address literals are refused unless this is set:
    /// a forged keyId must not make pavise request its neighbours' admin pages.
    allow_private: bool,
    timeout: Duration,
    tls: tokio_rustls::TlsConnector,
}

impl HttpKeyFetcher {
    pub fn new(
        proxy: Option<SocketAddr>,
        allow_private: bool,
        timeout: Duration,
    ) -> Result<HttpKeyFetcher, ShieldError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| ShieldError::Fetch(format!("TLS setup: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(HttpKeyFetcher { proxy, allow_private, timeout, tls: tokio_rustls::TlsConnector::from(Arc::new(tls)) })
    }

    async fn get(&self, url: &str) -> Result<Bytes, ShieldError> {
        let fail = |why: String| ShieldError::Fetch(why);
        let uri: Uri = url.parse().map_err(|_| fail(format!("{url:?} is not a URL")))?;
        let https = uri.scheme_str() == Some("https");
        let host = uri.host().ok_or_else(|| fail("no host".into()))?.to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        if self.proxy.is_none() && !self.allow_private && is_private_host(&host) {
            return Err(fail(format!("{host} is a local or private address")));
        }
        let authority = format!("{host}:{port}");
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        let stream = match self.proxy {
            Some(proxy) => tokio::net::TcpStream::connect(proxy).await,
            None => tokio::net::TcpStream::connect(&authority).await,
        }
        .map_err(|e| fail(format!("connect: {e}")))?;
        let host_header =
            if (https && port == 443) || (!https && port == 80) { host.clone() } else { authority.clone() };
        let request = |target: String| {
            http::Request::get(target)
                .header(http::header::HOST, &host_header)
                .header(http::header::ACCEPT, "application/activity+json, application/ld+json")
                .header(http::header::USER_AGENT, "pavise")
                .body(Empty::<Bytes>::new())
                .map_err(|e| fail(e.to_string()))
        };
        if !https {
            // Through a forward proxy a plain-http request is sent in absolute form.
            let target = if self.proxy.is_some() { url.split('#').next().unwrap_or(url).to_owned() } else { path };
            return send(TokioIo::new(stream), request(target)?).await;
        }
        let stream = match self.proxy {
            Some(_) => connect_tunnel(stream, &authority).await?,
            None => stream,
        };
        let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|_| fail("bad host name".into()))?;
        let tls = self.tls.connect(name, stream).await.map_err(|e| fail(format!("TLS: {e}")))?;
        send(TokioIo::new(tls), request(path)?).await
    }
}

/// Loopback, private, link-local and unspecified address literals, and `localhost`.
fn is_private_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.eq_ignore_ascii_case("localhost") || bare.to_ascii_lowercase().ends_with(".localhost") {
        return true;
    }
    match bare.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(v4)) => {
            v4.is_loopback() || v4.is_private() || v4.is_link_local() || v4.is_unspecified() || v4.is_broadcast()
        }
        Ok(std::net::IpAddr::V6(v6)) => {
            let v6 = v6.to_canonical();
            match v6 {
                std::net::IpAddr::V4(v4) => is_private_host(&v4.to_string()),
                std::net::IpAddr::V6(v6) => {
                    v6.is_loopback()
                        || v6.is_unspecified()
                        || (v6.segments()[0] & 0xfe00) == 0xfc00
                        || (v6.segments()[0] & 0xffc0) == 0xfe80
                }
            }
        }
        Err(_) => false,
    }
}

/// `CONNECT authority` through the forward proxy; the stream is the tunnel afterwards.
async fn connect_tunnel(stream: tokio::net::TcpStream, authority: &str) -> Result<tokio::net::TcpStream, ShieldError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = stream;
    let fail = |why: String| ShieldError::Fetch(why);
    stream
        .write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await
        .map_err(|e| fail(e.to_string()))?;
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    // Read the proxy's answer head byte by byte so no tunnel byte is consumed.
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 8192 || stream.read(&mut byte).await.map_err(|e| fail(e.to_string()))? == 0 {
            return Err(fail("the egress proxy closed the CONNECT".into()));
        }
        head.push(byte[0]);
    }
    let status_ok = head.split(|b| *b == b' ').nth(1).is_some_and(|code| code.starts_with(b"2"));
    if !status_ok {
        return Err(fail(format!(
            "egress proxy refused CONNECT: {}",
            String::from_utf8_lossy(&head).lines().next().unwrap_or("")
        )));
    }
    Ok(stream)
}

async fn send<IO>(io: IO, req: http::Request<Empty<Bytes>>) -> Result<Bytes, ShieldError>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let fail = |why: String| ShieldError::Fetch(why);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| fail(e.to_string()))?;
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.map_err(|e| fail(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(fail(format!("actor fetch answered {}", resp.status().as_u16())));
    }
    let body = http_body_util::Limited::new(resp.into_body(), 1 << 20)
        .collect()
        .await
        .map_err(|e| fail(format!("actor document: {e}")))?;
    Ok(body.to_bytes())
}

impl KeyFetcher for HttpKeyFetcher {
    fn fetch<'a>(&'a self, key_id: &'a str, actor: &'a str) -> StageFuture<'a, Result<String, ShieldError>> {
        Box::pin(async move {
            let body = tokio::time::timeout(self.timeout, self.get(actor))
                .await
                .map_err(|_| ShieldError::Fetch(format!("no answer within {:?}", self.timeout)))??;
            key_from_document(&body, key_id, actor)
        })
    }
}

/// Finds the key `key_id` in an actor (or key) document and checks who owns it.
pub fn key_from_document(body: &[u8], key_id: &str, actor: &str) -> Result<String, ShieldError> {
    let doc: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| ShieldError::Key("actor document is not JSON".into()))?;
    let candidates: Vec<&serde_json::Value> = match doc.get("publicKey") {
        Some(serde_json::Value::Array(keys)) => keys.iter().collect(),
        Some(key) => vec![key],
        // The keyId may name the key document itself.
        None => vec![&doc],
    };
    for key in candidates {
        let id = key.get("id").and_then(|v| v.as_str());
        if id.is_some_and(|id| id != key_id) {
            continue;
        }
        let owner = key.get("owner").and_then(|v| v.as_str()).or_else(|| doc.get("id").and_then(|v| v.as_str()));
        // The owner must live on the keyId's host: a key document cannot vouch for others.
        let same_host = owner.and_then(|o| o.parse::<Uri>().ok()).and_then(|u| u.host().map(str::to_ascii_lowercase))
            == actor.parse::<Uri>().ok().and_then(|u| u.host().map(str::to_ascii_lowercase));
        if !same_host {
            return Err(ShieldError::Key("the key's owner is on another host".into()));
        }
        if let Some(pem) = key.get("publicKeyPem").and_then(|v| v.as_str()) {
            return Ok(pem.to_owned());
        }
    }
    Err(ShieldError::Key(format!("no publicKeyPem for {key_id}")))
}

/// What verification found out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The signature verifies against the actor's published key.
    Verified { actor: String, domain: String },
    /// No signature, a bad one, or a key that could not be had.
    Unverified,
}

/// Caches keys (and failures) so a flood costs one fetch per keyId.
pub struct Verifier {
    fetcher: Arc<dyn KeyFetcher>,
    keys: moka::future::Cache<String, Option<Arc<PublicKey>>>,
    fetches: tokio::sync::Semaphore,
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
            fetches: tokio::sync::Semaphore::new(16),
            refetched: moka::sync::Cache::builder().max_capacity(capacity).time_to_live(REFETCH_EVERY).build(),
        }
    }

    pub async fn verify(&self, by: &SignedBy, req: &Signed<'_>) -> Verdict {
        let Some(text) = signing_string(by, req) else { return Verdict::Unverified };
        let sig = match &by.format {
            Format::Cavage { signature, .. } | Format::Rfc9421 { signature, .. } => signature,
        };
        let verifies = |key: &Option<Arc<PublicKey>>| key.as_ref().is_some_and(|k| k.verify(text.as_bytes(), sig));
        let verified = || Verdict::Verified { actor: by.actor.clone(), domain: by.domain.clone() };
        let key = self.keys.get_with(by.key_id.clone(), self.fetch_key(by)).await;
        if verifies(&key) {
            return verified();
        }
        // The actor may have rotated its key since we cached it.
        if key.is_some() && !self.refetched.contains_key(&by.key_id) {
            self.refetched.insert(by.key_id.clone(), ());
            self.keys.invalidate(&by.key_id).await;
            if verifies(&self.keys.get_with(by.key_id.clone(), self.fetch_key(by)).await) {
                return verified();
            }
        }
        Verdict::Unverified
    }

    async fn fetch_key(&self, by: &SignedBy) -> Option<Arc<PublicKey>> {
        let Ok(_permit) = self.fetches.acquire().await else { return None };
        match self.fetcher.fetch(&by.key_id, &by.actor).await.and_then(|pem| PublicKey::from_pem(&pem)) {
            Ok(k) => Some(Arc::new(k)),
            Err(e) => {
                tracing::debug!(domain = %by.domain, error = %e, "signing key unavailable");
                None
            }
        }
    }
}

struct KeyExpiry {
    ttl: Duration,
    negative_ttl: Duration,
}

impl moka::Expiry<String, Option<Arc<PublicKey>>> for KeyExpiry {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Option<Arc<PublicKey>>,
        _now: std::time::Instant,
    ) -> Option<Duration> {
        Some(if value.is_some() { self.ttl } else { self.negative_ttl })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::KeyPair;

    #[test]
    fn cavage_header_parses() {
        let mut h = HeaderMap::new();
        h.insert(
            "signature",
            r#"keyId="https://Remote.example/users/bob#main-key",algorithm="rsa-sha256",headers="(request-target) host date digest",signature="AAEC""#
                .parse()
                .unwrap(),
        );
        let by = parse(&h).unwrap();
        assert_eq!(by.actor, "https://Remote.example/users/bob");
        assert_eq!(by.domain, "remote.example");
        let Format::Cavage { headers, signature, .. } = by.format else { panic!() };
        assert_eq!(headers, ["(request-target)", "host", "date", "digest"]);
        assert_eq!(signature, [0, 1, 2]);
    }

    #[test]
    fn rfc9421_parses() {
        let mut h = HeaderMap::new();
        h.insert(
            "signature-input",
            r#"sig1=("@method" "@target-uri" "content-digest");created=1700000000;keyid="https://r.example/users/a#main-key";alg="rsa-v1_5-sha256""#
                .parse()
                .unwrap(),
        );
        h.insert("signature", "sig1=:AAEC:".parse().unwrap());
        let by = parse(&h).unwrap();
        assert_eq!(by.domain, "r.example");
        let Format::Rfc9421 { components, params, signature } = by.format else { panic!() };
        assert_eq!(components, ["@method", "@target-uri", "content-digest"]);
        assert!(params.starts_with("(\"@method\""));
        assert_eq!(signature, [0, 1, 2]);
    }

    #[test]
    fn garbage_never_panics() {
        for s in
            ["", "keyId", "keyId=\"", "keyId=\"x\",signature=\"!!\"", "a=b,c", "keyId=\"ftp://x/y\",signature=\"AA==\""]
        {
            let mut h = HeaderMap::new();
            h.insert("signature", s.parse().unwrap());
            assert!(parse(&h).is_none(), "{s}");
        }
        for s in ["", "(", "x=(", "x=(\"a\");keyid=\"https://a/b\""] {
            let mut h = HeaderMap::new();
            h.insert("signature-input", s.parse().unwrap());
            h.insert("signature", "x=:AA:".parse().unwrap());
            let _ = parse(&h);
        }
        assert!(PublicKey::from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----").is_err());
        assert!(der_take(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff], 0x30).is_none());
    }

    #[test]
    fn ed25519_round_trip() {
        let (pair, pem) = ed25519_actor();
        let key = PublicKey::from_pem(&pem).unwrap();
        let sig = pair.sign(b"hello");
        assert!(key.verify(b"hello", sig.as_ref()));
        assert!(!key.verify(b"hellO", sig.as_ref()));
    }

    #[test]
    fn signing_string_matches_mastodon() {
        let mut h = HeaderMap::new();
        h.insert("host", "local.example".parse().unwrap());
        h.insert("date", "Thu, 26 Nov 2026 13:00:00 GMT".parse().unwrap());
        h.insert(
            "signature",
            r#"keyId="https://r.example/u#k",headers="(request-target) host date",signature="AA==""#.parse().unwrap(),
        );
        let by = parse(&h).unwrap();
        let uri: Uri = "/users/alice/inbox".parse().unwrap();
        let s = signing_string(
            &by,
            &Signed { method: &Method::POST, uri: &uri, headers: &h, host: "local.example", https: true },
        )
        .unwrap();
        assert_eq!(
            s,
            "(request-target): post /users/alice/inbox\nhost: local.example\ndate: Thu, 26 Nov 2026 13:00:00 GMT"
        );
    }

    #[test]
    fn key_document_owner_must_match_host() {
        let doc = br#"{"id":"https://r.example/u","publicKey":{"id":"https://r.example/u#k","owner":"https://r.example/u","publicKeyPem":"PEM"}}"#;
        assert_eq!(key_from_document(doc, "https://r.example/u#k", "https://r.example/u").unwrap(), "PEM");
        let evil = br#"{"id":"https://evil.example/u","publicKey":{"id":"https://r.example/u#k","owner":"https://evil.example/u","publicKeyPem":"PEM"}}"#;
        assert!(key_from_document(evil, "https://r.example/u#k", "https://r.example/u").is_err());
    }

    /// A fresh Ed25519 key pair and its public key as SPKI PEM (fixed 12-byte prefix + key).
    fn ed25519_actor() -> (signature::Ed25519KeyPair, String) {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let mut spki = vec![0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
        spki.extend_from_slice(pair.public_key().as_ref());
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(&spki)
        );
        (pair, pem)
    }

    /// Serves one key PEM (which a test may swap, as an actor rotating its key) and
    /// counts the fetches.
    struct StaticFetcher(std::sync::Mutex<String>, std::sync::atomic::AtomicU64);

    impl StaticFetcher {
        fn new(pem: String) -> StaticFetcher {
            StaticFetcher(std::sync::Mutex::new(pem), Default::default())
        }
        fn fetches(&self) -> u64 {
            self.1.load(std::sync::atomic::Ordering::Relaxed)
        }
    }

    impl KeyFetcher for StaticFetcher {
        fn fetch<'a>(&'a self, _key_id: &'a str, _actor: &'a str) -> StageFuture<'a, Result<String, ShieldError>> {
            self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let pem = self.0.lock().unwrap().clone();
            Box::pin(async move { Ok(pem) })
        }
    }

    #[tokio::test]
    async fn rfc9421_ed25519_verifies_and_tampering_does_not() {
        let (pair, pem) = ed25519_actor();
        let fetcher = Arc::new(StaticFetcher::new(pem));
        let verifier = Verifier::new(fetcher.clone(), 100, Duration::from_secs(60));
        let params = r#"("@method" "@target-uri" "content-digest");created=1700000000;keyid="https://r.example/users/a#ed";alg="ed25519""#;
        let base = format!(
            "\"@method\": POST\n\"@target-uri\": https://local.example/inbox\n\"content-digest\": sha-256=:AAAA:\n\"@signature-params\": {params}"
        );
        let sig = base64::engine::general_purpose::STANDARD.encode(pair.sign(base.as_bytes()).as_ref());
        let mut h = HeaderMap::new();
        h.insert("host", "local.example".parse().unwrap());
        h.insert("content-digest", "sha-256=:AAAA:".parse().unwrap());
        h.insert("signature-input", format!("sig1={params}").parse().unwrap());
        h.insert("signature", format!("sig1=:{sig}:").parse().unwrap());
        let uri: Uri = "/inbox".parse().unwrap();
        let by = parse(&h).unwrap();
        let req = Signed { method: &Method::POST, uri: &uri, headers: &h, host: "local.example", https: true };
        assert_eq!(
            verifier.verify(&by, &req).await,
            Verdict::Verified { actor: "https://r.example/users/a".into(), domain: "r.example".into() }
        );
        assert_eq!(fetcher.fetches(), 1, "fetched once");
        assert_eq!(
            verifier.verify(&by, &req).await,
            Verdict::Verified { actor: "https://r.example/users/a".into(), domain: "r.example".into() }
        );
        assert_eq!(fetcher.fetches(), 1, "then cached");
        // Same key, other digest: the signature no longer covers the request. The key is
        // fetched again once (the actor might have rotated it), then not for a minute.
        h.insert("content-digest", "sha-256=:BBBB:".parse().unwrap());
        let req = Signed { method: &Method::POST, uri: &uri, headers: &h, host: "local.example", https: true };
        for _ in 0..5 {
            assert_eq!(verifier.verify(&by, &req).await, Verdict::Unverified);
        }
        assert_eq!(fetcher.fetches(), 2, "a forger cannot turn bad signatures into fetches");
    }

    #[tokio::test]
    async fn a_rotated_key_is_fetched_again_when_a_signature_fails() {
        let (old_pair, old_pem) = ed25519_actor();
        let (new_pair, new_pem) = ed25519_actor();
        let fetcher = Arc::new(StaticFetcher::new(old_pem));
        let verifier = Verifier::new(fetcher.clone(), 100, Duration::from_secs(3600));
        let uri: Uri = "/inbox".parse().unwrap();
        let signed_by = |pair: &signature::Ed25519KeyPair| {
            let mut h = HeaderMap::new();
            h.insert("host", "local.example".parse().unwrap());
            h.insert("date", "Thu, 26 Nov 2026 13:00:00 GMT".parse().unwrap());
            let text = "(request-target): post /inbox\nhost: local.example\ndate: Thu, 26 Nov 2026 13:00:00 GMT";
            let sig = base64::engine::general_purpose::STANDARD.encode(pair.sign(text.as_bytes()).as_ref());
            let header = format!(
                r#"keyId="https://r.example/users/a#main-key",algorithm="hs2019",headers="(request-target) host date",signature="{sig}""#
            );
            h.insert("signature", header.parse().unwrap());
            h
        };
        let h = signed_by(&old_pair);
        let req = Signed { method: &Method::POST, uri: &uri, headers: &h, host: "local.example", https: true };
        assert!(matches!(verifier.verify(&parse(&h).unwrap(), &req).await, Verdict::Verified { .. }));
        // The actor rotates its key; its next delivery verifies without waiting out the TTL.
        *fetcher.0.lock().unwrap() = new_pem;
        let h = signed_by(&new_pair);
        let req = Signed { method: &Method::POST, uri: &uri, headers: &h, host: "local.example", https: true };
        assert!(matches!(verifier.verify(&parse(&h).unwrap(), &req).await, Verdict::Verified { .. }));
        assert_eq!(fetcher.fetches(), 2);
    }

    #[tokio::test]
    async fn direct_fetches_refuse_private_addresses() {
        let fetcher = HttpKeyFetcher::new(None, false, Duration::from_secs(1)).unwrap();
        for actor in [
            "http://127.0.0.1:9180/admin",
            "http://10.0.0.1/u",
            "http://[::1]/u",
            "http://localhost/u",
            "http://[::ffff:192.168.1.1]/u",
        ] {
            let e = fetcher.fetch(&format!("{actor}#k"), actor).await.unwrap_err().to_string();
            assert!(e.contains("local or private"), "{actor}: {e}");
        }
        assert!(!is_private_host("mastodon.social") && !is_private_host("93.184.216.34"));
    }

    #[tokio::test]
    async fn http_fetcher_goes_through_the_forward_proxy() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_addr = proxy.local_addr().unwrap();
        let seen = tokio::spawn(async move {
            let (mut conn, _) = proxy.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = conn.read(&mut buf).await.unwrap();
                assert!(n > 0);
                head.extend_from_slice(&buf[..n]);
            }
            let doc = r#"{"id":"http://actor.test/users/a","publicKey":{"id":"http://actor.test/users/a#main-key","owner":"http://actor.test/users/a","publicKeyPem":"PEM"}}"#;
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\ncontent-type: application/activity+json\r\n\r\n{doc}",
                doc.len()
            );
            conn.write_all(resp.as_bytes()).await.unwrap();
            String::from_utf8(head).unwrap()
        });
        let fetcher = HttpKeyFetcher::new(Some(proxy_addr), false, Duration::from_secs(5)).unwrap();
        let pem = fetcher.fetch("http://actor.test/users/a#main-key", "http://actor.test/users/a").await.unwrap();
        assert_eq!(pem, "PEM");
        let head = seen.await.unwrap();
        assert!(head.starts_with("GET http://actor.test/users/a HTTP/1.1\r\n"), "{head}");
        assert!(head.to_ascii_lowercase().contains("host: actor.test\r\n"), "{head}");
    }
}
