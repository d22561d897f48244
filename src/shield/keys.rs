//! Fetching a signer's key from its owner, the way Mastodon's `FetchRemoteKeyService`
//! does, through the egress proxy (Tor) so that a delivery cannot make this server reveal
//! its address.
//!
//! A keyId alone proves nothing — anyone can write `keyId="https://big.example/users/x#k"`
//! — and neither does a document that merely *contains* a key: the key belongs to the
//! actor whose own document, served at its own `id`, publishes it. So:
//! 1. fetch the keyId (without its fragment); a document whose `id` is another URL is
//!    fetched again at that `id`, and must be served there under that same `id`
//!    (`fetch_resource(uri, false)`);
//! 2. an actor document (`Person`, `Service`, ...) owns the key it publishes: the owner
//!    is its `id`;
//! 3. a key document (`publicKeyPem` + `owner`) is believed only when the owner's actor
//!    document, fetched at the owner's `id`, names this key as its `publicKey`
//!    (`confirmed_owner?`).
//!
//! Pavise also requires the owner to live on the keyId's host, and follows a redirect only
//! when it stays on the same origin (scheme, host, port): a document served after a
//! redirect to another host would let that host speak for the first one. Redirects and the
//! follow-up documents share one budget of [`MAX_GETS`] requests per fetch, so a keyId
//! costs pavise a handful of requests at most, however its host answers (what a client may
//! make pavise fetch at all is [`super::budget`]'s). Answers must be
//! `200` with an ActivityStreams content type and the ActivityStreams `@context`, as
//! Mastodon requires; documents are capped at 1 MiB.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::{ShieldError, signature::url_host};
use crate::proxy::StageFuture;

/// An actor's published key and the actor that owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActorKey {
    pub pem: String,
    /// The owner's `id`: the identity a verified signature proves.
    pub owner: String,
}

/// Where actor keys come from. The production fetcher goes through the egress proxy.
pub trait KeyFetcher: Send + Sync {
    /// The key named `key_id`, and its confirmed owner.
    fn fetch<'a>(&'a self, key_id: &'a str) -> StageFuture<'a, Result<ActorKey, ShieldError>>;
}

/// The actor types Mastodon accepts (`FetchRemoteActorService::SUPPORTED_TYPES`).
const ACTOR_TYPES: [&str; 5] = ["Application", "Group", "Organization", "Person", "Service"];
const AS_CONTEXT: &str = "https://www.w3.org/ns/activitystreams";
const MAX_DOCUMENT: usize = 1 << 20;
const MAX_REDIRECTS: usize = 3;
/// GETs one key fetch may send in all: the keyId, the document at its `id`, the owner's
/// actor document, and one redirect among them.
pub const MAX_GETS: usize = 4;

/// Fetches actor documents over HTTP(S), through an `http_proxy`-style forward proxy
/// (pavise's egress listener, 127.0.0.1:8118) when one is set.
pub struct HttpKeyFetcher {
    proxy: Option<SocketAddr>,
    /// `Proxy-Authorization` for the egress listener when `egress.proxy_auth` is set.
    proxy_authorization: Option<String>,
    /// Without the egress proxy (whose destination guard refuses private addresses),
    /// keyIds on loopback or private address literals are refused unless this is set:
    /// a forged keyId must not make pavise request its neighbours' admin pages.
    allow_private: bool,
    timeout: Duration,
    tls: tokio_rustls::TlsConnector,
}

