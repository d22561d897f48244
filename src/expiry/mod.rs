//! Ephemeral posts: policy-file expiry, per-post `expires_in`, crash-safe deletion.
//!
//! An at-risk member's old posts, above all old direct messages, are evidence waiting to
//! be mined. Pavise deletes them on a schedule the admin writes (`policies/*.toml`,
//! [`policy`]) or the author asks for (`expires_in`, [`edge`]), through the instance's own
//! API so the instance federates the `Delete` to every server that has a copy.
//!
//! ```text
//!  request:  ExpiryStage ─ hidden? → 410/404 at once          (edge)
//!                        ─ POST /api/v1/statuses: strip expires_in (edge)
//!  response: ExpiryStage ◄ Status JSON → rule → store.schedule (observe; durable before
//!                                          the client sees its post)
//!  background: scheduler ─ claim due ─ re-fetch, re-check keep ─ DELETE (instance)
//! ```
//! The author's token is sealed ([`seal`]) and stored once per token; the schedule lives in
//! the [`crate::store::Store`], so a restart (or `kill -9`) resumes where it stopped.

pub mod cli;
pub mod edge;
pub mod instance;
pub mod observe;
pub mod policy;
pub mod scheduler;
pub mod seal;

use std::{
    path::PathBuf,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
};

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, header};
use http_body_util::BodyExt;
use serde::Deserialize;
use tokio::sync::Notify;

use crate::{
    proxy::{
        Flow, ProxyError, Request, RequestCtx, Response, RouteClass, Stage, StageFuture, error::json_error, full,
        pipeline::BodyCapExceeded,
    },
    store::{ExpiryState, KeepFlags, Outcome, Scheduled, Store, StoreError, UnixMs, now_ms},
    units::{Size, Span},
};

use instance::Instance;
use observe::StatusAction;
use policy::{Policies, PolicyError, PostFacts};
use seal::{SealError, Sealer, Token};

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
    /// The key that seals authors' tokens. Default `<data_dir>/expiry.key`; put it on
    /// another disk (or a tmpfs filled at boot) so a seized data dir is not enough.
    pub key_file: Option<PathBuf>,
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
}

impl Default for ExpiryConfig {
    fn default() -> Self {
        ExpiryConfig {
            enabled: true,
            key_file: None,
            min_expires_in: Span::secs(60),
            reserve_deletes: 5,
            lease: Span::secs(300),
            request_timeout: Span::secs(30),
            backoff: Span::secs(30),
            max_backoff: Span::secs(3600),
            store_cache: Size(16 << 20),
        }
    }
}

impl ExpiryConfig {
    pub fn key_file(&self, data_dir: &std::path::Path) -> PathBuf {
        self.key_file.clone().unwrap_or_else(|| data_dir.join("expiry.key"))
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    pub scheduled: AtomicU64,
    pub schedule_errors: AtomicU64,
    pub hidden: AtomicU64,
    pub deleted: AtomicU64,
    pub kept: AtomicU64,
    pub failed: AtomicU64,
    pub retried: AtomicU64,
    pub deferred: AtomicU64,
    pub rejected_expires_in: AtomicU64,
}

/// The shared core: store, policies, sealer; used by the stage, the scheduler and admin.
pub struct Expiry {
    pub store: Arc<dyn Store>,
    policies: RwLock<Arc<Policies>>,
    policy_dir: PathBuf,
    pub sealer: Sealer,
    pub config: ExpiryConfig,
    /// Wakes the scheduler when something new may be due sooner than it planned.
    pub wake: Notify,
    pub stats: Stats,
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
        Ok(Expiry {
            store,
            policies: RwLock::new(Arc::new(policies)),
            policy_dir,
            sealer,
            config,
            wake: Notify::new(),
            stats: Stats::default(),
        })
    }

