//! Ephemeral posts: policy-file expiry, per-post `expires_in`, crash-safe deletion, and
//! the promise that matters to the members: once a post's deadline has passed it is gone
//! everywhere, at once, and its traces go with it.
//!
//! An at-risk member's old posts, above all old direct messages, are evidence waiting to
//! be mined. Pavise deletes them on a schedule the admin writes (`policies/*.toml`,
//! [`policy`]) or the author asks for (`expires_in`, [`edge`]), through the instance's own
//! API so the instance federates the `Delete` to every server that has a copy.
//!
//! ```text
//!  request:  ExpiryStage ─ names a hidden post (any spelling)? → 410/404 at once   (stage)
//!                        ─ POST /api/v1/statuses: read and strip expires_in        (edge)
//!                          → sent by a task of its own; the answer is learned and
//!                            scheduled durably whether or not the client is still there
//!  response: ExpiryStage ─ every answer that can embed a post loses the hidden ones  (hide,
//!                          filter; SSE per event, WebSocket per message: sse, ws)
//!  index:    the ids of hidden posts, in memory, rebuilt from the store at start    (index)
//!  background: scheduler ─ claim due ─ re-check keep ─ DELETE ─ confirm gone ─ purge
//!              sweeper   ─ a member's token first seen ─ their archive, under the rules
//! ```
//! The author's token is sealed ([`seal`]) and stored once per token; the schedule lives in
//! the [`crate::store::Store`], sealed at rest, so a restart (or `kill -9`) resumes where it
//! stopped and a seized data dir names no post and no member.

pub mod cli;
pub mod edge;
pub mod filter;
pub mod hide;
pub mod index;
pub mod instance;
pub mod json;
pub mod observe;
pub mod params;
pub mod policy;
pub mod publish;
pub mod resource;
pub mod scheduler;
pub mod seal;
pub mod sse;
pub mod stage;
pub mod sweep;
pub mod ws;

use std::{
    path::PathBuf,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
};

use bytes::Bytes;
use http::{Method, StatusCode};
use serde::Deserialize;
use tokio::sync::Notify;

use crate::{
    proxy::contract::{Response, StageFuture, error::json_error},
    store::{ExpiryState, KeepFlags, Outcome, Scheduled, SealedCredential, Store, StoreError, UnixMs},
    units::{Size, Span},
};

use index::HiddenIndex;
use instance::Instance;
use policy::{Policies, PolicyError, PostFacts};
use seal::{SealError, Sealer, Token};

pub use stage::ExpiryStage;

/// The rule name recorded for a per-post `expires_in`.
pub const EXPIRES_IN_RULE: &str = "expires_in";

#[derive(Debug, thiserror::Error)]
pub enum ExpiryError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error(transparent)]
    Instance(#[from] instance::InstanceError),
    #[error("{0}")]
    Invalid(String),
}

