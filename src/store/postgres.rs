//! The PostgreSQL backend: the durable store several pavise nodes share (`[cluster]`).
//!
//! **Why tokio-postgres + deadpool-postgres** (not sqlx): two small crates on the tokio
//! pavise already runs, plain SQL strings checked by the tests against a real server, no
//! compile-time database and no macro layer; deadpool gives a bounded pool that recycles a
//! connection after the server went away, which is what the fault handling needs.
//!
//! **The same records as the embedded store, sealed the same way.** Every identifying key
//! (status id, account name, actor URL, credential id) is a keyed hash and every value is
//! sealed JSON ([`RecordSeal`], ChaCha20-Poly1305, table and row key bound as associated
//! data), under an epoch key kept in `pavise_meta`, itself sealed under a key derived from
//! the expiry key file ([`StoreKey::derive_secret`]). So the database alone (a dump, a
//! seized replica) opens nothing; the nodes share the key file and so read one another's
//! rows. What stays in clear is what the queries need: states, deadlines, next attempts,
//! reference counts, the claiming node's name.
//!
//! **Claims.** [`ScheduleStore::claim_due`] selects due rows `FOR UPDATE SKIP LOCKED`: two
//! nodes claiming at once never get the same row (each skips what the other has locked),
//! and a claim is a lease (`next_attempt = now + lease`), so the rows of a node killed
//! mid-deletion are simply due again once their lease has run out, and another node claims
//! them. Every write is one transaction (READ COMMITTED, rows read `FOR UPDATE`), retried on
//! a serialization failure, a deadlock or a concurrent first insert of the same key.
//!
//! **Schema.** Created and migrated by pavise itself at connect, under an advisory lock so
//! nodes starting together migrate once; `pavise_schema` holds the version. A database
//! migrated by a newer pavise is refused, not written to.
//!
//! What it cannot do (said in the README): PostgreSQL keeps dead row versions until VACUUM
//! and old pages in its WAL until recycled, so a purged row's sealed bytes linger there for
//! a while; the epoch key is not rotated yet, so with the key file and the epoch row such
//! remnants can be opened until then.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use serde::{Deserialize, Serialize};
use tokio_postgres::{NoTls, error::SqlState};

use super::{
    AuditRecord, CredentialStore, ExpiryState, FollowChange, HeldDelivery, KeepFlags, Outcome, RecordSeal,
    ScheduleCounts, ScheduleStore, Scheduled, SealedCredential, ShieldStore, StoreError, StoreFuture, StoreKey,
    SweepProgress, UnixMs, now_ms,
};

/// The schema, one step per version: step `i` brings version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: every table of the embedded store.
    r#"
    CREATE TABLE pavise_meta (name text PRIMARY KEY, value bytea NOT NULL);
    CREATE TABLE expiry_items (
        key text PRIMARY KEY,
        state text NOT NULL,
        next_attempt bigint NOT NULL,
        deadline bigint NOT NULL,
        hides boolean NOT NULL,
        account_key text NOT NULL,
        claimed_by text,
        sealed bytea NOT NULL
    );
    CREATE INDEX expiry_items_due ON expiry_items (next_attempt) WHERE state IN ('pending', 'claimed', 'deleted');
    CREATE INDEX expiry_items_deadline ON expiry_items (deadline) WHERE hides;
    CREATE INDEX expiry_items_failed ON expiry_items (account_key) WHERE state = 'failed';
    CREATE TABLE expiry_counts (name text PRIMARY KEY, n bigint NOT NULL);
    CREATE TABLE expiry_credentials (
        key text PRIMARY KEY,
        account_key text NOT NULL,
        refs bigint NOT NULL,
        sealed bytea NOT NULL
    );
    CREATE TABLE expiry_account_credential (account_key text PRIMARY KEY, cred_key text NOT NULL);
    CREATE TABLE expiry_sweeps (account_key text PRIMARY KEY, sealed bytea NOT NULL);
    CREATE TABLE shield_first_seen (actor_key text PRIMARY KEY, at bigint NOT NULL);
    CREATE TABLE shield_follows (
        account_key text NOT NULL,
        actor_key text NOT NULL,
        at bigint NOT NULL,
        PRIMARY KEY (account_key, actor_key)
    );
    CREATE TABLE shield_held (id bigint PRIMARY KEY, sealed bytea NOT NULL);
    CREATE TABLE shield_audit (seq bigserial PRIMARY KEY, sealed bytea NOT NULL);
    CREATE TABLE shield_sealed_held (id bigint PRIMARY KEY, sealed bytea NOT NULL);
    "#,
];

/// The schema version this pavise writes.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Taken by the migrating node (an arbitrary constant: "pavise" in ASCII).
const MIGRATION_LOCK: i64 = 0x7061_7669_7365;

/// Attempts of one transaction that keeps meeting a concurrent one.
const MAX_TRIES: usize = 8;

/// The `expiry_counts` entry for purged items.
const GONE: &str = "gone";

/// What `pavise check` reports about the server.
#[derive(Debug, Clone)]
pub struct PostgresInfo {
    pub server_version: String,
    pub schema_version: i32,
    pub items: i64,
}

