//! Route classification: done once per request, matched on by every later stage.
//!
//! The classes follow what the stages need to tell apart, not Mastodon's full routing
//! table: the shield limits `Auth` and `Inbox` differently, expiry cares about
//! `StatusCreate` and every request that names a status, the privacy stage treats `Inbox`
//! bodies as signed bytes that must not change.
//!
//! # Read the path the way Rails does
//! A relay that enforces policy in front of another parser is only as strong as the
//! difference between the two. Rails' router ([`Journey::Router::Utils.normalize_path`])
//! squeezes repeated slashes and drops trailing ones; every route takes an optional format
//! suffix (`/users/alice/inbox.json`, `/api/v1/statuses/1.json`); path parameters are
//! percent-decoded (`/users/%61lice`); and ActiveRecord casts an id with Ruby's
//! `String#to_i`, so `0123`, `123-x`, `1_2_3` and `%31%32%33` all find status 123. So the
//! path is canonicalized once, here ([`CanonicalPath`]), the route carries the canonical
//! status id and account, and no stage ever looks at the raw path again.
//!
//! Literal segments are compared after decoding too. Rails would not route
//! `/api/v1/%73tatuses/1`, so reading it as a status read only ever makes pavise stricter
//! than the instance, never laxer: the direction a privacy relay may err in. The same
//! holds for the format suffix under `/api` and `/auth`, which Mastodon routes with
//! `format: false` (`/api/v1/statuses/1.json` is a 404 there, a status read here).
//!
//! The table follows today's `config/routes.rb` and `config/routes/api.rb`: besides the
//! `/users/NAME/...` routes, Mastodon 4.4's numeric `/ap/users/ID/...` (inbox, statuses,
//! collections), the instance actor (`/actor`, `/actor/inbox`), and every route that
//! shows a status under another name: `/api/web/embeds/:id`, `/redirect/statuses/:id`,
//! `GET /api/v1/statuses?id[]=` and `/api/oembed?url=...` (whose `url` is routed like a
//! path: the query is read for that one route). The method is the one Rails dispatches
//! (`proxy::method` reads Rack's `_method` before stages run).
//!
//! [`Journey::Router::Utils.normalize_path`]: https://github.com/rails/rails/blob/main/actionpack/lib/action_dispatch/journey/router/utils.rb

use std::borrow::Cow;

use http::Method;

/// The coarse class a request belongs to. `[[limit]] route = "..."` names these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RouteClass {
    /// `POST /inbox`, `POST /users/NAME/inbox`, `POST /ap/users/ID/inbox`,
    /// `POST /actor/inbox`: signed deliveries.
    Inbox,
    /// `POST /api/v1/statuses`, `PUT`/`PATCH /api/v1/statuses/:id`.
    StatusCreate,
    /// A read of a status: `GET /api/v1/statuses/:id` (and `?id[]=` for several),
    /// `/@user/:id`, `/users/u/statuses/:id`, `/ap/users/1/statuses/:id`, the embed,
    /// redirect and oEmbed views of one.
    StatusRead,
    /// Media upload endpoints (media, avatar/header, emoji).
    MediaUpload,
    /// `/api/v1/streaming`: WebSocket or SSE, to the streaming upstream.
    Streaming,
    /// ActivityPub objects fetched by other servers (actors, outboxes, collections).
    ActivityPubObject,
    /// Sign-up, log-in, OAuth, password reset, app registration.
    Auth,
    /// The rest of the client API.
    Api,
    /// Everything else: the web UI, assets, well-known endpoints.
    Web,
}

impl RouteClass {
    pub const ALL: [RouteClass; 9] = [
        RouteClass::Inbox,
        RouteClass::StatusCreate,
        RouteClass::StatusRead,
        RouteClass::MediaUpload,
        RouteClass::Streaming,
        RouteClass::ActivityPubObject,
        RouteClass::Auth,
        RouteClass::Api,
        RouteClass::Web,
    ];

