//! Whom a delivery addresses, read the way Mastodon reads it — every spelling of a member
//! that the instance would resolve to that member is that member here.
//!
//! Mastodon (`ActivityPub::Activity::Create#process_tags` and `#process_audience`,
//! `ActivityPub::TagManager#uri_to_resource`, `JsonLdHelper`) accepts:
//! - `tag` as one object or an array; a tag's `type` as a string or an array containing
//!   `Mention`; its `href` as any URL the instance resolves to a local account;
//! - `to`/`cc` entries as strings or objects with an `id`: a local account there becomes
//!   a *silent* mention (the status reaches the account even without a tag);
//! - a post (`Create`, `Update`) delivered to a member's own inbox (`/users/NAME/inbox`):
//!   the inbox owner gets a silent mention whatever the addressing
//!   (`delivered_to_account_id`);
//! - a local URL is one whose host, as Addressable normalizes it (case-folded,
//!   percent-decoded, IDNA-mapped, one trailing dot dropped, userinfo ignored), is the
//!   instance's; its path is read by Rails' router (repeated and trailing slashes ignored,
//!   a `.format` suffix split off, parameters percent-decoded): `/users/:username`,
//!   `/@:username` (and its `/with_replies`, `/media`, `/featured`, `/tagged/:tag`
//!   views), `/ap/users/:id` (numeric ids, Mastodon ≥ 4.4), and the old OStatus
//!   `tag:DOMAIN,...:objectId=ID:objectType=Account`. Usernames are case-insensitive.
//!
//! Pavise is a little more inclusive than Mastodon where counting more is the safe side:
//! a default (or any) port on the local host, several trailing dots, and the `acct:`,
//! `@user@host` and `user@host` forms count as the local account too. Numeric ids are
//! turned into names by asking the instance ([`super::accounts`]).
//!
//! An activity whose object the instance will *fetch* (`Create`, `Update` or `Announce`
//! of a remote object given by reference) may mention anyone, and pavise cannot see whom:
//! it is marked [`Addressed::opaque`], and the stage treats it as addressing every member
//! under a shield.

use std::collections::HashSet;

use percent_encoding::percent_decode_str;
use serde_json::Value;

use crate::proxy::{Route, RouteClass};

/// A local account as the instance would find it: by username or by numeric id — or the
/// owner of a local post, found by the post's id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LocalRef {
    /// A username, lower-cased.
    Name(String),
    /// A numeric account id (`/ap/users/ID`, OStatus tags).
    Id(u64),
    /// Whoever owns the local status with this id (a `Like` or `Announce` of it notifies
    /// them). Rails finds a status by its id alone: the username in its URL proves nothing.
    StatusOwner(u64),
}

/// The host names that are the instance's own, normalized as [`canonical_host`] does.
#[derive(Debug, Clone, Default)]
pub struct LocalHosts(Vec<String>);

impl LocalHosts {
    /// The instance's configured domains; ports are ignored.
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> LocalHosts {
        let mut hosts: Vec<String> = names.into_iter().filter_map(canonical_host).collect();
        hosts.sort();
        hosts.dedup();
        LocalHosts(hosts)
    }

    /// Whether `host` (any port) is the instance's.
    pub fn contains(&self, host: &str) -> bool {
        canonical_host(host).is_some_and(|h| self.0.contains(&h))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn names(&self) -> &[String] {
        &self.0
    }
}

/// A host (or `host:port`, or `[v6]:port`) as Addressable's `normalized_host` reads it:
/// lower-cased, percent-decoded, IDNA-mapped to ASCII; trailing dots and port dropped.
pub fn canonical_host(authority: &str) -> Option<String> {
    let authority = authority.trim();
    // The URL parser does the IDNA mapping, the case folding and the percent-decoding.
    let url = url::Url::parse(&format!("https://{authority}/")).ok()?;
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return None;
    }
    let host = url.host_str()?.trim_end_matches('.');
    (!host.is_empty()).then(|| host.to_owned())
}

