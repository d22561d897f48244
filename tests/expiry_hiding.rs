//! An expired post is gone everywhere, at once — tried the way an attacker would.
//!
//! pavise in front of a stand-in instance whose `DELETE` fails (so the post stays on the
//! instance, as it does while a deletion is queued or Mastodon's background job has not
//! run): every spelling of the post's URL, every listing and embedding, ActivityPub pages,
//! feeds and both streaming transports must hide it, while a post that does not expire
//! stays visible everywhere. Also here: what mastodon-mock cannot express (scheduled
//! posts published later, a client hanging up mid-creation, `expires_in` in every body
//! shape, the store after a seizure).

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

use crate::support::{BoxFut, Pavise, Recorded, RecordingUpstream, TestBody, files_under, text};

const DOMAIN: &str = "i.example";

fn json(status: u16, v: &serde_json::Value) -> http::Response<TestBody> {
    typed(status, &v.to_string(), "application/json; charset=utf-8")
}

fn typed(status: u16, body: &str, ct: &str) -> http::Response<TestBody> {
    let mut r = text(status, body);
    r.headers_mut().insert(http::header::CONTENT_TYPE, ct.parse().unwrap());
    r
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// The stand-in instance.
#[derive(Default)]
struct Instance {
    next_id: u64,
    /// id → Status JSON, in creation order (ids grow).
    statuses: BTreeMap<String, serde_json::Value>,
    /// Ids of statuses made here (by others, or federated in) that pavise never saw created.
    foreign: Vec<String>,
    fail_deletes: bool,
    /// How long a status creation takes to answer.
    create_delay: Option<Duration>,
    /// ScheduledStatus id → (due, params).
    scheduled: BTreeMap<String, (std::time::SystemTime, serde_json::Value)>,
    deletes: u64,
    /// `verify_credentials`, and an account's statuses pages, answer 503 this many more times.
    fail_verify: u32,
    fail_pages: u32,
    /// Status creations are carried out, then answered 500 (a worker dying after the commit).
    fail_create_answer: bool,
    /// `Idempotency-Key` → the status it created (Mastodon replays it for an hour).
    idempotency: BTreeMap<String, String>,
    /// Uploaded media: id → MediaAttachment JSON; poll id → its status.
    media: BTreeMap<String, serde_json::Value>,
    polls: BTreeMap<String, String>,
}

fn params(rec: &Recorded) -> serde_json::Map<String, serde_json::Value> {
    let ct = rec.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if ct.contains("json") {
        serde_json::from_slice::<serde_json::Value>(&rec.body)
            .ok()
            .and_then(|v| v.as_object().cloned())
            .unwrap_or_default()
    } else if let Some(boundary) = ct.split("boundary=").nth(1) {
        let mut out = serde_json::Map::new();
        let body = String::from_utf8_lossy(&rec.body).into_owned();
        for part in body.split(&format!("--{boundary}")) {
            if let Some((head, value)) = part.split_once("\r\n\r\n")
                && let Some(name) = head.split("name=\"").nth(1).and_then(|n| n.split('"').next())
            {
                out.insert(name.to_owned(), value.trim_end_matches("\r\n").into());
            }
        }
        out
    } else {
        url::form_urlencoded::parse(&rec.body).into_owned().map(|(k, v)| (k, v.into())).collect()
    }
}

impl Instance {
    fn id(&mut self) -> String {
        self.next_id += 1;
        format!("{}", 110_000_000_000_000_000 + self.next_id)
    }

    fn status(&mut self, author: &str, visibility: &str, text: &str) -> serde_json::Value {
        let id = self.id();
        serde_json::json!({
            "id": id, "created_at": now_rfc3339(), "visibility": visibility,
            "uri": format!("https://{DOMAIN}/users/{author}/statuses/{id}"),
            "url": format!("https://{DOMAIN}/@{author}/{id}"),
            "account": {"id": format!("id-{author}"), "username": author, "acct": author},
            "content": format!("<p>{text}</p>"), "text": text, "tags": [], "media_attachments": [],
            "in_reply_to_id": null, "reblog": null, "quote": null, "pinned": false, "favourited": false,
            "bookmarked": false, "favourites_count": 0, "reblogs_count": 0,
        })
    }

    /// A boost of `of` by bob, made on the instance (not through pavise).
    fn boost(&mut self, of: &str) -> String {
        let original = self.statuses[of].clone();
        let mut b = self.status("bob", "public", "");
        b["reblog"] = original;
        let id = b["id"].as_str().unwrap().to_owned();
        self.statuses.insert(id.clone(), b);
        self.foreign.push(id.clone());
        id
    }

    /// A Mastodon 4.4 quote of `of` by bob.
    fn quote(&mut self, of: &str) -> String {
        let original = self.statuses[of].clone();
        let mut q = self.status("bob", "public", "look at this");
        q["quote"] = serde_json::json!({"state": "accepted", "quoted_status": original});
        let id = q["id"].as_str().unwrap().to_owned();
        self.statuses.insert(id.clone(), q);
        self.foreign.push(id.clone());
        id
    }

    fn all(&self) -> Vec<serde_json::Value> {
        self.statuses.values().rev().cloned().collect()
    }

    /// One page of `items` (newest first) the way Mastodon pages: `limit`, `max_id`,
    /// `since_id`, `min_id`, and a `Link` naming the page's edges.
    fn paged(items: Vec<serde_json::Value>, query: &str, path: &str) -> http::Response<TestBody> {
        let q: BTreeMap<String, String> = url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
        let limit: usize = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(20).min(40);
        let id = |s: &serde_json::Value| s["id"].as_str().unwrap().to_owned();
        let mut page: Vec<_> = items
            .into_iter()
            .filter(|s| q.get("max_id").is_none_or(|m| id(s) < *m))
            .filter(|s| q.get("since_id").or(q.get("min_id")).is_none_or(|m| id(s) > *m))
            .collect();
        if q.contains_key("min_id") {
            // The items just above min_id, newest first.
            let skip = page.len().saturating_sub(limit);
            page.drain(..skip);
        } else {
            page.truncate(limit);
        }
        let mut r = json(200, &serde_json::Value::Array(page.clone()));
        if let (Some(first), Some(last)) = (page.first(), page.last()) {
            let link = format!(
                "<https://{DOMAIN}{path}?limit={limit}&max_id={}>; rel=\"next\", <https://{DOMAIN}{path}?limit={limit}&min_id={}>; rel=\"prev\"",
                id(last),
                id(first)
            );
            r.headers_mut().insert(http::header::LINK, link.parse().unwrap());
        }
        r
    }

    fn note(id: &str, author: &str) -> serde_json::Value {
        serde_json::json!({"id": format!("https://{DOMAIN}/users/{author}/statuses/{id}"), "type": "Note",
            "url": format!("https://{DOMAIN}/@{author}/{id}"), "content": "x"})
    }

    /// A status as its Note, with the quote it carries (Mastodon 4.4 federates `quote`).
    fn as_note(s: &serde_json::Value) -> serde_json::Value {
        let mut note = Self::note(s["id"].as_str().unwrap(), &Self::author(s));
        if let Some(quoted) = s["quote"]["quoted_status"]["uri"].as_str() {
            note["quote"] = quoted.into();
        }
        note
    }

    /// What Mastodon's feeds and collections list: posts, not boosts.
    fn posts(&self) -> Vec<serde_json::Value> {
        self.all().into_iter().filter(|s| s["reblog"].is_null()).collect()
    }

    fn author(s: &serde_json::Value) -> String {
        s["account"]["username"].as_str().unwrap_or("alice").to_owned()
    }

    fn handle(&mut self, rec: &Recorded) -> http::Response<TestBody> {
        let path = rec.uri.path().to_owned();
        let query = rec.uri.query().unwrap_or("").to_owned();
        // Doorkeeper's places: the header, then access_token in the query or the body.
        let token = rec
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned)
            .or_else(|| {
                url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "access_token").map(|(_, v)| v.into())
            })
            .or_else(|| params(rec).get("access_token").and_then(|v| v.as_str()).map(str::to_owned));
        // `<user>-write-token`: an app authorized with the `write` scope only.
        let write_only = token.as_deref().is_some_and(|t| t.ends_with("-write-token"));
        let user = token
            .as_deref()
            .and_then(|t| t.strip_suffix("-write-token").or_else(|| t.strip_suffix("-token")))
            .map(str::to_owned);
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let method = rec.method.as_str();
        let reads = method == "GET";
        if write_only && reads {
            return json(403, &serde_json::json!({"error": "This action is outside the authorized scopes"}));
        }
        if segs.as_slice() == ["api", "v1", "accounts", "verify_credentials"] && self.fail_verify > 0 {
            self.fail_verify -= 1;
            return json(503, &serde_json::json!({"error": "busy"}));
        }
        if segs.len() == 5 && segs[..3] == ["api", "v1", "accounts"] && segs[4] == "statuses" && self.fail_pages > 0 {
            self.fail_pages -= 1;
            return json(503, &serde_json::json!({"error": "busy"}));
        }
        match (method, segs.as_slice()) {
            ("POST", ["api", "v1", "statuses"]) => {
                let p = params(rec);
                let user = user.unwrap_or_default();
                if let Some(at) = p.get("scheduled_at").and_then(|v| v.as_str()) {
                    let due = humantime::parse_rfc3339_weak(at.trim_end_matches('Z')).unwrap();
                    let id = self.id();
                    let mut stored = p.clone();
                    stored.insert("author".into(), user.clone().into());
                    self.scheduled.insert(id.clone(), (due, serde_json::Value::Object(stored)));
                    return json(
                        200,
                        &serde_json::json!({"id": id, "scheduled_at": at,
                        "params": {"text": p.get("status"), "spoiler_text": p.get("spoiler_text"), "visibility": p.get("visibility")}, "media_attachments": []}),
                    );
                }
                let key = rec.headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned);
                if let Some(s) = key.as_ref().and_then(|k| self.idempotency.get(k)).and_then(|id| self.statuses.get(id)) {
                    return json(200, s);
                }
                let mut s = self.status(
                    &user,
                    p.get("visibility").and_then(|v| v.as_str()).unwrap_or("public"),
                    p.get("status").and_then(|v| v.as_str()).unwrap_or(""),
                );
                let id = s["id"].as_str().unwrap().to_owned();
                let media_id = p.get("media_ids[]").or_else(|| p.get("media_ids").and_then(|m| m.get(0)));
                if let Some(m) = media_id.and_then(|m| m.as_str()).and_then(|m| self.media.get(m)) {
                    s["media_attachments"] = serde_json::json!([m]);
                }
                if p.get("poll").is_some_and(|p| !p.is_null()) || p.contains_key("poll[options][]") {
                    let poll = format!("{}", 70 + self.polls.len());
                    self.polls.insert(poll.clone(), id.clone());
                    s["poll"] = serde_json::json!({"id": poll, "options": [{"title": "the old mill", "votes_count": 0}]});
                }
                if let Some(k) = key {
                    self.idempotency.insert(k, id.clone());
                }
                self.statuses.insert(id, s.clone());
                if self.fail_create_answer {
                    return json(500, &serde_json::json!({"error": "An unexpected error occurred"}));
                }
                json(200, &s)
            }
            ("PUT", ["api", "v1", "statuses", id]) => {
                let p = params(rec);
                let Some(s) = self.statuses.get_mut(*id) else { return json(404, &serde_json::json!({"error": "Record not found"})) };
                let text = p.get("status").and_then(|v| v.as_str()).unwrap_or("").to_owned();
                s["content"] = format!("<p>{text}</p>").into();
                s["text"] = text.into();
                json(200, &s.clone())
            }
            ("POST", ["api", "v2", "media"]) => {
                let id = format!("{}", 555 + self.media.len());
                let m = serde_json::json!({"id": id, "type": "image",
                    "url": format!("https://{DOMAIN}/system/media_attachments/files/000/000/{id}/original/photo.png"),
                    "preview_url": format!("https://{DOMAIN}/system/media_attachments/files/000/000/{id}/small/photo.png"),
                    "text_url": format!("https://{DOMAIN}/media/sc{id}")});
                self.media.insert(id, m.clone());
                json(200, &m)
            }
            ("GET", ["api", "v1", "media", id]) => match self.media.get(*id) {
                Some(m) => json(200, m),
                None => json(404, &serde_json::json!({"error": "Record not found"})),
            },
            ("GET", ["system", "media_attachments", "files", ..]) | ("GET", ["media_proxy", ..]) | ("GET", ["media", ..]) => {
                typed(200, "PNG-BYTES", "image/png")
            }
            ("GET", ["api", "v1", "polls", id]) | ("POST", ["api", "v1", "polls", id, "votes"]) => {
                match self.polls.get(*id).and_then(|s| self.statuses.get(s)) {
                    Some(s) => json(200, &s["poll"]),
                    None => json(404, &serde_json::json!({"error": "Record not found"})),
                }
            }
            ("POST", ["api", "v1", "reports"]) => {
                let ids: Vec<String> = url::form_urlencoded::parse(&rec.body)
                    .filter(|(k, _)| k.starts_with("status_ids"))
                    .map(|(_, v)| v.into_owned())
                    .collect();
                json(200, &serde_json::json!({"id": "r1", "status_ids": ids}))
            }
            ("POST", ["api", "v2", "filters", _, "statuses"]) => {
                json(200, &serde_json::json!({"id": "fs1", "status_id": params(rec).get("status_id")}))
            }
            ("POST", ["admin", "accounts", _, "statuses", "batch"]) => typed(302, "", "text/html"),
            ("GET", ["filters", _, "statuses"]) | ("GET", ["admin", "accounts", _, "statuses"]) => {
                let rows: String = self
                    .all()
                    .iter()
                    .map(|s| format!("<div class='status' id='status-{}'><a href='/@{}/{}'>{}</a></div>", s["id"].as_str().unwrap(), Self::author(s), s["id"].as_str().unwrap(), s["content"].as_str().unwrap_or("")))
                    .collect();
                typed(200, &format!("<html><body>{rows}</body></html>"), "text/html; charset=utf-8")
            }
            ("GET", ["users", author, "quote_authorizations", id]) => match self.statuses.get(*id) {
                Some(q) => typed(
                    200,
                    &serde_json::json!({"type": "QuoteAuthorization", "id": format!("https://{DOMAIN}/users/{author}/quote_authorizations/{id}"),
                        "interactingObject": q["uri"], "interactionTarget": q["quote"]["quoted_status"]["uri"]}).to_string(),
                    "application/activity+json",
                ),
                None => text(404, "not found"),
            },
            ("GET", ["api", "v1", "timelines", "direct"]) => {
                Self::paged(self.all(), &query, &path)
            }
            ("GET", ["api", "v1", "statuses"]) => {
                let ids: Vec<String> = url::form_urlencoded::parse(query.as_bytes())
                    .filter(|(k, _)| k == "id[]" || k == "id")
                    .map(|(_, v)| v.trim_start_matches('0').to_owned())
                    .collect();
                json(200, &serde_json::Value::Array(ids.iter().filter_map(|i| self.statuses.get(i).cloned()).collect()))
            }
            ("GET", ["api", "v1", "statuses", id]) => match self.statuses.get(*id) {
                Some(s) => json(200, s),
                None => json(404, &serde_json::json!({"error": "Record not found"})),
            },
            ("GET", ["api", "v1", "statuses", id, "source"]) => match self.statuses.get(*id) {
                Some(s) => json(200, &serde_json::json!({"id": id, "text": s["text"], "spoiler_text": ""})),
                None => json(404, &serde_json::json!({"error": "Record not found"})),
            },
            ("GET", ["api", "v1", "statuses", id, "context"]) => {
                let others: Vec<_> = self.all().into_iter().filter(|s| s["id"] != *id).collect();
                json(200, &serde_json::json!({"ancestors": [], "descendants": others}))
            }
            ("POST", ["api", "v1", "statuses", id, "favourite" | "bookmark"]) => match self.statuses.get(*id) {
                Some(s) => json(200, s),
                None => json(404, &serde_json::json!({"error": "Record not found"})),
            },
            ("DELETE", ["api", "v1", "statuses", id]) => {
                if self.fail_deletes {
                    return json(500, &serde_json::json!({"error": "An unexpected error occurred"}));
                }
                self.deletes += 1;
                match self.statuses.remove(*id) {
                    Some(s) => json(200, &s),
                    None => json(404, &serde_json::json!({"error": "Record not found"})),
                }
            }
            ("GET", ["api", "v1", "accounts", account, "statuses"]) => {
                let mine: Vec<_> =
                    self.all().into_iter().filter(|st| format!("id-{}", Self::author(st)) == *account).collect();
                Self::paged(mine, &query, &path)
            }
            ("GET", ["api", "v1", "timelines", ..])
            | ("GET", ["api", "v1", "bookmarks" | "favourites"])
            | ("GET", ["api", "v1", "trends", "statuses"]) => {
                let mut r = json(200, &serde_json::Value::Array(self.all()));
                let link = format!("<https://{DOMAIN}{path}?max_id=1>; rel=\"next\"");
                r.headers_mut().insert(http::header::LINK, link.parse().unwrap());
                r
            }
            ("GET", ["api", "v1" | "v2", "search"]) => {
                json(200, &serde_json::json!({"accounts": [], "statuses": self.all(), "hashtags": []}))
            }
            ("GET", ["api", "v1", "notifications"]) => {
                let n: Vec<_> = self
                    .all()
                    .into_iter()
                    .map(|s| serde_json::json!({"id": format!("n{}", s["id"].as_str().unwrap()), "type": "mention", "created_at": now_rfc3339(), "account": s["account"], "status": s}))
                    .collect();
                json(200, &serde_json::Value::Array(n))
            }
            ("GET", ["api", "v2", "notifications"]) => {
                let all = self.all();
                let groups: Vec<_> = all.iter().map(|s| serde_json::json!({"group_key": format!("favourite-{}", s["id"].as_str().unwrap()), "notifications_count": 1, "type": "favourite", "most_recent_notification_id": "1", "sample_account_ids": ["id-bob"], "status_id": s["id"]})).collect();
                json(200, &serde_json::json!({"accounts": [], "statuses": all, "notification_groups": groups}))
            }
            ("GET", ["api", "v1", "conversations"]) => {
                let c: Vec<_> = self
                    .all()
                    .into_iter()
                    .map(|s| serde_json::json!({"id": format!("c{}", s["id"].as_str().unwrap()), "unread": false, "accounts": [], "last_status": s}))
                    .collect();
                json(200, &serde_json::Value::Array(c))
            }
            ("GET", ["api", "oembed"]) => json(200, &serde_json::json!({"type": "rich", "html": "<iframe></iframe>"})),
            ("GET", ["api", "v1", "accounts", "verify_credentials"]) => match user {
                Some(u) => json(200, &serde_json::json!({"id": format!("id-{u}"), "username": u})),
                None => json(401, &serde_json::json!({"error": "The access token is invalid"})),
            },
            ("GET", ["api", "v1", "scheduled_statuses"]) => {
                // Publishes what is due, as mastodon-mock does when it lists.
                let now = std::time::SystemTime::now();
                let due: Vec<String> =
                    self.scheduled.iter().filter(|(_, (at, _))| *at <= now).map(|(id, _)| id.clone()).collect();
                for id in due {
                    let (_, p) = self.scheduled.remove(&id).unwrap();
                    let s = self.status(
                        p["author"].as_str().unwrap(),
                        p.get("visibility").and_then(|v| v.as_str()).unwrap_or("public"),
                        p["status"].as_str().unwrap_or(""),
                    );
                    self.statuses.insert(s["id"].as_str().unwrap().to_owned(), s);
                }
                let list: Vec<_> = self
                    .scheduled
                    .iter()
                    .map(|(id, (at, _))| serde_json::json!({"id": id, "scheduled_at": humantime::format_rfc3339_millis(*at).to_string(), "params": {}}))
                    .collect();
                json(200, &serde_json::Value::Array(list))
            }
            ("GET", ["api", "v1", "scheduled_statuses", id]) => match self.scheduled.get(*id) {
                Some((at, _)) => json(
                    200,
                    &serde_json::json!({"id": id, "scheduled_at": humantime::format_rfc3339_millis(*at).to_string(), "params": {}}),
                ),
                None => json(404, &serde_json::json!({"error": "Record not found"})),
            },
            // Federation and the web.
            ("GET", ["users", author, "outbox"]) => {
                let items: Vec<_> = self
                    .all()
                    .iter()
                    .map(|s| {
                        let id = s["id"].as_str().unwrap();
                        match s["reblog"].get("id").and_then(|r| r.as_str()) {
                            Some(of) => serde_json::json!({"id": format!("https://{DOMAIN}/users/bob/statuses/{id}/activity"), "type": "Announce",
                                "object": format!("https://{DOMAIN}/users/alice/statuses/{of}")}),
                            None => serde_json::json!({"id": format!("https://{DOMAIN}/users/{}/statuses/{id}/activity", Self::author(s)), "type": "Create",
                                "object": Self::as_note(s)}),
                        }
                    })
                    .collect();
                typed(200, &serde_json::json!({"type": "OrderedCollectionPage", "partOf": format!("https://{DOMAIN}/users/{author}/outbox"), "orderedItems": items}).to_string(), "application/activity+json; charset=utf-8")
            }
            ("GET", ["users", _, "collections", "featured"]) => {
                let items: Vec<_> = self.posts().iter().map(Self::as_note).collect();
                typed(
                    200,
                    &serde_json::json!({"type": "OrderedCollection", "orderedItems": items}).to_string(),
                    "application/activity+json",
                )
            }
            ("GET", ["users", _, "statuses", _, "replies"]) => {
                // Replies by URI, a quoting reply as an object.
                let items: Vec<_> = self
                    .posts()
                    .iter()
                    .map(|s| if s["quote"].is_null() { serde_json::json!(s["uri"]) } else { Self::as_note(s) })
                    .collect();
                typed(
                    200,
                    &serde_json::json!({"type": "CollectionPage", "items": items}).to_string(),
                    "application/activity+json",
                )
            }
            ("GET", [.., feed]) if feed.ends_with(".rss") => {
                let items: String = self
                    .posts()
                    .iter()
                    .map(|s| {
                        // A quote's text links the quoted post, escaped as RSS escapes HTML.
                        let quoted = s["quote"]["quoted_status"]["url"]
                            .as_str()
                            .map(|u| format!("&lt;p&gt;RE: &lt;a href=&quot;{u}&quot;&gt;{u}&lt;/a&gt;&lt;/p&gt;"))
                            .unwrap_or_default();
                        format!(
                            "<item><guid isPermaLink=\"true\">{url}</guid><link>{url}</link><description>{}{quoted}</description></item>",
                            s["text"].as_str().unwrap(),
                            url = s["url"].as_str().unwrap()
                        )
                    })
                    .collect();
                typed(
                    200,
                    &format!("<?xml version=\"1.0\"?><rss version=\"2.0\"><channel>{items}</channel></rss>"),
                    "application/rss+xml; charset=utf-8",
                )
            }
            ("GET", ["api", "v1", "streaming", ..]) => {
                let events: String = self.all().iter().map(|s| format!("event: update\ndata: {s}\n\n")).collect();
                typed(200, &events, "text/event-stream")
            }
            ("GET", [handle, id, ..]) if handle.starts_with('@') => match self.statuses.get(*id) {
                Some(s) => typed(200, &format!("<html>{}</html>", s["content"].as_str().unwrap()), "text/html"),
                None => text(404, "not found"),
            },
            ("GET", ["users", _, "statuses", id, ..]) => match self.statuses.get(*id) {
                Some(s) => typed(200, &Self::note(id, &Self::author(s)).to_string(), "application/activity+json"),
                None => text(404, "not found"),
            },
            _ => json(404, &serde_json::json!({"error": "Record not found"})),
        }
    }
}

