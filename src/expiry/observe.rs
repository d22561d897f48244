//! Learning posts from the instance's own answers: the Status JSON of a successful
//! `POST /api/v1/statuses` (or `PUT` edit) says everything a rule matches on, and the
//! answers to `/pin`, `/favourite`, `/bookmark` (and their undo) say which keep conditions
//! the author set. Reading the instance's answer, not the client's request, means pavise
//! never guesses: visibility defaults, tag parsing and reply resolution are the instance's.

use super::policy::{PostFacts, Visibility};
use crate::store::UnixMs;

/// What a status action by the author changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusAction {
    Pin(bool),
    Favourite(bool),
    Bookmark(bool),
    Delete,
}

impl StatusAction {
    /// From the last path segment of `/api/v1/statuses/:id/<action>`.
    pub fn from_segment(segment: &str) -> Option<StatusAction> {
        Some(match segment {
            "pin" => StatusAction::Pin(true),
            "unpin" => StatusAction::Pin(false),
            "favourite" => StatusAction::Favourite(true),
            "unfavourite" => StatusAction::Favourite(false),
            "bookmark" => StatusAction::Bookmark(true),
            "unbookmark" => StatusAction::Bookmark(false),
            _ => return None,
        })
    }
}

/// An RFC 3339 timestamp as [`UnixMs`].
pub fn parse_time(s: &str) -> Option<UnixMs> {
    let t = humantime::parse_rfc3339_weak(s.trim_end_matches('Z')).ok()?;
    t.duration_since(std::time::UNIX_EPOCH).ok().map(|d| d.as_millis() as u64)
}

/// The facts of a Mastodon Status JSON; `None` when it has no id or no account.
pub fn facts_from_status(v: &serde_json::Value) -> Option<PostFacts> {
    let id = v.get("id")?.as_str()?.to_owned();
    let account = v.get("account")?;
    let username = account.get("username").and_then(|u| u.as_str()).or_else(|| account.get("acct")?.as_str())?;
    let flag = |k: &str| v.get(k).and_then(|x| x.as_bool()).unwrap_or(false);
    let count = |k: &str| v.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
    Some(PostFacts {
        id,
        account: username.to_owned(),
        visibility: v.get("visibility").and_then(|x| x.as_str()).and_then(Visibility::parse),
        tags: v
            .get("tags")
            .and_then(|t| t.as_array())
            .map(|tags| {
                tags.iter()
                    .filter_map(|t| t.get("name").and_then(|n| n.as_str()))
                    .map(|n| n.trim_start_matches('#').to_lowercase())
                    .collect()
            })
            .unwrap_or_default(),
        has_media: v.get("media_attachments").and_then(|m| m.as_array()).is_some_and(|m| !m.is_empty()),
        is_reply: v.get("in_reply_to_id").is_some_and(|r| !r.is_null()),
        created_at: v.get("created_at").and_then(|c| c.as_str()).and_then(parse_time),
        pinned: flag("pinned"),
        favourited: flag("favourited"),
        bookmarked: flag("bookmarked"),
        favourites_count: count("favourites_count"),
        reblogs_count: count("reblogs_count"),
        attachments: super::resource::attachments_of(v),
    })
}

/// What a `ScheduledStatus` answer (a post created with `scheduled_at`) says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledFacts {
    pub id: String,
    pub scheduled_at: UnixMs,
    /// The text and content warning it will be published with.
    pub text: String,
    pub spoiler_text: String,
}

/// The facts of a Mastodon `ScheduledStatus` JSON: it has `scheduled_at` and `params`, and
/// no account (the post does not exist yet).
pub fn scheduled_from(v: &serde_json::Value) -> Option<ScheduledFacts> {
    if v.get("account").is_some() {
        return None;
    }
    let id = v.get("id")?.as_str()?.to_owned();
    let scheduled_at = parse_time(v.get("scheduled_at")?.as_str()?)?;
    let params = v.get("params")?;
    let text = |k: &str| params.get(k).and_then(|x| x.as_str()).unwrap_or_default().to_owned();
    Some(ScheduledFacts { id, scheduled_at, text: text("text"), spoiler_text: text("spoiler_text") })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reads_a_mastodon_status() {
        let v = serde_json::json!({
            "id": "109", "created_at": "2023-11-14T22:13:20.000Z", "visibility": "direct",
            "account": {"id": "1", "username": "alice", "acct": "alice"},
            "tags": [{"name": "Keep", "url": "x"}], "media_attachments": [{"id": "5"}],
            "in_reply_to_id": "100", "pinned": true, "favourites_count": 3, "reblogs_count": 1,
        });
        let f = facts_from_status(&v).unwrap();
        assert_eq!(f.id, "109");
        assert_eq!(f.account, "alice");
        assert_eq!(f.visibility, Some(Visibility::Direct));
        assert_eq!(f.tags, ["keep"]);
        assert!(f.has_media && f.is_reply && f.pinned && !f.favourited);
        assert_eq!(f.created_at, Some(1_700_000_000_000));
        assert_eq!((f.favourites_count, f.reblogs_count), (3, 1));
        assert!(facts_from_status(&serde_json::json!({"id": "1"})).is_none());
        assert!(facts_from_status(&serde_json::json!([1, 2])).is_none());
    }

    #[test]
    fn reads_a_scheduled_status() {
        let v = serde_json::json!({
            "id": "7", "scheduled_at": "2023-11-14T22:13:20.000Z",
            "params": {"text": "later", "spoiler_text": null, "visibility": "direct"}, "media_attachments": [],
        });
        let s = scheduled_from(&v).unwrap();
        assert_eq!(
            (s.id.as_str(), s.scheduled_at, s.text.as_str(), s.spoiler_text.as_str()),
            ("7", 1_700_000_000_000, "later", "")
        );
        assert!(scheduled_from(&serde_json::json!({"id": "1", "account": {}, "scheduled_at": "x"})).is_none());
    }
}