    /// The names used in config and policy files (`route = "inbox"`).
    pub const CONFIG_NAMES: [&'static str; 9] = [
        "inbox",
        "status_create",
        "status_read",
        "media_upload",
        "streaming",
        "activitypub_object",
        "auth",
        "api",
        "web",
    ];

    pub fn config_name(self) -> &'static str {
        Self::CONFIG_NAMES[self.index()]
    }

    pub fn from_config_name(name: &str) -> Option<Self> {
        let normalized = name.replace('-', "_");
        Self::CONFIG_NAMES.iter().position(|n| *n == normalized).map(|i| Self::ALL[i])
    }

    /// Dense index, for per-class metric arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A request path as Rails' router reads it: no empty segments (repeated and trailing
/// slashes squeezed), every segment percent-decoded, the format suffix of the last
/// segment split off.
///
/// Held as one string, segments joined by `/`; a `/` that a segment decoded to
/// (`%2F`) is kept encoded, so the segments stay exactly what Rails would match.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CanonicalPath {
    joined: String,
    /// `json` of `/users/alice.json`, `rss` of `/@alice.rss`; lower-cased.
    format: Option<String>,
}

impl CanonicalPath {
    pub fn new(raw: &str) -> CanonicalPath {
        let mut joined = String::with_capacity(raw.len());
        let mut raw_segments = raw.split('/').filter(|s| !s.is_empty()).peekable();
        let mut format = None;
        while let Some(raw_segment) = raw_segments.next() {
            let mut segment = decode(raw_segment);
            if raw_segments.peek().is_none()
                && let Some(dot) = segment.find('.')
                && dot > 0
            {
                // Rails' default parameter pattern is `[^/.?]+`, then `(.:format)`.
                format = Some(segment[dot + 1..].to_ascii_lowercase());
                segment = Cow::Owned(segment[..dot].to_owned());
            }
            joined.push('/');
            if segment.contains('/') {
                joined.push_str(&segment.replace('/', "%2F"));
            } else {
                joined.push_str(&segment);
            }
        }
        if joined.is_empty() {
            joined.push('/');
        }
        CanonicalPath { joined, format }
    }

    /// The canonical path, starting with `/` (just `/` for the root).
    pub fn as_str(&self) -> &str {
        &self.joined
    }

    pub fn format(&self) -> Option<&str> {
        self.format.as_deref()
    }

    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.joined.split('/').filter(|s| !s.is_empty())
    }
}

/// Percent-decodes one path segment, lossily (an invalid UTF-8 sequence cannot name a
/// route or a status either way); borrows when there is nothing to decode.
fn decode(segment: &str) -> Cow<'_, str> {
    if !segment.contains('%') {
        return Cow::Borrowed(segment);
    }
    Cow::Owned(percent_encoding::percent_decode_str(segment).decode_utf8_lossy().into_owned())
}

/// What ActiveRecord finds for `Status.find(param)`, in canonical decimal: [`record_id_of`].
pub fn status_id_of(param: &str) -> Option<String> {
    record_id_of(param).map(|id| id.to_string())
}

/// The one reading of a record id from a path parameter, for statuses and accounts alike:
/// ActiveModel's integer type casts a string with Ruby's `String#to_i` (leading whitespace,
/// an optional sign, digits with single underscores between them, anything after ignored),
/// so `Status.find("0123")`, `Account.local.find("1abc")` and the
/// `Account.local.where(id: ["+1", " 1", "1-alice"])` of Mastodon's
/// `ActivityPub::TagManager#uris_to_local_accounts` all find record 1 or 123. `None` where
/// no record can match (no digits, zero, negative, or beyond a bigint).
pub fn record_id_of(param: &str) -> Option<u64> {
    let s = param.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']);
    let (negative, s) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let mut value: i64 = 0;
    let mut digits = 0usize;
    let mut after_underscore = false;
    for b in s.bytes() {
        match b {
            b'0'..=b'9' => {
                value = value.checked_mul(10)?.checked_add(i64::from(b - b'0'))?;
                digits += 1;
                after_underscore = false;
            }
            b'_' if digits > 0 && !after_underscore => after_underscore = true,
            _ => break,
        }
    }
    (digits > 0 && !negative && value > 0).then_some(value as u64)
}