/// The shared PostgreSQL store. Cheap to clone.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    seal: Arc<RecordSeal>,
    node: Arc<str>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").field("node", &self.node).finish_non_exhaustive()
    }
}

/// What went wrong inside a transaction: the server (maybe retryable), or pavise's own
/// sealing and decoding.
#[derive(Debug)]
enum Fail {
    Pg(tokio_postgres::Error),
    Store(StoreError),
}

impl From<tokio_postgres::Error> for Fail {
    fn from(e: tokio_postgres::Error) -> Fail {
        Fail::Pg(e)
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Fail {
        Fail::Store(e)
    }
}

impl Fail {
    fn retryable(&self) -> bool {
        let Fail::Pg(e) = self else { return false };
        e.code().is_some_and(|c| {
            *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::T_R_DEADLOCK_DETECTED
                || *c == SqlState::UNIQUE_VIOLATION
        })
    }

    fn into_store(self) -> StoreError {
        match self {
            Fail::Pg(e) => pg_error(&e),
            Fail::Store(e) => e,
        }
    }
}

fn pg_error(e: &tokio_postgres::Error) -> StoreError {
    // The server's own message when there is one (the top-level Display is only "db error").
    match e.as_db_error() {
        Some(db) => StoreError::Backend(format!("postgresql: {}", db.message())),
        None => StoreError::Backend(format!("postgresql: {e}")),
    }
}

fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => pg_error(&e),
        other => StoreError::Backend(format!("postgresql: {other}")),
    }
}

fn ms(v: UnixMs) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn unms(v: i64) -> UnixMs {
    u64::try_from(v).unwrap_or(0)
}

/// Runs `$body` (with `$t` the transaction) in one transaction, retrying conflicts.
macro_rules! in_tx {
    ($self:ident, |$t:ident| $body:expr) => {{
        let mut tries = 0;
        loop {
            tries += 1;
            let mut client = $self.pool.get().await.map_err(pool_error)?;
            let pg: &mut tokio_postgres::Client = &mut **client;
            let $t = pg.transaction().await.map_err(|e| pg_error(&e))?;
            let result: Result<_, Fail> = async { $body }.await;
            let result = match result {
                Ok(v) => $t.commit().await.map(|()| v).map_err(Fail::Pg),
                Err(e) => Err(e),
            };
            match result {
                Ok(v) => break Ok(v),
                Err(e) if e.retryable() && tries < MAX_TRIES => {
                    tokio::time::sleep(Duration::from_millis(2 * tries as u64)).await;
                    continue;
                }
                Err(e) => break Err(e.into_store()),
            }
        }
    }};
}

type Tx<'a> = tokio_postgres::Transaction<'a>;

/// What a credential row seals (its key is the hash of `id`).
#[derive(Serialize, Deserialize)]
struct CredentialRow {
    id: String,
    account: String,
    sealed: Vec<u8>,
}

fn has_deadline(item: &Scheduled) -> bool {
    item.publication.is_none() && item.state.hides()
}

fn held_credential(item: Option<&Scheduled>) -> Option<String> {
    item.filter(|s| s.state.needs_credential()).and_then(|s| s.credential.clone())
}

