//! What an answer looks like once the expired posts are taken out of it.
//!
//! An expired post must not come back through any door: not as itself, not inside a
//! timeline, a thread's context, a search result, a notification, a conversation, a boost
//! (`reblog`), a quote (Mastodon 4.4 `quote.quoted_status`, the shallow
//! `quote.quoted_status_id`, Akkoma's `quote`), a grouped notification (`status_id`), an
//! ActivityPub collection page (items as objects or bare URIs), an RSS item or a streaming
//! event. Rather than list every endpoint (the instance adds new ones), the filters read
//! the *shapes* those answers share:
//!
//! - [`mastodon`]: any object that is a Status (it has an `id` and the fields every Status
//!   has) and is hidden, or that carries a hidden post in `reblog`, `quote`,
//!   `quoted_status`, `status`, `last_status` (or in any field holding a Status), or names
//!   one in `status_id`/`quoted_status_id`/`quote_id`, is hidden itself; hidden objects are
//!   cut out of every array they are in, and `status_ids` lists lose hidden ids. When the
//!   answer itself is hidden (a boost of an expired post, fetched by id) the caller answers
//!   404.
//! - [`activitypub`]: an item is hidden when it, its `id`, its `object` (a `Create` or an
//!   `Announce`) or a quote field names a hidden local status by URL — read the way Rails
//!   routes a path ([`status_id_of_url`]).
//! - [`rss`]: an `<item>`/`<entry>` whose link or guid names a hidden status goes.
//!
//! Each returns [`Filtered`]: untouched (the very same bytes go out), rewritten, or hidden
//! as a whole.

use super::json::{self, Node};
use crate::proxy::contract::route::status_of_url;

/// The outcome of filtering one answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filtered {
    /// Nothing in it is hidden.
    Untouched,
    /// Hidden elements were cut out; these are the bytes to send instead.
    Rewritten(Vec<u8>),
    /// The answer *is* a hidden post (or wraps one): answer as for a deleted post.
    Hidden,
}

/// Fields through which an object carries another post.
const CARRIERS: [&str; 6] = ["reblog", "quote", "quoted_status", "status", "last_status", "reblogged_status"];
/// Fields that name another post by id.
const ID_CARRIERS: [&str; 4] = ["status_id", "quoted_status_id", "quote_id", "reblog_of_id"];

/// Whether an object is a Status: an `id` plus what every Status has and nothing else does.
fn is_status(src: &[u8], node: &Node) -> bool {
    let Node::Object { fields, .. } = node else { return false };
    let has = |k: &str| fields.iter().any(|(key, _)| key.is(src, k));
    has("id") && (has("uri") || has("visibility") || has("reblog")) && !has("username")
}

/// Whether a Mastodon API object is, or carries, a hidden post.
pub fn mastodon_hidden(src: &[u8], node: &Node, hidden: &dyn Fn(&str) -> bool) -> bool {
    let Node::Object { fields, .. } = node else { return false };
    if is_status(src, node) && node.get(src, "id").and_then(|i| i.as_str(src)).is_some_and(|id| hidden(&id)) {
        return true;
    }
    for (key, value) in fields {
        match value {
            Node::Object { .. } => {
                let carries = CARRIERS.iter().any(|c| key.is(src, c)) || is_status(src, value);
                if carries && mastodon_hidden(src, value, hidden) {
                    return true;
                }
            }
            Node::String(s) if ID_CARRIERS.iter().any(|c| key.is(src, c)) && hidden(&s.text(src)) => return true,
            _ => {}
        }
    }
    false
}

/// Filters a Mastodon client-API answer (see the module docs).
pub fn mastodon(src: &[u8], hidden: &dyn Fn(&str) -> bool) -> Result<Filtered, json::JsonError> {
    let root = json::parse(src)?;
    if mastodon_hidden(src, &root, hidden) {
        return Ok(Filtered::Hidden);
    }
    // A status cut out because of what it carries (a boost of a hidden post) takes with it
    // whatever names it by id in the same answer (its grouped notification's `status_id`).
    let mut carried = Vec::new();
    collect_carrying(src, &root, hidden, &mut carried);
    let extended = |id: &str| hidden(id) || carried.iter().any(|c| c == id);
    let hidden: &dyn Fn(&str) -> bool = &extended;
    let mut drop = |n: &Node| mastodon_hidden(src, n, hidden);
    let mut out = Vec::with_capacity(src.len());
    let changed = write_filtered(src, &root, &mut drop, hidden, &mut out);
    Ok(if changed { Filtered::Rewritten(out) } else { Filtered::Untouched })
}

