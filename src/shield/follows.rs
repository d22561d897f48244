//! Who local members follow, so a wave never defers the correspondents a member chose.
//!
//! A sender first seen yesterday is unfamiliar, but if the member followed it yesterday
//! its mentions are wanted, wave or not. Pavise learns follows from two cheap sources:
//! - **`Accept{Follow}` deliveries.** When a remote actor accepts a member's follow, its
//!   server tells the member's inbox, signed. The wave path already verifies the signature
//!   and reads the body, so the follow costs one store write. The Accept is believed only
//!   from the actor who was followed; `Reject{Follow}` (also sent when a followed actor
//!   removes the follower) unlearns it.
//! - **The instance itself**, when a shield goes up over a member: pavise reads the
//!   member's public `following` collection (ActivityPub, `/users/<name>/following`) from
//!   the upstream on loopback, once per shield, a bounded number of pages. Members who
//!   hide their network (Mastodon answers 403 for the pages) rely on the Accepts alone.
//!
//! Unfollows made on the instance are not seen: the `Undo` goes out over Tor, encrypted.
//! A stale follow lets one sender through to one member, which was that member's choice.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde_json::Value;

use super::{ShieldError, wave};
use crate::store::{FollowChange, ShieldStore};

/// Pages of one member's `following` collection read at most (Mastodon: 10 per page).
const MAX_PAGES: usize = 100;
/// A collection page larger than this is not one of Mastodon's.
const MAX_PAGE_BYTES: usize = 1 << 20;
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// What an `Accept` or `Reject` of a member's `Follow` says, if `body` is one, sent by
/// (the verified) `sender` about a follow of `sender` by an account on `local_domain`.
pub fn follow_answer(body: &[u8], sender: &str, local_domain: &str) -> Option<FollowChange> {
    let doc: Value = serde_json::from_slice(body).ok()?;
    let following = match doc.get("type")?.as_str()? {
        "Accept" => true,
        "Reject" => false,
        _ => return None,
    };
    if id_of(doc.get("actor")?)? != sender {
        return None;
    }
    let follow = doc.get("object")?;
    if follow.get("type")?.as_str()? != "Follow" {
        return None;
    }
    // Only the followed actor may answer for the follow.
    if let Some(object) = follow.get("object")
        && id_of(object)? != sender
    {
        return None;
    }
    let account = wave::local_account(id_of(follow.get("actor")?)?, &wave::host_only(local_domain))?;
    Some(FollowChange { account, actor: sender.to_owned(), following })
}

/// An ActivityStreams reference: a URL, or an object carrying it as `id`.
fn id_of(v: &Value) -> Option<&str> {
    v.as_str().or_else(|| v.get("id")?.as_str())
}

/// Follows learned so far: the store, with a bounded cache of answers in front.
pub struct Follows {
    durable: Arc<dyn ShieldStore>,
    /// (account, actor) → follows; negative answers too, so a wave of strangers costs one
    /// store read per stranger.
    known: moka::sync::Cache<(String, String), bool>,
    /// Members whose collection was read during the current shield.
    read_recently: moka::sync::Cache<String, ()>,
    client: Client<HttpConnector, Empty<Bytes>>,
    upstream: http::uri::Authority,
}

