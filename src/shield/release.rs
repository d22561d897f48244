//! When a held delivery goes out: a delay, never a drop.
//!
//! Each housekeeping pass (and at once, when a delivery no shield covers was just held)
//! looks at the quarantine's index — nothing is opened to decide — and releases a delivery
//! when the first of these comes:
//! - its signature window is about to close (`release_within` of its `Date`): released
//!   even if its targets are still shielded, since later the instance would refuse it;
//! - it has been held `shield_for` (the same cap every deferral has);
//! - no shield covers its targets any more (or its sender turned out to be familiar, or
//!   followed by every shielded target) — but a hellthread not before its deferral ends.
//!
//! A delivery pavise could not verify when it came is verified again (at most once a
//! minute, within the keyId host's fetch budget), so a sender that is familiar or followed
//! is not held longer than it must be. A delivery the instance cannot be reached for stays
//! until it can; past its window it is kept for the admin. Kept deliveries are purged after
//! [`super::quarantine::KEPT_FOR`].

use std::{
    sync::atomic::Ordering::Relaxed,
    time::{Duration, Instant, UNIX_EPOCH},
};

use super::{
    Shield,
    document::{self, Reading},
    inbox::signed_parts,
    mention,
    quarantine::{HeldMeta, KEPT_FOR, Replay},
    signature::{self, Verdict},
};
use crate::store::{HeldState, now_ms};

/// How often an unverified held delivery is verified again.
const RECHECK_EVERY: Duration = Duration::from_secs(60);
/// How long after its window a delivery the instance cannot be reached for is still tried.
const UNREACHABLE_GRACE: Duration = Duration::from_secs(10 * 60);

impl Shield {
    /// One pass over the quarantine.
    pub(super) async fn quarantine_pass(&self) {
        if let Err(e) = self.quarantine.load().await {
            tracing::error!(error = %e, "the quarantine cannot be read");
            return;
        }
        let active = self.active();
        let wave = &active.policy.wave;
        for m in self.quarantine.snapshot() {
            let now_ms = now_ms();
            if m.state == HeldState::Kept {
                if m.kept_at.is_some_and(|t| now_ms >= t.saturating_add(KEPT_FOR.as_millis() as u64)) {
                    let purged = self.quarantine.purge(m.id, "expired", "kept seven days for the admin; purged").await;
                    if matches!(purged, Ok(true)) {
                        self.stats.expired.fetch_add(1, Relaxed);
                    }
                }
                continue;
            }
            let deadline = m.date.unwrap_or(m.received).saturating_add(wave.release_within.as_millis() as u64);
            let closing = now_ms >= deadline;
            let why = if closing {
                Some("its signature window is closing: released, its targets shielded or not (a delay, not a drop)")
            } else if m.not_before.is_some_and(|t| now_ms < t) {
                None
            } else if now_ms.saturating_sub(m.received) >= wave.shield_for.as_millis() as u64 {
                Some("held for shield_for: released (a delay, not a drop)")
            } else {
                let actor = match &m.actor {
                    Some(a) => Some(a.clone()),
                    None if self.held_back(&m.targets, None, Instant::now()) => self.recheck(&m, now_ms).await,
                    None => None,
                };
                let familiar = match &actor {
                    Some(a) => self.familiar.is_familiar(a, now_ms, wave.familiar_after).await,
                    None => false,
                };
                (familiar || !self.held_back(&m.targets, actor.as_deref(), Instant::now()))
                    .then_some("no shield holds it back any more")
            };
            let Some(why) = why else { continue };
            match self.quarantine.release(m.id, why).await {
                Ok(Some(Replay::Delivered(_))) => {
                    self.stats.released.fetch_add(1, Relaxed);
                    if closing && self.held_back(&m.targets, m.actor.as_deref(), Instant::now()) {
                        self.stats.released_at_window.fetch_add(1, Relaxed);
                    }
                }
                Ok(Some(Replay::Refused(_))) => {
                    self.stats.refused_on_release.fetch_add(1, Relaxed);
                }
                Ok(Some(Replay::Later(why))) => {
                    if now_ms >= deadline.saturating_add(UNREACHABLE_GRACE.as_millis() as u64)
                        && let Ok(Some(record)) = self.quarantine.open(m.id).await
                    {
                        let detail = format!("the instance could not be reached before its window closed ({why})");
                        if self.quarantine.keep(record, &detail).await.is_ok() {
                            self.stats.kept.fetch_add(1, Relaxed);
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::error!(id = m.id, error = %e, "quarantine release failed"),
            }
        }
    }

    /// Verifies an unverified held delivery again, as of when it arrived: its actor, if the
    /// key can be had now and names the activity's actor.
    async fn recheck(&self, m: &HeldMeta, now_ms: u64) -> Option<String> {
        if m.rechecked_at.is_some_and(|t| now_ms.saturating_sub(t) < RECHECK_EVERY.as_millis() as u64) {
            return None;
        }
        let record = self.quarantine.open(m.id).await.ok().flatten()?;
        let held = &record.held;
        let mut req = http::Request::builder().method(held.method.as_str()).uri(held.path_and_query.as_str());
        for (name, value) in &held.headers {
            req = req.header(name.as_str(), value.as_slice());
        }
        let (parts, ()) = req.body(()).ok()?.into_parts();
        let host = parts.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("").to_owned();
        let found = match signature::parse(&parts.headers) {
            Ok(by) if self.domains.accepts_host(&host) => {
                let signed = signed_parts(&parts, &host, &held.body);
                let at = UNIX_EPOCH + Duration::from_millis(held.received);
                match self.verifier.verify(&by, &signed, at, None).await {
                    Verdict::Verified { actor, domain } if !self.blocks.is_blocked(&domain) => {
                        let named = match document::read(&held.body) {
                            Reading::Exact(doc) => doc.get("actor").and_then(mention::id_of).map(str::to_owned),
                            Reading::Opaque(_) => None,
                        };
                        named.is_none_or(|n| n == actor).then_some(actor)
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        self.quarantine.note_checked(m.id, found.clone(), now_ms);
        found
    }
}
