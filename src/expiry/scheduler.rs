//! The background task that deletes due posts.
//!
//! The due-queue is the store's own index (pending items by next attempt), so nothing is
//! held in memory that a restart could lose: on start the loop simply asks the store what
//! is due. It sleeps until the next due time (`sleep_until`), or until the stage says
//! something new was scheduled ([`tokio::sync::Notify`]), or until shutdown.
//!
//! For each claimed item, as Mastodon's own cleanup does: re-fetch the status with the
//! author's token and re-check the keep rules (pinned, favourites, ...) against what the
//! instance says now; then `DELETE`. A 404 means already gone: done.
//!
//! Pacing: Mastodon allows 30 deletions per 30 minutes per user, shared with the user's
//! own deletes, and its 429 has no `Retry-After`. Each `DELETE` answer's
//! `X-RateLimit-Remaining/-Reset` is remembered per account; when the remaining budget
//! reaches the reserve (`expiry.reserve_deletes`), that account's items wait for the
//! reset. Nothing is dropped: transient failures retry with doubling back-off, a revoked
//! token parks the item as failed until a new token for the account appears.

use std::{collections::HashMap, sync::Arc, sync::atomic::Ordering::Relaxed, time::Duration};

use tokio_util::sync::CancellationToken;

use super::{
    EXPIRES_IN_RULE, Expiry,
    instance::{Instance, InstanceError, RateInfo},
    seal::Token,
};
use crate::store::{Outcome, Scheduled, UnixMs, now_ms};

/// Items claimed per round.
const BATCH: usize = 32;
/// The longest sleep without looking at the store (covers clock jumps and other nodes).
const MAX_IDLE: Duration = Duration::from_secs(30);
/// When a 429 comes without a usable reset.
const DEFAULT_RATE_WAIT_MS: u64 = 60_000;

/// What the instance last said about one account's delete budget.
#[derive(Debug, Clone, Copy, Default)]
struct Pace {
    /// Do not send this account's deletions before this time.
    paused_until: UnixMs,
}

/// The scheduler; [`Scheduler::run`] until shutdown.
pub struct Scheduler {
    core: Arc<Expiry>,
    instance: Instance,
    pace: HashMap<String, Pace>,
    /// Tokens opened during the current batch (cleared after each).
    tokens: HashMap<String, Token>,
}