/// A classified request: the class plus what a stage would otherwise re-parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub class: RouteClass,
    /// The path as the instance reads it. Stages match on this, never on the raw URI.
    pub path: CanonicalPath,
    /// The status a request names, in canonical decimal: reads, edits, deletions and every
    /// per-status sub-resource (`/context`, `/favourite`, `/embed`, `/activity`, ...) of
    /// `/api/v1/statuses/:id`, `/users/NAME/statuses/:id` and `/@NAME/:id`.
    pub status_id: Option<String>,
    /// The segment after the status id (`context`, `favourite`, `embed`, `activity`,
    /// `replies`, ...), when there is one.
    pub status_action: Option<String>,
    /// The local account a path names (`/users/NAME/...`, `/@NAME/...`), lower-cased:
    /// Mastodon looks local usernames up case-insensitively. `None` for the numeric
    /// `/ap/users/ID/...` routes, which name an account id, not a username.
    pub account: Option<String>,
    /// The local account id a numeric `/ap/users/ID/...` path names, cast as ActiveRecord
    /// casts it ([`record_id_of`]: `1abc`, `+1`, `%201` and `1-alice` are account 1). Rails
    /// routes such a path whatever the segment holds (no constraint on `:id` before
    /// Mastodon 4.6), so the route is what it is however the id is spelled.
    pub account_id: Option<u64>,
}