/// `[expiry]` in the config file. Every key optional.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExpiryConfig {
    /// Off: no stage, no scheduler (policies are still checked by `pavise check`).
    pub enabled: bool,
    /// The key that seals authors' tokens and unlocks the store's epoch keys (CLI:
    /// `--expiry-key-file`, env `PAVISE_EXPIRY_KEY_FILE`). Default: beside the data dir,
    /// never in it (`./data` → `./data-expiry.key`), so a copy of the data dir alone opens
    /// nothing; on the same disk, though, which pavise warns about at every start. Put it
    /// on another volume (or a tmpfs filled at boot); it is only read after its creation.
    /// Inside the data dir it is refused: a seized data dir would open itself.
    pub key_file: Option<PathBuf>,
    /// Lets the key file sit inside the data dir (tests, development), and puts it there by
    /// default (`<data_dir>/expiry.key`): a loud warning at every start instead of a refusal.
    pub allow_key_in_data_dir: bool,
    /// A record purged from the store (a deleted post's, a dropped token) can be opened,
    /// by someone holding both the data dir and the key file, for at most this long: the
    /// store then moves to a new epoch key, rewrites itself into a fresh file and destroys
    /// the old key. Rotations are at least this far apart.
    pub forget_within: Span,
    /// How long the task that sends a status creation waits for the instance's answer (the
    /// client gets its `504` after `request_timeout`; the post is learned either way). When
    /// the answer is lost, the post is looked for among the author's newest statuses.
    pub create_timeout: Span,
    /// The shortest `expires_in` accepted (Akkoma's is 600 s).
    pub min_expires_in: Span,
    /// Deletions of each account's rate-limit window left for the author's own use
    /// (Mastodon: 30 per 30 minutes, shared with the user's own deletes).
    pub reserve_deletes: u64,
    /// How long a claimed deletion is held before another attempt may take it.
    pub lease: Span,
    /// Per request to the instance.
    pub request_timeout: Span,
    /// First retry wait after a 5xx or timeout; doubles per attempt up to `max_backoff`.
    pub backoff: Span,
    pub max_backoff: Span,
    /// Page cache of the embedded store.
    pub store_cache: Size,
    /// How long after the instance answered a `DELETE` pavise looks again to confirm the
    /// post is no longer served (Mastodon finishes a deletion in a background job); the post
    /// stays hidden until then, and its record is purged after.
    pub confirm_after: Span,
    /// Deletions sent at once for accounts the instance reports no rate limit for (pavise's
    /// own requests from loopback are not throttled by Mastodon).
    pub delete_concurrency: usize,
    /// Sweep a member's archive (the posts from before pavise) under the policies the first
    /// time pavise sees their token, in the background. Off: only `pavise expiry sweep`.
    pub sweep_archives: bool,
    /// The largest answer read whole to take expired posts out of it; a larger one is
    /// refused (502) while any post is hidden, never passed unread.
    pub filter_max_body: Size,
}

impl Default for ExpiryConfig {
    fn default() -> Self {
        ExpiryConfig {
            enabled: true,
            key_file: None,
            allow_key_in_data_dir: false,
            forget_within: Span::secs(600),
            create_timeout: Span::secs(300),
            min_expires_in: Span::secs(60),
            reserve_deletes: 5,
            lease: Span::secs(300),
            request_timeout: Span::secs(30),
            backoff: Span::secs(30),
            max_backoff: Span::secs(3600),
            store_cache: Size(16 << 20),
            confirm_after: Span::secs(10),
            delete_concurrency: 4,
            sweep_archives: true,
            filter_max_body: Size(16 << 20),
        }
    }
}

impl ExpiryConfig {
    pub fn key_file(&self, data_dir: &std::path::Path) -> PathBuf {
        match &self.key_file {
            Some(path) => path.clone(),
            None if self.allow_key_in_data_dir => data_dir.join(KEY_IN_DATA_DIR),
            None => key_beside(data_dir),
        }
    }

