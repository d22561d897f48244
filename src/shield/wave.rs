//! The harassment-wave detector: how many distinct, real strangers mention one member.
//!
//! A wave is many *unfamiliar* remote actors mentioning one local account inside a short
//! window (the February 2024 spam waves, dogpiles on a dissident). Mastodon has nothing
//! against it at ingest, so pavise counts, per local account, the distinct unfamiliar
//! actors that mentioned it within `window`; past `distinct_senders` the account is
//! shielded, and the stage defers what unfamiliar senders address to it.
//!
//! A shield holds back a member's real mail too, so it must cost an attacker what a wave
//! costs — real actors — and nothing less:
//! - only actors whose signatures verified are counted (the stage never calls
//!   [`WaveDetector::observe`] for anything else), each once per account: a replayed or
//!   retried delivery, or a second mention, adds nothing;
//! - an actor is remembered by the account for `memory` (at least `familiar_after`, by
//!   which time it is familiar and never counted again), so the same few actors cannot
//!   raise the shield again once it has lapsed;
//! - the shield lasts `shield_for` after the last new actor that kept the window above
//!   the threshold: it is extended only while the wave itself goes on, and ends on its
//!   own once new actors stop arriving;
//! - [`WaveDetector::report`] says why each shield is up: how many actors, from how many
//!   domains.
//!
//! All state is in moka caches with fixed capacities, so a million fresh actors cost a
//! bounded amount of memory: the per-account windows keep at most a few times
//! `distinct_senders` entries, and the account table itself is capped.

use std::{
    collections::{HashSet, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// The knobs of one observation (from the `[wave]` policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaveParams {
    pub window: Duration,
    pub distinct: usize,
    pub shield_for: Duration,
    /// How long an account remembers an actor that mentioned it.
    pub memory: Duration,
}

/// Per-account windows of unfamiliar actors, and the shields they raise.
pub struct WaveDetector {
    windows: moka::sync::Cache<String, Arc<Mutex<Window>>>,
    shields: moka::sync::Cache<String, Arc<Shield>>,
    /// Timestamps in windows are seconds since this, to keep entries small.
    epoch: Instant,
}

/// One raised shield.
#[derive(Debug, Clone, Copy)]
struct Shield {
    until: Instant,
    raised: Instant,
    /// Distinct actors in the window when it went up.
    raised_by: usize,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The actor's first mention of the account, in seconds since the epoch.
    first: u32,
    sender: u64,
    /// Index into `Window::domains`, or [`OTHER_DOMAIN`].
    domain: u8,
}

const OTHER_DOMAIN: u8 = u8::MAX;

#[derive(Default)]
struct Window {
    /// Oldest first: the window's count is a binary search, expiry and eviction pop the front.
    order: VecDeque<Entry>,
    /// The actors in `order`.
    members: HashSet<u64>,
    /// The domains seen, for the report (at most 255 names; more count as one "other").
    domains: Vec<Box<str>>,
    /// When the admin lifted the shield: actors first seen before then still count as
    /// known (their retries add nothing) but no longer toward the window.
    lifted_at: Option<u32>,
}

impl Window {
    fn domain_index(&mut self, domain: &str) -> u8 {
        if let Some(i) = self.domains.iter().position(|d| &**d == domain) {
            return i as u8;
        }
        if self.domains.len() < usize::from(OTHER_DOMAIN) {
            self.domains.push(domain.into());
            return (self.domains.len() - 1) as u8;
        }
        OTHER_DOMAIN
    }
}

/// What observing one mention did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// Nothing new: the actor was already counted, or the window is below the threshold.
    Calm,
    /// A new actor inside a wave: the shield was extended (or is up already).
    Extended,
    /// This mention pushed the account over the threshold.
    ShieldRaised,
}

/// Why one shield is up, for `/admin/shield`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShieldReport {
    pub account: String,
    pub remaining: Duration,
    pub raised_ago: Duration,
    /// Distinct verified actors in the window when it went up.
    pub raised_by: usize,
    /// Distinct verified actors whose first mention is inside the current window.
    pub actors_in_window: usize,
    /// Distinct verified actors the account remembers (they will not count again).
    pub actors_remembered: usize,
    /// Distinct domains of the remembered actors.
    pub domains: usize,
    /// The domains with the most remembered actors, most first (at most 10).
    pub top_domains: Vec<(String, usize)>,
}