impl HttpKeyFetcher {
    /// `proxy_auth` is `"user:password"`, as in `egress.proxy_auth`.
    pub fn new(
        proxy: Option<SocketAddr>,
        proxy_auth: Option<&str>,
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
        Ok(HttpKeyFetcher {
            proxy,
            proxy_authorization: proxy_auth
                .map(|a| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(a))),
            allow_private,
            timeout,
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
        })
    }

    /// GETs `url`, following same-origin redirects; the document and the URL it came from.
    async fn get_document(&self, url: &str, gets: &mut usize) -> Result<Value, ShieldError> {
        let fail = |why: String| ShieldError::Fetch(why);
        let mut current: Uri = url.parse().map_err(|_| fail(format!("{url:?} is not a URL")))?;
        for _ in 0..=MAX_REDIRECTS {
            if *gets == 0 {
                return Err(fail(format!("the key fetch used its {MAX_GETS} requests")));
            }
            *gets -= 1;
            let (status, headers, body) = self.get_once(&current).await?;
            if status.is_redirection() {
                let location = headers
                    .get(header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .ok_or_else(|| fail(format!("a {status} without a Location")))?;
                let next = resolve(&current, location).ok_or_else(|| fail("a redirect to a bad URL".into()))?;
                if origin(&next) != origin(&current) {
                    return Err(fail("the key document redirects to another origin".into()));
                }
                current = next;
                continue;
            }
            if status != StatusCode::OK {
                return Err(fail(format!("actor fetch answered {}", status.as_u16())));
            }
            if !activitypub_content_type(&headers) {
                return Err(ShieldError::Key("the actor document is not served as ActivityStreams".into()));
            }
            let doc: Value =
                serde_json::from_slice(&body).map_err(|_| ShieldError::Key("actor document is not JSON".into()))?;
            if !includes(doc.get("@context"), AS_CONTEXT) {
                return Err(ShieldError::Key("unsupported JSON-LD context".into()));
            }
            return Ok(doc);
        }
        Err(fail("too many redirects".into()))
    }

    /// A document fetched at its own `id` (Mastodon's `fetch_resource(uri, true)`).
    async fn get_at_id(&self, id: &str, gets: &mut usize) -> Result<Value, ShieldError> {
        let doc = self.get_document(id, gets).await?;
        if doc.get("id").and_then(Value::as_str) != Some(id) {
            return Err(ShieldError::Key(format!("the document at {id} has another id")));
        }
        Ok(doc)
    }

    async fn get_once(&self, uri: &Uri) -> Result<(StatusCode, HeaderMap, Bytes), ShieldError> {
        let fail = |why: String| ShieldError::Fetch(why);
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(fail("only http(s) keyIds can be fetched".into())),
        };
        let host = uri.host().ok_or_else(|| fail("no host".into()))?.to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        if self.proxy.is_none() && !self.allow_private && is_private_host(&host) {
            return Err(fail(format!("{host} is a local or private address")));
        }
        let authority = format!("{host}:{port}");
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        let stream = match self.proxy {
            Some(proxy) => tokio::net::TcpStream::connect(proxy).await,
            // Every address the name resolves to is checked, not just the literal.
            None => crate::egress::direct::connect_public(&host, port, self.allow_private).await,
        }
        .map_err(|e| fail(format!("connect: {e}")))?;
        let host_header =
            if (https && port == 443) || (!https && port == 80) { host.clone() } else { authority.clone() };
        let request = |target: String, through_proxy: bool| {
            let mut req = http::Request::get(target)
                .header(header::HOST, &host_header)
                .header(header::ACCEPT, "application/activity+json, application/ld+json")
                .header(header::USER_AGENT, "pavise");
            if through_proxy && let Some(auth) = &self.proxy_authorization {
                req = req.header(header::PROXY_AUTHORIZATION, auth);
            }
            req.body(Empty::<Bytes>::new()).map_err(|e| fail(e.to_string()))
        };
        if !https {
            // Through a forward proxy a plain-http request is sent in absolute form.
            return match self.proxy {
                Some(_) => send(TokioIo::new(stream), request(format!("http://{host_header}{path}"), true)?).await,
                None => send(TokioIo::new(stream), request(path, false)?).await,
            };
        }
        let stream = match self.proxy {
            Some(_) => connect_tunnel(stream, &authority, self.proxy_authorization.as_deref()).await?,
            None => stream,
        };
        let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|_| fail("bad host name".into()))?;
        let tls = self.tls.connect(name, stream).await.map_err(|e| fail(format!("TLS: {e}")))?;
        send(TokioIo::new(tls), request(path, false)?).await
    }

    async fn fetch_key(&self, key_id: &str) -> Result<ActorKey, ShieldError> {
        let bad = |why: &str| ShieldError::Key(why.to_owned());
        let key_host = url_host(key_id).ok_or_else(|| bad("the keyId is not an http(s) URL"))?;
        let url = key_id.split('#').next().unwrap_or(key_id);
        let mut gets = MAX_GETS;
        let mut doc = self.get_document(url, &mut gets).await?;
        let id = doc.get("id").and_then(Value::as_str).ok_or_else(|| bad("the document has no id"))?.to_owned();
        if id != url {
            same_host(&id, &key_host)?;
            doc = self.get_at_id(&id, &mut gets).await?;
        }
        if is_actor(&doc) {
            let (pem, owner) = key_in_actor(&doc, key_id)?;
            return Ok(ActorKey { pem, owner });
        }
        // A key document: its owner must confirm it.
        let pem = doc.get("publicKeyPem").and_then(Value::as_str).ok_or_else(|| bad("no publicKeyPem"))?.to_owned();
        let owner = doc.get("owner").and_then(id_of).ok_or_else(|| bad("a key without an owner"))?.to_owned();
        same_host(&owner, &key_host)?;
        let actor = self.get_at_id(&owner, &mut gets).await?;
        if !is_actor(&actor) {
            return Err(bad("the key's owner is not an actor"));
        }
        let confirmed = match actor.get("publicKey") {
            Some(Value::Array(keys)) => keys.iter().any(|k| id_of(k) == Some(id.as_str())),
            Some(k) => id_of(k) == Some(id.as_str()),
            None => false,
        };
        if !confirmed {
            return Err(bad("the owner does not publish this key"));
        }
        Ok(ActorKey { pem, owner })
    }
}