impl Route {
    /// Classifies a request from its method, raw path and raw query (the query is read
    /// only for `/api/oembed?url=`, whose `url` names a status).
    pub fn classify(method: &Method, raw_path: &str, query: Option<&str>) -> Route {
        let path = CanonicalPath::new(raw_path);
        let mut seg = [""; 8];
        let mut count = 0;
        for (slot, s) in seg.iter_mut().zip(path.segments()) {
            *slot = s;
            count += 1;
        }
        if path.segments().nth(seg.len()).is_some() {
            count = seg.len() + 1;
        }
        let at = |i: usize| seg.get(i).copied().filter(|s| !s.is_empty());
        let is_get = method == Method::GET || method == Method::HEAD;
        let is_post = method == Method::POST;

        let mut status_param: Option<&str> = None;
        let mut status_action: Option<&str> = None;
        let mut queried_status: Option<String> = None;
        let mut account: Option<&str> = None;
        let mut account_id: Option<u64> = None;
        // `/users/NAME/...` and Mastodon 4.4's numeric `/ap/users/ID/...` take the same
        // sub-routes: the inbox, statuses and their collections, outbox, followers, ...
        let actor_base = match (at(0), at(1), at(2)) {
            (Some("users"), Some(name), _) => {
                account = Some(name);
                Some(1)
            }
            (Some("ap"), Some("users"), Some(id)) => {
                account_id = record_id_of(id);
                Some(2)
            }
            _ => None,
        };
        let class = match (at(0), at(1), at(2)) {
            (Some("api"), Some("v1"), Some("streaming")) => RouteClass::Streaming,
            (Some("inbox"), None, _) if is_post => RouteClass::Inbox,
            (Some("actor"), Some("inbox"), None) if is_post => RouteClass::Inbox,
            (Some("actor"), None | Some("outbox"), None) => RouteClass::ActivityPubObject,
            _ if let Some(base) = actor_base => match at(base + 1) {
                Some("inbox") if is_post && count == base + 2 => RouteClass::Inbox,
                Some("statuses") if at(base + 2).is_some() => {
                    status_param = at(base + 2);
                    status_action = at(base + 3);
                    if is_get && count == base + 3 { RouteClass::StatusRead } else { RouteClass::ActivityPubObject }
                }
                _ => RouteClass::ActivityPubObject,
            },
            (Some("contexts"), Some(_), _) => RouteClass::ActivityPubObject,
            (Some(handle), id, rest) if handle.len() > 1 && handle.starts_with('@') => {
                account = Some(&handle[1..]);
                match (id, rest) {
                    // `/@alice/media`, `/@alice/with_replies`, `/@alice/tagged/x` are
                    // profile tabs; anything else in that place is a status id.
                    (Some("media" | "with_replies" | "tagged" | "featured" | "followers" | "following"), _) => {
                        RouteClass::Web
                    }
                    // `/@alice/:id` and `/@alice/:id/embed` both show the status.
                    (Some(id), rest) => {
                        status_param = Some(id);
                        status_action = rest;
                        if is_get { RouteClass::StatusRead } else { RouteClass::Web }
                    }
                    (None, _) => RouteClass::Web,
                }
            }
            (Some("api"), Some("v1"), Some("statuses")) => {
                status_param = at(3);
                status_action = at(4);
                match (at(3), at(4)) {
                    (None, _) if is_post => RouteClass::StatusCreate,
                    // `GET /api/v1/statuses?id[]=1&id[]=2`: several statuses at once.
                    (None, _) if is_get => RouteClass::StatusRead,
                    // `resources :statuses` routes an update as PUT and as PATCH.
                    (Some(_), None) if method == Method::PUT || method == Method::PATCH => RouteClass::StatusCreate,
                    (Some(_), None) if is_get => RouteClass::StatusRead,
                    _ => RouteClass::Api,
                }
            }
            // The web UI's embed of one status.
            (Some("api"), Some("web"), Some("embeds")) => {
                status_param = at(3);
                if is_get { RouteClass::StatusRead } else { RouteClass::Api }
            }
            // `/api/oembed?url=https://host/@alice/123` shows status 123.
            (Some("api"), Some("oembed"), None) => {
                queried_status = oembed_status(query);
                if is_get { RouteClass::StatusRead } else { RouteClass::Api }
            }
            (Some("api"), Some("v1" | "v2"), Some("media")) => RouteClass::MediaUpload,
            (Some("api"), Some("v1"), Some("accounts")) if at(3) == Some("update_credentials") => {
                RouteClass::MediaUpload
            }
            (Some("api"), Some("v1"), Some("accounts")) if at(3).is_none() && is_post => RouteClass::Auth,
            (Some("api"), Some("v1"), Some("apps" | "emails")) => RouteClass::Auth,
            (Some("api"), _, _) => RouteClass::Api,
            (Some("oauth" | "auth"), _, _) => RouteClass::Auth,
            (Some("settings"), Some("profile"), _) if !is_get => RouteClass::MediaUpload,
            (Some("admin"), Some("custom_emojis"), _) if !is_get => RouteClass::MediaUpload,
            // The interstitial page of `/redirect/statuses/:id`.
            (Some("redirect"), Some("statuses"), Some(id)) => {
                status_param = Some(id);
                if is_get { RouteClass::StatusRead } else { RouteClass::Web }
            }
            _ => RouteClass::Web,
        };
        let status_id = queried_status.or_else(|| status_param.and_then(status_id_of));
        Route {
            class,
            status_action: status_id.as_ref().and(status_action).map(str::to_owned),
            status_id,
            account: account.map(str::to_lowercase),
            account_id,
            path,
        }
    }

    /// Whether what pavise does with this request depends on its method beyond its
    /// class: it names a status (expiry hides reads, learns edits and deletions) or the
    /// status collection. Rack::MethodOverride matters here (`proxy::method`).
    pub fn method_sensitive(&self) -> bool {
        self.status_id.is_some() || matches!(self.class, RouteClass::StatusCreate | RouteClass::StatusRead)
    }
}

