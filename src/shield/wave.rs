//! The harassment-wave detector: who is being mentioned by how many strangers.
//!
//! A wave is many *unfamiliar* remote actors mentioning one local account inside a short
//! window (the February 2024 spam waves, dogpiles on a dissident). Mastodon has nothing
//! against it at ingest, so pavise counts, per local account, the distinct unfamiliar
//! senders that mentioned it within `window`; past `distinct_senders` the account is
//! shielded for `shield_for`, and the stage defers what unfamiliar senders address to it.
//! Familiar senders — first seen longer than `familiar_after` ago, a durable record — are
//! never counted and never deferred: the member's regular correspondents keep reaching them.
//!
//! All state is in moka caches with fixed capacities, so a million fresh actors cost a
//! bounded amount of memory: the per-account windows keep at most a few times
//! `distinct_senders` entries, and the account table itself is capped.

use std::{
    collections::{HashSet, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// The recipients of one delivery.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Mentions {
    /// Local account names (lower-cased), each once.
    pub local: Vec<String>,
    /// Distinct addressed actors, local and remote (public and collections excluded):
    /// the hellthread count.
    pub total: usize,
}

const PUBLIC: [&str; 3] = ["https://www.w3.org/ns/activitystreams#Public", "as:Public", "Public"];

/// Finds who a delivery addresses: `to`/`cc`/`bto`/`bcc`/`audience` of the activity and
/// its object, and the object's `Mention` tags. Anything that is not JSON addresses nobody.
pub fn mentions(body: &[u8], local_domain: &str) -> Mentions {
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(body) else { return Mentions::default() };
    let mut urls: Vec<&str> = Vec::new();
    fn collect<'v>(v: &'v serde_json::Value, urls: &mut Vec<&'v str>) {
        for field in ["to", "cc", "bto", "bcc", "audience"] {
            match v.get(field) {
                Some(serde_json::Value::String(s)) => urls.push(s),
                Some(serde_json::Value::Array(items)) => urls.extend(items.iter().filter_map(|i| i.as_str())),
                _ => {}
            }
        }
        if let Some(serde_json::Value::Array(tags)) = v.get("tag") {
            for tag in tags {
                if tag.get("type").and_then(|t| t.as_str()) == Some("Mention")
                    && let Some(href) = tag.get("href").and_then(|h| h.as_str())
                {
                    urls.push(href);
                }
            }
        }
    }
    collect(&doc, &mut urls);
    if let Some(object) = doc.get("object").filter(|o| o.is_object()) {
        collect(object, &mut urls);
    }
    let local_host = host_only(local_domain);
    let mut seen = std::collections::HashSet::new();
    let mut out = Mentions::default();
    for url in urls {
        if PUBLIC.contains(&url) || url.ends_with("/followers") || url.ends_with("/following") {
            continue;
        }
        if !seen.insert(url) {
            continue;
        }
        out.total += 1;
        if let Some(name) = local_account(url, &local_host)
            && !out.local.contains(&name)
        {
            out.local.push(name);
        }
    }
    out
}

pub(super) fn host_only(authority: &str) -> String {
    let a = authority.trim().to_ascii_lowercase();
    if a.starts_with('[') {
        return a.split(']').next().map(|h| format!("{h}]")).unwrap_or(a);
    }
    a.split(':').next().unwrap_or_default().to_owned()
}

/// `https://local.example/users/alice` or `/@alice` → `alice` when the host is ours.
pub(super) fn local_account(url: &str, local_host: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    if !uri.host()?.eq_ignore_ascii_case(local_host) {
        return None;
    }
    let path = uri.path().trim_start_matches('/');
    let name = if let Some(rest) = path.strip_prefix("users/") {
        rest.split('/').next()?
    } else {
        path.strip_prefix('@')?.split('/').next()?
    };
    (!name.is_empty()).then(|| name.to_ascii_lowercase())
}

/// Per-account windows of unfamiliar senders, and the shields they raise.
pub struct WaveDetector {
    windows: moka::sync::Cache<String, Arc<Mutex<Window>>>,
    shields: moka::sync::Cache<String, Instant>,
    /// Timestamps in windows are seconds since this, to keep entries small.
    epoch: Instant,
}