struct Setup {
    instance: Arc<Mutex<Instance>>,
    upstream: RecordingUpstream,
    policies: tempfile::TempDir,
    data: tempfile::TempDir,
}

const POLICY: &str = "[[expire]]\nname = \"dms\"\nmatch = { visibility = [\"direct\"] }\nafter = \"2s\"\n";

async fn setup(policy: &str, fail_deletes: bool) -> Setup {
    let instance = Arc::new(Mutex::new(Instance { fail_deletes, ..Default::default() }));
    let m = instance.clone();
    let upstream = RecordingUpstream::with_async_handler(move |rec| {
        let m = m.clone();
        let fut: BoxFut<_> = Box::pin(async move {
            // The instance does the work at once (the post exists), then is slow to answer.
            let (resp, delay) = {
                let mut m = m.lock().unwrap();
                let delay = m.create_delay.filter(|_| rec.method == "POST" && rec.uri.path() == "/api/v1/statuses");
                (m.handle(&rec), delay)
            };
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            resp
        });
        fut
    })
    .await;
    let policies = tempfile::tempdir().unwrap();
    std::fs::write(policies.path().join("test.toml"), policy).unwrap();
    Setup { instance, upstream, policies, data: tempfile::tempdir().unwrap() }
}

/// What reached the instance since `before` on a client's behalf (through the pipeline,
/// with the client's pseudonym): pavise's own housekeeping (the scheduler's re-fetches and
/// failing deletions) carries no `X-Forwarded-For`, and runs beside the test.
fn client_requests_since(s: &Setup, before: usize) -> Vec<String> {
    s.upstream.recorded()[before..]
        .iter()
        .filter(|r| r.headers.contains_key("x-forwarded-for"))
        .map(|r| format!("{} {}", r.method, r.uri))
        .collect()
}

