//! The embedded backend: one redb file (`<data_dir>/pavise.redb`), opened once per process.
//!
//! Writes go through a single writer thread that *group-commits*: whatever writes are
//! waiting when a commit starts share it, so one fsync covers many posts under load while
//! each caller still resumes only after its own write is on disk. Every commit is
//! `Durability::Immediate` with redb's quick-repair enabled, so a `kill -9` loses nothing
//! that was acknowledged and the next start does not have to walk the whole file.
//! Reads run on tokio's blocking pool against a snapshot.
//!
//! Tables, one set per concern (a feature adds its own, prefixed by its name):
//! - `expiry_items`: status id → the [`Scheduled`] item (JSON);
//! - `expiry_due`: (next attempt, status id) → () — pending and claimed items only, so the
//!   next due item is the first key and a lapsed claim is simply due again;
//! - `expiry_failed`: status id → account — the few items waiting for a new credential;
//! - `expiry_counts`: state name → count, kept in step with `expiry_items`;
//! - `expiry_credentials`: credential id → sealed token, account and reference count;
//! - `expiry_account_credential`: account → the newest credential id seen for it;
//! - `shield_first_seen`: remote actor URL → when it was first seen delivering;
//! - `shield_follows`: (local account, remote actor URL) → when the follow was learned;
//! - `shield_held`: held delivery id → the [`HeldDelivery`] (JSON, body base64);
//! - `shield_audit`: sequence number → one [`AuditRecord`] (JSON);
//! - `shield_sealed_held`: held delivery id → the sealed [`HeldDelivery`] (opaque bytes).

use std::{
    path::{Path, PathBuf},
    sync::{Arc, mpsc},
};

use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::{
    AuditRecord, CredentialStore, ExpiryState, FollowChange, HeldDelivery, KeepFlags, Outcome, ScheduleCounts,
    ScheduleStore, Scheduled, SealedCredential, ShieldStore, StoreError, StoreFuture, UnixMs, now_ms,
};

const ITEMS: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("expiry_items");
const DUE: TableDefinition<'static, (u64, &str), ()> = TableDefinition::new("expiry_due");
const FAILED: TableDefinition<'static, &str, &str> = TableDefinition::new("expiry_failed");
const COUNTS: TableDefinition<'static, &str, u64> = TableDefinition::new("expiry_counts");
const CREDENTIALS: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("expiry_credentials");
const ACCOUNT_CREDENTIAL: TableDefinition<'static, &str, &str> = TableDefinition::new("expiry_account_credential");

// Shield tables: see the shield section at the end of this file.
const SHIELD_FIRST_SEEN: TableDefinition<'static, &str, u64> = TableDefinition::new("shield_first_seen");
const SHIELD_FOLLOWS: TableDefinition<'static, (&str, &str), u64> = TableDefinition::new("shield_follows");
const SHIELD_HELD: TableDefinition<'static, u64, &[u8]> = TableDefinition::new("shield_held");
const SHIELD_AUDIT: TableDefinition<'static, u64, &[u8]> = TableDefinition::new("shield_audit");
const SHIELD_SEALED_HELD: TableDefinition<'static, u64, &[u8]> = TableDefinition::new("shield_sealed_held");

/// How many waiting writes one commit may carry.
const MAX_BATCH: usize = 1024;

/// The file name inside the data dir.
pub const FILE_NAME: &str = "pavise.redb";

fn backend(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Backend(e.into().to_string())
}

/// A write to run inside a shared transaction; may run again alone if its batch fails.
trait Job: Send {
    fn run(&mut self, txn: &WriteTransaction) -> Result<(), StoreError>;
    fn finish(self: Box<Self>, committed: Result<(), StoreError>);
}

struct Typed<T, F> {
    f: F,
    out: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T: Send, F: Fn(&WriteTransaction) -> Result<T, StoreError> + Send> Job for Typed<T, F> {
    fn run(&mut self, txn: &WriteTransaction) -> Result<(), StoreError> {
        let result = (self.f)(txn);
        let err = result.as_ref().err().cloned();
        self.out = Some(result);
        err.map_or(Ok(()), Err)
    }

    fn finish(mut self: Box<Self>, committed: Result<(), StoreError>) {
        let result = match committed {
            Ok(()) => self.out.take().unwrap_or(Err(StoreError::Closed)),
            Err(e) => Err(e),
        };
        let _ = self.reply.send(result);
    }
}

/// The embedded redb store. Cheap to clone; when the last clone goes, the writer thread
/// finishes what it was given and the file is closed before the drop returns, so the
/// same process (a test, an in-process restart) can open it again at once.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<Database>,
    writer: Option<mpsc::Sender<Box<dyn Job>>>,
    thread: Option<std::thread::JoinHandle<()>>,
    path: PathBuf,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel ends the write loop once its queue is empty.
        drop(self.writer.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore").field("path", &self.inner.path).finish_non_exhaustive()
    }
}