/// The ids of the statuses in `node` that are hidden only for what they carry.
fn collect_carrying(src: &[u8], node: &Node, hidden: &dyn Fn(&str) -> bool, out: &mut Vec<String>) {
    if is_status(src, node)
        && mastodon_hidden(src, node, hidden)
        && let Some(id) = node.get(src, "id").and_then(|i| i.as_str(src))
        && !hidden(&id)
    {
        out.push(id.into_owned());
    }
    match node {
        Node::Object { fields, .. } => fields.iter().for_each(|(_, v)| collect_carrying(src, v, hidden, out)),
        Node::Array { items, .. } => items.iter().for_each(|i| collect_carrying(src, i, hidden, out)),
        _ => {}
    }
}

/// [`Node::write_without`], plus: `status_ids` arrays lose hidden ids.
fn write_filtered(
    src: &[u8],
    root: &Node,
    drop: &mut dyn FnMut(&Node) -> bool,
    hidden: &dyn Fn(&str) -> bool,
    out: &mut Vec<u8>,
) -> bool {
    // Strings inside a `status_ids` array are the one place a bare id is dropped: mark them
    // by span, then let the one writer do the cutting.
    let mut id_spans = Vec::new();
    collect_status_id_spans(src, root, hidden, &mut id_spans);
    let mut combined = |n: &Node| drop(n) || (matches!(n, Node::String(_)) && id_spans.contains(&n.span().start));
    root.write_without(src, &mut combined, out)
}

fn collect_status_id_spans(src: &[u8], node: &Node, hidden: &dyn Fn(&str) -> bool, spans: &mut Vec<usize>) {
    match node {
        Node::Object { fields, .. } => {
            for (key, value) in fields {
                if let Node::Array { items, .. } = value
                    && key.text(src).ends_with("status_ids")
                {
                    for item in items {
                        if let Node::String(s) = item
                            && hidden(&s.text(src))
                        {
                            spans.push(s.span.start);
                        }
                    }
                }
                collect_status_id_spans(src, value, hidden, spans);
            }
        }
        Node::Array { items, .. } => items.iter().for_each(|i| collect_status_id_spans(src, i, hidden, spans)),
        _ => {}
    }
}

/// Fields through which an ActivityPub activity (or authorization) is about another object.
const AP_OBJECTS: [&str; 2] = ["object", "interactionTarget"];

/// Fields of an ActivityPub object that name a quoted post.
const AP_QUOTES: [&str; 5] = ["quote", "quoteUrl", "quoteUri", "_misskey_quote", "quoteURL"];

/// Whether an ActivityPub item is, or carries, a hidden local post.
pub fn activitypub_hidden(src: &[u8], node: &Node, hidden: &dyn Fn(&str) -> bool) -> bool {
    let names_hidden = |n: &Node| n.as_str(src).and_then(|u| status_of_url(&u)).is_some_and(|id| hidden(&id));
    match node {
        Node::String(_) => names_hidden(node),
        Node::Object { .. } => {
            if node.get(src, "id").is_some_and(names_hidden) {
                return true;
            }
            // The activity's object, and what a quote authorization (FEP-044f) authorizes.
            if AP_OBJECTS.iter().any(|k| node.get(src, k).is_some_and(|o| activitypub_hidden(src, o, hidden))) {
                return true;
            }
            AP_QUOTES.iter().any(|k| node.get(src, k).is_some_and(|q| activitypub_hidden(src, q, hidden)))
        }
        _ => false,
    }
}

/// Filters an ActivityPub document: collection pages lose hidden items; a document that is
/// itself a hidden post (or an activity about one) is hidden.
pub fn activitypub(src: &[u8], hidden: &dyn Fn(&str) -> bool) -> Result<Filtered, json::JsonError> {
    let root = json::parse(src)?;
    if activitypub_hidden(src, &root, hidden) {
        return Ok(Filtered::Hidden);
    }
    let mut drop = |n: &Node| activitypub_hidden(src, n, hidden);
    let mut out = Vec::with_capacity(src.len());
    let changed = root.write_without(src, &mut drop, &mut out);
    Ok(if changed { Filtered::Rewritten(out) } else { Filtered::Untouched })
}

