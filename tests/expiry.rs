//! Expiry end to end, in-process: pavise in front of a small Mastodon stand-in that keeps
//! statuses, answers the Status JSON Mastodon answers, and (optionally) enforces a delete
//! rate limit the way Mastodon's Rack::Attack does (429 + X-RateLimit-*, no Retry-After).

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::support::{Pavise, Recorded, RecordingUpstream, TestBody, text};

/// The stand-in instance's state.
#[derive(Default)]
struct Masto {
    next_id: u64,
    /// id → (author, status JSON)
    statuses: BTreeMap<String, (String, serde_json::Value)>,
    /// token → username; tokens absent here get 401.
    tokens: BTreeMap<String, String>,
    /// Delete rate limit: (limit, window) and the current window's start and count.
    limit: Option<(u64, Duration)>,
    window: Option<(Instant, u64)>,
    over_limit: u64,
    /// When each deletion landed, and how many had landed in its rate-limit window by then.
    deletes: Vec<(Instant, u64)>,
}

fn json(status: u16, v: &serde_json::Value) -> http::Response<TestBody> {
    let mut r = text(status, &v.to_string());
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    r
}

fn form_or_json(rec: &Recorded) -> BTreeMap<String, String> {
    let ct = rec.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if ct.starts_with("application/json") {
        let v: serde_json::Value = serde_json::from_slice(&rec.body).unwrap_or_default();
        v.as_object()
            .map(|o| {
                o.iter().map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_owned))).collect()
            })
            .unwrap_or_default()
    } else {
        url::form_urlencoded::parse(&rec.body).into_owned().collect()
    }
}