impl WaveDetector {
    /// `accounts`: how many local accounts may have a live window at once (memory cap);
    /// `memory`: how long an idle account's window is kept (the longest sender memory);
    /// `max_shield`: the longest a shield can last without an extension.
    pub fn new(accounts: u64, memory: Duration, max_shield: Duration) -> WaveDetector {
        WaveDetector {
            windows: moka::sync::Cache::builder().max_capacity(accounts).time_to_idle(memory).build(),
            shields: moka::sync::Cache::builder().max_capacity(accounts).time_to_live(max_shield).build(),
            epoch: Instant::now(),
        }
    }

    /// How many senders one account remembers at most: enough to see the threshold crossed
    /// and to recognise the wave's senders when they retry, small enough that 10,000
    /// accounts under attack cost tens of megabytes.
    pub fn per_account_cap(distinct: usize) -> usize {
        distinct.saturating_mul(8).max(256)
    }

    fn secs(&self, t: Instant) -> u32 {
        u32::try_from(t.saturating_duration_since(self.epoch).as_secs()).unwrap_or(u32::MAX)
    }

    /// Counts a verified, unfamiliar `sender` (a keyed hash of its actor URL) of `domain`
    /// mentioning `account`. The shield is raised or extended only by actors new to the
    /// account, and only while the window is above the threshold.
    pub fn observe(&self, account: &str, sender: u64, domain: &str, now: Instant, p: &WaveParams) -> Observed {
        let now_s = self.secs(now);
        let window_s = u32::try_from(p.window.as_secs()).unwrap_or(u32::MAX).max(1);
        let memory_s = u32::try_from(p.memory.max(p.window + p.shield_for).as_secs()).unwrap_or(u32::MAX).max(1);
        let win = self.windows.get_with_by_ref(account, || Arc::new(Mutex::new(Window::default())));
        let count = {
            let mut w = win.lock().unwrap_or_else(|e| e.into_inner());
            while w.order.front().is_some_and(|e| now_s.saturating_sub(e.first) >= memory_s) {
                if let Some(gone) = w.order.pop_front() {
                    w.members.remove(&gone.sender);
                }
            }
            if w.members.contains(&sender) {
                return Observed::Calm;
            }
            if w.order.len() >= Self::per_account_cap(p.distinct)
                && let Some(oldest) = w.order.pop_front()
            {
                w.members.remove(&oldest.sender);
            }
            let domain = w.domain_index(domain);
            w.order.push_back(Entry { first: now_s, sender, domain });
            w.members.insert(sender);
            let lifted_at = w.lifted_at;
            w.order.len()
                - w.order.partition_point(|e| {
                    now_s.saturating_sub(e.first) >= window_s || lifted_at.is_some_and(|l| e.first <= l)
                })
        };
        if count <= p.distinct {
            return Observed::Calm;
        }
        let current = self.shields.get(account).filter(|s| s.until > now);
        match current {
            None => {
                self.shields.insert(
                    account.to_owned(),
                    Arc::new(Shield { until: now + p.shield_for, raised: now, raised_by: count }),
                );
                tracing::warn!(account, actors = count, shield_for = ?p.shield_for, "mention wave: account shielded");
                Observed::ShieldRaised
            }
            Some(s) => {
                // Extend while new actors keep the wave above the threshold (at most once a
                // second: a cache write per mention would dominate the cost of a wave).
                if s.until + Duration::from_secs(1) < now + p.shield_for {
                    self.shields.insert(account.to_owned(), Arc::new(Shield { until: now + p.shield_for, ..*s }));
                }
                Observed::Extended
            }
        }
    }

    /// When the shield over `account` ends, if there is one.
    pub fn shield_until(&self, account: &str, now: Instant) -> Option<Instant> {
        self.shields.get(account).map(|s| s.until).filter(|until| *until > now)
    }

    /// The accounts shielded now.
    pub fn shielded(&self, now: Instant) -> Vec<String> {
        let mut out: Vec<String> =
            self.shields.iter().filter(|(_, s)| s.until > now).map(|(account, _)| (*account).clone()).collect();
        out.sort();
        out
    }

