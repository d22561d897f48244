//! Keyed GCRA limiters (governor) whose memory stays bounded under attack.
//!
//! governor's own keyed store grows with every new key until `retain_recent` runs, and
//! keys still inside their window cannot be retained away: a million distinct attacker
//! keys inside one minute would all stay. [`BoundedStore`] is governor's algorithm over
//! a store with a hard cap: once full, a key that has no state of its own shares one
//! overflow state with every other newcomer. Known keys (the regular domains and
//! clients) keep their own budget; the flood of new keys shares one budget, which is
//! what it deserves. Keys are 64-bit keyed hashes, so no token, actor URL or pseudonym is
//! held in the table.

use std::{
    hash::{BuildHasher, Hash, Hasher},
    num::NonZeroU32,
    sync::atomic::{AtomicU64, AtomicUsize, Ordering},
    time::Duration,
};

use dashmap::DashMap;
use governor::{
    Quota, RateLimiter,
    clock::Clock,
    middleware::{StateInformationMiddleware, StateSnapshot},
    nanos::Nanos,
    state::{StateStore, keyed::ShrinkableKeyedStateStore},
};

use super::{clock::TokioClock, policy::LimitRule};

/// One GCRA state: the theoretical arrival time in nanoseconds since the limiter's start
/// (0 = never seen), updated with compare-and-swap like governor's `InMemoryState`.
#[derive(Default)]
struct Cell(AtomicU64);

impl Cell {
    fn measure<T, E>(&self, f: impl Fn(Option<Nanos>) -> Result<(T, Nanos), E>) -> Result<T, E> {
        let mut prev = self.0.load(Ordering::Acquire);
        loop {
            let seen = if prev == 0 { None } else { Some(Nanos::from(prev)) };
            let (result, next) = f(seen)?;
            match self.0.compare_exchange_weak(prev, u64::from(next).max(1), Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(result),
                Err(actual) => prev = actual,
            }
        }
    }
}

/// A keyed state store with a hard cap on entries; see the module docs.
pub struct BoundedStore {
    map: DashMap<u64, Cell>,
    cap: usize,
    /// Entries inserted minus removed: an atomic counter, because `DashMap::len` locks
    /// every shard and this is checked on every new key.
    len: AtomicUsize,
    overflow: Cell,
    overflowed: AtomicU64,
}

impl BoundedStore {
    pub fn new(cap: usize) -> BoundedStore {
        BoundedStore {
            map: DashMap::with_shard_amount(64),
            cap: cap.max(1),
            len: AtomicUsize::new(0),
            overflow: Cell::default(),
            overflowed: AtomicU64::new(0),
        }
    }
}

impl StateStore for BoundedStore {
    type Key = u64;

    fn measure_and_replace<T, F, E>(&self, key: &u64, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        if let Some(cell) = self.map.get(key) {
            return cell.measure(f);
        }
        if self.len.load(Ordering::Relaxed) >= self.cap {
            self.overflowed.fetch_add(1, Ordering::Relaxed);
            return self.overflow.measure(f);
        }
        let entry = self.map.entry(*key).or_insert_with(|| {
            self.len.fetch_add(1, Ordering::Relaxed);
            Cell::default()
        });
        entry.measure(f)
    }
}

impl ShrinkableKeyedStateStore<u64> for BoundedStore {
    fn retain_recent(&self, drop_below: Nanos) {
        let below = u64::from(drop_below);
        self.map.retain(|_, cell| cell.0.load(Ordering::Relaxed) > below);
        self.len.store(self.map.len(), Ordering::Relaxed);
        if self.overflow.0.load(Ordering::Relaxed) <= below {
            self.overflow.0.store(0, Ordering::Relaxed);
        }
    }

    fn shrink_to_fit(&self) {
        self.map.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

type Governor = RateLimiter<u64, BoundedStore, TokioClock, StateInformationMiddleware>;

/// Why a request was refused, with what the `X-RateLimit-*` headers need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub rule: String,
    pub limit: u32,
    pub retry_after: Duration,
    /// Until the bucket is full again (Mastodon's `X-RateLimit-Reset`).
    pub reset_after: Duration,
}

/// One `[[limit]]` rule's limiter.
pub struct Limiter {
    pub rule: LimitRule,
    governor: Governor,
    clock: TokioClock,
    /// Replenish interval × burst: how long an empty bucket takes to fill.
    full_after: Duration,
}

impl Limiter {
    pub fn new(rule: LimitRule, max_keys: usize) -> Limiter {
        let clock = TokioClock;
        // GCRA: one cell every per/count, at most `burst` at once.
        let interval = (rule.per / rule.count).max(Duration::from_nanos(1));
        let burst = NonZeroU32::new(rule.burst).unwrap_or(NonZeroU32::MIN);
        let quota =
            Quota::with_period(interval).unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN)).allow_burst(burst);
        let governor: RateLimiter<u64, BoundedStore, TokioClock, governor::middleware::NoOpMiddleware<_>> =
            RateLimiter::new(quota, BoundedStore::new(max_keys), clock);
        let governor = governor.with_middleware::<StateInformationMiddleware>();
        Limiter { full_after: interval * rule.burst, rule, governor, clock }
    }

    /// One decision for `key` (already hashed by [`KeyHasher`]).
    pub fn check(&self, key: u64) -> Result<StateSnapshot, Denied> {
        self.governor.check_key(&key).map_err(|not_until| {
            let retry_after = not_until.wait_time_from(self.clock.now());
            Denied {
                rule: self.rule.name.clone(),
                limit: self.rule.burst,
                retry_after,
                reset_after: retry_after.max(self.full_after),
            }
        })
    }

    /// Drops keys whose bucket is full again (they are indistinguishable from new ones).
    pub fn housekeep(&self) {
        self.governor.retain_recent();
        self.governor.shrink_to_fit();
    }

    pub fn keys(&self) -> usize {
        self.governor.len()
    }
}