/// What a credential row holds besides its id.
#[derive(Serialize, Deserialize)]
struct CredentialRow {
    account: String,
    sealed: Vec<u8>,
    /// Live items that point at it; the row goes when this reaches zero.
    refs: u64,
}

impl EmbeddedStore {
    /// Opens (or creates) `<data_dir>/pavise.redb` with a page cache of `cache_bytes`,
    /// and starts the writer thread. Blocking: call before serving, or from a blocking task.
    pub fn open(data_dir: &Path, cache_bytes: usize) -> Result<EmbeddedStore, StoreError> {
        let path = data_dir.join(FILE_NAME);
        let open_err = |message: String| StoreError::Open { path: path.display().to_string(), message };
        std::fs::create_dir_all(data_dir).map_err(|e| open_err(e.to_string()))?;
        let db = open_db(&path, cache_bytes).map_err(|e| open_err(e.to_string()))?;
        // Create every table up front, so readers never meet a missing one.
        {
            let txn = db.begin_write().map_err(|e| open_err(e.to_string()))?;
            let created = (|| -> Result<(), StoreError> {
                txn.open_table(ITEMS).map_err(backend)?;
                txn.open_table(DUE).map_err(backend)?;
                txn.open_table(FAILED).map_err(backend)?;
                txn.open_table(COUNTS).map_err(backend)?;
                txn.open_table(CREDENTIALS).map_err(backend)?;
                txn.open_table(ACCOUNT_CREDENTIAL).map_err(backend)?;
                txn.open_table(SHIELD_FIRST_SEEN).map_err(backend)?;
                txn.open_table(SHIELD_FOLLOWS).map_err(backend)?;
                txn.open_table(SHIELD_HELD).map_err(backend)?;
                txn.open_table(SHIELD_AUDIT).map_err(backend)?;
                Ok(())
            })();
            created.map_err(|e| open_err(e.to_string()))?;
            txn.commit().map_err(|e| open_err(e.to_string()))?;
        }
        let db = Arc::new(db);
        let (writer, jobs) = mpsc::channel::<Box<dyn Job>>();
        let thread_db = db.clone();
        let thread = std::thread::Builder::new()
            .name("pavise-store".into())
            .spawn(move || write_loop(&thread_db, &jobs))
            .map_err(|e| open_err(e.to_string()))?;
        Ok(EmbeddedStore { inner: Arc::new(Inner { db, writer: Some(writer), thread: Some(thread), path }) })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let writer = self.inner.writer.as_ref().ok_or(StoreError::Closed)?;
        writer.send(Box::new(Typed { f, out: None, reply })).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&redb::ReadTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        let db = self.inner.db.clone();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(backend)?;
            f(&txn)
        })
        .await
        .map_err(|e| StoreError::Backend(e.to_string()))?
    }
}

/// Opens the file; waits briefly while a previous handle in this process (a restart
/// in-process, as the tests do) finishes closing it.
fn open_db(path: &Path, cache_bytes: usize) -> Result<Database, redb::DatabaseError> {
    let mut tries = 0;
    loop {
        match Database::builder().set_cache_size(cache_bytes).create(path) {
            Err(redb::DatabaseError::DatabaseAlreadyOpen) if tries < 250 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

fn write_loop(db: &Database, jobs: &mpsc::Receiver<Box<dyn Job>>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        match commit(db, &mut batch) {
            Ok(()) => batch.into_iter().for_each(|j| j.finish(Ok(()))),
            Err(e) if batch.len() == 1 => batch.into_iter().for_each(|j| j.finish(Err(e.clone()))),
            Err(_) => {
                // One write failed and took its neighbours' commit with it: run each alone,
                // so only the failing one reports the failure.
                for job in batch {
                    let mut one = vec![job];
                    let result = commit(db, &mut one);
                    one.into_iter().for_each(|j| j.finish(result.clone()));
                }
            }
        }
    }
}

fn commit(db: &Database, batch: &mut [Box<dyn Job>]) -> Result<(), StoreError> {
    let mut txn = db.begin_write().map_err(backend)?;
    txn.set_durability(redb::Durability::Immediate);
    txn.set_quick_repair(true);
    for job in batch.iter_mut() {
        job.run(&txn)?;
    }
    txn.commit().map_err(backend)
}

fn decode<T: for<'de> Deserialize<'de>>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt { key: key.to_owned(), message: e.to_string() })
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Backend(e.to_string()))
}

fn get_item(txn: &WriteTransaction, id: &str) -> Result<Option<Scheduled>, StoreError> {
    let items = txn.open_table(ITEMS).map_err(backend)?;
    let found = items.get(id).map_err(backend)?;
    found.map(|v| decode(id, v.value())).transpose()
}

fn is_due(state: ExpiryState) -> bool {
    matches!(state, ExpiryState::Pending | ExpiryState::Claimed)
}

