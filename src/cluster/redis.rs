//! Redis: what the nodes must share and decide fast — limit budgets, wave windows, active
//! shields and the pseudonym key.
//!
//! **Why redis-rs** (with its `ConnectionManager`) and not fred: one multiplexed
//! connection per node that pipelines every concurrent caller's commands and reconnects on
//! its own, `EVALSHA` with a transparent `EVAL` fallback ([`redis::Script`]), and a small
//! dependency tree; fred's pools and cluster/sentinel machinery are more than one Redis
//! beside Mastodon needs.
//!
//! **Every decision is one atomic script on Redis's own clock** (`TIME`): node clocks may
//! disagree, the script's view of time cannot. A limit decision is GCRA over all the rules
//! a request matches at once (all-or-nothing: a refusal spends nothing); a wave
//! observation adds the sender to the account's window, counts distinct senders inside the
//! window, and raises or extends the shared shield, in one call.
//!
//! **The hot path.** Only requests that a `[[limit]]` rule matches, and inbox deliveries,
//! ever wait for Redis, one round trip each (the connection pipelines them); a timeline or
//! an asset request pays nothing. Each call has a budget (`cluster.redis_budget`, 5 ms):
//! past it, or with Redis down, the node decides alone on its in-memory state (which is
//! always kept, so it is warm when needed) — logged once, shown in `/readyz` and metrics,
//! and left as soon as a call succeeds again. Nothing fails open: a node alone still
//! applies every limit and raises shields on what it sees itself.
//!
//! **The pseudonym key** lives here (never on disk by pavise's doing): one key per rotation
//! period, named by the period's number on Redis's clock, created by whichever node asks
//! first (`SET NX`, expiring at the end of its period), so every node gives a client the
//! same pseudonym and all move to the next key together. Redis itself may persist it;
//! [`Shared::connect`] refuses a persisting Redis unless `allow_persistent_redis` says the
//! admin accepts that (see [`Persistence`]).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use redis::{AsyncCommands as _, Script, aio::ConnectionManager};
use ring::{hmac, rand::SecureRandom};

use super::ClusterConfig;

/// Why the cluster's Redis cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("redis at {url}: {message}")]
    Connect { url: String, message: String },
    #[error(
        "redis at {url} persists its data to disk ({what}): the pseudonym key would be written there, and whoever \
         seizes that disk could link the pseudonyms the instance logged to the addresses they already suspect. \
         Turn persistence off for this Redis (`save \"\"`, `appendonly no`; a separate database index is not \
         enough, persistence is per server) or, accepting that risk, set cluster.allow_persistent_redis = true"
    )]
    Persistent { url: String, what: String },
    #[error(
        "redis at {url} does not let pavise read its persistence settings (CONFIG GET: {message}); set \
         cluster.allow_persistent_redis = true if you have checked yourself that it does not persist"
    )]
    Unknown { url: String, message: String },
}

/// What Redis says about writing its data to disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persistence {
    /// `save` (RDB snapshot points); empty when off.
    pub save: String,
    /// `appendonly` (AOF).
    pub appendonly: bool,
}

impl Persistence {
    pub fn persists(&self) -> bool {
        !self.save.trim().is_empty() || self.appendonly
    }

    pub fn describe(&self) -> String {
        match (self.save.trim().is_empty(), self.appendonly) {
            (true, false) => "off (no RDB snapshots, no AOF)".into(),
            (false, false) => format!("RDB snapshots (save \"{}\")", self.save),
            (true, true) => "AOF (appendonly yes)".into(),
            (false, true) => format!("RDB snapshots (save \"{}\") and AOF", self.save),
        }
    }
}

/// Whether the shared state answers, for `/readyz`, metrics and the one log line per change.
#[derive(Default)]
pub struct Health {
    degraded: AtomicBool,
    /// Decisions taken alone because Redis failed or was too slow.
    pub fallbacks: AtomicU64,
    /// Decisions taken through Redis.
    pub shared: AtomicU64,
}

impl Health {
    pub fn degraded(&self) -> bool {
        self.degraded.load(Ordering::Acquire)
    }