    /// What `Config::validate` checks beyond the types.
    pub fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        if !(1..=64).contains(&self.delete_concurrency) {
            return Err(("expiry.delete_concurrency", "must be between 1 and 64"));
        }
        if self.filter_max_body.0 < 64 << 10 {
            return Err(("expiry.filter_max_body", "must be at least 64KiB"));
        }
        let forget = self.forget_within.get().as_secs();
        if !(1..=86_400).contains(&forget) {
            return Err(("expiry.forget_within", "must be between 1s and 1d"));
        }
        if self.create_timeout < self.request_timeout {
            return Err(("expiry.create_timeout", "must not be shorter than expiry.request_timeout"));
        }
        Ok(())
    }

    /// Where the key file is, against the data dir. Inside it: refused (`Err`, for `pavise
    /// run` and `pavise check` to say), unless `development` (direct egress: pavise is not
    /// protecting anyone then, and says so) or `expiry.allow_key_in_data_dir`, which turn
    /// the refusal into a warning. On the same filesystem: a warning. `Ok(Some(warning))`
    /// is for the start log and `pavise check`.
    pub fn check_key_placement(&self, data_dir: &std::path::Path, development: bool) -> Result<Option<String>, String> {
        let key = self.key_file(data_dir);
        let older = data_dir.join(KEY_IN_DATA_DIR);
        if self.key_file.is_none() && !self.allow_key_in_data_dir && !key.exists() && older.exists() {
            // An older version's default: moved by the admin, never silently replaced (a new
            // key would not open the store, nor the tokens sealed with the old one).
            return Err(format!(
                "expiry.key_file: the expiry key is at {}, inside the data dir, where older versions kept it; a seized data dir would hold the key that opens it. Move it to {} (the default now), or to another volume and point expiry.key_file, --expiry-key-file or PAVISE_EXPIRY_KEY_FILE at it (README: \"Where the key lives\")",
                older.display(),
                key.display()
            ));
        }
        let (key_abs, dir_abs) = (resolved(&key), resolved(data_dir));
        if key_abs.starts_with(&dir_abs) {
            let why = format!(
                "expiry.key_file: {} is inside the data dir {}: a seized data dir would hold the key that opens it. Put the key on another volume (a tmpfs filled at boot, a separate disk) with expiry.key_file, --expiry-key-file or PAVISE_EXPIRY_KEY_FILE (README: \"Where the key lives\")",
                key.display(),
                data_dir.display()
            );
            if development || self.allow_key_in_data_dir {
                return Ok(Some(format!("INSECURE, for development only: {why}")));
            }
            return Err(format!("{why}; for a test setup, expiry.allow_key_in_data_dir = true"));
        }
        if same_filesystem(&key_abs, &dir_abs) {
            return Ok(Some(format!(
                "the expiry key file {} is on the same filesystem as the data dir {}: whoever takes that disk takes both",
                key.display(),
                data_dir.display()
            )));
        }
        Ok(None)
    }
}

/// The key file's name inside the data dir (where older versions kept it by default, and
/// where `expiry.allow_key_in_data_dir` still puts it).
const KEY_IN_DATA_DIR: &str = "expiry.key";

/// The default key file: beside the data dir, named after it (`/var/lib/pavise` →
/// `/var/lib/pavise-expiry.key`).
fn key_beside(data_dir: &std::path::Path) -> PathBuf {
    let dir = resolved(data_dir);
    match (dir.parent(), dir.file_name()) {
        (Some(parent), Some(name)) => parent.join(format!("{}-expiry.key", name.to_string_lossy())),
        // The data dir is `/`: there is no beside (and inside is refused).
        _ => data_dir.join(KEY_IN_DATA_DIR),
    }
}

/// An absolute path with symlinks resolved as far as it exists (the rest appended as
/// written, `.` and `..` folded), so two spellings of one place compare equal.
fn resolved(path: &std::path::Path) -> PathBuf {
    let absolute = if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir().map(|d| d.join(path)).unwrap_or_else(|_| path.to_owned())
    };
    let mut normal = PathBuf::new();
    for part in absolute.components() {
        match part {
            std::path::Component::ParentDir => {
                normal.pop();
            }
            std::path::Component::CurDir => {}
            other => normal.push(other),
        }
    }
    let mut existing = normal.clone();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.file_name().map(|n| n.to_owned()), existing.parent().map(|p| p.to_owned())) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent;
            }
            _ => return normal,
        }
    }
    let mut out = std::fs::canonicalize(&existing).unwrap_or(existing);
    out.extend(rest.iter().rev());
    out
}

#[cfg(unix)]
fn same_filesystem(a: &std::path::Path, b: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let dev = |p: &std::path::Path| p.ancestors().find_map(|a| std::fs::metadata(a).ok()).map(|m| m.dev());
    matches!((dev(a), dev(b)), (Some(x), Some(y)) if x == y)
}