impl Setup {
    async fn pavise(&self, streaming: Option<String>) -> Pavise {
        self.pavise_with(move |f| {
            if let Some(s) = streaming {
                f.upstream.streaming_url = s;
            }
        })
        .await
    }

    /// [`Setup::pavise`] with more configuration.
    async fn pavise_with(&self, tweak: impl FnOnce(&mut pavise::config::FileConfig)) -> Pavise {
        let (policies, data) = (self.policies.path().to_owned(), self.data.path().to_owned());
        Pavise::start(&self.upstream.url(), move |f| {
            f.policies = policies;
            f.data_dir = data;
            f.expiry.backoff = "1s".parse().unwrap();
            f.expiry.lease = "5s".parse().unwrap();
            f.expiry.confirm_after = "1s".parse().unwrap();
            f.expiry.min_expires_in = "1s".parse().unwrap();
            f.expiry.sweep_archives = false;
            tweak(f);
        })
        .await
    }

    fn on_instance(&self, id: &str) -> bool {
        self.instance.lock().unwrap().statuses.contains_key(id)
    }
}

async fn send(p: &Pavise, method: &str, path: &str, token: Option<&str>) -> (u16, http::HeaderMap, String) {
    let mut req = reqwest::Client::new().request(method.parse().unwrap(), p.url(path)).header("host", DOMAIN);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    (status, headers, String::from_utf8_lossy(&resp.bytes().await.unwrap()).into_owned())
}

async fn post(p: &Pavise, token: &str, body: &str, ct: &str) -> (u16, serde_json::Value) {
    let resp = reqwest::Client::new()
        .post(p.url("/api/v1/statuses"))
        .header("host", DOMAIN)
        .bearer_auth(token)
        .header("content-type", ct)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap_or_default())
}

async fn admin(p: &Pavise) -> serde_json::Value {
    let r = reqwest::Client::new()
        .get(p.admin_url("/admin/expiry?state=pending"))
        .bearer_auth(&p.token)
        .send()
        .await
        .unwrap();
    serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
}

