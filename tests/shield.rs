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
    signed_for(LOCAL, key, key_id, path, body, user_agent, date, digest_of)
}

/// [`signed_as`], addressed (and signed) for `host`.
#[allow(clippy::too_many_arguments)]
fn signed_for(
    host: &str,
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
        "(request-target): post {path}\nhost: {host}\ndate: {date}\ndigest: {digest}\ncontent-type: {content_type}"
    );
    let mut sig = vec![0u8; key.pair.public().modulus_len()];
    key.pair.sign(&RSA_PKCS1_SHA256, &ring::rand::SystemRandom::new(), signing.as_bytes(), &mut sig).unwrap();
    let header = format!(
        "keyId=\"{key_id}\",algorithm=\"rsa-sha256\",headers=\"(request-target) host date digest content-type\",signature=\"{}\"",
        base64::engine::general_purpose::STANDARD.encode(&sig)
    );
    http::Request::post(path)
        .header("host", host)
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

/// The `/admin/shield` report, once `done` holds for it (polled, for 15 s at most).
async fn report_when(p: &Pavise, what: &str, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let report = admin_get(p, "/admin/shield").await;
        if done(&report) {
            return report;
        }
        assert!(Instant::now() < deadline, "timed out waiting: {what}: {report}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
        "[wave]\ndistinct_senders = 3\nfamiliar_after = \"1h\"\nshield_for = \"10m\"\nhellthread = 0\nper_domain = 10\n",
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
        "[wave]\ndistinct_senders = 3\nfamiliar_after = \"1h\"\nshield_for = \"10m\"\nhellthread = 0\nper_domain = 10\n",
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
        "[wave]\ndistinct_senders = 3\nfamiliar_after = \"1h\"\nshield_for = \"10m\"\nhellthread = 0\nper_domain = 10\n",
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

    // Tagged and in `cc` under the same spelling, as Mastodon addresses a mention: what the
    // instance notifies (a tag alone, or `cc` alone, is not: see the ghost-wave test).
    let mention = |tag: serde_json::Value| {
        let cc: Vec<serde_json::Value> = match &tag {
            serde_json::Value::Array(tags) => tags.iter().map(|t| t["href"].clone()).collect(),
            one => vec![one["href"].clone()],
        };
        move |actor: &str, marker: &str| {
            serde_json::json!({
                "@context": "https://www.w3.org/ns/activitystreams", "type": "Create", "actor": actor,
                "id": format!("{actor}/{marker}"),
                "object": {"type": "Note", "id": format!("{actor}/{marker}/note"), "content": marker,
                    "to": ["https://www.w3.org/ns/activitystreams#Public"], "cc": cc.clone(), "tag": tag.clone()},
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
        ("format suffix", "/inbox", Box::new(mention(href("https://local.example/users/alice.json"))) as Body),
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
    // sender of the fetched object (whom it mentions is unknown), the four silent mentions
    // (Mastodon notifies nobody of those) and the three spellings Mastodon resolves to
    // nobody (`acct:`, `@user@host`, an explicit port): held back, not counted.
    assert_eq!(why["actors"], 4 + spellings.len() as u64 - 1 - 4 - 3, "{report}");
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
        "[wave]\ndistinct_senders = 3\nfamiliar_after = \"1h\"\nshield_for = \"1m\"\nhellthread = 0\nper_domain = 10\n",
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
per_domain         = 10
familiar_after     = "2s"
shield_for         = "10m"
action             = "defer"
hellthread         = 0
short_retry_agents = ["gotosocial"]
retry_after        = "1s"
"#,
    );
    // The trolls' server delivers for forty new actors from one address within a second:
    // more key fetches than one client may cause by default (see
    // key_fetches_are_budgeted_per_client_and_per_host).
    let pavise = start_with(&upstream, policy_dir.path(), |f| f.shield.key_fetches_per_client = "100/min".into()).await;
    let friends = ActorServer::start("127.0.0.4", key).await;
    let trolls = ActorServer::start("127.0.0.3", key).await;
    let gts = ActorServer::start("127.0.0.5", key).await;

    // A friend writes to bob before the wave, twice, a second apart (half of
    // familiar_after), and the instance accepts both: the friend becomes familiar once the
    // first is familiar_after old.
    let friend = friends.actor("friend");
    for (i, pause) in [(0, 1100), (1, 1200)] {
        let hello = note(&friend, &["bob"], &format!("hello{i}"));
        let (resp, _) = deliver(&pavise, "127.0.0.4", key, &friend, &hello, MASTODON_UA).await;
        assert_eq!(resp.status, 202);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }

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
    // so it is released now, shield or not (a delay, never a drop).
    let late = gts.actor("late");
    let late_body = note(&late, &["alice"], "late-a-private-word");
    let then = SystemTime::now() - Duration::from_secs(56 * 60);
    let late_req = signed_as(key, &format!("{late}#main-key"), "/inbox", &late_body, GTS_UA, then, &late_body);
    assert_eq!(send_from(ip("127.0.0.5"), pavise.addr, late_req).await.0.status, 202);
    // An unsigned "GoToSocial" delivery is the instance's to refuse: forwarded as it is,
    // costing no place in the store (and its answer says nothing about the shield).
    let unsigned_body = note(&gts_actor, &["alice"], "unsigned");
    let unsigned = http::Request::post("/inbox")
        .header("host", LOCAL)
        .header("user-agent", GTS_UA)
        .body(Full::new(Bytes::from(unsigned_body.clone())))
        .unwrap();
    assert_eq!(send_from(ip("127.0.0.5"), pavise.addr, unsigned).await.0.status, 202);
    assert!(upstream.recorded().iter().any(|r| r.body == unsigned_body));

    let report = report_when(&pavise, "the late delivery is released before its window closes", |r| {
        r["totals"]["released_at_window"] == 1
    })
    .await;
    assert!(upstream.recorded().iter().any(|r| r.body == late_body));
    assert_eq!(report["totals"]["expired_from_quarantine"], 0, "nothing held is purged undelivered: {report}");
    assert_eq!(report["shields"][0]["account"], "alice", "{report}");
    assert_eq!(report["held"].as_array().unwrap().len(), 1, "{report}");
    assert_eq!(report["totals"]["deferred"], (SENDERS - THRESHOLD) as u64, "{report}");
    assert_eq!(report["targets"][0]["name"], "alice", "{report}");
    assert_eq!(report["top_offending_domains"][0]["name"], "127.0.0.3", "{report}");
    assert!(
        report["audit"].as_array().unwrap().iter().any(|a| a["action"] == "released"
            && a["detail"].as_str().unwrap().contains("signature window is closing")),
        "{report}"
    );
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

    // The deferred senders retry (fresh signatures, as Mastodon does, 15 s later at the
    // soonest: a Date one second on at least, or the very same signature would be a replay
    // and get its first copy's answer): all pass now.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for (actor, body) in &deferred {
        let (resp, _) = deliver(&pavise, "127.0.0.3", key, actor, body, MASTODON_UA).await;
        assert_eq!(resp.status, 202, "a retry after the wave passes: {actor}");
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
    // Two hellos + the trolls + friend + bob + the held one + the late one + the unsigned one.
    assert_eq!(at_instance.len(), 2 + SENDERS + 1 + 1 + 1 + 1 + 1);
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

// ---------------------------------------------------------------------------------------
// Regression tests for the red-team findings on the shield (issue 12, second pass): each
// names the finding it closes.
// ---------------------------------------------------------------------------------------

/// A wave policy where one loopback "domain" can raise a shield with four actors.
const WAVE3: &str =
    "[wave]\ndistinct_senders = 3\nper_domain = 10\nfamiliar_after = \"1h\"\nshield_for = \"10m\"\nhellthread = 0\n";

/// `n` fresh verified actors of `server` (delivering from `from`) mention `member`.
async fn raise_wave(p: &Pavise, server: &ActorServer, from: &str, prefix: &str, n: usize, member: &str) -> Vec<u16> {
    let mut out = Vec::new();
    for i in 0..n {
        let actor = server.actor(&format!("{prefix}{i}"));
        let body = note(&actor, &[member], &format!("{prefix}{i}"));
        out.push(deliver(p, from, rsa_key(0), &actor, &body, MASTODON_UA).await.0.status.as_u16());
    }
    out
}

async fn admin_status(p: &Pavise, path: &str) -> (u16, serde_json::Value) {
    let resp = reqwest::Client::new().get(p.admin_url(path)).bearer_auth(&p.token).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap_or_default())
}

fn at_instance(upstream: &RecordingUpstream, body: &[u8]) -> bool {
    upstream.recorded().iter().any(|r| r.body == body)
}

fn sha256_hex(s: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, s.as_bytes()).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// F1: what the instance reads and pavise cannot read exactly — JSON with comments, numbers
/// out of range, a key twice, a BOM, a JSON-LD document the instance compacts, an IRI key —
/// and what pavise used not to look into — collections, a boost of someone else's post —
/// is held back from a shielded member like any mention of her.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_bodies_collections_and_foreign_boosts_are_held_back_during_a_wave() {
    let key = rsa_key(0);
    let upstream = RecordingUpstream::with_handler(|_| text(202, "")).await;
    let policy_dir = tempfile::tempdir().unwrap();
    policies(policy_dir.path(), WAVE3);
    let pavise = start(&upstream, policy_dir.path()).await;
    let trolls = ActorServer::start("127.0.0.80", key).await;
    let more = ActorServer::start("127.0.0.81", key).await;
    assert_eq!(raise_wave(&pavise, &trolls, "127.0.0.80", "troll", 4, "alice").await, [202, 202, 202, 429]);

    let alice = format!("https://{LOCAL}/users/alice");
    let mentioning =
        |actor: &str, marker: &str| String::from_utf8(note_to(actor, std::slice::from_ref(&alice), marker)).unwrap();
    let unaddressed = |actor: &str, marker: &str| {
        let mut doc: serde_json::Value = serde_json::from_slice(&note_to(actor, &[], marker)).unwrap();
        doc.as_object_mut().unwrap().remove("@context");
        doc
    };
    type Body<'a> = Box<dyn Fn(&str, &str) -> String + 'a>;
    let variants: Vec<(&str, &str, Body<'_>)> = vec![
        ("a /* comment */", "/inbox", Box::new(|a, m| format!("{{/* hi */{}", &mentioning(a, m)[1..]))),
        ("a // comment", "/inbox", Box::new(|a, m| format!("{{// hi\n{}", &mentioning(a, m)[1..]))),
        (
            "a number out of range",
            "/inbox",
            Box::new(|a, m| {
                let b = mentioning(a, m);
                format!("{},\"x\":1e400}}", &b[..b.len() - 1])
            }),
        ),
        (
            "a key twice",
            "/inbox",
            Box::new(|a, m| {
                mentioning(a, m).replacen("\"type\":\"Create\"", "\"type\":\"Like\",\"type\":\"Create\"", 1)
            }),
        ),
        ("a byte order mark", "/inbox", Box::new(|a, m| format!("\u{feff}{}", mentioning(a, m)))),
        (
            "a comment, to her inbox, addressed to nobody",
            "/users/alice/inbox",
            Box::new(|a, m| format!("{{/* hi */{}", &String::from_utf8(note_to(a, &[], m)).unwrap()[1..])),
        ),
        (
            "a Collection of the Create",
            "/inbox",
            Box::new(|a, m| {
                let mut inner: serde_json::Value = serde_json::from_str(&mentioning(a, m)).unwrap();
                inner.as_object_mut().unwrap().remove("@context");
                serde_json::json!({"@context": "https://www.w3.org/ns/activitystreams", "type": "Collection", "items": [inner]}).to_string()
            }),
        ),
        (
            "an OrderedCollectionPage to her inbox",
            "/users/alice/inbox",
            Box::new(|a, m| {
                serde_json::json!({"@context": "https://www.w3.org/ns/activitystreams", "type": "OrderedCollectionPage",
                "orderedItems": [unaddressed(a, m)]})
                .to_string()
            }),
        ),
        (
            "as:tag and a Linked Data signature",
            "/inbox",
            Box::new(|a, m| {
                let mut doc: serde_json::Value = serde_json::from_slice(&note_to(a, &[], m)).unwrap();
                doc["object"]["as:tag"] = serde_json::json!({"type": "Mention", "href": alice});
                doc["signature"] = serde_json::json!({"type": "RsaSignature2017", "creator": format!("{a}#main-key"), "signatureValue": "AAAA"});
                doc.to_string()
            }),
        ),
        (
            "a full IRI as a key",
            "/inbox",
            Box::new(|a, m| {
                let mut doc: serde_json::Value = serde_json::from_slice(&note_to(a, &[], m)).unwrap();
                doc["object"]["https://www.w3.org/ns/activitystreams#tag"] =
                    serde_json::json!({"type": "Mention", "href": alice});
                doc.to_string()
            }),
        ),
        (
            "a boost of someone else's post",
            "/inbox",
            Box::new(|a, m| {
                serde_json::json!({"@context": "https://www.w3.org/ns/activitystreams", "id": format!("{a}/boosts/{m}"),
                "type": "Announce", "actor": a, "to": ["https://www.w3.org/ns/activitystreams#Public"],
                "object": {"id": "https://elsewhere.example/notes/1", "type": "Note", "content": "nothing to see",
                    "attributedTo": "https://elsewhere.example/users/sock"}})
                .to_string()
            }),
        ),
    ];
    for (i, (what, path, body)) in variants.iter().enumerate() {
        let actor = more.actor(&format!("variant{i}"));
        let body = body(&actor, &format!("variant{i}")).into_bytes();
        let req = signed(key, &format!("{actor}#main-key"), path, &body, MASTODON_UA);
        let (resp, _) = send_from(ip("127.0.0.81"), pavise.addr, req).await;
        assert_eq!(resp.status, 429, "{what}: passed the shield");
        assert!(!at_instance(&upstream, &body), "{what}: reached the instance");
    }
    // Plain mail to another member still passes — also a public post carrying a Linked
    // Data signature with Mastodon's usual context, as Mastodon sends every public post.
    let actor = more.actor("to-bob");
    let body = note(&actor, &["bob"], "to-bob");
    assert_eq!(deliver(&pavise, "127.0.0.81", key, &actor, &body, MASTODON_UA).await.0.status, 202);
    let actor = more.actor("ld-signed");
    let mut doc: serde_json::Value = serde_json::from_slice(&note(&actor, &["bob"], "ld-signed")).unwrap();
    doc["@context"] = serde_json::json!(["https://www.w3.org/ns/activitystreams", "https://w3id.org/security/v1",
        {"ostatus": "http://ostatus.org#", "atomUri": "ostatus:atomUri", "sensitive": "as:sensitive",
         "toot": "http://joinmastodon.org/ns#", "Hashtag": "as:Hashtag"}]);
    doc["signature"] = serde_json::json!({"type": "RsaSignature2017", "creator": format!("{actor}#main-key"),
        "created": "2026-01-01T00:00:00Z", "signatureValue": "AAAA"});
    let body = doc.to_string().into_bytes();
    assert_eq!(deliver(&pavise, "127.0.0.81", key, &actor, &body, MASTODON_UA).await.0.status, 202);
    let report = admin_get(&pavise, "/admin/shield").await;
    assert_eq!(report["totals"]["signatures_verified"], 4 + variants.len() as u64 + 2, "{report}");
    pavise.stop().await;
}

/// F2: a delivery addressed to another instance's `Host` (relayed here by it), or signed by
/// a domain the instance suspends, is the instance's to refuse and counts toward nothing;
/// without `local_domain` nothing counts, and `/readyz` says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_for_another_host_or_from_a_suspended_domain_count_for_nothing() {
    let key = rsa_key(0);
    let suspended = "127.0.0.83";
    let blocks = serde_json::json!([
        {"domain": suspended, "digest": sha256_hex(suspended), "severity": "suspend", "comment": "trolls"},
        {"domain": "127.0.0.8*", "digest": sha256_hex("127.0.0.84"), "severity": "suspend", "comment": "obfuscated"},
        {"domain": "127.0.0.85", "digest": sha256_hex("127.0.0.85"), "severity": "silence", "comment": null},
    ])
    .to_string();
    let upstream = RecordingUpstream::with_handler(move |r| match r.uri.path() {
        "/api/v1/instance/domain_blocks" => text(200, &blocks),
        _ => text(202, ""),
    })
    .await;
    let policy_dir = tempfile::tempdir().unwrap();
    policies(policy_dir.path(), WAVE3);
    let pavise = start(&upstream, policy_dir.path()).await;
    let report = report_when(&pavise, "the instance's domain blocks are read", |r| {
        r["instance"]["domain_blocks"]["suspended"] == 2
    })
    .await;
    assert_eq!(report["instance"]["ready"], true, "{report}");
    let (status, ready) = admin_status(&pavise, "/readyz").await;
    assert_eq!((status, &ready["checks"]["shield"]["ready"]), (200, &true.into()), "{ready}");

    // Four real actors' deliveries to evil.example (mentioning *its* alice, or to its
    // alice's inbox), relayed here within their window.
    let relayed = ActorServer::start("127.0.0.82", key).await;
    for (i, path) in ["/inbox", "/inbox", "/users/alice/inbox", "/users/alice/inbox"].iter().enumerate() {
        let actor = relayed.actor(&format!("someone{i}"));
        let body = note_to(&actor, &["https://evil.example/users/alice".to_owned()], &format!("to-evil{i}"));
        let now = SystemTime::now();
        let req = signed_for("evil.example", key, &format!("{actor}#main-key"), path, &body, MASTODON_UA, now, &body);
        let (resp, _) = send_from(ip("127.0.0.82"), pavise.addr, req).await;
        assert_eq!(resp.status, 202, "forwarded as it is: the instance answers 403 to a foreign Host");
    }
    // Four actors of a suspended domain, and two of one whose block is obfuscated.
    let blocked = ActorServer::start(suspended, key).await;
    assert_eq!(raise_wave(&pavise, &blocked, suspended, "banned", 4, "alice").await, [202; 4]);
    let obfuscated = ActorServer::start("127.0.0.84", key).await;
    assert_eq!(raise_wave(&pavise, &obfuscated, "127.0.0.84", "hidden", 2, "alice").await, [202; 2]);
    let report = admin_get(&pavise, "/admin/shield").await;
    assert!(report["shields"].as_array().unwrap().is_empty(), "{report}");
    let reasons = &report["totals"]["unverified_by_reason"];
    assert_eq!((&reasons["foreign_host"], &reasons["domain_blocked"]), (&4.into(), &6.into()), "{report}");
    assert_eq!(remote_fetches(&relayed), 0, "a foreign Host costs no key fetch");
    // A silenced domain's actors still count (the instance accepts their mail).
    let silenced = ActorServer::start("127.0.0.85", key).await;
    assert_eq!(raise_wave(&pavise, &silenced, "127.0.0.85", "quiet", 4, "alice").await, [202, 202, 202, 429]);
    pavise.stop().await;

    // Without local_domain pavise cannot tell the instance's deliveries: nothing counts,
    // and readiness says why — degraded, not down: the relay still serves members safely.
    let pavise = start_with(&upstream, policy_dir.path(), |f| f.local_domain = None).await;
    let trolls = ActorServer::start("127.0.0.86", key).await;
    assert_eq!(raise_wave(&pavise, &trolls, "127.0.0.86", "troll", 5, "alice").await, [202; 5]);
    let (status, ready) = admin_status(&pavise, "/readyz").await;
    assert_eq!((status, &ready["checks"]["shield"]["degraded"]), (200, &true.into()), "{ready}");
    assert!(ready["checks"]["shield"]["reason"].as_str().unwrap().contains("local_domain"), "{ready}");
    pavise.stop().await;
}

fn remote_fetches(server: &ActorServer) -> u64 {
    server.fetches()
}

/// F3: a held delivery is never purged undelivered: it goes out before its signature
/// window closes even while the shield is still up; a short-retry sender whose key pavise
/// cannot fetch is held too, not refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_mail_is_released_before_its_window_closes_and_unfetchable_senders_are_held() {
    let key = rsa_key(0);
    let upstream = RecordingUpstream::with_handler(|_| text(202, "")).await;
    let policy_dir = tempfile::tempdir().unwrap();
    policies(policy_dir.path(), &format!("{WAVE3}release_within = \"2s\"\n"));
    let pavise = start(&upstream, policy_dir.path()).await;
    let trolls = ActorServer::start("127.0.0.87", key).await;
    raise_wave(&pavise, &trolls, "127.0.0.87", "troll", 4, "alice").await;

    let friend_server = ActorServer::start("127.0.0.88", key).await;
    let friend = friend_server.actor("journalist");
    let dm = note(&friend, &["alice"], "a-dm-from-gotosocial");
    let req = signed(key, &format!("{friend}#main-key"), "/users/alice/inbox", &dm, GTS_UA);
    assert_eq!(send_from(ip("127.0.0.88"), pavise.addr, req).await.0.status, 202);
    // Its server refuses pavise (403 to Tor exits, a challenge page): the instance has the
    // key, pavise cannot fetch it.
    let blocked =
        ActorServer::serving("127.0.0.89", Arc::new(|_, _| text(403, "<html>Attention required</html>"))).await;
    let mut unfetchable = Vec::new();
    for (i, ua) in [GTS_UA, MASTODON_UA].iter().enumerate() {
        let actor = blocked.actor(&format!("friend{i}"));
        let body = note(&actor, &["alice"], &format!("unfetchable{i}"));
        let req = signed(key, &format!("{actor}#main-key"), "/inbox", &body, ua);
        assert_eq!(send_from(ip("127.0.0.89"), pavise.addr, req).await.0.status, 202, "held, whatever its agent");
        unfetchable.push(body);
    }
    assert!(!at_instance(&upstream, &dm), "held while the shield is up");
    let report =
        // Released, and gone from the quarantine (the count comes first, the delete a moment after).
        report_when(&pavise, "all three released as their windows close", |r| {
            r["totals"]["released"] == 3 && r["held"].as_array().is_some_and(Vec::is_empty)
        })
        .await;
    assert_eq!(report["shields"][0]["account"], "alice", "the shield is still up: {report}");
    assert_eq!(report["totals"]["released_at_window"], 3, "{report}");
    assert_eq!(report["totals"]["expired_from_quarantine"], 0, "{report}");
    assert!(report["held"].as_array().unwrap().is_empty(), "{report}");
    for body in [&dm].into_iter().chain(&unfetchable) {
        assert!(at_instance(&upstream, body));
    }
    pavise.stop().await;
}

/// F4: the wave's own actors hold nothing, a User-Agent claim earns no place, and no
/// actor or domain takes more than its share of the quarantine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wave_actors_hold_nothing_and_nobody_takes_more_than_a_share() {
    let key = rsa_key(0);
    let upstream = RecordingUpstream::with_handler(|_| text(202, "")).await;
    let policy_dir = tempfile::tempdir().unwrap();
    policies(policy_dir.path(), WAVE3);
    let pavise = start_with(&upstream, policy_dir.path(), |f| {
        f.shield.max_held_per_actor = 2;
        f.shield.max_held_per_domain = 3;
    })
    .await;
    let trolls = ActorServer::start("127.0.0.90", key).await;
    raise_wave(&pavise, &trolls, "127.0.0.90", "troll", 4, "alice").await;
    let troll = trolls.actor("troll0");
    for i in 0..3 {
        let body = note(&troll, &["alice"], &format!("junk{i}"));
        let req = signed(key, &format!("{troll}#main-key"), "/inbox", &body, GTS_UA);
        assert_eq!(
            send_from(ip("127.0.0.90"), pavise.addr, req).await.0.status,
            429,
            "a wave actor claiming GoToSocial"
        );
    }
    let gts = ActorServer::start("127.0.0.91", key).await;
    let send = |actor: String, marker: String| {
        let pavise = &pavise;
        async move {
            let body = note(&actor, &["alice"], &marker);
            let req = signed(key, &format!("{actor}#main-key"), "/inbox", &body, GTS_UA);
            send_from(ip("127.0.0.91"), pavise.addr, req).await.0.status.as_u16()
        }
    };
    let mut statuses = Vec::new();
    for i in 0..3 {
        statuses.push(send(gts.actor("busy"), format!("busy{i}")).await);
    }
    assert_eq!(statuses, [202, 202, 429], "two per actor");
    assert_eq!(send(gts.actor("second"), "second".into()).await, 202);
    assert_eq!(send(gts.actor("third"), "third".into()).await, 429, "three per domain");
    let other = ActorServer::start("127.0.0.92", key).await;
    let actor = other.actor("legit");
    let body = note(&actor, &["alice"], "legit");
    let req = signed(key, &format!("{actor}#main-key"), "/inbox", &body, GTS_UA);
    assert_eq!(send_from(ip("127.0.0.92"), pavise.addr, req).await.0.status, 202, "another domain has its own share");
    let report = admin_get(&pavise, "/admin/shield").await;
    assert_eq!(report["quarantine"]["held"], 4, "{report}");
    pavise.stop().await;
}