impl PostgresStore {
    /// Connects, creates or migrates the schema, and reads (or, first of all nodes, makes)
    /// the epoch key. `key` is the expiry key file's: every node must have the same one.
    pub async fn connect(url: &str, key: &StoreKey, node: &str) -> Result<PostgresStore, StoreError> {
        let open = |message: String| StoreError::Open { path: redacted(url), message };
        let mut cfg: tokio_postgres::Config = url.parse().map_err(|e| open(format!("{e}")))?;
        if cfg.get_connect_timeout().is_none() {
            cfg.connect_timeout(Duration::from_secs(2));
        }
        cfg.application_name(format!("pavise {node}"));
        let manager = Manager::from_config(cfg, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(16)
            .wait_timeout(Some(Duration::from_secs(2)))
            .create_timeout(Some(Duration::from_secs(2)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| open(e.to_string()))?;
        let wrap = RecordSeal::for_epoch(0, &key.derive_secret(b"pavise postgres epoch wrap v1"));
        let store = PostgresStore { pool, seal: Arc::new(wrap), node: node.into() };
        store.migrate().await.map_err(|e| open(e.to_string()))?;
        let seal = store.epoch_seal().await.map_err(|e| open(e.to_string()))?;
        Ok(PostgresStore { seal: Arc::new(seal), ..store })
    }

    async fn migrate(&self) -> Result<i32, StoreError> {
        in_tx!(self, |t| {
            t.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
            t.batch_execute(
                "CREATE TABLE IF NOT EXISTS pavise_schema (
                    id int PRIMARY KEY CHECK (id = 1), version int NOT NULL, migrated_at bigint NOT NULL)",
            )
            .await?;
            let current: i32 =
                t.query_opt("SELECT version FROM pavise_schema", &[]).await?.map_or(0, |r| r.get::<_, i32>(0));
            if current > SCHEMA_VERSION {
                return Err(Fail::Store(StoreError::Backend(format!(
                    "the database has schema version {current}, newer than this pavise knows ({SCHEMA_VERSION}): \
                     upgrade this node"
                ))));
            }
            for (i, step) in MIGRATIONS.iter().enumerate().skip(current as usize) {
                t.batch_execute(step).await?;
                tracing::info!(version = i + 1, "postgresql: schema migrated");
            }
            t.execute(
                "INSERT INTO pavise_schema (id, version, migrated_at) VALUES (1, $1, $2)
                 ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, migrated_at = EXCLUDED.migrated_at",
                &[&SCHEMA_VERSION, &ms(now_ms())],
            )
            .await?;
            Ok(SCHEMA_VERSION)
        })
    }

    /// The epoch key every node seals under: made once by whichever node connects first.
    async fn epoch_seal(&self) -> Result<RecordSeal, StoreError> {
        let fresh = super::seal::fresh_epoch_key().map_err(|e| StoreError::Backend(e.to_string()))?;
        let mut plain = 1u64.to_le_bytes().to_vec();
        plain.extend_from_slice(&fresh);
        let offered = self.seal.seal("pavise_meta", "epoch", &plain).map_err(|e| StoreError::Backend(e.to_string()))?;
        let client = self.pool.get().await.map_err(pool_error)?;
        client
            .execute(
                "INSERT INTO pavise_meta (name, value) VALUES ('epoch', $1) ON CONFLICT (name) DO NOTHING",
                &[&offered],
            )
            .await
            .map_err(|e| pg_error(&e))?;
        let row = client
            .query_one("SELECT value FROM pavise_meta WHERE name = 'epoch'", &[])
            .await
            .map_err(|e| pg_error(&e))?;
        let sealed: Vec<u8> = row.get(0);
        let plain = self.seal.open("pavise_meta", "epoch", &sealed).map_err(|_| {
            StoreError::Backend(
                "the database's epoch key does not open with this key file: every node must use the same \
                 expiry key file (copy it from the first node)"
                    .into(),
            )
        })?;
        if plain.len() != 40 {
            return Err(StoreError::Corrupt { key: "pavise_meta/epoch".into(), message: "wrong length".into() });
        }
        let mut epoch = [0u8; 8];
        epoch.copy_from_slice(&plain[..8]);
        let mut key = [0u8; 32];
        key.copy_from_slice(&plain[8..]);
        Ok(RecordSeal::for_epoch(u64::from_le_bytes(epoch), &key))
    }

    /// The server's version, the schema version and the number of scheduled items.
    pub async fn info(&self) -> Result<PostgresInfo, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let q = |e: tokio_postgres::Error| pg_error(&e);
        let server_version: String = client.query_one("SHOW server_version", &[]).await.map_err(q)?.get(0);
        let schema_version: i32 = client.query_one("SELECT version FROM pavise_schema", &[]).await.map_err(q)?.get(0);
        let items: i64 = client.query_one("SELECT count(*) FROM expiry_items", &[]).await.map_err(q)?.get(0);
        Ok(PostgresInfo { server_version, schema_version, items })
    }