/// The status `GET /api/oembed?url=...` would show: Mastodon's `StatusFinder` runs the
/// URL's path through the router and takes `statuses#show`'s id. The query is read as
/// Rack 3 reads it (pairs split on `&`, the last `url` wins, `+` and `%XX` decoded).
fn oembed_status(query: Option<&str>) -> Option<String> {
    let value = query?.rsplit('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (form_decode(key.as_bytes()).as_deref() == Some(b"url".as_slice())).then_some(value)
    })?;
    let url = form_decode(value.as_bytes())?;
    status_of_url(&String::from_utf8_lossy(&url))
}

/// The status a URL (absolute, scheme-relative or a bare path) names, read as Rails routes
/// its path: the status page, its ActivityPub object and their sub-resources, under any
/// spelling. The host is not looked at: a caller asks about its own instance's posts.
pub fn status_of_url(url: &str) -> Option<String> {
    let named = Route::classify(&Method::GET, url_path(url.trim()), None);
    match named.class {
        RouteClass::StatusRead | RouteClass::ActivityPubObject => named.status_id,
        _ => None,
    }
}

/// The path of an absolute (or scheme-relative) URL; a bare path as it is.
fn url_path(url: &str) -> &str {
    let rest = match url.find("://").map(|i| i + 3).or_else(|| url.starts_with("//").then_some(2)) {
        Some(after_scheme) => url[after_scheme..].find('/').map_or("/", |i| &url[after_scheme + i..]),
        None => url,
    };
    rest.split(['?', '#']).next().unwrap_or("/")
}