    pub fn policies(&self) -> Arc<Policies> {
        self.policies.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Re-reads the policy directory; on error the previous rules stay in force.
    pub fn reload(&self) -> Result<usize, PolicyError> {
        let fresh = Policies::load_dir(&self.policy_dir)?;
        let n = fresh.rules.len();
        *self.policies.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(fresh);
        Ok(n)
    }

    /// Whether a status must not be served any more (deadline passed, not kept).
    pub fn is_hidden(item: &Scheduled, now: UnixMs) -> bool {
        item.deadline <= now
            && matches!(
                item.state,
                ExpiryState::Pending | ExpiryState::Claimed | ExpiryState::Deleted | ExpiryState::Failed
            )
    }

    /// The item a post gets, if any: an explicit `expires_in` wins over the policies.
    pub fn plan(&self, post: &PostFacts, expires_in: Option<u64>, now: UnixMs) -> Option<Scheduled> {
        let created = post.created_at.unwrap_or(now);
        let (rule, deadline) = match expires_in {
            // Counted from when pavise saw the answer: the author's clock, not the instance's.
            Some(secs) => (EXPIRES_IN_RULE.to_owned(), now.saturating_add(secs.saturating_mul(1000))),
            None => {
                let policies = self.policies();
                let rule = policies.evaluate(post)?;
                (rule.name.clone(), created.saturating_add(rule.after.get().as_millis() as u64))
            }
        };
        let mut item = Scheduled::pending(&post.id, &post.account, rule, created, deadline);
        item.flags = KeepFlags { pinned: post.pinned, favourited: post.favourited, bookmarked: post.bookmarked };
        Some(item)
    }

    /// Seals `token` for `account` and schedules `item` with it, durably.
    pub async fn schedule(&self, mut item: Scheduled, account: &str, token: Option<&Token>) -> Result<(), ExpiryError> {
        let cred = match token {
            Some(t) => Some(self.sealer.seal(account, t)?),
            None => None,
        };
        item.credential = cred.as_ref().map(|c| c.id.clone());
        self.store.schedule(vec![(item, cred)]).await.map_err(ExpiryError::Store)?;
        self.stats.scheduled.fetch_add(1, Relaxed);
        self.wake.notify_one();
        Ok(())
    }
}

impl Expiry {
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

/// What the request phase hands to the response phase.
#[derive(Clone)]
enum Pending {
    Create { token: Option<Token>, expires_in: Option<u64>, host: Option<String> },
    Edit { token: Option<Token>, status_id: String },
    Action { token: Option<Token>, status_id: String, action: StatusAction },
}

/// The pipeline stage: edge enforcement on the way in, observation on the way out.
pub struct ExpiryStage {
    core: Arc<Expiry>,
}

impl ExpiryStage {
    pub fn new(core: Arc<Expiry>) -> ExpiryStage {
        ExpiryStage { core }
    }
}

fn bearer(req: &Request) -> Option<Token> {
    req.headers().get(header::AUTHORIZATION).and_then(Token::from_authorization)
}

/// A capped body's error as the relay's error.
fn body_error(e: &crate::proxy::BoxError) -> ProxyError {
    match e.downcast_ref::<BodyCapExceeded>() {
        Some(cap) => ProxyError::BodyTooLarge { limit: cap.0 },
        None => ProxyError::BadRequest("the request body could not be read".into()),
    }
}

impl Stage for ExpiryStage {
    fn name(&self) -> &'static str {
        "expiry"
    }