#[cfg(not(unix))]
fn same_filesystem(_a: &std::path::Path, _b: &std::path::Path) -> bool {
    false
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    pub scheduled: AtomicU64,
    pub schedule_errors: AtomicU64,
    pub hidden: AtomicU64,
    pub filtered: AtomicU64,
    pub deleted: AtomicU64,
    pub confirmed: AtomicU64,
    pub kept: AtomicU64,
    pub failed: AtomicU64,
    pub retried: AtomicU64,
    pub deferred: AtomicU64,
    pub rejected_expires_in: AtomicU64,
    pub published: AtomicU64,
    pub swept: AtomicU64,
}

/// The shared core: store, policies, sealer, the index of hidden posts; used by the stage,
/// the scheduler, the sweeper and admin. Every change to expiry state goes through it, so
/// the index and the store never disagree.
pub struct Expiry {
    pub store: Arc<dyn Store>,
    policies: RwLock<Arc<Policies>>,
    policy_dir: PathBuf,
    pub sealer: Sealer,
    pub config: ExpiryConfig,
    /// Wakes the scheduler when something new may be due sooner than it planned.
    pub wake: Notify,
    /// Wakes the index's promoter when a deadline may have come nearer.
    pub promote: Notify,
    pub stats: Stats,
    /// The posts that must not be served (or will not be within a minute).
    pub hidden: Arc<HiddenIndex>,
    /// Whether any `[[expire]]` rule is loaded (an archive sweep has nothing to do without).
    has_rules: std::sync::atomic::AtomicBool,
    /// Bumped by every reload: rules may have changed what a sweep would find.
    generation: AtomicU64,
}

impl std::fmt::Debug for Expiry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Expiry").field("policy_dir", &self.policy_dir).finish_non_exhaustive()
    }
}

impl Expiry {
    pub fn new(
        store: Arc<dyn Store>,
        policy_dir: PathBuf,
        sealer: Sealer,
        config: ExpiryConfig,
    ) -> Result<Expiry, ExpiryError> {
        let policies = Policies::load_dir(&policy_dir)?;
        let has_rules = std::sync::atomic::AtomicBool::new(!policies.rules.is_empty());
        Ok(Expiry {
            store,
            policies: RwLock::new(Arc::new(policies)),
            policy_dir,
            sealer,
            config,
            wake: Notify::new(),
            promote: Notify::new(),
            stats: Stats::default(),
            hidden: Arc::new(HiddenIndex::default()),
            has_rules,
            generation: AtomicU64::new(0),
        })
    }

    /// Whether any expiry rule is in force.
    pub fn has_rules(&self) -> bool {
        self.has_rules.load(Relaxed)
    }

    /// A keyed digest of the expiry rules in force (what a sweep was made under).
    pub fn rules_digest(&self) -> String {
        let rules: Vec<String> = self
            .policies()
            .rules
            .iter()
            .map(|r| format!("{}|{:?}|{}|{:?}", r.name, r.matcher, r.after.get().as_secs(), r.keep))
            .collect();
        let parts: Vec<&str> = rules.iter().map(String::as_str).collect();
        self.sealer.digest(&parts)
    }

    /// Changes whenever the policies are reloaded.
    pub fn policy_generation(&self) -> u64 {
        self.generation.load(Relaxed)
    }