/// Whom one delivery addresses.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Addressed {
    /// Local accounts (and owners of local posts), each once: tags, `to`/`cc`/`bto`/
    /// `bcc`/`audience`, the object of a `Follow`, `Like` or `Announce`.
    pub local: Vec<LocalRef>,
    /// Distinct addressed actors, local and remote (public and collections excluded):
    /// the hellthread count.
    pub total: usize,
    /// Whom it mentions is unknown: the instance will fetch the object from elsewhere, or
    /// the body is one pavise cannot read exactly ([`super::document`]).
    pub opaque: bool,
    /// More addressees than pavise reads ([`MAX_ADDRESSEES`]): a hellthread, and opaque.
    pub truncated: bool,
}

const PUBLIC: [&str; 3] = ["https://www.w3.org/ns/activitystreams#Public", "as:Public", "Public"];
const AUDIENCE: [&str; 5] = ["to", "cc", "bto", "bcc", "audience"];
/// Distinct addressees read at most; past it the delivery is a hellthread by any measure.
pub const MAX_ADDRESSEES: usize = 1000;
/// Addressing entries looked at at most (duplicates included): the work one delivery can
/// cost is bounded whatever its shape.
pub const MAX_ENTRIES: usize = 5000;
/// Collections inside collections read at most this deep (Mastodon reads one level).
const MAX_NESTING: usize = 3;

/// Reads the addressing of an activity, as Mastodon processes it: the activity and its
/// embedded object, and — for a `Collection`/`OrderedCollection` (or page) — every item
/// (`ActivityPub::ProcessCollectionService#process_items`), recursively.
pub fn read(doc: &Value, locals: &LocalHosts) -> Addressed {
    let mut r =
        Reader { locals, seen_local: HashSet::new(), remote: HashSet::new(), entries: 0, out: Addressed::default() };
    r.activity(doc, 0);
    let mut out = r.out;
    out.total = out.local.len() + r.remote.len();
    if out.truncated {
        out.total = out.total.max(MAX_ADDRESSEES + 1);
        out.opaque = true;
    }
    out
}

struct Reader<'v, 'l> {
    locals: &'l LocalHosts,
    seen_local: HashSet<LocalRef>,
    remote: HashSet<&'v str>,
    entries: usize,
    out: Addressed,
}

impl<'v> Reader<'v, '_> {
    fn activity(&mut self, v: &'v Value, depth: usize) {
        // Mastodon processes Hash items only; anything else is ignored.
        if !v.is_object() {
            return;
        }
        for key in ["items", "orderedItems"] {
            for item in as_array(v.get(key)) {
                if depth >= MAX_NESTING {
                    self.out.opaque = true;
                    break;
                }
                self.activity(item, depth + 1);
            }
        }
        self.addressing(v);
        for object in as_array(v.get("object")) {
            if object.is_object() {
                self.addressing(object);
            }
        }
        if fetched_object(v, self.locals) || foreign_boost(v, self.locals) {
            self.out.opaque = true;
        }
        self.notified(v);
    }

    /// `to`/`cc`/... and `Mention` tags of one object.
    fn addressing(&mut self, v: &'v Value) {
        for field in AUDIENCE {
            for item in as_array(v.get(field)) {
                if let Some(id) = id_of(item) {
                    self.reference(id);
                }
            }
        }
        for tag in as_array(v.get("tag")) {
            if includes(tag.get("type"), "Mention")
                && let Some(href) = tag.get("href").and_then(Value::as_str)
            {
                self.reference(href);
            }
        }
    }

    /// Whom a `Follow`, `Like` (or `EmojiReact`) and `Announce` notify: the followed
    /// member, the owner of the liked or boosted post.
    fn notified(&mut self, v: &'v Value) {
        let kind = v.get("type");
        let follow = includes(kind, "Follow");
        let reaction = ["Like", "EmojiReact", "Announce"].iter().any(|t| includes(kind, t));
        if !follow && !reaction {
            return;
        }
        for object in as_array(v.get("object")) {
            let Some(id) = id_of(object) else { continue };
            let found = if follow { local_ref(id, self.locals) } else { status_ref(id, self.locals) };
            if let Some(r) = found {
                self.local(r);
            }
        }
    }

    fn reference(&mut self, r: &'v str) {
        if self.out.truncated {
            return;
        }
        self.entries += 1;
        if self.entries > MAX_ENTRIES {
            self.out.truncated = true;
            return;
        }
        let r = r.trim();
        if r.is_empty() || PUBLIC.contains(&r) || r.ends_with("/followers") || r.ends_with("/following") {
            return;
        }
        match local_ref(r, self.locals) {
            Some(local) => self.local(local),
            None => {
                if self.remote.len() + self.out.local.len() >= MAX_ADDRESSEES {
                    self.out.truncated = true;
                } else {
                    self.remote.insert(r);
                }
            }
        }
    }

    fn local(&mut self, r: LocalRef) {
        if self.seen_local.contains(&r) {
            return;
        }
        if self.remote.len() + self.out.local.len() >= MAX_ADDRESSEES {
            self.out.truncated = true;
            return;
        }
        self.seen_local.insert(r.clone());
        self.out.local.push(r);
    }
}