    fn on_request<'a>(&'a self, ctx: &'a mut RequestCtx, req: Request) -> StageFuture<'a, Result<Flow, ProxyError>> {
        Box::pin(async move {
            // Most requests (the web UI, timelines, media, federation) concern no single
            // status: they pass without a copy of anything.
            let concerns_a_status = match ctx.route.class {
                RouteClass::StatusRead | RouteClass::ActivityPubObject | RouteClass::StatusCreate => true,
                _ => ctx.route.status_id.is_some(),
            };
            if !concerns_a_status {
                return Ok(Flow::Continue(req));
            }
            let method = req.method().clone();
            let status_id = ctx.route.status_id.clone();
            let is_read = method == Method::GET || method == Method::HEAD;

            // A status past its deadline is hidden on every read of it, under any spelling
            // of its URL (the route carries the id as ActiveRecord reads it).
            if is_read
                && ctx.route.class != RouteClass::StatusCreate
                && let Some(id) = &status_id
            {
                match self.core.store.lookup(id).await {
                    Ok(Some(item)) if Expiry::is_hidden(&item, now_ms()) => {
                        self.core.stats.hidden.fetch_add(1, Relaxed);
                        let code = edge::hidden_status_code(ctx.route.path.as_str());
                        let msg = if code == StatusCode::GONE { "Gone" } else { "Record not found" };
                        return Ok(Flow::Respond(json_error(code, msg)));
                    }
                    Ok(_) => {}
                    // Failing open would serve an expired post; failing closed hides a live one
                    // for a moment. The store being unreadable is rare and loud: refuse.
                    Err(e) => return Err(ProxyError::Internal(format!("expiry store: {e}"))),
                }
            }

            match (ctx.route.class, &method, &status_id) {
                (RouteClass::StatusCreate, &Method::POST, None) => {
                    let token = bearer(&req);
                    let (mut parts, body) = req.into_parts();
                    // The response must be readable JSON, not a compressed stream.
                    parts.headers.remove(header::ACCEPT_ENCODING);
                    let kind = edge::BodyKind::from_content_type(
                        parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()),
                    );
                    let bytes = body.collect().await.map_err(|e| body_error(&e))?.to_bytes();
                    let min = self.core.config.min_expires_in.get().as_secs();
                    let (bytes, expires_in) = match edge::take_expires_in(kind, &bytes, min) {
                        Ok(ok) => ok,
                        Err(e) => {
                            self.core.stats.rejected_expires_in.fetch_add(1, Relaxed);
                            return Ok(Flow::Respond(json_error(
                                StatusCode::UNPROCESSABLE_ENTITY,
                                &format!("Validation failed: {e}"),
                            )));
                        }
                    };
                    parts.headers.remove(header::TRANSFER_ENCODING);
                    parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
                    ctx.extensions.insert(Pending::Create { token, expires_in, host: ctx.host.clone() });
                    Ok(Flow::Continue(http::Request::from_parts(parts, full(bytes))))
                }
                (RouteClass::StatusCreate, &Method::PUT, Some(id)) => {
                    let token = bearer(&req);
                    let (mut parts, body) = req.into_parts();
                    parts.headers.remove(header::ACCEPT_ENCODING);
                    ctx.extensions.insert(Pending::Edit { token, status_id: id.clone() });
                    Ok(Flow::Continue(http::Request::from_parts(parts, body)))
                }
                (RouteClass::Api, m, Some(id)) if ctx.route.path.as_str().starts_with("/api/v1/statuses/") => {
                    let action = match (m, ctx.route.status_action.as_deref()) {
                        (&Method::DELETE, None) => Some(StatusAction::Delete),
                        (&Method::POST, Some(segment)) => StatusAction::from_segment(segment),
                        _ => None,
                    };
                    if let Some(action) = action {
                        ctx.extensions.insert(Pending::Action { token: bearer(&req), status_id: id.clone(), action });
                    }
                    Ok(Flow::Continue(req))
                }
                _ => Ok(Flow::Continue(req)),
            }
        })
    }

    fn on_response<'a>(
        &'a self,
        ctx: &'a mut RequestCtx,
        resp: Response,
    ) -> StageFuture<'a, Result<Response, ProxyError>> {
        Box::pin(async move {
            let Some(pending) = ctx.extensions.remove::<Pending>() else { return Ok(resp) };
            if !resp.status().is_success() {
                return Ok(resp);
            }
            match pending {
                Pending::Action { token, status_id, action } => {
                    self.observe_action(token.as_ref(), &status_id, action).await;
                    Ok(resp)
                }
                Pending::Create { token, expires_in, host } => {
                    self.observe_status(resp, token, expires_in, host, None).await
                }
                Pending::Edit { token, status_id } => {
                    let host = ctx.host.clone();
                    self.observe_status(resp, token, None, host, Some(status_id)).await
                }
            }
        })
    }
}

impl ExpiryStage {
    /// Reads the Status JSON, schedules (durably) what a rule or `expires_in` asks for,
    /// and only then hands the response back.
    async fn observe_status(
        &self,
        resp: Response,
        token: Option<Token>,
        expires_in: Option<u64>,
        host: Option<String>,
        edited: Option<String>,
    ) -> Result<Response, ProxyError> {
        if resp.headers().get(header::CONTENT_ENCODING).is_some_and(|v| v != "identity") {
            tracing::warn!("a status answer came back compressed; cannot read it to schedule expiry");
            return Ok(resp);
        }
        let (parts, body) = resp.into_parts();
        // The instance's own answer to a status creation: small, and from a trusted peer.
        let bytes = match body.collect().await {
            Ok(c) => c.to_bytes(),
            Err(e) => return Err(ProxyError::Internal(format!("reading the instance's answer: {e}"))),
        };
        let rebuilt = |bytes: Bytes| http::Response::from_parts(parts, full(bytes));
        let Some(post) =
            serde_json::from_slice::<serde_json::Value>(&bytes).ok().as_ref().and_then(observe::facts_from_status)
        else {
            // A scheduled status (no account yet) or something unexpected: nothing to learn.
            return Ok(rebuilt(bytes));
        };
        let result = self.record(&post, token.as_ref(), expires_in, host, edited.is_some()).await;
        if let Err(e) = result {
            self.core.stats.schedule_errors.fetch_add(1, Relaxed);
            tracing::error!(error = %e, "could not record a post's expiry; the post was created but will not expire");
            return Err(ProxyError::Internal(
                "the post was created, but its expiry could not be recorded; delete it or try again".into(),
            ));
        }
        Ok(rebuilt(bytes))
    }

