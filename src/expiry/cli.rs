//! `pavise expiry list` and `pavise expiry sweep`.
//!
//! While pavise runs it holds the store open (redb takes an exclusive lock), so both
//! commands talk to the running relay's admin API first, with the admin token file; when
//! nothing answers there, they open the store themselves: with `[cluster]` on, the
//! schedule is PostgreSQL's (this node's redb file is only a journal of what PostgreSQL
//! missed, replayed when the node next runs), so that is what they open.

use std::{fmt::Write as _, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

use super::{Expiry, ExpiryAdmin, ExpiryConfig, ExpiryError, instance::Instance, seal::Sealer, seal::Token};
use crate::store::{EmbeddedStore, ExpiryState, Scheduled, Store, now_ms, postgres::PostgresStore};

/// What the commands need of the configuration (the composition of `main` gathers it,
/// as the relay's gathers each feature's): where the running relay's admin API is, and
/// else where the store, its key and the policies are.
#[derive(Debug, Clone)]
pub struct CliSetup {
    pub expiry: ExpiryConfig,
    pub admin_listen: std::net::SocketAddr,
    pub admin_token_file: std::path::PathBuf,
    pub data_dir: std::path::PathBuf,
    pub policies: std::path::PathBuf,
    /// The instance (`upstream`) and its `LOCAL_DOMAIN`, for a sweep run here.
    pub instance: http::uri::Authority,
    pub local_domain: Option<String>,
    /// `[cluster]`'s PostgreSQL, when the cluster is on.
    pub postgres: Option<ClusterStore>,
}

/// The cluster's shared store, as a command opens it.
#[derive(Debug, Clone)]
pub struct ClusterStore {
    pub url: String,
    /// The name this node claims under (a command claims nothing, but says who it is).
    pub node: String,
}

pub use super::sweep::{SweepReport, run_sweep};

async fn admin_call(
    config: &CliSetup,
    method: http::Method,
    path_query: &str,
    body: Option<serde_json::Value>,
) -> Option<Result<serde_json::Value, String>> {
    let token = std::fs::read_to_string(&config.admin_token_file).ok()?;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = http::Request::builder()
        .method(method)
        .uri(format!("http://{}{}", config.admin_listen, path_query))
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

async fn local_core(config: &CliSetup) -> Result<Arc<Expiry>, ExpiryError> {
    let sealer = Sealer::load_or_create(&config.expiry.key_file(&config.data_dir))?;
    let store: Arc<dyn Store> = match &config.postgres {
        Some(pg) => Arc::new(PostgresStore::connect(&pg.url, &sealer.store_key(), &pg.node).await?),
        None => {
            let opts = crate::store::StoreOptions {
                cache_bytes: config.expiry.store_cache.0 as usize,
                forget_within: config.expiry.forget_within.get(),
            };
            Arc::new(EmbeddedStore::open_with(&config.data_dir, opts, Some(sealer.store_key()))?)
        }
    };
    Ok(Arc::new(Expiry::new(store, config.policies.clone(), sealer, config.expiry.clone())?))
}

/// `pavise expiry list`.
pub async fn list(config: &CliSetup, state: &str, limit: usize) -> Result<String, ExpiryError> {
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
            let core = local_core(config).await?;
            ExpiryAdmin::new(core, None).report(Some(parsed), limit).await?
        }
    };
    let mut out = String::new();
    let _ = writeln!(out, "counts: {}", report["counts"]);
    let _ = writeln!(out, "hidden now: {}", report["hidden_now"]);
    let _ = writeln!(out, "next due: {}", report["next_due"].as_str().unwrap_or("nothing pending"));
    let sweeps = report["sweeps"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(out, "archive sweeps: {}", sweeps.len());
    for s in &sweeps {
        let _ = writeln!(
            out,
            "  @{}  {}  seen {}  scheduled {}  already due {}  started {}{}{}",
            s["account"].as_str().unwrap_or(""),
            s["state"].as_str().unwrap_or(""),
            s["seen"],
            s["scheduled"],
            s["already_due"],
            s["started_at"].as_str().unwrap_or(""),
            s["finished_at"].as_str().map(|f| format!("  finished {f}")).unwrap_or_default(),
            s["reason"].as_str().map(|r| format!("  ({r})")).unwrap_or_default()
        );
    }
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
pub async fn sweep(config: &CliSetup, account: &str, token: Token, dry_run: bool) -> Result<String, ExpiryError> {
    let body = serde_json::json!({ "account": account, "token": token.expose(), "dry_run": dry_run });
    if let Some(r) = admin_call(config, http::Method::POST, "/admin/expiry/sweep", Some(body)).await {
        let v = r.map_err(ExpiryError::Invalid)?;
        let report: SweepReport = serde_json::from_value(v).map_err(|e| ExpiryError::Invalid(e.to_string()))?;
        return Ok(report.render());
    }
    let core = local_core(config).await?;
    let instance = Instance::new(config.instance.clone(), config.expiry.request_timeout.get());
    let report = run_sweep(&core, &instance, config.local_domain.as_deref(), account, &token, dry_run).await?;
    Ok(report.render())
}

/// `pavise expiry bench-store` (hidden; driven by `scripts/bench-expiry`): schedule
/// inserts per second into the embedded (sealed) store three ways — one client at a time (one
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
    // Sealed, as the relay keeps it, under the key file `pavise run --data-dir DIR` will use.
    let sealer = Sealer::load_or_create(&super::ExpiryConfig::default().key_file(dir))?;
    let store = Arc::new(EmbeddedStore::open_sealed(dir, 16 << 20, sealer.store_key())?);
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