/// F5: an unsigned delivery costs nothing but its bytes (no parse, no lookup, no fetch);
/// a signed one's addressing is read in bounded time, and what lies past the bound is
/// held back like anything pavise cannot read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_deliveries_cost_bounded_work_and_unsigned_ones_cost_none() {
    let key = rsa_key(0);
    let upstream = RecordingUpstream::with_handler(|_| text(202, "")).await;
    let policy_dir = tempfile::tempdir().unwrap();
    policies(policy_dir.path(), &WAVE3.replace("hellthread = 0", "hellthread = 20"));
    let pavise = start(&upstream, policy_dir.path()).await;
    let trolls = ActorServer::start("127.0.0.93", key).await;
    raise_wave(&pavise, &trolls, "127.0.0.93", "troll", 4, "alice").await;
    let many = |n: usize| (0..n).map(|i| format!("http://r/{i}")).collect::<Vec<String>>();

    let body = serde_json::json!({"@context": "https://www.w3.org/ns/activitystreams", "type": "Create",
        "actor": "https://r0.example/a", "cc": many(50_000), "object": {"type": "Note", "content": "x",
        "tag": [{"type": "Mention", "href": format!("https://{LOCAL}/ap/users/4242")}]}})
    .to_string()
    .into_bytes();
    assert!(body.len() > 700_000 && body.len() < 1 << 20);
    let asked = || upstream.recorded().iter().filter(|r| r.uri.path().starts_with("/api/v1/accounts")).count();
    let before = asked();
    let unsigned =
        http::Request::post("/inbox").header("host", LOCAL).body(Full::new(Bytes::from(body.clone()))).unwrap();
    assert_eq!(send_from(ip("127.0.0.94"), pavise.addr, unsigned).await.0.status, 202, "the instance's to refuse");
    assert!(at_instance(&upstream, &body));
    assert_eq!(asked(), before, "no lookup");

    let addressed_to = |actor: &str, cc: Vec<String>, marker: &str| {
        serde_json::json!({"@context": "https://www.w3.org/ns/activitystreams", "id": format!("{actor}/{marker}"),
            "type": "Create", "actor": actor, "cc": cc,
            "object": {"id": format!("{actor}/{marker}/note"), "type": "Note", "content": marker}})
        .to_string()
        .into_bytes()
    };
    // Signed: alice named after 6,000 other addressees, past what pavise reads.
    let actor = trolls.actor("buried");
    let mut cc = many(6_000);
    cc.push(format!("https://{LOCAL}/users/alice"));
    let body = addressed_to(&actor, cc, "buried");
    let (resp, _) = deliver(&pavise, "127.0.0.93", key, &actor, &body, MASTODON_UA).await;
    assert_eq!(resp.status, 429, "what pavise does not read is held back from the shielded member");
    // Signed, to nobody here but 50,000 others: a hellthread, deferred.
    let actor = trolls.actor("hell");
    let body = addressed_to(&actor, many(50_000), "hell");
    assert_eq!(deliver(&pavise, "127.0.0.93", key, &actor, &body, MASTODON_UA).await.0.status, 429);
    let report = admin_get(&pavise, "/admin/shield").await;
    assert_eq!(report["totals"]["unverified_by_reason"]["unsigned"], 1, "{report}");
    pavise.stop().await;
}