    fn failed(&self, what: &str, why: &str) {
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
        if !self.degraded.swap(true, Ordering::AcqRel) {
            tracing::error!(
                what,
                why,
                "redis: unreachable or slower than cluster.redis_budget; limits and waves are decided by this node \
                 alone (per-node budgets) until it answers again"
            );
        }
    }

    fn ok(&self) {
        self.shared.fetch_add(1, Ordering::Relaxed);
        if self.degraded.swap(false, Ordering::AcqRel) {
            tracing::warn!("redis: answering again; limits and waves are shared by the nodes again");
        }
    }
}

/// One GCRA rule a request matched, as the shared decision needs it.
#[derive(Debug, Clone)]
pub struct SharedLimit {
    /// The rule's name (part of the Redis key).
    pub rule: String,
    /// The key's keyed hash (the same on every node: see `KeyHasher::keyed`).
    pub key: u64,
    /// One cell every `interval`, at most `burst` at once.
    pub interval: Duration,
    pub burst: u32,
}

/// A shared limit refused the request: which rule, and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedDenied {
    pub index: usize,
    pub retry_after: Duration,
}

/// What one shared wave observation found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedWave {
    /// Known sender, or below the threshold; the shield (if any) has this long left.
    Calm { shield_left: Option<Duration> },
    /// A new sender inside a wave: the shield was extended.
    Extended,
    /// This sender pushed the account over the threshold, counted across every node.
    Raised { senders: u64 },
}

/// The node's handle on the shared Redis.
pub struct Shared {
    conn: ConnectionManager,
    url: String,
    budget: Duration,
    pub health: Arc<Health>,
    hash: hmac::Key,
    prefix: String,
    gcra: Script,
    wave: Script,
    pseudonym: Script,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("url", &self.url).finish_non_exhaustive()
    }
}

/// GCRA over every rule a request matched; times in microseconds on Redis's clock.
/// KEYS: one bucket per rule; ARGV: interval, burst for each. Returns {0, 0} when allowed,
/// {i, retry_us} when rule i (1-based) refuses (then nothing is spent).
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local next = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  local new_tat = tat + interval
  local allow_at = new_tat - burst * interval
  if allow_at > now then
    return {i, allow_at - now}
  end
  next[i] = new_tat
end
for i, key in ipairs(KEYS) do
  redis.call('SET', key, string.format('%.0f', next[i]), 'PX', math.ceil((next[i] - now) / 1000) + 1)
end
return {0, 0}
"#;

/// One verified, unfamiliar sender mentioning one account. KEYS: the account's window
/// (sorted set sender → first mention, ms), its shield, its lift time, the set of shielded
/// accounts. ARGV: sender, window, memory, distinct, shield_for (ms), cap, account.
/// Returns {state, n}: 0 calm (n = the shield's ms left or -2), 2 extended, 3 raised (n =
/// distinct senders in the window).
const WAVE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window, memory = tonumber(ARGV[2]), tonumber(ARGV[3])
local distinct, shield_for, cap = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - memory)
local added = redis.call('ZADD', KEYS[1], 'NX', now, ARGV[1])
redis.call('PEXPIRE', KEYS[1], memory)
if added == 0 then
  return {0, redis.call('PTTL', KEYS[2])}
end
local n = redis.call('ZCARD', KEYS[1])
if n > cap then redis.call('ZPOPMIN', KEYS[1], n - cap) end
local from = now - window
local lifted = tonumber(redis.call('GET', KEYS[3]) or '0')
if lifted > from then from = lifted end
local count = redis.call('ZCOUNT', KEYS[1], '(' .. from, '+inf')
if count <= distinct then
  return {0, redis.call('PTTL', KEYS[2])}
end
redis.call('ZADD', KEYS[4], now + shield_for, ARGV[7])
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
redis.call('PEXPIRE', KEYS[4], shield_for)
if redis.call('PTTL', KEYS[2]) > 0 then
  redis.call('PEXPIRE', KEYS[2], shield_for)
  return {2, count}
end
redis.call('SET', KEYS[2], count, 'PX', shield_for)
return {3, count}
"#;

