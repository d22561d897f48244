//! The background task that deletes due posts, confirms they are gone, and purges them.
//!
//! The due-queue is the store's own index (items by next attempt), so nothing is held in
//! memory that a restart could lose: on start the loop simply asks the store what is due.
//! It sleeps until the next due time (`sleep_until`), or until the stage says something
//! new was scheduled ([`tokio::sync::Notify`]), or until shutdown.
//!
//! For each claimed item, as Mastodon's own cleanup does: re-fetch the status with the
//! author's token and re-check the keep rules (pinned, favourites, ...) against what the
//! instance says now — unless a sweep read it from the instance moments ago
//! ([`Scheduled::checked_at`]) — then `DELETE`. The post stays hidden after the instance
//! answered: Mastodon removes a post's traces in a background job, so after
//! `expiry.confirm_after` the status is asked for again (twenty at a time, with Mastodon's
//! batch lookup where there is one), and only once the instance says it no longer has it is
//! the item purged from the store. A status still served then gets its `DELETE` again. A scheduled post's publication is looked for ([`super::publish`]).
//!
//! Pacing: Mastodon allows 30 deletions per 30 minutes per user, shared with the user's
//! own deletes, and its 429 has no `Retry-After` — but it safelists requests from loopback
//! without `X-Forwarded-For` from every throttle, which pavise's own are. So accounts whose
//! answers carry no `X-RateLimit-*` are worked `expiry.delete_concurrency` at a time; an
//! account whose answers do carry them is worked one deletion at a time, and when the
//! remaining budget reaches the reserve (`expiry.reserve_deletes`) its items wait for the
//! reset. Nothing is dropped: transient failures retry with doubling back-off, a revoked
//! token parks the item as failed until a new token for the account appears.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex, atomic::Ordering::Relaxed},
    time::Duration,
};

use futures_util::{StreamExt as _, future::BoxFuture};
use tokio_util::sync::CancellationToken;

use super::{
    EXPIRES_IN_RULE, Expiry,
    instance::{Instance, InstanceError, RateInfo},
    seal::Token,
};
use crate::store::{ExpiryState, Outcome, Scheduled, UnixMs, now_ms};

/// Items claimed per round.
const BATCH: usize = 64;
/// The longest sleep without looking at the store (covers clock jumps and other nodes).
const MAX_IDLE: Duration = Duration::from_secs(30);
/// When a 429 comes without a usable reset.
const DEFAULT_RATE_WAIT_MS: u64 = 60_000;
/// How recent a sweep's reading of a post must be for the deletion to trust it.
const FRESH_CHECK_MS: u64 = 10 * 60 * 1000;

/// What re-reading a due post gave.
enum Read {
    Post(Box<crate::expiry::policy::PostFacts>),
    /// A sweep read it moments ago.
    Skipped,
    /// The instance answered 404 to the author.
    Missing,
    /// No token pavise holds may read it (why).
    Refused(String),
    /// Try again later (how).
    Failed(Outcome),
}

/// The post as pavise recorded it: the keep flags its author set through pavise, its
/// hashtags as last read.
fn recorded(item: &Scheduled) -> crate::expiry::policy::PostFacts {
    crate::expiry::policy::PostFacts {
        id: item.status_id.clone(),
        account: item.account.clone(),
        tags: item.tags.clone(),
        created_at: Some(item.created_at),
        pinned: item.flags.pinned,
        favourited: item.flags.favourited,
        bookmarked: item.flags.bookmarked,
        ..Default::default()
    }
}

/// The scheduler; [`Scheduler::run`] until shutdown.
pub struct Scheduler {
    core: Arc<Expiry>,
    instance: Instance,
    /// Per account: do not send its deletions before this time.
    paused_until: Mutex<HashMap<String, UnixMs>>,
    /// Accounts whose answers carried rate-limit headers: worked one at a time.
    limited: Mutex<HashSet<String>>,
    /// Tokens opened during the current batch (cleared after each).
    tokens: Mutex<HashMap<String, Token>>,
}