/// A loopback HTTP server that answers every request 404 after `delay`, counting the
/// requests and the most it had in flight at once.
async fn slow_server(ip: &str, delay: Duration) -> (SocketAddr, Arc<AtomicU64>, Arc<AtomicU64>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (total, peak, now) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (t, p) = (total.clone(), peak.clone());
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let (t, p, now) = (t.clone(), p.clone(), now.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                t.fetch_add(1, Ordering::SeqCst);
                let running = now.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(running, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                now.fetch_sub(1, Ordering::SeqCst);
                let _ =
                    conn.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
            });
        }
    });
    (addr, total, peak)
}

/// F6: a client that sends keyIds of its choosing spends its own budget, and a keyId host
/// its own: past them nothing is fetched; a fetch follows at most four requests however
/// the host redirects; a slow host ties up at most a few fetches, and a real first-time
/// sender is verified meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_fetches_are_budgeted_per_client_and_per_host() {
    let key = rsa_key(0);
    let upstream = RecordingUpstream::with_handler(|_| text(202, "")).await;
    let policy_dir = tempfile::tempdir().unwrap();
    policies(policy_dir.path(), &WAVE3.replace(r#"shield_for = "10m""#, r#"shield_for = "2s""#));
    let pavise = start_with(&upstream, policy_dir.path(), |f| {
        f.shield.key_fetches_per_client = "3/min".into();
        f.shield.key_fetches_per_host = "5/min".into();
    })
    .await;
    // A keyId host that redirects every request to another path on itself, forever.
    let looping = ActorServer::serving(
        "127.0.0.95",
        Arc::new(|_, path| {
            let mut r = text(302, "");
            r.headers_mut().insert("location", format!("{path}/r").parse().unwrap());
            r
        }),
    )
    .await;
    let send = |from: &'static str, i: usize| {
        let (pavise, looping) = (&pavise, &looping);
        async move {
            let actor = looping.actor(&format!("k{from}-{i}"));
            let body = note(&actor, &["alice"], &format!("loop{from}-{i}"));
            let (resp, _) = deliver(pavise, from, key, &actor, &body, MASTODON_UA).await;
            resp.status.as_u16()
        }
    };
    let mut first = Vec::new();
    for i in 0..5 {
        first.push(send("127.0.0.96", i).await);
    }
    assert_eq!(first, [202, 202, 202, 429, 429], "three fetches for this client, then come back later");
    assert_eq!(looping.fetches(), 3 * 4, "four requests per fetch at most");
    let mut second = Vec::new();
    for i in 0..3 {
        second.push(send("127.0.0.97", i).await);
    }
    assert_eq!(second, [202, 202, 429], "five fetches to this host in all");
    assert_eq!(looping.fetches(), 5 * 4);
    // Whoever spent the host's budget cannot keep a delivery out: `shield_for` after its
    // first attempt it is held (and goes to the instance, which verifies it itself).
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(send("127.0.0.97", 2).await, 202, "held once turned away for shield_for");
    assert_eq!(looping.fetches(), 5 * 4, "and still no fetch past the budget");

    // A slow keyId host: one client's deliveries tie up four fetches at most, the rest
    // are told at once to come back; a real sender meanwhile is verified.
    let (slow, total, peak) = slow_server("127.0.0.98", Duration::from_secs(1)).await;
    let mut stuck = Vec::new();
    for i in 0..6 {
        let actor = format!("http://{slow}/users/s{i}");
        let body = note(&actor, &["alice"], &format!("slow{i}"));
        let req = signed(key, &format!("{actor}#main-key"), "/inbox", &body, MASTODON_UA);
        stuck.push(tokio::spawn(send_from(ip("127.0.0.99"), pavise.addr, req)));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let friends = ActorServer::start("127.0.0.100", key).await;
    let friend = friends.actor("first-time");
    let (resp, _) =
        deliver(&pavise, "127.0.0.100", key, &friend, &note(&friend, &["bob"], "first-time"), MASTODON_UA).await;
    assert_eq!(resp.status, 202);
    let report = admin_get(&pavise, "/admin/shield").await;
    assert_eq!(report["totals"]["signatures_verified"], 1, "verified while the slow host holds fetches: {report}");
    let mut statuses = Vec::new();
    for s in stuck {
        statuses.push(s.await.unwrap().0.status.as_u16());
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [202, 202, 202, 429, 429, 429], "three per client (and four at once at most)");
    assert!(peak.load(Ordering::SeqCst) <= 4 && total.load(Ordering::SeqCst) <= 3, "{total:?} {peak:?}");
    pavise.stop().await;
}

/// F7: one domain's actors count in full only up to `per_domain`; no shield outlives
/// `max_shield`; and no delivery is deferred longer than `shield_for` from its first
/// attempt, however the shield is kept up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_domain_cannot_keep_a_member_shielded_and_deferred_mail_gets_through() {
    let key = rsa_key(0);
    let upstream = RecordingUpstream::with_handler(|_| text(202, "")).await;
    let policy_dir = tempfile::tempdir().unwrap();
    // One domain, with the default per_domain (half of distinct_senders: 1): four quarters
    // for its first actor, one for each further one; 12 quarters is the threshold.
    policies(
        policy_dir.path(),
        "[wave]\ndistinct_senders = 3\nfamiliar_after = \"1h\"\nshield_for = \"10m\"\nhellthread = 0\n",
    );
    let pavise = start(&upstream, policy_dir.path()).await;
    let trolls = ActorServer::start("127.0.0.101", key).await;
    let statuses = raise_wave(&pavise, &trolls, "127.0.0.101", "mint", 10, "alice").await;
    assert_eq!(statuses, [&[202u16; 9][..], &[429]].concat(), "nine actors of one domain are not a wave; the tenth is");
    pavise.stop().await;

    policies(
        policy_dir.path(),
        "[wave]\ndistinct_senders = 3\nper_domain = 10\nfamiliar_after = \"1h\"\nshield_for = \"2s\"\nmax_shield = \"3s\"\nhellthread = 0\n",
    );
    let pavise = start(&upstream, policy_dir.path()).await;
    let minted = ActorServer::start("127.0.0.102", key).await;
    let started = Instant::now();
    raise_wave(&pavise, &minted, "127.0.0.102", "a", 4, "alice").await;
    let source = ActorServer::start("127.0.0.103", key).await;
    let journalist = source.actor("journalist");
    let mail = note(&journalist, &["alice"], "please-read");
    let retry = || signed(key, &format!("{journalist}#main-key"), "/inbox", &mail, MASTODON_UA);
    assert_eq!(send_from(ip("127.0.0.103"), pavise.addr, retry()).await.0.status, 429);
    let first_deferral = Instant::now();
    // Fresh waves keep coming, keeping the shield up (as long as max_shield lets them).
    for (round, prefix) in ["b", "c"].iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(500)).await;
        raise_wave(&pavise, &minted, "127.0.0.102", prefix, 5, "alice").await;
        assert!(!admin_get(&pavise, "/admin/shield").await["shields"].as_array().unwrap().is_empty(), "{round}");
    }
    assert_eq!(send_from(ip("127.0.0.103"), pavise.addr, retry()).await.0.status, 429, "still deferred");
    tokio::time::sleep(Duration::from_millis(2100).saturating_sub(first_deferral.elapsed())).await;
    let report = admin_get(&pavise, "/admin/shield").await;
    assert_eq!(report["shields"][0]["account"], "alice", "{report}");
    assert!(report["shields"][0]["at_most_secs"].as_u64().unwrap() <= 1, "{report}");
    assert_eq!(send_from(ip("127.0.0.103"), pavise.addr, retry()).await.0.status, 202, "deferred long enough");
    assert_eq!(
        report_when(&pavise, "", |r| r["totals"]["passed_after_deferral"] == 1).await["shields"][0]["account"],
        "alice"
    );
    tokio::time::sleep(Duration::from_millis(3400).saturating_sub(started.elapsed())).await;
    raise_wave(&pavise, &minted, "127.0.0.102", "d", 2, "alice").await;
    let report = admin_get(&pavise, "/admin/shield").await;
    assert!(report["shields"].as_array().unwrap().is_empty(), "no shield outlives max_shield: {report}");
    pavise.stop().await;
}

