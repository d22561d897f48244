//! `pavise expiry list` and `pavise expiry sweep`.
//!
//! While pavise runs it holds the store open (redb takes an exclusive lock), so both
//! commands talk to the running relay's admin API first, with the admin token file; when
//! nothing answers there, they open the store themselves.

use std::{fmt::Write as _, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

use super::{Expiry, ExpiryAdmin, ExpiryError, instance::Instance, seal::Sealer, seal::Token};
use crate::{
    config::Config,
    store::{EmbeddedStore, ExpiryState, Scheduled, Store, now_ms},
};

/// The longest sweep: 40 statuses a page.
const MAX_PAGES: usize = 5_000;

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

/// Pages through the account's statuses (40 a page, Mastodon's cap; pausing when the
/// paging budget runs low), applies the policies, schedules what matches.
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
    let now = now_ms();
    let cred = core.sealer.seal(&username, token)?;
    let mut report = SweepReport { account: username.clone(), dry_run, ..Default::default() };
    let mut max_id: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let (page, rate) = instance.account_statuses(&account_id, max_id.as_deref(), host, token).await?;
        let Some(last) = page.last().and_then(|s| s.get("id")).and_then(|i| i.as_str()).map(str::to_owned) else {
            break;
        };
        let mut batch: Vec<(Scheduled, Option<crate::store::SealedCredential>)> = Vec::new();
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
            }
            if dry_run {
                report.items.push((item.status_id.clone(), item.rule.clone(), super::rfc3339(item.deadline)));
            } else {
                batch.push((item, Some(cred.clone())));
            }
        }
        if !batch.is_empty() {
            core.store.schedule(batch).await.map_err(ExpiryError::Store)?;
            core.wake.notify_one();
        }
        max_id = Some(last);
        // Mastodon's paging throttle (300 per 15 min per user): leave some for the user.
        if let (Some(remaining), Some(reset)) = (rate.remaining, rate.reset)
            && remaining <= 10
        {
            let wait = reset.saturating_sub(now_ms()).min(15 * 60 * 1000);
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
    }
    Ok(report)
}

async fn admin_call(
    config: &Config,
    method: http::Method,
    path_query: &str,
    body: Option<serde_json::Value>,
) -> Option<Result<serde_json::Value, String>> {
    let token = std::fs::read_to_string(config.admin_token_file()).ok()?;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = http::Request::builder()
        .method(method)
        .uri(format!("http://{}{}", config.file.admin.listen, path_query))
        .header(http::header::AUTHORIZATION, format!("Bearer {}", token.trim()))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.map(|b| b.to_string()).unwrap_or_default())))
        .ok()?;
    // Nothing listening: the relay is not running; the caller opens the store itself.
    let resp = tokio::time::timeout(Duration::from_secs(600), client.request(req)).await.ok()?.ok()?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await.ok()?.to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    Some(if status.is_success() {
        Ok(v)
    } else {
        Err(v.get("error").and_then(|e| e.as_str()).unwrap_or("admin API error").to_owned())
    })
}

fn local_core(config: &Config) -> Result<Arc<Expiry>, ExpiryError> {
    let store: Arc<dyn Store> =
        Arc::new(EmbeddedStore::open(&config.file.data_dir, config.file.expiry.store_cache.0 as usize)?);
    let sealer = Sealer::load_or_create(&config.file.expiry.key_file(&config.file.data_dir))?;
    Ok(Arc::new(Expiry::new(store, config.file.policies.clone(), sealer, config.file.expiry.clone())?))
}

