//! PostgreSQL down, nothing lost: the store a cluster node really uses.
//!
//! [`JournaledStore`] is the [`PostgresStore`] for everything, except that a post observed
//! while PostgreSQL does not answer is *journaled* in the node's own embedded store (the
//! sealed redb file in its data dir, durable before the client gets its answer, as
//! always) instead of failing; [`replay`] moves every journaled item, with its
//! credential, to PostgreSQL once it answers again, and only then removes it locally. So
//! no observed post loses its schedule. Meanwhile the scheduler's claims fail and it
//! looks again every second (`next_due` says so), and `/readyz` reports the outage and the
//! journal's length.
//!
//! The same replay also carries a node's schedule from before `[cluster]` into PostgreSQL
//! on its first cluster start: that schedule is exactly what a journal looks like.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio_util::sync::CancellationToken;

use crate::store::{
    AuditRecord, CredentialStore, EmbeddedStore, ExpiryState, FollowChange, HeldDelivery, KeepFlags, Outcome,
    ScheduleCounts, ScheduleStore, Scheduled, SealedCredential, ShieldStore, StoreError, StoreFuture, SweepProgress,
    UnixMs, now_ms, postgres::PostgresStore,
};

/// How many journaled items one replay step moves.
const REPLAY_BATCH: usize = 500;

/// The cluster node's store; see the module docs.
pub struct JournaledStore {
    pub pg: PostgresStore,
    local: EmbeddedStore,
    /// Whether the last PostgreSQL write failed (cleared by a successful replay or write).
    down: AtomicBool,
    /// Items journaled locally and not yet replayed (as far as this process knows).
    journaled: AtomicU64,
    /// Items replayed to PostgreSQL since start.
    pub replayed: AtomicU64,
    /// Set when a write was journaled: the replay task looks at once.
    wake: tokio::sync::Notify,
}

impl std::fmt::Debug for JournaledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournaledStore").field("pg", &self.pg).finish_non_exhaustive()
    }
}

impl JournaledStore {
    /// `local`: the node's embedded store; whatever schedule it holds is replayed.
    pub async fn new(pg: PostgresStore, local: EmbeddedStore) -> Arc<JournaledStore> {
        let waiting = local.counts().await.map(|c| c.by_state.values().sum::<u64>()).unwrap_or(0);
        Arc::new(JournaledStore {
            pg,
            local,
            down: AtomicBool::new(false),
            journaled: AtomicU64::new(waiting),
            replayed: AtomicU64::new(0),
            wake: tokio::sync::Notify::new(),
        })
    }

    /// Whether PostgreSQL failed the last write.
    pub fn postgres_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    /// Items waiting in the local journal.
    pub fn journaled(&self) -> u64 {
        self.journaled.load(Ordering::Acquire)
    }

    fn went_down(&self, e: &StoreError) {
        if !self.down.swap(true, Ordering::AcqRel) {
            tracing::error!(
                error = %e,
                "postgresql: not answering; new posts are journaled in the local store and replayed when it \
                 returns, deletions wait"
            );
        }
    }

    /// Moves the journal to PostgreSQL; returns how many items moved.
    pub async fn replay_once(&self) -> Result<u64, StoreError> {
        let mut moved = 0;
        loop {
            let items = self.local.list(None, REPLAY_BATCH).await?;
            if items.is_empty() {
                break;
            }
            let mut batch = Vec::with_capacity(items.len());
            for item in &items {
                let cred = match &item.credential {
                    Some(id) => self.local.credential(id).await?,
                    None => None,
                };
                batch.push((item.clone(), cred));
            }
            self.pg.schedule(batch).await?;
            for item in &items {
                // Committed in PostgreSQL: the local copy goes (only a count remains, and
                // the local store rotates it away within `forget_within`).
                self.local.settle(&item.status_id, Outcome::Cancelled("replayed to postgresql".into())).await?;
            }
            moved += items.len() as u64;
            self.replayed.fetch_add(items.len() as u64, Ordering::Relaxed);
            self.journaled
                .fetch_sub((items.len() as u64).min(self.journaled.load(Ordering::Acquire)), Ordering::AcqRel);
        }
        if moved > 0 {
            tracing::info!(moved, "postgresql: journaled posts replayed");
        }
        self.journaled.store(0, Ordering::Release);
        if self.down.swap(false, Ordering::AcqRel) {
            tracing::warn!("postgresql: answering again; the journal is replayed, deletions resume");
        }
        Ok(moved)
    }