    /// Every active shield and why it is up. `window`: the policy's.
    pub fn report(&self, now: Instant, window: Duration) -> Vec<ShieldReport> {
        let now_s = self.secs(now);
        let window_s = u32::try_from(window.as_secs()).unwrap_or(u32::MAX).max(1);
        let mut out: Vec<ShieldReport> = self
            .shields
            .iter()
            .filter(|(_, s)| s.until > now)
            .map(|(account, s)| {
                let mut r = ShieldReport {
                    account: (*account).clone(),
                    remaining: s.until.saturating_duration_since(now),
                    raised_ago: now.saturating_duration_since(s.raised),
                    raised_by: s.raised_by,
                    actors_in_window: 0,
                    actors_remembered: 0,
                    domains: 0,
                    top_domains: Vec::new(),
                };
                if let Some(win) = self.windows.get(&*account) {
                    let w = win.lock().unwrap_or_else(|e| e.into_inner());
                    r.actors_remembered = w.order.len();
                    r.actors_in_window = w.order.iter().filter(|e| now_s.saturating_sub(e.first) < window_s).count();
                    let mut per_domain = vec![0usize; 256];
                    for e in &w.order {
                        per_domain[usize::from(e.domain)] += 1;
                    }
                    r.domains = per_domain.iter().filter(|n| **n > 0).count();
                    let mut top: Vec<(String, usize)> = per_domain
                        .iter()
                        .enumerate()
                        .filter(|(_, n)| **n > 0)
                        .map(|(i, n)| {
                            let name = w.domains.get(i).map_or("(other domains)".to_owned(), |d| d.to_string());
                            (name, *n)
                        })
                        .collect();
                    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                    top.truncate(10);
                    r.top_domains = top;
                }
                r
            })
            .collect();
        out.sort_by(|a, b| a.account.cmp(&b.account));
        out
    }

    /// Ends a shield now (admin action). The actors already counted stay known, so their
    /// retries do not raise it again at once; new actors start a new count.
    pub fn lift(&self, account: &str, now: Instant) {
        self.shields.invalidate(account);
        if let Some(win) = self.windows.get(account) {
            win.lock().unwrap_or_else(|e| e.into_inner()).lifted_at = Some(self.secs(now));
        }
    }