fn bump(txn: &WriteTransaction, state: ExpiryState, delta: i64) -> Result<(), StoreError> {
    let mut counts = txn.open_table(COUNTS).map_err(backend)?;
    let current = counts.get(state.name()).map_err(backend)?.map(|v| v.value()).unwrap_or(0);
    counts.insert(state.name(), current.saturating_add_signed(delta)).map_err(backend)?;
    Ok(())
}

fn credential_ref(txn: &WriteTransaction, id: &str, delta: i64) -> Result<(), StoreError> {
    let mut creds = txn.open_table(CREDENTIALS).map_err(backend)?;
    let row: Option<CredentialRow> = creds.get(id).map_err(backend)?.map(|v| decode(id, v.value())).transpose()?;
    let Some(mut row) = row else { return Ok(()) };
    row.refs = row.refs.saturating_add_signed(delta);
    if row.refs == 0 {
        // Nothing pending needs this token any more: forget it.
        creds.remove(id).map_err(backend)?;
        let mut by_account = txn.open_table(ACCOUNT_CREDENTIAL).map_err(backend)?;
        let points_here = by_account.get(row.account.as_str()).map_err(backend)?.is_some_and(|v| v.value() == id);
        if points_here {
            by_account.remove(row.account.as_str()).map_err(backend)?;
        }
    } else {
        creds.insert(id, encode(&row)?.as_slice()).map_err(backend)?;
    }
    Ok(())
}

/// The one way an item changes: keeps the due index, the failed index, the counts and
/// the credential references in step with the item itself.
fn replace(txn: &WriteTransaction, old: Option<&Scheduled>, new: &Scheduled) -> Result<(), StoreError> {
    let id = new.status_id.as_str();
    {
        let mut due = txn.open_table(DUE).map_err(backend)?;
        if let Some(old) = old.filter(|o| is_due(o.state)) {
            due.remove((old.next_attempt, id)).map_err(backend)?;
        }
        if is_due(new.state) {
            due.insert((new.next_attempt, id), ()).map_err(backend)?;
        }
    }
    {
        let mut failed = txn.open_table(FAILED).map_err(backend)?;
        if old.is_some_and(|o| o.state == ExpiryState::Failed) {
            failed.remove(id).map_err(backend)?;
        }
        if new.state == ExpiryState::Failed {
            failed.insert(id, new.account.as_str()).map_err(backend)?;
        }
    }
    if old.map(|o| o.state) != Some(new.state) {
        if let Some(old) = old {
            bump(txn, old.state, -1)?;
        }
        bump(txn, new.state, 1)?;
    }
    let held = |s: Option<&Scheduled>| s.filter(|s| s.state.needs_credential()).and_then(|s| s.credential.clone());
    let (before, after) = (held(old), held(Some(new)));
    if before != after {
        // Take the new reference first, so a shared credential never drops to zero between.
        if let Some(c) = &after {
            credential_ref(txn, c, 1)?;
        }
        if let Some(c) = &before {
            credential_ref(txn, c, -1)?;
        }
    }
    let mut items = txn.open_table(ITEMS).map_err(backend)?;
    items.insert(id, encode(new)?.as_slice()).map_err(backend)?;
    Ok(())
}

fn schedule_in(txn: &WriteTransaction, items: &[(Scheduled, Option<SealedCredential>)]) -> Result<u64, StoreError> {
    let now = now_ms();
    let mut requeued = 0;
    for (item, cred) in items {
        if let Some(cred) = cred {
            requeued += put_credential(txn, cred, now)?;
        }
        let old = get_item(txn, &item.status_id)?;
        let new = match &old {
            Some(o) if matches!(o.state, ExpiryState::Deleted | ExpiryState::Cancelled) => continue,
            Some(o) => Scheduled {
                flags: o.flags,
                credential: item.credential.clone().or_else(|| o.credential.clone()),
                created_at: o.created_at,
                host: item.host.clone().or_else(|| o.host.clone()),
                ..item.clone()
            },
            None => item.clone(),
        };
        replace(txn, old.as_ref(), &new)?;
    }
    // A credential put above that no item took (all were final) must not linger.
    for cred in items.iter().filter_map(|(_, c)| c.as_ref()) {
        credential_ref(txn, &cred.id, 0)?;
    }
    Ok(requeued)
}

