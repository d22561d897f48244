//! Whom local members follow, as the instance says — so a wave never defers the
//! correspondents a member chose.
//!
//! A sender first seen yesterday is unfamiliar, but if the member followed it yesterday
//! its mentions are wanted, wave or not. Only the instance can say whom a member follows:
//! an activity from a remote server proves nothing about it. (An `Accept{Follow}` is
//! signed by the *remote* side; anyone can sign one naming a Follow the member never
//! sent, so believing it would let its author through the member's shield.)
//!
//! So when a shield goes up over a member, pavise reads the member's public `following`
//! collection (`/users/<name>/following`) from the instance on loopback, a bounded number
//! of pages, and keeps what it lists in memory for the life of the shield — the instance
//! stays the only record of a member's social graph; nothing about it is written to
//! pavise's store. A verified `Accept{Follow}` for a shielded member is taken as a *hint*
//! that the collection changed: it is read again a few seconds later, and only what the
//! instance then lists is believed. Hints coalesce: while a re-read is scheduled, more
//! hints add nothing, and a hint after a re-read has started schedules the next one — so
//! a forger's Accepts cost at most one loopback read per member every couple of seconds,
//! and cannot use up the re-read a real Accept needs.
//!
//! Members who hide their network (Mastodon lists no items then) are not helped by this;
//! their familiar correspondents (first seen long enough ago) still pass.

use std::{collections::HashSet, sync::Arc, time::Duration};

use serde_json::Value;

use super::{
    ShieldError,
    instance::{Answer, InstanceReader},
    limiter::KeyHasher,
    mention::{LocalHosts, LocalRef, id_of, local_ref},
};
use crate::proxy::OnBehalfOf;

/// Pages of one member's `following` collection read at most: Mastodon's cap on follows
/// (7,500) at its page size.
const MAX_PAGES: usize = 700;
/// How long after an Accept hint the collection is read again (the instance processes the
/// Accept in the background).
const HINT_DELAY: Duration = Duration::from_secs(2);

/// An `Accept{Follow}` of a follow by a local member: the member, if this is one. It is
/// only a hint: nothing is believed until the instance lists the follow.
pub fn accept_hint(doc: &Value, locals: &LocalHosts) -> Option<String> {
    if doc.get("type")?.as_str()? != "Accept" {
        return None;
    }
    let follow = doc.get("object")?;
    if follow.get("type")?.as_str()? != "Follow" {
        return None;
    }
    match local_ref(id_of(follow.get("actor")?)?, locals)? {
        LocalRef::Name(name) => Some(name),
        LocalRef::Id(_) | LocalRef::StatusOwner(_) => None,
    }
}

/// Follows the instance listed, per member, while the member is shielded.
pub struct Follows {
    reader: InstanceReader,
    hasher: KeyHasher,
    /// Member → keyed hashes of the actor URLs its collection listed at the last read.
    following: moka::sync::Cache<String, Arc<HashSet<u64>>>,
    /// Members whose collection was read during the current shield.
    read_recently: moka::sync::Cache<String, ()>,
    /// Members with a hinted re-read scheduled and not yet started.
    hinted: moka::sync::Cache<String, ()>,
}

impl Follows {
    /// `reread_after`: how long one read of a member's collection stands (the longest shield).
    pub fn new(reader: InstanceReader, accounts: u64, reread_after: Duration) -> Follows {
        Follows {
            reader,
            hasher: KeyHasher::default(),
            following: moka::sync::Cache::builder().max_capacity(accounts).time_to_live(reread_after).build(),
            read_recently: moka::sync::Cache::builder().max_capacity(accounts).time_to_live(reread_after).build(),
            // The TTL only guards against a lost task; a read clears its own entry.
            hinted: moka::sync::Cache::builder().max_capacity(accounts).time_to_live(HINT_DELAY * 30).build(),
        }
    }

    /// Whether the instance listed `actor` among `account`'s follows.
    pub fn follows(&self, account: &str, actor: &str) -> bool {
        self.following.get(account).is_some_and(|set| set.contains(&self.hasher.hash(0, actor)))
    }

    /// Reads `account`'s following collection from the instance in the background, unless
    /// it was read during the current shield. `host` is the instance's `Host`. Returns the
    /// task (tests wait on it).
    pub fn learn_from_instance(self: &Arc<Self>, account: &str, host: &str) -> Option<tokio::task::JoinHandle<()>> {
        // An id the instance would not name (`#ID`) has no collection pavise can ask for.
        if account.starts_with('#') || self.read_recently.contains_key(account) {
            return None;
        }
        self.read_recently.insert(account.to_owned(), ());
        Some(self.spawn_read(account, host, Duration::ZERO))
    }

