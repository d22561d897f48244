//! The harassment-wave detector: how many distinct, real strangers mention one member.
//!
//! A wave is many *unfamiliar* remote actors mentioning one local account inside a short
//! window (the February 2024 spam waves, dogpiles on a dissident). Mastodon has nothing
//! against it at ingest, so pavise counts, per local account, the distinct unfamiliar
//! actors that mentioned it within `window`; past `distinct_senders` the account is
//! shielded, and the stage defers what unfamiliar senders address to it.
//!
//! A shield holds back a member's real mail too, so it must cost an attacker what a wave
//! costs — real actors on real domains — and it must never hold anyone's mail for good:
//! - only actors whose signatures verified are counted (the stage never calls
//!   [`WaveDetector::observe`] for anything else), each once per account: a replayed or
//!   retried delivery, or a second mention, adds nothing;
//! - actors of one domain count in full up to `per_domain`, and each further one of that
//!   domain counts a quarter: one hostile server needs many times the actors that a wave
//!   from many servers needs;
//! - an actor is remembered by the account for `memory` (at least `familiar_after`, by
//!   which time it is familiar and never counted again), so the same few actors cannot
//!   raise the shield again once it has lapsed;
//! - the shield lasts `shield_for`. The actors that arrive while it is up are deferred by
//!   it, and a deferred actor never counts toward the shield that defers it: a shield is
//!   extended only when *another* full wave of new actors (more than `distinct_senders`,
//!   weighted as above, not counting the one arriving) comes within one window while it is
//!   up, and never past `max_shield` after it was raised;
//! - when a shield ends (lapsed, capped or lifted by the admin), every actor counted so far
//!   stays known but counts toward nothing again: a new shield needs new actors;
//! - [`WaveDetector::report`] says why each shield is up: how many actors, from how many
//!   domains.
//!
//! (The stage adds the last guarantee: any one delivery is deferred at most `shield_for`
//! from its first attempt, whatever the shields do.)
//!
//! All state is in moka caches with fixed capacities, so a million fresh actors cost a
//! bounded amount of memory: the per-account windows keep at most a few times
//! `distinct_senders` entries, and the account table itself is capped.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// The longest `max_shield` a policy may ask for (and how long a shield entry is kept).
pub const MAX_SHIELD_LIMIT: Duration = Duration::from_secs(7 * 86_400);

/// The knobs of one observation (from the `[wave]` policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaveParams {
    pub window: Duration,
    pub distinct: usize,
    pub shield_for: Duration,
    /// How long an account remembers an actor that mentioned it.
    pub memory: Duration,
    /// Actors of one domain that count in full; each further one counts a quarter.
    pub per_domain: usize,
    /// The longest one shield lasts, extensions included.
    pub max_shield: Duration,
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
    /// It is never extended past this.
    cap: Instant,
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
    /// First seen while a shield was up: deferred by it, so it never counts toward it.
    during: bool,
}

const OTHER_DOMAIN: u8 = u8::MAX;

#[derive(Default)]
struct Window {
    /// Oldest first: expiry and eviction pop the front.
    order: VecDeque<Entry>,
    /// The actors in `order`, and whether each arrived during a shield.
    members: HashMap<u64, bool>,
    /// The domains seen, for the report (at most 255 names; more count as one "other").
    domains: Vec<Box<str>>,
    /// When the last shield ended (lapsed, capped or lifted): actors first seen before then
    /// stay known (their retries add nothing) but no longer count toward anything.
    counts_after: Option<u32>,
    /// When the current shield ends, as last set (to notice that it lapsed).
    shield_until: Option<u32>,
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

    fn counts(&self, e: &Entry) -> bool {
        self.counts_after.is_none_or(|after| e.first > after)
    }

    /// The weighted number of actors (in quarters) among `entries`: `per_domain` per
    /// domain in full, a quarter each beyond.
    fn weighted<'a>(entries: impl Iterator<Item = &'a Entry>, per_domain: usize) -> usize {
        let mut per = [0usize; 256];
        let mut quarters = 0;
        for e in entries {
            if e.domain == OTHER_DOMAIN {
                quarters += 4;
                continue;
            }
            let n = &mut per[usize::from(e.domain)];
            *n += 1;
            quarters += if *n <= per_domain.max(1) { 4 } else { 1 };
        }
        quarters
    }
}