    /// One round trip: whether the server answers now.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        client.simple_query("SELECT 1").await.map_err(|e| pg_error(&e))?;
        Ok(())
    }

    /// This node's name, as claims record it.
    pub fn node(&self) -> &str {
        &self.node
    }

    fn item_key(&self, status_id: &str) -> String {
        self.seal.key("item", status_id)
    }

    fn account_key(&self, account: &str) -> String {
        self.seal.key("account", account)
    }

    fn cred_key(&self, id: &str) -> String {
        self.seal.key("credential", id)
    }

    fn put<T: Serialize>(&self, table: &str, key: &str, value: &T) -> Result<Vec<u8>, StoreError> {
        let plain = serde_json::to_vec(value).map_err(|e| StoreError::Backend(e.to_string()))?;
        self.seal.seal(table, key, &plain).map_err(|e| StoreError::Backend(e.to_string()))
    }

    fn get<T: for<'de> Deserialize<'de>>(&self, table: &str, key: &str, bytes: &[u8]) -> Result<T, StoreError> {
        let corrupt = |message: String| StoreError::Corrupt { key: format!("{table}/{key}"), message };
        let plain = self.seal.open(table, key, bytes).map_err(|e| corrupt(e.to_string()))?;
        serde_json::from_slice(&plain).map_err(|e| corrupt(e.to_string()))
    }

    // -- expiry, inside a transaction ------------------------------------------------

    async fn get_item_by_key(&self, t: &Tx<'_>, key: &str) -> Result<Option<Scheduled>, Fail> {
        let row = t.query_opt("SELECT sealed FROM expiry_items WHERE key = $1 FOR UPDATE", &[&key]).await?;
        Ok(row.map(|r| self.get::<Scheduled>("expiry_items", key, r.get(0))).transpose()?)
    }

    async fn get_item(&self, t: &Tx<'_>, status_id: &str) -> Result<Option<Scheduled>, Fail> {
        self.get_item_by_key(t, &self.item_key(status_id)).await
    }

    /// The one way an item changes (as in the embedded store): the row, its index columns
    /// and the credential references move together.
    async fn replace(&self, t: &Tx<'_>, old: Option<&Scheduled>, new: &Scheduled) -> Result<(), Fail> {
        let key = self.item_key(&new.status_id);
        let (before, after) = (held_credential(old), held_credential(Some(new)));
        if before != after {
            if let Some(c) = &after {
                self.credential_ref(t, c, 1).await?;
            }
            if let Some(c) = &before {
                self.credential_ref(t, c, -1).await?;
            }
        }
        let sealed = self.put("expiry_items", &key, new)?;
        let claimed_by = (new.state == ExpiryState::Claimed).then(|| self.node.to_string());
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 8] = [
            &key,
            &new.state.name(),
            &ms(new.next_attempt),
            &ms(new.deadline),
            &has_deadline(new),
            &self.account_key(&new.account),
            &claimed_by,
            &sealed,
        ];
        if old.is_some() {
            t.execute(
                "UPDATE expiry_items SET state = $2, next_attempt = $3, deadline = $4, hides = $5,
                 account_key = $6, claimed_by = $7, sealed = $8 WHERE key = $1",
                &params,
            )
            .await?;
        } else {
            // A plain insert: a concurrent first insert of the same post fails one of the
            // two transactions, which then runs again and finds the row.
            t.execute(
                "INSERT INTO expiry_items (key, state, next_attempt, deadline, hides, account_key, claimed_by, sealed)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &params,
            )
            .await?;
        }
        Ok(())
    }

    async fn purge(&self, t: &Tx<'_>, old: &Scheduled) -> Result<(), Fail> {
        let key = self.item_key(&old.status_id);
        if let Some(c) = held_credential(Some(old)) {
            self.credential_ref(t, &c, -1).await?;
        }
        t.execute("DELETE FROM expiry_items WHERE key = $1", &[&key]).await?;
        t.execute(
            "INSERT INTO expiry_counts (name, n) VALUES ($1, 1) ON CONFLICT (name) DO UPDATE SET n = expiry_counts.n + 1",
            &[&GONE],
        )
        .await?;
        Ok(())
    }

    async fn credential_ref(&self, t: &Tx<'_>, id: &str, delta: i64) -> Result<(), Fail> {
        let key = self.cred_key(id);
        let Some(row) =
            t.query_opt("SELECT refs, account_key FROM expiry_credentials WHERE key = $1 FOR UPDATE", &[&key]).await?
        else {
            return Ok(());
        };
        let refs: i64 = row.get(0);
        let account_key: String = row.get(1);
        let refs = refs.saturating_add(delta).max(0);
        if refs == 0 {
            // Nothing pending needs this token any more: forget it.
            t.execute("DELETE FROM expiry_credentials WHERE key = $1", &[&key]).await?;
            t.execute(
                "DELETE FROM expiry_account_credential WHERE account_key = $1 AND cred_key = $2",
                &[&account_key, &key],
            )
            .await?;
        } else if delta != 0 {
            t.execute("UPDATE expiry_credentials SET refs = $2 WHERE key = $1", &[&key, &refs]).await?;
        }
        Ok(())
    }

    async fn put_credential(&self, t: &Tx<'_>, cred: &SealedCredential, now: UnixMs) -> Result<u64, Fail> {
        let cred_key = self.cred_key(&cred.id);
        let row = CredentialRow { id: cred.id.clone(), account: cred.account.clone(), sealed: cred.sealed.clone() };
        let sealed = self.put("expiry_credentials", &cred_key, &row)?;
        let account_key = self.account_key(&cred.account);
        t.execute(
            "INSERT INTO expiry_credentials (key, account_key, refs, sealed) VALUES ($1, $2, 0, $3)
             ON CONFLICT (key) DO NOTHING",
            &[&cred_key, &account_key, &sealed],
        )
        .await?;
        if cred.account.is_empty() {
            return Ok(0);
        }
        let current: Option<String> = t
            .query_opt(
                "SELECT cred_key FROM expiry_account_credential WHERE account_key = $1 FOR UPDATE",
                &[&account_key],
            )
            .await?
            .map(|r| r.get(0));
        if current.as_deref() == Some(cred_key.as_str()) {
            return Ok(0);
        }
        t.execute(
            "INSERT INTO expiry_account_credential (account_key, cred_key) VALUES ($1, $2)
             ON CONFLICT (account_key) DO UPDATE SET cred_key = EXCLUDED.cred_key",
            &[&account_key, &cred_key],
        )
        .await?;
        let waiting = t
            .query(
                "SELECT key, sealed FROM expiry_items WHERE state = 'failed' AND account_key = $1 FOR UPDATE",
                &[&account_key],
            )
            .await?;
        let mut n = 0;
        for row in waiting {
            let key: String = row.get(0);
            let old: Scheduled = self.get("expiry_items", &key, row.get(1))?;
            let Some(new) = super::requeued(&old, cred, now) else { continue };
            self.replace(t, Some(&old), &new).await?;
            n += 1;
        }
        Ok(n)
    }

    async fn schedule_in(
        &self,
        t: &Tx<'_>,
        items: &[(Scheduled, Option<SealedCredential>)],
        only_new: bool,
    ) -> Result<(u64, Vec<bool>), Fail> {
        let now = now_ms();
        let mut requeued = 0;
        let mut inserted = Vec::with_capacity(items.len());
        for (item, cred) in items {
            if let Some(cred) = cred {
                requeued += self.put_credential(t, cred, now).await?;
            }
            let old = self.get_item(t, &item.status_id).await?;
            inserted.push(old.is_none());
            let new = match &old {
                Some(_) if only_new => continue,
                Some(o) if o.state == ExpiryState::Deleted => continue,
                Some(o) => Scheduled {
                    flags: o.flags,
                    credential: item.credential.clone().or_else(|| o.credential.clone()),
                    created_at: o.created_at,
                    host: item.host.clone().or_else(|| o.host.clone()),
                    tags: if item.tags.is_empty() { o.tags.clone() } else { item.tags.clone() },
                    attachments: if item.attachments.is_empty() {
                        o.attachments.clone()
                    } else {
                        item.attachments.clone()
                    },
                    ..item.clone()
                },
                None => item.clone(),
            };
            self.replace(t, old.as_ref(), &new).await?;
        }
        for cred in items.iter().filter_map(|(_, c)| c.as_ref()) {
            self.credential_ref(t, &cred.id, 0).await?;
        }
        Ok((requeued, inserted))
    }

    async fn settle_in(&self, t: &Tx<'_>, id: &str, outcome: &Outcome) -> Result<bool, Fail> {
        let Some(old) = self.get_item(t, id).await? else { return Ok(false) };
        match outcome.settle(&old, now_ms()) {
            Some(new) => self.replace(t, Some(&old), &new).await?,
            None => self.purge(t, &old).await?,
        }
        Ok(true)
    }

    async fn set_flags_in(
        &self,
        t: &Tx<'_>,
        id: &str,
        flags: KeepFlags,
        cred: Option<&SealedCredential>,
    ) -> Result<bool, Fail> {
        let Some(old) = self.get_item(t, id).await? else { return Ok(false) };
        if old.flags == flags {
            return Ok(true);
        }
        let now = now_ms();
        let mut new = Scheduled { flags, updated_at: now, ..old.clone() };
        if old.state == ExpiryState::Kept {
            new.state = ExpiryState::Pending;
            new.next_attempt = now;
            new.reason = Some("keep condition changed; re-checking".into());
            if let Some(cred) = cred {
                self.put_credential(t, cred, now).await?;
                new.credential = Some(cred.id.clone());
            }
        }
        self.replace(t, Some(&old), &new).await?;
        if let Some(cred) = cred {
            self.credential_ref(t, &cred.id, 0).await?;
        }
        Ok(true)
    }

    async fn claim_in(&self, t: &Tx<'_>, now: UnixMs, limit: usize, lease_ms: u64) -> Result<Vec<Scheduled>, Fail> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // Rows another node is claiming right now are locked: skipped, never waited for.
        let rows = t
            .query(
                "SELECT key, sealed FROM expiry_items
                 WHERE state IN ('pending', 'claimed', 'deleted') AND next_attempt <= $1
                 ORDER BY next_attempt LIMIT $2 FOR UPDATE SKIP LOCKED",
                &[&ms(now), &limit],
            )
            .await?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in rows {
            let key: String = row.get(0);
            let old: Scheduled = self.get("expiry_items", &key, row.get(1))?;
            let new = Scheduled {
                state: if old.state == ExpiryState::Deleted { ExpiryState::Deleted } else { ExpiryState::Claimed },
                next_attempt: now.saturating_add(lease_ms),
                updated_at: now,
                ..old.clone()
            };
            self.replace(t, Some(&old), &new).await?;
            claimed.push(new);
        }
        Ok(claimed)
    }

    // -- reads -----------------------------------------------------------------------

    async fn read_items(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Scheduled>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let rows = client.query(sql, params).await.map_err(|e| pg_error(&e))?;
        rows.iter().map(|r| self.get("expiry_items", r.get::<_, &str>(0), r.get(1))).collect()
    }

    async fn read_credential_by_key(&self, key: &str) -> Result<Option<SealedCredential>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let row = client
            .query_opt("SELECT sealed FROM expiry_credentials WHERE key = $1", &[&key])
            .await
            .map_err(|e| pg_error(&e))?;
        let Some(row) = row else { return Ok(None) };
        let r: CredentialRow = self.get("expiry_credentials", key, row.get(0))?;
        Ok(Some(SealedCredential { id: r.id, account: r.account, sealed: r.sealed }))
    }

    async fn scalar_ms(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Option<UnixMs>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let row = client.query_one(sql, params).await.map_err(|e| pg_error(&e))?;
        Ok(row.get::<_, Option<i64>>(0).map(unms))
    }

    async fn audit_in(&self, t: &Tx<'_>, audit: &AuditRecord) -> Result<(), Fail> {
        // The sequence number is not known before the insert: bind the seal to the held id
        // and time instead (a record moved to another row still does not open).
        let aad = format!("{}/{}", audit.id, audit.at);
        let sealed = self.put("shield_audit", &aad, audit)?;
        let mut framed = aad.into_bytes();
        framed.push(0);
        framed.extend_from_slice(&sealed);
        t.execute("INSERT INTO shield_audit (sealed) VALUES ($1)", &[&framed]).await?;
        Ok(())
    }

    fn open_audit(&self, framed: &[u8]) -> Result<AuditRecord, StoreError> {
        let split = framed
            .iter()
            .position(|b| *b == 0)
            .ok_or_else(|| StoreError::Corrupt { key: "shield_audit".into(), message: "no frame".into() })?;
        let aad = String::from_utf8_lossy(&framed[..split]).into_owned();
        self.get("shield_audit", &aad, &framed[split + 1..])
    }
}