/// Filters an RSS or Atom feed: every `<item>` (`<entry>`) whose `<link>`, `<guid>`, `<id>`
/// or `href` names a hidden status is cut out, whitespace before it included.
pub fn rss(src: &[u8], hidden: &dyn Fn(&str) -> bool) -> Filtered {
    let text = String::from_utf8_lossy(src);
    let mut out = String::with_capacity(text.len());
    let mut rest: &str = &text;
    let mut changed = false;
    loop {
        let next =
            ["<item>", "<item ", "<entry>", "<entry "].iter().filter_map(|t| rest.find(t).map(|i| (i, *t))).min();
        let Some((start, tag)) = next else { break };
        let close = if tag.starts_with("<item") { "</item>" } else { "</entry>" };
        let Some(len) = rest[start..].find(close) else { break };
        let end = start + len + close.len();
        let item = &rest[start..end];
        if item_names_hidden(item, hidden) {
            out.push_str(rest[..start].trim_end_matches([' ', '\t', '\r', '\n']));
            changed = true;
        } else {
            out.push_str(&rest[..end]);
        }
        rest = &rest[end..];
    }
    if !changed {
        return Filtered::Untouched;
    }
    out.push_str(rest);
    Filtered::Rewritten(out.into_bytes())
}

fn item_names_hidden(item: &str, hidden: &dyn Fn(&str) -> bool) -> bool {
    // A description carries the post's HTML escaped: its links are `href=&quot;...&quot;`.
    let unescaped = item.replace("&quot;", "\"").replace("&#34;", "\"");
    let item = unescaped.as_str();
    let mut urls = Vec::new();
    for (open, close) in [("<link>", "</link>"), ("<id>", "</id>")] {
        let mut rest = item;
        while let Some(i) = rest.find(open) {
            let after = &rest[i + open.len()..];
            let Some(j) = after.find(close) else { break };
            urls.push(&after[..j]);
            rest = &after[j..];
        }
    }
    let mut rest = item;
    while let Some(i) = rest.find("<guid") {
        let after = &rest[i..];
        let (Some(gt), Some(end)) = (after.find('>'), after.find("</guid>")) else { break };
        if gt < end {
            urls.push(&after[gt + 1..end]);
        }
        rest = &after[end..];
    }
    let mut rest = item;
    while let Some(i) = rest.find("href=\"") {
        let after = &rest[i + 6..];
        let Some(j) = after.find('"') else { break };
        urls.push(&after[..j]);
        rest = &after[j..];
    }
    urls.iter().map(|u| u.trim().replace("&amp;", "&")).any(|u| status_of_url(&u).is_some_and(|id| hidden(&id)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const H: &str = "110000000000000001";

    fn hidden(id: &str) -> bool {
        id == H
    }

    fn status(id: &str) -> String {
        format!(
            r#"{{"id":"{id}","uri":"https://i.example/users/alice/statuses/{id}","visibility":"direct","content":"<p>x</p>","account":{{"id":"9","username":"alice"}},"reblog":null}}"#
        )
    }

    fn ids(out: &[u8]) -> Vec<String> {
        let v: serde_json::Value = serde_json::from_slice(out).unwrap();
        let mut found = Vec::new();
        fn walk(v: &serde_json::Value, found: &mut Vec<String>) {
            match v {
                serde_json::Value::Object(m) => {
                    if let Some(serde_json::Value::String(id)) = m.get("id") {
                        found.push(id.clone());
                    }
                    m.values().for_each(|x| walk(x, found));
                }
                serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, found)),
                _ => {}
            }
        }
        walk(&v, &mut found);
        found
    }

    fn rewritten(f: Filtered) -> Vec<u8> {
        match f {
            Filtered::Rewritten(b) => b,
            other => panic!("expected a rewrite, got {other:?}"),
        }
    }

    #[test]
    fn timelines_context_search_and_the_status_itself() {
        let timeline = format!("[{},{},{}]", status("1"), status(H), status("2"));
        let out = rewritten(mastodon(timeline.as_bytes(), &hidden).unwrap());
        assert_eq!(ids(&out).iter().filter(|i| i.len() < 3).collect::<Vec<_>>(), ["1", "9", "2", "9"]);
        assert!(!String::from_utf8_lossy(&out).contains(H));

        let context = format!(r#"{{"ancestors":[{}],"descendants":[{},{}]}}"#, status(H), status("3"), status(H));
        let out = rewritten(mastodon(context.as_bytes(), &hidden).unwrap());
        assert!(!String::from_utf8_lossy(&out).contains(H));
        assert!(String::from_utf8_lossy(&out).contains(r#""id":"3""#));

        let search = format!(r#"{{"accounts":[],"statuses":[{}],"hashtags":[]}}"#, status(H));
        assert_eq!(
            rewritten(mastodon(search.as_bytes(), &hidden).unwrap()),
            br#"{"accounts":[],"statuses":[],"hashtags":[]}"#
        );

        assert_eq!(mastodon(status(H).as_bytes(), &hidden).unwrap(), Filtered::Hidden);
        let visible = format!("[{},{}]", status("1"), status("2"));
        assert_eq!(mastodon(visible.as_bytes(), &hidden).unwrap(), Filtered::Untouched);
    }

    #[test]
    fn what_carries_a_hidden_post_goes_with_it() {
        let boost = format!(
            r#"{{"id":"50","uri":"https://i.example/users/bob/statuses/50/activity","visibility":"public","reblog":{}}}"#,
            status(H)
        );
        assert_eq!(mastodon(boost.as_bytes(), &hidden).unwrap(), Filtered::Hidden, "a boost of it");
        let quote = format!(
            r#"{{"id":"51","uri":"u","visibility":"public","reblog":null,"quote":{{"state":"accepted","quoted_status":{}}}}}"#,
            status(H)
        );
        assert_eq!(mastodon(quote.as_bytes(), &hidden).unwrap(), Filtered::Hidden, "a 4.4 quote of it");
        let shallow = format!(
            r#"{{"id":"52","uri":"u","visibility":"public","quote":{{"state":"accepted","quoted_status_id":"{H}"}}}}"#
        );
        assert_eq!(mastodon(shallow.as_bytes(), &hidden).unwrap(), Filtered::Hidden, "a shallow quote");
        let akkoma = format!(r#"{{"id":"53","uri":"u","visibility":"public","quote":{}}}"#, status(H));
        assert_eq!(mastodon(akkoma.as_bytes(), &hidden).unwrap(), Filtered::Hidden);

        let notifications = format!(
            r#"[{{"id":"7","type":"mention","status":{}}},{{"id":"8","type":"follow","account":{{"id":"1","username":"x"}}}}]"#,
            status(H)
        );
        assert_eq!(ids(&rewritten(mastodon(notifications.as_bytes(), &hidden).unwrap())), ["8", "1"]);
        let conversations = format!(r#"[{{"id":"c1","unread":true,"accounts":[],"last_status":{}}}]"#, status(H));
        assert_eq!(rewritten(mastodon(conversations.as_bytes(), &hidden).unwrap()), b"[]");

        let grouped = format!(
            r#"{{"accounts":[],"statuses":[{}],"notification_groups":[{{"group_key":"g1","type":"favourite","status_id":"{H}","sample_account_ids":["{H}"]}},{{"group_key":"g2","type":"follow"}}]}}"#,
            status(H)
        );
        let out = rewritten(mastodon(grouped.as_bytes(), &hidden).unwrap());
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("g1") && text.contains("g2") && !text.contains(r#""statuses":[{"#), "{text}");

        // A boost of it cut from `statuses` takes its group along, though its own id is not hidden.
        let boost = format!(r#"{{"id":"77","uri":"u","visibility":"public","reblog":{}}}"#, status(H));
        let grouped = format!(
            r#"{{"statuses":[{boost}],"notification_groups":[{{"group_key":"g7","type":"reblog","status_id":"77"}}]}}"#
        );
        assert_eq!(
            rewritten(mastodon(grouped.as_bytes(), &hidden).unwrap()),
            br#"{"statuses":[],"notification_groups":[]}"#
        );

        let report = format!(r#"{{"id":"r","status_ids":["1","{H}","2"],"account_ids":["{H}"]}}"#);
        let out = rewritten(mastodon(report.as_bytes(), &hidden).unwrap());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!(r#"{{"id":"r","status_ids":["1","2"],"account_ids":["{H}"]}}"#)
        );
    }

    /// No over-hiding: an account, a reply to the hidden post, a mention of its id in text.
    #[test]
    fn what_merely_mentions_it_stays() {
        let account = format!(r#"{{"id":"{H}","username":"alice","acct":"alice","note":"x"}}"#);
        assert_eq!(mastodon(account.as_bytes(), &hidden).unwrap(), Filtered::Untouched);
        let reply = format!(r#"{{"id":"60","uri":"u","visibility":"public","in_reply_to_id":"{H}","content":"{H}"}}"#);
        assert_eq!(mastodon(reply.as_bytes(), &hidden).unwrap(), Filtered::Untouched);
        let marker = format!(r#"{{"home":{{"last_read_id":"{H}"}}}}"#);
        assert_eq!(mastodon(marker.as_bytes(), &hidden).unwrap(), Filtered::Untouched);
    }

    #[test]
    fn urls_read_the_way_rails_routes_them() {
        for url in [
            format!("https://i.example/users/alice/statuses/{H}"),
            format!("https://i.example/users/alice/statuses/{H}/activity"),
            format!("https://i.example/@alice/{H}"),
            format!("https://i.example/@alice/0{H}.json"),
            format!("https://i.example//users/Alice/statuses/{H}-x?x=1#y"),
            format!("/@alice/{H}/embed"),
            format!("https://i.example/@alice/%3{}{}", &H[..1], &H[1..]),
        ] {
            assert_eq!(status_of_url(&url).as_deref(), Some(H), "{url}");
        }
        for url in ["https://i.example/@alice", "https://i.example/tags/x", "alice", "https://i.example"] {
            assert_eq!(status_of_url(url), None, "{url}");
        }
    }

    #[test]
    fn activitypub_pages() {
        let note = |id: &str| format!(r#"{{"id":"https://i.example/users/alice/statuses/{id}","type":"Note"}}"#);
        let create = |id: &str| {
            format!(
                r#"{{"id":"https://i.example/users/alice/statuses/{id}/activity","type":"Create","object":{}}}"#,
                note(id)
            )
        };
        let outbox = format!(
            r#"{{"type":"OrderedCollectionPage","orderedItems":[{},{},{{"type":"Announce","id":"https://i.example/users/bob/statuses/77/activity","object":"https://i.example/users/alice/statuses/{H}"}}],"next":"https://i.example/users/alice/outbox?max_id={H}&page=true"}}"#,
            create("5"),
            create(H)
        );
        let out = String::from_utf8(rewritten(activitypub(outbox.as_bytes(), &hidden).unwrap())).unwrap();
        assert!(out.contains("statuses/5/activity") && !out.contains("Announce"), "{out}");
        assert!(out.contains(&format!("max_id={H}")), "pagination links are left as they are");

        let replies = format!(
            r#"{{"type":"CollectionPage","items":["https://i.example/users/alice/statuses/{H}","https://r.example/notes/1",{}]}}"#,
            note("6")
        );
        let out = String::from_utf8(rewritten(activitypub(replies.as_bytes(), &hidden).unwrap())).unwrap();
        assert!(!out.contains(H) && out.contains("r.example") && out.contains("statuses/6"), "{out}");
        assert_eq!(activitypub(note(H).as_bytes(), &hidden).unwrap(), Filtered::Hidden);
        assert_eq!(activitypub(create("5").as_bytes(), &hidden).unwrap(), Filtered::Untouched);
        let quoting =
            format!(r#"{{"id":"https://r.example/n/2","type":"Note","quoteUrl":"https://i.example/@alice/{H}"}}"#);
        assert_eq!(activitypub(quoting.as_bytes(), &hidden).unwrap(), Filtered::Hidden);
        let authorization = format!(
            r#"{{"type":"QuoteAuthorization","id":"https://i.example/users/alice/quote_authorizations/9","interactingObject":"https://r.example/notes/1","interactionTarget":"https://i.example/users/alice/statuses/{H}"}}"#
        );
        assert_eq!(activitypub(authorization.as_bytes(), &hidden).unwrap(), Filtered::Hidden, "a quote authorization");
    }

    #[test]
    fn rss_items() {
        let item = |id: &str| {
            format!(
                "\n    <item>\n      <guid isPermaLink=\"true\">https://i.example/@alice/{id}</guid>\n      <link>https://i.example/@alice/{id}</link>\n      <description>&lt;p&gt;x&lt;/p&gt;</description>\n    </item>"
            )
        };
        let feed = format!(
            "<?xml version=\"1.0\"?><rss><channel><title>a</title>{}{}\n  </channel></rss>",
            item("5"),
            item(H)
        );
        let out = String::from_utf8(rewritten(rss(feed.as_bytes(), &hidden))).unwrap();
        assert!(out.contains("@alice/5") && !out.contains(H) && out.ends_with("</item>\n  </channel></rss>"), "{out}");
        let quoting = format!(
            "<rss><item><link>https://i.example/@bob/9</link><description>&lt;a href=&quot;https://i.example/@alice/{H}&quot;&gt;</description></item></rss>"
        );
        assert_eq!(
            rss(quoting.as_bytes(), &hidden),
            Filtered::Rewritten(b"<rss></rss>".to_vec()),
            "an item linking it"
        );
        let atom = format!("<feed><entry><id>https://i.example/users/alice/statuses/{H}</id></entry></feed>");
        assert_eq!(rss(atom.as_bytes(), &hidden), Filtered::Rewritten(b"<feed></feed>".to_vec()));
        assert_eq!(rss(item("5").as_bytes(), &hidden), Filtered::Untouched);
    }
}
