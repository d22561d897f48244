//! Signature checks against Mastodon's rules, with a fixed RSA test key (made once with
//! `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048`; test-only, never used
//! to sign anything real).

#![allow(clippy::unwrap_used)]

use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};

use super::*;
use crate::shield::keys::ActorKey;

/// The test key's PKCS#8 DER, base64 in lines.
const TEST_KEY_PKCS8: [&str; 17] = [
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDKC0xHWUaO0gGMxhA/m5ug17ATRfoKd51RPtPkgVLI/6WDsaQy",
    "0NQL6hjGqzlzmk75+cztafz0D9sQn/ee3fvvZNomaZxJtjZCQkkVXJux+BZ4aHSaEtoLn8WpiGO4RBdwH8zfJw9Ontroo/5z6t2/",
    "DxmXzOpdSrssBkZLxxxzlZC7udOQXWuaKmBQSzBaiTJoAm7OKzlggCoEcYDxZgfsNf7ZnP1ZaJCEUyvM4UP89hk0fy94mV8j2ONH",
    "dS3kmy+YPIDfvT/7Am4bXfNAVslP2X9ZLk39vHBDrhYJjSRbL/1g4Ye8klhb7cNBqAfFRoNx3ocOcNq0ea98z9MdsKTjAgMBAAEC",
    "ggEACG8TsymOXb+opRqb3gcRJlP3Ye6UKYpLTMA3JYnVp1Wu/PU8efFbdwqoF+iMDUyd/fOH/7CvbvUXrpt6Di2NBGkgB0xCsMie",
    "F89fI2wKUcUERxvXiWdYQI9d6tEQyV9wrQaezWfhGZj2+vdLIJKayNlvNsKs7wUDrpEUFe2AI6QoX7yFnoHmh3JRVOSvNv4COg75",
    "SfDNYVQ3sSdcrMEqq78WMIHHer3BI2v6i9yQV9NC9mGztoMR6rYlJyeIcVj6OouPgORgSYgEl0vIAGXrUFf1Tu9UD9nQgLUxNZob",
    "kIv9JmSdOlt8HAoM3/PrTLMPiFTSgr8dlNDVkDWux5YgLQKBgQDm2aLyy2doWutQJWhCcUKmz3VmrvuGa/ECBMqBWtQv99D1/tDz",
    "X8mJkpimgzg2hgq66XEI9URspHAvKR+ukqX3paMRzJ3BjKnsT8QfwC4fuwFKb0YcwRwmMnrVRYN394jZA/tU0cnUj7HvAUkUju78",
    "WVj/sVGohV8yz1OPxeG6xwKBgQDgDkSHfmILZKxHjhYiWrB2wl7iXKiBcyt3VhqB/wknC48fVSSoe+8fPTwU6oTnNghGjGworsWo",
    "nrbYGV3HesZF3q/jT89YvyZA+Q3YA1MSFTnlkemiO84LMLx9/nwVmkwSnOjawqpW1N/qfDR2APp2PkQAeYUqMuuDWHwRSpEJBQKB",
    "gQCzi7ns1L7Mr0otv6pjYuvQCbLp9layqel9BHTsPtShqkDf0xx47Zs2YMpRV+W0onReA4piyUA6r3qBc56sjGqBPlaiVV6tVtYi",
    "cbe8aiB1lWDfn8QMQTW/j6txjOs/t0q8XxhvU+uCY3Ckz38jejfuFR/fXu5//5uXTSFUxTdXqQKBgB4Oy/LBabXNk68lyKJjODk2",
    "ajRD6fcz1Cj2TCgUZs3uJw01Bu3zcmjmdiD4NUwvW3zbaccrayjr4euru4D/X4oQDdiY5GArhJ5CyzCngYVzg4jgwk8ZZtLpfuAI",
    "O+1J/dqhYju20dNES6XRc9hA2VjzkXve0ZaPrji4rixDrKFhAoGAW7PAB8x4KMja7UewS485zGbWl3dgV2OOk/5x8G3F6K0A1W8f",
    "kvEzEB3kgoSTwMpFST/rzEhEEOUrSjeIk7QXjcuJpeooZME3ym5VqEAo24E9E3h1dGPSC6kL3RUuuTzKpC0+MN8KZ9A4QVpS9EZk",
    "J25Fpq+lvP0mFhJs+wrFXgo=",
];

