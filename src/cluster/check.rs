//! `pavise check`'s `[cluster]` section: connects to both servers as `run` would, and says
//! what it found (server versions, schema version, Redis persistence), without writing
//! anything (no migration, no key).

use std::fmt::Write as _;

use super::{ClusterConfig, redis::Persistence};
use crate::store::postgres::{SCHEMA_VERSION, redacted};

/// The section's text, or why `run` would refuse this cluster.
pub async fn summary(cfg: &ClusterConfig) -> Result<String, String> {
    let mut out = String::new();
    if !cfg.enabled() {
        let _ = writeln!(out, "cluster: off (one node: the embedded store, in-process counters)");
        return Ok(out);
    }
    let _ = writeln!(out, "cluster: node {:?}", cfg.node_name());

    let pg_url = cfg.postgres.clone().unwrap_or_default();
    let pg_cfg: tokio_postgres::Config = pg_url.parse().map_err(|e| format!("cluster.postgres: {e}"))?;
    let (client, conn) = tokio::time::timeout(std::time::Duration::from_secs(5), pg_cfg.connect(tokio_postgres::NoTls))
        .await
        .map_err(|_| format!("cluster.postgres {}: no answer within 5s", redacted(&pg_url)))?
        .map_err(|e| format!("cluster.postgres {}: {e}", redacted(&pg_url)))?;
    let conn = tokio::spawn(conn);
    let q = |e: tokio_postgres::Error| format!("cluster.postgres: {e}");
    let version: String = client.query_one("SHOW server_version", &[]).await.map_err(q)?.get(0);
    let has_schema: bool =
        client.query_one("SELECT to_regclass('pavise_schema') IS NOT NULL", &[]).await.map_err(q)?.get(0);
    let schema = if has_schema {
        client.query_opt("SELECT version FROM pavise_schema", &[]).await.map_err(q)?.map(|r| r.get::<_, i32>(0))
    } else {
        None
    };
    let schema_text = match schema {
        None => format!("none yet (pavise creates version {SCHEMA_VERSION} at the first `run`)"),
        Some(v) if v == SCHEMA_VERSION => format!("{v} (current)"),
        Some(v) if v < SCHEMA_VERSION => format!("{v} (migrated to {SCHEMA_VERSION} at the next `run`)"),
        Some(v) => {
            return Err(format!("cluster.postgres: schema version {v} is newer than this pavise's ({SCHEMA_VERSION})"));
        }
    };
    let _ = writeln!(out, "  postgresql {}: server {version}, schema {schema_text}", redacted(&pg_url));
    drop(client);
    conn.abort();

    let redis_url = cfg.redis.clone().unwrap_or_default();
    let shown = super::redis::redacted(&redis_url);
    let client = redis::Client::open(redis_url.as_str()).map_err(|e| format!("cluster.redis: {e}"))?;
    let mut conn = tokio::time::timeout(std::time::Duration::from_secs(5), client.get_multiplexed_async_connection())
        .await
        .map_err(|_| format!("cluster.redis {shown}: no answer within 5s"))?
        .map_err(|e| format!("cluster.redis {shown}: {e}"))?;
    let info: String = redis::cmd("INFO").arg("server").query_async(&mut conn).await.map_err(|e| e.to_string())?;
    let version = info.lines().find_map(|l| l.strip_prefix("redis_version:")).unwrap_or("unknown").trim().to_owned();
    let save: Result<Vec<String>, _> = redis::cmd("CONFIG").arg("GET").arg("save").query_async(&mut conn).await;
    let aof: Result<Vec<String>, _> = redis::cmd("CONFIG").arg("GET").arg("appendonly").query_async(&mut conn).await;
    let persistence = match (save, aof) {
        (Ok(s), Ok(a)) if s.len() >= 2 && a.len() >= 2 => {
            Some(Persistence { save: s[1].clone(), appendonly: a[1].eq_ignore_ascii_case("yes") })
        }
        _ => None,
    };
    let verdict = match &persistence {
        Some(p) if !p.persists() => format!("persistence {}: the pseudonym key stays in memory", p.describe()),
        Some(p) if cfg.allow_persistent_redis => {
            format!(
                "persistence {} — allowed (cluster.allow_persistent_redis): the pseudonym key reaches that disk",
                p.describe()
            )
        }
        Some(p) => {
            return Err(format!(
                "cluster.redis {shown}: persistence {}; `pavise run` refuses it (the pseudonym key would be written \
                 to disk); turn persistence off or set cluster.allow_persistent_redis = true",
                p.describe()
            ));
        }
        None if cfg.allow_persistent_redis => "persistence unknown (CONFIG GET refused) — allowed by config".into(),
        None => {
            return Err(format!(
                "cluster.redis {shown}: CONFIG GET refused, persistence unknown; `pavise run` refuses it unless \
                 cluster.allow_persistent_redis = true"
            ));
        }
    };
    let _ = writeln!(out, "  redis {shown}: server {version}, {verdict}");
    let _ = writeln!(out, "  every node needs the same expiry key file (expiry.key_file) and the same pavise build");
    Ok(out)
}