/// F8, N6: familiarity is earned by mail the instance accepted that carried something to a
/// member, twice, apart in time — not by one ping, not by no-ops however well timed (a
/// `Delete` of nothing, a post to nobody), and not by mail the instance refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ops_make_nobody_familiar_and_refused_mail_teaches_nothing() {
    let key = rsa_key(0);
    let upstream = RecordingUpstream::with_handler(|r| {
        if r.body.windows(8).any(|w| w == b"refused-") { text(401, r#"{"error":"no"}"#) } else { text(202, "") }
    })
    .await;
    let policy_dir = tempfile::tempdir().unwrap();
    policies(
        policy_dir.path(),
        "[wave]\ndistinct_senders = 3\nper_domain = 10\nfamiliar_after = \"2s\"\nshield_for = \"10m\"\nhellthread = 0\n",
    );
    let pavise = start(&upstream, policy_dir.path()).await;
    let sleepers = ActorServer::start("127.0.0.104", key).await;
    let friends = ActorServer::start("127.0.0.105", key).await;
    let (friend, refused) = (friends.actor("friend"), friends.actor("refused"));
    // Two rounds, half of familiar_after apart: what would earn familiarity if anything did.
    // A post that tags a member without addressing her, or an `Update` tagging her, counts
    // toward a wave (whether the instance shows it to her pavise cannot see), but is not
    // surely shown to her, so it earns no trust.
    for round in 0..2 {
        for i in 0..8 {
            let a = sleepers.actor(&format!("sleeper{i}"));
            let tag_only = |kind: &str| {
                let mut doc: serde_json::Value =
                    serde_json::from_slice(&note(&a, &[], &format!("tag-{i}-{round}"))).unwrap();
                doc["type"] = kind.into();
                doc["object"]["tag"] =
                    serde_json::json!([{"type": "Mention", "href": format!("https://{LOCAL}/users/member{i}")}]);
                doc.to_string().into_bytes()
            };
            let no_op = match i {
                0..2 => serde_json::json!({"@context": "https://www.w3.org/ns/activitystreams",
                    "id": format!("{a}#ping{round}"), "type": "Delete", "actor": a,
                    "object": format!("{a}/statuses/none{round}")})
                .to_string()
                .into_bytes(),
                2..4 => note(&a, &[], &format!("to-nobody-{i}-{round}")),
                4..6 => tag_only("Create"),
                _ => tag_only("Update"),
            };
            assert_eq!(deliver(&pavise, "127.0.0.104", key, &a, &no_op, MASTODON_UA).await.0.status, 202);
        }
        for (who, marker) in [(&friend, "hello-"), (&refused, "refused-")] {
            let body = note(who, &["bob"], &format!("{marker}{round}"));
            deliver(&pavise, "127.0.0.105", key, who, &body, MASTODON_UA).await;
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let statuses = raise_wave(&pavise, &sleepers, "127.0.0.104", "sleeper", 8, "alice").await;
    assert_eq!(statuses, [202, 202, 202, 429, 429, 429, 429, 429], "no-ops days apart make nobody familiar");
    let mail = note(&friend, &["alice"], "friend-mail");
    assert_eq!(deliver(&pavise, "127.0.0.105", key, &friend, &mail, MASTODON_UA).await.0.status, 202, "familiar");
    let mail = note(&refused, &["alice"], "a-mail");
    assert_eq!(deliver(&pavise, "127.0.0.105", key, &refused, &mail, MASTODON_UA).await.0.status, 429, "refused mail");
    pavise.stop().await;
}

/// F9: without a key, nobody learns whether a member is shielded: unsigned and
/// unverifiable deliveries get the same answer before and after a wave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whether_a_member_is_shielded_cannot_be_probed_without_a_key() {
    let key = rsa_key(0);
    let upstream = RecordingUpstream::with_handler(|_| text(202, "")).await;
    let policy_dir = tempfile::tempdir().unwrap();
    policies(policy_dir.path(), WAVE3);
    let pavise = start(&upstream, policy_dir.path()).await;
    let ghosts = ActorServer::start("127.0.0.106", key).await;
    let probe = |member: &'static str, n: usize| {
        let (pavise, ghosts) = (&pavise, &ghosts);
        async move {
            let body = note("https://nobody.example/u", &[member], &format!("probe-{member}{n}"));
            let unsigned =
                http::Request::post("/inbox").header("host", LOCAL).body(Full::new(Bytes::from(body))).unwrap();
            let (a, _) = send_from(ip("127.0.0.107"), pavise.addr, unsigned).await;
            let actor = ghosts.actor(&format!("ghost-{member}{n}"));
            let body = note(&actor, &[member], &format!("ghost-{member}{n}"));
            let (b, _) = deliver(pavise, "127.0.0.107", key, &actor, &body, MASTODON_UA).await;
            let shape = |p: &http::response::Parts| {
                (p.status.as_u16(), p.headers.contains_key("retry-after"), p.headers.contains_key("x-ratelimit-limit"))
            };
            (shape(&a), shape(&b))
        }
    };
    let before = (probe("alice", 0).await, probe("bob", 0).await);
    let trolls = ActorServer::start("127.0.0.108", key).await;
    raise_wave(&pavise, &trolls, "127.0.0.108", "troll", 4, "alice").await;
    let after = (probe("alice", 1).await, probe("bob", 1).await);
    assert_eq!(before, after);
    assert_eq!(before.0, ((202, false, false), (202, false, false)));
    pavise.stop().await;
}

/// F10: a hellthread held for a short-retry sender goes out when its deferral ends, not at
/// the next housekeeping pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hellthread_is_not_released_early_for_its_user_agent() {
    let key = rsa_key(0);
    let upstream = RecordingUpstream::with_handler(|_| text(202, "")).await;
    let policy_dir = tempfile::tempdir().unwrap();
    policies(
        policy_dir.path(),
        "[wave]\ndistinct_senders = 100\nshield_for = \"2s\"\nhellthread = 3\nretry_after = \"1s\"\n",
    );
    let pavise = start(&upstream, policy_dir.path()).await;
    let remote = ActorServer::start("127.0.0.109", key).await;
    let spammer = remote.actor("spammer");
    let crowd: Vec<String> = (0..30).map(|i| format!("https://r{i}.example/users/u")).collect();
    let held = note_to(&spammer, &crowd, "hell-gts");
    let started = Instant::now();
    assert_eq!(deliver(&pavise, "127.0.0.109", key, &spammer, &held, GTS_UA).await.0.status, 202);
    let other = note_to(&spammer, &crowd, "hell-mastodon");
    assert_eq!(deliver(&pavise, "127.0.0.109", key, &spammer, &other, MASTODON_UA).await.0.status, 429);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(!at_instance(&upstream, &held), "six housekeeping passes later, still held");
    report_when(&pavise, "the hellthread is released when its deferral ends", |r| r["totals"]["released"] == 1).await;
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert!(at_instance(&upstream, &held));
    pavise.stop().await;
}