/// Its public half as actors publish it (SPKI PEM).
pub(crate) const TEST_KEY_PEM: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAygtMR1lGjtIBjMYQP5ub
oNewE0X6CnedUT7T5IFSyP+lg7GkMtDUC+oYxqs5c5pO+fnM7Wn89A/bEJ/3nt37
72TaJmmcSbY2QkJJFVybsfgWeGh0mhLaC5/FqYhjuEQXcB/M3ycPTp7a6KP+c+rd
vw8Zl8zqXUq7LAZGS8ccc5WQu7nTkF1rmipgUEswWokyaAJuzis5YIAqBHGA8WYH
7DX+2Zz9WWiQhFMrzOFD/PYZNH8veJlfI9jjR3Ut5JsvmDyA370/+wJuG13zQFbJ
T9l/WS5N/bxwQ64WCY0kWy/9YOGHvJJYW+3DQagHxUaDcd6HDnDatHmvfM/THbCk
4wIDAQAB
-----END PUBLIC KEY-----\n";

pub(crate) fn test_key() -> RsaKeyPair {
    let der = base64::engine::general_purpose::STANDARD.decode(TEST_KEY_PKCS8.concat()).unwrap();
    RsaKeyPair::from_pkcs8(&der).unwrap()
}

pub(crate) fn rsa_sign(key: &RsaKeyPair, text: &str) -> String {
    let mut sig = vec![0u8; key.public().modulus_len()];
    key.sign(&RSA_PKCS1_SHA256, &ring::rand::SystemRandom::new(), text.as_bytes(), &mut sig).unwrap();
    base64::engine::general_purpose::STANDARD.encode(sig)
}

const ACTOR: &str = "https://r.example/users/a";
const BODY: &[u8] = br#"{"type":"Create","actor":"https://r.example/users/a"}"#;

fn sha256_b64(body: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(ring::digest::digest(&ring::digest::SHA256, body))
}

fn now() -> SystemTime {
    SystemTime::now()
}

/// A Mastodon-style delivery: `(request-target) host date digest content-type`, rsa-sha256.
fn mastodon_delivery(date: SystemTime, body: &[u8], path: &str) -> HeaderMap {
    let date = httpdate::fmt_http_date(date);
    let digest = format!("SHA-256={}", sha256_b64(body));
    let text = format!(
        "(request-target): post {path}\nhost: local.example\ndate: {date}\ndigest: {digest}\ncontent-type: application/activity+json"
    );
    let sig = rsa_sign(&test_key(), &text);
    let mut h = HeaderMap::new();
    h.insert("host", "local.example".parse().unwrap());
    h.insert("date", date.parse().unwrap());
    h.insert("digest", digest.parse().unwrap());
    h.insert("content-type", "application/activity+json".parse().unwrap());
    h.insert(
        "signature",
        format!(
            "keyId=\"{ACTOR}#main-key\",algorithm=\"rsa-sha256\",headers=\"(request-target) host date digest content-type\",signature=\"{sig}\""
        )
        .parse()
        .unwrap(),
    );
    h
}

struct Fixed(std::sync::Mutex<String>, std::sync::atomic::AtomicU64);