/// Whether an activity creates or edits a post (`Create`, `Update`): the kinds a personal
/// inbox turns into a silent mention of its owner. A `Follow`, `Like` or `Accept` sent
/// there mentions nobody.
pub fn carries_a_post(doc: &Value) -> bool {
    fn at(doc: &Value, depth: usize) -> bool {
        ["Create", "Update"].iter().any(|t| includes(doc.get("type"), t))
            // A collection's items are processed each with the same inbox owner.
            || (depth < MAX_NESTING
                && ["items", "orderedItems"].iter().any(|k| as_array(doc.get(*k)).iter().any(|i| at(i, depth + 1))))
    }
    // Deeper than pavise reads, the body is opaque anyway.
    at(doc, 0)
}

/// `Create`/`Update`/`Announce` of an object the instance must fetch from a remote server.
fn fetched_object(doc: &Value, locals: &LocalHosts) -> bool {
    let kind = doc.get("type");
    if !["Create", "Update", "Announce"].iter().any(|t| includes(kind, t)) {
        return false;
    }
    as_array(doc.get("object")).iter().any(|object| {
        let reference = match object {
            Value::String(s) => s.as_str(),
            // An object without a type is only a reference to one.
            o @ Value::Object(_) if o.get("type").is_none() => match id_of(o) {
                Some(id) => id,
                None => return false,
            },
            _ => return false,
        };
        !is_local_url(reference, locals)
    })
}

/// An `Announce` embedding a post someone else wrote: Mastodon reads an embedded post only
/// for a self-boost, and otherwise fetches the original from its server
/// (`ActivityPub::Activity#status_from_object`), so whom it mentions is the fetched copy's.
fn foreign_boost(doc: &Value, locals: &LocalHosts) -> bool {
    if !includes(doc.get("type"), "Announce") {
        return false;
    }
    let actor = doc.get("actor").and_then(id_of);
    as_array(doc.get("object")).iter().any(|object| {
        // A local post is found by its id (`status_from_uri`), never fetched.
        let local = id_of(object).is_some_and(|id| is_local_url(id, locals));
        object.is_object() && object.get("type").is_some() && !local && {
            let author = as_array(object.get("attributedTo")).first().and_then(id_of);
            author.is_none() || author != actor
        }
    })
}

fn is_local_url(url: &str, locals: &LocalHosts) -> bool {
    url::Url::parse(url).ok().and_then(|u| u.host_str().map(|h| locals.contains(h))).unwrap_or(false)
}

/// The local account a reference names, if the instance would resolve it to one.
pub fn local_ref(reference: &str, locals: &LocalHosts) -> Option<LocalRef> {
    let r = reference.trim();
    let lower_prefix = |p: &str| r.get(..p.len()).filter(|h| h.eq_ignore_ascii_case(p)).map(|_| &r[p.len()..]);
    if let Some(acct) = lower_prefix("acct:") {
        return acct_ref(acct.strip_prefix('@').unwrap_or(acct), locals);
    }
    if let Some(tag) = lower_prefix("tag:") {
        return ostatus_tag(tag, locals);
    }
    if lower_prefix("https://").is_some() || lower_prefix("http://").is_some() {
        return url_ref(r, locals);
    }
    if !r.contains('/') && r.contains('@') {
        return acct_ref(r.strip_prefix('@').unwrap_or(r), locals);
    }
    None
}

