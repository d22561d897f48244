//! The archive: the posts a member wrote before pavise stood in front of the instance.
//!
//! Only what pavise sees being created is scheduled as it happens; years of older posts
//! would never expire unless someone swept them, and in practice nobody runs a command per
//! member. So the first time pavise sees a member's token on any authenticated request
//! ([`Sweeper::sight`]: a keyed hash looked up in memory, nothing more on the hot path),
//! and that member's archive has not been swept, a background worker sweeps it
//! ([`run_sweep`]) under the policies: pages of 40 (Mastodon's cap), newest first,
//! scheduling what matches; posts already past their deadline are checked against the keep
//! rules right there (the page just read is the instance's own view) and deleted soon.
//!
//! Nothing happens while no `[[expire]]` rule is loaded; after a reload that changes the
//! rules, a member's next request sweeps their archive again under the new ones (posts
//! pavise already knows keep their records). Progress is durable
//! ([`SweepProgress`]: state, counts, the page cursor), shown in
//! `/admin/expiry` and `pavise expiry list`, and an interrupted sweep resumes at start with
//! its sealed credential. `expiry.sweep_archives = false` turns the automatic sweep off;
//! `pavise expiry sweep` still works.
//!
//! Pacing: Mastodon safelists requests from loopback without `X-Forwarded-For` from every
//! Rack::Attack throttle, so the sweep's own requests are not held to the paging budget;
//! where an instance does send `X-RateLimit-*`, the sweep waits for the window when little
//! is left, as before.

use std::{
    collections::HashMap,
    fmt::Write as _,
    hash::BuildHasher,
    sync::{Arc, RwLock},
    time::Duration,
};

use http::HeaderMap;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Expiry, ExpiryError, instance::Instance, seal::Token};
use crate::store::{ExpiryState, Scheduled, SealedCredential, SweepProgress, SweepState, now_ms};

/// The longest sweep: 40 statuses a page.
const MAX_PAGES: usize = 5_000;
/// Tokens remembered as seen; past this the set starts over (a flood of made-up tokens
/// must not grow memory without bound).
const MAX_SEEN: usize = 100_000;
/// First sightings waiting for the worker; more are dropped and seen again next time.
const QUEUE: usize = 256;

/// What a sweep found and did.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct SweepReport {
    pub account: String,
    pub seen: u64,
    pub scheduled: u64,
    pub already_due: u64,
    pub dry_run: bool,
    /// (status id, rule, deadline RFC 3339), for the dry run's listing.
    pub items: Vec<(String, String, String)>,
}

impl SweepReport {
    pub fn render(&self) -> String {
        let mut out = String::new();
        let verb = if self.dry_run { "would schedule" } else { "scheduled" };
        let _ = writeln!(
            out,
            "sweep of {}: {} statuses seen, {verb} {} ({} already past their deadline: deleted soon, paced)",
            self.account, self.seen, self.scheduled, self.already_due
        );
        if self.dry_run {
            for (id, rule, deadline) in &self.items {
                let _ = writeln!(out, "  {id}  rule {rule:?}  deadline {deadline}");
            }
        }
        out
    }
}

/// Pages through the account's statuses, applies the policies, schedules what matches.
/// `account` must be the token's own.
pub async fn run_sweep(
    core: &Expiry,
    instance: &Instance,
    host: Option<&str>,
    account: &str,
    token: &Token,
    dry_run: bool,
) -> Result<SweepReport, ExpiryError> {
    let (account_id, username) = instance.verify_credentials(host, token).await?;
    if !username.eq_ignore_ascii_case(account) {
        return Err(ExpiryError::Invalid(format!("the token belongs to {username:?}, not {account:?}")));
    }
    sweep_account(core, instance, host, &account_id, &username, token, dry_run, None).await
}