    pub fn policies(&self) -> Arc<Policies> {
        self.policies.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Re-reads the policy directory; on error the previous rules stay in force.
    pub fn reload(&self) -> Result<usize, PolicyError> {
        let fresh = Policies::load_dir(&self.policy_dir)?;
        let n = fresh.rules.len();
        *self.policies.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(fresh);
        self.has_rules.store(n > 0, Relaxed);
        self.generation.fetch_add(1, Relaxed);
        Ok(n)
    }

    /// Whether a status must not be served any more (deadline passed, not kept).
    pub fn is_hidden(item: &Scheduled, now: UnixMs) -> bool {
        item.hidden_at(now)
    }

    /// The item a post gets, if any: an explicit `expires_in` wins over the policies.
    /// `expires_in` counts from `now` (when pavise saw the answer: the author's clock, not
    /// the instance's), or from publication for a scheduled post ([`Expiry::plan_published`]).
    pub fn plan(&self, post: &PostFacts, expires_in: Option<u64>, now: UnixMs) -> Option<Scheduled> {
        self.plan_from(post, expires_in, now)
    }

    /// [`Expiry::plan`] for a post the instance published from a schedule: every deadline
    /// counts from its publication.
    pub fn plan_published(&self, post: &PostFacts, expires_in: Option<u64>, published: UnixMs) -> Option<Scheduled> {
        self.plan_from(post, expires_in, published)
    }

    fn plan_from(&self, post: &PostFacts, expires_in: Option<u64>, base: UnixMs) -> Option<Scheduled> {
        let created = post.created_at.unwrap_or(base);
        let (rule, deadline) = match expires_in {
            Some(secs) => (EXPIRES_IN_RULE.to_owned(), base.saturating_add(secs.saturating_mul(1000))),
            None => {
                let policies = self.policies();
                let rule = policies.evaluate(post)?;
                (rule.name.clone(), created.saturating_add(rule.after.get().as_millis() as u64))
            }
        };
        let mut item = Scheduled::pending(&post.id, &post.account, rule, created, deadline);
        item.flags = KeepFlags { pinned: post.pinned, favourited: post.favourited, bookmarked: post.bookmarked };
        item.tags = post.tags.clone();
        item.attachments = post.attachments.clone();
        Some(item)
    }

    /// Seals `token` for `account` and schedules `item` with it, durably.
    pub async fn schedule(&self, mut item: Scheduled, account: &str, token: Option<&Token>) -> Result<(), ExpiryError> {
        let cred = match token {
            Some(t) => Some(self.sealer.seal(account, t)?),
            None => None,
        };
        item.credential = cred.as_ref().map(|c| c.id.clone()).or(item.credential);
        self.schedule_items(vec![(item, cred)]).await?;
        Ok(())
    }

    /// Schedules items (with the credentials they need) in one durable commit, and keeps the
    /// index of hidden posts in step. Returns how many failed items a new credential
    /// re-queued.
    pub async fn schedule_items(&self, items: Vec<(Scheduled, Option<SealedCredential>)>) -> Result<u64, ExpiryError> {
        let notes: Vec<(Scheduled, bool)> =
            items.iter().map(|(i, _)| (i.clone(), i.publication.is_none() && i.state.hides())).collect();
        let n = items.len() as u64;
        let requeued = self.store.schedule(items).await.map_err(ExpiryError::Store)?;
        // After the commit, against the watermark read now: see index's module docs.
        let watermark = self.hidden.watermark();
        for (item, hides) in notes {
            if hides && item.deadline <= watermark {
                self.hidden.insert_item(&item);
            } else {
                self.hidden.remove(&item.status_id);
            }
        }
        self.stats.scheduled.fetch_add(n, Relaxed);
        self.wake.notify_one();
        self.promote.notify_one();
        Ok(requeued)
    }

    /// [`Expiry::schedule_items`] for an archive sweep: only posts pavise has no record of
    /// are added (a known one keeps its state). Returns how many were added.
    pub async fn schedule_new_items(
        &self,
        items: Vec<(Scheduled, Option<SealedCredential>)>,
    ) -> Result<u64, ExpiryError> {
        let notes: Vec<(Scheduled, bool)> =
            items.iter().map(|(i, _)| (i.clone(), i.publication.is_none() && i.state.hides())).collect();
        let inserted = self.store.schedule_new(items).await.map_err(ExpiryError::Store)?;
        let watermark = self.hidden.watermark();
        let mut n = 0;
        for ((item, hides), new) in notes.into_iter().zip(inserted) {
            if !new {
                continue;
            }
            n += 1;
            if hides && item.deadline <= watermark {
                self.hidden.insert_item(&item);
            }
        }
        self.stats.scheduled.fetch_add(n, Relaxed);
        self.wake.notify_one();
        self.promote.notify_one();
        Ok(n)
    }

    /// Records how an item ended (or why it waits), keeping the index in step: a kept post
    /// is served again, a purged one leaves the index; everything else stays hidden.
    pub async fn settle(&self, status_id: &str, outcome: Outcome) -> Result<bool, StoreError> {
        let unhide = matches!(outcome, Outcome::Kept(_) | Outcome::Gone | Outcome::Cancelled(_));
        let found = self.store.settle(status_id, outcome).await?;
        if unhide {
            self.hidden.remove(status_id);
        }
        Ok(found)
    }

    /// Records the author's keep flags; a kept item they no longer hold is hidden again
    /// until the scheduler has looked, and takes `token` (the author's, on the request
    /// that changed them) to delete it with.
    pub async fn set_flags(
        &self,
        status_id: &str,
        account: &str,
        flags: KeepFlags,
        token: Option<&Token>,
    ) -> Result<(), ExpiryError> {
        let cred = token.map(|t| self.sealer.seal(account, t)).transpose()?;
        self.store.set_flags(status_id, flags, cred).await?;
        if let Some(item) = self.store.lookup(status_id).await?
            && item.publication.is_none()
            && item.state.hides()
            && item.deadline <= self.hidden.watermark()
        {
            self.hidden.insert_item(&item);
        }
        self.wake.notify_one();
        Ok(())
    }

    /// A post that schedules nothing still shows the author's current token: if the
    /// account has deletions parked on a revoked one, they go again with this one.
    pub async fn offer_token(&self, account: &str, token: Option<&Token>) -> Result<(), ExpiryError> {
        let Some(token) = token else { return Ok(()) };
        let failed = self.store.list(Some(ExpiryState::Failed), 10_000).await.map_err(ExpiryError::Store)?;
        let id = self.sealer.credential_id(token);
        if !failed.iter().any(|f| f.account == account && f.credential.as_deref() != Some(id.as_str())) {
            return Ok(());
        }
        let cred = self.sealer.seal(account, token)?;
        if self.store.offer_credential(cred).await.map_err(ExpiryError::Store)? > 0 {
            self.wake.notify_one();
        }
        Ok(())
    }
}

/// `POST /admin/reload` and SIGHUP re-read the policies.
pub struct PolicyReload(pub Arc<Expiry>);

impl crate::admin::hooks::Reload for PolicyReload {
    fn name(&self) -> &'static str {
        "expiry_policies"
    }