/// `pavise expiry list`.
pub async fn list(config: &Config, state: &str, limit: usize) -> Result<String, ExpiryError> {
    let parsed = ExpiryState::from_name(state).ok_or_else(|| {
        ExpiryError::Invalid(format!(
            "unknown state {state:?}; use pending, claimed, deleted, kept, failed or cancelled"
        ))
    })?;
    let report = match admin_call(
        config,
        http::Method::GET,
        &format!("/admin/expiry?state={state}&limit={limit}"),
        None,
    )
    .await
    {
        Some(r) => r.map_err(ExpiryError::Invalid)?,
        None => {
            let core = local_core(config)?;
            ExpiryAdmin::new(core, None).report(Some(parsed), limit).await?
        }
    };
    let mut out = String::new();
    let _ = writeln!(out, "counts: {}", report["counts"]);
    let _ = writeln!(out, "next due: {}", report["next_due"].as_str().unwrap_or("nothing pending"));
    let _ = writeln!(out, "sealed credentials: {}", report["credentials"]);
    let failures = report["failures"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(out, "failures: {}", failures.len());
    for f in &failures {
        let _ = writeln!(
            out,
            "  {} @{} rule {}: {}",
            f["status_id"],
            f["account"].as_str().unwrap_or(""),
            f["rule"],
            f["reason"]
        );
    }
    let items = report["items"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(out, "{state} ({} shown):", items.len());
    for i in &items {
        let _ = writeln!(
            out,
            "  {}  @{}  rule {}  deadline {}  next {}  attempts {}{}",
            i["status_id"].as_str().unwrap_or(""),
            i["account"].as_str().unwrap_or(""),
            i["rule"],
            i["deadline"].as_str().unwrap_or(""),
            i["next_attempt"].as_str().unwrap_or(""),
            i["attempts"],
            i["reason"].as_str().map(|r| format!("  ({r})")).unwrap_or_default()
        );
    }
    Ok(out)
}

/// `pavise expiry sweep`.
pub async fn sweep(config: &Config, account: &str, token: Token, dry_run: bool) -> Result<String, ExpiryError> {
    let body = serde_json::json!({ "account": account, "token": token.expose(), "dry_run": dry_run });
    if let Some(r) = admin_call(config, http::Method::POST, "/admin/expiry/sweep", Some(body)).await {
        let v = r.map_err(ExpiryError::Invalid)?;
        let report: SweepReport = serde_json::from_value(v).map_err(|e| ExpiryError::Invalid(e.to_string()))?;
        return Ok(report.render());
    }
    let core = local_core(config)?;
    let instance = Instance::new(config.upstream.authority.clone(), config.file.expiry.request_timeout.get());
    let report = run_sweep(&core, &instance, config.file.local_domain.as_deref(), account, &token, dry_run).await?;
    Ok(report.render())
}

/// `pavise expiry bench-store` (hidden; driven by `scripts/bench-expiry`): schedule
/// inserts per second into the embedded store three ways — one client at a time (one
/// fsync each), 64 concurrent clients (status creations arriving together: the writer
/// group-commits them) and batches of 1,000 (a sweep) — then fills the store to `count`
/// pending deletions for the script's memory and restart measurements.
pub async fn bench_store(dir: &std::path::Path, count: u64) -> Result<String, ExpiryError> {
    use crate::store::{ScheduleStore, SealedCredential};
    use std::time::Instant;
    fn item(i: u64, base: u64) -> Scheduled {
        let mut s = Scheduled::pending(
            format!("{}", 110_000_000_000_000u64 + i),
            "alice",
            "direct-messages",
            base,
            base + 30 * 86_400_000 + i,
        );
        s.credential = Some("c0ffee".into());
        s.host = Some("example.social".into());
        s
    }
    fn cred() -> SealedCredential {
        SealedCredential { id: "c0ffee".into(), account: "alice".into(), sealed: vec![7; 60] }
    }
    let mut out = String::new();
    let store = Arc::new(EmbeddedStore::open(dir, 16 << 20)?);
    let base = now_ms();
    store.schedule(vec![(item(0, base), Some(cred()))]).await?;
    let mut next = 1u64;

    let n = 500;
    let t = Instant::now();
    for _ in 0..n {
        store.schedule(vec![(item(next, base), Some(cred()))]).await?;
        next += 1;
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    let _ = writeln!(out, "serial single inserts:      {n:>8} in {:>8.2?} = {rate:>9.0}/s", t.elapsed());

    let (clients, per) = (64u64, 500u64);
    let t = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let store = store.clone();
        let start = next + c * per;
        tasks.push(tokio::spawn(async move {
            for i in start..start + per {
                store.schedule(vec![(item(i, base), Some(cred()))]).await?;
            }
            Ok::<_, crate::store::StoreError>(())
        }));
    }
    for task in tasks {
        task.await.map_err(|e| ExpiryError::Invalid(e.to_string()))??;
    }
    next += clients * per;
    let rate = (clients * per) as f64 / t.elapsed().as_secs_f64();
    let _ = writeln!(out, "64 concurrent clients:      {:>8} in {:>8.2?} = {rate:>9.0}/s", clients * per, t.elapsed());

    let t = Instant::now();
    let first = next;
    while next < count {
        let end = (next + 1000).min(count);
        store.schedule((next..end).map(|i| (item(i, base), Some(cred()))).collect()).await?;
        next = end;
    }
    if next > first {
        let rate = (next - first) as f64 / t.elapsed().as_secs_f64();
        let _ =
            writeln!(out, "batched (1000 per commit):  {:>8} in {:>8.2?} = {rate:>9.0}/s", next - first, t.elapsed());
    }
    let counts = store.counts().await?;
    let _ = writeln!(out, "pending now: {}", counts.by_state.get("pending").copied().unwrap_or(0));
    let size = std::fs::metadata(store.path()).map(|m| m.len()).unwrap_or(0);
    let _ = writeln!(out, "store file: {:.1} MiB", size as f64 / f64::from(1u32 << 20));
    Ok(out)
}