impl Scheduler {
    pub fn new(core: Arc<Expiry>, instance: Instance) -> Scheduler {
        Scheduler { core, instance, pace: HashMap::new(), tokens: HashMap::new() }
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        tracing::info!("expiry scheduler started");
        while !shutdown.is_cancelled() {
            let now = now_ms();
            let lease = self.core.config.lease.get().as_millis() as u64;
            let claimed = match self.core.store.claim_due(now, BATCH, lease).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "expiry: cannot claim due deletions; retrying");
                    Vec::new()
                }
            };
            if claimed.is_empty() {
                let next = self.core.store.next_due().await.ok().flatten();
                let wait = next.map_or(MAX_IDLE, |t| Duration::from_millis(t.saturating_sub(now_ms()))).min(MAX_IDLE);
                let wake = self.core.wake.notified();
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = wake => {}
                    _ = tokio::time::sleep_until(tokio::time::Instant::now() + wait) => {}
                }
                continue;
            }
            let mut outcomes = Vec::with_capacity(claimed.len());
            for item in claimed {
                if shutdown.is_cancelled() {
                    // Unprocessed claims lapse with their lease and are picked up next start.
                    break;
                }
                let outcome = self.process(&item).await;
                self.count(&outcome);
                outcomes.push((item.status_id, outcome));
            }
            // Recorded together, so the store's group commit covers the batch with one fsync.
            // A crash before this point only means the claims lapse and the items are
            // looked at again: a deleted post then answers 404, which counts as done.
            let store = &self.core.store;
            let settled = futures_util::future::join_all(
                outcomes.into_iter().map(|(id, outcome)| async move { store.settle(&id, outcome).await }),
            )
            .await;
            for e in settled.into_iter().filter_map(Result::err) {
                tracing::error!(error = %e, "expiry: cannot record an outcome; the claim will lapse and retry");
            }
            self.tokens.clear();
        }
        tracing::info!("expiry scheduler stopped");
    }

    fn count(&self, outcome: &Outcome) {
        let s = &self.core.stats;
        let counter = match outcome {
            Outcome::Deleted => &s.deleted,
            Outcome::Kept(_) => &s.kept,
            Outcome::Failed(_) => &s.failed,
            Outcome::Retry { .. } => &s.retried,
            Outcome::Defer { .. } => &s.deferred,
            Outcome::Cancelled(_) => return,
        };
        counter.fetch_add(1, Relaxed);
    }

    fn backoff(&self, attempts: u32) -> u64 {
        let base = self.core.config.backoff.get().as_millis() as u64;
        let max = self.core.config.max_backoff.get().as_millis() as u64;
        base.saturating_mul(1u64 << attempts.min(20)).min(max)
    }

    fn retry(&self, item: &Scheduled, e: &InstanceError) -> Outcome {
        Outcome::Retry { at: now_ms().saturating_add(self.backoff(item.attempts)), reason: e.to_string() }
    }

    async fn token_for(&mut self, item: &Scheduled) -> Option<Token> {
        if let Some(t) = item.credential.as_ref().and_then(|id| self.tokens.get(id)) {
            return Some(t.clone());
        }
        let mut cred = match &item.credential {
            Some(id) => self.core.store.credential(id).await.ok().flatten(),
            None => None,
        };
        if cred.is_none() {
            cred = self.core.store.account_credential(&item.account).await.ok().flatten();
        }
        let cred = cred?;
        match self.core.sealer.open(&cred) {
            Ok(t) => {
                self.tokens.insert(cred.id.clone(), t.clone());
                Some(t)
            }
            Err(e) => {
                tracing::error!(error = %e, "expiry: a sealed credential does not open");
                None
            }
        }
    }

    /// Remembers the budget the instance reported; pauses the account at the reserve.
    fn note_rate(&mut self, account: &str, rate: RateInfo) {
        let reserve = self.core.config.reserve_deletes;
        if let (Some(remaining), Some(reset)) = (rate.remaining, rate.reset)
            && remaining <= reserve
        {
            self.pace.entry(account.to_owned()).or_default().paused_until = reset;
            tracing::info!(
                remaining,
                reserve,
                "expiry: account near its delete limit; waiting for the window to reset"
            );
        }
    }

    async fn process(&mut self, item: &Scheduled) -> Outcome {
        let now = now_ms();
        if let Some(p) = self.pace.get(&item.account)
            && p.paused_until > now
        {
            return Outcome::Defer { at: p.paused_until };
        }
        let Some(token) = self.token_for(item).await else {
            return Outcome::Failed(
                "no usable token for the account; waiting for its author to post through pavise".into(),
            );
        };
        let host = item.host.as_deref();

        // Re-check keep rules against the instance's view now.
        let post = match self.instance.status(&item.status_id, host, &token).await {
            Ok(post) => post,
            Err(InstanceError::NotFound) => return Outcome::Deleted,
            Err(e @ InstanceError::Unauthorized(_)) => return Outcome::Failed(e.to_string()),
            Err(InstanceError::RateLimited(rate)) => return self.rate_limited(&item.account, rate),
            Err(e) => return self.retry(item, &e),
        };
        if item.rule != EXPIRES_IN_RULE {
            let policies = self.core.policies();
            match policies.rule(&item.rule).or_else(|| policies.evaluate(&post)) {
                Some(rule) => {
                    if let Some(reason) = rule.keep.reason(&post) {
                        return Outcome::Kept(reason);
                    }
                    // A lengthened rule (after a reload) moves the deadline out, not in.
                    let created = post.created_at.unwrap_or(item.created_at);
                    let deadline = created.saturating_add(rule.after.get().as_millis() as u64);
                    if deadline > now.saturating_add(1000) && rule.name == item.rule {
                        let mut later = item.clone();
                        later.deadline = deadline;
                        later.next_attempt = deadline;
                        later.state = crate::store::ExpiryState::Pending;
                        if self.core.store.schedule(vec![(later, None)]).await.is_ok() {
                            return Outcome::Defer { at: deadline };
                        }
                    }
                }
                None => return Outcome::Cancelled("no expiry rule matches it any more".into()),
            }
        }

        match self.instance.delete(&item.status_id, host, &token).await {
            Ok(rate) => {
                self.note_rate(&item.account, rate);
                Outcome::Deleted
            }
            Err(InstanceError::NotFound) => Outcome::Deleted,
            Err(e @ (InstanceError::Unauthorized(_) | InstanceError::Forbidden(_))) => Outcome::Failed(e.to_string()),
            Err(InstanceError::RateLimited(rate)) => self.rate_limited(&item.account, rate),
            Err(e) => self.retry(item, &e),
        }
    }

    fn rate_limited(&mut self, account: &str, rate: RateInfo) -> Outcome {
        let now = now_ms();
        let until = rate.reset.filter(|r| *r > now).unwrap_or(now + DEFAULT_RATE_WAIT_MS);
        self.pace.entry(account.to_owned()).or_default().paused_until = until;
        tracing::info!(wait_ms = until - now, "expiry: the instance rate-limited deletions; waiting for the reset");
        Outcome::Defer { at: until }
    }
}