    fn reload(&self) -> Result<String, String> {
        self.0.reload().map(|n| format!("{n} expiry rules")).map_err(|e| e.to_string())
    }
}

/// `GET /admin/expiry`: counts by state (and `gone`: purged), next due, how many posts are
/// hidden now, failures with reasons, each member's archive sweep;
/// `?state=pending&limit=50` lists items. `POST /admin/expiry/sweep` runs a sweep
/// (`pavise expiry sweep` uses it while the relay holds the store).
pub struct ExpiryAdmin {
    core: Arc<Expiry>,
    instance: Option<(Instance, Option<String>)>,
}

fn rfc3339(ms: UnixMs) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)).to_string()
}

fn item_json(s: &Scheduled) -> serde_json::Value {
    serde_json::json!({
        "status_id": s.status_id, "account": s.account, "rule": s.rule, "state": s.state.name(),
        "deadline": rfc3339(s.deadline), "next_attempt": rfc3339(s.next_attempt), "attempts": s.attempts,
        "reason": s.reason, "updated_at": rfc3339(s.updated_at),
        "awaiting_publication": s.publication.as_ref().map(|p| p.scheduled_id.clone()),
    })
}

fn sweep_json(s: &crate::store::SweepProgress) -> serde_json::Value {
    serde_json::json!({
        "account": s.account, "state": s.state.name(), "seen": s.seen, "scheduled": s.scheduled,
        "already_due": s.already_due, "started_at": rfc3339(s.started_at), "updated_at": rfc3339(s.updated_at),
        "finished_at": s.finished_at.map(rfc3339), "reason": s.reason,
    })
}