async fn wait_for(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..secs * 20 {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cond()
}

const FORM: &str = "application/x-www-form-urlencoded";

/// Every spelling ActiveRecord reads as the post, every listing, embedding, page, feed and
/// stream: the expired DM is nowhere, while the public post that does not expire is
/// everywhere — with the instance still holding both (its DELETE fails).
#[tokio::test]
async fn an_expired_post_is_gone_from_every_spelling_and_every_listing() {
    // The streaming server's WebSocket, standing in for Mastodon's: on connect it sends one
    // `update` per status it is given.
    let ws_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws_addr = ws_listener.local_addr().unwrap();
    let ws_payloads: Arc<Mutex<Vec<String>>> = Arc::default();
    let payloads = ws_payloads.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = ws_listener.accept().await {
            let payloads = payloads.lock().unwrap().clone();
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else { return };
                for p in payloads {
                    let msg = serde_json::json!({"stream": ["user"], "event": "update", "payload": p}).to_string();
                    let _ = ws.send(tokio_tungstenite::tungstenite::Message::text(msg)).await;
                }
                let _ = ws.send(tokio_tungstenite::tungstenite::Message::text(r#"{"event":"end"}"#)).await;
                while let Some(Ok(_)) = ws.next().await {}
            });
        }
    });

    let s = setup(POLICY, true).await;
    let p = s.pavise(Some(format!("http://{ws_addr}"))).await;
    let (code, dm) = post(&p, "alice-token", "status=meet+at+the+usual+place&visibility=direct", FORM).await;
    assert_eq!(code, 200);
    let hidden = dm["id"].as_str().unwrap().to_owned();
    let (_, public) = post(&p, "alice-token", "status=hello+world&visibility=public", FORM).await;
    let visible = public["id"].as_str().unwrap().to_owned();
    // Before the deadline, it is served like any post.
    assert_eq!(send(&p, "GET", &format!("/api/v1/statuses/{hidden}"), Some("alice-token")).await.0, 200);

    tokio::time::sleep(Duration::from_millis(2300)).await;
    // Boosts and quotes made on the instance (by others, or federated in) after the deadline.
    let (boost_of_hidden, quote_of_hidden, boost_of_visible) = {
        let mut i = s.instance.lock().unwrap();
        (i.boost(&hidden), i.quote(&hidden), i.boost(&visible))
    };
    *ws_payloads.lock().unwrap() = {
        let i = s.instance.lock().unwrap();
        i.all().iter().map(|s| s.to_string()).collect()
    };
    assert!(s.on_instance(&hidden), "the instance still has it: its DELETE fails");

    // 1. Every spelling of the post itself, and every sub-resource: refused before the
    // instance is asked.
    let before = s.upstream.recorded().len();
    let spellings = [
        format!("/api/v1/statuses/{hidden}"),
        format!("/api/v1/statuses/{hidden}.json"),
        format!("/api/v1/statuses/{}", hidden.bytes().map(|b| format!("%{b:02X}")).collect::<String>()),
        format!("/api/v1/statuses/0{hidden}"),
        format!("/api/v1/statuses/{hidden}-x"),
        format!("/api//v1/statuses/{hidden}/"),
        format!("/users/alice/statuses/{hidden}.json"),
        format!("/users/ALICE/statuses/{hidden}/activity"),
        format!("/@alice/{hidden}.json"),
        format!("/@alice/{hidden}/embed"),
        format!("/@alice/0{hidden}"),
    ];
    let subresources = ["context", "source", "history", "reblogged_by", "favourited_by", "card", "quotes"];
    for path in spellings
        .iter()
        .cloned()
        .chain(subresources.iter().map(|r| format!("/api/v1/statuses/{hidden}/{r}")))
        .chain(["replies", "likes", "shares"].iter().map(|r| format!("/users/alice/statuses/{hidden}/{r}")))
    {
        let (code, _, body) = send(&p, "GET", &path, Some("alice-token")).await;
        let want = if path.starts_with("/api/") { 404 } else { 410 };
        assert_eq!(code, want, "{path}: {body}");
        assert!(!body.contains("usual place"), "{path}");
    }
    for action in ["favourite", "reblog", "bookmark", "pin"] {
        let (code, _, _) = send(&p, "POST", &format!("/api/v1/statuses/{hidden}/{action}"), Some("bob-token")).await;
        assert_eq!(code, 404, "{action}");
    }
    let q: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("url", &format!("https://{DOMAIN}/@alice/0{hidden}.json"))
        .finish();
    assert_eq!(send(&p, "GET", &format!("/api/oembed?{q}"), None).await.0, 404, "oEmbed by any spelling of its URL");
    let reached = client_requests_since(&s, before);
    assert!(reached.is_empty(), "reached the instance: {reached:?}");

    // 2. Every listing and embedding: the hidden post, and what carries it (a boost, a
    // quote, a notification, a conversation, a grouped notification), is gone; the rest
    // is there.
    let listings = [
        "/api/v1/timelines/home",
        "/api/v1/timelines/public",
        "/api/v1/timelines/tag/x",
        "/api/v1/timelines/list/1",
        "/api/v1/timelines/link?url=x",
        "/api/v1/timelines/direct",
        "/api/v1/accounts/id-alice/statuses?limit=40",
        "/api/v1/bookmarks",
        "/api/v1/favourites",
        "/api/v1/trends/statuses",
        "/api/v1/search?q=x",
        "/api/v2/search?q=x",
        "/api/v1/notifications",
        "/api/v2/notifications",
        "/api/v1/conversations",
        &format!("/api/v1/statuses/{visible}/context"),
        &format!("/api/v1/statuses?id[]={hidden}&id[]={visible}&id%5B%5D=0{boost_of_hidden}"),
        "/users/alice/outbox?page=true",
        "/users/alice/collections/featured",
        &format!("/users/alice/statuses/{visible}/replies"),
        "/@alice.rss",
        "/tags/x.rss",
    ];
    for path in listings {
        let (code, headers, body) = send(&p, "GET", path, Some("alice-token")).await;
        assert_eq!(code, 200, "{path}: {body}");
        for gone in [&hidden, &boost_of_hidden, &quote_of_hidden] {
            assert!(!body.contains(gone.as_str()), "{path} still names {gone}: {body}");
        }
        assert!(body.contains(visible.as_str()), "{path} over-hid the post that does not expire: {body}");
        if !path.contains("id[]") && !path.contains(".rss") && path.starts_with("/api/v1/timelines") {
            assert!(body.contains(boost_of_visible.as_str()), "{path}: a boost of a live post stays");
            assert!(headers.get("link").is_some(), "{path}: pagination kept");
        }
        if let Some(len) = headers.get("content-length") {
            assert_eq!(len.to_str().unwrap(), body.len().to_string(), "{path}: Content-Length fixed");
        }
        assert!(headers.get("etag").is_none(), "{path}");
    }
    // A boost or a quote of it, fetched by id, is answered as deleted.
    assert_eq!(send(&p, "GET", &format!("/api/v1/statuses/{boost_of_hidden}"), Some("bob-token")).await.0, 404);
    assert_eq!(send(&p, "GET", &format!("/api/v1/statuses/{quote_of_hidden}"), Some("bob-token")).await.0, 404);
    assert_eq!(send(&p, "GET", &format!("/api/v1/statuses/{boost_of_visible}"), Some("bob-token")).await.0, 200);
    // Answers to actions on a live post that embeds nothing hidden pass.
    assert_eq!(send(&p, "POST", &format!("/api/v1/statuses/{visible}/favourite"), Some("bob-token")).await.0, 200);

    // 3. Streaming: WebSocket messages that carry it are dropped (SSE: its own test below).
    let url = format!("ws://{}/api/v1/streaming", p.addr);
    let (mut ws, _) =
        tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::connect_async(url)).await.unwrap().unwrap();
    let mut got = Vec::new();
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        let text = msg.into_text().unwrap().to_string();
        if text.contains("\"end\"") {
            break;
        }
        got.push(text);
    }
    assert!(!got.is_empty() && got.iter().all(|m| !m.contains(hidden.as_str())), "WebSocket: {got:?}");
    assert!(got.iter().any(|m| m.contains(visible.as_str())), "WebSocket over-hid: {got:?}");
    assert_eq!(got.len(), 2, "the live post and its boost: {got:?}");

    // 4. Still hidden after a restart (the index is rebuilt from the store before serving).
    p.stop().await;
    let p = s.pavise(None).await;
    assert_eq!(send(&p, "GET", &format!("/@alice/{hidden}"), None).await.0, 410);
    let (_, _, body) = send(&p, "GET", "/api/v1/timelines/home", Some("alice-token")).await;
    assert!(!body.contains(hidden.as_str()) && body.contains(visible.as_str()));
    let report = admin(&p).await;
    assert_eq!(report["hidden_now"], 1, "{report}");
    p.stop().await;
}

/// With nothing hidden, answers pass exactly as the instance sent them.
#[tokio::test]
async fn nothing_hidden_means_nothing_touched() {
    let s = setup(POLICY, false).await;
    let p = s.pavise(None).await;
    let (_, public) = post(&p, "alice-token", "status=hello&visibility=public", FORM).await;
    let (code, headers, body) = send(&p, "GET", "/api/v1/timelines/home", Some("alice-token")).await;
    assert_eq!(code, 200);
    assert!(body.contains(public["id"].as_str().unwrap()));
    let direct = reqwest::Client::new()
        .get(format!("{}/api/v1/timelines/home", s.upstream.url()))
        .bearer_auth("alice-token")
        .send()
        .await
        .unwrap();
    assert_eq!(direct.headers().get("etag"), headers.get("etag"));
    assert_eq!(direct.text().await.unwrap(), body, "byte for byte what the instance sent");
    p.stop().await;
}