/// Stores a credential if new; when it is new *for its account*, re-queues the account's
/// failed items with it. Returns how many were re-queued.
fn put_credential(txn: &WriteTransaction, cred: &SealedCredential, now: UnixMs) -> Result<u64, StoreError> {
    {
        let mut creds = txn.open_table(CREDENTIALS).map_err(backend)?;
        if creds.get(cred.id.as_str()).map_err(backend)?.is_none() {
            let row = CredentialRow { account: cred.account.clone(), sealed: cred.sealed.clone(), refs: 0 };
            creds.insert(cred.id.as_str(), encode(&row)?.as_slice()).map_err(backend)?;
        }
    }
    let is_new_for_account = {
        let mut by_account = txn.open_table(ACCOUNT_CREDENTIAL).map_err(backend)?;
        let current = by_account.get(cred.account.as_str()).map_err(backend)?.map(|v| v.value().to_owned());
        if current.as_deref() == Some(cred.id.as_str()) {
            false
        } else {
            by_account.insert(cred.account.as_str(), cred.id.as_str()).map_err(backend)?;
            true
        }
    };
    if !is_new_for_account {
        return Ok(0);
    }
    let waiting: Vec<String> = {
        let failed = txn.open_table(FAILED).map_err(backend)?;
        let mut ids = Vec::new();
        for entry in failed.iter().map_err(backend)? {
            let (k, v) = entry.map_err(backend)?;
            if v.value() == cred.account {
                ids.push(k.value().to_owned());
            }
        }
        ids
    };
    let mut n = 0;
    for id in waiting {
        let Some(old) = get_item(txn, &id)? else { continue };
        let new = Scheduled {
            state: ExpiryState::Pending,
            next_attempt: now,
            credential: Some(cred.id.clone()),
            reason: Some("re-queued: a new token for the account appeared".into()),
            updated_at: now,
            ..old.clone()
        };
        replace(txn, Some(&old), &new)?;
        n += 1;
    }
    Ok(n)
}

fn claim_in(txn: &WriteTransaction, now: UnixMs, limit: usize, lease_ms: u64) -> Result<Vec<Scheduled>, StoreError> {
    let keys: Vec<String> = {
        let due = txn.open_table(DUE).map_err(backend)?;
        let mut keys = Vec::new();
        for entry in due.iter().map_err(backend)? {
            let (k, _) = entry.map_err(backend)?;
            let (at, id) = k.value();
            if at > now || keys.len() >= limit {
                break;
            }
            keys.push(id.to_owned());
        }
        keys
    };
    let mut claimed = Vec::with_capacity(keys.len());
    for id in keys {
        let Some(old) = get_item(txn, &id)? else { continue };
        let new = Scheduled {
            state: ExpiryState::Claimed,
            next_attempt: now.saturating_add(lease_ms),
            updated_at: now,
            ..old.clone()
        };
        replace(txn, Some(&old), &new)?;
        claimed.push(new);
    }
    Ok(claimed)
}

fn settle_in(txn: &WriteTransaction, id: &str, outcome: &Outcome) -> Result<bool, StoreError> {
    let Some(old) = get_item(txn, id)? else { return Ok(false) };
    let now = now_ms();
    let mut new = Scheduled { updated_at: now, ..old.clone() };
    match outcome {
        Outcome::Deleted => {
            new.state = ExpiryState::Deleted;
            new.reason = None;
        }
        Outcome::Kept(reason) => {
            new.state = ExpiryState::Kept;
            new.reason = Some(reason.clone());
        }
        Outcome::Retry { at, reason } => {
            new.state = ExpiryState::Pending;
            new.next_attempt = *at;
            new.attempts = old.attempts.saturating_add(1);
            new.reason = Some(reason.clone());
        }
        Outcome::Defer { at } => {
            new.state = ExpiryState::Pending;
            new.next_attempt = *at;
        }
        Outcome::Failed(reason) => {
            new.state = ExpiryState::Failed;
            new.attempts = old.attempts.saturating_add(1);
            new.reason = Some(reason.clone());
        }
        Outcome::Cancelled(reason) => {
            new.state = ExpiryState::Cancelled;
            new.reason = Some(reason.clone());
        }
    }
    replace(txn, Some(&old), &new)?;
    Ok(true)
}

fn set_flags_in(txn: &WriteTransaction, id: &str, flags: KeepFlags) -> Result<bool, StoreError> {
    let Some(old) = get_item(txn, id)? else { return Ok(false) };
    if old.flags == flags {
        return Ok(true);
    }
    let now = now_ms();
    let mut new = Scheduled { flags, updated_at: now, ..old.clone() };
    if old.state == ExpiryState::Kept {
        // What kept it may be gone: let the scheduler look again.
        new.state = ExpiryState::Pending;
        new.next_attempt = now;
        new.reason = Some("keep condition changed; re-checking".into());
    }
    replace(txn, Some(&old), &new)?;
    Ok(true)
}

fn read_item(txn: &redb::ReadTransaction, id: &str) -> Result<Option<Scheduled>, StoreError> {
    let items = txn.open_table(ITEMS).map_err(backend)?;
    let found = items.get(id).map_err(backend)?;
    found.map(|v| decode(id, v.value())).transpose()
}

fn read_next_due(txn: &redb::ReadTransaction) -> Result<Option<UnixMs>, StoreError> {
    let due = txn.open_table(DUE).map_err(backend)?;
    Ok(due.first().map_err(backend)?.map(|(k, _)| k.value().0))
}

