//! What a post carries under URLs of its own: its poll and its media. A hidden post must not
//! come back as "the poll of status X" or "the image of status X", so every Status pavise
//! reads anyway (the creation and edit answers, a sweep's pages, the scheduler's re-check,
//! a publication found) tells it the poll id, the media attachment ids and their
//! shortcodes ([`attachments_of`]); they are stored with the item and indexed with it, and
//! while the post is hidden so are:
//! - `/api/v1/polls/:id` and `/api/v1/polls/:id/votes`;
//! - `/api/v1/media/:id` (the owner's view and its update);
//! - `/media/:shortcode` and `/media/:shortcode/player` (Mastodon's `MediaController`);
//! - `/media_proxy/:id/...` (`MediaProxyController`);
//! - the files themselves, `/system/[cache/]media_attachments/{files,thumbnails}/<id
//!   partition>/<style>/<name>` (Paperclip's `:id_partition`: the id in groups of three
//!   digits), when the instance serves them through pavise.
//!
//! The path is read from the route's canonical path (decoded, slashes squeezed) and ids
//! are cast as ActiveRecord casts them, so a second spelling finds the same resource.
//! Files served from elsewhere (nginx's `location /system`, object storage on its own
//! host) never reach pavise: see the README.

use http::Method;

use super::index::Resource;
use crate::{
    proxy::contract::route::{CanonicalPath, status_id_of},
    store::Attachments,
};

/// The poll or media a request names, if any. A `DELETE` of an unattached upload is left
/// alone (it removes, it shows nothing).
pub fn resource_of(method: &Method, path: &CanonicalPath) -> Option<Resource> {
    let segments: Vec<&str> = path.segments().collect();
    match segments.as_slice() {
        ["api", "v1", "polls", id] | ["api", "v1", "polls", id, "votes"] => status_id_of(id).map(Resource::Poll),
        ["api", "v1" | "v2", "media", id] if method != Method::DELETE => status_id_of(id).map(Resource::Media),
        ["media", shortcode] | ["media", shortcode, "player"] => Some(Resource::Shortcode((*shortcode).to_owned())),
        ["media_proxy", id, ..] => status_id_of(id).map(Resource::Media),
        _ => media_file(&segments).map(Resource::Media),
    }
}

/// The media attachment id of a stored file's path (`.../media_attachments/files/109/876/
/// .../original/x.png`, cached remote media included).
fn media_file(segments: &[&str]) -> Option<String> {
    let at = segments.iter().position(|s| *s == "media_attachments")?;
    if !matches!(segments.get(at + 1), Some(&("files" | "thumbnails"))) {
        return None;
    }
    let digits: String = segments[at + 2..]
        .iter()
        .take_while(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .copied()
        .collect();
    status_id_of(&digits)
}

/// The poll and media of a Mastodon Status JSON.
pub fn attachments_of(status: &serde_json::Value) -> Attachments {
    let poll = status.get("poll").and_then(|p| p.get("id")).and_then(id_text).and_then(|id| status_id_of(&id));
    let mut media = Vec::new();
    let mut shortcodes = Vec::new();
    for m in status.get("media_attachments").and_then(|m| m.as_array()).into_iter().flatten() {
        if let Some(id) = m.get("id").and_then(id_text).and_then(|id| status_id_of(&id)) {
            media.push(id);
        }
        // `text_url` is the shortcode's URL (`/media/:shortcode`); the file URLs name the
        // id partition, which `resource_of` reads back to the id.
        for key in ["text_url", "url", "preview_url"] {
            if let Some(url) = m.get(key).and_then(|u| u.as_str())
                && let Some(Resource::Shortcode(code)) = url_resource(url)
                && !shortcodes.contains(&code)
            {
                shortcodes.push(code);
            }
        }
    }
    Attachments { poll, media, shortcodes }
}

fn url_resource(url: &str) -> Option<Resource> {
    let path = match url.find("://") {
        Some(i) => url[i + 3..].find('/').map_or("/", |j| &url[i + 3 + j..]),
        None => url,
    };
    let path = path.split(['?', '#']).next().unwrap_or("/");
    resource_of(&Method::GET, &CanonicalPath::new(path))
}

fn id_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn of(method: Method, path: &str) -> Option<Resource> {
        resource_of(&method, &CanonicalPath::new(path))
    }

    #[test]
    fn every_url_of_a_poll_or_a_file_names_it() {
        let media = || Some(Resource::Media("555".into()));
        assert_eq!(of(Method::GET, "/api/v1/polls/77"), Some(Resource::Poll("77".into())));
        assert_eq!(of(Method::POST, "/api/v1/polls/077/votes"), Some(Resource::Poll("77".into())));
        assert_eq!(of(Method::GET, "/api//v1/polls/77.json"), Some(Resource::Poll("77".into())));
        assert_eq!(of(Method::GET, "/api/v1/media/555"), media());
        assert_eq!(of(Method::PUT, "/api/v1/media/%35%35%35"), media());
        assert_eq!(of(Method::DELETE, "/api/v1/media/555"), None, "deleting an upload shows nothing");
        assert_eq!(of(Method::GET, "/media_proxy/555/original"), media());
        assert_eq!(of(Method::GET, "/media_proxy/555/small"), media());
        assert_eq!(of(Method::GET, "/system/media_attachments/files/000/000/555/original/abc.png"), media());
        assert_eq!(of(Method::GET, "//system/media_attachments/files/000/000/555/small/abc.png"), media());
        assert_eq!(of(Method::GET, "/system/cache/media_attachments/files/000/000/555/original/x.jpg"), media());
        assert_eq!(of(Method::GET, "/system/media_attachments/thumbnails/000/000/555/original/t.png"), media());
        assert_eq!(
            of(Method::GET, "/system/media_attachments/files/110/000/000/000/000/555/original/a.png"),
            Some(Resource::Media("110000000000000555".into()))
        );
        assert_eq!(of(Method::GET, "/media/AbC-x_9"), Some(Resource::Shortcode("AbC-x_9".into())));
        assert_eq!(of(Method::GET, "/media/AbC-x_9/player"), Some(Resource::Shortcode("AbC-x_9".into())));
        assert_eq!(of(Method::GET, "/system/accounts/avatars/000/000/001/original/a.png"), None);
        assert_eq!(of(Method::GET, "/api/v1/timelines/home"), None);
    }

    #[test]
    fn learned_from_a_status() {
        let s = serde_json::json!({
            "id": "1", "poll": {"id": "77", "options": []},
            "media_attachments": [
                {"id": "555", "url": "https://i.example/system/media_attachments/files/000/000/555/original/a.png",
                 "text_url": "https://i.example/media/Sh0rt"},
                {"id": 556, "url": "https://i.example/media/Other"},
            ],
        });
        let a = attachments_of(&s);
        assert_eq!(a.poll.as_deref(), Some("77"));
        assert_eq!(a.media, ["555", "556"]);
        assert_eq!(a.shortcodes, ["Sh0rt", "Other"]);
        assert!(attachments_of(&serde_json::json!({"id": "1", "poll": null, "media_attachments": []})).is_empty());
    }
}