    /// `schedule`/`schedule_new` with the journal as the fallback.
    async fn schedule_or_journal(
        &self,
        items: Vec<(Scheduled, Option<SealedCredential>)>,
        only_new: bool,
    ) -> Result<(u64, Vec<bool>), StoreError> {
        let attempt = if only_new {
            self.pg.schedule_new(items.clone()).await.map(|v| (0, v))
        } else {
            self.pg.schedule(items.clone()).await.map(|n| (n, Vec::new()))
        };
        match attempt {
            Ok(v) => Ok(v),
            Err(e) => {
                self.went_down(&e);
                let n = items.len();
                let out = if only_new {
                    (0, self.local.schedule_new(items).await?)
                } else {
                    (self.local.schedule(items).await?, Vec::new())
                };
                self.journaled.fetch_add(n as u64, Ordering::AcqRel);
                self.wake.notify_one();
                Ok(out)
            }
        }
    }
}

/// Replays the journal whenever there is one and PostgreSQL answers; checks every second.
pub async fn replay(store: Arc<JournaledStore>, shutdown: CancellationToken) {
    loop {
        if store.journaled() > 0 || store.postgres_down() {
            match store.pg.ping().await {
                Ok(()) => {
                    if let Err(e) = store.replay_once().await {
                        tracing::warn!(error = %e, "postgresql: replaying the journal failed; retrying");
                    }
                }
                Err(e) => store.went_down(&e),
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = store.wake.notified() => {}
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

impl ScheduleStore for JournaledStore {
    fn schedule(&self, items: Vec<(Scheduled, Option<SealedCredential>)>) -> StoreFuture<'_, u64> {
        Box::pin(async move { self.schedule_or_journal(items, false).await.map(|(n, _)| n) })
    }

    fn schedule_new(&self, items: Vec<(Scheduled, Option<SealedCredential>)>) -> StoreFuture<'_, Vec<bool>> {
        Box::pin(async move { self.schedule_or_journal(items, true).await.map(|(_, v)| v) })
    }

    fn lookup<'a>(&'a self, status_id: &'a str) -> StoreFuture<'a, Option<Scheduled>> {
        Box::pin(async move {
            match self.pg.lookup(status_id).await {
                Ok(Some(item)) => Ok(Some(item)),
                // A journaled post is known too (not replayed yet).
                Ok(None) if self.journaled() > 0 => self.local.lookup(status_id).await,
                Ok(None) => Ok(None),
                Err(e) => {
                    self.went_down(&e);
                    self.local.lookup(status_id).await
                }
            }
        })
    }

    fn claim_due(&self, now: UnixMs, limit: usize, lease_ms: u64) -> StoreFuture<'_, Vec<Scheduled>> {
        self.pg.claim_due(now, limit, lease_ms)
    }

    fn next_due(&self) -> StoreFuture<'_, Option<UnixMs>> {
        Box::pin(async move {
            match self.pg.next_due().await {
                Ok(t) => Ok(t),
                // The scheduler waits for PostgreSQL, looking again every second.
                Err(_) => Ok(Some(now_ms() + 1000)),
            }
        })
    }

    fn settle<'a>(&'a self, status_id: &'a str, outcome: Outcome) -> StoreFuture<'a, bool> {
        self.pg.settle(status_id, outcome)
    }

    fn set_flags<'a>(
        &'a self,
        status_id: &'a str,
        flags: KeepFlags,
        cred: Option<SealedCredential>,
    ) -> StoreFuture<'a, bool> {
        self.pg.set_flags(status_id, flags, cred)
    }

    fn counts(&self) -> StoreFuture<'_, ScheduleCounts> {
        self.pg.counts()
    }

    fn list(&self, state: Option<ExpiryState>, limit: usize) -> StoreFuture<'_, Vec<Scheduled>> {
        self.pg.list(state, limit)
    }

    fn hidden_between(&self, from: UnixMs, to: UnixMs) -> StoreFuture<'_, Vec<Scheduled>> {
        Box::pin(async move {
            let mut items = self.pg.hidden_between(from, to).await?;
            if self.journaled() > 0 {
                items.extend(self.local.hidden_between(from, to).await?);
            }
            Ok(items)
        })
    }

    fn next_deadline_after(&self, t: UnixMs) -> StoreFuture<'_, Option<UnixMs>> {
        Box::pin(async move {
            let pg = self.pg.next_deadline_after(t).await?;
            if self.journaled() == 0 {
                return Ok(pg);
            }
            let local = self.local.next_deadline_after(t).await?;
            Ok(match (pg, local) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            })
        })
    }

    fn put_sweep(&self, progress: SweepProgress) -> StoreFuture<'_, ()> {
        self.pg.put_sweep(progress)
    }

    fn sweep<'a>(&'a self, account: &'a str) -> StoreFuture<'a, Option<SweepProgress>> {
        self.pg.sweep(account)
    }

    fn sweeps(&self) -> StoreFuture<'_, Vec<SweepProgress>> {
        self.pg.sweeps()
    }
}