impl Masto {
    fn handle(&mut self, rec: &Recorded) -> http::Response<TestBody> {
        let token = rec
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned);
        let Some(user) = token.as_ref().and_then(|t| self.tokens.get(t)).cloned() else {
            return json(401, &serde_json::json!({"error": "The access token is invalid"}));
        };
        let path = rec.uri.path().to_owned();
        let id = path.strip_prefix("/api/v1/statuses/").map(|rest| rest.split('/').next().unwrap_or("").to_owned());
        match (rec.method.as_str(), id) {
            ("POST", None) if path == "/api/v1/statuses" => {
                let p = form_or_json(rec);
                self.next_id += 1;
                let id = format!("{}", 110_000_000_000 + self.next_id);
                let text = p.get("status").cloned().unwrap_or_default();
                let tags: Vec<serde_json::Value> = text
                    .split_whitespace()
                    .filter_map(|w| w.strip_prefix('#'))
                    .map(|t| serde_json::json!({"name": t.to_lowercase()}))
                    .collect();
                let status = serde_json::json!({
                    "id": id, "created_at": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
                    "visibility": p.get("visibility").cloned().unwrap_or_else(|| "public".into()),
                    "account": {"id": "1", "username": user, "acct": user},
                    "tags": tags, "media_attachments": [], "in_reply_to_id": null,
                    "pinned": false, "favourited": false, "bookmarked": false,
                    "favourites_count": 0, "reblogs_count": 0, "content": text,
                });
                self.statuses.insert(id, (user, status.clone()));
                json(200, &status)
            }
            ("GET", Some(id)) => match self.statuses.get(&id) {
                Some((_, s)) => json(200, s),
                None => json(404, &serde_json::json!({"error": "Record not found"})),
            },
            ("POST", Some(id)) if path.ends_with("/pin") || path.ends_with("/unpin") => {
                let Some((_, s)) = self.statuses.get_mut(&id) else { return text(404, "") };
                s["pinned"] = serde_json::Value::Bool(path.ends_with("/pin"));
                json(200, &s.clone())
            }
            ("DELETE", Some(id)) => {
                let now = Instant::now();
                let mut headers = Vec::new();
                if let Some((limit, period)) = self.limit {
                    let (start, count) = match self.window {
                        Some((start, count)) if now.duration_since(start) < period => (start, count + 1),
                        _ => (now, 1),
                    };
                    self.window = Some((start, count));
                    let reset = std::time::SystemTime::now() + period.saturating_sub(now.duration_since(start));
                    let reset = humantime::format_rfc3339_micros(reset).to_string();
                    if count > limit {
                        self.over_limit += 1;
                        let mut r = json(429, &serde_json::json!({"error": "Too many requests"}));
                        r.headers_mut().insert("x-ratelimit-limit", limit.into());
                        r.headers_mut().insert("x-ratelimit-remaining", 0.into());
                        r.headers_mut().insert("x-ratelimit-reset", reset.parse().unwrap());
                        return r;
                    }
                    headers = vec![
                        ("x-ratelimit-limit", limit.to_string()),
                        ("x-ratelimit-remaining", (limit - count).to_string()),
                        ("x-ratelimit-reset", reset),
                    ];
                }
                let Some((author, s)) = self.statuses.get(&id).cloned() else {
                    return json(404, &serde_json::json!({"error": "Record not found"}));
                };
                if author != user {
                    return json(403, &serde_json::json!({"error": "This action is not allowed"}));
                }
                self.statuses.remove(&id);
                self.deletes.push((now, self.window.map_or(0, |w| w.1)));
                let mut r = json(200, &s);
                for (k, v) in headers {
                    r.headers_mut().insert(k, v.parse().unwrap());
                }
                r
            }
            ("GET", None) if path == "/api/v1/accounts/verify_credentials" => {
                json(200, &serde_json::json!({"id": format!("id-{user}"), "username": user}))
            }
            ("GET", None) if path == format!("/api/v1/accounts/id-{user}/statuses") => {
                let q: BTreeMap<String, String> =
                    url::form_urlencoded::parse(rec.uri.query().unwrap_or("").as_bytes()).into_owned().collect();
                let limit: usize = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(20).min(40);
                let page: Vec<serde_json::Value> = self
                    .statuses
                    .iter()
                    .rev()
                    .filter(|(id, (author, _))| *author == user && q.get("max_id").is_none_or(|m| *id < m))
                    .take(limit)
                    .map(|(_, (_, s))| s.clone())
                    .collect();
                json(200, &serde_json::Value::Array(page))
            }
            _ => text(404, "not here"),
        }
    }

    /// A status made on the instance directly (before pavise), `age` ago.
    fn seed(&mut self, user: &str, visibility: &str, age: Duration) -> String {
        self.next_id += 1;
        let id = format!("{}", 110_000_000_000 + self.next_id);
        let created = std::time::SystemTime::now() - age;
        let status = serde_json::json!({
            "id": id, "created_at": humantime::format_rfc3339_millis(created).to_string(), "visibility": visibility,
            "account": {"id": format!("id-{user}"), "username": user, "acct": user},
            "tags": [], "media_attachments": [], "in_reply_to_id": null, "pinned": false, "favourited": false,
            "bookmarked": false, "favourites_count": 0, "reblogs_count": 0,
        });
        self.statuses.insert(id.clone(), (user.to_owned(), status));
        id
    }
}

struct Setup {
    masto: Arc<Mutex<Masto>>,
    upstream: RecordingUpstream,
    policies: tempfile::TempDir,
    data: tempfile::TempDir,
}

async fn setup(policy: &str) -> Setup {
    let masto = Arc::new(Mutex::new(Masto::default()));
    {
        let mut m = masto.lock().unwrap();
        m.tokens.insert("alice-token".into(), "alice".into());
        m.tokens.insert("bob-token".into(), "bob".into());
    }
    let m = masto.clone();
    let upstream = RecordingUpstream::with_handler(move |rec| m.lock().unwrap().handle(rec)).await;
    let policies = tempfile::tempdir().unwrap();
    std::fs::write(policies.path().join("test.toml"), policy).unwrap();
    Setup { masto, upstream, policies, data: tempfile::tempdir().unwrap() }
}

impl Setup {
    async fn pavise(&self) -> Pavise {
        let (policies, data) = (self.policies.path().to_owned(), self.data.path().to_owned());
        Pavise::start(&self.upstream.url(), move |f| {
            f.policies = policies;
            f.data_dir = data;
            f.expiry.backoff = "1s".parse().unwrap();
            f.expiry.lease = "10s".parse().unwrap();
            f.expiry.confirm_after = "1s".parse().unwrap();
            f.expiry.reserve_deletes = 1;
            // The archive sweep has its own tests; here it would add requests of its own.
            f.expiry.sweep_archives = false;
        })
        .await
    }

    fn exists(&self, id: &str) -> bool {
        self.masto.lock().unwrap().statuses.contains_key(id)
    }
}