impl KeyFetcher for HttpKeyFetcher {
    fn fetch<'a>(&'a self, key_id: &'a str) -> StageFuture<'a, Result<ActorKey, ShieldError>> {
        Box::pin(async move {
            tokio::time::timeout(self.timeout, self.fetch_key(key_id))
                .await
                .map_err(|_| ShieldError::Fetch(format!("no answer within {:?}", self.timeout)))?
        })
    }
}

/// The key an actor document publishes under `key_id` (or its only key), owned by the
/// document's `id`.
pub fn key_in_actor(doc: &Value, key_id: &str) -> Result<(String, String), ShieldError> {
    let bad = |why: &str| ShieldError::Key(why.to_owned());
    let owner = doc.get("id").and_then(Value::as_str).ok_or_else(|| bad("the actor has no id"))?;
    let keys: Vec<&Value> = match doc.get("publicKey") {
        Some(Value::Array(keys)) => keys.iter().collect(),
        Some(key) => vec![key],
        None => return Err(bad("the actor publishes no key")),
    };
    // Mastodon keeps one key per actor and verifies with it, whatever the keyId's fragment.
    let key = keys.iter().find(|k| id_of(k) == Some(key_id)).or(keys.first()).ok_or_else(|| bad("no key"))?;
    if let Some(key_owner) = key.get("owner").and_then(id_of)
        && key_owner != owner
    {
        return Err(bad("the key names another owner"));
    }
    let pem = key.get("publicKeyPem").and_then(Value::as_str).ok_or_else(|| bad("no publicKeyPem"))?;
    Ok((pem.to_owned(), owner.to_owned()))
}

fn is_actor(doc: &Value) -> bool {
    ACTOR_TYPES.iter().any(|t| includes(doc.get("type"), t))
}

/// `equals_or_includes?`: a string equal to `needle`, or an array containing it.
fn includes(v: Option<&Value>, needle: &str) -> bool {
    match v {
        Some(Value::String(s)) => s == needle,
        Some(Value::Array(items)) => items.iter().any(|i| i.as_str() == Some(needle)),
        _ => false,
    }
}

/// An ActivityStreams reference: a URL, or an object carrying it as `id`.
fn id_of(v: &Value) -> Option<&str> {
    v.as_str().or_else(|| v.get("id")?.as_str())
}

fn same_host(url: &str, host: &str) -> Result<(), ShieldError> {
    if url_host(url).as_deref() == Some(host) {
        Ok(())
    } else {
        Err(ShieldError::Key("the key's owner is on another host than the keyId".into()))
    }
}

