//! The shield, end to end on loopback: real signed deliveries (RSA-SHA256, draft-cavage,
//! as Mastodon signs them) through pavise to a recording instance, with the senders'
//! actor documents served by local actor servers that pavise's key fetcher reaches.
//! Each "remote domain" is its own loopback address (127.0.0.2, .3, ...).

use std::{
    collections::HashSet,
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    path::Path,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use pavise::{shield::KeyFetchMode, units::Span};
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};

use crate::support::{Pavise, RecordingUpstream, TestBody, files_under, send_from, text};

pub const LOCAL: &str = "local.example";
pub const MASTODON_UA: &str = "http.rb/5.2.0 (Mastodon/4.3.0; +https://remote.example/)";
const GTS_UA: &str = "gotosocial/0.17.3 (+https://gts.example/)";

/// An RSA key pair made once per test run with `openssl genpkey` (ring cannot generate
/// RSA keys), plus its SPKI PEM as actors publish it.
pub struct TestKey {
    pair: RsaKeyPair,
    pem: String,
}

pub fn rsa_key(slot: usize) -> &'static TestKey {
    static KEYS: OnceLock<Vec<TestKey>> = OnceLock::new();
    let keys = KEYS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        (0..2)
            .map(|i| {
                let (raw, der, pem) = (
                    dir.path().join(format!("raw{i}.pem")),
                    dir.path().join(format!("key{i}.der")),
                    dir.path().join(format!("pub{i}.pem")),
                );
                let openssl = |args: &[&std::ffi::OsStr]| {
                    let out = std::process::Command::new("openssl")
                        .args(args)
                        .output()
                        .expect("openssl is installed (scripts/deps)");
                    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
                };
                let os = |s: &'static str| std::ffi::OsStr::new(s);
                openssl(&[
                    os("genpkey"),
                    os("-algorithm"),
                    os("RSA"),
                    os("-pkeyopt"),
                    os("rsa_keygen_bits:2048"),
                    os("-out"),
                    raw.as_os_str(),
                ]);
                // ring reads PKCS#8 v1 DER.
                openssl(&[
                    os("pkcs8"),
                    os("-topk8"),
                    os("-nocrypt"),
                    os("-in"),
                    raw.as_os_str(),
                    os("-outform"),
                    os("DER"),
                    os("-out"),
                    der.as_os_str(),
                ]);
                openssl(&[os("pkey"), os("-in"), raw.as_os_str(), os("-pubout"), os("-out"), pem.as_os_str()]);
                TestKey {
                    pair: RsaKeyPair::from_pkcs8(&std::fs::read(&der).unwrap()).unwrap(),
                    pem: std::fs::read_to_string(&pem).unwrap(),
                }
            })
            .collect()
    });
    &keys[slot]
}

fn activity_json(status: u16, doc: &serde_json::Value) -> http::Response<TestBody> {
    let mut r = text(status, &doc.to_string());
    r.headers_mut().insert("content-type", "application/activity+json; charset=utf-8".parse().unwrap());
    r
}

/// A remote server on its own loopback address. By default it serves `GET /users/NAME` as
/// an actor document with `key`'s public half (404 for names starting with `ghost`).
pub struct ActorServer {
    addr: SocketAddr,
    fetches: Arc<AtomicU64>,
    stop: tokio_util::sync::CancellationToken,
}

type Serve = Arc<dyn Fn(SocketAddr, &str) -> http::Response<TestBody> + Send + Sync>;

impl ActorServer {
    pub async fn start(ip: &str, key: &'static TestKey) -> ActorServer {
        Self::serving(
            ip,
            Arc::new(move |addr, path| {
                if path.starts_with("/users/ghost") {
                    return text(404, "");
                }
                let actor = format!("http://{addr}{path}");
                activity_json(200, &actor_doc(&actor, &actor, key))
            }),
        )
        .await
    }