/// Minor: a pile-on of Follows, Likes or boosts on one member counts and is deferred like
/// mentions; numeric ids are looked up for verified deliveries only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pile_ons_count_like_mentions_and_unverified_ids_cost_no_lookups() {
    let key = rsa_key(0);
    let upstream = RecordingUpstream::with_handler(|r| match r.uri.path() {
        "/api/v1/statuses/77" => text(200, r#"{"id":"77","account":{"id":"1","username":"alice","acct":"alice"}}"#),
        "/api/v1/statuses/88" => text(200, r#"{"id":"88","account":{"id":"2","username":"bob","acct":"bob"}}"#),
        _ => text(202, ""),
    })
    .await;
    let policy_dir = tempfile::tempdir().unwrap();
    policies(policy_dir.path(), WAVE3);
    let pavise = start(&upstream, policy_dir.path()).await;
    let lookups = || {
        let asked = |r: &&crate::support::Recorded| {
            ["/api/v1/accounts", "/api/v1/statuses"].iter().any(|p| r.uri.path().starts_with(p))
        };
        upstream.recorded().iter().filter(asked).count()
    };

    // Unverified deliveries naming accounts by id: held or forwarded, never looked up.
    let ghosts = ActorServer::start("127.0.0.110", key).await;
    for i in 0..3 {
        let ids = [format!("https://{LOCAL}/ap/users/{}", 1000 + i)];
        let unsigned = http::Request::post("/inbox")
            .header("host", LOCAL)
            .body(Full::new(Bytes::from(note_to("https://x.example/u", &ids, &format!("u{i}")))))
            .unwrap();
        send_from(ip("127.0.0.111"), pavise.addr, unsigned).await;
        let actor = ghosts.actor(&format!("ghost{i}"));
        deliver(&pavise, "127.0.0.111", key, &actor, &note_to(&actor, &ids, &format!("g{i}")), MASTODON_UA).await;
    }
    assert_eq!(lookups(), 0, "{:?}", upstream.recorded().iter().map(|r| r.uri.clone()).collect::<Vec<_>>());

    let fans = ActorServer::start("127.0.0.112", key).await;
    let activity = |actor: &str, kind: &str, object: &str| {
        serde_json::json!({"@context": "https://www.w3.org/ns/activitystreams", "id": format!("{actor}/{kind}"),
            "type": kind, "actor": actor, "object": object})
        .to_string()
        .into_bytes()
    };
    let mut follows = Vec::new();
    for i in 0..4 {
        let a = fans.actor(&format!("follower{i}"));
        let body = activity(&a, "Follow", &format!("https://{LOCAL}/users/alice"));
        follows.push(deliver(&pavise, "127.0.0.112", key, &a, &body, MASTODON_UA).await.0.status.as_u16());
    }
    assert_eq!(follows, [202, 202, 202, 429], "a Follow pile-on raises the shield");
    for (kind, object, expect) in [
        ("Like", format!("https://{LOCAL}/users/nobody/statuses/77"), 429),
        ("Announce", format!("https://{LOCAL}/@alice/77"), 429),
        ("Like", format!("https://{LOCAL}/users/alice/statuses/88"), 202),
    ] {
        let a = fans.actor(&format!("{kind}-{expect}"));
        let status = deliver(&pavise, "127.0.0.112", key, &a, &activity(&a, kind, &object), MASTODON_UA).await.0.status;
        assert_eq!(status, expect, "{kind} of {object} (the post's owner is asked of the instance)");
    }
    assert!(lookups() >= 2, "verified deliveries are looked up");
    // A lookup a delivery caused carries the sender's pseudonym, so the instance's own
    // throttles count it (from loopback without one, Rack::Attack would exempt it).
    let caused = |r: &&crate::support::Recorded| {
        ["/api/v1/accounts", "/api/v1/statuses"].iter().any(|p| r.uri.path().starts_with(p))
    };
    for r in upstream.recorded().iter().filter(caused) {
        let xff = r.headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()).unwrap_or("");
        assert!(xff.starts_with("2001:db8:"), "{} went without the pseudonym: {xff:?}", r.uri);
    }
    pavise.stop().await;
}

mod reach;