/// `user@host`.
fn acct_ref(acct: &str, locals: &LocalHosts) -> Option<LocalRef> {
    let (user, host) = acct.rsplit_once('@')?;
    if user.is_empty() || user.contains(['@', '/', ':', '?', '#']) || !locals.contains(host) {
        return None;
    }
    Some(LocalRef::Name(user.to_lowercase()))
}

/// `tag:local.example,2016-10-03:objectId=123:objectType=Account`.
fn ostatus_tag(tag: &str, locals: &LocalHosts) -> Option<LocalRef> {
    let host = tag.split([',', ':']).next()?;
    if !locals.contains(host) {
        return None;
    }
    let (_, after) = tag.split_once("objectId=")?;
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    let rest = &after[digits.len()..];
    if digits.is_empty() || !rest.starts_with(":objectType=Account") {
        return None;
    }
    digits.parse().ok().map(LocalRef::Id)
}

/// An http(s) URL on the instance that Rails routes to `accounts#show`.
fn url_ref(url: &str, locals: &LocalHosts) -> Option<LocalRef> {
    let parsed = url::Url::parse(url).ok()?;
    if !matches!(parsed.scheme(), "http" | "https") || !locals.contains(parsed.host_str()?) {
        return None;
    }
    let segments: Vec<String> = parsed
        .path_segments()?
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect();
    account_path(&segments)
}

/// A local post's URL as Rails routes it to `statuses#show` (`/users/:name/statuses/:id`,
/// `/@:name/:id`, `/ap/users/:id/statuses/:id`): the post's owner, found by the post's id.
pub fn status_ref(url: &str, locals: &LocalHosts) -> Option<LocalRef> {
    let parsed = url::Url::parse(url.trim()).ok()?;
    if !matches!(parsed.scheme(), "http" | "https") || !locals.contains(parsed.host_str()?) {
        return None;
    }
    let segments: Vec<String> = parsed
        .path_segments()?
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect();
    let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
    let id = match seg.as_slice() {
        ["users", _, "statuses", id] | ["ap", "users", _, "statuses", id] => *id,
        [at, id] if at.starts_with('@') => *id,
        _ => return None,
    };
    // ActiveRecord casts the leading digits ("0123", "123.json", "123-x" are 123).
    let digits: String = id.chars().take_while(char::is_ascii_digit).collect();
    digits.parse::<u64>().ok().filter(|n| *n > 0).map(LocalRef::StatusOwner)
}

/// Rails' reading of a (percent-decoded, slash-squeezed) account path.
fn account_path(segments: &[String]) -> Option<LocalRef> {
    let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
    let last_without_format = |s: &str| s.split('.').next().unwrap_or(s).to_owned();
    match seg.as_slice() {
        ["users", name] => username(&last_without_format(name)),
        ["ap", "users", id] => numeric(&last_without_format(id)),
        [at] if at.starts_with('@') => username(&last_without_format(&at[1..])),
        [at, view] if at.starts_with('@') => {
            matches!(last_without_format(view).as_str(), "with_replies" | "media" | "featured")
                .then(|| username(&at[1..]))?
        }
        [at, "tagged", _] if at.starts_with('@') => username(&at[1..]),
        _ => None,
    }
}

fn username(name: &str) -> Option<LocalRef> {
    (!name.is_empty() && !name.contains(['@', '.'])).then(|| LocalRef::Name(name.to_lowercase()))
}

fn numeric(id: &str) -> Option<LocalRef> {
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())).then(|| id.parse().ok().map(LocalRef::Id))?
}

/// Which inbox a delivery reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboxPath {
    /// `/inbox`, `/actor/inbox`.
    Shared,
    /// `/users/NAME/inbox`, `/ap/users/ID/inbox`: the owner gets a silent mention.
    Personal(LocalRef),
}