/// The sweep itself; `resume` continues a recorded one from its cursor.
#[allow(clippy::too_many_arguments)]
async fn sweep_account(
    core: &Expiry,
    instance: &Instance,
    host: Option<&str>,
    account_id: &str,
    username: &str,
    token: &Token,
    dry_run: bool,
    resume: Option<SweepProgress>,
) -> Result<SweepReport, ExpiryError> {
    let cred = core.sealer.seal(username, token)?;
    let now = now_ms();
    let mut progress = resume.unwrap_or_else(|| SweepProgress {
        account: username.to_owned(),
        state: SweepState::Running,
        credential: Some(cred.id.clone()),
        token: None,
        host: host.map(str::to_owned),
        cursor: None,
        seen: 0,
        scheduled: 0,
        already_due: 0,
        started_at: now,
        updated_at: now,
        finished_at: None,
        reason: None,
        rules: None,
    });
    progress.state = SweepState::Running;
    progress.credential = Some(cred.id.clone());
    // The credential rides with the record while it runs, so a resumed sweep has its token.
    progress.token = Some(cred.clone());
    progress.rules = Some(core.rules_digest());
    progress.reason = None;
    progress.finished_at = None;
    let mut report = SweepReport { account: username.to_owned(), dry_run, ..Default::default() };
    if !dry_run {
        core.store.put_sweep(progress.clone()).await.map_err(ExpiryError::Store)?;
    }
    let result = sweep_pages(core, instance, host, account_id, &cred, dry_run, &mut progress, &mut report).await;
    if !dry_run {
        progress.updated_at = now_ms();
        progress.token = None;
        match &result {
            Ok(()) => {
                progress.state = SweepState::Done;
                progress.finished_at = Some(progress.updated_at);
                // The cursor is a post id, often a DM's the sweep is about to delete: a done
                // sweep never resumes, so it keeps none (a failed one needs it to resume).
                progress.cursor = None;
            }
            Err(e) => {
                progress.state = SweepState::Failed;
                progress.reason = Some(e.to_string());
            }
        }
        core.store.put_sweep(progress.clone()).await.map_err(ExpiryError::Store)?;
    }
    result.map(|()| report)
}