impl ExpiryAdmin {
    /// `instance` (with the instance's domain, if configured) enables the sweep endpoint.
    pub fn new(core: Arc<Expiry>, instance: Option<(Instance, Option<String>)>) -> ExpiryAdmin {
        ExpiryAdmin { core, instance }
    }

    async fn sweep(&self, body: &Bytes) -> Response {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct SweepRequest {
            account: String,
            token: String,
            #[serde(default)]
            dry_run: bool,
        }
        let Some((instance, host)) = &self.instance else {
            return json_error(StatusCode::NOT_FOUND, "sweep is not available here");
        };
        let req: SweepRequest = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => return json_error(StatusCode::BAD_REQUEST, &format!("sweep request: {e}")),
        };
        let token = Token::new(req.token);
        match sweep::run_sweep(&self.core, instance, host.as_deref(), &req.account, &token, req.dry_run).await {
            Ok(report) => crate::admin::hooks::json(StatusCode::OK, serde_json::to_value(report).unwrap_or_default()),
            Err(e) => json_error(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string()),
        }
    }

    pub async fn report(&self, state: Option<ExpiryState>, limit: usize) -> Result<serde_json::Value, StoreError> {
        let store = &self.core.store;
        let counts = store.counts().await?;
        let failures = store.list(Some(ExpiryState::Failed), 100).await?;
        let mut by_state = serde_json::to_value(&counts.by_state).unwrap_or_default();
        by_state["gone"] = counts.gone.into();
        let sweeps = store.sweeps().await?;
        let mut out = serde_json::json!({
            "counts": by_state,
            "hidden_now": self.core.hidden.len(),
            "sweeps": sweeps.iter().map(sweep_json).collect::<Vec<_>>(),
            "next_due": counts.next_due.map(rfc3339),
            "failures": failures.iter().map(item_json).collect::<Vec<_>>(),
            "credentials": store.credential_count().await?,
            "rules": self.core.policies().rules.iter().map(|r| serde_json::json!({"name": r.name, "after": r.after.to_string()})).collect::<Vec<_>>(),
        });
        if let Some(state) = state {
            let items = store.list(Some(state), limit).await?;
            out["items"] = items.iter().map(item_json).collect();
        }
        Ok(out)
    }
}

impl crate::admin::hooks::AdminHandler for ExpiryAdmin {
    fn prefix(&self) -> &'static str {
        "/admin/expiry"
    }

    fn handle<'a>(
        &'a self,
        method: &'a Method,
        path: &'a str,
        query: Option<&'a str>,
        body: Bytes,
    ) -> StageFuture<'a, Response> {
        Box::pin(async move {
            if method == Method::POST && path == "/admin/expiry/sweep" {
                return self.sweep(&body).await;
            }
            if method != Method::GET || path != "/admin/expiry" {
                return json_error(StatusCode::METHOD_NOT_ALLOWED, "GET only");
            }
            let mut state = None;
            let mut limit = 100usize;
            for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
                match k.as_ref() {
                    "state" => match ExpiryState::from_name(&v) {
                        Some(s) => state = Some(s),
                        None => return json_error(StatusCode::BAD_REQUEST, "unknown state"),
                    },
                    "limit" => limit = v.parse().unwrap_or(100).min(10_000),
                    _ => {}
                }
            }
            match self.report(state, limit).await {
                Ok(v) => crate::admin::hooks::json(StatusCode::OK, v),
                Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            }
        })
    }
}