impl InboxPath {
    /// The inbox of an `Inbox` route, read from the route's canonical path (slashes
    /// squeezed, format suffix split, segments decoded once, as Rails routes it).
    pub fn of(route: &Route) -> Option<InboxPath> {
        if route.class != RouteClass::Inbox {
            return None;
        }
        let mut segments = route.path.segments();
        match (segments.next(), segments.next(), segments.next(), segments.next()) {
            (Some("users"), Some(_), Some("inbox"), None) => {
                route.account.as_deref().and_then(username).map(InboxPath::Personal)
            }
            (Some("ap"), Some("users"), Some(id), Some("inbox")) => numeric(id).map(InboxPath::Personal),
            // `/inbox`, `/actor/inbox`, and any other spelling the route calls an inbox.
            _ => Some(InboxPath::Shared),
        }
    }
}

/// `as_array`: nothing, one value, or the items of an array.
fn as_array(v: Option<&Value>) -> &[Value] {
    match v {
        None | Some(Value::Null) => &[],
        Some(Value::Array(items)) => items,
        Some(one) => std::slice::from_ref(one),
    }
}

/// `equals_or_includes?`.
fn includes(v: Option<&Value>, needle: &str) -> bool {
    match v {
        Some(Value::String(s)) => s == needle,
        Some(Value::Array(items)) => items.iter().any(|i| i.as_str() == Some(needle)),
        _ => false,
    }
}