fn read_credential(txn: &redb::ReadTransaction, id: &str) -> Result<Option<SealedCredential>, StoreError> {
    let creds = txn.open_table(CREDENTIALS).map_err(backend)?;
    let row: Option<CredentialRow> = creds.get(id).map_err(backend)?.map(|v| decode(id, v.value())).transpose()?;
    Ok(row.map(|r| SealedCredential { id: id.to_owned(), account: r.account, sealed: r.sealed }))
}

impl ScheduleStore for EmbeddedStore {
    fn schedule(&self, items: Vec<(Scheduled, Option<SealedCredential>)>) -> StoreFuture<'_, u64> {
        Box::pin(self.write(move |txn| schedule_in(txn, &items)))
    }

    fn lookup<'a>(&'a self, status_id: &'a str) -> StoreFuture<'a, Option<Scheduled>> {
        let id = status_id.to_owned();
        Box::pin(self.read(move |txn| read_item(txn, &id)))
    }

    fn claim_due(&self, now: UnixMs, limit: usize, lease_ms: u64) -> StoreFuture<'_, Vec<Scheduled>> {
        Box::pin(self.write(move |txn| claim_in(txn, now, limit, lease_ms)))
    }

    fn next_due(&self) -> StoreFuture<'_, Option<UnixMs>> {
        Box::pin(self.read(read_next_due))
    }

    fn settle<'a>(&'a self, status_id: &'a str, outcome: Outcome) -> StoreFuture<'a, bool> {
        let id = status_id.to_owned();
        Box::pin(self.write(move |txn| settle_in(txn, &id, &outcome)))
    }

    fn set_flags<'a>(&'a self, status_id: &'a str, flags: KeepFlags) -> StoreFuture<'a, bool> {
        let id = status_id.to_owned();
        Box::pin(self.write(move |txn| set_flags_in(txn, &id, flags)))
    }

    fn counts(&self) -> StoreFuture<'_, ScheduleCounts> {
        Box::pin(self.read(|txn| {
            let counts = txn.open_table(COUNTS).map_err(backend)?;
            let mut by_state = std::collections::BTreeMap::new();
            for state in ExpiryState::ALL {
                let n = counts.get(state.name()).map_err(backend)?.map(|v| v.value()).unwrap_or(0);
                by_state.insert(state.name().to_owned(), n);
            }
            Ok(ScheduleCounts { by_state, next_due: read_next_due(txn)? })
        }))
    }

    fn list(&self, state: Option<ExpiryState>, limit: usize) -> StoreFuture<'_, Vec<Scheduled>> {
        Box::pin(self.read(move |txn| {
            let mut out = Vec::new();
            if state == Some(ExpiryState::Failed) {
                // The failed index is small; no need to walk every item.
                let failed = txn.open_table(FAILED).map_err(backend)?;
                for entry in failed.iter().map_err(backend)? {
                    let (k, _) = entry.map_err(backend)?;
                    if out.len() >= limit {
                        break;
                    }
                    if let Some(item) = read_item(txn, k.value())? {
                        out.push(item);
                    }
                }
                return Ok(out);
            }
            let items = txn.open_table(ITEMS).map_err(backend)?;
            for entry in items.iter().map_err(backend)? {
                if out.len() >= limit {
                    break;
                }
                let (k, v) = entry.map_err(backend)?;
                let item: Scheduled = decode(k.value(), v.value())?;
                if state.is_none_or(|s| s == item.state) {
                    out.push(item);
                }
            }
            Ok(out)
        }))
    }
}

impl CredentialStore for EmbeddedStore {
    fn offer_credential(&self, cred: SealedCredential) -> StoreFuture<'_, u64> {
        Box::pin(self.write(move |txn| {
            let n = put_credential(txn, &cred, now_ms())?;
            // Kept only if a re-queued item took it.
            credential_ref(txn, &cred.id, 0)?;
            Ok(n)
        }))
    }

    fn credential<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<SealedCredential>> {
        let id = id.to_owned();
        Box::pin(self.read(move |txn| read_credential(txn, &id)))
    }

    fn account_credential<'a>(&'a self, account: &'a str) -> StoreFuture<'a, Option<SealedCredential>> {
        let account = account.to_owned();
        Box::pin(self.read(move |txn| {
            let by_account = txn.open_table(ACCOUNT_CREDENTIAL).map_err(backend)?;
            let id = by_account.get(account.as_str()).map_err(backend)?.map(|v| v.value().to_owned());
            match id {
                Some(id) => read_credential(txn, &id),
                None => Ok(None),
            }
        }))
    }

    fn credential_count(&self) -> StoreFuture<'_, u64> {
        Box::pin(self.read(|txn| txn.open_table(CREDENTIALS).map_err(backend)?.len().map_err(backend)))
    }
}

