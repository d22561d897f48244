//! Who is familiar: a remote actor the instance has accepted mail from, more than once,
//! over time — not anyone who once sent a ping.
//!
//! A familiar sender passes every shield, so familiarity must cost what a real
//! correspondent has and a sock puppet does not: a history with the instance's members.
//! An actor becomes familiar only when
//! - its deliveries *carried something to a member*: a post that mentions her (or went to
//!   her own inbox), a follow of her, a like, boost or quote of her post — read as the
//!   instance reads it ([`super::mention`]), naming an account the instance has — or came
//!   from an account a member it addresses follows. A `Delete` of nothing, a `Block`, a
//!   post to nobody, anything the instance drops (a *ghost*) teaches nothing, however
//!   often it is sent;
//! - the instance *accepted* them (it answered 2xx to a verified delivery pavise
//!   forwarded: a delivery pavise deferred, or the instance refused, teaches nothing);
//! - the first such delivery is at least `familiar_after` old, and another was accepted at
//!   least `familiar_after / 2` after the first.
//!
//! So no-op deliveries buy nothing; a puppet must mention (or follow, or like) members, in
//! their sight, across days — each mention a notification she can report or block. That
//! is still calendar time an attacker can pay (README says so). Familiarity is learned
//! while the wave detector is on. (A member's own follows, as the instance lists them, are
//! familiar to that member at once: [`super::follows`].)
//!
//! The two times are durable, in the store's first-seen table under keys of their own
//! (`accepted:<actor>`, `again:<actor>`); first-seen records written by older versions for
//! any verified delivery are not read, so after an upgrade familiarity is earned again.
//! Writes are batched in the housekeeping pass; losing them in a crash only makes a sender
//! look newer (stricter), never more familiar.

use std::{sync::Arc, time::Duration};

use super::ShieldError;
use crate::store::ShieldStore;

/// An actor's accepted deliveries, as far as they matter: the first, and the first one
/// at least half of `familiar_after` later.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sightings {
    pub first: Option<u64>,
    pub again: Option<u64>,
}

impl Sightings {
    pub fn familiar(&self, now_ms: u64, familiar_after: Duration) -> bool {
        let after = familiar_after.as_millis() as u64;
        matches!((self.first, self.again), (Some(first), Some(_)) if now_ms.saturating_sub(first) >= after)
    }
}

/// First-seen times: a bounded cache in front of the store, writes batched.
pub struct Familiarity {
    cache: moka::sync::Cache<String, Sightings>,
    pending: std::sync::Mutex<Vec<(String, u64)>>,
    durable: Arc<dyn ShieldStore>,
}

fn first_key(actor: &str) -> String {
    format!("accepted:{actor}")
}

fn again_key(actor: &str) -> String {
    format!("again:{actor}")
}

impl Familiarity {
    pub fn new(durable: Arc<dyn ShieldStore>, capacity: u64) -> Familiarity {
        Familiarity { cache: moka::sync::Cache::new(capacity), pending: std::sync::Mutex::new(Vec::new()), durable }
    }

    /// What is known of `actor`.
    pub async fn sightings(&self, actor: &str) -> Sightings {
        if let Some(s) = self.cache.get(actor) {
            return s;
        }
        let read = |key: String| async move {
            match self.durable.first_seen(&key).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read first-seen senders; treating the sender as new");
                    None
                }
            }
        };
        let s = Sightings { first: read(first_key(actor)).await, again: read(again_key(actor)).await };
        self.cache.insert(actor.to_owned(), s);
        s
    }

    /// Whether `actor` is familiar now.
    pub async fn is_familiar(&self, actor: &str, now_ms: u64, familiar_after: Duration) -> bool {
        self.sightings(actor).await.familiar(now_ms, familiar_after)
    }

    /// The instance accepted a verified delivery from `actor` (it answered 2xx).
    pub async fn accepted(&self, actor: &str, now_ms: u64, familiar_after: Duration) {
        let mut s = self.sightings(actor).await;
        let key = match s {
            Sightings { first: None, .. } => {
                s.first = Some(now_ms);
                first_key(actor)
            }
            Sightings { first: Some(first), again: None }
                if now_ms.saturating_sub(first) >= familiar_after.as_millis() as u64 / 2 =>
            {
                s.again = Some(now_ms);
                again_key(actor)
            }
            _ => return,
        };
        self.cache.insert(actor.to_owned(), s);
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.len() < 1_000_000 {
            pending.push((key, now_ms));
        }
    }

    /// Writes what was learned since the last flush.
    pub async fn flush(&self) -> Result<usize, ShieldError> {
        let batch = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        if batch.is_empty() {
            return Ok(0);
        }
        let n = batch.len();
        self.durable.record_first_seen(batch).await?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_sighting_is_not_familiarity() {
        let week = Duration::from_secs(7 * 86_400);
        let day_ms = 86_400_000;
        let once = Sightings { first: Some(0), again: None };
        assert!(!once.familiar(30 * day_ms, week), "a single ping, however old");
        let twice = Sightings { first: Some(0), again: Some(4 * day_ms) };
        assert!(!twice.familiar(6 * day_ms, week), "not old enough yet");
        assert!(twice.familiar(7 * day_ms, week));
        assert!(!Sightings::default().familiar(u64::MAX, week));
    }

    #[tokio::test]
    async fn a_second_acceptance_counts_only_after_half_of_familiar_after() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(crate::store::EmbeddedStore::open(dir.path(), 1 << 20).unwrap());
        let f = Familiarity::new(store.clone(), 100);
        let after = Duration::from_secs(10);
        f.accepted("https://r.example/u", 1_000, after).await;
        f.accepted("https://r.example/u", 2_000, after).await;
        assert_eq!(f.sightings("https://r.example/u").await, Sightings { first: Some(1_000), again: None });
        f.accepted("https://r.example/u", 6_000, after).await;
        assert_eq!(f.flush().await.unwrap(), 2);
        // Durable: a fresh cache reads both back.
        let f = Familiarity::new(store, 100);
        let s = f.sightings("https://r.example/u").await;
        assert_eq!(s, Sightings { first: Some(1_000), again: Some(6_000) });
        assert!(f.is_familiar("https://r.example/u", 11_000, after).await);
        assert!(!f.is_familiar("https://r.example/other", 11_000, after).await);
    }
}
