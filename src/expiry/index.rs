//! The in-memory index of hidden posts: what every read is checked against.
//!
//! A post is hidden from its deadline until the instance confirms it is gone (or a keep
//! rule holds). Reads are the hot path, so the check must never touch the store: the index
//! maps the id of every post that is hidden, or will be within [`LOOKAHEAD_MS`], to its
//! deadline. Knowing a deadline a little in advance is what makes the hiding exact to the
//! millisecond: no timer has to fire at the deadline for the post to disappear.
//!
//! Kept in step with the store by the one place that writes expiry state ([`super::Expiry`]),
//! rebuilt from the store at start ([`crate::store::ScheduleStore::hidden_between`]), and topped up by a
//! small task ([`run_promoter`]) that loads what comes into the look-ahead window.
//!
//! The race between a write and the promoter is closed by order: the promoter moves its
//! watermark *before* reading the store, and a writer adds its item itself when the item's
//! deadline is at or below the watermark it reads *after* committing. Either the promoter's
//! read sees the commit, or the writer sees the moved watermark.
//!
//! Cost when nothing is hidden: [`HiddenIndex::is_empty`] is one atomic load, and every
//! filter returns before looking at a body.

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio_util::sync::CancellationToken;

use super::Expiry;
use crate::store::{Attachments, Scheduled, UnixMs, now_ms};

/// How far ahead of a deadline a post enters the index.
pub const LOOKAHEAD_MS: u64 = 60_000;
/// The longest the promoter sleeps without looking (clock jumps, other nodes).
const MAX_IDLE: Duration = Duration::from_secs(30);
/// Up to this many ids, a body is searched for each id (SIMD `memmem`); beyond, the body's
/// digit runs are looked up instead (one pass, whatever the index holds).
const SEARCH_EACH_UP_TO: usize = 16;

/// Something with a URL of its own that a post carries (see [`super::resource`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Resource {
    Poll(String),
    Media(String),
    Shortcode(String),
}

impl Resource {
    fn all(a: &Attachments) -> Vec<Resource> {
        let mut out: Vec<Resource> = a.poll.iter().cloned().map(Resource::Poll).collect();
        out.extend(a.media.iter().cloned().map(Resource::Media));
        out.extend(a.shortcodes.iter().cloned().map(Resource::Shortcode));
        out
    }
}

/// Ids of posts that are (or are about to be) hidden, with their deadlines, and what
/// those posts carry (their polls and media).
#[derive(Debug, Default)]
pub struct HiddenIndex {
    len: AtomicUsize,
    ids: RwLock<Ids>,
    /// Everything with a deadline at or below this is in the index (see the module docs).
    watermark: AtomicU64,
}

#[derive(Debug, Default)]
struct Ids {
    deadlines: HashMap<Box<str>, UnixMs>,
    /// Resource → the post it belongs to; and each post's resources, to remove them with it.
    resources: HashMap<Resource, Box<str>>,
    carried: HashMap<Box<str>, Vec<Resource>>,
}

impl HiddenIndex {
    /// Nothing is hidden or about to be: every check can skip its work.
    pub fn is_empty(&self) -> bool {
        self.len.load(Ordering::Acquire) == 0
    }

    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// Whether the post must not be served at `now`.
    pub fn is_hidden(&self, id: &str, now: UnixMs) -> bool {
        if self.is_empty() {
            return false;
        }
        self.read().deadlines.get(id).is_some_and(|deadline| *deadline <= now)
    }

    /// Whether a poll or a file belongs to a post that must not be served at `now`.
    pub fn is_hidden_resource(&self, resource: &Resource, now: UnixMs) -> bool {
        if self.is_empty() {
            return false;
        }
        let ids = self.read();
        ids.resources.get(resource).and_then(|id| ids.deadlines.get(id)).is_some_and(|deadline| *deadline <= now)
    }