    async fn serving(ip: &str, serve: Serve) -> ActorServer {
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fetches = Arc::new(AtomicU64::new(0));
        let stop = tokio_util::sync::CancellationToken::new();
        let (count, token) = (fetches.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    _ = token.cancelled() => return,
                    a = listener.accept() => a.unwrap(),
                };
                let (count, serve) = (count.clone(), serve.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: http::Request<Incoming>| {
                        count.fetch_add(1, Ordering::Relaxed);
                        let resp = serve(addr, req.uri().path());
                        async move { Ok::<_, Infallible>(resp) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        ActorServer { addr, fetches, stop }
    }

    pub fn actor(&self, name: &str) -> String {
        format!("http://{}/users/{name}", self.addr)
    }

    fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }
}

impl Drop for ActorServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// An actor document with id `id`, publishing `key` under `{id}#main-key`.
fn actor_doc(id: &str, owner: &str, key: &TestKey) -> serde_json::Value {
    serde_json::json!({
        "@context": ["https://www.w3.org/ns/activitystreams", "https://w3id.org/security/v1"],
        "id": id, "type": "Person", "inbox": format!("{id}/inbox"),
        "publicKey": { "id": format!("{id}#main-key"), "owner": owner, "publicKeyPem": key.pem },
    })
}

/// A Create/Note from `actor` mentioning `mentions` (URLs) in `cc` and tags.
fn note_to(actor: &str, mentions: &[String], marker: &str) -> Vec<u8> {
    serde_json::json!({
        "@context": "https://www.w3.org/ns/activitystreams",
        "id": format!("{actor}/statuses/{marker}/activity"), "type": "Create", "actor": actor,
        "to": ["https://www.w3.org/ns/activitystreams#Public"], "cc": mentions,
        "object": {
            "id": format!("{actor}/statuses/{marker}"), "type": "Note", "attributedTo": actor,
            "content": format!("<p>{marker}</p>"),
            "to": ["https://www.w3.org/ns/activitystreams#Public"], "cc": mentions,
            "tag": mentions.iter().map(|m| serde_json::json!({"type": "Mention", "href": m})).collect::<Vec<_>>(),
        },
    })
    .to_string()
    .into_bytes()
}

/// A Create/Note from `actor` mentioning the local `accounts`, with a unique marker.
pub fn note(actor: &str, accounts: &[&str], marker: &str) -> Vec<u8> {
    let mentions: Vec<String> = accounts.iter().map(|a| format!("https://{LOCAL}/users/{a}")).collect();
    note_to(actor, &mentions, marker)
}

/// A delivery signed the way Mastodon signs: `(request-target) host date digest content-type`,
/// dated `date`, with the digest of `digest_of` (the body itself, unless forging).
fn signed_as(
    key: &TestKey,
    key_id: &str,
    path: &str,
    body: &[u8],
    user_agent: &str,
    date: SystemTime,
    digest_of: &[u8],
) -> http::Request<Full<Bytes>> {
    let date = httpdate::fmt_http_date(date);
    let digest = format!(
        "SHA-256={}",
        base64::engine::general_purpose::STANDARD.encode(ring::digest::digest(&ring::digest::SHA256, digest_of))
    );
    let content_type = "application/activity+json";
    let signing = format!(
        "(request-target): post {path}\nhost: {LOCAL}\ndate: {date}\ndigest: {digest}\ncontent-type: {content_type}"
    );
    let mut sig = vec![0u8; key.pair.public().modulus_len()];
    key.pair.sign(&RSA_PKCS1_SHA256, &ring::rand::SystemRandom::new(), signing.as_bytes(), &mut sig).unwrap();
    let header = format!(
        "keyId=\"{key_id}\",algorithm=\"rsa-sha256\",headers=\"(request-target) host date digest content-type\",signature=\"{}\"",
        base64::engine::general_purpose::STANDARD.encode(&sig)
    );
    http::Request::post(path)
        .header("host", LOCAL)
        .header("date", date)
        .header("digest", digest)
        .header("content-type", content_type)
        .header("user-agent", user_agent)
        .header("signature", header)
        .body(Full::new(Bytes::copy_from_slice(body)))
        .unwrap()
}

fn signed(key: &TestKey, key_id: &str, path: &str, body: &[u8], user_agent: &str) -> http::Request<Full<Bytes>> {
    signed_as(key, key_id, path, body, user_agent, SystemTime::now(), body)
}

/// Delivers `body` to `/inbox`, signed with `key` as `actor`'s main key, from the
/// loopback address `from` (each test "domain" has its own).
pub async fn deliver(
    pavise: &Pavise,
    from: &str,
    key: &TestKey,
    actor: &str,
    body: &[u8],
    user_agent: &str,
) -> (http::response::Parts, Bytes) {
    send_from(ip(from), pavise.addr, signed(key, &format!("{actor}#main-key"), "/inbox", body, user_agent)).await
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub fn policies(dir: &Path, text: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("shield.toml"), text).unwrap();
}

async fn start(upstream: &RecordingUpstream, policy_dir: &Path) -> Pavise {
    start_with(upstream, policy_dir, |_| {}).await
}

pub async fn start_with(
    upstream: &RecordingUpstream,
    policy_dir: &Path,
    tweak: impl FnOnce(&mut pavise::config::FileConfig),
) -> Pavise {
    let dir = policy_dir.to_owned();
    Pavise::start(&upstream.url(), move |f| {
        f.policies = dir;
        f.local_domain = Some(LOCAL.to_owned());
        // The test's "remote servers" are loopback addresses, reached without the egress
        // proxy (tests/support runs egress in direct mode, which is what allows this).
        f.shield.key_fetch = KeyFetchMode::Direct;
        f.shield.key_fetch_allow_private = true;
        f.shield.housekeeping = Span(Duration::from_millis(200));
        tweak(f);
    })
    .await
}

pub async fn admin_get(p: &Pavise, path: &str) -> serde_json::Value {
    let client = reqwest::Client::new();
    let resp = client.get(p.admin_url(path)).bearer_auth(&p.token).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap()
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_deliveries_raise_no_shield_and_a_real_stranger_then_passes() {
    let (real, other) = (rsa_key(0), rsa_key(1));
    let upstream = RecordingUpstream::with_handler(|_| text(202, "")).await;
    let policy_dir = tempfile::tempdir().unwrap();
    policies(
        policy_dir.path(),
        "[wave]\ndistinct_senders = 3\nfamiliar_after = \"1h\"\nshield_for = \"10m\"\nhellthread = 0\n",
    );
    let pavise = start(&upstream, policy_dir.path()).await;
    let remote = ActorServer::start("127.0.0.20", real).await;

    // Thirty forgeries from thirty "actors", six of each kind, all mentioning bob.
    let mut sent = 0;
    for i in 0..6 {
        let actor = remote.actor(&format!("forger{i}"));
        let key_id = format!("{actor}#main-key");
        let body = |kind: &str| note(&actor, &["bob"], &format!("{kind}{i}"));
        let now = SystemTime::now();
        let forgeries = [
            // A key nobody publishes.
            signed(
                real,
                &format!("{}#main-key", remote.actor(&format!("ghost{i}"))),
                "/inbox",
                &body("unknown"),
                MASTODON_UA,
            ),
            // The right keyId, someone else's key.
            signed(other, &key_id, "/inbox", &body("wrong"), MASTODON_UA),
            // No signature at all.
            http::Request::post("/inbox")
                .header("host", LOCAL)
                .header("content-type", "application/activity+json")
                .body(Full::new(Bytes::from(body("unsigned"))))
                .unwrap(),
            // A real signature, two hours old (as captured and replayed later).
            signed_as(
                real,
                &key_id,
                "/inbox",
                &body("stale"),
                MASTODON_UA,
                now - Duration::from_secs(7200),
                &body("stale"),
            ),
            // A real, fresh signature over another body.
            signed_as(real, &key_id, "/inbox", &body("swapped"), MASTODON_UA, now, b"{\"type\":\"Like\"}"),
        ];
        for req in forgeries {
            let (resp, _) = send_from(ip("127.0.0.21"), pavise.addr, req).await;
            assert_eq!(resp.status, 202, "forgeries pass to the instance (which refuses them): no shield went up");
            sent += 1;
        }
    }
    assert_eq!(sent, 30);
    let report = admin_get(&pavise, "/admin/shield").await;
    assert!(report["shields"].as_array().unwrap().is_empty(), "{report}");
    let reasons = &report["totals"]["unverified_by_reason"];
    assert_eq!(
        (
            &reasons["key_unavailable"],
            &reasons["bad_signature"],
            &reasons["unsigned"],
            &reasons["stale"],
            &reasons["digest"]
        ),
        (&6.into(), &6.into(), &6.into(), &6.into(), &6.into()),
        "{report}"
    );
    assert_eq!(report["totals"]["signatures_verified"], 0, "{report}");
    // Only the unknown and wrong-key forgeries cost key fetches: one per keyId, plus one
    // re-fetch per real key that failed (it might have rotated). The stale, unsigned and
    // swapped ones fail before any key is fetched.
    assert_eq!(remote.fetches(), 18);

    // A real stranger's mention passes at once.
    let stranger = remote.actor("stranger");
    let body = note(&stranger, &["bob"], "hello-bob");
    let (resp, _) = deliver(&pavise, "127.0.0.22", real, &stranger, &body, MASTODON_UA).await;
    assert_eq!(resp.status, 202);
    assert!(upstream.recorded().iter().any(|r| r.body == body));
    let report = admin_get(&pavise, "/admin/shield").await;
    assert_eq!(report["totals"]["signatures_verified"], 1, "{report}");
    assert!(report["shields"].as_array().unwrap().is_empty(), "{report}");
    pavise.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_foreign_actors_and_redirected_keys_count_as_nobody() {
    let (real, attacker) = (rsa_key(0), rsa_key(1));
    let upstream = RecordingUpstream::with_handler(|_| text(202, "")).await;
    let policy_dir = tempfile::tempdir().unwrap();
    policies(
        policy_dir.path(),
        "[wave]\ndistinct_senders = 3\nfamiliar_after = \"1h\"\nshield_for = \"10m\"\nhellthread = 0\n",
    );
    let pavise = start(&upstream, policy_dir.path()).await;
    let remote = ActorServer::start("127.0.0.30", real).await;
    let evil = ActorServer::start("127.0.0.31", attacker).await;
    // A "good" server whose actor URLs redirect to the attacker's, where a document claims
    // the good server's id and publishes the attacker's key.
    let impostor = {
        let good = Arc::new(OnceLock::<SocketAddr>::new());
        let good_for_evil = good.clone();
        let evil_host = ActorServer::serving(
            "127.0.0.33",
            Arc::new(move |_, path| {
                let claimed = format!("http://{}{path}", good_for_evil.get().unwrap());
                activity_json(200, &actor_doc(&claimed, &claimed, attacker))
            }),
        )
        .await;
        let to = evil_host.addr;
        let good_host = ActorServer::serving(
            "127.0.0.32",
            Arc::new(move |_, path| {
                let mut r = text(302, "");
                r.headers_mut().insert("location", format!("http://{to}{path}").parse().unwrap());
                r
            }),
        )
        .await;
        good.set(good_host.addr).unwrap();
        (good_host, evil_host)
    };

    // One real actor's delivery, sent ten times: one actor.
    let real_actor = remote.actor("real");
    let once =
        signed(real, &format!("{real_actor}#main-key"), "/inbox", &note(&real_actor, &["alice"], "once"), MASTODON_UA);
    let (parts, body) = once.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    for _ in 0..10 {
        let req = http::Request::from_parts(parts.clone(), Full::new(body.clone()));
        assert_eq!(send_from(ip("127.0.0.34"), pavise.addr, req).await.0.status, 202);
    }
    // The attacker's valid signature on activities naming other actors as theirs.
    for i in 0..5 {
        let victim = remote.actor(&format!("someone{i}"));
        let attacker_actor = evil.actor("mallory");
        let req = signed(
            attacker,
            &format!("{attacker_actor}#main-key"),
            "/inbox",
            &note(&victim, &["alice"], &format!("foreign{i}")),
            MASTODON_UA,
        );
        assert_eq!(send_from(ip("127.0.0.31"), pavise.addr, req).await.0.status, 202);
    }
    // Keys fetched over a redirect to another host.
    for i in 0..5 {
        let claimed = format!("http://{}/users/victim{i}", impostor.0.addr);
        let req = signed(
            attacker,
            &format!("{claimed}#main-key"),
            "/inbox",
            &note(&claimed, &["alice"], &format!("redirected{i}")),
            MASTODON_UA,
        );
        assert_eq!(send_from(ip("127.0.0.33"), pavise.addr, req).await.0.status, 202);
    }
    let report = admin_get(&pavise, "/admin/shield").await;
    let reasons = &report["totals"]["unverified_by_reason"];
    assert_eq!(
        (&reasons["replayed"], &reasons["foreign_actor"], &reasons["key_unavailable"]),
        (&9.into(), &5.into(), &5.into()),
        "{report}"
    );
    assert!(report["shields"].as_array().unwrap().is_empty(), "{report}");
    assert_eq!(impostor.1.fetches(), 0, "the redirect to another host was not followed");

    // So far one actor counts. Three more real actors: the third raises the shield (four
    // distinct actors > three), proving the twenty tricks above counted for nothing.
    for i in 0..3 {
        let actor = remote.actor(&format!("fresh{i}"));
        let (resp, _) =
            deliver(&pavise, "127.0.0.35", real, &actor, &note(&actor, &["alice"], &format!("fresh{i}")), MASTODON_UA)
                .await;
        assert_eq!(resp.status, if i < 2 { 202 } else { 429 }, "fresh{i}");
    }
    let report = admin_get(&pavise, "/admin/shield").await;
    let shield = &report["shields"][0];
    assert_eq!(shield["account"], "alice", "{report}");
    assert_eq!((&shield["why"]["raised_by_actors"], &shield["why"]["domains"]), (&4.into(), &1.into()), "{report}");
    pavise.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spelling_of_a_mention_is_held_back_during_a_real_wave() {
    let key = rsa_key(0);
    // The instance knows alice as account 4242 (Mastodon ≥ 4.4 numeric ids).
    let upstream = RecordingUpstream::with_handler(|r| match r.uri.path() {
        "/api/v1/accounts/4242" => text(200, r#"{"id":"4242","username":"alice","acct":"alice"}"#),
        "/api/v1/accounts/9999" => text(404, r#"{"error":"Record not found"}"#),
        _ => text(202, ""),
    })
    .await;
    let policy_dir = tempfile::tempdir().unwrap();
    policies(
        policy_dir.path(),
        "[wave]\ndistinct_senders = 3\nfamiliar_after = \"1h\"\nshield_for = \"10m\"\nhellthread = 0\n",
    );
    let pavise = start(&upstream, policy_dir.path()).await;
    let trolls = ActorServer::start("127.0.0.40", key).await;
    let more = ActorServer::start("127.0.0.41", key).await;

    // The wave: four fresh, verified actors mention alice the plain way.
    for i in 0..4 {
        let actor = trolls.actor(&format!("troll{i}"));
        let (resp, _) =
            deliver(&pavise, "127.0.0.40", key, &actor, &note(&actor, &["alice"], &format!("t{i}")), MASTODON_UA).await;
        assert_eq!(resp.status, if i < 3 { 202 } else { 429 }, "troll{i}");
    }

    let mention = |tag: serde_json::Value| {
        move |actor: &str, marker: &str| {
            serde_json::json!({
                "@context": "https://www.w3.org/ns/activitystreams", "type": "Create", "actor": actor,
                "id": format!("{actor}/{marker}"),
                "object": {"type": "Note", "id": format!("{actor}/{marker}/note"), "content": marker,
                    "to": ["https://www.w3.org/ns/activitystreams#Public"], "tag": tag.clone()},
            })
            .to_string()
            .into_bytes()
        }
    };
    let href = |h: &str| serde_json::json!([{"type": "Mention", "href": h}]);
    let audience = |field: &'static str, v: serde_json::Value| {
        move |actor: &str, marker: &str| {
            let mut doc = serde_json::json!({
                "@context": "https://www.w3.org/ns/activitystreams", "type": "Create", "actor": actor,
                "id": format!("{actor}/{marker}"),
                "object": {"type": "Note", "id": format!("{actor}/{marker}/note"), "content": marker},
            });
            doc["object"][field] = v.clone();
            doc.to_string().into_bytes()
        }
    };
    type Body = Box<dyn Fn(&str, &str) -> Vec<u8>>;
    let spellings: Vec<(&str, &str, Body)> = vec![
        (
            "tag as one object",
            "/inbox",
            Box::new(mention(serde_json::json!({"type": "Mention", "href": format!("https://{LOCAL}/users/alice")})))
                as Body,
        ),
        (
            "type as an array",
            "/inbox",
            Box::new(mention(
                serde_json::json!([{"type": ["Mention"], "href": format!("https://{LOCAL}/users/alice")}]),
            )) as Body,
        ),
        ("percent-encoded path", "/inbox", Box::new(mention(href(&format!("https://{LOCAL}/users/%61lice")))) as Body),
        ("host with a trailing dot", "/inbox", Box::new(mention(href("https://local.example./users/alice"))) as Body),
        ("host in capitals", "/inbox", Box::new(mention(href("https://LOCAL.EXAMPLE/users/Alice"))) as Body),
        ("default port", "/inbox", Box::new(mention(href("https://local.example:443/users/alice"))) as Body),
        (
            "format suffix and slashes",
            "/inbox",
            Box::new(mention(href("https://local.example//users/alice.json"))) as Body,
        ),
        ("the /@ profile URL", "/inbox", Box::new(mention(href("https://local.example/@alice"))) as Body),
        ("a profile view", "/inbox", Box::new(mention(href("https://local.example/@alice/with_replies"))) as Body),
        ("acct: URI", "/inbox", Box::new(mention(href("acct:alice@local.example"))) as Body),
        ("@user@host", "/inbox", Box::new(mention(href("@alice@local.example"))) as Body),
        ("numeric id", "/inbox", Box::new(mention(href("https://local.example/ap/users/4242"))) as Body),
        (
            "silent mention in to",
            "/inbox",
            Box::new(audience("to", serde_json::json!(["https://local.example/users/alice"]))) as Body,
        ),
        (
            "silent mention as an object in cc",
            "/inbox",
            Box::new(audience("cc", serde_json::json!({"id": "https://local.example/users/alice"}))) as Body,
        ),
        (
            "her own inbox, addressed to nobody",
            "/users/alice/inbox",
            Box::new(audience("to", serde_json::json!([]))) as Body,
        ),
        (
            "her inbox spelled Rails' way",
            "//users/Alice/inbox/",
            Box::new(audience("to", serde_json::json!([]))) as Body,
        ),
        (
            "the shared inbox with a format",
            "/inbox.json",
            Box::new(mention(href("https://local.example/users/alice"))) as Body,
        ),
        (
            "an object the instance will fetch",
            "/inbox",
            Box::new(|actor: &str, marker: &str| {
                serde_json::json!({"@context": "https://www.w3.org/ns/activitystreams", "type": "Create", "actor": actor,
                "id": format!("{actor}/{marker}"), "object": format!("{actor}/{marker}/note")}).to_string().into_bytes()
            }) as Body,
        ),
    ];
    for (i, (what, path, body)) in spellings.iter().enumerate() {
        let actor = more.actor(&format!("spelling{i}"));
        let body = body(&actor, &format!("spelling{i}"));
        let req = signed(key, &format!("{actor}#main-key"), path, &body, MASTODON_UA);
        let (resp, _) = send_from(ip("127.0.0.41"), pavise.addr, req).await;
        assert_eq!(resp.status, 429, "{what}: passed the shield");
        assert!(!upstream.recorded().iter().any(|r| r.body == body), "{what}: reached the instance");
    }
    // Not a mention of alice: another member, and an id the instance does not know.
    for (what, body) in [
        ("bob", mention(href("https://local.example/users/bob"))),
        ("unknown id", mention(href("https://local.example/ap/users/9999"))),
    ] {
        let actor = more.actor(&format!("other-{}", what.replace(' ', "-")));
        let body = body(&actor, what);
        let (resp, _) = deliver(&pavise, "127.0.0.41", key, &actor, &body, MASTODON_UA).await;
        assert_eq!(resp.status, 202, "{what}");
    }
    let report = admin_get(&pavise, "/admin/shield").await;
    let shields = report["shields"].as_array().unwrap();
    assert_eq!(shields.len(), 1, "{report}");
    let why = &shields[0]["why"];
    // Four trolls and every new actor after them (each spelling came from one), except the
    // sender of the fetched object: whom it mentions is unknown, so it is held back but
    // not counted.
    assert_eq!(why["actors"], 4 + spellings.len() as u64 - 1, "{report}");
    assert_eq!(why["domains"], 2, "{report}");
    pavise.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_accept_teaches_nothing_and_a_follow_the_instance_confirms_passes() {
    const THRESHOLD: usize = 3;
    let key = rsa_key(0);
    let trolls = ActorServer::start("127.0.0.50", key).await;
    let friends = ActorServer::start("127.0.0.51", key).await;
    // Both friends are as new as the trolls; alice follows them.
    let listed = friends.actor("listed");
    let accepted = friends.actor("accepted");
    // The instance: alice's public following collection, two pages (as Mastodon serves
    // it). `accepted` appears in it once the instance has processed its Accept.
    let processed = Arc::new(AtomicBool::new(false));
    let (listed_c, accepted_c, processed_c) = (listed.clone(), accepted.clone(), processed.clone());
    let upstream = RecordingUpstream::with_handler(move |r| {
        if r.method == http::Method::POST && r.body.windows(b"\"Accept\"".len()).any(|w| w == b"\"Accept\"") {
            let doc: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            if doc["actor"] == accepted_c.as_str() {
                processed_c.store(true, Ordering::SeqCst);
            }
        }
        match r.uri.path_and_query().map(|p| p.as_str()) {
            Some("/users/alice/following") => text(
                200,
                &serde_json::json!({
                    "type": "OrderedCollection", "totalItems": 2,
                    "first": format!("https://{LOCAL}/users/alice/following?page=1"),
                })
                .to_string(),
            ),
            Some("/users/alice/following?page=1") => text(
                200,
                &serde_json::json!({
                    "type": "OrderedCollectionPage", "orderedItems": ["https://elsewhere.example/users/carol"],
                    "next": format!("https://{LOCAL}/users/alice/following?page=2"),
                })
                .to_string(),
            ),
            Some("/users/alice/following?page=2") => {
                let mut items = vec![listed_c.clone()];
                if processed_c.load(Ordering::SeqCst) {
                    items.push(accepted_c.clone());
                }
                text(200, &serde_json::json!({ "type": "OrderedCollectionPage", "orderedItems": items }).to_string())
            }
            _ => text(202, ""),
        }
    })
    .await;
    let policy_dir = tempfile::tempdir().unwrap();
    policies(
        policy_dir.path(),
        "[wave]\ndistinct_senders = 3\nfamiliar_after = \"1h\"\nshield_for = \"1m\"\nhellthread = 0\n",
    );
    // Our own data dir, to open the store after pavise has stopped.
    let data_dir = tempfile::tempdir().unwrap();
    let dir = data_dir.path().to_owned();
    let pavise = start_with(&upstream, policy_dir.path(), move |f| f.data_dir = dir).await;
    let reads = || upstream.recorded().iter().filter(|r| r.uri.query() == Some("page=2")).count();

    // The wave: strangers mention alice until the shield goes up.
    for i in 0..=THRESHOLD {
        let actor = trolls.actor(&format!("troll{i}"));
        let (resp, _) =
            deliver(&pavise, "127.0.0.50", key, &actor, &note(&actor, &["alice"], &format!("troll{i}")), MASTODON_UA)
                .await;
        assert_eq!(resp.status, if i < THRESHOLD { 202 } else { 429 }, "troll{i}");
    }
    // Raising the shield read alice's following collection from the instance, both pages.
    wait_for("the following collection was read", || reads() == 1).await;
    let read = upstream.recorded().into_iter().find(|r| r.uri.path() == "/users/alice/following").unwrap();
    assert_eq!(read.headers["host"], LOCAL);
    assert_eq!(read.headers["accept"], "application/activity+json");
    assert!(read.headers.get("x-forwarded-for").is_none(), "pavise's own reads come from loopback");

    let (resp, _) =
        deliver(&pavise, "127.0.0.51", key, &listed, &note(&listed, &["alice"], "from-listed"), MASTODON_UA).await;
    assert_eq!(resp.status, 202, "a sender the instance lists among alice's follows passes her shield");

    // A troll signs an Accept of a Follow alice never sent. It reaches the instance (an
    // Accept mentions nobody), and teaches pavise nothing: the instance's list is read
    // again and does not name the troll.
    let troll = trolls.actor("troll99");
    let forged = serde_json::json!({
        "@context": "https://www.w3.org/ns/activitystreams", "id": format!("{troll}#accepts/1"), "type": "Accept", "actor": troll,
        "object": { "id": format!("https://{LOCAL}/f1"), "type": "Follow", "actor": format!("https://{LOCAL}/users/alice"), "object": troll },
    });
    let (resp, _) = deliver(&pavise, "127.0.0.50", key, &troll, forged.to_string().as_bytes(), MASTODON_UA).await;
    assert_eq!(resp.status, 202);
    wait_for("the hinted re-read", || reads() == 2).await;
    let (resp, _) =
        deliver(&pavise, "127.0.0.50", key, &troll, &note(&troll, &["alice"], "troll99"), MASTODON_UA).await;
    assert_eq!(resp.status, 429, "the forged Accept taught nothing");

    // alice really followed `accepted`: its Accept alone is no proof either, but once the
    // instance has processed it and lists the follow, `accepted` passes.
    let (resp, _) =
        deliver(&pavise, "127.0.0.51", key, &accepted, &note(&accepted, &["alice"], "too-early"), MASTODON_UA).await;
    assert_eq!(resp.status, 429, "not followed yet");
    let accept = serde_json::json!({
        "@context": "https://www.w3.org/ns/activitystreams", "id": format!("{accepted}#accepts/1"), "type": "Accept", "actor": accepted,
        "object": { "id": format!("https://{LOCAL}/f2"), "type": "Follow", "actor": format!("https://{LOCAL}/users/alice"), "object": accepted },
    });
    let (resp, _) = deliver(&pavise, "127.0.0.51", key, &accepted, accept.to_string().as_bytes(), MASTODON_UA).await;
    assert_eq!(resp.status, 202);
    assert!(processed.load(Ordering::SeqCst));
    wait_for("the re-read after the real Accept", || reads() == 3).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (resp, _) =
        deliver(&pavise, "127.0.0.51", key, &accepted, &note(&accepted, &["alice"], "from-accepted"), MASTODON_UA)
            .await;
    assert_eq!(resp.status, 202, "a follow the instance confirms passes");

    let report = admin_get(&pavise, "/admin/shield").await;
    assert_eq!(report["totals"]["passed_as_followed"], 2, "{report}");
    // No follow reached pavise's store: the instance is the only record of alice's graph.
    pavise.stop().await;
    let sealer = pavise::expiry::seal::Sealer::load_or_create(&data_dir.path().join("expiry.key")).unwrap();
    let store = pavise::store::EmbeddedStore::open_sealed(data_dir.path(), 1 << 20, sealer.record_seal()).unwrap();
    use pavise::store::ShieldStore as _;
    for actor in [&listed, &accepted, &troll] {
        assert!(!store.follows("alice", actor).await.unwrap(), "{actor} recorded as followed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wave_defers_strangers_passes_friends_holds_sealed_and_loses_nothing() {
    const SENDERS: usize = 40;
    const THRESHOLD: usize = 10;
    let key = rsa_key(0);
    let upstream = RecordingUpstream::with_handler(|_| text(202, "")).await;
    let policy_dir = tempfile::tempdir().unwrap();
    policies(
        policy_dir.path(),
        r#"
[wave]
window             = "10m"
distinct_senders   = 10
familiar_after     = "2s"
shield_for         = "10m"
action             = "defer"
hellthread         = 0
short_retry_agents = ["gotosocial"]
retry_after        = "1s"
"#,
    );
    let pavise = start(&upstream, policy_dir.path()).await;
    let friends = ActorServer::start("127.0.0.4", key).await;
    let trolls = ActorServer::start("127.0.0.3", key).await;
    let gts = ActorServer::start("127.0.0.5", key).await;

    // A friend delivers before the wave (no mentions), and becomes familiar.
    let friend = friends.actor("friend");
    let (resp, _) = deliver(&pavise, "127.0.0.4", key, &friend, &note(&friend, &[], "hello"), MASTODON_UA).await;
    assert_eq!(resp.status, 202);
    tokio::time::sleep(Duration::from_millis(2300)).await;

    // The wave: fresh actors mention alice.
    let mut deferred = Vec::new();
    let mut passed = 0;
    for i in 0..SENDERS {
        let actor = trolls.actor(&format!("troll{i}"));
        let body = note(&actor, &["alice"], &format!("troll{i}"));
        let (resp, _) = deliver(&pavise, "127.0.0.3", key, &actor, &body, MASTODON_UA).await;
        match resp.status.as_u16() {
            202 => {
                assert!(deferred.is_empty(), "troll{i} passed after the shield went up");
                passed += 1;
            }
            429 => {
                assert_eq!(resp.headers["retry-after"], "1");
                deferred.push((actor, body));
            }
            other => panic!("troll{i}: unexpected {other}"),
        }
    }
    assert_eq!(passed, THRESHOLD, "the first {THRESHOLD} unfamiliar senders pass, then the shield goes up");
    assert_eq!(deferred.len(), SENDERS - THRESHOLD);

    // During the wave: the familiar friend still reaches alice, and other members are unaffected.
    let friend_note = note(&friend, &["alice"], "friend-during-wave");
    let (resp, _) = deliver(&pavise, "127.0.0.4", key, &friend, &friend_note, MASTODON_UA).await;
    assert_eq!(resp.status, 202, "a familiar sender passes the shield");
    let troll = trolls.actor("troll7");
    let to_bob = note(&troll, &["bob"], "troll7-to-bob");
    let (resp, _) = deliver(&pavise, "127.0.0.3", key, &troll, &to_bob, MASTODON_UA).await;
    assert_eq!(resp.status, 202, "deliveries to other members pass");

    // A GoToSocial sender in the wave: accepted (202) and held — sealed — not yet at the instance.
    let gts_actor = gts.actor("gts");
    let gts_body = note(&gts_actor, &["alice"], "from-gotosocial-a-private-word");
    let gts_req = signed(key, &format!("{gts_actor}#main-key"), "/users/alice/inbox", &gts_body, GTS_UA);
    let gts_headers = gts_req.headers().clone();
    let (resp, _) = send_from(ip("127.0.0.5"), pavise.addr, gts_req).await;
    assert_eq!(resp.status, 202);
    assert!(!upstream.recorded().iter().any(|r| r.body == gts_body), "held, not forwarded during the wave");
    // Another, signed 56 minutes ago: its signature window closes before the wave passes,
    // so it is purged instead of kept.
    let late = gts.actor("late");
    let late_body = note(&late, &["alice"], "late-a-private-word");
    let then = SystemTime::now() - Duration::from_secs(56 * 60);
    let late_req = signed_as(key, &format!("{late}#main-key"), "/inbox", &late_body, GTS_UA, then, &late_body);
    assert_eq!(send_from(ip("127.0.0.5"), pavise.addr, late_req).await.0.status, 202);
    // An unsigned "GoToSocial" delivery is not worth a place in the store: 429.
    let unsigned = http::Request::post("/inbox")
        .header("host", LOCAL)
        .header("user-agent", GTS_UA)
        .body(Full::new(Bytes::from(note(&gts_actor, &["alice"], "unsigned"))))
        .unwrap();
    assert_eq!(send_from(ip("127.0.0.5"), pavise.addr, unsigned).await.0.status, 429);

    let deadline = Instant::now() + Duration::from_secs(10);
    let report = loop {
        let report = admin_get(&pavise, "/admin/shield").await;
        if report["totals"]["expired_from_quarantine"] == 1 {
            break report;
        }
        assert!(Instant::now() < deadline, "the late delivery was never purged: {report}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(report["shields"][0]["account"], "alice", "{report}");
    assert_eq!(report["held"].as_array().unwrap().len(), 1, "{report}");
    assert_eq!(report["totals"]["deferred"], (SENDERS - THRESHOLD + 1) as u64, "{report}");
    assert_eq!(report["targets"][0]["name"], "alice", "{report}");
    assert_eq!(report["top_offending_domains"][0]["name"], "127.0.0.3", "{report}");
    assert!(report["audit"].as_array().unwrap().iter().any(|a| a["action"] == "expired"), "{report}");
    // What is held is sealed: no file in the data dir holds a word of it in clear.
    for (path, bytes) in files_under(pavise.data_dir.path()) {
        for clear in [&b"a-private-word"[..], b"from-gotosocial", b"late-a-private"] {
            assert!(
                !bytes.windows(clear.len()).any(|w| w == clear),
                "{} holds a held delivery in clear",
                path.display()
            );
        }
    }

    // The wave is over (the admin lifts the shield; a shield lapsing by itself is
    // wave.rs's test): the held delivery reaches the instance from the quarantine, bytes
    // and signed headers unchanged.
    let lift = reqwest::Client::new()
        .post(pavise.admin_url("/admin/shield/lift/alice"))
        .bearer_auth(&pavise.token)
        .send()
        .await
        .unwrap();
    assert_eq!(lift.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    let released = loop {
        if let Some(r) = upstream.recorded().into_iter().find(|r| r.body == gts_body) {
            break r;
        }
        assert!(Instant::now() < deadline, "the held delivery was never released");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(released.uri.path(), "/users/alice/inbox");
    for h in ["host", "date", "digest", "content-type", "signature", "user-agent"] {
        assert_eq!(released.headers.get(h), gts_headers.get(h), "{h} changed in quarantine");
    }
    assert!(released.headers.get("x-forwarded-for").is_some_and(|v| v.to_str().unwrap().starts_with("2001:db8:")));

    // The deferred senders retry (fresh signatures, as Mastodon does): all pass now.
    for (actor, body) in &deferred {
        let (resp, _) = deliver(&pavise, "127.0.0.3", key, actor, body, MASTODON_UA).await;
        assert_eq!(resp.status, 202, "a retry after the wave passes");
    }

    // None lost: every troll's delivery reached the instance exactly once.
    // (The instance also answered the shield's read of alice's following collection: a GET.)
    let at_instance: Vec<Bytes> =
        upstream.recorded().into_iter().filter(|r| r.method == http::Method::POST).map(|r| r.body).collect();
    let unique: HashSet<&Bytes> = at_instance.iter().collect();
    assert_eq!(unique.len(), at_instance.len(), "nothing was forwarded twice");
    for i in 0..SENDERS {
        let body = note(&trolls.actor(&format!("troll{i}")), &["alice"], &format!("troll{i}"));
        assert!(unique.contains(&Bytes::from(body)), "troll{i}'s delivery was lost");
    }
    // hello + the trolls + friend + bob + the held one.
    assert_eq!(at_instance.len(), 1 + SENDERS + 1 + 1 + 1);
    let report = admin_get(&pavise, "/admin/shield").await;
    assert!(report["held"].as_array().unwrap().is_empty(), "{report}");
    assert_eq!(report["audit"][0]["action"], "released", "{report}");
    // One key fetch per actor, not per delivery.
    assert_eq!(trolls.fetches(), SENDERS as u64);
    pavise.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_key_id_does_not_spend_the_real_domains_budget() {
    let (real_key, other_key) = (rsa_key(0), rsa_key(1));
    let upstream = RecordingUpstream::with_handler(|_| text(202, "")).await;
    let policy_dir = tempfile::tempdir().unwrap();
    policies(
        policy_dir.path(),
        r#"
[[limit]]
name  = "inbox-per-domain"
route = "inbox"
key   = "remote-domain"
rate  = "3/min"
"#,
    );
    let pavise = start(&upstream, policy_dir.path()).await;
    let big = ActorServer::start("127.0.0.2", real_key).await;
    let alice_at_big = big.actor("alice");
    let ua = "http.rb/5.2.0 (Mastodon/4.3.0; +https://big.example/)";

    // Someone else claims big's keyId but signs with their own key.
    let mut spoofed = Vec::new();
    for i in 0..10 {
        let body = note(&alice_at_big, &["carol"], &format!("spoof{i}"));
        let (resp, _) = deliver(&pavise, "127.0.0.50", other_key, &alice_at_big, &body, ua).await;
        spoofed.push(resp.status.as_u16());
    }
    // Counted under the spoofer's own pseudonym: 3 through (the instance rejects them), then 429.
    assert_eq!(spoofed, [202, 202, 202, 429, 429, 429, 429, 429, 429, 429]);

    // The real big.example still has its whole budget.
    for i in 0..3 {
        let body = note(&alice_at_big, &["carol"], &format!("real{i}"));
        let (resp, _) = deliver(&pavise, "127.0.0.51", real_key, &alice_at_big, &body, ua).await;
        assert_eq!(resp.status, 202, "real delivery {i} refused: the spoofer spent the domain's budget");
    }
    let body = note(&alice_at_big, &["carol"], "real3");
    let (resp, _) = deliver(&pavise, "127.0.0.51", real_key, &alice_at_big, &body, ua).await;
    assert_eq!(resp.status, 429, "the domain limit itself holds");
    assert_eq!(resp.headers["x-ratelimit-limit"], "3");
    let metrics = reqwest::Client::new()
        .get(pavise.admin_url("/metrics"))
        .bearer_auth(&pavise.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("pavise_shield_signatures_total{result=\"unverified\"} 10"), "{metrics}");
    assert!(metrics.contains("pavise_shield_unverified_total{reason=\"bad_signature\"} 10"), "{metrics}");
    assert!(metrics.contains("pavise_shield_signatures_total{result=\"verified\"} 4"), "{metrics}");
    pavise.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_fetches_go_through_the_egress_proxy_with_its_credentials() {
    let key = rsa_key(0);
    let upstream = RecordingUpstream::with_handler(|_| text(202, "")).await;
    let policy_dir = tempfile::tempdir().unwrap();
    policies(policy_dir.path(), "[wave]\ndistinct_senders = 3\n");
    let remote = ActorServer::start("127.0.0.60", key).await;
    // The key fetcher needs the egress address before pavise binds it: pick a free port.
    let egress_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let actor_host = remote.addr.to_string();
    let pavise = start_with(&upstream, policy_dir.path(), move |f| {
        f.shield.key_fetch = KeyFetchMode::Egress;
        f.shield.key_fetch_allow_private = false;
        f.egress.listen = SocketAddr::from(([127, 0, 0, 1], egress_port));
        f.egress.proxy_auth = Some("mastodon:s3cret".into());
        // The egress proxy's private-address guard, opened for this one actor server.
        f.egress.allow_hosts = vec![actor_host];
    })
    .await;
    let actor = remote.actor("through-tor");
    let (resp, _) =
        deliver(&pavise, "127.0.0.61", key, &actor, &note(&actor, &["alice"], "via-egress"), MASTODON_UA).await;
    assert_eq!(resp.status, 202);
    let report = admin_get(&pavise, "/admin/shield").await;
    assert_eq!(report["totals"]["signatures_verified"], 1, "the key came through the authenticating proxy: {report}");
    assert_eq!(remote.fetches(), 1);
    pavise.stop().await;
}

#[test]
fn pavise_check_and_run_refuse_direct_key_fetches_under_tor_egress() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pavise.toml");
    let run = |args: &[&str], text: &str| {
        std::fs::write(&config, text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pavise"))
            .args(args)
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--policies")
            .arg(dir.path().join("policies"))
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let tor_direct = "[shield]\nkey_fetch = \"direct\"\n";
    // `run` gets an arti config that does not exist, so that even a broken check could not
    // start pavise against the public Tor network: it would fail on that instead.
    for cmd in [&["check"][..], &["run", "--arti-config", "/nonexistent/arti.toml"]] {
        let (code, _, err) = run(cmd, tor_direct);
        assert_eq!(code, Some(1), "{cmd:?}: {err}");
        assert!(err.contains("shield.key_fetch") && err.contains("tor"), "{cmd:?}: {err}");
    }
    // The development escape needs both modes direct, and says so.
    let (code, out, err) = run(&["check"], "[egress]\nmode = \"direct\"\n[shield]\nkey_fetch = \"direct\"\n");
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("DIRECT from this server's address"), "{out}");
    // The default, under Tor: through the egress proxy.
    let (code, out, err) = run(&["check"], "[egress]\nmode = \"direct\"\nproxy_auth = \"a:b\"\n");
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("through the egress proxy") && out.contains("proxy credentials"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_up_and_login_floods_get_429_other_clients_do_not() {
    let upstream = RecordingUpstream::start().await;
    // The shipped default policies.
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let pavise = start(&upstream, &shipped).await;
    let post = |path: &str| {
        http::Request::post(path)
            .header("host", LOCAL)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from_static(b"username=x&password=y")))
            .unwrap()
    };
    let (flooder, other) = (ip("127.0.0.60"), ip("127.0.0.61"));

    for i in 0..5 {
        let (resp, _) = send_from(flooder, pavise.addr, post("/api/v1/accounts")).await;
        assert_eq!(resp.status, 200, "sign-up {i}");
    }
    let (resp, body) = send_from(flooder, pavise.addr, post("/api/v1/accounts")).await;
    assert_eq!(resp.status, 429);
    let retry: u64 = resp.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((300..=360).contains(&retry), "5/30m refills one every 6 minutes: {retry}");
    assert_eq!(resp.headers["x-ratelimit-limit"], "5");
    assert_eq!(resp.headers["x-ratelimit-remaining"], "0");
    let reset = resp.headers["x-ratelimit-reset"].to_str().unwrap();
    assert!(reset.len() == 24 && reset.ends_with('Z') && reset.as_bytes()[10] == b'T', "{reset}");
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&body).unwrap()["error"], "Too many requests");
    // The web sign-up form shares the bucket.
    assert_eq!(send_from(flooder, pavise.addr, post("/auth")).await.0.status, 429);

    for i in 0..25 {
        let (resp, _) = send_from(flooder, pavise.addr, post("/auth/sign_in")).await;
        assert_eq!(resp.status, 200, "login {i}");
    }
    assert_eq!(send_from(flooder, pavise.addr, post("/auth/sign_in")).await.0.status, 429);

    // Another client is unaffected, and so is the flooder's ordinary API use.
    assert_eq!(send_from(other, pavise.addr, post("/api/v1/accounts")).await.0.status, 200);
    assert_eq!(send_from(other, pavise.addr, post("/auth/sign_in")).await.0.status, 200);
    let timeline =
        http::Request::get("/api/v1/timelines/public").header("host", LOCAL).body(Full::new(Bytes::new())).unwrap();
    assert_eq!(send_from(flooder, pavise.addr, timeline).await.0.status, 200);

    // The instance saw 5 sign-ups + 25 logins from the flooder, not more.
    let from_instance: Vec<_> = upstream.recorded();
    assert_eq!(from_instance.iter().filter(|r| r.uri.path() == "/api/v1/accounts").count(), 6);
    assert_eq!(from_instance.iter().filter(|r| r.uri.path() == "/auth/sign_in").count(), 26);
    pavise.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_policy_names_file_and_key_and_reload_keeps_the_old_one() {
    let upstream = RecordingUpstream::start().await;
    let policy_dir = tempfile::tempdir().unwrap();
    policies(policy_dir.path(), "[[limit]]\nname='x'\nroute='auth'\nkey='client'\nrate='1/min'\n");
    let pavise = start(&upstream, policy_dir.path()).await;
    std::fs::write(policy_dir.path().join("shield.toml"), "[wave]\ndistinct_sendrs = 3\n").unwrap();
    let resp =
        reqwest::Client::new().post(pavise.admin_url("/admin/reload")).bearer_auth(&pavise.token).send().await.unwrap();
    assert_eq!(resp.status(), 422);
    let detail: serde_json::Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    let err = detail["shield"]["error"].as_str().unwrap();
    assert!(err.contains("shield.toml") && err.contains("distinct_sendrs"), "{err}");
    // The old rule still holds.
    let req = || http::Request::post("/auth/sign_in").header("host", LOCAL).body(Full::new(Bytes::new())).unwrap();
    assert_eq!(send_from(ip("127.0.0.70"), pavise.addr, req()).await.0.status, 200);
    assert_eq!(send_from(ip("127.0.0.70"), pavise.addr, req()).await.0.status, 429);
    pavise.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hellthread_from_a_stranger_is_deferred_then_delivered() {
    let key = rsa_key(0);
    let upstream = RecordingUpstream::with_handler(|_| text(202, "")).await;
    let policy_dir = tempfile::tempdir().unwrap();
    policies(
        policy_dir.path(),
        "[wave]\ndistinct_senders = 100\nfamiliar_after = \"7d\"\nshield_for = \"2s\"\nhellthread = 3\nretry_after = \"1s\"\n",
    );
    let pavise = start(&upstream, policy_dir.path()).await;
    let remote = ActorServer::start("127.0.0.6", key).await;
    let actor = remote.actor("stranger");
    let key_id = format!("{actor}#main-key");
    let send = |body: Vec<u8>| signed(key, &key_id, "/inbox", &body, MASTODON_UA);

    let small = note(&actor, &["alice", "bob", "carol"], "three");
    assert_eq!(
        send_from(ip("127.0.0.6"), pavise.addr, send(small)).await.0.status,
        202,
        "3 mentions is not a hellthread"
    );
    let big = note(&actor, &["alice", "bob", "carol", "dave"], "four");
    assert_eq!(send_from(ip("127.0.0.6"), pavise.addr, send(big.clone())).await.0.status, 429);
    assert_eq!(
        send_from(ip("127.0.0.6"), pavise.addr, send(big.clone())).await.0.status,
        429,
        "a quick retry is still deferred"
    );
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(send_from(ip("127.0.0.6"), pavise.addr, send(big.clone())).await.0.status, 202, "deferred, not lost");
    assert_eq!(upstream.recorded().iter().filter(|r| r.body == big).count(), 1);
    pavise.stop().await;
}