/// `application/activity+json`, or `application/ld+json` with the ActivityStreams profile.
fn activitypub_content_type(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    let mut parts = ct.split(';').map(str::trim);
    match parts.next().map(str::to_ascii_lowercase).as_deref() {
        Some("application/activity+json") => true,
        Some("application/ld+json") => parts.any(|p| {
            p.strip_prefix("profile=\"")
                .and_then(|p| p.strip_suffix('"'))
                .is_some_and(|p| p.split_whitespace().any(|x| x == AS_CONTEXT))
        }),
        _ => false,
    }
}

fn origin(uri: &Uri) -> (Option<String>, Option<String>, Option<u16>) {
    let https = uri.scheme_str() == Some("https");
    (
        uri.scheme_str().map(str::to_owned),
        uri.host().map(str::to_ascii_lowercase),
        uri.port_u16().or(Some(if https { 443 } else { 80 })),
    )
}

/// A `Location` (absolute, or a path on the same origin) against the URL that sent it.
fn resolve(base: &Uri, location: &str) -> Option<Uri> {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.parse().ok();
    }
    if !location.starts_with('/') || location.starts_with("//") {
        return None;
    }
    Uri::builder()
        .scheme(base.scheme()?.clone())
        .authority(base.authority()?.clone())
        .path_and_query(location)
        .build()
        .ok()
}