/// The URL without its password, for error messages and logs.
pub fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "(postgresql connection string)".into(),
    }
}

impl ScheduleStore for PostgresStore {
    fn schedule(&self, items: Vec<(Scheduled, Option<SealedCredential>)>) -> StoreFuture<'_, u64> {
        Box::pin(async move { in_tx!(self, |t| self.schedule_in(&t, &items, false).await.map(|(n, _)| n)) })
    }

    fn schedule_new(&self, items: Vec<(Scheduled, Option<SealedCredential>)>) -> StoreFuture<'_, Vec<bool>> {
        Box::pin(async move { in_tx!(self, |t| self.schedule_in(&t, &items, true).await.map(|(_, v)| v)) })
    }

    fn lookup<'a>(&'a self, status_id: &'a str) -> StoreFuture<'a, Option<Scheduled>> {
        Box::pin(async move {
            let key = self.item_key(status_id);
            Ok(self.read_items("SELECT key, sealed FROM expiry_items WHERE key = $1", &[&key]).await?.pop())
        })
    }

    fn claim_due(&self, now: UnixMs, limit: usize, lease_ms: u64) -> StoreFuture<'_, Vec<Scheduled>> {
        Box::pin(async move { in_tx!(self, |t| self.claim_in(&t, now, limit, lease_ms).await) })
    }

    fn next_due(&self) -> StoreFuture<'_, Option<UnixMs>> {
        Box::pin(self.scalar_ms(
            "SELECT min(next_attempt) FROM expiry_items WHERE state IN ('pending', 'claimed', 'deleted')",
            &[],
        ))
    }

    fn settle<'a>(&'a self, status_id: &'a str, outcome: Outcome) -> StoreFuture<'a, bool> {
        Box::pin(async move { in_tx!(self, |t| self.settle_in(&t, status_id, &outcome).await) })
    }

    fn set_flags<'a>(
        &'a self,
        status_id: &'a str,
        flags: KeepFlags,
        cred: Option<SealedCredential>,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move { in_tx!(self, |t| self.set_flags_in(&t, status_id, flags, cred.as_ref()).await) })
    }

    fn counts(&self) -> StoreFuture<'_, ScheduleCounts> {
        Box::pin(async move {
            let client = self.pool.get().await.map_err(pool_error)?;
            let q = |e: tokio_postgres::Error| pg_error(&e);
            let mut by_state: BTreeMap<String, u64> =
                ExpiryState::ALL.iter().map(|s| (s.name().to_owned(), 0)).collect();
            for row in client.query("SELECT state, count(*) FROM expiry_items GROUP BY state", &[]).await.map_err(q)? {
                by_state.insert(row.get::<_, String>(0), unms(row.get(1)));
            }
            let gone = client
                .query_opt("SELECT n FROM expiry_counts WHERE name = $1", &[&GONE])
                .await
                .map_err(q)?
                .map_or(0, |r| unms(r.get(0)));
            drop(client);
            Ok(ScheduleCounts { by_state, next_due: self.next_due().await?, gone })
        })
    }

    fn list(&self, state: Option<ExpiryState>, limit: usize) -> StoreFuture<'_, Vec<Scheduled>> {
        Box::pin(async move {
            let mut out = match state {
                Some(s) => {
                    self.read_items("SELECT key, sealed FROM expiry_items WHERE state = $1", &[&s.name()]).await?
                }
                None => self.read_items("SELECT key, sealed FROM expiry_items", &[]).await?,
            };
            // Keys are hashes: order by status id after opening.
            out.sort_by(|a, b| a.status_id.cmp(&b.status_id));
            out.truncate(limit);
            Ok(out)
        })
    }

    fn hidden_between(&self, from: UnixMs, to: UnixMs) -> StoreFuture<'_, Vec<Scheduled>> {
        Box::pin(async move {
            if from > to {
                return Ok(Vec::new());
            }
            let items = self
                .read_items(
                    "SELECT key, sealed FROM expiry_items WHERE hides AND deadline >= $1 AND deadline <= $2
                     ORDER BY deadline",
                    &[&ms(from), &ms(to)],
                )
                .await?;
            Ok(items.into_iter().filter(has_deadline).collect())
        })
    }

    fn next_deadline_after(&self, t: UnixMs) -> StoreFuture<'_, Option<UnixMs>> {
        Box::pin(async move {
            self.scalar_ms("SELECT min(deadline) FROM expiry_items WHERE hides AND deadline > $1", &[&ms(t)]).await
        })
    }

    fn put_sweep(&self, progress: SweepProgress) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let key = self.account_key(&progress.account);
            let sealed = self.put("expiry_sweeps", &key, &progress)?;
            let client = self.pool.get().await.map_err(pool_error)?;
            client
                .execute(
                    "INSERT INTO expiry_sweeps (account_key, sealed) VALUES ($1, $2)
                     ON CONFLICT (account_key) DO UPDATE SET sealed = EXCLUDED.sealed",
                    &[&key, &sealed],
                )
                .await
                .map_err(|e| pg_error(&e))?;
            Ok(())
        })
    }

    fn sweep<'a>(&'a self, account: &'a str) -> StoreFuture<'a, Option<SweepProgress>> {
        Box::pin(async move {
            let key = self.account_key(account);
            let client = self.pool.get().await.map_err(pool_error)?;
            let row = client
                .query_opt("SELECT sealed FROM expiry_sweeps WHERE account_key = $1", &[&key])
                .await
                .map_err(|e| pg_error(&e))?;
            row.map(|r| self.get("expiry_sweeps", &key, r.get(0))).transpose()
        })
    }

    fn sweeps(&self) -> StoreFuture<'_, Vec<SweepProgress>> {
        Box::pin(async move {
            let client = self.pool.get().await.map_err(pool_error)?;
            let rows =
                client.query("SELECT account_key, sealed FROM expiry_sweeps", &[]).await.map_err(|e| pg_error(&e))?;
            let mut out: Vec<SweepProgress> = rows
                .iter()
                .map(|r| self.get("expiry_sweeps", r.get::<_, &str>(0), r.get(1)))
                .collect::<Result<_, _>>()?;
            out.sort_by(|a, b| a.account.cmp(&b.account));
            Ok(out)
        })
    }
}