/// `value_or_id`.
pub fn id_of(v: &Value) -> Option<&str> {
    v.as_str().or_else(|| v.get("id")?.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn locals() -> LocalHosts {
        LocalHosts::new(["local.example", "local.example:8443"])
    }

    fn one(r: &str) -> Option<LocalRef> {
        local_ref(r, &locals())
    }

    fn alice() -> Option<LocalRef> {
        Some(LocalRef::Name("alice".into()))
    }

    #[test]
    fn every_spelling_of_a_member_is_the_member() {
        for r in [
            "https://local.example/users/alice",
            "https://LOCAL.Example/users/Alice",
            "https://local.example./users/alice",
            "https://local.example:443/users/alice",
            "https://local.example:8443/users/alice",
            "http://local.example/users/alice",
            "https://local.example/users/%61lice",
            "https://local.example//users//alice/",
            "https://local.example/users/alice.json",
            "https://local.example/users/alice#main-key",
            "https://someone@local.example/users/alice",
            "https://%6cocal.example/users/alice",
            "https://ｌｏｃａｌ.example/users/alice",
            "https://local.example/@alice",
            "https://local.example/@Alice/with_replies",
            "https://local.example/@alice/media",
            "https://local.example/@alice/tagged/hello",
            "acct:alice@local.example",
            "acct:@alice@LOCAL.example",
            "@alice@local.example",
            "alice@local.example.",
            " https://local.example/users/alice ",
        ] {
            assert_eq!(one(r), alice(), "{r}");
        }
        assert_eq!(one("https://local.example/ap/users/0123"), Some(LocalRef::Id(123)));
        assert_eq!(one("https://local.example/ap/users/42.json"), Some(LocalRef::Id(42)));
        assert_eq!(one("tag:local.example,2016-10-03:objectId=7:objectType=Account"), Some(LocalRef::Id(7)));
    }

    #[test]
    fn other_urls_are_not_members() {
        for r in [
            "https://remote.example/users/alice",
            "https://local.example.evil.example/users/alice",
            "https://local.example/users/alice/followers",
            "https://local.example/users/alice/statuses/1",
            "https://local.example/@alice/123",
            "https://local.example/ap/users/abc",
            "https://local.example/tags/alice",
            "ftp://local.example/users/alice",
            "acct:alice@remote.example",
            "tag:local.example,2016:objectId=7:objectType=Status",
            "https://local.example/users/",
            "",
        ] {
            assert_eq!(one(r), None, "{r}");
        }
    }

    fn read_json(v: Value) -> Addressed {
        read(&v, &locals())
    }

    #[test]
    fn tags_and_audience_in_every_shape() {
        let a = read_json(serde_json::json!({
            "type": "Create", "actor": "https://r.example/users/troll",
            "to": ["https://www.w3.org/ns/activitystreams#Public"],
            "cc": ["https://r.example/users/troll/followers", "https://local.example/users/Alice"],
            "object": {"type": "Note", "content": "hi",
                "to": {"id": "https://local.example/users/carol"},
                "cc": ["https://other.example/users/x"],
                "tag": {"type": ["Mention"], "href": "https://local.example/@bob"}}
        }));
        assert_eq!(
            a.local,
            [LocalRef::Name("alice".into()), LocalRef::Name("carol".into()), LocalRef::Name("bob".into())]
        );
        assert_eq!(a.total, 4);
        assert!(!a.opaque);
        // Only Mention tags count; hashtags do not.
        let a = read_json(serde_json::json!({"type":"Create","object":{"type":"Note",
            "tag":[{"type":"Hashtag","href":"https://local.example/users/nothere"},{"type":"Mention","href":"https://local.example/users/dave"}]}}));
        assert_eq!(a.local, [LocalRef::Name("dave".into())]);
        assert_eq!(read_json(serde_json::json!([1, 2])), Addressed::default());
    }

    #[test]
    fn objects_the_instance_must_fetch_are_opaque() {
        let opaque = |v: Value| read_json(v).opaque;
        assert!(opaque(serde_json::json!({"type":"Create","object":"https://r.example/notes/1"})));
        assert!(opaque(serde_json::json!({"type":"Announce","object":"https://r.example/notes/1"})));
        assert!(opaque(serde_json::json!({"type":["Update"],"object":{"id":"https://r.example/notes/1"}})));
        assert!(!opaque(
            serde_json::json!({"type":"Announce","object":"https://local.example/users/alice/statuses/1"})
        ));
        assert!(!opaque(
            serde_json::json!({"type":"Create","object":{"type":"Note","id":"https://r.example/notes/1"}})
        ));
        assert!(!opaque(serde_json::json!({"type":"Like","object":"https://r.example/notes/1"})));
    }

    #[test]
    fn collections_are_read_item_by_item() {
        let create = serde_json::json!({"type":"Create","object":{"type":"Note","tag":{"type":"Mention","href":"https://local.example/users/alice"}}});
        for (kind, key) in [
            ("Collection", "items"),
            ("OrderedCollection", "orderedItems"),
            ("OrderedCollectionPage", "orderedItems"),
            ("Note", "items"),
        ] {
            let a = read_json(serde_json::json!({"type": kind, key: [create.clone()]}));
            assert_eq!(a.local, [LocalRef::Name("alice".into())], "{kind}");
        }
        // A collection sent to a member's own inbox carries its items' posts to her.
        assert!(carries_a_post(
            &serde_json::json!({"type":"OrderedCollectionPage","orderedItems":[{"type":"Create"}]})
        ));
        assert!(!carries_a_post(&serde_json::json!({"type":"Collection","items":[{"type":"Like"}]})));
        // Nested collections are read too, a few levels deep; deeper ones are opaque.
        let nested = serde_json::json!({"type":"Collection","items":[{"type":"Collection","items":[create.clone()]}]});
        assert_eq!(read_json(nested).local, [LocalRef::Name("alice".into())]);
        let mut deep = create.clone();
        for _ in 0..5 {
            deep = serde_json::json!({"type":"Collection","items":[deep]});
        }
        assert!(read_json(deep).opaque);
    }

    #[test]
    fn a_boost_of_someone_elses_post_is_opaque() {
        let actor = "https://r.example/users/booster";
        let boost = |author: Option<&str>, id: &str| {
            let mut note = serde_json::json!({"id": id, "type": "Note", "content": "x"});
            if let Some(a) = author {
                note["attributedTo"] = a.into();
            }
            read_json(serde_json::json!({"type":"Announce","actor":actor,"object":note})).opaque
        };
        assert!(boost(Some("https://evil.example/users/sock"), "https://evil.example/notes/1"));
        assert!(boost(None, "https://evil.example/notes/1"));
        assert!(!boost(Some(actor), "https://r.example/notes/1"), "a self-boost is read as embedded");
        assert!(
            !boost(Some("https://x.example/u"), "https://local.example/users/alice/statuses/1"),
            "a local post is found, not fetched"
        );
    }

    #[test]
    fn follows_likes_and_boosts_address_the_member() {
        let a = read_json(serde_json::json!({"type":"Follow","object":"https://local.example/users/alice"}));
        assert_eq!(a.local, [LocalRef::Name("alice".into())]);
        for kind in ["Like", "Announce", "EmojiReact"] {
            let a = read_json(
                serde_json::json!({"type": kind, "object": "https://local.example/users/anyone/statuses/0123"}),
            );
            assert_eq!(a.local, [LocalRef::StatusOwner(123)], "{kind}");
        }
        for url in [
            "https://local.example/@alice/42",
            "https://local.example/ap/users/7/statuses/42.json",
            "https://LOCAL.example./users/bob/statuses/42-x",
        ] {
            assert_eq!(status_ref(url, &locals()), Some(LocalRef::StatusOwner(42)), "{url}");
        }
        for url in [
            "https://local.example/@alice/with_replies",
            "https://remote.example/users/a/statuses/1",
            "https://local.example/users/alice/statuses/1/activity",
        ] {
            assert_eq!(status_ref(url, &locals()), None, "{url}");
        }
        // A Like of a remote post addresses nobody here.
        assert!(read_json(serde_json::json!({"type":"Like","object":"https://r.example/notes/1"})).local.is_empty());
    }

    #[test]
    fn reading_is_bounded_whatever_the_shape() {
        let many: Vec<String> = (0..60_000).map(|i| format!("http://r/{i}")).collect();
        let a = read_json(serde_json::json!({"type":"Create","cc": many, "object":{"type":"Note"}}));
        assert!(a.truncated && a.opaque && a.total > MAX_ADDRESSEES);
        // Duplicates cost entries, not addressees.
        let same: Vec<&str> = vec!["https://local.example/users/alice"; 10_000];
        let a = read_json(serde_json::json!({"type":"Create","to": same}));
        assert_eq!(a.local, [LocalRef::Name("alice".into())]);
        assert!(a.truncated, "past MAX_ENTRIES");
        let few: Vec<String> = (0..100).map(|i| format!("https://r{i}.example/u")).collect();
        let a = read_json(serde_json::json!({"type":"Create","to": few}));
        assert_eq!((a.total, a.truncated), (100, false));
    }

    #[test]
    fn inbox_paths_as_rails_routes_them() {
        let inbox = |path: &str| InboxPath::of(&Route::classify(&http::Method::POST, path, None));
        let personal = |n: &str| Some(InboxPath::Personal(LocalRef::Name(n.into())));
        assert_eq!(inbox("/inbox"), Some(InboxPath::Shared));
        assert_eq!(inbox("//inbox/"), Some(InboxPath::Shared));
        assert_eq!(inbox("/inbox.json"), Some(InboxPath::Shared));
        assert_eq!(inbox("/actor/inbox"), Some(InboxPath::Shared));
        assert_eq!(inbox("/users/alice/inbox"), personal("alice"));
        assert_eq!(inbox("/users/%41lice//inbox.json"), personal("alice"));
        assert_eq!(inbox("/ap/users/12/inbox"), Some(InboxPath::Personal(LocalRef::Id(12))));
        assert_eq!(inbox("/users/alice/outbox"), None);
        assert_eq!(inbox("/users/a.b/inbox"), None);
    }

    #[test]
    fn local_hosts_normalize() {
        assert_eq!(canonical_host("Local.Example:8443").as_deref(), Some("local.example"));
        assert_eq!(canonical_host("[::1]:80").as_deref(), Some("[::1]"));
        assert_eq!(canonical_host("bücher.example").as_deref(), Some("xn--bcher-kva.example"));
        assert_eq!(canonical_host("a/b"), None);
    }
}