/// Hashes limiter keys under a per-process random key, so the tables hold no token,
/// actor or pseudonym in the clear and an attacker cannot aim for hash collisions.
///
/// Several nodes (`[cluster]`) must name one key alike in Redis: [`KeyHasher::keyed`]
/// seeds the hash with a secret every node derives from the shared key file instead.
#[derive(Clone, Default)]
pub struct KeyHasher(std::hash::RandomState, Option<[u8; 32]>);

impl KeyHasher {
    /// The same hashes on every node that has `secret` (and runs the same pavise build:
    /// std's SipHash is stable within one).
    pub fn keyed(secret: [u8; 32]) -> KeyHasher {
        KeyHasher(std::hash::RandomState::new(), Some(secret))
    }

    /// `namespace` separates e.g. verified domains from unverified clients.
    pub fn hash(&self, namespace: u8, key: impl Hash) -> u64 {
        let mut h = match &self.1 {
            Some(secret) => {
                let mut h = std::hash::DefaultHasher::new();
                secret.hash(&mut h);
                h
            }
            None => self.0.build_hasher(),
        };
        namespace.hash(&mut h);
        key.hash(&mut h);
        h.finish()
    }
}

/// The approximate heap a limiter's table uses per key: the u64 key, the state, and the
/// hash table's control byte and load-factor slack.
pub const BYTES_PER_KEY_ESTIMATE: usize = 40;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{proxy::contract::RouteClass, shield::policy::KeyKind};

    fn rule(count: u32, per: Duration, burst: u32) -> LimitRule {
        LimitRule {
            name: "t".into(),
            route: RouteClass::Auth,
            key: KeyKind::Client,
            count,
            per,
            burst,
            methods: vec![],
            paths: vec![],
            file: "t.toml".into(),
        }
    }

    #[test]
    fn burst_then_denied_per_key() {
        let l = Limiter::new(rule(5, Duration::from_secs(1800), 5), 1000);
        for _ in 0..5 {
            assert!(l.check(1).is_ok());
        }
        let d = l.check(1).unwrap_err();
        assert!(d.retry_after > Duration::from_secs(300) && d.retry_after <= Duration::from_secs(360), "{d:?}");
        assert_eq!(d.limit, 5);
        // Another key is unaffected.
        assert!(l.check(2).is_ok());
    }

    #[test]
    fn remaining_counts_down() {
        let l = Limiter::new(rule(3, Duration::from_secs(60), 3), 10);
        assert_eq!(l.check(9).unwrap().remaining_burst_capacity(), 2);
        assert_eq!(l.check(9).unwrap().remaining_burst_capacity(), 1);
    }

    #[test]
    fn a_million_keys_stay_under_the_cap() {
        let cap = 100_000;
        let l = Limiter::new(rule(1, Duration::from_secs(3600), 1), cap);
        // A known key, before the flood.
        assert!(l.check(u64::MAX).is_ok());
        let mut allowed = 0u64;
        for k in 0..1_000_000u64 {
            if l.check(k).is_ok() {
                allowed += 1;
            }
        }
        assert!(l.keys() <= cap, "{} keys", l.keys());
        // Newcomers past the cap shared one bucket: roughly `cap` got through, not a million.
        assert!(allowed <= cap as u64 + 1, "{allowed} allowed");
        // The known key kept its own state (and is over its limit: 1/hour).
        assert!(l.check(u64::MAX).is_err());
        l.housekeep();
        assert!(l.keys() <= cap);
    }

    #[tokio::test(start_paused = true)]
    async fn housekeeping_forgets_replenished_keys() {
        let l = Limiter::new(rule(1000, Duration::from_millis(10), 1), 100);
        for k in 0..50 {
            let _ = l.check(k);
        }
        assert_eq!(l.keys(), 50);
        tokio::time::advance(Duration::from_millis(20)).await;
        l.housekeep();
        assert_eq!(l.keys(), 0);
    }

    /// The limiter runs on the shield's clock: a paused one drives it, no sleeping.
    #[tokio::test(start_paused = true)]
    async fn a_denied_key_is_let_through_once_its_retry_after_has_passed() {
        let l = Limiter::new(rule(2, Duration::from_secs(60), 2), 10);
        assert!(l.check(1).is_ok() && l.check(1).is_ok());
        let denied = l.check(1).unwrap_err();
        assert_eq!(denied.retry_after, Duration::from_secs(30));
        tokio::time::advance(Duration::from_secs(29)).await;
        let denied = l.check(1).unwrap_err();
        assert_eq!(denied.retry_after, Duration::from_secs(1), "{denied:?}");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(l.check(1).is_ok());
        assert!(l.check(1).is_err(), "one cell replenished, not the whole burst");
        // A full bucket after `per`: the whole burst again.
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(l.check(1).is_ok() && l.check(1).is_ok());
    }
}