/// Mastodon deletes in a background job: after its DELETE answered, the post stays hidden
/// until the instance no longer serves it; then its record is purged, leaving a count.
#[tokio::test]
async fn hidden_until_confirmed_gone_then_purged_and_the_data_dir_keeps_nothing() {
    let s = setup(POLICY, false).await;
    let p = s.pavise(None).await;
    let (_, dm) = post(&p, "alice-token", "status=the+secret+plan&visibility=direct", FORM).await;
    let id = dm["id"].as_str().unwrap().to_owned();
    // The instance answers the DELETE but keeps serving the post for a while.
    let keep_serving = s.instance.lock().unwrap().statuses[&id].clone();
    assert!(wait_for(10, || s.instance.lock().unwrap().deletes == 1).await, "never deleted");
    s.instance.lock().unwrap().statuses.insert(id.clone(), keep_serving);
    assert_eq!(send(&p, "GET", &format!("/@alice/{id}"), None).await.0, 410, "hidden while the instance still has it");
    // The confirmation finds it still there and deletes again; then it is gone.
    assert!(
        wait_for(15, || s.instance.lock().unwrap().deletes >= 2).await,
        "a still-served post was not deleted again"
    );
    let mut report = admin(&p).await;
    for _ in 0..100 {
        if report["counts"]["gone"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        report = admin(&p).await;
    }
    assert_eq!(report["counts"]["gone"], 1, "{report}");
    assert_eq!(report["counts"]["deleted"], 0, "{report}");
    assert_eq!(report["credentials"], 0, "the token's sealed copy goes with the last item that needed it");
    assert_eq!(report["hidden_now"], 0);
    let data = p.data_dir.path().to_owned();
    p.stop().await;

    // What a seizure of the data dir finds.
    for (path, bytes) in files_under(s.data.path()).into_iter().chain(files_under(&data)) {
        let has = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
        for needle in [id.as_str(), "alice", "secret plan", "alice-token", "127.0.0.1"] {
            assert!(!has(needle), "{} holds {needle:?}", path.display());
        }
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(s.data.path()), 0o700);
        for entry in walk(s.data.path()) {
            let want = if entry.is_dir() { 0o700 } else { 0o600 };
            assert_eq!(mode(&entry), want, "{}", entry.display());
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

/// A phone on a bad network: the client hangs up before the instance answers. The post
/// exists on the instance, so pavise must still learn it and delete it at its deadline.
#[tokio::test]
async fn a_client_that_hangs_up_before_the_answer_still_gets_its_post_deleted() {
    let s = setup(POLICY, false).await;
    s.instance.lock().unwrap().create_delay = Some(Duration::from_millis(1500));
    let p = s.pavise(None).await;
    // Over HTTP/2 (what apps speak): giving up resets the stream, and hyper drops the
    // request's handler at once. (An HTTP/1 server lets an in-flight handler finish.)
    let hung_up = reqwest::Client::builder()
        .http2_prior_knowledge()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap()
        .post(p.url("/api/v1/statuses"))
        .bearer_auth("alice-token")
        .header("content-type", FORM)
        .body("status=sent+from+a+train&visibility=direct")
        .send()
        .await;
    assert!(hung_up.is_err(), "the client gave up before the answer");
    assert!(wait_for(5, || s.instance.lock().unwrap().statuses.len() == 1).await, "the instance created it");
    let id = s.instance.lock().unwrap().statuses.keys().next().unwrap().clone();
    let sent = s.upstream.recorded().into_iter().find(|r| r.method == "POST").unwrap();
    assert_eq!(sent.headers["host"], p.addr.to_string().as_str(), "the client's :authority, as the Host");
    assert!(wait_for(10, || !s.on_instance(&id)).await, "the post of a client that hung up was never deleted");
    p.stop().await;
}

/// `scheduled_at`: the instance publishes the post later; its deadline counts from then.
#[tokio::test]
async fn scheduled_posts_expire_counted_from_their_publication() {
    let s = setup(POLICY, false).await;
    let p = s.pavise(None).await;
    let at = humantime::format_rfc3339_millis(std::time::SystemTime::now() + Duration::from_secs(2)).to_string();
    // One with the author's own expires_in, one the DM rule catches at publication.
    let body = serde_json::json!({"status": "later, and briefly", "visibility": "public", "scheduled_at": at, "expires_in": 2});
    let (code, own) = post(&p, "alice-token", &body.to_string(), "application/json").await;
    assert_eq!(code, 200, "{own}");
    assert!(own.get("scheduled_at").is_some(), "{own}");
    let body = serde_json::json!({"status": "later, a DM", "visibility": "direct", "scheduled_at": at});
    let (code, _) = post(&p, "alice-token", &body.to_string(), "application/json").await;
    assert_eq!(code, 200);
    let report = admin(&p).await;
    assert_eq!(
        report["items"].as_array().unwrap().iter().filter(|i| !i["awaiting_publication"].is_null()).count(),
        2,
        "{report}"
    );

    // Published after ~2 s; each is deleted ~2 s after its publication, not before.
    let published = Instant::now();
    let texts = || -> Vec<String> {
        s.instance.lock().unwrap().statuses.values().map(|v| v["text"].as_str().unwrap().to_owned()).collect()
    };
    assert!(wait_for(20, || texts().len() == 2).await, "never published");
    let seen_at = published.elapsed();
    assert!(wait_for(20, || texts().is_empty()).await, "published posts were not deleted: {:?}", texts());
    assert!(published.elapsed() >= seen_at + Duration::from_millis(1500), "deleted before its time after publication");
    let report = admin(&p).await;
    assert_eq!(report["counts"]["pending"], 0, "{report}");
    p.stop().await;
}

/// `expires_in` in every body shape Mastodon accepts is read, stripped and honoured; where
/// pavise cannot apply it, the post is refused and never created.
#[tokio::test]
async fn expires_in_in_every_body_shape() {
    let s = setup("", false).await;
    let p = s.pavise(None).await;
    let multipart = "--B\r\nContent-Disposition: form-data; name=\"status\"\r\n\r\nmultipart\r\n--B\r\nContent-Disposition: form-data; name=\"expires_in\"\r\n\r\n60\r\n--B--\r\n";
    let bodies = [
        ("status=form&expires_in=60", FORM),
        ("status=form+key+encoded&expires%5Fin=60", FORM),
        (multipart, "multipart/form-data; boundary=B"),
        (r#"{"status":"json","expires_in":60}"#, "application/json"),
        (r#"{"status":"json2","expires_in":"60"}"#, "application/json; charset=utf-8"),
        (r#"{"status":"text/x-json","expires_in":60}"#, "text/x-json"),
        (r#"{"status":"activity","expires_in":60}"#, "application/activity+json"),
    ];
    for (body, ct) in bodies {
        let (code, created) = post(&p, "alice-token", body, ct).await;
        assert_eq!(code, 200, "{ct}: {created}");
        let seen = s.upstream.last();
        assert!(!String::from_utf8_lossy(&seen.body).contains("expires"), "{ct}: expires_in reached the instance");
        assert_eq!(seen.headers["content-length"], seen.body.len().to_string().as_str(), "{ct}");
    }
    // In the query string too.
    let resp = reqwest::Client::new()
        .post(p.url("/api/v1/statuses?expires_in=60"))
        .header("host", DOMAIN)
        .bearer_auth("alice-token")
        .header("content-type", FORM)
        .body("status=query")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(s.upstream.last().uri.query().is_none_or(|q| !q.contains("expires")));
    let report = admin(&p).await;
    let items = report["items"].as_array().unwrap();
    assert_eq!(items.len(), bodies.len() + 1, "{report}");
    assert!(items.iter().all(|i| i["rule"] == "expires_in"), "{report}");

    // Refused, and never created.
    let created = s.instance.lock().unwrap().statuses.len();
    for (body, ct, token) in [
        ("status=x&expires_in[]=60", FORM, Some("alice-token")),
        ("status=x&expires_in=soon", FORM, Some("alice-token")),
        (r#"{"status":"x","expires_in":[60]}"#, "application/json", Some("alice-token")),
        (
            "--B\r\nContent-Disposition: form-data; name=\"expires_in\"; filename=\"x\"\r\n\r\n60\r\n--B--\r\n",
            "multipart/form-data; boundary=B",
            Some("alice-token"),
        ),
        ("status=x&expires_in=60", FORM, None),
    ] {
        let mut req = reqwest::Client::new().post(p.url("/api/v1/statuses")).header("content-type", ct).body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 422, "{body}");
    }
    assert_eq!(s.instance.lock().unwrap().statuses.len(), created, "a refused post reached the instance");
    p.stop().await;
}

/// The archive: a member's older posts are swept the first time pavise sees their token.
#[tokio::test]
async fn an_archive_is_swept_from_the_first_sighting_of_a_token() {
    let s = setup(POLICY, false).await;
    let old: Vec<String> = {
        let mut i = s.instance.lock().unwrap();
        (0..120)
            .map(|n| {
                let st = i.status("bob", if n % 3 == 0 { "public" } else { "direct" }, "old");
                let id = st["id"].as_str().unwrap().to_owned();
                i.statuses.insert(id.clone(), st);
                id
            })
            .collect()
    };
    let (policies, data) = (s.policies.path().to_owned(), s.data.path().to_owned());
    let p = Pavise::start(&s.upstream.url(), move |f| {
        f.policies = policies;
        f.data_dir = data;
        f.expiry.confirm_after = "1s".parse().unwrap();
    })
    .await;
    // Any authenticated request will do.
    let _ = send(&p, "GET", "/api/v1/timelines/home", Some("bob-token")).await;
    let dms: Vec<&String> = old.iter().enumerate().filter(|(n, _)| n % 3 != 0).map(|(_, id)| id).collect();
    assert!(wait_for(30, || dms.iter().all(|id| !s.on_instance(id))).await, "the archive's old DMs were not deleted");
    assert!(old.iter().enumerate().filter(|(n, _)| n % 3 == 0).all(|(_, id)| s.on_instance(id)), "over-deleted");
    let report = admin(&p).await;
    let sweep = &report["sweeps"][0];
    assert_eq!(
        (sweep["account"].as_str(), sweep["state"].as_str(), sweep["seen"].as_u64()),
        (Some("bob"), Some("done"), Some(120)),
        "{report}"
    );
    // A finished sweep keeps no page cursor: it would be the id of a deleted post.
    assert!(sweep.get("cursor").is_none_or(|c| c.is_null()), "a done sweep kept its cursor: {report}");
    // Seen again after a restart (the sighting set is in memory only): not swept again.
    p.stop().await;
    let (policies, data) = (s.policies.path().to_owned(), s.data.path().to_owned());
    let p = Pavise::start(&s.upstream.url(), move |f| {
        f.policies = policies;
        f.data_dir = data;
    })
    .await;
    let pages = || s.upstream.recorded().iter().filter(|r| r.uri.path() == "/api/v1/accounts/id-bob/statuses").count();
    let before = pages();
    let _ = send(&p, "GET", "/api/v1/timelines/home", Some("bob-token")).await;
    assert!(
        wait_for(5, || s.upstream.recorded().iter().filter(|r| r.uri.path().ends_with("verify_credentials")).count()
            >= 2)
        .await,
        "the restarted relay looked at the token"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(pages(), before, "an archive already swept is not swept again");

    // New rules: the member's next request sweeps the archive again under them.
    std::fs::write(
        s.policies.path().join("test.toml"),
        format!("{POLICY}[[expire]]\nname = \"all\"\nafter = \"1s\"\n"),
    )
    .unwrap();
    let r = reqwest::Client::new().post(p.admin_url("/admin/reload")).bearer_auth(&p.token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let _ = send(&p, "GET", "/api/v1/timelines/home", Some("bob-token")).await;
    assert!(wait_for(30, || old.iter().all(|id| !s.on_instance(id))).await, "not swept again under the new rules");
    p.stop().await;
}

/// Streams: events for the hidden post never reach the client, however chunked.
#[tokio::test]
async fn server_sent_events_of_a_hidden_post_are_dropped_as_they_stream() {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    let rx = Arc::new(Mutex::new(Some(rx)));
    let s = setup(POLICY, true).await;
    let sse = RecordingUpstream::with_handler(move |_| {
        let rx = rx.lock().unwrap().take().expect("one SSE request");
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|b| (Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Frame::data(b)), rx))
        });
        let mut r = http::Response::new(BodyExt::boxed(StreamBody::new(stream)));
        r.headers_mut().insert("content-type", "text/event-stream".parse().unwrap());
        r
    })
    .await;
    let p = s.pavise(Some(sse.url())).await;
    let (_, dm) = post(&p, "alice-token", "status=x&visibility=direct", FORM).await;
    let hidden = dm["id"].as_str().unwrap().to_owned();
    let resp = reqwest::Client::new().get(p.url("/api/v1/streaming/user")).send().await.unwrap();
    let mut body = resp.bytes_stream();
    let status = |id: &str| format!(r#"{{"id":"{id}","uri":"u","visibility":"direct","reblog":null}}"#);
    // Before the deadline it streams; after, an update about it (say, an edit) does not.
    tx.send(Bytes::from(format!("event: update\ndata: {}\n\n", status(&hidden)))).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), body.next()).await.unwrap().unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains(&hidden));
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let edit = format!("event: status.update\ndata: {}\n\n", status(&hidden));
    let (a, b) = edit.split_at(20);
    tx.send(Bytes::from(a.to_owned())).await.unwrap();
    tx.send(Bytes::from(b.to_owned())).await.unwrap();
    tx.send(Bytes::from(format!("event: update\ndata: {}\n\n", status("5")))).await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), body.next()).await.unwrap().unwrap().unwrap();
    let next = String::from_utf8_lossy(&next).into_owned();
    assert!(next.contains(r#""id":"5""#) && !next.contains(&hidden), "{next}");
    drop(tx);
    p.stop().await;
}

// ---------------------------------------------------------------------------------------
// The red team's findings against the first pass (issue 11, REPORT in notes/atk11), one
// regression test each, named after its finding.
// ---------------------------------------------------------------------------------------

/// Any request through pavise, addressed to the instance's domain.
async fn call(
    p: &Pavise,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<(&str, &str)>,
    headers: &[(&str, &str)],
) -> (u16, http::HeaderMap, String) {
    let mut req = reqwest::Client::new().request(method.parse().unwrap(), p.url(path)).header("host", DOMAIN);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some((ct, body)) = body {
        req = req.header("content-type", ct).body(body.to_owned());
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    (status, headers, String::from_utf8_lossy(&resp.bytes().await.unwrap()).into_owned())
}

async fn admin_state(p: &Pavise, state: &str) -> serde_json::Value {
    let r = reqwest::Client::new()
        .get(p.admin_url(&format!("/admin/expiry?state={state}")))
        .bearer_auth(&p.token)
        .send()
        .await
        .unwrap();
    serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
}

/// What a forensic read of a store file opens with `seal`: every redb leaf page, live or
/// freed, walked for its rows (the red team's `forensic.py`).
fn forensic(bytes: &[u8], seal: &pavise::store::RecordSeal) -> Vec<serde_json::Value> {
    const PAGE: usize = 4096;
    let u32_at = |at: usize| bytes.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
    let mut opened = Vec::new();
    for page in (0..bytes.len().saturating_sub(PAGE)).step_by(PAGE) {
        if bytes[page] != 1 {
            continue;
        }
        let n = usize::from(u16::from_le_bytes([bytes[page + 2], bytes[page + 3]]));
        if n == 0 || n > 500 {
            continue;
        }
        let ends = |from: usize| (0..n).map(|i| u32_at(page + from + 4 * i)).collect::<Option<Vec<_>>>();
        let (Some(kends), Some(vends)) = (ends(4), ends(4 + 4 * n)) else { continue };
        let start = 4 + 8 * n;
        if !kends.windows(2).all(|w| w[0] < w[1])
            || kends[0] <= start
            || vends[0] < kends[n - 1]
            || vends[n - 1] > PAGE * 64
        {
            continue;
        }
        let (mut kprev, mut vprev) = (start, kends[n - 1]);
        for (&kend, &vend) in kends.iter().zip(&vends) {
            let key = bytes.get(page + kprev..page + kend).unwrap_or_default();
            let value = bytes.get(page + vprev..page + vend).unwrap_or_default();
            (kprev, vprev) = (kend, vend);
            let Ok(key) = std::str::from_utf8(key) else { continue };
            for table in ["expiry_items", "expiry_credentials", "expiry_sweeps"] {
                if let Ok(plain) = seal.open(table, key, value) {
                    opened.push(serde_json::from_slice(&plain).unwrap_or_default());
                }
            }
        }
    }
    opened
}

/// Finding 1: a seized data dir, read page by page together with the key file (kept
/// elsewhere now, as pavise demands), opens no record of a deleted post and no token.
#[tokio::test]
async fn finding_1_a_seized_data_dir_and_its_key_file_open_no_deleted_post_and_no_token() {
    let s = setup(POLICY, false).await;
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("expiry.key");
    let kf = key_file.clone();
    let p = s
        .pavise_with(move |f| {
            f.expiry.key_file = Some(kf);
            f.expiry.allow_key_in_data_dir = false;
            f.expiry.forget_within = "1s".parse().unwrap();
        })
        .await;
    let mut ids = Vec::new();
    for who in ["alice", "erin"] {
        for i in 0..4 {
            let (code, dm) =
                post(&p, &format!("{who}-token"), &format!("status=seize+{who}+{i}&visibility=direct"), FORM).await;
            assert_eq!(code, 200);
            ids.push(dm["id"].as_str().unwrap().to_owned());
        }
    }
    // A post still waiting for its deadline: its record must open (the walk below reads
    // what it should), and nothing else may.
    let (code, live) = post(&p, "carol-token", "status=later&visibility=public&expires_in=3600", FORM).await;
    assert_eq!(code, 200);
    let live = live["id"].as_str().unwrap().to_owned();
    let mut report = admin(&p).await;
    for _ in 0..200 {
        if report["counts"]["gone"] == 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        report = admin(&p).await;
    }
    assert_eq!(report["counts"]["gone"], 8, "{report}");
    p.stop().await;

    let data = s.data.path();
    assert!(!data.join("expiry.key").exists(), "no key beside the data");
    let sealer = pavise::expiry::seal::Sealer::load_or_create(&key_file).unwrap();
    let store_key = sealer.store_key();
    let epochs = pavise::store::seal::EpochFile::open_or_create(&data.join(pavise::store::seal::EPOCH_FILE)).unwrap();
    let mut seals: Vec<pavise::store::RecordSeal> = epochs
        .read(&store_key)
        .unwrap()
        .into_iter()
        .map(|(_, epoch, k)| pavise::store::RecordSeal::for_epoch(epoch, &k))
        .collect();
    assert!(!seals.is_empty(), "the key file opens the current epoch");
    seals.push(store_key.legacy_seal());
    let bytes = std::fs::read(data.join("pavise.redb")).unwrap();
    let mut opened_live = false;
    for seal in &seals {
        for record in forensic(&bytes, seal) {
            let text = record.to_string();
            opened_live |= text.contains(live.as_str());
            assert!(!ids.iter().any(|id| text.contains(id.as_str())), "a deleted post's record opened: {text}");
            assert!(!text.contains("erin") && !text.contains("alice"), "a record naming a member opened: {text}");
        }
    }
    assert!(opened_live, "the walk opens the live record with the current epoch's key");
}

/// Finding 1, the other half: pavise will not run (in Tor mode, i.e. for real) with the key
/// file inside the data dir, nor with an older version's default key still there, and says
/// what to do. (Refused before anything listens or dials: no Tor is started.)
#[tokio::test]
async fn finding_1_the_key_file_is_refused_beside_the_data() {
    let data = tempfile::tempdir().unwrap();
    let mut file = pavise::config::FileConfig {
        data_dir: data.path().to_owned(),
        policies: data.path().join("policies"),
        public: pavise::config::PublicConfig { listen: "127.0.0.1:0".parse().unwrap(), ..Default::default() },
        admin: pavise::config::AdminConfig { listen: "127.0.0.1:0".parse().unwrap(), ..Default::default() },
        egress: pavise::config::EgressConfig { listen: "127.0.0.1:0".parse().unwrap(), ..Default::default() },
        ..Default::default()
    };
    let refused = |file: pavise::config::FileConfig| async move {
        let config = pavise::config::Config::validate(file, &Default::default(), None).unwrap();
        match pavise::app::start(config, tokio_util::sync::CancellationToken::new()).await {
            Err(e) => e.to_string(),
            Ok(_) => panic!("pavise started with its key in the data dir"),
        }
    };
    let mut inside = file.clone();
    inside.expiry.key_file = Some(data.path().join("keys/expiry.key"));
    let err = refused(inside).await;
    assert!(err.contains("inside the data dir") && err.contains("PAVISE_EXPIRY_KEY_FILE"), "{err}");
    assert!(!data.path().join("keys/expiry.key").exists(), "refused before a key was made");
    // The default is beside the data dir; an older version's default, in it, is moved by
    // the admin, never replaced by a new key that would open nothing.
    std::fs::write(data.path().join("expiry.key"), [7u8; 32]).unwrap();
    file.expiry.key_file = None;
    let err = refused(file).await;
    assert!(err.contains("Move it to") && err.contains("-expiry.key"), "{err}");
}

/// Finding 2: the instance answers a creation late (past the client's timeout), too late
/// (past the task's own), or with a 5xx after it created the post: each post is scheduled
/// and deleted at its deadline all the same.
#[tokio::test]
async fn finding_2_a_slow_or_lost_creation_answer_still_gets_the_post_deleted() {
    let s = setup(POLICY, false).await;
    let p = s
        .pavise_with(|f| {
            f.expiry.request_timeout = "1s".parse().unwrap();
            f.expiry.create_timeout = "2s".parse().unwrap();
        })
        .await;
    // Late for the client, in time for the task.
    s.instance.lock().unwrap().create_delay = Some(Duration::from_millis(1600));
    let (code, _) = post(&p, "alice-token", "status=slow+one&visibility=direct", FORM).await;
    assert_eq!(code, 504, "the client's answer timed out");
    // Too late for the task as well: the answer is lost, the post looked for.
    s.instance.lock().unwrap().create_delay = Some(Duration::from_millis(3500));
    let (code, _) = post(&p, "alice-token", "status=slower+one&visibility=public&expires_in=3", FORM).await;
    assert_eq!(code, 504);
    // Created, then a 500.
    {
        let mut i = s.instance.lock().unwrap();
        i.create_delay = None;
        i.fail_create_answer = true;
    }
    let (code, _) = post(&p, "alice-token", "status=dropped+answer&visibility=direct", FORM).await;
    assert_eq!(code, 500);
    s.instance.lock().unwrap().fail_create_answer = false;
    let made = s.instance.lock().unwrap().next_id;
    assert_eq!(made, 3, "the instance created all three");
    let created: Vec<String> = (1..=made).map(|n| format!("{}", 110_000_000_000_000_000u64 + n)).collect();
    assert!(
        wait_for(30, || created.iter().all(|id| !s.on_instance(id))).await,
        "a post whose creation answer was late or lost was never deleted: {}",
        admin(&p).await
    );
    p.stop().await;
}

/// Finding 3: a sweep that could not run (a 503 on `verify_credentials`, or on the first
/// page) is tried again on the member's next request after its back-off.
#[tokio::test]
async fn finding_3_a_sweep_that_failed_is_tried_again_on_a_later_request() {
    let s = setup(POLICY, false).await;
    let old: Vec<String> = {
        let mut i = s.instance.lock().unwrap();
        (0..6)
            .map(|n| {
                let st = i.status(if n < 3 { "bob" } else { "carol" }, "direct", "old");
                let id = st["id"].as_str().unwrap().to_owned();
                i.statuses.insert(id.clone(), st);
                id
            })
            .collect()
    };
    let p = s.pavise_with(|f| f.expiry.sweep_archives = true).await;
    for (who, fault) in [("bob", "verify"), ("carol", "page")] {
        {
            let mut i = s.instance.lock().unwrap();
            if fault == "verify" {
                i.fail_verify = 1;
            } else {
                i.fail_pages = 1;
            }
        }
        let mine: Vec<&String> = if who == "bob" { old[..3].iter().collect() } else { old[3..].iter().collect() };
        let mut swept = false;
        for _ in 0..40 {
            let _ = send(&p, "GET", "/api/v1/timelines/home", Some(&format!("{who}-token"))).await;
            tokio::time::sleep(Duration::from_millis(250)).await;
            if mine.iter().all(|id| !s.on_instance(id)) {
                swept = true;
                break;
            }
        }
        assert!(swept, "{who} ({fault} failed once): the archive was never swept again: {}", admin(&p).await);
    }
    p.stop().await;
}

/// Finding 4: a DM sent from an app with the `write` scope only: the instance will not show
/// it to that token, so its keep rules are judged on what pavise recorded, and it is deleted.
#[tokio::test]
async fn finding_4_a_dm_from_a_write_only_app_is_deleted() {
    let s = setup(POLICY, false).await;
    let p = s.pavise(None).await;
    let (code, dm) = post(&p, "alice-write-token", "status=from+a+bridge&visibility=direct", FORM).await;
    assert_eq!(code, 200);
    let id = dm["id"].as_str().unwrap().to_owned();
    assert!(wait_for(15, || !s.on_instance(&id)).await, "a write-only app's DM was never deleted: {}", admin(&p).await);
    let mut report = admin(&p).await;
    for _ in 0..100 {
        if report["counts"]["gone"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        report = admin(&p).await;
    }
    assert_eq!(
        (report["counts"]["gone"].as_u64(), report["counts"]["failed"].as_u64()),
        (Some(1), Some(0)),
        "{report}"
    );
    p.stop().await;
}

/// Finding 5: the poll and the media of an expired post are hidden with it, under every
/// URL Mastodon serves them at; a post that does not expire keeps its own.
#[tokio::test]
async fn finding_5_the_poll_and_media_of_an_expired_post_are_hidden_with_it() {
    let s = setup(POLICY, true).await;
    let p = s.pavise(None).await;
    // Uploads go straight to the instance here (the media stage has tests of its own).
    let upload = || async {
        let r = reqwest::Client::new()
            .post(format!("{}/api/v2/media", s.upstream.url()))
            .bearer_auth("alice-token")
            .send()
            .await
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&r.bytes().await.unwrap()).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (hidden_media, kept_media) = (upload().await, upload().await);
    let body = |vis: &str, media: &str| {
        serde_json::json!({"status": "where we meet", "visibility": vis, "media_ids": [media], "poll": {"options": ["a", "b"], "expires_in": 86400}}).to_string()
    };
    let (code, dm) = post(&p, "alice-token", &body("direct", &hidden_media), "application/json").await;
    assert_eq!(code, 200, "{dm}");
    let (_, public) = post(&p, "alice-token", &body("public", &kept_media), "application/json").await;
    let (hidden_poll, kept_poll) =
        (dm["poll"]["id"].as_str().unwrap().to_owned(), public["poll"]["id"].as_str().unwrap().to_owned());
    let urls = |poll: &str, media: &str| {
        vec![
            ("GET", format!("/api/v1/polls/{poll}")),
            ("GET", format!("/api/v1/polls/0{poll}.json")),
            ("POST", format!("/api/v1/polls/{poll}/votes")),
            ("GET", format!("/api/v1/media/{media}")),
            ("GET", format!("/media/sc{media}")),
            ("GET", format!("/media/sc{media}/player")),
            ("GET", format!("/media_proxy/{media}/original")),
            ("GET", format!("/system/media_attachments/files/000/000/{media}/original/photo.png")),
            ("GET", format!("//system/media_attachments/files/000/000/{media}/small/photo.png")),
        ]
    };
    for (m, u) in urls(&hidden_poll, &hidden_media) {
        // The stand-in reads only the plain spellings; pavise reads them all.
        if u.contains(".json") || u.starts_with("//") || u.contains("/0") {
            continue;
        }
        assert_eq!(call(&p, m, &u, Some("bob-token"), None, &[]).await.0, 200, "{m} {u} before the deadline");
    }
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let before = s.upstream.recorded().len();
    for (m, u) in urls(&hidden_poll, &hidden_media) {
        let (code, _, body) = call(&p, m, &u, Some("bob-token"), None, &[]).await;
        assert_eq!(code, 404, "{m} {u}: {body}");
    }
    let reached = client_requests_since(&s, before);
    assert!(reached.is_empty(), "reached the instance: {reached:?}");
    for (m, u) in urls(&kept_poll, &kept_media) {
        if u.contains(".json") || u.starts_with("//") || u.contains("/0") {
            continue;
        }
        assert_eq!(call(&p, m, &u, Some("bob-token"), None, &[]).await.0, 200, "{m} {u}: over-hidden");
    }
    p.stop().await;
}

/// Finding 5, the class: media pavise did not see attached (a record from before it
/// learned them, an edit made past it) is learned when the due post is read again before
/// its deletion, and hidden with it from then on.
#[tokio::test]
async fn finding_5_media_the_record_does_not_name_is_learned_at_the_re_check() {
    let s = setup(POLICY, true).await;
    let p = s.pavise(None).await;
    let (code, dm) = post(&p, "alice-token", "status=no+media+yet&visibility=direct", FORM).await;
    assert_eq!(code, 200);
    let id = dm["id"].as_str().unwrap().to_owned();
    let media = "777".to_owned();
    {
        let mut i = s.instance.lock().unwrap();
        let m = serde_json::json!({"id": media, "type": "image",
            "url": format!("https://{DOMAIN}/system/media_attachments/files/000/000/{media}/original/p.png"),
            "text_url": format!("https://{DOMAIN}/media/late{media}")});
        i.media.insert(media.clone(), m.clone());
        i.statuses.get_mut(&id).unwrap()["media_attachments"] = serde_json::json!([m]);
    }
    let file = format!("/system/media_attachments/files/000/000/{media}/original/p.png");
    assert_eq!(call(&p, "GET", &file, None, None, &[]).await.0, 200, "before the deadline");
    // Due, re-read by the scheduler (its DELETE keeps failing), learned.
    let mut codes = Vec::new();
    for _ in 0..60 {
        codes = Vec::new();
        for u in [format!("/api/v1/media/{media}"), format!("/media/late{media}"), file.clone()] {
            codes.push(call(&p, "GET", &u, Some("alice-token"), None, &[]).await.0);
        }
        if codes == [404, 404, 404] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(codes, [404, 404, 404], "{}", admin(&p).await);
    p.stop().await;
}

/// Finding 6: a report (Mastodon keeps a reported post for good), a filter or a moderator's
/// batch action cannot name an expired post, in any body shape.
#[tokio::test]
async fn finding_6_reports_filters_and_batch_actions_cannot_name_an_expired_post() {
    let s = setup(POLICY, true).await;
    let p = s.pavise(None).await;
    let (_, dm) = post(&p, "alice-token", "status=the+documents&visibility=direct", FORM).await;
    let (_, other) = post(&p, "alice-token", "status=hello&visibility=public", FORM).await;
    let (h, v) = (dm["id"].as_str().unwrap().to_owned(), other["id"].as_str().unwrap().to_owned());
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let forwarded = |before: usize| -> Vec<String> {
        s.upstream.recorded()[before..]
            .iter()
            .filter(|r| r.headers.contains_key("x-forwarded-for"))
            .map(|r| format!("{}?{} {}", r.uri.path(), r.uri.query().unwrap_or(""), String::from_utf8_lossy(&r.body)))
            .collect()
    };
    // Only the hidden post named: refused as for a deleted post, never forwarded.
    let before = s.upstream.recorded().len();
    for (path, ct, body) in [
        ("/api/v1/reports", FORM, format!("account_id=1&status_ids%5B%5D=0{h}&comment=x")),
        ("/api/v1/reports", "application/json", format!(r#"{{"account_id":"1","status_ids":["{h}"]}}"#)),
        ("/api/v1/reports", "application/json, text/plain", format!(r#"{{"account_id":"1","status_ids":[{h}]}}"#)),
        (
            "/api/v1/reports",
            "multipart/form-data; boundary=B",
            format!("--B\r\nContent-Disposition: form-data; name=\"status_ids[]\"\r\n\r\n{h}\r\n--B--\r\n"),
        ),
        ("/api/v2/filters/3/statuses", FORM, format!("status_id={h}-x")),
        ("/api/v2/filters/3/statuses", "application/json", format!(r#"{{"status_id":"{h}"}}"#)),
    ] {
        let (code, _, answer) = call(&p, "POST", path, Some("bob-token"), Some((ct, &body)), &[]).await;
        assert_eq!(code, 404, "{path} {ct}: {answer}");
    }
    let (code, _, _) =
        call(&p, "POST", &format!("/api/v1/reports?account_id=1;status_ids[]={h}"), Some("bob-token"), None, &[]).await;
    assert_eq!(code, 404, "in the query, split the way Rack 2 splits it");
    assert!(forwarded(before).is_empty(), "{:?}", forwarded(before));
    // With a live post as well: forwarded without the hidden one.
    let before = s.upstream.recorded().len();
    let (code, _, answer) = call(
        &p,
        "POST",
        "/api/v1/reports",
        Some("bob-token"),
        Some((FORM, &format!("account_id=1&status_ids[]={h}&status_ids[]={v}&comment=two"))),
        &[],
    )
    .await;
    assert_eq!(code, 200, "{answer}");
    let batch = format!(
        "admin_status_batch_action%5Bstatus_ids%5D%5B%5D={h}&admin_status_batch_action%5Bstatus_ids%5D%5B%5D={v}&report=1"
    );
    call(&p, "POST", "/admin/accounts/1/statuses/batch", Some("bob-token"), Some((FORM, &batch)), &[]).await;
    let sent = forwarded(before);
    assert_eq!(sent.len(), 2, "{sent:?}");
    for r in &sent {
        assert!(!r.contains(&h[2..]) && r.contains(v.as_str()), "{r}");
    }
    p.stop().await;
}

/// Finding 7: a creation replayed for its `Idempotency-Key` after the deadline, and the
/// answer to an edit of a post quoting an expired one, are filtered like reads.
#[tokio::test]
async fn finding_7_creation_replays_and_edit_answers_do_not_bring_it_back() {
    let s = setup(POLICY, true).await;
    let p = s.pavise(None).await;
    let idem = [("idempotency-key", "retry-123")];
    let body = Some((FORM, "status=the+code+is+4471&visibility=direct"));
    let (code, _, first) = call(&p, "POST", "/api/v1/statuses", Some("alice-token"), body, &idem).await;
    assert_eq!(code, 200);
    let h = serde_json::from_str::<serde_json::Value>(&first).unwrap()["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let quote = s.instance.lock().unwrap().quote(&h);
    let (code, _, replay) = call(&p, "POST", "/api/v1/statuses", Some("alice-token"), body, &idem).await;
    assert_eq!(code, 404, "a replay of the expired post: {replay}");
    assert!(!replay.contains("4471"));
    assert_eq!(send(&p, "GET", &format!("/api/v1/statuses/{h}"), Some("alice-token")).await.0, 404, "still hidden");
    assert_eq!(admin(&p).await["hidden_now"], 1);
    let (code, _, edited) = call(
        &p,
        "PUT",
        &format!("/api/v1/statuses/{quote}"),
        Some("bob-token"),
        Some((FORM, "status=look+at+this+(edited)")),
        &[],
    )
    .await;
    assert_eq!(code, 404, "the edit's answer quotes the expired post: {edited}");
    assert!(!edited.contains("4471"));
    p.stop().await;
}

/// Finding 8: a `Content-Type` with a second, comma-separated value is read as Rails reads
/// it: `expires_in` is honoured and a reference to an expired post refused.
#[tokio::test]
async fn finding_8_a_comma_in_the_content_type_changes_nothing() {
    let s = setup(POLICY, true).await;
    let p = s.pavise(None).await;
    let (_, dm) = post(&p, "alice-token", "status=x&visibility=direct", FORM).await;
    let h = dm["id"].as_str().unwrap().to_owned();
    let (code, created) =
        post(&p, "alice-token", r#"{"status":"brief","expires_in":60}"#, "application/json, text/plain").await;
    assert_eq!(code, 200, "{created}");
    let seen = s.upstream.last();
    assert!(!String::from_utf8_lossy(&seen.body).contains("expires_in"));
    let id = created["id"].as_str().unwrap();
    let items = admin(&p).await["items"].as_array().unwrap().clone();
    assert!(items.iter().any(|i| i["status_id"] == id && i["rule"] == "expires_in"), "{items:?}");
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let reply = format!(r#"{{"status":"@alice replying","visibility":"direct","in_reply_to_id":"{h}"}}"#);
    for ct in ["application/json", "application/json, text/plain", "application/json,x; charset=utf-8"] {
        assert_eq!(post(&p, "bob-token", &reply, ct).await.0, 404, "{ct}");
    }
    p.stop().await;
}

/// Finding 9: a `scheduled_at` post is recorded though asking whose token it is fails
/// once, is published, and expires.
#[tokio::test]
async fn finding_9_a_scheduled_post_is_recorded_though_verify_credentials_fails() {
    let s = setup(POLICY, false).await;
    let p = s.pavise(None).await;
    s.instance.lock().unwrap().fail_verify = 1;
    let at = humantime::format_rfc3339_millis(std::time::SystemTime::now() + Duration::from_secs(2)).to_string();
    let body = serde_json::json!({"status": "later, a DM", "visibility": "direct", "scheduled_at": at});
    let (code, answer) = post(&p, "dora-token", &body.to_string(), "application/json").await;
    assert_eq!(code, 200, "{answer}");
    let report = admin(&p).await;
    assert_eq!(
        report["items"].as_array().unwrap().iter().filter(|i| !i["awaiting_publication"].is_null()).count(),
        1,
        "never a 200 without a record: {report}"
    );
    let texts = || s.instance.lock().unwrap().statuses.len();
    assert!(wait_for(20, || texts() == 1).await, "never published");
    assert!(wait_for(30, || texts() == 0).await, "the published DM was not deleted: {}", admin(&p).await);
    p.stop().await;
}

/// Finding 10: a token sent the other ways Doorkeeper takes one (`?access_token=`, in a
/// form or JSON body) is the one the post is deleted with.
#[tokio::test]
async fn finding_10_a_token_sent_as_a_parameter_deletes_the_post() {
    let s = setup(POLICY, false).await;
    let p = s.pavise(None).await;
    let mut ids = Vec::new();
    for (path, ct, body) in [
        ("/api/v1/statuses?access_token=alice-token", FORM, "status=q&visibility=direct".to_owned()),
        ("/api/v1/statuses", FORM, "status=f&visibility=direct&access_token=alice-token".to_owned()),
        (
            "/api/v1/statuses",
            "application/json",
            r#"{"status":"j","visibility":"direct","access_token":"alice-token"}"#.to_owned(),
        ),
        ("/api/v1/statuses", FORM, "status=e&visibility=public&expires_in=2&access_token=alice-token".to_owned()),
    ] {
        let (code, _, answer) = call(&p, "POST", path, None, Some((ct, &body)), &[]).await;
        assert_eq!(code, 200, "{path} {body}: {answer}");
        ids.push(serde_json::from_str::<serde_json::Value>(&answer).unwrap()["id"].as_str().unwrap().to_owned());
    }
    assert!(wait_for(20, || ids.iter().all(|id| !s.on_instance(id))).await, "{}", admin_state(&p, "failed").await);
    p.stop().await;
}

/// Finding 11: server-rendered pages that show an expired post (a filter's statuses, a
/// moderator's view of an account) are refused while it is hidden.
#[tokio::test]
async fn finding_11_pages_that_render_an_expired_post_are_refused() {
    let s = setup(POLICY, true).await;
    let p = s.pavise(None).await;
    let (_, dm) = post(&p, "alice-token", "status=safehouse+on+elm+street&visibility=direct", FORM).await;
    let h = dm["id"].as_str().unwrap().to_owned();
    for page in ["/filters/3/statuses", "/admin/accounts/1/statuses"] {
        assert_eq!(call(&p, "GET", page, Some("bob-token"), None, &[]).await.0, 200, "{page} before the deadline");
    }
    tokio::time::sleep(Duration::from_millis(2300)).await;
    for page in ["/filters/3/statuses", "/admin/accounts/1/statuses", "//filters/3/statuses/"] {
        let (code, _, body) = call(&p, "GET", page, Some("bob-token"), None, &[]).await;
        assert_eq!(code, 404, "{page}: {body}");
        assert!(!body.contains("elm street") && !body.contains(h.as_str()), "{page}");
    }
    p.stop().await;
}

/// Finding 12: pagination keeps working without naming an expired post: a cursor on it
/// moves to the nearest post the page still shows, a page of nothing but it is followed to
/// the next one; a quote authorization of it is gone.
#[tokio::test]
async fn finding_12_pagination_and_quote_authorizations_never_name_an_expired_post() {
    let s = setup(POLICY, true).await;
    let p = s.pavise(None).await;
    let (_, a) = post(&p, "alice-token", "status=oldest&visibility=public", FORM).await;
    let (_, b) = post(&p, "alice-token", "status=older&visibility=public", FORM).await;
    let (_, dm) = post(&p, "alice-token", "status=newest+secret&visibility=direct", FORM).await;
    let (a, b, h) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap(), dm["id"].as_str().unwrap().to_owned());
    tokio::time::sleep(Duration::from_millis(2300)).await;

    let pv = &p;
    let page = |path: String| async move {
        let (code, headers, body) = call(pv, "GET", &path, Some("alice-token"), None, &[]).await;
        let link =
            headers.get_all("link").iter().map(|v| v.to_str().unwrap().to_owned()).collect::<Vec<_>>().join(", ");
        let ids: Vec<String> = serde_json::from_str::<Vec<serde_json::Value>>(&body)
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect();
        (code, link, ids)
    };
    for base in ["/api/v1/accounts/id-alice/statuses", "/api/v1/timelines/direct"] {
        // The hidden post at the page's edge: the cursor moves to its kept neighbour.
        let (code, link, ids) = page(format!("{base}?limit=2")).await;
        assert_eq!(code, 200);
        assert!(!link.contains(&h) && ids.iter().all(|i| *i != h), "{base}: {link} {ids:?}");
        assert!(link.contains(&format!("max_id={b}")) && link.contains(&format!("min_id={b}")), "{base}: {link}");
        // A page of nothing but the hidden post: the next one is fetched in its place.
        let (code, link, ids) = page(format!("{base}?limit=1")).await;
        assert_eq!((code, ids.as_slice()), (200, [b.to_owned()].as_slice()), "{base}");
        assert!(!link.contains(&h), "{base}: {link}");
        // Following the rewritten link goes on where it should.
        let next = link.split(", ").find(|l| l.contains("rel=\"next\"")).unwrap();
        let next = next[next.find(base).unwrap()..next.find('>').unwrap()].to_owned();
        let (_, _, ids) = page(next).await;
        assert_eq!(ids, [a.to_owned()], "{base}: the page after");
    }
    let quote = s.instance.lock().unwrap().quote(&h);
    let (code, _, body) = call(&p, "GET", &format!("/users/bob/quote_authorizations/{quote}"), None, None, &[]).await;
    assert_eq!(code, 410, "{body}");
    p.stop().await;
}

/// Two scheduled posts with the same text (a reminder sent to two people): each
/// publication finds its own status, and both expire.
#[tokio::test]
async fn two_scheduled_posts_with_the_same_text_each_expire() {
    let s = setup(POLICY, false).await;
    let p = s.pavise(None).await;
    let at = humantime::format_rfc3339_millis(std::time::SystemTime::now() + Duration::from_secs(2)).to_string();
    for _ in 0..2 {
        let body = serde_json::json!({"status": "see you at 5", "visibility": "direct", "scheduled_at": at});
        assert_eq!(post(&p, "frank-token", &body.to_string(), "application/json").await.0, 200);
    }
    let count = || s.instance.lock().unwrap().statuses.len();
    assert!(wait_for(20, || count() == 2).await, "never published");
    assert!(wait_for(40, || count() == 0).await, "a publication was never found: {}", admin(&p).await);
    p.stop().await;
}