impl CredentialStore for PostgresStore {
    fn offer_credential(&self, cred: SealedCredential) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            in_tx!(self, |t| {
                let n = self.put_credential(&t, &cred, now_ms()).await?;
                self.credential_ref(&t, &cred.id, 0).await?;
                Ok(n)
            })
        })
    }

    fn credential<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<SealedCredential>> {
        Box::pin(async move { self.read_credential_by_key(&self.cred_key(id)).await })
    }

    fn account_credential<'a>(&'a self, account: &'a str) -> StoreFuture<'a, Option<SealedCredential>> {
        Box::pin(async move {
            let client = self.pool.get().await.map_err(pool_error)?;
            let row = client
                .query_opt(
                    "SELECT cred_key FROM expiry_account_credential WHERE account_key = $1",
                    &[&self.account_key(account)],
                )
                .await
                .map_err(|e| pg_error(&e))?;
            drop(client);
            match row {
                Some(r) => self.read_credential_by_key(r.get::<_, &str>(0)).await,
                None => Ok(None),
            }
        })
    }

    fn credential_count(&self) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let client = self.pool.get().await.map_err(pool_error)?;
            let row =
                client.query_one("SELECT count(*) FROM expiry_credentials", &[]).await.map_err(|e| pg_error(&e))?;
            Ok(unms(row.get(0)))
        })
    }
}