async fn post(p: &Pavise, token: &str, body: &str, content_type: &str) -> (u16, serde_json::Value) {
    let resp = reqwest::Client::new()
        .post(p.url("/api/v1/statuses"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", content_type)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap_or_default())
}

async fn get(p: &Pavise, path: &str) -> u16 {
    reqwest::Client::new()
        .get(p.url(path))
        .header("authorization", "Bearer alice-token")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn admin(p: &Pavise) -> serde_json::Value {
    reqwest::Client::new()
        .get(p.admin_url("/admin/expiry?state=kept"))
        .bearer_auth(&p.token)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .map(|b| serde_json::from_slice(&b).unwrap())
        .unwrap()
}

/// Polls `cond` every 100 ms for at most `secs`.
async fn wait_for(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..secs * 10 {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cond()
}

const DMS_2S: &str = "[[expire]]\nname = \"dms\"\nmatch = { visibility = [\"direct\"] }\nafter = \"4s\"\nkeep = { pinned = true, hashtags = [\"keep\"] }\n";

#[tokio::test]
async fn policy_expiry_hides_then_deletes_and_keep_rules_hold() {
    let s = setup(DMS_2S).await;
    let p = s.pavise().await;
    let form = "application/x-www-form-urlencoded";
    let (code, dm) = post(&p, "alice-token", "status=secret&visibility=direct", form).await;
    assert_eq!(code, 200);
    let dm = dm["id"].as_str().unwrap().to_owned();
    // Before the deadline the post is served.
    assert_eq!(get(&p, &format!("/api/v1/statuses/{dm}")).await, 200);
    let (_, public) = post(&p, "alice-token", "status=hello&visibility=public", form).await;
    let public = public["id"].as_str().unwrap().to_owned();
    let (_, tagged) = post(&p, "alice-token", "status=remember+%23keep&visibility=direct", form).await;
    let tagged = tagged["id"].as_str().unwrap().to_owned();
    let (_, pinned) = post(&p, "alice-token", "status=pin+me&visibility=direct", form).await;
    let pinned = pinned["id"].as_str().unwrap().to_owned();
    let pin = reqwest::Client::new()
        .post(p.url(&format!("/api/v1/statuses/{pinned}/pin")))
        .bearer_auth("alice-token")
        .send()
        .await
        .unwrap();
    assert_eq!(pin.status(), 200);

    // Past the deadline: hidden at once, and deleted through the API.
    assert!(wait_for(10, || !s.exists(&dm)).await, "the DM was not deleted upstream");
    assert_eq!(get(&p, &format!("/api/v1/statuses/{dm}")).await, 404);
    assert_eq!(get(&p, &format!("/users/alice/statuses/{dm}")).await, 410);
    assert_eq!(get(&p, &format!("/@alice/{dm}")).await, 410);
    assert_eq!(get(&p, &format!("/users/alice/statuses/{dm}/activity")).await, 410);
    let delete = s.upstream.recorded().into_iter().find(|r| r.method == "DELETE").unwrap();
    assert_eq!(delete.headers["authorization"], "Bearer alice-token", "deleted with the author's own token");

    // Kept: pinned (tracked through pavise, confirmed by re-fetch) and #keep. Untouched: public.
    let mut report = admin(&p).await;
    for _ in 0..100 {
        if report["counts"]["kept"] == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        report = admin(&p).await;
    }
    let kept: Vec<&str> =
        report["items"].as_array().unwrap().iter().map(|i| i["status_id"].as_str().unwrap()).collect();
    assert!(kept.contains(&tagged.as_str()) && kept.contains(&pinned.as_str()), "{report}");
    assert!(s.exists(&tagged) && s.exists(&pinned) && s.exists(&public));
    assert_eq!(get(&p, &format!("/api/v1/statuses/{pinned}")).await, 200, "a kept post is served");
    assert_eq!(
        report["counts"]["deleted"].as_u64().unwrap() + report["counts"]["gone"].as_u64().unwrap(),
        1,
        "{report}"
    );
    // Once the DM is confirmed gone, no sealed token is left: kept posts do not hold one
    // (a kept post that becomes due again takes the token of the request that unkept it).
    for _ in 0..100 {
        if report["counts"]["gone"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        report = admin(&p).await;
    }
    assert_eq!(report["credentials"], 0, "a kept post holds no token: {report}");

    // Unpinning through pavise makes the scheduler look again: now it goes.
    let unpin = reqwest::Client::new()
        .post(p.url(&format!("/api/v1/statuses/{pinned}/unpin")))
        .bearer_auth("alice-token")
        .send()
        .await
        .unwrap();
    assert_eq!(unpin.status(), 200);
    assert!(wait_for(10, || !s.exists(&pinned)).await, "unpinned post was not re-checked");
    p.stop().await;
}

#[tokio::test]
async fn expires_in_is_stripped_validated_and_honoured() {
    let s = setup("").await;
    let p = s.pavise().await;
    // Too soon: a Mastodon-style 422, and the instance never sees the post.
    let (code, err) = post(&p, "alice-token", "status=x&expires_in=59", "application/x-www-form-urlencoded").await;
    assert_eq!(code, 422);
    assert!(err["error"].as_str().unwrap().contains("at least 60"), "{err}");
    assert!(s.upstream.recorded().is_empty());

    let (code, body) = post(&p, "alice-token", r#"{"status":"brief","expires_in":60}"#, "application/json").await;
    assert_eq!(code, 200);
    let id = body["id"].as_str().unwrap().to_owned();
    let seen = s.upstream.last();
    assert!(!String::from_utf8_lossy(&seen.body).contains("expires_in"), "expires_in reached the instance");
    assert_eq!(seen.headers["content-length"], seen.body.len().to_string().as_str());

    let report = admin(&p).await;
    assert_eq!(report["counts"]["pending"], 1, "{report}");
    assert!(s.exists(&id));
    assert_eq!(get(&p, &format!("/api/v1/statuses/{id}")).await, 200);

    // Policies reload on POST /admin/reload; a broken file keeps the old rules and says why.
    let reload = || async {
        let r = reqwest::Client::new().post(p.admin_url("/admin/reload")).bearer_auth(&p.token).send().await.unwrap();
        (r.status().as_u16(), String::from_utf8_lossy(&r.bytes().await.unwrap()).into_owned())
    };
    let file = s.policies.path().join("test.toml");
    std::fs::write(&file, "[[expire]]\nname = \"dms\"\nafter = \"7dayz\"\n").unwrap();
    let (code, body) = reload().await;
    assert_eq!(code, 422);
    assert!(body.contains("test.toml") && body.contains("dms") && body.contains("unknown unit"), "{body}");
    std::fs::write(&file, DMS_2S).unwrap();
    let (code, body) = reload().await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("1 expiry rules"), "{body}");
    p.stop().await;
}

#[tokio::test]
async fn the_schedule_survives_a_restart() {
    let s = setup(DMS_2S).await;
    let p = s.pavise().await;
    let (_, dm) = post(&p, "alice-token", "status=x&visibility=direct", "application/x-www-form-urlencoded").await;
    let dm = dm["id"].as_str().unwrap().to_owned();
    p.stop().await;
    // Down past the deadline: nobody deleted it.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert!(s.exists(&dm));
    let p = s.pavise().await;
    assert!(wait_for(10, || !s.exists(&dm)).await, "not deleted after the restart");
    p.stop().await;
}

#[tokio::test]
async fn revoked_token_fails_with_a_reason_and_a_new_token_retries() {
    let s = setup(DMS_2S).await;
    let p = s.pavise().await;
    let form = "application/x-www-form-urlencoded";
    let (_, dm) = post(&p, "alice-token", "status=x&visibility=direct", form).await;
    let dm = dm["id"].as_str().unwrap().to_owned();
    s.masto.lock().unwrap().tokens.remove("alice-token");
    let failed = async {
        for _ in 0..100 {
            let r: serde_json::Value = admin(&p).await;
            if r["counts"]["failed"] == 1 {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("never failed");
    }
    .await;
    let reason = failed["failures"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("401") && !reason.contains("alice-token"), "{reason}");
    assert!(s.exists(&dm));
    assert_eq!(get(&p, &format!("/users/alice/statuses/{dm}")).await, 410, "still hidden while failed");

    // Alice logs in again and posts (a public post no rule matches): the new token re-queues.
    s.masto.lock().unwrap().tokens.insert("alice-token-2".into(), "alice".into());
    let (code, _) = post(&p, "alice-token-2", r#"{"status":"hi"}"#, "application/json").await;
    assert_eq!(code, 200);
    assert!(wait_for(10, || !s.exists(&dm)).await, "not retried with the new token");
    p.stop().await;
}

#[tokio::test]
async fn deletions_are_paced_inside_the_instance_limit() {
    let s = setup("[[expire]]\nname = \"all\"\nafter = \"1s\"\n").await;
    s.masto.lock().unwrap().limit = Some((4, Duration::from_secs(2)));
    let p = s.pavise().await;
    let mut ids = Vec::new();
    for i in 0..10 {
        let (code, b) = post(&p, "bob-token", &format!("status=n{i}"), "application/x-www-form-urlencoded").await;
        assert_eq!(code, 200);
        ids.push(b["id"].as_str().unwrap().to_owned());
    }
    assert!(wait_for(30, || ids.iter().all(|id| !s.exists(id))).await, "not everything was deleted");
    let (over_limit, deletes, most) = {
        let m = s.masto.lock().unwrap();
        (m.over_limit, m.deletes.len(), m.deletes.iter().map(|d| d.1).max().unwrap())
    };
    assert_eq!(over_limit, 0, "the scheduler ran into the instance's limit");
    assert_eq!(deletes, 10);
    // One left for the author in every window: at most limit - reserve = 3 per window.
    assert!(most <= 3, "{most} deletions inside one rate-limit window");
    p.stop().await;
}

#[tokio::test]
async fn sweep_schedules_old_posts_through_the_running_relay() {
    let s = setup(DMS_2S).await;
    let (old_dms, recent_dm, public): (Vec<String>, String, String) = {
        let mut m = s.masto.lock().unwrap();
        let old = (0..45).map(|_| m.seed("bob", "direct", Duration::from_secs(86_400))).collect();
        let recent = m.seed("bob", "direct", Duration::ZERO);
        let public = m.seed("bob", "public", Duration::from_secs(86_400));
        (old, recent, public)
    };
    m_seed_other(&s);
    let p = s.pavise().await;
    let file = pavise::config::FileConfig {
        data_dir: s.data.path().to_owned(),
        policies: s.policies.path().to_owned(),
        admin: pavise::config::AdminConfig { listen: p.admin, token_file: None, ..Default::default() },
        ..Default::default()
    };
    let config = pavise::config::Config::validate(file, &Default::default(), None).unwrap();
    let token = || pavise::expiry::seal::Token::new("bob-token");

    // Dry run: 46 DMs would go (two pages of 40), the public post stays, nothing changes.
    let out = pavise::expiry::cli::sweep(&config.expiry_cli(), "bob", token(), true).await.unwrap();
    assert!(out.contains("47 statuses seen, would schedule 46 (45 already past"), "{out}");
    assert!(out.contains(&old_dms[0]) && !out.contains(&public), "{out}");
    assert_eq!(admin(&p).await["counts"]["pending"], 0);

    // The wrong account's token is refused.
    let err = pavise::expiry::cli::sweep(&config.expiry_cli(), "alice", token(), true).await.unwrap_err().to_string();
    assert!(err.contains("belongs to"), "{err}");

    let out = pavise::expiry::cli::sweep(&config.expiry_cli(), "bob", token(), false).await.unwrap();
    assert!(out.contains("scheduled 46"), "{out}");
    let gone = wait_for(60, || old_dms.iter().all(|id| !s.exists(id))).await;
    assert!(gone, "old DMs were not deleted: {}", admin(&p).await);
    assert!(wait_for(10, || !s.exists(&recent_dm)).await);
    assert!(s.exists(&public));
    // Each deletion is confirmed (the instance no longer has it), then purged: only a count.
    for _ in 0..200 {
        if admin(&p).await["counts"]["gone"] == 46 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let listing = pavise::expiry::cli::list(&config.expiry_cli(), "deleted", 100).await.unwrap();
    assert!(!listing.contains(&old_dms[0]) && listing.contains("\"gone\":46"), "{listing}");
    assert!(listing.contains("@bob  done  seen 47  scheduled 46"), "the sweep's progress is listed: {listing}");
    p.stop().await;
}

/// Another account's posts, which a sweep of bob must not touch.
fn m_seed_other(s: &Setup) {
    s.masto.lock().unwrap().seed("alice", "direct", Duration::from_secs(86_400));
}
