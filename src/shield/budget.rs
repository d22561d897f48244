//! What a key fetch may cost, and who pays for it.
//!
//! A keyId is chosen by the sender: without a budget, anyone can make pavise send
//! requests to a host of their choice, or tie up every fetch with a host that answers
//! slowly, so that a real first-time sender waits behind them. So a fetch is admitted only
//! when:
//! - the connecting client (its pseudonym) and the keyId's host are each within their own
//!   rate (`[shield] key_fetches_per_client`, `key_fetches_per_host`), spent only when a
//!   fetch really happens — a cached key costs nothing;
//! - neither has more than [`MAX_IN_FLIGHT_EACH`] fetches running already;
//! - one of the global fetch slots frees up within [`PERMIT_WAIT`]: a busy fetcher fails
//!   fast rather than queueing a delivery behind a flood.
//!
//! A fetch that is not admitted is not a failure of the key: nothing is cached, and the
//! delivery is one pavise cannot verify *now* — the stage holds such deliveries and
//! verifies them again later instead of refusing them. Inside one fetch, redirects and
//! follow-up documents share one budget of GETs ([`super::keys`]).

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use dashmap::DashMap;

use super::{
    limiter::{KeyHasher, Limiter},
    policy::{KeyKind, LimitRule},
};
use crate::proxy::RouteClass;

/// Fetches one client, or one keyId host, may have running at once.
pub const MAX_IN_FLIGHT_EACH: usize = 4;
/// Fetches running at once, overall.
pub const GLOBAL_SLOTS: usize = 32;
/// How long a delivery waits for a global slot before it is treated as unverifiable now.
pub const PERMIT_WAIT: Duration = Duration::from_secs(2);

/// Why a fetch was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The client or the host spent its rate.
    Budget,
    /// Too many fetches running for this client or host, or no global slot in time.
    Busy,
}

/// The budgets, with their rates as `(count, per)`.
pub struct FetchBudget {
    per_client: Limiter,
    per_host: Limiter,
    running: DashMap<u64, AtomicUsize>,
    slots: Arc<tokio::sync::Semaphore>,
    hasher: KeyHasher,
}

/// Held while a fetch runs: gives back the in-flight counts and the global slot.
pub struct Admitted<'a> {
    budget: &'a FetchBudget,
    keys: [Option<u64>; 2],
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        for key in self.keys.iter().flatten() {
            self.budget.leave(*key);
        }
    }
}

fn rule(name: &str, (count, per): (u32, Duration)) -> LimitRule {
    LimitRule {
        name: name.into(),
        route: RouteClass::Inbox,
        key: KeyKind::Client,
        count,
        per,
        burst: count,
        methods: vec![],
        paths: vec![],
        file: "[shield]".into(),
    }
}

impl FetchBudget {
    /// `per_client` and `per_host`: fetches per period (the count is also the burst).
    pub fn new(per_client: (u32, Duration), per_host: (u32, Duration)) -> FetchBudget {
        FetchBudget {
            per_client: Limiter::new(rule("key-fetches-per-client", per_client), 100_000),
            per_host: Limiter::new(rule("key-fetches-per-host", per_host), 100_000),
            running: DashMap::new(),
            slots: Arc::new(tokio::sync::Semaphore::new(GLOBAL_SLOTS)),
            hasher: KeyHasher::default(),
        }
    }

    /// Admits one fetch for `client` (None: pavise's own re-verification, which only the
    /// host's budget limits) from the keyId host `host`.
    pub async fn admit(&self, client: Option<u64>, host: &str) -> Result<Admitted<'_>, Refused> {
        let host_key = self.hasher.hash(2, host);
        let client_key = client.map(|c| self.hasher.hash(1, c));
        // In flight first: a refused fetch spends no rate.
        let mut entered: [Option<u64>; 2] = [None, None];
        for (slot, key) in [client_key, Some(host_key)].into_iter().enumerate() {
            let Some(key) = key else { continue };
            if !self.enter(key) {
                for k in entered.iter().flatten() {
                    self.leave(*k);
                }
                return Err(Refused::Busy);
            }
            entered[slot] = Some(key);
        }
        let give_back = |entered: &[Option<u64>; 2]| {
            for k in entered.iter().flatten() {
                self.leave(*k);
            }
        };
        let over =
            client_key.is_some_and(|c| self.per_client.check(c).is_err()) || self.per_host.check(host_key).is_err();
        if over {
            give_back(&entered);
            return Err(Refused::Budget);
        }
        match tokio::time::timeout(PERMIT_WAIT, self.slots.clone().acquire_owned()).await {
            Ok(Ok(slot)) => Ok(Admitted { budget: self, keys: entered, _slot: slot }),
            _ => {
                give_back(&entered);
                Err(Refused::Busy)
            }
        }
    }

    fn enter(&self, key: u64) -> bool {
        let entry = self.running.entry(key).or_insert_with(|| AtomicUsize::new(0));
        entry.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < MAX_IN_FLIGHT_EACH).then_some(n + 1)).is_ok()
    }

    fn leave(&self, key: u64) {
        let mut empty = false;
        if let Some(n) = self.running.get(&key) {
            empty = n.fetch_sub(1, Ordering::AcqRel) == 1;
        }
        if empty {
            self.running.remove_if(&key, |_, n| n.load(Ordering::Acquire) == 0);
        }
    }

    /// Trims the rate tables (housekeeping).
    pub fn housekeep(&self) {
        self.per_client.housekeep();
        self.per_host.housekeep();
    }
}

impl Default for FetchBudget {
    /// Generous budgets, for tests and tools that build a verifier by hand.
    fn default() -> Self {
        FetchBudget::new((1000, Duration::from_secs(60)), (1000, Duration::from_secs(60)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_client_and_a_host_each_spend_their_own_rate() {
        let b = FetchBudget::new((3, Duration::from_secs(3600)), (5, Duration::from_secs(3600)));
        for _ in 0..3 {
            assert!(b.admit(Some(1), "a.example").await.is_ok());
        }
        assert_eq!(b.admit(Some(1), "b.example").await.err(), Some(Refused::Budget), "the client's rate");
        assert!(b.admit(Some(2), "a.example").await.is_ok());
        assert!(b.admit(Some(3), "a.example").await.is_ok());
        assert_eq!(b.admit(Some(4), "a.example").await.err(), Some(Refused::Budget), "the host's rate");
        assert!(b.admit(None, "c.example").await.is_ok(), "pavise's own re-verification");
    }

    #[tokio::test]
    async fn in_flight_fetches_are_capped_and_given_back() {
        let b = FetchBudget::default();
        let mut running = Vec::new();
        for _ in 0..MAX_IN_FLIGHT_EACH {
            running.push(b.admit(Some(7), "slow.example").await.unwrap());
        }
        assert_eq!(b.admit(Some(7), "other.example").await.err(), Some(Refused::Busy), "the client");
        assert_eq!(b.admit(Some(8), "slow.example").await.err(), Some(Refused::Busy), "the host");
        running.pop();
        assert!(b.admit(Some(8), "slow.example").await.is_ok());
        running.clear();
        assert!(b.running.is_empty(), "counts are given back");
    }
}