impl ShieldStore for PostgresStore {
    fn first_seen<'a>(&'a self, actor: &'a str) -> StoreFuture<'a, Option<UnixMs>> {
        Box::pin(async move {
            let key = self.seal.key("actor", actor);
            self.scalar_ms("SELECT min(at) FROM shield_first_seen WHERE actor_key = $1", &[&key]).await
        })
    }

    fn record_first_seen(&self, seen: Vec<(String, UnixMs)>) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            in_tx!(self, |t| {
                for (actor, at) in &seen {
                    t.execute(
                        "INSERT INTO shield_first_seen (actor_key, at) VALUES ($1, $2)
                         ON CONFLICT (actor_key) DO UPDATE SET at = LEAST(shield_first_seen.at, EXCLUDED.at)",
                        &[&self.seal.key("actor", actor), &ms(*at)],
                    )
                    .await?;
                }
                Ok(())
            })
        })
    }

    fn follows<'a>(&'a self, account: &'a str, actor: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let client = self.pool.get().await.map_err(pool_error)?;
            let row = client
                .query_opt(
                    "SELECT 1 FROM shield_follows WHERE account_key = $1 AND actor_key = $2",
                    &[&self.account_key(account), &self.seal.key("actor", actor)],
                )
                .await
                .map_err(|e| pg_error(&e))?;
            Ok(row.is_some())
        })
    }

    fn record_follows(&self, changes: Vec<FollowChange>) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            in_tx!(self, |t| {
                let now = ms(now_ms());
                for c in &changes {
                    let (account, actor) = (self.account_key(&c.account), self.seal.key("actor", &c.actor));
                    if c.following {
                        t.execute(
                            "INSERT INTO shield_follows (account_key, actor_key, at) VALUES ($1, $2, $3)
                             ON CONFLICT (account_key, actor_key) DO UPDATE SET at = EXCLUDED.at",
                            &[&account, &actor, &now],
                        )
                        .await?;
                    } else {
                        t.execute(
                            "DELETE FROM shield_follows WHERE account_key = $1 AND actor_key = $2",
                            &[&account, &actor],
                        )
                        .await?;
                    }
                }
                Ok(())
            })
        })
    }

    fn put_held(&self, held: HeldDelivery, audit: AuditRecord) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let id = i64::try_from(held.id).map_err(|e| StoreError::Backend(e.to_string()))?;
            let sealed = self.put("shield_held", &held.id.to_string(), &held)?;
            in_tx!(self, |t| {
                t.execute(
                    "INSERT INTO shield_held (id, sealed) VALUES ($1, $2)
                     ON CONFLICT (id) DO UPDATE SET sealed = EXCLUDED.sealed",
                    &[&id, &sealed],
                )
                .await?;
                self.audit_in(&t, &audit).await
            })
        })
    }

    fn remove_held(&self, id: u64, audit: AuditRecord) -> StoreFuture<'_, Option<HeldDelivery>> {
        Box::pin(async move {
            let pid = i64::try_from(id).map_err(|e| StoreError::Backend(e.to_string()))?;
            in_tx!(self, |t| {
                let row = t.query_opt("DELETE FROM shield_held WHERE id = $1 RETURNING sealed", &[&pid]).await?;
                let held: Option<HeldDelivery> =
                    row.map(|r| self.get("shield_held", &id.to_string(), r.get(0))).transpose()?;
                if held.is_some() {
                    self.audit_in(&t, &audit).await?;
                }
                Ok(held)
            })
        })
    }

    fn held(&self, id: u64) -> StoreFuture<'_, Option<HeldDelivery>> {
        Box::pin(async move {
            let pid = i64::try_from(id).map_err(|e| StoreError::Backend(e.to_string()))?;
            let client = self.pool.get().await.map_err(pool_error)?;
            let row = client
                .query_opt("SELECT sealed FROM shield_held WHERE id = $1", &[&pid])
                .await
                .map_err(|e| pg_error(&e))?;
            row.map(|r| self.get("shield_held", &id.to_string(), r.get(0))).transpose()
        })
    }

    fn list_held(&self) -> StoreFuture<'_, Vec<HeldDelivery>> {
        Box::pin(async move {
            let client = self.pool.get().await.map_err(pool_error)?;
            let rows =
                client.query("SELECT id, sealed FROM shield_held ORDER BY id", &[]).await.map_err(|e| pg_error(&e))?;
            rows.iter().map(|r| self.get("shield_held", &r.get::<_, i64>(0).to_string(), r.get(1))).collect()
        })
    }

    fn audit_log(&self, limit: usize) -> StoreFuture<'_, Vec<AuditRecord>> {
        Box::pin(async move {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let client = self.pool.get().await.map_err(pool_error)?;
            let rows = client
                .query("SELECT sealed FROM shield_audit ORDER BY seq DESC LIMIT $1", &[&limit])
                .await
                .map_err(|e| pg_error(&e))?;
            rows.iter().map(|r| self.open_audit(r.get(0))).collect()
        })
    }

    fn put_sealed_held(&self, id: u64, sealed: Vec<u8>, audit: AuditRecord) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let pid = i64::try_from(id).map_err(|e| StoreError::Backend(e.to_string()))?;
            in_tx!(self, |t| {
                t.execute(
                    "INSERT INTO shield_sealed_held (id, sealed) VALUES ($1, $2)
                     ON CONFLICT (id) DO UPDATE SET sealed = EXCLUDED.sealed",
                    &[&pid, &sealed],
                )
                .await?;
                self.audit_in(&t, &audit).await
            })
        })
    }

    fn remove_sealed_held(&self, id: u64, audit: AuditRecord) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            let pid = i64::try_from(id).map_err(|e| StoreError::Backend(e.to_string()))?;
            in_tx!(self, |t| {
                let removed = t.execute("DELETE FROM shield_sealed_held WHERE id = $1", &[&pid]).await? > 0;
                if removed {
                    self.audit_in(&t, &audit).await?;
                }
                Ok(removed)
            })
        })
    }

    fn sealed_held(&self, id: u64) -> StoreFuture<'_, Option<Vec<u8>>> {
        Box::pin(async move {
            let pid = i64::try_from(id).map_err(|e| StoreError::Backend(e.to_string()))?;
            let client = self.pool.get().await.map_err(pool_error)?;
            let row = client
                .query_opt("SELECT sealed FROM shield_sealed_held WHERE id = $1", &[&pid])
                .await
                .map_err(|e| pg_error(&e))?;
            Ok(row.map(|r| r.get(0)))
        })
    }

    fn list_sealed_held(&self) -> StoreFuture<'_, Vec<(u64, Vec<u8>)>> {
        Box::pin(async move {
            let client = self.pool.get().await.map_err(pool_error)?;
            let rows = client
                .query("SELECT id, sealed FROM shield_sealed_held ORDER BY id", &[])
                .await
                .map_err(|e| pg_error(&e))?;
            Ok(rows.iter().map(|r| (u64::try_from(r.get::<_, i64>(0)).unwrap_or(0), r.get(1))).collect())
        })
    }

    fn forget_follows(&self) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let client = self.pool.get().await.map_err(pool_error)?;
            let n = client.execute("DELETE FROM shield_follows", &[]).await.map_err(|e| pg_error(&e))?;
            Ok(n)
        })
    }
}