/// The pseudonym key of the current period: KEYS[1] is the key prefix, ARGV a fresh key
/// (used if this node is first) and the period (ms). Returns {key, ms left in the period}.
const PSEUDONYM: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local period = tonumber(ARGV[2])
local n = math.floor(now / period)
local left = (n + 1) * period - now
local key = KEYS[1] .. string.format('%.0f', n)
redis.call('SET', key, ARGV[1], 'NX', 'PX', left)
return {redis.call('GET', key), left}
"#;

impl Shared {
    /// Connects and checks Redis's persistence settings (refusing a persisting Redis
    /// unless allowed). `secret`: the nodes' shared hashing secret (from the key file).
    pub async fn connect(cfg: &ClusterConfig, secret: &[u8; 32]) -> Result<Arc<Shared>, ClusterError> {
        let url = cfg.redis.clone().unwrap_or_default();
        let shown = redacted(&url);
        let err = |message: String| ClusterError::Connect { url: shown.clone(), message };
        let client = redis::Client::open(url.as_str()).map_err(|e| err(e.to_string()))?;
        let manager_cfg = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(2))
            .set_response_timeout(Duration::from_secs(2))
            .set_number_of_retries(1)
            .set_max_delay(500);
        let conn =
            tokio::time::timeout(Duration::from_secs(5), ConnectionManager::new_with_config(client, manager_cfg))
                .await
                .map_err(|_| err("no answer within 5s".into()))?
                .map_err(|e| err(e.to_string()))?;
        let shared = Shared {
            conn,
            url: shown.clone(),
            budget: cfg.redis_budget.get(),
            health: Arc::new(Health::default()),
            hash: hmac::Key::new(hmac::HMAC_SHA256, secret),
            prefix: "pavise:".into(),
            gcra: Script::new(GCRA),
            wave: Script::new(WAVE),
            pseudonym: Script::new(PSEUDONYM),
        };
        match shared.persistence().await {
            Ok(p) if p.persists() && !cfg.allow_persistent_redis => {
                return Err(ClusterError::Persistent { url: shown, what: p.describe() });
            }
            Ok(p) if p.persists() => {
                tracing::warn!(
                    persistence = %p.describe(),
                    "redis persists to disk and cluster.allow_persistent_redis = true: the pseudonym key is \
                     written to that disk"
                );
            }
            Ok(_) => {}
            Err(e) if cfg.allow_persistent_redis => {
                tracing::warn!(error = %e, "redis: cannot read its persistence settings (allowed by config)");
            }
            Err(e) => return Err(ClusterError::Unknown { url: shown, message: e.to_string() }),
        }
        Ok(Arc::new(shared))
    }

    /// Redis's `save` and `appendonly` settings.
    pub async fn persistence(&self) -> Result<Persistence, redis::RedisError> {
        let mut conn = self.conn.clone();
        let save: Vec<String> = redis::cmd("CONFIG").arg("GET").arg("save").query_async(&mut conn).await?;
        let aof: Vec<String> = redis::cmd("CONFIG").arg("GET").arg("appendonly").query_async(&mut conn).await?;
        if save.len() < 2 || aof.len() < 2 {
            return Err(redis::RedisError::from((redis::ErrorKind::TypeError, "CONFIG GET returned nothing")));
        }
        Ok(Persistence { save: save[1].clone(), appendonly: aof[1].eq_ignore_ascii_case("yes") })
    }

    /// Redis's version (from `INFO server`).
    pub async fn server_version(&self) -> Result<String, redis::RedisError> {
        let mut conn = self.conn.clone();
        let info: String = redis::cmd("INFO").arg("server").query_async(&mut conn).await?;
        Ok(info
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .map_or_else(|| "unknown".into(), |v| v.trim().to_owned()))
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// A keyed hash of `value`, the same on every node with the same key file: what the
    /// Redis keys are named by (no account, actor or pseudonym in clear there).
    fn tag(&self, domain: &str, value: &[u8]) -> String {
        let mut ctx = hmac::Context::with_key(&self.hash);
        ctx.update(domain.as_bytes());
        ctx.update(&[0]);
        ctx.update(value);
        ctx.sign().as_ref()[..12].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Runs one call under the budget; `None` (and the node decides alone) when it fails.
    async fn within<T>(
        &self,
        what: &str,
        call: impl std::future::Future<Output = Result<T, redis::RedisError>>,
    ) -> Option<T> {
        match tokio::time::timeout(self.budget, call).await {
            Ok(Ok(v)) => {
                self.health.ok();
                Some(v)
            }
            Ok(Err(e)) => {
                self.health.failed(what, &e.to_string());
                None
            }
            Err(_) => {
                self.health.failed(what, "over budget");
                None
            }
        }
    }

    /// One shared GCRA decision over every rule a request matched. `None`: Redis did not
    /// answer in time (the caller's local decision stands).
    pub async fn check_limits(&self, limits: &[SharedLimit]) -> Option<Result<(), SharedDenied>> {
        if limits.is_empty() {
            return Some(Ok(()));
        }
        let mut inv = self.gcra.prepare_invoke();
        for l in limits {
            inv.key(format!("{}limit:{}:{:016x}", self.prefix, self.tag("rule", l.rule.as_bytes()), l.key));
            inv.arg(l.interval.as_micros().max(1) as u64).arg(l.burst.max(1));
        }
        let mut conn = self.conn.clone();
        let (index, retry_us): (i64, i64) = self.within("limit", inv.invoke_async(&mut conn)).await?;
        Some(if index == 0 {
            Ok(())
        } else {
            Err(SharedDenied {
                index: (index - 1) as usize,
                retry_after: Duration::from_micros(u64::try_from(retry_us).unwrap_or(0)),
            })
        })
    }

    fn account_key(&self, what: &str, account: &str) -> String {
        format!("{}wave:{what}:{}", self.prefix, self.tag("account", account.as_bytes()))
    }

    fn shielded_set(&self) -> String {
        format!("{}shields", self.prefix)
    }

    /// Counts a verified, unfamiliar sender (its actor URL) mentioning `account`, across
    /// every node. `None`: Redis did not answer in time.
    pub async fn observe_wave(
        &self,
        account: &str,
        actor: &str,
        p: &crate::shield::wave::WaveParams,
    ) -> Option<SharedWave> {
        let ms = |d: Duration| d.as_millis().max(1) as u64;
        let memory = p.memory.max(p.window + p.shield_for);
        let cap = crate::shield::wave::WaveDetector::per_account_cap(p.distinct);
        let mut inv = self.wave.prepare_invoke();
        inv.key(self.account_key("window", account))
            .key(self.account_key("shield", account))
            .key(self.account_key("lifted", account))
            .key(self.shielded_set())
            .arg(self.tag("actor", actor.as_bytes()))
            .arg(ms(p.window))
            .arg(ms(memory))
            .arg(p.distinct)
            .arg(ms(p.shield_for))
            .arg(cap)
            .arg(account);
        let mut conn = self.conn.clone();
        let (state, n): (i64, i64) = self.within("wave", inv.invoke_async(&mut conn)).await?;
        Some(match state {
            3 => SharedWave::Raised { senders: u64::try_from(n).unwrap_or(0) },
            2 => SharedWave::Extended,
            _ => SharedWave::Calm { shield_left: u64::try_from(n).ok().filter(|n| *n > 0).map(Duration::from_millis) },
        })
    }

    /// Which of `accounts` a shield covers now, raised by any node (one pipelined call).
    pub async fn shielded(&self, accounts: &[String]) -> Option<Vec<bool>> {
        if accounts.is_empty() {
            return Some(Vec::new());
        }
        let mut pipe = redis::pipe();
        for a in accounts {
            pipe.cmd("PTTL").arg(self.account_key("shield", a));
        }
        let mut conn = self.conn.clone();
        let ttls: Vec<i64> = self.within("shielded", pipe.query_async(&mut conn)).await?;
        Some(ttls.into_iter().map(|t| t > 0).collect())
    }

    /// Every account a shield covers now, raised by any node.
    pub async fn shielded_accounts(&self) -> Option<Vec<String>> {
        let mut conn = self.conn.clone();
        let set = self.shielded_set();
        let now_ms = crate::store::now_ms();
        // The set's scores are Redis-clock times; a node's clock a little off only shifts
        // when a lapsed entry stops being listed, and the shield keys themselves decide.
        let names: Vec<String> =
            self.within("shields", conn.zrangebyscore(&set, now_ms.saturating_sub(5_000), "+inf")).await?;
        let live = self.shielded(&names).await?;
        Some(names.into_iter().zip(live).filter_map(|(n, l)| l.then_some(n)).collect())
    }

    /// Lifts the shared shield over `account` (admin action): the senders already counted
    /// stay known; only new ones count toward a new wave.
    pub async fn lift(&self, account: &str) -> Option<()> {
        let mut pipe = redis::pipe();
        pipe.cmd("DEL").arg(self.account_key("shield", account)).ignore();
        pipe.cmd("ZREM").arg(self.shielded_set()).arg(account).ignore();
        let lifted = crate::store::now_ms();
        pipe.cmd("SET").arg(self.account_key("lifted", account)).arg(lifted).arg("PX").arg(86_400_000u64 * 30).ignore();
        let mut conn = self.conn.clone();
        self.within("lift", pipe.query_async::<()>(&mut conn)).await
    }

    /// The pseudonym key of the current period, and how long the period has left. Longer
    /// budget than a decision: it is fetched off the request path.
    pub async fn pseudonym_key(&self, rotate: Duration) -> Result<([u8; 32], Duration), redis::RedisError> {
        let mut fresh = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut fresh)
            .map_err(|_| redis::RedisError::from((redis::ErrorKind::ClientError, "no OS randomness")))?;
        let mut inv = self.pseudonym.prepare_invoke();
        inv.key(format!("{}pseudonym:", self.prefix)).arg(&fresh[..]).arg(rotate.as_millis().max(1) as u64);
        let mut conn = self.conn.clone();
        let (key, left): (Vec<u8>, i64) = tokio::time::timeout(Duration::from_secs(2), inv.invoke_async(&mut conn))
            .await
            .map_err(|_| redis::RedisError::from((redis::ErrorKind::IoError, "timed out")))??;
        let key: [u8; 32] = key
            .try_into()
            .map_err(|_| redis::RedisError::from((redis::ErrorKind::TypeError, "the pseudonym key is not 32 bytes")))?;
        Ok((key, Duration::from_millis(u64::try_from(left).unwrap_or(0))))
    }

    /// One round trip, for `/readyz` (its own short budget, not counted as a decision).
    pub async fn ping(&self) -> Result<(), String> {
        let mut conn = self.conn.clone();
        match tokio::time::timeout(Duration::from_millis(500), redis::cmd("PING").query_async::<String>(&mut conn))
            .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no answer within 500ms".into()),
        }
    }
}