impl CredentialStore for JournaledStore {
    fn offer_credential(&self, cred: SealedCredential) -> StoreFuture<'_, u64> {
        self.pg.offer_credential(cred)
    }

    fn credential<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<SealedCredential>> {
        self.pg.credential(id)
    }

    fn account_credential<'a>(&'a self, account: &'a str) -> StoreFuture<'a, Option<SealedCredential>> {
        self.pg.account_credential(account)
    }

    fn credential_count(&self) -> StoreFuture<'_, u64> {
        self.pg.credential_count()
    }
}

impl ShieldStore for JournaledStore {
    fn first_seen<'a>(&'a self, actor: &'a str) -> StoreFuture<'a, Option<UnixMs>> {
        self.pg.first_seen(actor)
    }

    fn record_first_seen(&self, seen: Vec<(String, UnixMs)>) -> StoreFuture<'_, ()> {
        self.pg.record_first_seen(seen)
    }

    fn follows<'a>(&'a self, account: &'a str, actor: &'a str) -> StoreFuture<'a, bool> {
        self.pg.follows(account, actor)
    }

    fn record_follows(&self, changes: Vec<FollowChange>) -> StoreFuture<'_, ()> {
        self.pg.record_follows(changes)
    }

    fn put_held(&self, held: HeldDelivery, audit: AuditRecord) -> StoreFuture<'_, ()> {
        self.pg.put_held(held, audit)
    }

    fn remove_held(&self, id: u64, audit: AuditRecord) -> StoreFuture<'_, Option<HeldDelivery>> {
        self.pg.remove_held(id, audit)
    }

    fn held(&self, id: u64) -> StoreFuture<'_, Option<HeldDelivery>> {
        self.pg.held(id)
    }

    fn list_held(&self) -> StoreFuture<'_, Vec<HeldDelivery>> {
        self.pg.list_held()
    }

    fn audit_log(&self, limit: usize) -> StoreFuture<'_, Vec<AuditRecord>> {
        self.pg.audit_log(limit)
    }

    fn put_sealed_held(&self, id: u64, sealed: Vec<u8>, audit: AuditRecord) -> StoreFuture<'_, ()> {
        self.pg.put_sealed_held(id, sealed, audit)
    }

    fn remove_sealed_held(&self, id: u64, audit: AuditRecord) -> StoreFuture<'_, bool> {
        self.pg.remove_sealed_held(id, audit)
    }

    fn sealed_held(&self, id: u64) -> StoreFuture<'_, Option<Vec<u8>>> {
        self.pg.sealed_held(id)
    }

    fn list_sealed_held(&self) -> StoreFuture<'_, Vec<(u64, Vec<u8>)>> {
        self.pg.list_sealed_held()
    }

    fn forget_follows(&self) -> StoreFuture<'_, u64> {
        self.pg.forget_follows()
    }
}