    /// An Accept hint for a shielded member: read the collection again shortly.
    pub fn hint(self: &Arc<Self>, account: &str, host: &str) {
        let mut scheduled = false;
        self.hinted.get_with_by_ref(account, || scheduled = true);
        if scheduled {
            self.spawn_read(account, host, HINT_DELAY);
        }
    }

    fn spawn_read(self: &Arc<Self>, account: &str, host: &str, delay: Duration) -> tokio::task::JoinHandle<()> {
        let (this, account, host) = (self.clone(), account.to_owned(), host.to_owned());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            // From here on a new hint schedules a new read: this one may start too early
            // to see what the hint announced.
            this.hinted.invalidate(&account);
            match this.read_following(&account, &host).await {
                Ok(n) => tracing::info!(account = %account, follows = n, "read the member's following collection"),
                Err(e) => tracing::info!(account = %account, error = %e, "following collection not readable"),
            }
        })
    }

    /// Walks `/users/<account>/following` page by page; what it lists replaces what was
    /// known. Returns how many follows it listed.
    async fn read_following(&self, account: &str, host: &str) -> Result<usize, ShieldError> {
        let local_host = LocalHosts::new([host]);
        let mut next = Some(format!("/users/{account}/following"));
        let mut actors = HashSet::new();
        let mut pages = 0;
        while let Some(path) = next.take() {
            if pages == MAX_PAGES {
                break;
            }
            pages += 1;
            let doc = match self.reader.get(&path, host, "application/activity+json", OnBehalfOf::Housekeeping).await? {
                Answer::Json(doc) => doc,
                Answer::Status(s) => return Err(ShieldError::Instance(format!("the instance answered {s}"))),
            };
            // The collection itself either lists items or points at its first page.
            let page = match doc.get("first") {
                Some(Value::String(first)) => {
                    next = same_host_path(first, &local_host);
                    continue;
                }
                Some(first @ Value::Object(_)) => first,
                _ => &doc,
            };
            for item in ["orderedItems", "items"].iter().filter_map(|k| page.get(*k)?.as_array()).flatten() {
                if let Some(actor) = id_of(item) {
                    actors.insert(self.hasher.hash(0, actor));
                }
            }
            next = page.get("next").and_then(id_of).and_then(|n| same_host_path(n, &local_host));
        }
        let n = actors.len();
        self.following.insert(account.to_owned(), Arc::new(actors));
        Ok(n)
    }
}

/// The path and query of a page link, if it points at the instance itself.
fn same_host_path(link: &str, local_host: &LocalHosts) -> Option<String> {
    let uri: http::Uri = link.parse().ok()?;
    if uri.host().is_some_and(|h| !local_host.contains(h)) {
        return None;
    }
    Some(uri.path_and_query()?.as_str().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOB: &str = "https://remote.example/users/bob";

    fn locals() -> LocalHosts {
        LocalHosts::new(["local.example"])
    }

    #[test]
    fn an_accept_is_a_hint_about_a_local_follower_only() {
        let accept = |follower: &str| {
            serde_json::json!({
                "type": "Accept", "actor": BOB,
                "object": { "id": "https://local.example/0b1c", "type": "Follow", "actor": follower, "object": BOB },
            })
        };
        assert_eq!(accept_hint(&accept("https://local.example/users/Alice"), &locals()).as_deref(), Some("alice"));
        assert_eq!(accept_hint(&accept("https://elsewhere.example/users/alice"), &locals()), None);
        let like = serde_json::json!({ "type": "Accept", "actor": BOB, "object": { "type": "Like" } });
        assert_eq!(accept_hint(&like, &locals()), None);
        assert_eq!(accept_hint(&serde_json::json!("x"), &locals()), None);
    }

    #[test]
    fn page_links_are_followed_only_on_the_instance() {
        assert_eq!(
            same_host_path("https://local.example/users/alice/following?page=2", &locals()).as_deref(),
            Some("/users/alice/following?page=2")
        );
        assert_eq!(
            same_host_path("/users/alice/following?page=3", &locals()).as_deref(),
            Some("/users/alice/following?page=3")
        );
        assert_eq!(same_host_path("https://evil.example/x", &locals()), None);
    }
}