impl Follows {
    /// `reread_after`: how long one read of a member's collection stands (the longest shield).
    pub fn new(
        durable: Arc<dyn ShieldStore>,
        upstream: http::uri::Authority,
        capacity: u64,
        reread_after: Duration,
    ) -> Follows {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(FETCH_TIMEOUT));
        Follows {
            durable,
            known: moka::sync::Cache::new(capacity),
            read_recently: moka::sync::Cache::builder().max_capacity(10_000).time_to_live(reread_after).build(),
            client: Client::builder(TokioExecutor::new()).set_host(false).build(connector),
            upstream,
        }
    }

    /// Whether local `account` follows `actor`. A store error answers "no": the stricter side.
    pub async fn follows(&self, account: &str, actor: &str) -> bool {
        let key = (account.to_owned(), actor.to_owned());
        if let Some(known) = self.known.get(&key) {
            return known;
        }
        let follows = self.durable.follows(account, actor).await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot read follows; treating the sender as not followed");
            false
        });
        self.known.insert(key, follows);
        follows
    }

    pub async fn record(&self, changes: Vec<FollowChange>) -> Result<(), ShieldError> {
        self.durable.record_follows(changes.clone()).await?;
        for c in changes {
            self.known.insert((c.account, c.actor), c.following);
        }
        Ok(())
    }

    /// Reads `account`'s following collection from the instance in the background, unless
    /// it was read during the current shield. `local_domain` is the instance's `Host`.
    pub fn learn_from_instance(self: &Arc<Self>, account: &str, local_domain: &str) {
        if self.read_recently.contains_key(account) {
            return;
        }
        self.read_recently.insert(account.to_owned(), ());
        let (this, account, host) = (self.clone(), account.to_owned(), local_domain.to_owned());
        tokio::spawn(async move {
            match this.read_following(&account, &host).await {
                Ok(n) => tracing::info!(account = %account, follows = n, "read the member's following collection"),
                Err(e) => {
                    tracing::info!(account = %account, error = %e, "following collection not readable; follows from Accepts only")
                }
            }
        });
    }

    /// Walks `/users/<account>/following` page by page; records what it lists.
    async fn read_following(&self, account: &str, local_domain: &str) -> Result<usize, ShieldError> {
        let local_host = wave::host_only(local_domain);
        let mut next = Some(format!("/users/{account}/following"));
        let mut actors = Vec::new();
        let mut pages = 0;
        while let Some(path) = next.take() {
            if pages == MAX_PAGES {
                break;
            }
            pages += 1;
            let doc = self.get(&path, local_domain).await?;
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
                    actors.push(FollowChange { account: account.to_owned(), actor: actor.to_owned(), following: true });
                }
            }
            next = page.get("next").and_then(id_of).and_then(|n| same_host_path(n, &local_host));
        }
        let n = actors.len();
        if n > 0 {
            self.record(actors).await?;
        }
        Ok(n)
    }

    async fn get(&self, path_and_query: &str, local_domain: &str) -> Result<Value, ShieldError> {
        let fail = |e: String| ShieldError::Fetch(format!("{path_and_query}: {e}"));
        let uri = http::Uri::builder()
            .scheme("http")
            .authority(self.upstream.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|e| fail(e.to_string()))?;
        let req = Request::get(uri)
            .header(header::HOST, local_domain)
            .header(header::ACCEPT, "application/activity+json")
            // Mastodon in production redirects plain HTTP to https unless told otherwise.
            .header("x-forwarded-proto", "https")
            .body(Empty::new())
            .map_err(|e| fail(e.to_string()))?;
        let fetch = async {
            let resp = self.client.request(req).await.map_err(|e| fail(e.to_string()))?;
            if !resp.status().is_success() {
                return Err(fail(format!("the instance answered {}", resp.status())));
            }
            let body = http_body_util::Limited::new(resp.into_body(), MAX_PAGE_BYTES)
                .collect()
                .await
                .map_err(|e| fail(e.to_string()))?
                .to_bytes();
            serde_json::from_slice(&body).map_err(|e| fail(e.to_string()))
        };
        tokio::time::timeout(FETCH_TIMEOUT, fetch).await.map_err(|_| fail("timed out".into()))?
    }
}

/// The path and query of a page link, if it points at the instance itself.
fn same_host_path(link: &str, local_host: &str) -> Option<String> {
    let uri: http::Uri = link.parse().ok()?;
    if uri.host().is_some_and(|h| !h.eq_ignore_ascii_case(local_host)) {
        return None;
    }
    Some(uri.path_and_query()?.as_str().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOB: &str = "https://remote.example/users/bob";

    fn answer(kind: &str, actor: &str, follower: &str, object: Value) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "@context": "https://www.w3.org/ns/activitystreams",
            "id": "https://remote.example/users/bob#accepts/follows/1",
            "type": kind,
            "actor": actor,
            "object": { "id": "https://local.example/0b1c", "type": "Follow", "actor": follower, "object": object },
        }))
        .unwrap()
    }

    #[test]
    fn an_accept_from_the_followed_actor_records_the_follow() {
        let body = answer("Accept", BOB, "https://local.example/users/Alice", BOB.into());
        let got = follow_answer(&body, BOB, "local.example").unwrap();
        assert_eq!(got, FollowChange { account: "alice".into(), actor: BOB.into(), following: true });
        let body = answer("Reject", BOB, "https://local.example/users/alice", serde_json::json!({ "id": BOB }));
        assert!(!follow_answer(&body, BOB, "local.example").unwrap().following);
    }

    #[test]
    fn nobody_else_can_answer_for_a_follow() {
        let mallory = "https://evil.example/users/mallory";
        // Signed by mallory, claiming to be bob.
        let body = answer("Accept", BOB, "https://local.example/users/alice", BOB.into());
        assert_eq!(follow_answer(&body, mallory, "local.example"), None);
        // Mallory accepting a follow of bob.
        let body = answer("Accept", mallory, "https://local.example/users/alice", BOB.into());
        assert_eq!(follow_answer(&body, mallory, "local.example"), None);
        // A follower on another server.
        let body = answer("Accept", BOB, "https://elsewhere.example/users/alice", BOB.into());
        assert_eq!(follow_answer(&body, BOB, "local.example"), None);
        // Not a follow at all.
        let like = serde_json::json!({ "type": "Accept", "actor": BOB, "object": { "type": "Like" } });
        assert_eq!(follow_answer(like.to_string().as_bytes(), BOB, "local.example"), None);
        assert_eq!(follow_answer(b"not json", BOB, "local.example"), None);
    }

    #[test]
    fn page_links_are_followed_only_on_the_instance() {
        assert_eq!(
            same_host_path("https://local.example/users/alice/following?page=2", "local.example").as_deref(),
            Some("/users/alice/following?page=2")
        );
        assert_eq!(
            same_host_path("/users/alice/following?page=3", "local.example").as_deref(),
            Some("/users/alice/following?page=3")
        );
        assert_eq!(same_host_path("https://evil.example/x", "local.example"), None);
    }
}