    async fn record(
        &self,
        post: &PostFacts,
        token: Option<&Token>,
        expires_in: Option<u64>,
        host: Option<String>,
        edited: bool,
    ) -> Result<(), ExpiryError> {
        let now = now_ms();
        if edited {
            let existing = self.core.store.lookup(&post.id).await.map_err(ExpiryError::Store)?;
            if existing.as_ref().is_some_and(|e| e.rule == EXPIRES_IN_RULE) {
                return Ok(()); // the author's own deadline stands
            }
            if let Some(mut item) = self.core.plan(post, None, now) {
                if let Some(e) = &existing {
                    item.flags = e.flags;
                }
                item.host = host;
                return self.core.schedule(item, &post.account, token).await;
            }
            if existing.is_some() {
                let why = Outcome::Cancelled("edited; no rule matches any more".into());
                self.core.store.settle(&post.id, why).await.map_err(ExpiryError::Store)?;
            }
            return Ok(());
        }
        match self.core.plan(post, expires_in, now) {
            Some(mut item) => {
                item.host = host;
                self.core.schedule(item, &post.account, token).await
            }
            None => self.core.offer_token(&post.account, token).await,
        }
    }

    async fn observe_action(&self, token: Option<&Token>, status_id: &str, action: StatusAction) {
        let Ok(Some(item)) = self.core.store.lookup(status_id).await else { return };
        let result = match action {
            StatusAction::Delete => {
                self.core.store.settle(status_id, Outcome::Cancelled("deleted by its author".into())).await.map(|_| ())
            }
            StatusAction::Pin(on) | StatusAction::Favourite(on) | StatusAction::Bookmark(on) => {
                // Only the author's own pin/favourite/bookmark are keep conditions.
                let Some(token) = token else { return };
                let id = self.core.sealer.credential_id(token);
                let is_author = item.credential.as_deref() == Some(id.as_str())
                    || matches!(self.core.store.credential(&id).await, Ok(Some(c)) if c.account == item.account);
                if !is_author {
                    return;
                }
                let mut flags = item.flags;
                match action {
                    StatusAction::Pin(_) => flags.pinned = on,
                    StatusAction::Favourite(_) => flags.favourited = on,
                    _ => flags.bookmarked = on,
                }
                let r = self.core.store.set_flags(status_id, flags).await.map(|_| ());
                self.core.wake.notify_one();
                r
            }
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not record a status action for expiry");
        }
    }
}

/// `POST /admin/reload` and SIGHUP re-read the policies.
pub struct PolicyReload(pub Arc<Expiry>);

impl crate::admin::Reload for PolicyReload {
    fn name(&self) -> &'static str {
        "expiry_policies"
    }

    fn reload(&self) -> Result<String, String> {
        self.0.reload().map(|n| format!("{n} expiry rules")).map_err(|e| e.to_string())
    }
}

/// `GET /admin/expiry`: counts by state, next due, failures with reasons;
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
        match cli::run_sweep(&self.core, instance, host.as_deref(), &req.account, &token, req.dry_run).await {
            Ok(report) => crate::admin::json(StatusCode::OK, serde_json::to_value(report).unwrap_or_default()),
            Err(e) => json_error(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string()),
        }
    }

    pub async fn report(&self, state: Option<ExpiryState>, limit: usize) -> Result<serde_json::Value, StoreError> {
        let store = &self.core.store;
        let counts = store.counts().await?;
        let failures = store.list(Some(ExpiryState::Failed), 100).await?;
        let mut out = serde_json::json!({
            "counts": counts.by_state,
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

impl crate::admin::AdminHandler for ExpiryAdmin {
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
                Ok(v) => crate::admin::json(StatusCode::OK, v),
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
            ("deleted", "Posts deleted through the instance's API (or found already gone).", &s.deleted),
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
