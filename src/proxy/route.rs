//! Route classification: done once per request, matched on by every later stage.
//!
//! The classes follow what the stages need to tell apart, not Mastodon's full routing
//! table: the shield limits `Auth` and `Inbox` differently, expiry cares about
//! `StatusCreate` and reads of a status, the privacy stage treats `Inbox` bodies as
//! signed bytes that must not change.

use http::Method;

/// The coarse class a request belongs to. `[[limit]] route = "..."` names these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RouteClass {
    /// `POST /inbox`, `POST /users/NAME/inbox`: signed federation deliveries.
    Inbox,
    /// `POST /api/v1/statuses`, `PUT /api/v1/statuses/:id`.
    StatusCreate,
    /// A read of one status: `GET /api/v1/statuses/:id`, `/@user/:id`, `/users/u/statuses/:id`.
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

/// A classified request: the class plus what a stage would otherwise re-parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub class: RouteClass,
    /// The status id, for `StatusRead` and for edits (`PUT /api/v1/statuses/:id`) and
    /// status actions (`/api/v1/statuses/:id/pin`, ...).
    pub status_id: Option<String>,
    /// The account name of `/users/NAME/inbox`, `/users/NAME/...`, `/@NAME/...`.
    pub account: Option<String>,
}

impl Route {
    pub fn classify(method: &Method, path: &str) -> Route {
        // Classification runs on every request: read the first segments into a fixed array
        // instead of allocating. No route this table knows has more than five.
        let mut first = [""; 6];
        let mut count = 0;
        for (i, s) in path.trim_start_matches('/').split('/').enumerate() {
            if let Some(slot) = first.get_mut(i) {
                *slot = s;
            }
            count = i + 1;
        }
        let seg = |i: usize| first.get(i).copied().filter(|s| !s.is_empty());
        let mut route = Route { class: RouteClass::Web, status_id: None, account: None };
        let is_get = method == Method::GET || method == Method::HEAD;

        route.class = match (seg(0), seg(1), seg(2)) {
            (Some("api"), Some("v1"), Some("streaming")) => RouteClass::Streaming,
            (Some("inbox"), None, _) if method == Method::POST => RouteClass::Inbox,
            (Some("users"), Some(name), Some("inbox")) if method == Method::POST && count == 3 => {
                route.account = Some(name.to_owned());
                RouteClass::Inbox
            }
            (Some("users"), Some(name), rest) => {
                route.account = Some(name.to_owned());
                if rest == Some("statuses")
                    && let Some(id) = seg(3)
                {
                    route.status_id = Some(id.to_owned());
                    if is_get && count == 4 { RouteClass::StatusRead } else { RouteClass::ActivityPubObject }
                } else {
                    RouteClass::ActivityPubObject
                }
            }
            (Some(at), id, None) if at.starts_with('@') && at.len() > 1 => {
                route.account = Some(at[1..].to_owned());
                match id {
                    Some(id) if is_get && id.bytes().all(|b| b.is_ascii_digit()) => {
                        route.status_id = Some(id.to_owned());
                        RouteClass::StatusRead
                    }
                    _ => RouteClass::Web,
                }
            }
            (Some("api"), Some("v1"), Some("statuses")) => {
                route.status_id = seg(3).map(str::to_owned);
                match (seg(3), seg(4)) {
                    (None, _) if method == Method::POST => RouteClass::StatusCreate,
                    (Some(_), None) if method == Method::PUT => RouteClass::StatusCreate,
                    (Some(_), None) if is_get => RouteClass::StatusRead,
                    _ => RouteClass::Api,
                }
            }
            (Some("api"), Some("v1" | "v2"), Some("media")) => RouteClass::MediaUpload,
            (Some("api"), Some("v1"), Some("accounts")) if seg(3) == Some("update_credentials") => {
                RouteClass::MediaUpload
            }
            (Some("api"), Some("v1"), Some("accounts")) if seg(3).is_none() && method == Method::POST => {
                RouteClass::Auth
            }
            (Some("api"), Some("v1"), Some("apps")) => RouteClass::Auth,
            (Some("api"), Some("v1"), Some("emails")) => RouteClass::Auth,
            (Some("api"), _, _) => RouteClass::Api,
            (Some("oauth" | "auth"), _, _) => RouteClass::Auth,
            (Some("settings"), Some("profile"), None) if !is_get => RouteClass::MediaUpload,
            (Some("admin"), Some("custom_emojis"), _) if !is_get => RouteClass::MediaUpload,
            _ => RouteClass::Web,
        };
        route
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(method: Method, path: &str) -> RouteClass {
        Route::classify(&method, path).class
    }

    #[test]
    fn federation_routes() {
        assert_eq!(class(Method::POST, "/inbox"), RouteClass::Inbox);
        assert_eq!(class(Method::POST, "/users/alice/inbox"), RouteClass::Inbox);
        assert_eq!(Route::classify(&Method::POST, "/users/alice/inbox").account.as_deref(), Some("alice"));
        assert_eq!(class(Method::GET, "/users/alice"), RouteClass::ActivityPubObject);
        assert_eq!(class(Method::GET, "/users/alice/outbox"), RouteClass::ActivityPubObject);
        assert_eq!(class(Method::GET, "/inbox"), RouteClass::Web);
    }

    #[test]
    fn status_routes_carry_the_id() {
        let r = Route::classify(&Method::GET, "/api/v1/statuses/109");
        assert_eq!((r.class, r.status_id.as_deref()), (RouteClass::StatusRead, Some("109")));
        let r = Route::classify(&Method::GET, "/users/alice/statuses/109");
        assert_eq!((r.class, r.status_id.as_deref()), (RouteClass::StatusRead, Some("109")));
        let r = Route::classify(&Method::GET, "/users/alice/statuses/109/activity");
        assert_eq!((r.class, r.status_id.as_deref()), (RouteClass::ActivityPubObject, Some("109")));
        let r = Route::classify(&Method::GET, "/@alice/109");
        assert_eq!(
            (r.class, r.status_id.as_deref(), r.account.as_deref()),
            (RouteClass::StatusRead, Some("109"), Some("alice"))
        );
        assert_eq!(class(Method::POST, "/api/v1/statuses"), RouteClass::StatusCreate);
        assert_eq!(class(Method::PUT, "/api/v1/statuses/5"), RouteClass::StatusCreate);
        let r = Route::classify(&Method::POST, "/api/v1/statuses/5/pin");
        assert_eq!((r.class, r.status_id.as_deref()), (RouteClass::Api, Some("5")));
        assert_eq!(class(Method::GET, "/@alice"), RouteClass::Web);
    }

    #[test]
    fn client_routes() {
        assert_eq!(class(Method::GET, "/api/v1/streaming"), RouteClass::Streaming);
        assert_eq!(class(Method::GET, "/api/v1/streaming/user"), RouteClass::Streaming);
        assert_eq!(class(Method::POST, "/api/v2/media"), RouteClass::MediaUpload);
        assert_eq!(class(Method::PUT, "/api/v1/media/7"), RouteClass::MediaUpload);
        assert_eq!(class(Method::PATCH, "/api/v1/accounts/update_credentials"), RouteClass::MediaUpload);
        assert_eq!(class(Method::POST, "/api/v1/accounts"), RouteClass::Auth);
        assert_eq!(class(Method::POST, "/api/v1/apps"), RouteClass::Auth);
        assert_eq!(class(Method::POST, "/oauth/token"), RouteClass::Auth);
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