impl Scheduler {
    pub fn new(core: Arc<Expiry>, instance: Instance) -> Scheduler {
        Scheduler {
            core,
            instance,
            paused_until: Mutex::default(),
            limited: Mutex::default(),
            tokens: Mutex::default(),
        }
    }

    pub async fn run(self, shutdown: CancellationToken) {
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
            let outcomes = self.work(claimed, &shutdown).await;
            // Recorded together, so the store's group commit covers the batch with one fsync.
            // A crash before this point only means the claims lapse and the items are
            // looked at again: a deleted post then answers 404, which counts as done.
            let core = &self.core;
            let settled = futures_util::future::join_all(
                outcomes.into_iter().map(|(id, outcome)| async move { core.settle(&id, outcome).await }),
            )
            .await;
            for e in settled.into_iter().filter_map(Result::err) {
                tracing::error!(error = %e, "expiry: cannot record an outcome; the claim will lapse and retry");
            }
            self.tokens.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
        tracing::info!("expiry scheduler stopped");
    }

    /// Works a claimed batch: one account's items in order when the instance limits it,
    /// otherwise side by side.
    async fn work(&self, claimed: Vec<Scheduled>, shutdown: &CancellationToken) -> Vec<(String, Outcome)> {
        let mut by_account: BTreeMap<String, Vec<Scheduled>> = BTreeMap::new();
        // Deleted posts are confirmed gone in batches: one lookup for twenty of them.
        let mut confirms: BTreeMap<(String, Option<String>, Option<String>), Vec<Scheduled>> = BTreeMap::new();
        for item in claimed {
            if item.state == ExpiryState::Deleted && item.publication.is_none() {
                let key = (item.account.clone(), item.host.clone(), item.credential.clone());
                confirms.entry(key).or_default().push(item);
            } else {
                by_account.entry(item.account.clone()).or_default().push(item);
            }
        }
        let mut jobs: Vec<BoxFuture<'_, Vec<(String, Outcome)>>> = Vec::new();
        for items in confirms.into_values() {
            for chunk in items.chunks(super::instance::BATCH_IDS) {
                let chunk = chunk.to_vec();
                jobs.push(Box::pin(async move {
                    if shutdown.is_cancelled() {
                        return Vec::new();
                    }
                    let out = self.confirm_batch(chunk).await;
                    out.iter().for_each(|(_, o)| self.count(o));
                    out
                }));
            }
        }
        for (account, items) in by_account {
            if self.limited.lock().unwrap_or_else(|e| e.into_inner()).contains(&account) {
                jobs.push(Box::pin(async move {
                    let mut out = Vec::new();
                    for item in items {
                        if shutdown.is_cancelled() {
                            // Unprocessed claims lapse with their lease and are picked up next start.
                            break;
                        }
                        let outcome = self.process(&item).await;
                        self.count(&outcome);
                        out.push((item.status_id, outcome));
                    }
                    out
                }));
            } else {
                for item in items {
                    jobs.push(Box::pin(async move {
                        if shutdown.is_cancelled() {
                            return Vec::new();
                        }
                        let outcome = self.process(&item).await;
                        self.count(&outcome);
                        vec![(item.status_id, outcome)]
                    }));
                }
            }
        }
        let concurrency = self.core.config.delete_concurrency.max(1);
        futures_util::stream::iter(jobs)
            .buffer_unordered(concurrency)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    fn count(&self, outcome: &Outcome) {
        let s = &self.core.stats;
        let counter = match outcome {
            Outcome::Deleted { .. } => &s.deleted,
            Outcome::Gone => &s.confirmed,
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

    fn confirm_at(&self, item: &Scheduled) -> UnixMs {
        let after = self.core.config.confirm_after.get().as_millis() as u64;
        now_ms().saturating_add(after.saturating_mul(1u64 << item.attempts.min(6)))
    }

    async fn token_for(&self, item: &Scheduled) -> Option<Token> {
        if let Some(id) = &item.credential
            && let Some(t) = self.tokens.lock().unwrap_or_else(|e| e.into_inner()).get(id)
        {
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
                self.tokens.lock().unwrap_or_else(|e| e.into_inner()).insert(cred.id.clone(), t.clone());
                Some(t)
            }
            Err(e) => {
                tracing::error!(error = %e, "expiry: a sealed credential does not open");
                None
            }
        }
    }

    /// Remembers what the instance said about the account's budget; pauses it at the reserve.
    fn note_rate(&self, account: &str, rate: RateInfo) {
        if rate.limit.is_none() && rate.remaining.is_none() {
            return;
        }
        self.limited.lock().unwrap_or_else(|e| e.into_inner()).insert(account.to_owned());
        let reserve = self.core.config.reserve_deletes;
        if let (Some(remaining), Some(reset)) = (rate.remaining, rate.reset)
            && remaining <= reserve
        {
            self.paused_until.lock().unwrap_or_else(|e| e.into_inner()).insert(account.to_owned(), reset);
            tracing::info!(
                remaining,
                reserve,
                "expiry: account near its delete limit; waiting for the window to reset"
            );
        }
    }

    async fn process(&self, item: &Scheduled) -> Outcome {
        let now = now_ms();
        let paused = self.paused_until.lock().unwrap_or_else(|e| e.into_inner()).get(&item.account).copied();
        if let Some(until) = paused.filter(|t| *t > now) {
            return Outcome::Defer { at: until };
        }
        let Some(token) = self.token_for(item).await else {
            if item.state == ExpiryState::Deleted {
                // The instance answered its deletion; without a token to look again, that
                // answer is all there is.
                return Outcome::Gone;
            }
            return Outcome::Failed(
                "no usable token for the account; waiting for its author to post through pavise".into(),
            );
        };
        if item.publication.is_some() {
            return super::publish::look(&self.core, &self.instance, item, &token).await;
        }
        if item.state == ExpiryState::Deleted {
            return self.confirm(item, &token).await;
        }
        let host = item.host.as_deref();

        // Re-check keep rules against the instance's view now (or a sweep's, just taken; or,
        // when the instance shows the post to no token pavise holds, what pavise recorded).
        let fresh = item.checked_at.is_some_and(|t| now.saturating_sub(t) < FRESH_CHECK_MS);
        if item.rule != EXPIRES_IN_RULE {
            let policies = self.core.policies();
            let named = policies.rule(&item.rule).cloned();
            let read = if fresh && named.is_some() { Read::Skipped } else { self.read_post(item, host, &token).await };
            if let Read::Post(post) = &read {
                self.learn_attachments(item, post).await;
            }
            let (rule, post, judged_on_record) = match (read, named) {
                (Read::Failed(outcome), _) => return outcome,
                (Read::Post(post), Some(rule)) => (rule, *post, None),
                // Renamed or removed by a reload: whichever rule matches the post now.
                (Read::Post(post), None) => match policies.evaluate(&post) {
                    Some(rule) => (rule.clone(), *post, None),
                    None => return Outcome::Cancelled("no expiry rule matches it any more".into()),
                },
                (Read::Skipped, Some(rule)) => (rule, recorded(item), None),
                (Read::Refused(why), Some(rule)) => (rule, recorded(item), Some(why)),
                // Not shown to its author: it may still be there for everyone else (a moved
                // account's posts are hidden from it); the deletion says for sure.
                (Read::Missing, Some(rule)) => (rule, recorded(item), Some("the instance answered 404".to_owned())),
                (Read::Skipped | Read::Missing | Read::Refused(_), None) => {
                    return Outcome::Cancelled(
                        "its rule was removed and the instance will not show the post to match another".into(),
                    );
                }
            };
            if let Some(reason) = rule.keep.reason(&post) {
                return Outcome::Kept(match judged_on_record {
                    Some(why) => format!("{reason} (judged on what pavise recorded: {why})"),
                    None => reason,
                });
            }
            // A lengthened rule (after a reload) moves the deadline out, not in.
            if judged_on_record.is_none() && !fresh {
                let created = post.created_at.unwrap_or(item.created_at);
                let deadline = created.saturating_add(rule.after.get().as_millis() as u64);
                if deadline > now.saturating_add(1000) && rule.name == item.rule {
                    let mut later = item.clone();
                    later.deadline = deadline;
                    later.next_attempt = deadline;
                    later.state = ExpiryState::Pending;
                    if self.core.schedule_items(vec![(later, None)]).await.is_ok() {
                        return Outcome::Defer { at: deadline };
                    }
                }
            }
            if let Some(why) = judged_on_record {
                tracing::info!(reason = %why, "expiry: a due post could not be read; its keep rules were judged on what pavise recorded");
            }
        }
        self.delete(item, host, &token).await
    }

    /// A poll or media the record does not name yet (a record from before pavise learned
    /// them, an edit it did not see): hidden with the post from now on, and stored with it.
    async fn learn_attachments(&self, item: &Scheduled, post: &crate::expiry::policy::PostFacts) {
        if post.attachments.is_empty() || post.attachments == item.attachments {
            return;
        }
        let mut learned = item.clone();
        learned.attachments = post.attachments.clone();
        if let Err(e) = self.core.schedule_items(vec![(learned, None)]).await {
            tracing::warn!(error = %e, "expiry: could not record a due post's poll and media");
        }
    }

    /// The post as its author sees it now: with the item's token, or (when the instance
    /// refuses that one, say a token with only the `write` scope) with the newest other
    /// token pavise holds for the account.
    async fn read_post(&self, item: &Scheduled, host: Option<&str>, token: &Token) -> Read {
        let first = match self.instance.status(&item.status_id, host, token).await {
            Ok(post) => return Read::Post(Box::new(post)),
            Err(InstanceError::NotFound) => return Read::Missing,
            Err(e @ (InstanceError::Unauthorized(_) | InstanceError::Forbidden(_))) => e,
            Err(InstanceError::RateLimited(rate)) => return Read::Failed(self.rate_limited(&item.account, rate)),
            Err(e) => return Read::Failed(self.retry(item, &e)),
        };
        if let Some(other) = self.other_token(item, token).await {
            match self.instance.status(&item.status_id, host, &other).await {
                Ok(post) => return Read::Post(Box::new(post)),
                Err(InstanceError::NotFound) => return Read::Missing,
                Err(InstanceError::RateLimited(rate)) => return Read::Failed(self.rate_limited(&item.account, rate)),
                Err(_) => {}
            }
        }
        Read::Refused(format!("the instance would not show it to any token pavise holds ({first})"))
    }

    /// Another token for the item's account than `token`, if pavise holds one.
    async fn other_token(&self, item: &Scheduled, token: &Token) -> Option<Token> {
        let cred = self.core.store.account_credential(&item.account).await.ok().flatten()?;
        if cred.id == self.core.sealer.credential_id(token) {
            return None;
        }
        self.core.sealer.open(&cred).ok()
    }

    /// Sends the `DELETE` (with another token of the account's when the item's is refused).
    async fn delete(&self, item: &Scheduled, host: Option<&str>, token: &Token) -> Outcome {
        let refused = match self.instance.delete(&item.status_id, host, token).await {
            Ok(rate) => {
                self.note_rate(&item.account, rate);
                return Outcome::Deleted { confirm_at: self.confirm_at(item) };
            }
            // Already gone: nothing more to wait for.
            Err(InstanceError::NotFound) => return Outcome::Gone,
            Err(e @ (InstanceError::Unauthorized(_) | InstanceError::Forbidden(_))) => e,
            Err(InstanceError::RateLimited(rate)) => return self.rate_limited(&item.account, rate),
            Err(e) => return self.retry(item, &e),
        };
        if let Some(other) = self.other_token(item, token).await {
            match self.instance.delete(&item.status_id, host, &other).await {
                Ok(rate) => {
                    self.note_rate(&item.account, rate);
                    return Outcome::Deleted { confirm_at: self.confirm_at(item) };
                }
                Err(InstanceError::NotFound) => return Outcome::Gone,
                Err(InstanceError::RateLimited(rate)) => return self.rate_limited(&item.account, rate),
                Err(_) => {}
            }
        }
        Outcome::Failed(format!("the instance refused its deletion: {refused}"))
    }

    /// Deleted posts of one account, looked at again together; an instance without a
    /// batch lookup gets one request each.
    async fn confirm_batch(&self, items: Vec<Scheduled>) -> Vec<(String, Outcome)> {
        let all = |o: Outcome| items.iter().map(|i| (i.status_id.clone(), o.clone())).collect::<Vec<_>>();
        let Some(first) = items.first() else { return Vec::new() };
        let now = now_ms();
        let paused = self.paused_until.lock().unwrap_or_else(|e| e.into_inner()).get(&first.account).copied();
        if let Some(until) = paused.filter(|t| *t > now) {
            return all(Outcome::Defer { at: until });
        }
        // The instance answered their deletions; without a token to look again, that is all.
        let Some(token) = self.token_for(first).await else { return all(Outcome::Gone) };
        let ids: Vec<String> = items.iter().map(|i| i.status_id.clone()).collect();
        match self.instance.present(&ids, first.host.as_deref(), &token).await {
            Ok(Some(served)) => {
                let mut out = Vec::with_capacity(items.len());
                for item in &items {
                    let outcome =
                        if served.contains(&item.status_id) { self.confirm(item, &token).await } else { Outcome::Gone };
                    out.push((item.status_id.clone(), outcome));
                }
                out
            }
            Ok(None) => {
                let mut out = Vec::with_capacity(items.len());
                for item in &items {
                    out.push((item.status_id.clone(), self.confirm(item, &token).await));
                }
                out
            }
            Err(InstanceError::Unauthorized(_) | InstanceError::Forbidden(_)) => all(Outcome::Gone),
            Err(InstanceError::RateLimited(rate)) => all(self.rate_limited(&first.account, rate)),
            Err(e) => all(Outcome::Retry { at: self.confirm_at(first), reason: e.to_string() }),
        }
    }

    /// A deleted post, looked at again: gone (purge), or still served (delete again).
    async fn confirm(&self, item: &Scheduled, token: &Token) -> Outcome {
        let host = item.host.as_deref();
        match self.instance.status(&item.status_id, host, token).await {
            Err(InstanceError::NotFound) => Outcome::Gone,
            // The token went after the deletion was answered: that answer is all there is.
            Err(InstanceError::Unauthorized(_) | InstanceError::Forbidden(_)) => Outcome::Gone,
            Err(InstanceError::RateLimited(rate)) => self.rate_limited(&item.account, rate),
            Err(e) => Outcome::Retry { at: self.confirm_at(item), reason: e.to_string() },
            Ok(_) => {
                tracing::info!("expiry: a deleted post is still served by the instance; deleting it again");
                match self.instance.delete(&item.status_id, host, token).await {
                    Ok(rate) => {
                        self.note_rate(&item.account, rate);
                        Outcome::Retry { at: self.confirm_at(item), reason: "still served after its deletion".into() }
                    }
                    Err(InstanceError::NotFound) => Outcome::Gone,
                    Err(InstanceError::RateLimited(rate)) => self.rate_limited(&item.account, rate),
                    Err(e) => Outcome::Retry { at: self.confirm_at(item), reason: e.to_string() },
                }
            }
        }
    }

    fn rate_limited(&self, account: &str, rate: RateInfo) -> Outcome {
        let now = now_ms();
        let until = rate.reset.filter(|r| *r > now).unwrap_or(now + DEFAULT_RATE_WAIT_MS);
        self.paused_until.lock().unwrap_or_else(|e| e.into_inner()).insert(account.to_owned(), until);
        self.limited.lock().unwrap_or_else(|e| e.into_inner()).insert(account.to_owned());
        tracing::info!(wait_ms = until - now, "expiry: the instance rate-limited deletions; waiting for the reset");
        Outcome::Defer { at: until }
    }
}
