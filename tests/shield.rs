//! The shield, end to end on loopback: real signed deliveries (RSA-SHA256, draft-cavage,
//! as Mastodon signs them) through pavise to a recording instance, with the senders'
//! actor documents served by local actor servers that pavise's key fetcher reaches.
//! Each "remote domain" is its own loopback address (127.0.0.2, .3, ...).

use std::{
    collections::HashSet,
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    path::Path,
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use pavise::{shield::KeyFetchMode, units::Span};
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};

use crate::support::{Pavise, RecordingUpstream, send_from, text};

const LOCAL: &str = "local.example";

/// An RSA key pair made once per test run with `openssl genpkey` (ring cannot generate
/// RSA keys), plus its SPKI PEM as actors publish it.
struct TestKey {
    pair: RsaKeyPair,
    pem: String,
}

fn rsa_key(slot: usize) -> &'static TestKey {
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

/// A remote server on its own loopback address: serves `GET /users/NAME` as an actor
/// document with `key`'s public half.
struct ActorServer {
    addr: SocketAddr,
    fetches: Arc<std::sync::atomic::AtomicU64>,
    stop: tokio_util::sync::CancellationToken,
}

impl ActorServer {
    async fn start(ip: &str, key: &'static TestKey) -> ActorServer {
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fetches = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stop = tokio_util::sync::CancellationToken::new();
        let (count, token) = (fetches.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    _ = token.cancelled() => return,
                    a = listener.accept() => a.unwrap(),
                };
                let count = count.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: http::Request<Incoming>| {
                        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let actor = format!("http://{addr}{}", req.uri().path());
                        let doc = serde_json::json!({
                            "@context": ["https://www.w3.org/ns/activitystreams", "https://w3id.org/security/v1"],
                            "id": actor, "type": "Person", "inbox": format!("{actor}/inbox"),
                            "publicKey": { "id": format!("{actor}#main-key"), "owner": actor, "publicKeyPem": key.pem },
                        });
                        async move { Ok::<_, Infallible>(text(200, &doc.to_string())) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        ActorServer { addr, fetches, stop }
    }

    fn actor(&self, name: &str) -> String {
        format!("http://{}/users/{name}", self.addr)
    }
}

impl Drop for ActorServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A Create/Note from `actor` mentioning the local `accounts`, with a unique marker.
fn note(actor: &str, accounts: &[&str], marker: &str) -> Vec<u8> {
    let mentions: Vec<String> = accounts.iter().map(|a| format!("https://{LOCAL}/users/{a}")).collect();
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

/// A delivery signed the way Mastodon signs: `(request-target) host date digest content-type`.
fn signed(key: &TestKey, key_id: &str, path: &str, body: &[u8], user_agent: &str) -> http::Request<Full<Bytes>> {
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    let digest = format!(
        "SHA-256={}",
        base64::engine::general_purpose::STANDARD.encode(ring::digest::digest(&ring::digest::SHA256, body))
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

/// Delivers `body` to `/inbox`, signed with `key` as `actor`'s main key, from the
/// loopback address `from` (each test "domain" has its own).
async fn deliver(
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

fn policies(dir: &Path, text: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("shield.toml"), text).unwrap();
}

async fn start(upstream: &RecordingUpstream, policy_dir: &Path) -> Pavise {
    let dir = policy_dir.to_owned();
    Pavise::start(&upstream.url(), move |f| {
        f.policies = dir;
        f.local_domain = Some(LOCAL.to_owned());
        f.shield.key_fetch = KeyFetchMode::Direct;
        // The test's "remote servers" are loopback addresses.
        f.shield.key_fetch_allow_private = true;
        f.shield.housekeeping = Span(Duration::from_millis(200));
    })
    .await
}

async fn admin_get(p: &Pavise, path: &str) -> serde_json::Value {
    let client = reqwest::Client::new();
    let resp = client.get(p.admin_url(path)).bearer_auth(&p.token).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wave_defers_strangers_passes_friends_and_loses_nothing() {
    const SENDERS: usize = 200;
    const THRESHOLD: usize = 20;
    let key = rsa_key(0);
    let upstream = RecordingUpstream::with_handler(|_| text(202, "")).await;
    let policy_dir = tempfile::tempdir().unwrap();
    policies(
        policy_dir.path(),
        r#"
[wave]
window             = "10m"
distinct_senders   = 20
familiar_after     = "2s"
shield_for         = "5s"
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
    let mastodon_ua = "http.rb/5.2.0 (Mastodon/4.3.0; +https://remote.example/)";

    // A friend delivers before the wave (no mentions), and becomes familiar.
    let friend = friends.actor("friend");
    let (resp, _) = deliver(&pavise, "127.0.0.4", key, &friend, &note(&friend, &[], "hello"), mastodon_ua).await;
    assert_eq!(resp.status, 202);
    tokio::time::sleep(Duration::from_millis(2300)).await;

    // The wave: 200 fresh actors mention alice.
    let mut deferred = Vec::new();
    let mut passed = 0;
    for i in 0..SENDERS {
        let actor = trolls.actor(&format!("troll{i}"));
        let body = note(&actor, &["alice"], &format!("troll{i}"));
        let (resp, _) = deliver(&pavise, "127.0.0.3", key, &actor, &body, mastodon_ua).await;
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
    let (resp, _) = deliver(&pavise, "127.0.0.4", key, &friend, &friend_note, mastodon_ua).await;
    assert_eq!(resp.status, 202, "a familiar sender passes the shield");
    let troll = trolls.actor("troll7");
    let to_bob = note(&troll, &["bob"], "troll7-to-bob");
    let (resp, _) = deliver(&pavise, "127.0.0.3", key, &troll, &to_bob, mastodon_ua).await;
    assert_eq!(resp.status, 202, "deliveries to other members pass");

    // A GoToSocial sender in the wave: accepted (202) and held, not yet at the instance.
    let gts_actor = gts.actor("gts");
    let gts_body = note(&gts_actor, &["alice"], "from-gotosocial");
    let gts_req = signed(
        key,
        &format!("{gts_actor}#main-key"),
        "/users/alice/inbox",
        &gts_body,
        "gotosocial/0.17.3 (+https://gts.example/)",
    );
    let gts_headers = gts_req.headers().clone();
    let (resp, _) = send_from(ip("127.0.0.5"), pavise.addr, gts_req).await;
    assert_eq!(resp.status, 202);
    assert!(!upstream.recorded().iter().any(|r| r.body == gts_body), "held, not forwarded during the wave");

    let report = admin_get(&pavise, "/admin/shield").await;
    assert_eq!(report["shields"][0]["account"], "alice", "{report}");
    assert_eq!(report["held"].as_array().unwrap().len(), 1, "{report}");
    assert_eq!(report["totals"]["deferred"], (SENDERS - THRESHOLD) as u64, "{report}");
    assert_eq!(report["targets"][0]["name"], "alice", "{report}");
    assert_eq!(report["top_offending_domains"][0]["name"], "127.0.0.3", "{report}");

    // The wave subsides (no new senders for shield_for): the held delivery reaches the
    // instance from the quarantine, bytes and signed headers unchanged.
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
        let (resp, _) = deliver(&pavise, "127.0.0.3", key, actor, body, mastodon_ua).await;
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
    // hello + 200 trolls + friend + bob + the held one.
    assert_eq!(at_instance.len(), 1 + SENDERS + 1 + 1 + 1);
    let report = admin_get(&pavise, "/admin/shield").await;
    assert!(report["held"].as_array().unwrap().is_empty(), "{report}");
    assert_eq!(report["audit"][0]["action"], "released", "{report}");
    // One key fetch per actor, not per delivery.
    assert_eq!(trolls.fetches.load(std::sync::atomic::Ordering::Relaxed), SENDERS as u64);
    pavise.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_a_member_follows_pass_the_wave_even_when_new() {
    const THRESHOLD: usize = 5;
    let key = rsa_key(0);
    let trolls = ActorServer::start("127.0.0.3", key).await;
    let friends = ActorServer::start("127.0.0.4", key).await;
    // Both friends are as new as the trolls; the member follows them.
    let accepted = friends.actor("accepted");
    let listed = friends.actor("listed");
    // The instance: alice's public following collection, two pages (as Mastodon serves
    // it: the collection points at its first page, pages link onwards with absolute URLs).
    let collection_listed = listed.clone();
    let upstream = RecordingUpstream::with_handler(move |r| match r.uri.path_and_query().map(|p| p.as_str()) {
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
        Some("/users/alice/following?page=2") => text(
            200,
            &serde_json::json!({ "type": "OrderedCollectionPage", "orderedItems": [collection_listed] }).to_string(),
        ),
        _ => text(202, ""),
    })
    .await;
    let policy_dir = tempfile::tempdir().unwrap();
    policies(
        policy_dir.path(),
        r#"
[wave]
window           = "10m"
distinct_senders = 5
familiar_after   = "1h"
shield_for       = "1m"
hellthread       = 0
"#,
    );
    let pavise = start(&upstream, policy_dir.path()).await;
    let ua = "http.rb/5.2.0 (Mastodon/4.3.0; +https://remote.example/)";

    // alice follows `accepted`; its server answers with an Accept, signed.
    let accept = serde_json::json!({
        "@context": "https://www.w3.org/ns/activitystreams",
        "id": format!("{accepted}#accepts/follows/1"), "type": "Accept", "actor": accepted,
        "object": {
            "id": format!("https://{LOCAL}/3f2a"), "type": "Follow",
            "actor": format!("https://{LOCAL}/users/alice"), "object": accepted,
        },
    });
    let (resp, _) = deliver(&pavise, "127.0.0.4", key, &accepted, accept.to_string().as_bytes(), ua).await;
    assert_eq!(resp.status, 202);

    // The wave: strangers mention alice until the shield goes up.
    for i in 0..=THRESHOLD {
        let actor = trolls.actor(&format!("troll{i}"));
        let (resp, _) =
            deliver(&pavise, "127.0.0.3", key, &actor, &note(&actor, &["alice"], &format!("troll{i}")), ua).await;
        assert_eq!(resp.status, if i < THRESHOLD { 202 } else { 429 }, "troll{i}");
    }
    // Raising the shield read alice's following collection from the instance, both pages.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !upstream.recorded().iter().any(|r| r.uri.query() == Some("page=2")) {
        assert!(Instant::now() < deadline, "the following collection was never read");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let read = upstream.recorded().into_iter().find(|r| r.uri.path() == "/users/alice/following").unwrap();
    assert_eq!(read.headers["host"], LOCAL);
    assert_eq!(read.headers["accept"], "application/activity+json");
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Followed (by Accept, and by the instance's collection): both pass to alice.
    for (actor, marker) in [(&accepted, "from-accepted"), (&listed, "from-listed")] {
        let (resp, _) = deliver(&pavise, "127.0.0.4", key, actor, &note(actor, &["alice"], marker), ua).await;
        assert_eq!(resp.status, 202, "{marker}: a sender alice follows passes her shield");
    }
    // A stranger is still deferred, and so is a follow claimed by the wrong actor.
    let troll = trolls.actor("troll99");
    let forged = serde_json::json!({
        "type": "Accept", "actor": troll,
        "object": { "type": "Follow", "actor": format!("https://{LOCAL}/users/alice"), "object": accepted },
    });
    let (resp, _) = deliver(&pavise, "127.0.0.3", key, &troll, forged.to_string().as_bytes(), ua).await;
    assert_eq!(resp.status, 202, "an Accept mentions nobody: it passes, and teaches nothing");
    let (resp, _) = deliver(&pavise, "127.0.0.3", key, &troll, &note(&troll, &["alice"], "troll99"), ua).await;
    assert_eq!(resp.status, 429, "a stranger is still deferred");

    let report = admin_get(&pavise, "/admin/shield").await;
    assert_eq!(report["totals"]["follows_learned"], 1, "{report}");
    assert_eq!(report["totals"]["passed_as_followed"], 2, "{report}");
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
    assert!(metrics.contains("pavise_shield_signatures_total{result=\"verified\"} 4"), "{metrics}");
    pavise.stop().await;
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
    let ua = "http.rb/5.2.0 (Mastodon/4.3.0; +https://remote.example/)";
    let send = |body: Vec<u8>| signed(key, &key_id, "/inbox", &body, ua);

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