// ---------------------------------------------------------------------------------------
// Shield: first-seen senders and the quarantine.
// ---------------------------------------------------------------------------------------

fn append_audit(txn: &WriteTransaction, record: &AuditRecord) -> Result<(), StoreError> {
    let mut audit = txn.open_table(SHIELD_AUDIT).map_err(backend)?;
    let next = audit.last().map_err(backend)?.map_or(0, |(k, _)| k.value() + 1);
    audit.insert(next, encode(record)?.as_slice()).map_err(backend)?;
    Ok(())
}

impl ShieldStore for EmbeddedStore {
    fn first_seen<'a>(&'a self, actor: &'a str) -> StoreFuture<'a, Option<UnixMs>> {
        let actor = actor.to_owned();
        Box::pin(self.read(move |txn| {
            let table = txn.open_table(SHIELD_FIRST_SEEN).map_err(backend)?;
            Ok(table.get(actor.as_str()).map_err(backend)?.map(|v| v.value()))
        }))
    }

    fn record_first_seen(&self, seen: Vec<(String, UnixMs)>) -> StoreFuture<'_, ()> {
        Box::pin(self.write(move |txn| {
            let mut table = txn.open_table(SHIELD_FIRST_SEEN).map_err(backend)?;
            for (actor, at) in &seen {
                let existing = table.get(actor.as_str()).map_err(backend)?.map(|v| v.value());
                if existing.is_none_or(|old| *at < old) {
                    table.insert(actor.as_str(), *at).map_err(backend)?;
                }
            }
            Ok(())
        }))
    }

    fn follows<'a>(&'a self, account: &'a str, actor: &'a str) -> StoreFuture<'a, bool> {
        let (account, actor) = (account.to_owned(), actor.to_owned());
        Box::pin(self.read(move |txn| {
            let table = txn.open_table(SHIELD_FOLLOWS).map_err(backend)?;
            Ok(table.get((account.as_str(), actor.as_str())).map_err(backend)?.is_some())
        }))
    }

    fn record_follows(&self, changes: Vec<FollowChange>) -> StoreFuture<'_, ()> {
        Box::pin(self.write(move |txn| {
            let mut table = txn.open_table(SHIELD_FOLLOWS).map_err(backend)?;
            let now = now_ms();
            for c in &changes {
                let key = (c.account.as_str(), c.actor.as_str());
                if c.following {
                    table.insert(key, now).map_err(backend)?;
                } else {
                    table.remove(key).map_err(backend)?;
                }
            }
            Ok(())
        }))
    }

    fn put_held(&self, held: HeldDelivery, audit: AuditRecord) -> StoreFuture<'_, ()> {
        Box::pin(self.write(move |txn| {
            let mut table = txn.open_table(SHIELD_HELD).map_err(backend)?;
            table.insert(held.id, encode(&held)?.as_slice()).map_err(backend)?;
            append_audit(txn, &audit)
        }))
    }

    fn remove_held(&self, id: u64, audit: AuditRecord) -> StoreFuture<'_, Option<HeldDelivery>> {
        Box::pin(self.write(move |txn| {
            let mut table = txn.open_table(SHIELD_HELD).map_err(backend)?;
            let removed = table.remove(id).map_err(backend)?;
            let held: Option<HeldDelivery> =
                removed.map(|v| decode(&format!("shield_held/{id}"), v.value())).transpose()?;
            if held.is_some() {
                append_audit(txn, &audit)?;
            }
            Ok(held)
        }))
    }

    fn held(&self, id: u64) -> StoreFuture<'_, Option<HeldDelivery>> {
        Box::pin(self.read(move |txn| {
            let table = txn.open_table(SHIELD_HELD).map_err(backend)?;
            let found = table.get(id).map_err(backend)?;
            found.map(|v| decode(&format!("shield_held/{id}"), v.value())).transpose()
        }))
    }

    fn list_held(&self) -> StoreFuture<'_, Vec<HeldDelivery>> {
        Box::pin(self.read(|txn| {
            let table = txn.open_table(SHIELD_HELD).map_err(backend)?;
            let mut out = Vec::new();
            for row in table.iter().map_err(backend)? {
                let (k, v) = row.map_err(backend)?;
                out.push(decode(&format!("shield_held/{}", k.value()), v.value())?);
            }
            Ok(out)
        }))
    }

    fn audit_log(&self, limit: usize) -> StoreFuture<'_, Vec<AuditRecord>> {
        Box::pin(self.read(move |txn| {
            let table = txn.open_table(SHIELD_AUDIT).map_err(backend)?;
            let mut out = Vec::new();
            for row in table.iter().map_err(backend)?.rev().take(limit) {
                let (k, v) = row.map_err(backend)?;
                out.push(decode(&format!("shield_audit/{}", k.value()), v.value())?);
            }
            Ok(out)
        }))
    }

    fn put_sealed_held(&self, id: u64, sealed: Vec<u8>, audit: AuditRecord) -> StoreFuture<'_, ()> {
        Box::pin(self.write(move |txn| {
            let mut table = txn.open_table(SHIELD_SEALED_HELD).map_err(backend)?;
            table.insert(id, sealed.as_slice()).map_err(backend)?;
            append_audit(txn, &audit)
        }))
    }

    fn remove_sealed_held(&self, id: u64, audit: AuditRecord) -> StoreFuture<'_, bool> {
        Box::pin(self.write(move |txn| {
            let mut table = txn.open_table(SHIELD_SEALED_HELD).map_err(backend)?;
            let removed = table.remove(id).map_err(backend)?.is_some();
            if removed {
                append_audit(txn, &audit)?;
            }
            Ok(removed)
        }))
    }

    fn sealed_held(&self, id: u64) -> StoreFuture<'_, Option<Vec<u8>>> {
        Box::pin(self.read(move |txn| {
            let table = match txn.open_table(SHIELD_SEALED_HELD) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(backend(e)),
            };
            Ok(table.get(id).map_err(backend)?.map(|v| v.value().to_vec()))
        }))
    }

    fn list_sealed_held(&self) -> StoreFuture<'_, Vec<(u64, Vec<u8>)>> {
        Box::pin(self.read(|txn| {
            let table = match txn.open_table(SHIELD_SEALED_HELD) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(backend(e)),
            };
            let mut out = Vec::new();
            for row in table.iter().map_err(backend)? {
                let (k, v) = row.map_err(backend)?;
                out.push((k.value(), v.value().to_vec()));
            }
            Ok(out)
        }))
    }

    fn forget_follows(&self) -> StoreFuture<'_, u64> {
        Box::pin(self.write(|txn| {
            let mut table = txn.open_table(SHIELD_FOLLOWS).map_err(backend)?;
            let n = table.len().map_err(backend)?;
            table.retain(|_, _| false).map_err(backend)?;
            Ok(n)
        }))
    }
}