    /// Entries held, for the memory test and metrics.
    pub fn entries(&self) -> (u64, u64) {
        self.windows.run_pending_tasks();
        self.shields.run_pending_tasks();
        (self.windows.entry_count(), self.shields.entry_count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(window: u64, distinct: usize, shield_for: u64, memory: u64) -> WaveParams {
        WaveParams {
            window: Duration::from_secs(window),
            distinct,
            shield_for: Duration::from_secs(shield_for),
            memory: Duration::from_secs(memory),
        }
    }

    fn detector() -> WaveDetector {
        WaveDetector::new(1000, Duration::from_secs(86_400), Duration::from_secs(3600))
    }

    #[test]
    fn shield_after_distinct_senders() {
        let d = detector();
        let now = Instant::now();
        let p = params(600, 5, 60, 0);
        for sender in 0..5 {
            assert_eq!(d.observe("alice", sender, "r.example", now, &p), Observed::Calm);
        }
        // The same sender again changes nothing.
        assert_eq!(d.observe("alice", 4, "r.example", now, &p), Observed::Calm);
        assert!(d.shield_until("alice", now).is_none());
        assert_eq!(d.observe("alice", 99, "s.example", now, &p), Observed::ShieldRaised);
        assert!(d.shield_until("alice", now).is_some());
        assert!(d.shield_until("bob", now).is_none());
        assert_eq!(d.shielded(now), ["alice"]);
        // Shield ends.
        assert!(d.shield_until("alice", now + Duration::from_secs(61)).is_none());
        let r = &d.report(now, p.window)[0];
        assert_eq!((r.raised_by, r.actors_in_window, r.domains), (6, 6, 2));
        assert_eq!(r.top_domains[0], ("r.example".to_owned(), 5));
    }

    #[test]
    fn old_senders_leave_the_window() {
        let d = detector();
        let t0 = Instant::now();
        let p = params(10, 5, 60, 0);
        for sender in 0..5 {
            d.observe("alice", sender, "r.example", t0, &p);
        }
        assert_eq!(d.observe("alice", 7, "r.example", t0 + Duration::from_secs(11), &p), Observed::Calm);
    }

    #[test]
    fn the_same_actors_cannot_raise_it_again_and_it_ends_without_new_ones() {
        let d = detector();
        let t0 = Instant::now();
        // Remembered for a day (familiar_after), shield for 5 s.
        let p = params(600, 20, 5, 86_400);
        for sender in 0..25 {
            d.observe("alice", sender, "r.example", t0, &p);
        }
        assert!(d.shield_until("alice", t0).is_some());
        // The same 25 actors keep mentioning: no extension; the shield lapses on time.
        for i in 1..=10 {
            let t = t0 + Duration::from_secs(i);
            for sender in 0..25 {
                assert_eq!(d.observe("alice", sender, "r.example", t, &p), Observed::Calm);
            }
        }
        assert!(d.shield_until("alice", t0 + Duration::from_secs(6)).is_none());
        // Hours later, the same actors still count for nothing: no new shield.
        let later = t0 + Duration::from_secs(4 * 3600);
        for sender in 0..25 {
            assert_eq!(d.observe("alice", sender, "r.example", later, &p), Observed::Calm);
        }
        assert!(d.shield_until("alice", later).is_none());
    }

    #[test]
    fn an_extension_needs_the_wave_to_go_on() {
        let d = detector();
        let t0 = Instant::now();
        let p = params(10, 3, 5, 86_400);
        for sender in 0..4 {
            d.observe("alice", sender, "r.example", t0, &p);
        }
        let raised_until = d.shield_until("alice", t0).unwrap();
        // One new actor a while later, alone in the window: below the threshold, so the
        // shield is not extended by it.
        let t = t0 + Duration::from_secs(12);
        assert_eq!(d.observe("alice", 100, "r.example", t, &p), Observed::Calm);
        assert_eq!(d.shield_until("alice", t0), Some(raised_until));
        // New actors above the threshold inside one window extend it.
        let t = t0 + Duration::from_secs(3);
        let d = detector();
        for sender in 0..4 {
            d.observe("alice", sender, "r.example", t0, &p);
        }
        assert_eq!(d.observe("alice", 50, "r.example", t, &p), Observed::Extended);
        assert_eq!(d.shield_until("alice", t0), Some(t + p.shield_for));
    }

    #[test]
    fn after_a_lift_the_known_actors_do_not_raise_it_again() {
        let d = detector();
        let t0 = Instant::now();
        let p = params(600, 3, 600, 86_400);
        for sender in 0..10 {
            d.observe("alice", sender, "r.example", t0, &p);
        }
        assert!(d.shield_until("alice", t0).is_some());
        let t1 = t0 + Duration::from_secs(5);
        d.lift("alice", t1);
        assert!(d.shield_until("alice", t1).is_none());
        let t2 = t1 + Duration::from_secs(1);
        for sender in 0..10 {
            assert_eq!(d.observe("alice", sender, "r.example", t2, &p), Observed::Calm, "a retry");
        }
        for sender in 100..103 {
            assert_eq!(d.observe("alice", sender, "r.example", t2, &p), Observed::Calm);
        }
        assert_eq!(d.observe("alice", 103, "r.example", t2, &p), Observed::ShieldRaised, "a new wave");
    }

    #[test]
    fn memory_stays_bounded() {
        let d = WaveDetector::new(1000, Duration::from_secs(3600), Duration::from_secs(3600));
        let now = Instant::now();
        let accounts: Vec<String> = (0..10_000).map(|i| format!("victim{i}")).collect();
        let p = params(600, 20, 60, 0);
        // 300,000 fresh senders on 10,000 made-up accounts (each window capped at 256); the
        // bench (benches/shield.rs) measures a million in release.
        for i in 0..300_000u64 {
            let account = &accounts[(i % 10_000) as usize];
            d.observe(account, i, "r.example", now, &p);
        }
        let (windows, shields) = d.entries();
        assert!(windows <= 1000 && shields <= 1000, "{windows} {shields}");
    }
}