impl crate::metrics::MetricsSource for Expiry {
    fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let s = &self.stats;
        for (name, help, v) in [
            ("scheduled", "Posts scheduled for deletion.", &s.scheduled),
            ("schedule_errors", "Posts whose schedule could not be recorded.", &s.schedule_errors),
            ("hidden", "Reads answered 410/404 because the post's deadline passed.", &s.hidden),
            ("filtered", "Answers from which hidden posts were cut out (lists, streams, feeds).", &s.filtered),
            ("deleted", "Posts whose DELETE the instance answered.", &s.deleted),
            ("confirmed", "Deleted posts confirmed gone from the instance, then purged.", &s.confirmed),
            ("published", "Scheduled posts found after their publication and scheduled.", &s.published),
            ("swept", "Posts read by archive sweeps.", &s.swept),
            ("kept", "Due posts a keep rule held.", &s.kept),
            ("failed", "Deletions parked until a person acts (revoked token, ...).", &s.failed),
            ("retried", "Deletion attempts that failed transiently and will be retried.", &s.retried),
            ("deferred", "Deletions postponed to stay inside the instance's rate limit.", &s.deferred),
            ("rejected_expires_in", "Status creations refused for a bad expires_in.", &s.rejected_expires_in),
        ] {
            let _ = writeln!(out, "# HELP pavise_expiry_{name}_total {help}");
            let _ = writeln!(out, "# TYPE pavise_expiry_{name}_total counter");
            let _ = writeln!(out, "pavise_expiry_{name}_total {}", v.load(Relaxed));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Red-team finding 1 (second pass): the key file beside the data let a seized data dir
    /// open itself. The default is beside the data dir now, never in it; a key put inside,
    /// under any spelling of the path, is refused outside development; an older version's
    /// key in the data dir is never silently replaced by a new one.
    #[test]
    fn the_key_file_lives_beside_the_data_dir_never_in_it() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let config = ExpiryConfig::default();
        let key = config.key_file(&data);
        assert_eq!(key, resolved(root.path()).join("data-expiry.key"));
        let warning = config.check_key_placement(&data, false).unwrap().unwrap();
        assert!(warning.contains("same filesystem"), "{warning}");
        assert_eq!(config.key_file(&root.path().join("data/")), key, "a trailing slash names the same dir");

        #[cfg(unix)]
        std::os::unix::fs::symlink(&data, root.path().join("link")).unwrap();
        let inside = [
            data.join("expiry.key"),
            root.path().join("elsewhere/../data/keys/expiry.key"),
            #[cfg(unix)]
            root.path().join("link/expiry.key"),
        ];
        for path in inside {
            let mut c = ExpiryConfig { key_file: Some(path.clone()), ..ExpiryConfig::default() };
            let refused = c.check_key_placement(&data, false).unwrap_err();
            assert!(refused.contains("inside the data dir") && refused.contains("PAVISE_EXPIRY_KEY_FILE"), "{refused}");
            let warned = c.check_key_placement(&data, true).unwrap().unwrap();
            assert!(warned.starts_with("INSECURE"), "direct egress is development: {warned}");
            c.allow_key_in_data_dir = true;
            assert!(c.check_key_placement(&data, false).unwrap().unwrap().starts_with("INSECURE"));
        }

        // An older version's default key, still in the data dir: the admin moves it.
        std::fs::write(data.join("expiry.key"), b"k").unwrap();
        let refused = config.check_key_placement(&data, false).unwrap_err();
        assert!(refused.contains("Move it to") && refused.contains("data-expiry.key"), "{refused}");
        let allowed = ExpiryConfig { allow_key_in_data_dir: true, ..ExpiryConfig::default() };
        assert_eq!(allowed.key_file(&data), data.join("expiry.key"), "tests keep theirs in the data dir");
        std::fs::write(&key, b"k").unwrap();
        assert!(config.check_key_placement(&data, false).is_ok(), "moved: the old copy is the admin's to wipe");
    }
}