#[cfg(test)]
mod shield_tests {
    use super::*;
    use crate::store::HeldState;

    fn audit(id: u64, action: &str) -> AuditRecord {
        AuditRecord { at: now_ms(), id, domain: "r.example".into(), action: action.into(), detail: String::new() }
    }

    #[tokio::test]
    async fn follows_are_learned_unlearned_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let follow = |account: &str, actor: &str, following| FollowChange {
            account: account.into(),
            actor: actor.into(),
            following,
        };
        {
            let store = EmbeddedStore::open(dir.path(), 1 << 20).unwrap();
            store
                .record_follows(vec![
                    follow("alice", "https://r.example/u/a", true),
                    follow("alice", "https://r.example/u/b", true),
                    follow("alice", "https://r.example/u/b", false),
                ])
                .await
                .unwrap();
        }
        let store = EmbeddedStore::open(dir.path(), 1 << 20).unwrap();
        assert!(store.follows("alice", "https://r.example/u/a").await.unwrap());
        assert!(!store.follows("alice", "https://r.example/u/b").await.unwrap(), "unfollowed after following");
        assert!(!store.follows("bob", "https://r.example/u/a").await.unwrap(), "a follow is one member's");
    }

    #[tokio::test]
    async fn first_seen_and_quarantine_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let held = HeldDelivery {
            id: 7,
            received: 1,
            date: Some(2),
            method: "POST".into(),
            path_and_query: "/inbox".into(),
            headers: vec![("date".into(), b"x".to_vec())],
            body: vec![0, 159, 146, 150],
            domain: "r.example".into(),
            targets: vec!["alice".into()],
            state: HeldState::Held,
        };
        {
            let store = EmbeddedStore::open(dir.path(), 1 << 20).unwrap();
            store.record_first_seen(vec![("https://r.example/u/a".into(), 50)]).await.unwrap();
            store.record_first_seen(vec![("https://r.example/u/a".into(), 90)]).await.unwrap();
            store.put_held(held.clone(), audit(7, "held")).await.unwrap();
        }
        let store = EmbeddedStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(store.first_seen("https://r.example/u/a").await.unwrap(), Some(50));
        assert_eq!(store.first_seen("https://r.example/u/b").await.unwrap(), None);
        assert_eq!(store.list_held().await.unwrap(), vec![held.clone()]);
        assert_eq!(store.held(7).await.unwrap(), Some(held.clone()));
        assert_eq!(store.remove_held(7, audit(7, "released")).await.unwrap(), Some(held));
        assert_eq!(store.remove_held(7, audit(7, "released")).await.unwrap(), None);
        let log = store.audit_log(10).await.unwrap();
        assert_eq!(log.iter().map(|a| a.action.as_str()).collect::<Vec<_>>(), ["released", "held"]);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn cred(id: &str, account: &str) -> SealedCredential {
        SealedCredential { id: id.into(), account: account.into(), sealed: vec![1, 2, 3] }
    }

    fn item(id: &str, deadline: UnixMs, cred: &str) -> Scheduled {
        let mut s = Scheduled::pending(id, "alice", "dm", 0, deadline);
        s.credential = Some(cred.into());
        s
    }

    #[tokio::test]
    async fn schedule_claim_settle_and_credentials_follow() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), 1 << 20).unwrap();
        store
            .schedule(vec![(item("1", 100, "c1"), Some(cred("c1", "alice"))), (item("2", 50, "c1"), None)])
            .await
            .unwrap();
        assert_eq!(store.next_due().await.unwrap(), Some(50));
        assert_eq!(store.credential_count().await.unwrap(), 1);

        let claimed = store.claim_due(60, 10, 1000).await.unwrap();
        assert_eq!(claimed.iter().map(|s| s.status_id.as_str()).collect::<Vec<_>>(), ["2"]);
        // The claim's lease is now its due time: a crashed claimer's item comes back.
        assert_eq!(store.next_due().await.unwrap(), Some(100));
        assert_eq!(store.claim_due(1059, 10, 1000).await.unwrap().len(), 1);
        assert!(store.settle("2", Outcome::Deleted).await.unwrap());
        assert!(store.settle("1", Outcome::Deleted).await.unwrap());
        assert_eq!(store.next_due().await.unwrap(), None);
        // Nothing pending needs the token now: its sealed copy is gone.
        assert_eq!(store.credential_count().await.unwrap(), 0);
        let counts = store.counts().await.unwrap();
        assert_eq!(counts.by_state["deleted"], 2);
        assert_eq!(counts.by_state["pending"], 0);
        assert_eq!(counts.by_state["claimed"], 0);
    }

    #[tokio::test]
    async fn failed_items_wait_for_a_new_credential() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), 1 << 20).unwrap();
        store.schedule(vec![(item("1", 10, "old"), Some(cred("old", "alice")))]).await.unwrap();
        store.claim_due(20, 10, 1000).await.unwrap();
        store.settle("1", Outcome::Failed("token revoked (401)".into())).await.unwrap();
        assert!(store.claim_due(10_000, 10, 1000).await.unwrap().is_empty());
        assert_eq!(store.list(Some(ExpiryState::Failed), 10).await.unwrap().len(), 1);
        // The same token again changes nothing; a new one re-queues.
        assert_eq!(store.schedule(vec![(item("2", 10, "old"), Some(cred("old", "alice")))]).await.unwrap(), 0);
        assert_eq!(store.schedule(vec![(item("3", 10, "new"), Some(cred("new", "alice")))]).await.unwrap(), 1);
        let again = store.lookup("1").await.unwrap().unwrap();
        assert_eq!((again.state, again.credential.as_deref()), (ExpiryState::Pending, Some("new")));
        assert_eq!(store.list(Some(ExpiryState::Failed), 10).await.unwrap().len(), 0);

        // Offering a credential with nothing failed stores nothing.
        assert_eq!(store.offer_credential(cred("other", "bob")).await.unwrap(), 0);
        assert!(store.credential("other").await.unwrap().is_none());
        store.settle("1", Outcome::Failed("401".into())).await.unwrap();
        assert_eq!(store.offer_credential(cred("newer", "alice")).await.unwrap(), 1);
        assert!(store.credential("newer").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn final_items_are_not_rescheduled_and_kept_items_recheck_on_flag_change() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), 1 << 20).unwrap();
        store.schedule(vec![(item("1", 10, "c"), Some(cred("c", "alice")))]).await.unwrap();
        store.settle("1", Outcome::Deleted).await.unwrap();
        store.schedule(vec![(item("1", 99, "c"), Some(cred("c", "alice")))]).await.unwrap();
        assert_eq!(store.lookup("1").await.unwrap().unwrap().state, ExpiryState::Deleted);
        assert_eq!(store.credential_count().await.unwrap(), 0);

        store.schedule(vec![(item("2", 10, "c"), Some(cred("c", "alice")))]).await.unwrap();
        store.settle("2", Outcome::Kept("pinned".into())).await.unwrap();
        assert_eq!(store.next_due().await.unwrap(), None);
        store.set_flags("2", KeepFlags { pinned: false, favourited: true, bookmarked: false }).await.unwrap();
        assert_eq!(store.lookup("2").await.unwrap().unwrap().state, ExpiryState::Pending);
    }

    #[tokio::test]
    async fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = EmbeddedStore::open(dir.path(), 1 << 20).unwrap();
            store.schedule(vec![(item("7", 42, "c"), Some(cred("c", "alice")))]).await.unwrap();
        }
        // Dropping the last handle closed the file: it opens again at once.
        let store = EmbeddedStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(store.next_due().await.unwrap(), Some(42));
        assert!(store.credential("c").await.unwrap().is_some());
        assert!(store.account_credential("alice").await.unwrap().is_some());
    }
}