impl Fixed {
    fn new(pem: &str) -> Arc<Fixed> {
        Arc::new(Fixed(std::sync::Mutex::new(pem.to_owned()), Default::default()))
    }
    fn fetches(&self) -> u64 {
        self.1.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl KeyFetcher for Fixed {
    fn fetch<'a>(&'a self, _key_id: &'a str) -> crate::proxy::StageFuture<'a, Result<ActorKey, ShieldError>> {
        self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pem = self.0.lock().unwrap().clone();
        Box::pin(async move { Ok(ActorKey { pem, owner: ACTOR.into() }) })
    }
}

async fn verify_with(verifier: &Verifier, h: &HeaderMap, path: &str, body: &[u8], at: SystemTime) -> Verdict {
    let uri: Uri = path.parse().unwrap();
    let by = match parse(h) {
        Ok(by) => by,
        Err(why) => return Verdict::Unverified(why),
    };
    let req = Signed { method: &Method::POST, uri: &uri, headers: h, host: "local.example", https: true, body };
    verifier.verify(&by, &req, at, None).await
}

fn verified() -> Verdict {
    Verdict::Verified { actor: ACTOR.into(), domain: "r.example".into() }
}

#[test]
fn cavage_header_parses_as_mastodon_does() {
    let mut h = HeaderMap::new();
    h.insert(
        "signature",
        r#"keyId="https://Remote.example/users/bob#main-key",algorithm="rsa-sha256",headers="(request-target) Host date digest",signature="AAEC""#
            .parse()
            .unwrap(),
    );
    let by = parse(&h).unwrap();
    assert_eq!(by.domain, "remote.example");
    let Format::Cavage { headers, signature, algorithm, .. } = by.format else { panic!() };
    assert_eq!(headers, ["(request-target)", "host", "date", "digest"]);
    assert_eq!(signature, [0, 1, 2]);
    assert_eq!(algorithm, "rsa-sha256");
    // No algorithm: hs2019, and its default coverage is `(created)`.
    h.insert("signature", r#"keyId="https://r.example/u#k", signature="AAEC""#.parse().unwrap());
    let Format::Cavage { headers, algorithm, .. } = parse(&h).unwrap().format else { panic!() };
    assert_eq!((algorithm.as_str(), headers), ("hs2019", vec!["(created)".to_owned()]));
    // Escapes inside quoted strings, the old "Signature " prefix, unquoted tokens.
    h.insert(
        "signature",
        r#"Signature keyId="https://r.example/u#\k",algorithm=hs2019,signature="AAEC""#.parse().unwrap(),
    );
    assert_eq!(parse(&h).unwrap().key_id, "https://r.example/u#k");
}

#[test]
fn what_mastodon_refuses_is_not_read() {
    for s in [
        "",
        "keyId",
        "keyId=\"",
        "keyId=\"x\",signature=\"!!\"",
        "a=b,c",
        "keyId=\"ftp://x/y\",signature=\"AA==\"",
        // Parameter names are case-sensitive: `keyid` is not `keyId`.
        "keyid=\"https://r.example/u#k\",signature=\"AA==\"",
        // Unsupported algorithm.
        "keyId=\"https://r.example/u#k\",algorithm=\"ed25519\",signature=\"AA==\"",
        // Junk between parameters.
        "keyId=\"https://r.example/u#k\" signature=\"AA==\"",
    ] {
        let mut h = HeaderMap::new();
        h.insert("signature", s.parse().unwrap());
        assert_eq!(parse(&h), Err(Rejection::Malformed), "{s}");
    }
    // Two signatures: which one the instance ends up with is Rack's business, not a guess.
    let mut h = HeaderMap::new();
    h.append("signature", "keyId=\"https://r.example/u#k\",signature=\"AA==\"".parse().unwrap());
    h.append("signature", "keyId=\"https://s.example/u#k\",signature=\"AA==\"".parse().unwrap());
    assert_eq!(parse(&h), Err(Rejection::Malformed));
    // Mastodon reads `Signature` only, not `Authorization: Signature ...`.
    let mut h = HeaderMap::new();
    h.insert("authorization", "Signature keyId=\"https://r.example/u#k\",signature=\"AA==\"".parse().unwrap());
    assert_eq!(parse(&h), Err(Rejection::Unsigned));
    for s in
        ["", "(", "x=(", "x=(\"a\");keyid=\"https://a/b\"", "sig1=(\"@method\");keyid=\"https://a/b\";alg=\"ed25519\""]
    {
        let mut h = HeaderMap::new();
        h.insert("signature-input", s.parse().unwrap());
        h.insert("signature", "x=:AA:".parse().unwrap());
        assert!(parse(&h).is_err(), "{s}");
    }
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
    let Format::Rfc9421 { components, params, signature, created, expires } = by.format else { panic!() };
    assert_eq!(components, ["@method", "@target-uri", "content-digest"]);
    assert!(params.starts_with("(\"@method\""));
    assert_eq!((signature, created, expires), (vec![0, 1, 2], Some(1_700_000_000), None));
}

#[test]
fn the_time_window_is_mastodons() {
    let now = 1_800_000_000;
    // Date only: 5 minutes, plus the hour of clock skew.
    assert!(within_window(Some(now - 64 * 60), None, now));
    assert!(!within_window(Some(now - 66 * 60), None, now));
    // Up to an hour ahead.
    assert!(within_window(Some(now + 59 * 60), None, now));
    assert!(!within_window(Some(now + 61 * 60), None, now));
    // `expires` extends it, but never past 12 hours after `created`.
    assert!(within_window(Some(now - 5 * 3600), Some(now + 3600), now));
    assert!(!within_window(Some(now - 14 * 3600), Some(now + 3600), now));
    // No time at all never expires, so it is not accepted.
    assert!(!within_window(None, None, now));
    assert_eq!(
        (ruby_to_i("1700000000"), ruby_to_i("12abc"), ruby_to_i("x"), ruby_to_i("-5")),
        (1_700_000_000, 12, 0, -5)
    );
    assert_eq!(ruby_to_i("1_000"), 1000);
}

#[tokio::test]
async fn a_mastodon_delivery_verifies_and_each_forgery_fails_for_its_reason() {
    let fetcher = Fixed::new(TEST_KEY_PEM);
    let verifier = Verifier::new(fetcher.clone(), 100, Duration::from_secs(60));
    let good = mastodon_delivery(now(), BODY, "/inbox");
    assert_eq!(verify_with(&verifier, &good, "/inbox", BODY, now()).await, verified());

    // The same signature with another body: the digest no longer matches.
    assert_eq!(
        verify_with(&verifier, &good, "/inbox", b"{\"type\":\"Delete\"}", now()).await,
        Verdict::Unverified(Rejection::Digest)
    );
    // Another body with its own digest under the old signature: the signature fails.
    let mut swapped = good.clone();
    swapped.insert("digest", format!("SHA-256={}", sha256_b64(b"{}")).parse().unwrap());
    assert_eq!(
        verify_with(&verifier, &swapped, "/inbox", b"{}", now()).await,
        Verdict::Unverified(Rejection::BadSignature)
    );
    // Another inbox: (request-target) is covered.
    assert_eq!(
        verify_with(&verifier, &good, "/users/bob/inbox", BODY, now()).await,
        Verdict::Unverified(Rejection::BadSignature)
    );
    // Stale: signed 2 hours ago, or checked 2 hours later.
    let old = mastodon_delivery(now() - Duration::from_secs(7200), BODY, "/inbox");
    assert_eq!(verify_with(&verifier, &old, "/inbox", BODY, now()).await, Verdict::Unverified(Rejection::Stale));
    assert_eq!(
        verify_with(&verifier, &good, "/inbox", BODY, now() + Duration::from_secs(7200)).await,
        Verdict::Unverified(Rejection::Stale)
    );
    // A Date that is not an HTTP date.
    let mut bad_date = good.clone();
    bad_date.insert("date", "yesterday".parse().unwrap());
    assert_eq!(verify_with(&verifier, &bad_date, "/inbox", BODY, now()).await, Verdict::Unverified(Rejection::Stale));
    // No digest, and a Digest with only other algorithms.
    let mut no_digest = good.clone();
    no_digest.remove("digest");
    assert_eq!(verify_with(&verifier, &no_digest, "/inbox", BODY, now()).await, Verdict::Unverified(Rejection::Digest));
    let mut md5 = good.clone();
    md5.insert("digest", "MD5=abc".parse().unwrap());
    assert_eq!(verify_with(&verifier, &md5, "/inbox", BODY, now()).await, Verdict::Unverified(Rejection::Digest));
    // A covered `date` with no Date header: no time at all. Mastodon may take it, so it is
    // not "refused", only too weak to count.
    let mut timeless = good.clone();
    timeless.remove("date");
    assert_eq!(verify_with(&verifier, &timeless, "/inbox", BODY, now()).await, Verdict::Unverified(Rejection::Weak));
    // The first fetch, and one more for the first bad signature (the actor might have
    // rotated its key); the stale, digest and coverage failures cost none: cheap checks
    // come before the key.
    assert_eq!(fetcher.fetches(), 2);
}

#[test]
fn only_what_the_instance_refuses_is_called_refused() {
    let refused: Vec<Rejection> = Rejection::ALL.into_iter().filter(|r| r.instance_refuses()).collect();
    assert_eq!(
        refused,
        [Rejection::Unsigned, Rejection::Stale, Rejection::Digest, Rejection::ForeignHost, Rejection::DomainBlocked]
    );
}

#[tokio::test]
async fn a_fetch_the_budget_does_not_admit_is_not_cached_as_a_failure() {
    let fetcher = Fixed::new(TEST_KEY_PEM);
    let budget =
        crate::shield::budget::FetchBudget::new((1, Duration::from_secs(3600)), (100, Duration::from_secs(60)));
    let verifier = Verifier::new(fetcher.clone(), 100, Duration::from_secs(60)).with_budget(budget);
    let good = mastodon_delivery(now(), BODY, "/inbox");
    let uri: Uri = "/inbox".parse().unwrap();
    let by = parse(&good).unwrap();
    let req =
        Signed { method: &Method::POST, uri: &uri, headers: &good, host: "local.example", https: true, body: BODY };
    // Client 1 spends its one fetch on another key; client 1 again: not admitted.
    let mut other = good.clone();
    other.insert("signature", good["signature"].to_str().unwrap().replace("#main-key", "#other").parse().unwrap());
    let other_by = parse(&other).unwrap();
    assert_ne!(verifier.verify(&other_by, &req, now(), Some(1)).await, Verdict::Unverified(Rejection::FetchRefused));
    assert_eq!(verifier.verify(&by, &req, now(), Some(1)).await, Verdict::Unverified(Rejection::FetchRefused));
    // Another client's delivery of the same key is fetched: nothing bad was cached.
    assert_eq!(verifier.verify(&by, &req, now(), Some(2)).await, verified());
}

#[tokio::test]
async fn coverage_that_mastodon_or_pavise_requires() {
    let verifier = Verifier::new(Fixed::new(TEST_KEY_PEM), 100, Duration::from_secs(60));
    let date = httpdate::fmt_http_date(now());
    let digest = format!("SHA-256={}", sha256_b64(BODY));
    let sign = |names: &str, algorithm: &str| {
        let mut lines = Vec::new();
        for n in names.split(' ') {
            lines.push(match n {
                "(request-target)" => "(request-target): post /inbox".to_owned(),
                "host" => "host: local.example".to_owned(),
                "date" => format!("date: {date}"),
                "digest" => format!("digest: {digest}"),
                other => panic!("{other}"),
            });
        }
        let sig = rsa_sign(&test_key(), &lines.join("\n"));
        let mut h = HeaderMap::new();
        h.insert("host", "local.example".parse().unwrap());
        h.insert("date", date.parse().unwrap());
        h.insert("digest", digest.parse().unwrap());
        h.insert(
            "signature",
            format!("keyId=\"{ACTOR}#k\",algorithm=\"{algorithm}\",headers=\"{names}\",signature=\"{sig}\"")
                .parse()
                .unwrap(),
        );
        h
    };
    assert_eq!(
        verify_with(&verifier, &sign("(request-target) host date digest", "rsa-sha256"), "/inbox", BODY, now()).await,
        verified()
    );
    assert_eq!(
        verify_with(&verifier, &sign("(request-target) host date digest", "hs2019"), "/inbox", BODY, now()).await,
        verified(),
        "hs2019 with Date"
    );
    for weak in [
        "host date digest",
        "(request-target) date digest",
        "(request-target) host digest",
        "(request-target) host date",
    ] {
        assert_eq!(
            verify_with(&verifier, &sign(weak, "rsa-sha256"), "/inbox", BODY, now()).await,
            Verdict::Unverified(Rejection::Weak),
            "{weak}"
        );
    }
}

#[tokio::test]
async fn hs2019_created_and_expires() {
    let verifier = Verifier::new(Fixed::new(TEST_KEY_PEM), 100, Duration::from_secs(60));
    let digest = format!("SHA-256={}", sha256_b64(BODY));
    let signed = |created: i64, expires: Option<i64>| {
        let mut names = vec!["(request-target)", "host", "(created)"];
        let mut text = format!("(request-target): post /inbox\nhost: local.example\n(created): {created}");
        if let Some(e) = expires {
            names.push("(expires)");
            text.push_str(&format!("\n(expires): {e}"));
        }
        names.push("digest");
        text.push_str(&format!("\ndigest: {digest}"));
        let sig = rsa_sign(&test_key(), &text);
        let mut h = HeaderMap::new();
        h.insert("host", "local.example".parse().unwrap());
        h.insert("digest", digest.parse().unwrap());
        let exp = expires.map(|e| format!(",expires=\"{e}\"")).unwrap_or_default();
        h.insert(
            "signature",
            format!(
                "keyId=\"{ACTOR}#k\",algorithm=\"hs2019\",created=\"{created}\"{exp},headers=\"{}\",signature=\"{sig}\"",
                names.join(" ")
            )
            .parse()
            .unwrap(),
        );
        h
    };
    let t = now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    assert_eq!(verify_with(&verifier, &signed(t, None), "/inbox", BODY, now()).await, verified());
    assert_eq!(
        verify_with(&verifier, &signed(t - 3 * 3600, None), "/inbox", BODY, now()).await,
        Verdict::Unverified(Rejection::Stale)
    );
    assert_eq!(
        verify_with(&verifier, &signed(t - 3 * 3600, Some(t + 3600)), "/inbox", BODY, now()).await,
        verified(),
        "a signed expires keeps it good"
    );
}

#[tokio::test]
async fn rfc9421_verifies_with_its_content_digest() {
    let verifier = Verifier::new(Fixed::new(TEST_KEY_PEM), 100, Duration::from_secs(60));
    let t = now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let signed = |body: &[u8], created: u64| {
        let cd = format!("sha-256=:{}:", sha256_b64(body));
        let params = format!(
            r#"("@method" "@target-uri" "content-digest");created={created};keyid="{ACTOR}#main-key";alg="rsa-v1_5-sha256""#
        );
        let base = format!(
            "\"@method\": POST\n\"@target-uri\": https://local.example/inbox\n\"content-digest\": {cd}\n\"@signature-params\": {params}"
        );
        let mut h = HeaderMap::new();
        h.insert("host", "local.example".parse().unwrap());
        h.insert("content-digest", cd.parse().unwrap());
        h.insert("signature-input", format!("sig1={params}").parse().unwrap());
        h.insert("signature", format!("sig1=:{}:", rsa_sign(&test_key(), &base)).parse().unwrap());
        h
    };
    assert_eq!(verify_with(&verifier, &signed(BODY, t), "/inbox", BODY, now()).await, verified());
    assert_eq!(
        verify_with(&verifier, &signed(BODY, t), "/inbox", b"{}", now()).await,
        Verdict::Unverified(Rejection::Digest)
    );
    assert_eq!(
        verify_with(&verifier, &signed(BODY, t - 7200), "/inbox", BODY, now()).await,
        Verdict::Unverified(Rejection::Stale)
    );
    // Several digests: the sha-256 member is the one compared.
    let mut h = signed(BODY, t);
    let cd = format!("sha-512=:{}:, sha-256=:{}:", sha256_b64(b"x"), sha256_b64(BODY));
    h.insert("content-digest", cd.parse().unwrap());
    // (The signature covered the single-member header, so it fails, but not on the digest.)
    assert_eq!(verify_with(&verifier, &h, "/inbox", BODY, now()).await, Verdict::Unverified(Rejection::BadSignature));
}

#[tokio::test]
async fn a_rotated_key_is_fetched_again_once_a_minute_at_most() {
    let fetcher = Fixed::new("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----");
    let verifier = Verifier::new(fetcher.clone(), 100, Duration::from_secs(3600));
    let h = mastodon_delivery(now(), BODY, "/inbox");
    assert_eq!(
        verify_with(&verifier, &h, "/inbox", BODY, now()).await,
        Verdict::Unverified(Rejection::KeyUnavailable),
        "an unusable key"
    );
    // The failure is cached for a minute (negative TTL): no fetch per forgery.
    for _ in 0..5 {
        verify_with(&verifier, &h, "/inbox", BODY, now()).await;
    }
    assert_eq!(fetcher.fetches(), 1);

    let verifier = Verifier::new(fetcher.clone(), 100, Duration::from_secs(3600));
    *fetcher.0.lock().unwrap() = TEST_KEY_PEM.into();
    assert_eq!(verify_with(&verifier, &h, "/inbox", BODY, now()).await, verified());
    assert_eq!(fetcher.fetches(), 2);
    // A bad signature under a cached key is fetched again once, then not for a minute.
    let mut forged = h.clone();
    let sig = forged["signature"].to_str().unwrap().replace("signature=\"", "signature=\"AAAA");
    forged.insert("signature", sig.parse().unwrap());
    for _ in 0..5 {
        assert_eq!(
            verify_with(&verifier, &forged, "/inbox", BODY, now()).await,
            Verdict::Unverified(Rejection::BadSignature)
        );
    }
    assert_eq!(fetcher.fetches(), 3, "a forger cannot turn bad signatures into fetches");
}

#[test]
fn only_rsa_keys_verify() {
    assert!(PublicKey::from_pem(TEST_KEY_PEM).is_ok());
    let ed25519 = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----";
    assert!(PublicKey::from_pem(ed25519).unwrap_err().to_string().contains("RSA"));
    assert!(PublicKey::from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----").is_err());
    assert!(der_take(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff], 0x30).is_none());
}

#[test]
fn signing_string_matches_mastodon_with_and_without_the_query() {
    let mut h = HeaderMap::new();
    h.insert("host", "local.example".parse().unwrap());
    h.insert("date", "Thu, 26 Nov 2026 13:00:00 GMT".parse().unwrap());
    h.insert(
        "signature",
        r#"keyId="https://r.example/u#k",algorithm="rsa-sha256",headers="(request-target) host date",signature="AA==""#
            .parse()
            .unwrap(),
    );
    let by = parse(&h).unwrap();
    let uri: Uri = "/users/alice/inbox?x=1".parse().unwrap();
    let s = signing_strings(
        &by,
        &Signed { method: &Method::POST, uri: &uri, headers: &h, host: "local.example", https: true, body: b"" },
    )
    .unwrap();
    assert_eq!(
        s,
        [
            "(request-target): post /users/alice/inbox?x=1\nhost: local.example\ndate: Thu, 26 Nov 2026 13:00:00 GMT",
            "(request-target): post /users/alice/inbox\nhost: local.example\ndate: Thu, 26 Nov 2026 13:00:00 GMT"
        ]
    );
}