/// `URI.decode_www_form_component`, strictly: `+` is a space, `%XX` a byte, and a `%`
/// not followed by two hex digits fails.
pub(crate) fn form_decode(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = |b: u8| (b as char).to_digit(16);
                let hi = raw.get(i + 1).copied().and_then(hex)?;
                let lo = raw.get(i + 2).copied().and_then(hex)?;
                out.push((hi * 16 + lo) as u8);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn class(method: Method, path: &str) -> RouteClass {
        Route::classify(&method, path, None).class
    }

    #[test]
    fn federation_routes() {
        assert_eq!(class(Method::POST, "/inbox"), RouteClass::Inbox);
        assert_eq!(class(Method::POST, "/users/alice/inbox"), RouteClass::Inbox);
        assert_eq!(class(Method::POST, "/actor/inbox"), RouteClass::Inbox);
        assert_eq!(Route::classify(&Method::POST, "/users/alice/inbox", None).account.as_deref(), Some("alice"));
        assert_eq!(class(Method::GET, "/users/alice"), RouteClass::ActivityPubObject);
        assert_eq!(class(Method::GET, "/users/alice/outbox"), RouteClass::ActivityPubObject);
        assert_eq!(class(Method::GET, "/inbox"), RouteClass::Web);
    }

    /// Every spelling Rails routes to an inbox gets inbox treatment (signature checks,
    /// the wave shield, the 1 MiB cap).
    #[test]
    fn inbox_spellings() {
        for path in [
            "/users/alice/inbox/",
            "/users/alice//inbox",
            "//users/alice/inbox",
            "/users/alice/inbox.json",
            "/users/alice/inbox.JSON",
            "/users/%61lice/inbox",
            "/users/ALICE/inbox",
            "/users/alice/%69nbox",
            "/inbox.json",
            "/inbox/",
            "//inbox//",
            "/actor/inbox.json",
            "/ap/users/109/inbox",
            "/ap/users/109/inbox/",
            "//ap//users/109/inbox.json",
        ] {
            let route = Route::classify(&Method::POST, path, None);
            assert_eq!(route.class, RouteClass::Inbox, "{path}");
            if path.contains("users/") && !path.contains("ap/") {
                assert_eq!(route.account.as_deref(), Some("alice"), "{path}");
            }
        }
    }

    /// N1/N4: `/ap/users/:id/...` is routed whatever the id holds, and the id is cast as
    /// ActiveRecord casts it — the reading mentions of `/ap/users/ID` share.
    #[test]
    fn numeric_actor_routes_carry_the_cast_account_id() {
        for (path, id) in [
            ("/ap/users/1/inbox", Some(1)),
            ("/ap/users/01/inbox", Some(1)),
            ("/ap/users/1abc/inbox", Some(1)),
            ("/ap/users/2-x/inbox", Some(2)),
            ("/ap/users/%2B1/inbox", Some(1)),
            ("/ap/users/%201/inbox", Some(1)),
            ("/ap/users/1_0/inbox", Some(10)),
            ("/ap/users/abc/inbox", None),
            ("/ap/users/-1/inbox", None),
            ("/ap/users/0/inbox", None),
        ] {
            let r = Route::classify(&Method::POST, path, None);
            assert_eq!((r.class, r.account_id), (RouteClass::Inbox, id), "{path}");
        }
        assert_eq!(Route::classify(&Method::GET, "/ap/users/7.json", None).account_id, Some(7));
        assert_eq!(Route::classify(&Method::GET, "/users/alice", None).account_id, None);
    }

    #[test]
    fn status_routes_carry_the_id() {
        let r = Route::classify(&Method::GET, "/api/v1/statuses/109", None);
        assert_eq!((r.class, r.status_id.as_deref()), (RouteClass::StatusRead, Some("109")));
        let r = Route::classify(&Method::GET, "/users/alice/statuses/109", None);
        assert_eq!((r.class, r.status_id.as_deref()), (RouteClass::StatusRead, Some("109")));
        let r = Route::classify(&Method::GET, "/users/alice/statuses/109/activity", None);
        assert_eq!(
            (r.class, r.status_id.as_deref(), r.status_action.as_deref()),
            (RouteClass::ActivityPubObject, Some("109"), Some("activity"))
        );
        let r = Route::classify(&Method::GET, "/@alice/109", None);
        assert_eq!(
            (r.class, r.status_id.as_deref(), r.account.as_deref()),
            (RouteClass::StatusRead, Some("109"), Some("alice"))
        );
        let r = Route::classify(&Method::GET, "/@alice/109/embed", None);
        assert_eq!((r.status_id.as_deref(), r.status_action.as_deref()), (Some("109"), Some("embed")));
        assert_eq!(class(Method::POST, "/api/v1/statuses"), RouteClass::StatusCreate);
        assert_eq!(class(Method::POST, "/api/v1/statuses.json"), RouteClass::StatusCreate);
        assert_eq!(class(Method::POST, "/api/v1/statuses/"), RouteClass::StatusCreate);
        assert_eq!(class(Method::PUT, "/api/v1/statuses/5"), RouteClass::StatusCreate);
        let r = Route::classify(&Method::POST, "/api/v1/statuses/5/pin", None);
        assert_eq!(
            (r.class, r.status_id.as_deref(), r.status_action.as_deref()),
            (RouteClass::Api, Some("5"), Some("pin"))
        );
        let r = Route::classify(&Method::GET, "/api/v1/statuses/5/context.json", None);
        assert_eq!((r.status_id.as_deref(), r.status_action.as_deref()), (Some("5"), Some("context")));
        assert_eq!(class(Method::GET, "/@alice"), RouteClass::Web);
        assert_eq!(Route::classify(&Method::GET, "/@alice/media", None).status_id, None);
        assert_eq!(Route::classify(&Method::GET, "/@alice/tagged/x", None).status_id, None);
    }

    /// Each spelling ActiveRecord reads as status 123 names status 123.
    #[test]
    fn status_id_spellings() {
        for path in [
            "/api/v1/statuses/123",
            "/api/v1/statuses/123.json",
            "/api/v1/statuses/123/",
            "/api/v1/statuses/%31%32%33",
            "/api/v1/statuses/0123",
            "/api/v1/statuses/000123",
            "/api/v1/statuses/123-x",
            "/api/v1/statuses/123%2Fx",
            "/api/v1/statuses/123%2Ejson",
            "/api/v1/statuses/1_2_3",
            "/api/v1/statuses/+123",
            "/api/v1/statuses/%20123",
            "/api//v1/statuses/123",
            "//api/v1//statuses///123//",
            "/users/alice/statuses/123.json",
            "/users/alice/statuses/0123",
            "/@alice/123.json",
            "/@alice/0123",
            "/@Alice/123",
        ] {
            let r = Route::classify(&Method::GET, path, None);
            assert_eq!(r.status_id.as_deref(), Some("123"), "{path}");
            assert_eq!(r.class, RouteClass::StatusRead, "{path}");
        }
        let r = Route::classify(&Method::GET, "/@alice/0123/embed", None);
        assert_eq!(r.status_id.as_deref(), Some("123"));
    }

    /// Routes of today's Mastodon that name a status, each read as a status read.
    #[test]
    fn every_route_that_shows_a_status_carries_its_id() {
        for (path, query) in [
            ("/ap/users/1/statuses/123", None),
            ("/ap/users/1/statuses/0123.json", None),
            ("/api/web/embeds/123", None),
            ("/redirect/statuses/123", None),
            ("/api/oembed", Some("url=https%3A%2F%2Fsocial.example%2F%40alice%2F123")),
            ("/api/oembed", Some("format=json&url=https://social.example/users/alice/statuses/0123")),
            ("/api/oembed", Some("url=https://x/@a/9&url=https://social.example/ap/users/1/statuses/123")),
            ("/api/oembed.json", Some("url=//social.example/@alice/123?x=1")),
        ] {
            let r = Route::classify(&Method::GET, path, query);
            assert_eq!((r.class, r.status_id.as_deref()), (RouteClass::StatusRead, Some("123")), "{path}?{query:?}");
        }
        let r = Route::classify(&Method::GET, "/ap/users/1/statuses/123/replies", None);
        assert_eq!((r.class, r.status_id.as_deref()), (RouteClass::ActivityPubObject, Some("123")));
        let r = Route::classify(&Method::GET, "/users/alice/statuses/123/likes", None);
        assert_eq!((r.class, r.status_action.as_deref()), (RouteClass::ActivityPubObject, Some("likes")));
        // The oEmbed of something that is not a status names none.
        let r = Route::classify(&Method::GET, "/api/oembed", Some("url=https://social.example/@alice"));
        assert_eq!(r.status_id, None);
        // `GET /api/v1/statuses?id[]=1` reads several statuses.
        assert_eq!(class(Method::GET, "/api/v1/statuses"), RouteClass::StatusRead);
        // `resources :statuses` routes an update as PUT and PATCH alike.
        assert_eq!(class(Method::PATCH, "/api/v1/statuses/5"), RouteClass::StatusCreate);
        assert_eq!(class(Method::GET, "/ap/users/1"), RouteClass::ActivityPubObject);
        assert_eq!(class(Method::GET, "/actor"), RouteClass::ActivityPubObject);
        assert_eq!(class(Method::GET, "/contexts/1-2/items"), RouteClass::ActivityPubObject);
    }

    #[test]
    fn method_sensitive_routes_are_those_naming_statuses() {
        for path in ["/api/v1/statuses/1", "/api/v1/statuses", "/@alice/1", "/users/a/statuses/1", "/api/web/embeds/1"]
        {
            assert!(Route::classify(&Method::POST, path, None).method_sensitive(), "{path}");
        }
        for path in ["/settings/profile", "/api/v2/media", "/inbox", "/api/v1/accounts", "/oauth/token"] {
            assert!(!Route::classify(&Method::POST, path, None).method_sensitive(), "{path}");
        }
    }

    #[test]
    fn ruby_to_i() {
        assert_eq!(status_id_of("42"), Some("42".into()));
        assert_eq!(status_id_of("  \t42abc"), Some("42".into()));
        assert_eq!(status_id_of("4_2"), Some("42".into()));
        assert_eq!(status_id_of("4__2"), Some("4".into()));
        assert_eq!(status_id_of("_42"), None);
        assert_eq!(status_id_of("-42"), None);
        assert_eq!(status_id_of("0"), None);
        assert_eq!(status_id_of("abc"), None);
        assert_eq!(status_id_of(""), None);
        assert_eq!(status_id_of("99999999999999999999"), None);
        assert_eq!(status_id_of("109876543210987654"), Some("109876543210987654".into()));
    }

    #[test]
    fn canonical_path() {
        let p = CanonicalPath::new("//api/v1//statuses/%31/context.json/");
        assert_eq!(p.as_str(), "/api/v1/statuses/1/context");
        assert_eq!(p.format(), Some("json"));
        assert_eq!(CanonicalPath::new("").as_str(), "/");
        assert_eq!(CanonicalPath::new("///").as_str(), "/");
        assert_eq!(CanonicalPath::new("/a%2Fb/c").segments().collect::<Vec<_>>(), ["a%2Fb", "c"]);
        assert_eq!(CanonicalPath::new("/@alice.rss").format(), Some("rss"));
        assert_eq!(CanonicalPath::new("/.well-known/webfinger").as_str(), "/.well-known/webfinger");
    }

    #[test]
    fn client_routes() {
        assert_eq!(class(Method::GET, "/api/v1/streaming"), RouteClass::Streaming);
        assert_eq!(class(Method::GET, "/api/v1/streaming/user"), RouteClass::Streaming);
        assert_eq!(class(Method::GET, "/api//v1/streaming/"), RouteClass::Streaming);
        assert_eq!(class(Method::POST, "/api/v2/media"), RouteClass::MediaUpload);
        assert_eq!(class(Method::POST, "/api/v2/media.json"), RouteClass::MediaUpload);
        assert_eq!(class(Method::POST, "/api/v2//media/"), RouteClass::MediaUpload);
        assert_eq!(class(Method::PUT, "/api/v1/media/7"), RouteClass::MediaUpload);
        assert_eq!(class(Method::PATCH, "/api/v1/accounts/update_credentials"), RouteClass::MediaUpload);
        assert_eq!(class(Method::PATCH, "/api/v1/accounts/update_credentials.json"), RouteClass::MediaUpload);
        assert_eq!(class(Method::POST, "/settings/profile/"), RouteClass::MediaUpload);
        assert_eq!(class(Method::POST, "/api/v1/accounts"), RouteClass::Auth);
        assert_eq!(class(Method::POST, "/api/v1/accounts.json"), RouteClass::Auth);
        assert_eq!(class(Method::POST, "/api/v1/accounts/"), RouteClass::Auth);
        assert_eq!(class(Method::POST, "/api/v1/apps"), RouteClass::Auth);
        assert_eq!(class(Method::POST, "/oauth/token"), RouteClass::Auth);
        assert_eq!(class(Method::POST, "/oauth//token.json"), RouteClass::Auth);
        assert_eq!(class(Method::POST, "/auth/sign_in"), RouteClass::Auth);
        assert_eq!(class(Method::GET, "/api/v1/timelines/home"), RouteClass::Api);
        assert_eq!(class(Method::GET, "/"), RouteClass::Web);
        assert_eq!(class(Method::GET, "/.well-known/webfinger"), RouteClass::Web);
    }

    #[test]
    fn config_names_round_trip() {
        for c in RouteClass::ALL {
            assert_eq!(RouteClass::from_config_name(c.config_name()), Some(c));
        }
        assert_eq!(RouteClass::from_config_name("media-upload"), Some(RouteClass::MediaUpload));
        assert_eq!(RouteClass::from_config_name("nope"), None);
    }
}