#[derive(Default)]
struct Window {
    /// (first mention in seconds since the epoch, sender's keyed hash), oldest first: the
    /// window's count is a binary search, expiry and eviction pop the front.
    order: VecDeque<(u32, u64)>,
    /// The senders in `order`. A sender's retries do not count again: after a wave, the
    /// deferred senders coming back are the wave's tail, not a new wave.
    members: HashSet<u64>,
}

/// What observing one mention did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    Calm,
    /// This mention pushed the account over the threshold.
    ShieldRaised,
}

impl WaveDetector {
    /// `accounts`: how many local accounts may have a live window at once (memory cap).
    pub fn new(accounts: u64, max_shield: Duration) -> WaveDetector {
        WaveDetector {
            windows: moka::sync::Cache::builder().max_capacity(accounts).time_to_idle(max_shield).build(),
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

    /// Counts an unfamiliar `sender` mentioning `account`. A sender is remembered for
    /// `window + shield_for`; it counts toward a wave while its first mention is inside
    /// `window`. The shield is raised (or extended) only by senders new to the account.
    pub fn observe(
        &self,
        account: &str,
        sender: u64,
        now: Instant,
        window: Duration,
        distinct: usize,
        shield_for: Duration,
    ) -> Observed {
        let secs = |t: Instant| u32::try_from(t.saturating_duration_since(self.epoch).as_secs()).unwrap_or(u32::MAX);
        let now_s = secs(now);
        let window_s = u32::try_from(window.as_secs()).unwrap_or(u32::MAX).max(1);
        let memory_s = u32::try_from((window + shield_for).as_secs()).unwrap_or(u32::MAX).max(1);
        let win = self.windows.get_with_by_ref(account, || Arc::new(Mutex::new(Window::default())));
        let count = {
            let mut w = win.lock().unwrap_or_else(|e| e.into_inner());
            let Window { order, members } = &mut *w;
            while order.front().is_some_and(|(first, _)| now_s.saturating_sub(*first) >= memory_s) {
                if let Some((_, gone)) = order.pop_front() {
                    members.remove(&gone);
                }
            }
            if members.contains(&sender) {
                return Observed::Calm;
            }
            if order.len() >= Self::per_account_cap(distinct)
                && let Some((_, oldest)) = order.pop_front()
            {
                members.remove(&oldest);
            }
            order.push_back((now_s, sender));
            members.insert(sender);
            order.len() - order.partition_point(|(first, _)| now_s.saturating_sub(*first) >= window_s)
        };
        if count > distinct {
            let current = self.shield_until(account, now);
            let raised = current.is_none();
            // Extend while new senders keep coming (at most once a second: a cache write
            // per mention would dominate the cost of a wave).
            if current.is_none_or(|until| until + Duration::from_secs(1) < now + shield_for) {
                self.shields.insert(account.to_owned(), now + shield_for);
            }
            if raised {
                tracing::warn!(account, senders = count, ?shield_for, "mention wave: account shielded");
                return Observed::ShieldRaised;
            }
        }
        Observed::Calm
    }

    /// When the shield over `account` ends, if there is one.
    pub fn shield_until(&self, account: &str, now: Instant) -> Option<Instant> {
        self.shields.get(account).filter(|until| *until > now)
    }

    /// Every active shield: (account, remaining).
    pub fn active(&self, now: Instant) -> Vec<(String, Duration)> {
        let mut out: Vec<(String, Duration)> = self
            .shields
            .iter()
            .filter(|(_, until)| *until > now)
            .map(|(account, until)| ((*account).clone(), until.saturating_duration_since(now)))
            .collect();
        out.sort();
        out
    }

    /// Ends a shield now (admin action, or a test).
    pub fn lift(&self, account: &str) {
        self.shields.invalidate(account);
        self.windows.invalidate(account);
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

    const NOTE: &str = r#"{
      "@context": "https://www.w3.org/ns/activitystreams",
      "type": "Create", "actor": "https://r.example/users/troll",
      "to": ["https://www.w3.org/ns/activitystreams#Public"],
      "cc": ["https://r.example/users/troll/followers", "https://local.example/users/Alice"],
      "object": {"type": "Note", "content": "hi",
        "to": ["https://www.w3.org/ns/activitystreams#Public"],
        "cc": ["https://local.example/users/alice", "https://other.example/users/x"],
        "tag": [{"type": "Mention", "href": "https://local.example/users/alice"},
                {"type": "Mention", "href": "https://local.example/@bob"},
                {"type": "Hashtag", "href": "https://local.example/users/nothere"}]}
    }"#;

    #[test]
    fn finds_local_mentions() {
        let m = mentions(NOTE.as_bytes(), "local.example:8443");
        assert_eq!(m.local, ["alice", "bob"]);
        // Alice (twice spelled), alice, other/x, bob: distinct URLs.
        assert_eq!(m.total, 4);
        assert_eq!(mentions(b"not json", "local.example"), Mentions::default());
        assert_eq!(mentions(b"[1,2]", "local.example"), Mentions::default());
    }

    #[test]
    fn shield_after_distinct_senders() {
        let d = WaveDetector::new(1000, Duration::from_secs(3600));
        let now = Instant::now();
        let (w, s) = (Duration::from_secs(600), Duration::from_secs(60));
        for sender in 0..5 {
            assert_eq!(d.observe("alice", sender, now, w, 5, s), Observed::Calm);
        }
        // The same sender again changes nothing.
        assert_eq!(d.observe("alice", 4, now, w, 5, s), Observed::Calm);
        assert!(d.shield_until("alice", now).is_none());
        assert!(d.shield_until("alice", now).is_none());
        assert_eq!(d.observe("alice", 99, now, w, 5, s), Observed::ShieldRaised);
        assert!(d.shield_until("alice", now).is_some());
        assert!(d.shield_until("bob", now).is_none());
        // Shield ends.
        assert!(d.shield_until("alice", now + s + Duration::from_secs(1)).is_none());
    }

    #[test]
    fn old_senders_leave_the_window() {
        let d = WaveDetector::new(1000, Duration::from_secs(3600));
        let t0 = Instant::now();
        let (w, s) = (Duration::from_secs(10), Duration::from_secs(60));
        for sender in 0..5 {
            d.observe("alice", sender, t0, w, 5, s);
        }
        assert_eq!(d.observe("alice", 7, t0 + Duration::from_secs(11), w, 5, s), Observed::Calm);
    }

    #[test]
    fn retries_after_the_shield_do_not_raise_it_again() {
        let d = WaveDetector::new(1000, Duration::from_secs(3600));
        let t0 = Instant::now();
        let (w, s) = (Duration::from_secs(600), Duration::from_secs(5));
        for sender in 0..200 {
            d.observe("alice", sender, t0, w, 20, s);
        }
        assert!(d.shield_until("alice", t0).is_some());
        let later = t0 + Duration::from_secs(6);
        assert!(d.shield_until("alice", later).is_none());
        for sender in 0..200 {
            assert_eq!(d.observe("alice", sender, later, w, 20, s), Observed::Calm);
        }
        assert!(d.shield_until("alice", later).is_none());
    }

    #[test]
    fn memory_stays_bounded() {
        let d = WaveDetector::new(1000, Duration::from_secs(3600));
        let now = Instant::now();
        let accounts: Vec<String> = (0..10_000).map(|i| format!("victim{i}")).collect();
        // 300,000 fresh senders on 10,000 made-up accounts (each window capped at 256); the
        // bench (benches/shield.rs) measures a million in release.
        for i in 0..300_000u64 {
            let account = &accounts[(i % 10_000) as usize];
            d.observe(account, i, now, Duration::from_secs(600), 20, Duration::from_secs(60));
        }
        let (windows, shields) = d.entries();
        assert!(windows <= 1000 && shields <= 1000, "{windows} {shields}");
    }
}
