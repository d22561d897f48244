//! Numeric account ids to usernames, so `/ap/users/ID` and `/users/NAME` are one member.
//!
//! Mastodon ≥ 4.4 gives accounts numeric ActivityPub ids (`https://host/ap/users/123`)
//! and still resolves the username forms, so one member has two spellings; counted apart,
//! a wave split between them would never reach its threshold. The shield keys everything
//! on the username and asks the instance for the name behind an id: the public account
//! API (`/api/v1/accounts/ID`), else the actor document (`/ap/users/ID`). Answers are
//! cached (names for an hour, misses for a minute) and the lookups are few at a time, so
//! a flood of made-up ids costs a bounded number of loopback requests.
//!
//! An id the instance will not name (the API closed to anonymous readers *and* authorized
//! fetch on) is counted as `#ID`: still one key per member, but apart from the username.
//! An id the instance does not know (404), or a remote account's, is no mention at all —
//! as in Mastodon, which finds no local account behind it.

use std::time::Duration;

use serde_json::Value;

use super::{
    instance::{Answer, InstanceReader},
    mention::LocalRef,
};
use crate::proxy::OnBehalfOf;

/// What the instance said about an id.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Lookup {
    /// A status of a local account (the owner's name).
    Owner(String),
    Name(String),
    /// No local account has this id.
    NotLocal,
    /// The instance would not say.
    Unknown,
}

/// What a local reference comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// The member, by the key the shield counts under (a username, or `#ID`).
    Member(String),
    /// No local account.
    Nobody,
    /// Some member pavise cannot name: held back from every shielded member.
    Unknown,
}

pub struct LocalAccounts {
    reader: InstanceReader,
    /// Keyed by (what, id): 0 = account id, 1 = status id.
    cache: moka::future::Cache<(u8, u64), Lookup>,
    /// Usernames: whether a local account has it.
    names: moka::future::Cache<String, Lookup>,
    permits: tokio::sync::Semaphore,
}

struct LookupExpiry;

fn lifetime(value: &Lookup) -> Duration {
    match value {
        Lookup::Name(_) | Lookup::Owner(_) => Duration::from_secs(3600),
        Lookup::NotLocal | Lookup::Unknown => Duration::from_secs(60),
    }
}

impl moka::Expiry<(u8, u64), Lookup> for LookupExpiry {
    fn expire_after_create(&self, _key: &(u8, u64), value: &Lookup, _now: std::time::Instant) -> Option<Duration> {
        Some(lifetime(value))
    }
}

impl moka::Expiry<String, Lookup> for LookupExpiry {
    fn expire_after_create(&self, _key: &String, value: &Lookup, _now: std::time::Instant) -> Option<Duration> {
        Some(lifetime(value))
    }
}

impl LocalAccounts {
    pub fn new(reader: InstanceReader, capacity: u64) -> LocalAccounts {
        LocalAccounts {
            reader,
            cache: moka::future::Cache::builder().max_capacity(capacity).expire_after(LookupExpiry).build(),
            names: moka::future::Cache::builder().max_capacity(capacity).expire_after(LookupExpiry).build(),
            permits: tokio::sync::Semaphore::new(4),
        }
    }

    /// The key a local reference counts under. `host` is the instance's.
    pub async fn key(&self, r: &LocalRef, host: &str, behalf: OnBehalfOf) -> Key {
        match r {
            LocalRef::Name(name) => Key::Member(name.clone()),
            LocalRef::Id(id) => match self.cache.get_with((0, *id), self.lookup(*id, host, behalf)).await {
                Lookup::Name(name) => Key::Member(name),
                Lookup::Owner(_) | Lookup::NotLocal => Key::Nobody,
                Lookup::Unknown => Key::Member(unnamed(*id)),
            },
            LocalRef::StatusOwner(id) => match self.cache.get_with((1, *id), self.owner(*id, host, behalf)).await {
                Lookup::Owner(name) | Lookup::Name(name) => Key::Member(name),
                Lookup::NotLocal => Key::Nobody,
                Lookup::Unknown => Key::Unknown,
            },
        }
    }