/// What observing one mention did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// Nothing new: the actor was already counted, or the window is below the threshold.
    Calm,
    /// A new actor while the shield is up (deferred by it; extended only by a new wave).
    Extended,
    /// This mention pushed the account over the threshold.
    ShieldRaised,
}

/// One observation: what it did, and whether the actor counts toward the shield now up (or
/// about to be) over the account — one of the wave's own actors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    pub outcome: Observed,
    pub wave_actor: bool,
}

/// Why one shield is up, for `/admin/shield`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShieldReport {
    pub account: String,
    pub remaining: Duration,
    pub raised_ago: Duration,
    /// The most it can still last (`max_shield` after it was raised).
    pub at_most: Duration,
    /// Distinct verified actors in the window when it went up.
    pub raised_by: usize,
    /// Distinct verified actors whose first mention is inside the current window.
    pub actors_in_window: usize,
    /// Of those, the ones that arrived while it was up (deferred by it).
    pub deferred_in_window: usize,
    /// Distinct verified actors the account remembers (they will not count again).
    pub actors_remembered: usize,
    /// Distinct domains of the remembered actors.
    pub domains: usize,
    /// The domains with the most remembered actors, most first (at most 10).
    pub top_domains: Vec<(String, usize)>,
}

impl WaveDetector {
    /// `accounts`: how many local accounts may have a live window at once (memory cap);
    /// `memory`: how long an idle account's window is kept (the longest sender memory).
    pub fn new(accounts: u64, memory: Duration) -> WaveDetector {
        WaveDetector {
            windows: moka::sync::Cache::builder().max_capacity(accounts).time_to_idle(memory).build(),
            shields: moka::sync::Cache::builder().max_capacity(accounts).time_to_live(MAX_SHIELD_LIMIT).build(),
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
    /// mentioning `account`.
    pub fn observe(&self, account: &str, sender: u64, domain: &str, now: Instant, p: &WaveParams) -> Observation {
        let now_s = self.secs(now);
        let window_s = u32::try_from(p.window.as_secs()).unwrap_or(u32::MAX).max(1);
        let memory_s = u32::try_from(p.memory.max(p.window + p.shield_for).as_secs()).unwrap_or(u32::MAX).max(1);
        let win = self.windows.get_with_by_ref(account, || Arc::new(Mutex::new(Window::default())));
        let live = self.shields.get(account).filter(|s| s.until > now);
        let mut w = win.lock().unwrap_or_else(|e| e.into_inner());
        while w.order.front().is_some_and(|e| now_s.saturating_sub(e.first) >= memory_s) {
            if let Some(gone) = w.order.pop_front() {
                w.members.remove(&gone.sender);
            }
        }
        // A shield that ended took its wave with it.
        if live.is_none()
            && let Some(ended) = w.shield_until.take()
        {
            w.counts_after = Some(w.counts_after.map_or(ended, |a| a.max(ended)).min(now_s));
        }
        if let Some(&during) = w.members.get(&sender) {
            let counted = w.order.iter().any(|e| e.sender == sender && w.counts(e));
            return Observation { outcome: Observed::Calm, wave_actor: !during && counted };
        }
        if w.order.len() >= Self::per_account_cap(p.distinct)
            && let Some(oldest) = w.order.pop_front()
        {
            w.members.remove(&oldest.sender);
        }
        let domain = w.domain_index(domain);
        let in_window = |e: &Entry| now_s.saturating_sub(e.first) < window_s;
        let threshold = p.distinct.saturating_mul(4);
        match live {
            Some(s) => {
                // Another full wave while it is up, not counting this actor, extends it.
                let wave_again =
                    Window::weighted(w.order.iter().filter(|e| e.during && in_window(e) && w.counts(e)), p.per_domain)
                        > threshold;
                w.order.push_back(Entry { first: now_s, sender, domain, during: true });
                w.members.insert(sender, true);
                let until = (now + p.shield_for).min(s.cap);
                // At most once a second: a cache write per mention would dominate a wave's cost.
                if wave_again && s.until < until && (s.until + Duration::from_secs(1) < until || until == s.cap) {
                    self.shields.insert(account.to_owned(), Arc::new(Shield { until, ..*s }));
                    w.shield_until = Some(self.secs(until));
                }
                Observation { outcome: Observed::Extended, wave_actor: false }
            }
            None => {
                w.order.push_back(Entry { first: now_s, sender, domain, during: false });
                w.members.insert(sender, false);
                let (weight, raised_by) = {
                    let counted: Vec<&Entry> = w.order.iter().filter(|e| in_window(e) && w.counts(e)).collect();
                    (Window::weighted(counted.iter().copied(), p.per_domain), counted.len())
                };
                if weight <= threshold {
                    return Observation { outcome: Observed::Calm, wave_actor: true };
                }
                let until = now + p.shield_for.min(p.max_shield);
                self.shields.insert(
                    account.to_owned(),
                    Arc::new(Shield { until, raised: now, cap: now + p.max_shield, raised_by }),
                );
                w.shield_until = Some(self.secs(until));
                tracing::warn!(account, actors = raised_by, shield_for = ?p.shield_for, "mention wave: account shielded");
                Observation { outcome: Observed::ShieldRaised, wave_actor: true }
            }
        }
    }

    /// When the shield over `account` ends, if there is one.
    pub fn shield_until(&self, account: &str, now: Instant) -> Option<Instant> {
        self.shields.get(account).map(|s| s.until).filter(|until| *until > now)
    }

    /// Whether `sender` is one of the actors the current shield over `account` counted.
    pub fn is_wave_actor(&self, account: &str, sender: u64) -> bool {
        let Some(win) = self.windows.get(account) else { return false };
        let w = win.lock().unwrap_or_else(|e| e.into_inner());
        w.order.iter().any(|e| e.sender == sender && !e.during && w.counts(e))
    }

    /// The accounts shielded now.
    pub fn shielded(&self, now: Instant) -> Vec<String> {
        let mut out: Vec<String> =
            self.shields.iter().filter(|(_, s)| s.until > now).map(|(account, _)| (*account).clone()).collect();
        out.sort();
        out
    }

    /// Whether any account is shielded now.
    pub fn any_shielded(&self, now: Instant) -> bool {
        self.shields.iter().any(|(_, s)| s.until > now)
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
                    at_most: s.cap.saturating_duration_since(now),
                    raised_by: s.raised_by,
                    actors_in_window: 0,
                    deferred_in_window: 0,
                    actors_remembered: 0,
                    domains: 0,
                    top_domains: Vec::new(),
                };
                if let Some(win) = self.windows.get(&*account) {
                    let w = win.lock().unwrap_or_else(|e| e.into_inner());
                    r.actors_remembered = w.order.len();
                    let in_window = |e: &&Entry| now_s.saturating_sub(e.first) < window_s;
                    r.actors_in_window = w.order.iter().filter(in_window).count();
                    r.deferred_in_window = w.order.iter().filter(in_window).filter(|e| e.during).count();
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
            let mut w = win.lock().unwrap_or_else(|e| e.into_inner());
            w.counts_after = Some(self.secs(now));
            w.shield_until = None;
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
            per_domain: 1000,
            max_shield: Duration::from_secs(86_400),
        }
    }

    fn detector() -> WaveDetector {
        WaveDetector::new(1000, Duration::from_secs(86_400))
    }

    fn seen(d: &WaveDetector, sender: u64, domain: &str, t: Instant, p: &WaveParams) -> Observed {
        d.observe("alice", sender, domain, t, p).outcome
    }

    #[test]
    fn shield_after_distinct_senders() {
        let d = detector();
        let now = Instant::now();
        let p = params(600, 5, 60, 0);
        for sender in 0..5 {
            assert_eq!(seen(&d, sender, "r.example", now, &p), Observed::Calm);
        }
        // The same sender again changes nothing.
        assert_eq!(seen(&d, 4, "r.example", now, &p), Observed::Calm);
        assert!(d.shield_until("alice", now).is_none());
        assert_eq!(seen(&d, 99, "s.example", now, &p), Observed::ShieldRaised);
        assert!(d.shield_until("alice", now).is_some());
        assert!(d.shield_until("bob", now).is_none());
        assert_eq!(d.shielded(now), ["alice"]);
        assert!(d.is_wave_actor("alice", 3) && d.is_wave_actor("alice", 99) && !d.is_wave_actor("alice", 7));
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
        assert_eq!(seen(&d, 7, "r.example", t0 + Duration::from_secs(11), &p), Observed::Calm);
    }

    #[test]
    fn one_domain_counts_in_full_only_up_to_per_domain() {
        let d = detector();
        let now = Instant::now();
        // Threshold 4; 2 actors per domain in full, a quarter each beyond.
        let p = WaveParams { per_domain: 2, ..params(600, 4, 60, 0) };
        // One domain: in quarters, 8 for the first two and 1 for each further actor, so
        // n actors weigh n + 6 quarters, above 16 only at the 11th.
        let mut raised_at = None;
        for sender in 0..40 {
            if seen(&d, sender, "one.example", now, &p) == Observed::ShieldRaised {
                raised_at = Some(sender + 1);
                break;
            }
        }
        assert_eq!(raised_at, Some(11));
        // Five domains, one actor each: raised at the fifth, as without weighting.
        let d = detector();
        for i in 0..5u64 {
            let outcome = d.observe("bob", i, &format!("d{i}.example"), now, &p).outcome;
            assert_eq!(outcome == Observed::ShieldRaised, i == 4, "{i}");
        }
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
                assert_eq!(seen(&d, sender, "r.example", t, &p), Observed::Calm);
            }
        }
        assert!(d.shield_until("alice", t0 + Duration::from_secs(6)).is_none());
        // Hours later, the same actors still count for nothing: no new shield.
        let later = t0 + Duration::from_secs(4 * 3600);
        for sender in 0..25 {
            assert_eq!(seen(&d, sender, "r.example", later, &p), Observed::Calm);
        }
        assert!(d.shield_until("alice", later).is_none());
    }

    #[test]
    fn a_deferred_actor_does_not_extend_the_shield_that_defers_it() {
        let d = detector();
        let t0 = Instant::now();
        let p = params(10, 3, 5, 86_400);
        for sender in 0..4 {
            d.observe("alice", sender, "r.example", t0, &p);
        }
        let raised_until = d.shield_until("alice", t0).unwrap();
        // A few new actors while it is up (a real correspondent among them): deferred, not
        // counted; the shield ends on time.
        let t = t0 + Duration::from_secs(2);
        for sender in 100..103 {
            let o = d.observe("alice", sender, "r.example", t, &p);
            assert_eq!(o, Observation { outcome: Observed::Extended, wave_actor: false });
        }
        assert_eq!(d.shield_until("alice", t0), Some(raised_until));
        // A whole new wave while it is up (more than three more new actors in one window)
        // does extend it: the fifth of them sees four before it.
        for sender in 103..105 {
            d.observe("alice", sender, "r.example", t, &p);
        }
        assert_eq!(d.shield_until("alice", t0), Some(t + p.shield_for));
        assert!(!d.is_wave_actor("alice", 104), "deferred actors are not the wave's own");
        // After it lapses, the actors it deferred count toward nothing: new ones are needed.
        let after = t + p.shield_for + Duration::from_secs(1);
        for sender in 200..203 {
            assert_eq!(seen(&d, sender, "r.example", after, &p), Observed::Calm);
        }
        assert_eq!(seen(&d, 203, "r.example", after, &p), Observed::ShieldRaised);
    }

    #[test]
    fn no_shield_outlives_max_shield() {
        let d = detector();
        let t0 = Instant::now();
        let p = WaveParams { max_shield: Duration::from_secs(30), ..params(10, 1, 20, 86_400) };
        d.observe("alice", 0, "r.example", t0, &p);
        d.observe("alice", 1, "r.example", t0, &p);
        assert!(d.shield_until("alice", t0).is_some());
        // New waves every few seconds try to keep it up forever.
        let mut sender = 10;
        for step in 1..=9 {
            let t = t0 + Duration::from_secs(step * 3);
            for _ in 0..3 {
                d.observe("alice", sender, "r.example", t, &p);
                sender += 1;
            }
            assert!(d.shield_until("alice", t).is_some(), "extended by new waves at {step}");
        }
        assert!(d.shield_until("alice", t0 + Duration::from_secs(29)).is_some());
        assert!(d.shield_until("alice", t0 + Duration::from_secs(31)).is_none(), "capped at max_shield");
        // What it deferred counts toward nothing afterwards: a new shield needs new actors.
        let after = t0 + Duration::from_secs(31);
        for known in 10..sender {
            assert_eq!(seen(&d, known, "r.example", after, &p), Observed::Calm);
        }
        assert!(d.shield_until("alice", after).is_none());
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
            assert_eq!(seen(&d, sender, "r.example", t2, &p), Observed::Calm, "a retry");
        }
        for sender in 100..103 {
            assert_eq!(seen(&d, sender, "r.example", t2, &p), Observed::Calm);
        }
        assert_eq!(seen(&d, 103, "r.example", t2, &p), Observed::ShieldRaised, "a new wave");
    }

    #[test]
    fn memory_stays_bounded() {
        let d = WaveDetector::new(1000, Duration::from_secs(3600));
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