/// Loopback, private, link-local and unspecified address literals, and `localhost`.
pub(super) fn is_private_host(host: &str) -> bool {
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
async fn connect_tunnel(
    stream: tokio::net::TcpStream,
    authority: &str,
    proxy_authorization: Option<&str>,
) -> Result<tokio::net::TcpStream, ShieldError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = stream;
    let fail = |why: String| ShieldError::Fetch(why);
    let auth = proxy_authorization.map(|a| format!("Proxy-Authorization: {a}\r\n")).unwrap_or_default();
    stream
        .write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{auth}\r\n").as_bytes())
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

async fn send<IO>(io: IO, req: http::Request<Empty<Bytes>>) -> Result<(StatusCode, HeaderMap, Bytes), ShieldError>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let fail = |why: String| ShieldError::Fetch(why);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| fail(e.to_string()))?;
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.map_err(|e| fail(e.to_string()))?;
    let (parts, body) = resp.into_parts();
    if parts.status != StatusCode::OK {
        return Ok((parts.status, parts.headers, Bytes::new()));
    }
    let body = http_body_util::Limited::new(body, MAX_DOCUMENT)
        .collect()
        .await
        .map_err(|e| fail(format!("actor document: {e}")))?;
    Ok((parts.status, parts.headers, body.to_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_actor_owns_the_key_it_publishes() {
        let doc = serde_json::json!({"id":"https://r.example/u","type":"Person","publicKey":{"id":"https://r.example/u#k","owner":"https://r.example/u","publicKeyPem":"PEM"}});
        assert_eq!(key_in_actor(&doc, "https://r.example/u#k").unwrap(), ("PEM".into(), "https://r.example/u".into()));
        let evil = serde_json::json!({"id":"https://r.example/u","type":"Person","publicKey":{"id":"https://r.example/u#k","owner":"https://evil.example/u","publicKeyPem":"PEM"}});
        assert!(key_in_actor(&evil, "https://r.example/u#k").is_err());
        assert!(key_in_actor(&serde_json::json!({"id":"https://r.example/u"}), "x").is_err());
    }

    #[test]
    fn content_types_as_mastodon_accepts_them() {
        let h = |v: &'static str| {
            let mut m = HeaderMap::new();
            m.insert(header::CONTENT_TYPE, http::HeaderValue::from_static(v));
            m
        };
        assert!(activitypub_content_type(&h("application/activity+json; charset=utf-8")));
        assert!(activitypub_content_type(&h("application/ld+json; profile=\"https://www.w3.org/ns/activitystreams\"")));
        assert!(!activitypub_content_type(&h("application/ld+json")));
        assert!(!activitypub_content_type(&h("application/json")));
        assert!(!activitypub_content_type(&HeaderMap::new()));
    }

    #[test]
    fn redirects_stay_on_their_origin() {
        let base: Uri = "https://r.example/users/a".parse().unwrap();
        assert_eq!(origin(&resolve(&base, "/users/b").unwrap()), origin(&base));
        assert_eq!(origin(&resolve(&base, "https://R.example:443/x").unwrap()), origin(&base));
        assert_ne!(origin(&resolve(&base, "https://evil.example/users/a").unwrap()), origin(&base));
        assert_ne!(origin(&resolve(&base, "http://r.example/users/a").unwrap()), origin(&base));
        assert!(resolve(&base, "//evil.example/x").is_none());
    }

    #[tokio::test]
    async fn direct_fetches_refuse_private_addresses() {
        let fetcher = HttpKeyFetcher::new(None, None, false, Duration::from_secs(1)).unwrap();
        for actor in [
            "http://127.0.0.1:9180/admin",
            "http://10.0.0.1/u",
            "http://[::1]/u",
            "http://localhost/u",
            "http://[::ffff:192.168.1.1]/u",
        ] {
            let e = fetcher.fetch(&format!("{actor}#k")).await.unwrap_err().to_string();
            assert!(e.contains("local or private"), "{actor}: {e}");
        }
        assert!(!is_private_host("mastodon.social") && !is_private_host("93.184.216.34"));
    }

    /// A one-connection forward proxy that answers `answer` and hands back the request head.
    async fn one_shot_proxy(answer: String) -> (SocketAddr, tokio::task::JoinHandle<String>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = proxy.local_addr().unwrap();
        let seen = tokio::spawn(async move {
            let (mut conn, _) = proxy.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = conn.read(&mut buf).await.unwrap();
                assert!(n > 0);
                head.extend_from_slice(&buf[..n]);
            }
            conn.write_all(answer.as_bytes()).await.unwrap();
            String::from_utf8(head).unwrap()
        });
        (addr, seen)
    }

    #[tokio::test]
    async fn http_fetcher_goes_through_the_forward_proxy_with_its_credentials() {
        let doc = r#"{"@context":"https://www.w3.org/ns/activitystreams","id":"http://actor.test/users/a","type":"Person","publicKey":{"id":"http://actor.test/users/a#main-key","owner":"http://actor.test/users/a","publicKeyPem":"PEM"}}"#;
        let (addr, seen) = one_shot_proxy(format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\ncontent-type: application/activity+json\r\n\r\n{doc}",
            doc.len()
        ))
        .await;
        let fetcher = HttpKeyFetcher::new(Some(addr), Some("pavise:s3cret"), false, Duration::from_secs(5)).unwrap();
        let key = fetcher.fetch("http://actor.test/users/a#main-key").await.unwrap();
        assert_eq!(key, ActorKey { pem: "PEM".into(), owner: "http://actor.test/users/a".into() });
        let head = seen.await.unwrap();
        assert!(head.starts_with("GET http://actor.test/users/a HTTP/1.1\r\n"), "{head}");
        let lower = head.to_ascii_lowercase();
        assert!(lower.contains("host: actor.test\r\n"), "{head}");
        // base64("pavise:s3cret")
        assert!(lower.contains("proxy-authorization: basic cgf2axnlonmzy3jlda=="), "{head}");
    }

    #[tokio::test]
    async fn connect_carries_the_proxy_credentials() {
        let (addr, seen) = one_shot_proxy("HTTP/1.1 407 Proxy Authentication Required\r\n\r\n".into()).await;
        let fetcher = HttpKeyFetcher::new(Some(addr), Some("pavise:s3cret"), false, Duration::from_secs(5)).unwrap();
        let e = fetcher.fetch("https://actor.test/users/a#main-key").await.unwrap_err().to_string();
        assert!(e.contains("407"), "{e}");
        let head = seen.await.unwrap();
        assert!(head.starts_with("CONNECT actor.test:443 HTTP/1.1\r\n"), "{head}");
        assert!(head.contains("Proxy-Authorization: Basic cGF2aXNlOnMzY3JldA==\r\n"), "{head}");
    }
}