    /// Whether `text` names a hidden post's id as a number of its own (a run of digits,
    /// leading zeros aside): for documents that are not JSON (a server-rendered page).
    pub fn names_hidden(&self, text: &[u8], now: UnixMs) -> bool {
        if self.is_empty() {
            return false;
        }
        let ids = self.read();
        let mut i = 0;
        while i < text.len() {
            if !text[i].is_ascii_digit() {
                i += 1;
                continue;
            }
            let start = i;
            while i < text.len() && text[i].is_ascii_digit() {
                i += 1;
            }
            let run = &text[start..i];
            let trimmed = &run[run.iter().take_while(|b| **b == b'0').count()..];
            if let Ok(s) = std::str::from_utf8(trimmed)
                && ids.deadlines.get(s).is_some_and(|d| *d <= now)
            {
                return true;
            }
        }
        false
    }

    /// A predicate over ids for the filters, bound to one instant.
    pub fn hidden_at(&self, now: UnixMs) -> impl Fn(&str) -> bool + '_ {
        move |id: &str| self.is_hidden(id, now)
    }

    /// Whether `body` may mention an indexed id anywhere (a false positive only costs a
    /// closer look; a false negative would serve a hidden post, so there is none: every
    /// occurrence of the id's digits counts).
    pub fn mentions_any(&self, body: &[u8]) -> bool {
        if self.is_empty() {
            return false;
        }
        let guard = self.read();
        let ids = &guard.deadlines;
        if ids.len() <= SEARCH_EACH_UP_TO {
            return ids.keys().any(|id| memchr::memmem::find(body, id.as_bytes()).is_some());
        }
        let (min, max) = ids.keys().fold((usize::MAX, 0), |(lo, hi), id| (lo.min(id.len()), hi.max(id.len())));
        let mut i = 0;
        while i < body.len() {
            if !body[i].is_ascii_digit() {
                i += 1;
                continue;
            }
            let start = i;
            while i < body.len() && body[i].is_ascii_digit() {
                i += 1;
            }
            let run = &body[start..i];
            // An id may sit inside a longer run (`x123` is not a run boundary problem, but
            // `0123` in a URL is): look at every window of a plausible length.
            if run.len() >= min {
                for len in min..=max.min(run.len()) {
                    for w in run.windows(len) {
                        if let Ok(s) = std::str::from_utf8(w)
                            && ids.contains_key(s)
                        {
                            return true;
                        }
                    }
                }
            }
        }
        false
    }

    /// Adds (or re-times) one post.
    pub fn insert(&self, id: &str, deadline: UnixMs) {
        self.insert_with(id, deadline, &Attachments::default());
    }

    /// Adds (or re-times) one post with what it carries.
    pub fn insert_with(&self, id: &str, deadline: UnixMs, attachments: &Attachments) {
        let mut ids = self.write();
        ids.deadlines.insert(id.into(), deadline);
        let resources = Resource::all(attachments);
        if !resources.is_empty() {
            for r in &resources {
                ids.resources.insert(r.clone(), id.into());
            }
            ids.carried.insert(id.into(), resources);
        }
        self.len.store(ids.deadlines.len(), Ordering::Release);
    }

    /// Adds one stored item.
    pub fn insert_item(&self, item: &Scheduled) {
        self.insert_with(&item.status_id, item.deadline, &item.attachments);
    }

    pub fn remove(&self, id: &str) {
        let mut ids = self.write();
        if ids.deadlines.remove(id).is_some() {
            if let Some(resources) = ids.carried.remove(id) {
                for r in resources {
                    if ids.resources.get(&r).is_some_and(|owner| &**owner == id) {
                        ids.resources.remove(&r);
                    }
                }
            }
            self.len.store(ids.deadlines.len(), Ordering::Release);
        }
    }

    /// Everything with a deadline at or below this is known to the index.
    pub fn watermark(&self) -> UnixMs {
        self.watermark.load(Ordering::Acquire)
    }

    fn set_watermark(&self, t: UnixMs) {
        self.watermark.fetch_max(t, Ordering::AcqRel);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Ids> {
        self.ids.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Ids> {
        self.ids.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// Loads every post hidden now or within the look-ahead from the store; call before serving.
pub async fn rebuild(core: &Expiry) -> Result<usize, crate::store::StoreError> {
    let horizon = now_ms().saturating_add(LOOKAHEAD_MS);
    core.hidden.set_watermark(horizon);
    let items = core.store.hidden_between(0, horizon).await?;
    for item in &items {
        core.hidden.insert_item(item);
    }
    Ok(items.len())
}

/// Keeps the look-ahead window filled until shutdown.
pub async fn run_promoter(core: Arc<Expiry>, shutdown: CancellationToken) {
    while !shutdown.is_cancelled() {
        let from = core.hidden.watermark().saturating_add(1);
        let horizon = now_ms().saturating_add(LOOKAHEAD_MS);
        // Watermark first, then read: see the module docs.
        core.hidden.set_watermark(horizon);
        let mut wait = MAX_IDLE;
        match core.store.hidden_between(from, horizon).await {
            Ok(items) => {
                for item in items {
                    core.hidden.insert_item(&item);
                }
                if let Ok(Some(next)) = core.store.next_deadline_after(horizon).await {
                    let enters = next.saturating_sub(LOOKAHEAD_MS);
                    wait = wait.min(Duration::from_millis(enters.saturating_sub(now_ms()).max(1)));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "expiry: cannot read upcoming deadlines; retrying");
                wait = Duration::from_secs(1);
            }
        }
        let woken = core.promote.notified();
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = woken => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_is_free_and_deadlines_are_exact() {
        let index = HiddenIndex::default();
        assert!(index.is_empty() && !index.mentions_any(b"anything 110000000000000001"));
        index.insert("110000000000000001", 1000);
        assert!(!index.is_hidden("110000000000000001", 999), "not before its deadline");
        assert!(index.is_hidden("110000000000000001", 1000));
        assert!(!index.is_hidden("11000000000000000", 5000));
        index.remove("110000000000000001");
        assert!(index.is_empty());
    }

    #[test]
    fn what_a_post_carries_is_hidden_with_it_and_numbers_are_read_whole() {
        let index = HiddenIndex::default();
        let a = Attachments { poll: Some("77".into()), media: vec!["555".into()], shortcodes: vec!["Sh".into()] };
        index.insert_with("110000000000000001", 1000, &a);
        assert!(!index.is_hidden_resource(&Resource::Poll("77".into()), 999));
        for r in [Resource::Poll("77".into()), Resource::Media("555".into()), Resource::Shortcode("Sh".into())] {
            assert!(index.is_hidden_resource(&r, 1000), "{r:?}");
        }
        assert!(!index.is_hidden_resource(&Resource::Media("556".into()), 1000));
        assert!(index.names_hidden(b"<a href='/@alice/110000000000000001'>", 1000));
        assert!(index.names_hidden(b"status-0110000000000000001\"", 1000));
        assert!(!index.names_hidden(b"2110000000000000001", 1000), "inside a longer number");
        index.remove("110000000000000001");
        assert!(!index.is_hidden_resource(&Resource::Poll("77".into()), 5000));
    }

    #[test]
    fn bodies_are_searched_for_every_id_either_way() {
        for n in [1usize, 40] {
            let index = HiddenIndex::default();
            for i in 0..n {
                index.insert(&format!("1100000000000{:05}", i * 7), 0);
            }
            let wanted = format!("1100000000000{:05}", (n - 1) * 7);
            assert!(index.mentions_any(format!(r#"[{{"id":"{wanted}"}}]"#).as_bytes()), "{n}");
            assert!(index.mentions_any(format!("/@alice/0{wanted}.json").as_bytes()), "{n}: inside a longer run");
            assert!(!index.mentions_any(br#"[{"id":"110000000000099999","n":12}]"#), "{n}");
        }
    }
}