/// Keeps the [`crate::privacy::Pseudonymizer`]'s key the cluster's: fetched at each
/// period's start. When Redis cannot be reached the node's key lapses at its period's end
/// (plus 100 ms of grace) and the node makes a fresh key of its own (unlinkable, only not
/// shared), never keeping one longer.
pub async fn sync_pseudonym_key(
    shared: Arc<Shared>,
    pseudonymizer: Arc<crate::privacy::Pseudonymizer>,
    rotate: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut failing = false;
    loop {
        let wait = match shared.pseudonym_key(rotate).await {
            Ok((key, left)) => {
                // A moment's grace past the period's end, while this loop fetches the next
                // key, so the nodes do not each make a key of their own in between.
                pseudonymizer.install_shared_key(&key, left + Duration::from_millis(100));
                if failing {
                    tracing::warn!("redis: the shared pseudonym key is back");
                    failing = false;
                }
                // Just past the period's end, so the next call lands in the next period.
                left + Duration::from_millis(20)
            }
            Err(e) => {
                if !failing {
                    tracing::error!(
                        error = %e,
                        "redis: cannot read the shared pseudonym key; this node's pseudonyms are its own until it can"
                    );
                    failing = true;
                }
                Duration::from_secs(1).min(rotate)
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// The URL without its password.
pub fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "(redis URL)".into(),
    }
}