    /// Whether the answer for `name` is known already (no request needed).
    pub fn knows(&self, name: &str) -> bool {
        name.starts_with('#') || self.names.contains_key(name)
    }

    /// Whether a local account has this username (true when the instance will not say).
    pub async fn exists(&self, name: &str, host: &str, behalf: OnBehalfOf) -> bool {
        if name.starts_with('#') {
            return true;
        }
        !matches!(self.names.get_with_by_ref(name, self.lookup_name(name, host, behalf)).await, Lookup::NotLocal)
    }

    async fn lookup_name(&self, name: &str, host: &str, behalf: OnBehalfOf) -> Lookup {
        let Ok(_permit) = self.permits.acquire().await else { return Lookup::Unknown };
        let acct = percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC);
        match self.reader.get(&format!("/api/v1/accounts/lookup?acct={acct}"), host, "application/json", behalf).await {
            Ok(Answer::Json(doc)) => from_api(&doc),
            Ok(Answer::Status(404)) => Lookup::NotLocal,
            Ok(Answer::Status(_)) | Err(_) => Lookup::Unknown,
        }
    }

    async fn owner(&self, id: u64, host: &str, behalf: OnBehalfOf) -> Lookup {
        let Ok(_permit) = self.permits.acquire().await else { return Lookup::Unknown };
        match self.reader.get(&format!("/api/v1/statuses/{id}"), host, "application/json", behalf).await {
            Ok(Answer::Json(doc)) => match doc.get("account").map(from_api) {
                Some(Lookup::Name(name)) => Lookup::Owner(name),
                Some(Lookup::NotLocal) => Lookup::NotLocal,
                _ => Lookup::Unknown,
            },
            _ => Lookup::Unknown,
        }
    }

    async fn lookup(&self, id: u64, host: &str, behalf: OnBehalfOf) -> Lookup {
        let Ok(_permit) = self.permits.acquire().await else { return Lookup::Unknown };
        let api = self.reader.get(&format!("/api/v1/accounts/{id}"), host, "application/json", behalf).await;
        match api {
            Ok(Answer::Json(doc)) => return from_api(&doc),
            Ok(Answer::Status(404)) => return Lookup::NotLocal,
            Ok(Answer::Status(_)) | Err(_) => {}
        }
        match self.reader.get(&format!("/ap/users/{id}"), host, "application/activity+json", behalf).await {
            Ok(Answer::Json(doc)) => match doc.get("preferredUsername").and_then(Value::as_str) {
                Some(name) if !name.is_empty() => Lookup::Name(name.to_lowercase()),
                _ => Lookup::Unknown,
            },
            Ok(Answer::Status(404)) => Lookup::NotLocal,
            Ok(Answer::Status(_)) | Err(_) => {
                tracing::debug!(id, "the instance would not name a local account id");
                Lookup::Unknown
            }
        }
    }
}

/// The key of an id the instance would not name.
pub fn unnamed(id: u64) -> String {
    format!("#{id}")
}

/// Mastodon's Account entity: a local account's `acct` is its bare username.
fn from_api(doc: &Value) -> Lookup {
    match (doc.get("username").and_then(Value::as_str), doc.get("acct").and_then(Value::as_str)) {
        (Some(name), Some(acct)) if !acct.contains('@') && !name.is_empty() => Lookup::Name(name.to_lowercase()),
        (Some(_), Some(_)) => Lookup::NotLocal,
        _ => Lookup::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_accounts_have_local_names() {
        assert_eq!(
            from_api(&serde_json::json!({"id":"1","username":"Alice","acct":"Alice"})),
            Lookup::Name("alice".into())
        );
        assert_eq!(
            from_api(&serde_json::json!({"id":"2","username":"bob","acct":"bob@remote.example"})),
            Lookup::NotLocal
        );
        assert_eq!(from_api(&serde_json::json!({"error":"x"})), Lookup::Unknown);
    }
}