#[allow(clippy::too_many_arguments)]
async fn sweep_pages(
    core: &Expiry,
    instance: &Instance,
    host: Option<&str>,
    account_id: &str,
    cred: &SealedCredential,
    dry_run: bool,
    progress: &mut SweepProgress,
    report: &mut SweepReport,
) -> Result<(), ExpiryError> {
    let token = core.sealer.open(cred)?;
    for _ in 0..MAX_PAGES {
        let (page, rate) = instance.account_statuses(account_id, progress.cursor.as_deref(), host, &token).await?;
        let Some(last) = page.last().and_then(|s| s.get("id")).and_then(|i| i.as_str()).map(str::to_owned) else {
            break;
        };
        let now = now_ms();
        let mut batch: Vec<(Scheduled, Option<SealedCredential>)> = Vec::new();
        for status in &page {
            report.seen += 1;
            // A boost is not the author's post; un-boosting is another feature.
            if status.get("reblog").is_some_and(|r| !r.is_null()) {
                continue;
            }
            let Some(post) = super::observe::facts_from_status(status) else { continue };
            let Some(mut item) = core.plan(&post, None, now) else { continue };
            item.host = host.map(str::to_owned);
            item.credential = Some(cred.id.clone());
            report.scheduled += 1;
            if item.deadline <= now {
                report.already_due += 1;
                // The page is the instance's view of the post right now: judge the keep
                // rules on it, so the deletion need not fetch it again.
                let policies = core.policies();
                match policies.rule(&item.rule).and_then(|r| r.keep.reason(&post)) {
                    Some(reason) => {
                        item.state = ExpiryState::Kept;
                        item.reason = Some(reason);
                    }
                    None => item.checked_at = Some(now),
                }
            }
            if dry_run {
                report.items.push((item.status_id.clone(), item.rule.clone(), super::rfc3339(item.deadline)));
            } else {
                batch.push((item, Some(cred.clone())));
            }
        }
        if !dry_run {
            if !batch.is_empty() {
                // A post pavise already knows (seen created, kept, failed, ...) keeps its
                // record: the sweep only adds what nothing scheduled.
                core.schedule_new_items(batch).await?;
            }
            progress.cursor = Some(last.clone());
            progress.seen = report.seen;
            progress.scheduled = report.scheduled;
            progress.already_due = report.already_due;
            progress.updated_at = now_ms();
            core.store.put_sweep(progress.clone()).await.map_err(ExpiryError::Store)?;
        } else {
            progress.cursor = Some(last.clone());
        }
        core.stats.swept.fetch_add(page.len() as u64, std::sync::atomic::Ordering::Relaxed);
        // An instance that throttles the paging budget: leave some for the member.
        if let (Some(remaining), Some(reset)) = (rate.remaining, rate.reset)
            && remaining <= 10
        {
            let wait = reset.saturating_sub(now_ms()).min(15 * 60 * 1000);
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
    }
    Ok(())
}

/// A token seen on a request, for the worker.
struct Sighting {
    key: u64,
    token: Token,
    host: Option<String>,
}

/// What pavise remembers of a token it saw.
#[derive(Debug, Clone, Copy)]
enum Seen {
    /// Looked at (swept, being swept, or not a member's token): nothing more to do.
    Done,
    /// Queued for the worker.
    Queued,
    /// The last look failed for a reason that may pass (the instance restarting, a 503):
    /// the next sighting from `at` on tries again.
    RetryAt { at: tokio::time::Instant, failures: u32 },
}

/// How a look at a token ended.
enum Looked {
    Done,
    /// Worth trying again (why).
    Again(String),
}

/// Notices members' tokens and sweeps their archives in the background.
pub struct Sweeper {
    core: Arc<Expiry>,
    instance: Instance,
    /// The instance's domain, when configured (else the `Host` the token came with).
    local_domain: Option<String>,
    hasher: std::collections::hash_map::RandomState,
    seen: RwLock<HashMap<u64, Seen>>,
    /// The policy generation `seen` belongs to: new rules, new look at every token.
    seen_generation: std::sync::atomic::AtomicU64,
    queue: mpsc::Sender<Sighting>,
    receiver: std::sync::Mutex<Option<mpsc::Receiver<Sighting>>>,
}

impl Sweeper {
    pub fn new(core: Arc<Expiry>, instance: Instance, local_domain: Option<String>) -> Arc<Sweeper> {
        let (queue, receiver) = mpsc::channel(QUEUE);
        Arc::new(Sweeper {
            core,
            instance,
            local_domain,
            hasher: std::collections::hash_map::RandomState::new(),
            seen: RwLock::new(HashMap::new()),
            seen_generation: std::sync::atomic::AtomicU64::new(0),
            queue,
            receiver: std::sync::Mutex::new(Some(receiver)),
        })
    }

    /// The hot path: called for every request. A token seen before costs one hash and one
    /// read-locked map lookup; a new one (or one whose last look failed, once its back-off
    /// has passed) is queued for the worker. The token is read the way the instance reads
    /// it ([`crate::auth`]): the header, or `access_token`/`bearer_token` in the query.
    pub fn sight(&self, headers: &HeaderMap, query: Option<&str>, host: Option<&str>) {
        // Without a rule there is nothing to sweep for, and no request of pavise's own to make.
        if !self.core.has_rules() {
            return;
        }
        let Some(token) = crate::auth::bearer_token_in_head(headers, query) else { return };
        let generation = self.core.policy_generation();
        if self.seen_generation.swap(generation, std::sync::atomic::Ordering::Relaxed) != generation {
            // Reloaded rules may match posts an earlier sweep passed over.
            self.seen.write().unwrap_or_else(|e| e.into_inner()).clear();
        }
        let key = self.hasher.hash_one(token.expose());
        let now = tokio::time::Instant::now();
        let due = |seen: Option<&Seen>| match seen {
            None => true,
            Some(Seen::Done | Seen::Queued) => false,
            Some(Seen::RetryAt { at, .. }) => *at <= now,
        };
        if !due(self.seen.read().unwrap_or_else(|e| e.into_inner()).get(&key)) {
            return;
        }
        {
            let mut seen = self.seen.write().unwrap_or_else(|e| e.into_inner());
            if !due(seen.get(&key)) {
                return;
            }
            if seen.len() >= MAX_SEEN {
                seen.clear();
            }
            seen.insert(key, Seen::Queued);
        }
        let sighting = Sighting { key, token, host: self.local_domain.clone().or_else(|| host.map(str::to_owned)) };
        if self.queue.try_send(sighting).is_err() {
            // The worker is busy: forget it, so the next request with it tries again.
            self.seen.write().unwrap_or_else(|e| e.into_inner()).remove(&key);
        }
    }

    /// Records how a look at a token ended: done, or again after a back-off that doubles
    /// with each failure (`expiry.backoff` up to `expiry.max_backoff`).
    fn looked(&self, key: u64, looked: Looked) {
        let mut seen = self.seen.write().unwrap_or_else(|e| e.into_inner());
        match looked {
            Looked::Done => {
                seen.insert(key, Seen::Done);
            }
            Looked::Again(why) => {
                let failures = match seen.get(&key) {
                    Some(Seen::RetryAt { failures, .. }) => failures + 1,
                    _ => 0,
                };
                let base = self.core.config.backoff.get();
                let wait = base.saturating_mul(1u32 << failures.min(16)).min(self.core.config.max_backoff.get());
                seen.insert(key, Seen::RetryAt { at: tokio::time::Instant::now() + wait, failures });
                tracing::warn!(
                    error = %why,
                    retry_in_secs = wait.as_secs(),
                    "expiry: an archive sweep could not run; it is tried again on the member's next request after the back-off"
                );
            }
        }
    }

    /// The worker: resumes interrupted sweeps, then takes first sightings one at a time.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let Some(mut receiver) = self.receiver.lock().unwrap_or_else(|e| e.into_inner()).take() else { return };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = self.resume() => {}
        }
        loop {
            let sighting = tokio::select! {
                _ = shutdown.cancelled() => return,
                s = receiver.recv() => match s { Some(s) => s, None => return },
            };
            let key = sighting.key;
            let looked = tokio::select! {
                _ = shutdown.cancelled() => return,
                l = self.first_sighting(sighting) => l,
            };
            self.looked(key, looked);
        }
    }

    async fn resume(&self) {
        let Ok(sweeps) = self.core.store.sweeps().await else { return };
        for progress in sweeps.into_iter().filter(|p| p.state == SweepState::Running) {
            let Some(cred) = &progress.token else { continue };
            let Ok(token) = self.core.sealer.open(cred) else { continue };
            tracing::info!(seen = progress.seen, "expiry: resuming an interrupted archive sweep");
            let host = progress.host.clone();
            self.sweep(&token, host.as_deref(), Some(progress)).await;
        }
    }

    async fn first_sighting(&self, sighting: Sighting) -> Looked {
        let host = sighting.host.as_deref();
        let (_, username) = match self.instance.verify_credentials(host, &sighting.token).await {
            Ok(who) => who,
            Err(e) if e.is_transient() || matches!(e, super::instance::InstanceError::RateLimited(_)) => {
                return Looked::Again(e.to_string());
            }
            // Not a member's token (an app token, revoked, lacking the scope): nothing to do.
            Err(e) => {
                tracing::debug!(error = %e, "expiry: a token pavise saw does not name an account");
                return Looked::Done;
            }
        };
        // A new token re-queues deletions parked on a revoked one.
        if let Err(e) = self.core.offer_token(&username, Some(&sighting.token)).await {
            tracing::warn!(error = %e, "expiry: cannot offer a new token to parked deletions");
        }
        let resume = match self.core.store.sweep(&username).await {
            // Swept under the rules in force (or being swept): nothing to do.
            Ok(Some(p)) if p.state == SweepState::Running => return Looked::Done,
            Ok(Some(p)) if p.state == SweepState::Done && p.rules.as_deref() == Some(&self.core.rules_digest()) => {
                return Looked::Done;
            }
            // New rules, or a failed sweep: again from the newest post (what is known stays).
            Ok(Some(mut p)) => {
                p.cursor = None;
                p.seen = 0;
                p.scheduled = 0;
                p.already_due = 0;
                p.started_at = now_ms();
                Some(p)
            }
            Ok(None) => None,
            Err(e) => return Looked::Again(format!("cannot read sweep progress: {e}")),
        };
        self.sweep(&sighting.token, host, resume).await
    }

    async fn sweep(&self, token: &Token, host: Option<&str>, resume: Option<SweepProgress>) -> Looked {
        let started = std::time::Instant::now();
        let result = async {
            let (account_id, username) = self.instance.verify_credentials(host, token).await?;
            sweep_account(&self.core, &self.instance, host, &account_id, &username, token, false, resume).await
        }
        .await;
        match result {
            Ok(report) => {
                tracing::info!(
                    seen = report.seen,
                    scheduled = report.scheduled,
                    already_due = report.already_due,
                    secs = started.elapsed().as_secs_f64(),
                    "expiry: a member's archive was swept"
                );
                Looked::Done
            }
            // The token cannot read the archive: a retry would not change that.
            Err(ExpiryError::Instance(
                e @ (super::instance::InstanceError::Unauthorized(_) | super::instance::InstanceError::Forbidden(_)),
            )) => {
                tracing::warn!(error = %e, "expiry: an archive sweep stopped: the token may not read the member's statuses");
                Looked::Done
            }
            Err(e) => Looked::Again(e.to_string()),
        }
    }
}
