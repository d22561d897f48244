//! The embedded backend: one redb file (`<data_dir>/pavise.redb`), opened once per process.
//!
//! Writes go through a single writer thread that *group-commits*: whatever writes are
//! waiting when a commit starts share it, so one fsync covers many posts under load while
//! each caller still resumes only after its own write is on disk. Every commit is
//! `Durability::Immediate` with redb's quick-repair enabled, so a `kill -9` loses nothing
//! that was acknowledged and the next start does not have to walk the whole file.
//! Reads run on tokio's blocking pool against a snapshot.
//!
//! **Sealed at rest.** Opened with a [`RecordSeal`] ([`EmbeddedStore::open_sealed`], what the
//! relay does), the expiry tables never hold a status id or an account name in clear: their
//! keys are keyed hashes and their values are sealed (see [`super::seal`] for why deleting
//! rows alone would not do). [`EmbeddedStore::open`] keeps them in clear, for tests and
//! benchmarks; a store knows which it is (`store_meta`) and refuses to be opened the other
//! way. An older clear store is converted when first opened sealed, and its final items
//! (deleted, cancelled) are purged on the way.
//!
//! Tables, one set per concern (a feature adds its own, prefixed by its name); "key" below
//! is the status id (or account) itself in a clear store and its keyed hash in a sealed one:
//! - `store_meta`: `format` (clear | sealed) and the sealing key's check value;
//! - `expiry_items`: item key → the [`Scheduled`] item (JSON, sealed);
//! - `expiry_due`: (next attempt, item key) → () — pending, claimed and deleted items (the
//!   last wait for their confirmation), so the next due item is the first key and a lapsed
//!   claim is simply due again;
//! - `expiry_deadlines`: (deadline, item key) → () — items in a state that hides the post,
//!   from which the relay's in-memory index of hidden posts is built;
//! - `expiry_failed`: item key → account key — the few items waiting for a new credential;
//! - `expiry_counts`: state name → count, kept in step with `expiry_items`, plus `gone`
//!   (items purged: a number is all that remains of them);
//! - `expiry_credentials`: credential id → sealed token, account and reference count;
//! - `expiry_account_credential`: account key → the newest credential id seen for it;
//! - `expiry_sweeps`: account key → the [`SweepProgress`] of that member's archive sweep;
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
    AuditRecord, CredentialStore, ExpiryState, FollowChange, HeldDelivery, KeepFlags, Outcome, RecordSeal,
    ScheduleCounts, ScheduleStore, Scheduled, SealedCredential, ShieldStore, StoreError, StoreFuture, SweepProgress,
    UnixMs, now_ms,
};

const META: TableDefinition<'static, &str, &str> = TableDefinition::new("store_meta");
const ITEMS: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("expiry_items");
const DUE: TableDefinition<'static, (u64, &str), ()> = TableDefinition::new("expiry_due");
const DEADLINES: TableDefinition<'static, (u64, &str), ()> = TableDefinition::new("expiry_deadlines");
const FAILED: TableDefinition<'static, &str, &str> = TableDefinition::new("expiry_failed");
const COUNTS: TableDefinition<'static, &str, u64> = TableDefinition::new("expiry_counts");
const CREDENTIALS: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("expiry_credentials");
const ACCOUNT_CREDENTIAL: TableDefinition<'static, &str, &str> = TableDefinition::new("expiry_account_credential");
const SWEEPS: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("expiry_sweeps");

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

/// The `expiry_counts` entry for purged items.
const GONE: &str = "gone";

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
    codec: Codec,
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
        f.debug_struct("EmbeddedStore")
            .field("path", &self.inner.path)
            .field("sealed", &self.inner.codec.0.is_some())
            .finish_non_exhaustive()
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

/// How the expiry tables' keys and values are written: in clear, or hashed and sealed.
#[derive(Clone)]
struct Codec(Option<Arc<RecordSeal>>);

impl Codec {
    fn item_key(&self, status_id: &str) -> String {
        match &self.0 {
            Some(seal) => seal.key("item", status_id),
            None => status_id.to_owned(),
        }
    }

    fn account_key(&self, account: &str) -> String {
        match &self.0 {
            Some(seal) => seal.key("account", account),
            None => account.to_owned(),
        }
    }

    fn put<T: Serialize>(&self, table: &str, key: &str, value: &T) -> Result<Vec<u8>, StoreError> {
        let plain = encode(value)?;
        match &self.0 {
            Some(seal) => seal.seal(table, key, &plain).map_err(|e| StoreError::Backend(e.to_string())),
            None => Ok(plain),
        }
    }

    fn get<T: for<'de> Deserialize<'de>>(&self, table: &str, key: &str, bytes: &[u8]) -> Result<T, StoreError> {
        match &self.0 {
            Some(seal) => {
                let plain = seal
                    .open(table, key, bytes)
                    .map_err(|e| StoreError::Corrupt { key: format!("{table}/{key}"), message: e.to_string() })?;
                decode(key, &plain)
            }
            None => decode(key, bytes),
        }
    }
}

impl EmbeddedStore {
    /// Opens (or creates) `<data_dir>/pavise.redb` with a page cache of `cache_bytes`,
    /// keeping the expiry tables in clear (tests, benchmarks). Refuses a sealed store.
    /// Blocking: call before serving, or from a blocking task.
    pub fn open(data_dir: &Path, cache_bytes: usize) -> Result<EmbeddedStore, StoreError> {
        Self::open_with(data_dir, cache_bytes, None)
    }

    /// Opens (or creates) the store with the expiry tables sealed under `seal`; an older
    /// clear store is converted on the way. What the relay and the CLI use.
    pub fn open_sealed(data_dir: &Path, cache_bytes: usize, seal: RecordSeal) -> Result<EmbeddedStore, StoreError> {
        Self::open_with(data_dir, cache_bytes, Some(seal))
    }

    fn open_with(data_dir: &Path, cache_bytes: usize, seal: Option<RecordSeal>) -> Result<EmbeddedStore, StoreError> {
        let path = data_dir.join(FILE_NAME);
        let open_err = |message: String| StoreError::Open { path: path.display().to_string(), message };
        super::perms::create_private_dir(data_dir).map_err(|e| open_err(e.to_string()))?;
        let db = open_db(&path, cache_bytes).map_err(|e| open_err(e.to_string()))?;
        let codec = Codec(seal.map(Arc::new));
        // Create every table up front, so readers never meet a missing one.
        {
            let txn = db.begin_write().map_err(|e| open_err(e.to_string()))?;
            let created = (|| -> Result<(), StoreError> {
                txn.open_table(META).map_err(backend)?;
                txn.open_table(ITEMS).map_err(backend)?;
                txn.open_table(DUE).map_err(backend)?;
                txn.open_table(DEADLINES).map_err(backend)?;
                txn.open_table(FAILED).map_err(backend)?;
                txn.open_table(COUNTS).map_err(backend)?;
                txn.open_table(CREDENTIALS).map_err(backend)?;
                txn.open_table(ACCOUNT_CREDENTIAL).map_err(backend)?;
                txn.open_table(SWEEPS).map_err(backend)?;
                txn.open_table(SHIELD_FIRST_SEEN).map_err(backend)?;
                txn.open_table(SHIELD_FOLLOWS).map_err(backend)?;
                txn.open_table(SHIELD_HELD).map_err(backend)?;
                txn.open_table(SHIELD_AUDIT).map_err(backend)?;
                settle_format(&txn, &codec)
            })();
            created.map_err(|e| open_err(e.to_string()))?;
            txn.commit().map_err(|e| open_err(e.to_string()))?;
        }
        // redb creates its file with the process umask; the data dir is pavise's alone.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| open_err(e.to_string()))?;
        }
        let db = Arc::new(db);
        let (writer, jobs) = mpsc::channel::<Box<dyn Job>>();
        let thread_db = db.clone();
        let thread = std::thread::Builder::new()
            .name("pavise-store".into())
            .spawn(move || write_loop(&thread_db, &jobs))
            .map_err(|e| open_err(e.to_string()))?;
        Ok(EmbeddedStore { inner: Arc::new(Inner { db, writer: Some(writer), thread: Some(thread), path, codec }) })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn codec(&self) -> Codec {
        self.inner.codec.clone()
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

/// Records (or checks) whether the expiry tables are clear or sealed, and with which key;
/// converts a store written before the format was recorded.
fn settle_format(txn: &WriteTransaction, codec: &Codec) -> Result<(), StoreError> {
    let (format, check) = {
        let meta = txn.open_table(META).map_err(backend)?;
        let get = |k: &str| -> Result<Option<String>, StoreError> {
            Ok(meta.get(k).map_err(backend)?.map(|v| v.value().to_owned()))
        };
        (get("format")?, get("check")?)
    };
    let wanted = if codec.0.is_some() { "sealed" } else { "clear" };
    match (format.as_deref(), &codec.0) {
        (Some("sealed"), Some(seal)) => {
            if check.as_deref() != Some(seal.check_value().as_str()) {
                return Err(StoreError::Backend(
                    "the store was sealed with another key (expiry.key_file); it cannot be read with this one".into(),
                ));
            }
            return Ok(());
        }
        (Some("sealed"), None) => {
            return Err(StoreError::Backend("the store is sealed; open it with its key (expiry.key_file)".into()));
        }
        (Some("clear"), None) => return Ok(()),
        // Clear (or older, unmarked) data opened sealed, or unmarked data opened clear.
        (format, _) => upgrade(txn, codec, format.is_none())?,
    }
    let mut meta = txn.open_table(META).map_err(backend)?;
    meta.insert("format", wanted).map_err(backend)?;
    if let Some(seal) = &codec.0 {
        meta.insert("check", seal.check_value().as_str()).map_err(backend)?;
    }
    Ok(())
}

/// Rewrites clear expiry tables in `codec`'s format, rebuilding every index. A `legacy`
/// store (from before the format was recorded) kept items after they ended (deleted meant
/// final then, cancelled stayed): those are purged on the way.
fn upgrade(txn: &WriteTransaction, codec: &Codec, legacy: bool) -> Result<(), StoreError> {
    let clear = Codec(None);
    let mut items: Vec<Scheduled> = Vec::new();
    {
        let table = txn.open_table(ITEMS).map_err(backend)?;
        for row in table.iter().map_err(backend)? {
            let (k, v) = row.map_err(backend)?;
            items.push(clear.get("expiry_items", k.value(), v.value())?);
        }
    }
    let mut creds: Vec<(String, CredentialRow)> = Vec::new();
    {
        let table = txn.open_table(CREDENTIALS).map_err(backend)?;
        for row in table.iter().map_err(backend)? {
            let (k, v) = row.map_err(backend)?;
            creds.push((k.value().to_owned(), clear.get("expiry_credentials", k.value(), v.value())?));
        }
    }
    let mut newest: Vec<(String, String)> = Vec::new();
    {
        let table = txn.open_table(ACCOUNT_CREDENTIAL).map_err(backend)?;
        for row in table.iter().map_err(backend)? {
            let (k, v) = row.map_err(backend)?;
            newest.push((k.value().to_owned(), v.value().to_owned()));
        }
    }
    if items.is_empty() && creds.is_empty() && newest.is_empty() {
        return Ok(());
    }
    let gone_before = txn.open_table(COUNTS).map_err(backend)?.get(GONE).map_err(backend)?.map_or(0, |v| v.value());
    txn.delete_table(ITEMS).map_err(backend)?;
    txn.delete_table(DUE).map_err(backend)?;
    txn.delete_table(DEADLINES).map_err(backend)?;
    txn.delete_table(FAILED).map_err(backend)?;
    txn.delete_table(COUNTS).map_err(backend)?;
    txn.delete_table(CREDENTIALS).map_err(backend)?;
    txn.delete_table(ACCOUNT_CREDENTIAL).map_err(backend)?;
    {
        // Credentials first, with no references yet: `replace` takes them again.
        let mut table = txn.open_table(CREDENTIALS).map_err(backend)?;
        for (id, mut row) in creds {
            row.refs = 0;
            table.insert(id.as_str(), codec.put("expiry_credentials", &id, &row)?.as_slice()).map_err(backend)?;
        }
        let mut by_account = txn.open_table(ACCOUNT_CREDENTIAL).map_err(backend)?;
        for (account, id) in newest {
            by_account.insert(codec.account_key(&account).as_str(), id.as_str()).map_err(backend)?;
        }
    }
    let mut gone = gone_before;
    for item in items {
        if item.state == ExpiryState::Cancelled || (legacy && item.state == ExpiryState::Deleted) {
            gone += 1;
            continue;
        }
        replace(txn, codec, None, &item)?;
    }
    {
        // Credentials no surviving item needs go now.
        let ids: Vec<String> = {
            let table = txn.open_table(CREDENTIALS).map_err(backend)?;
            let mut ids = Vec::new();
            for row in table.iter().map_err(backend)? {
                ids.push(row.map_err(backend)?.0.value().to_owned());
            }
            ids
        };
        for id in ids {
            credential_ref(txn, codec, &id, 0)?;
        }
    }
    txn.open_table(COUNTS).map_err(backend)?.insert(GONE, gone).map_err(backend)?;
    Ok(())
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

fn get_item_by_key(txn: &WriteTransaction, codec: &Codec, key: &str) -> Result<Option<Scheduled>, StoreError> {
    let items = txn.open_table(ITEMS).map_err(backend)?;
    let found = items.get(key).map_err(backend)?;
    found.map(|v| codec.get("expiry_items", key, v.value())).transpose()
}

fn get_item(txn: &WriteTransaction, codec: &Codec, id: &str) -> Result<Option<Scheduled>, StoreError> {
    get_item_by_key(txn, codec, &codec.item_key(id))
}

/// States the scheduler looks at again by `next_attempt`.
fn is_due(state: ExpiryState) -> bool {
    matches!(state, ExpiryState::Pending | ExpiryState::Claimed | ExpiryState::Deleted)
}

/// Whether an item belongs in the deadline index (its post is hidden once past it).
fn has_deadline(item: &Scheduled) -> bool {
    item.publication.is_none() && item.state.hides()
}

fn bump(txn: &WriteTransaction, name: &str, delta: i64) -> Result<(), StoreError> {
    let mut counts = txn.open_table(COUNTS).map_err(backend)?;
    let current = counts.get(name).map_err(backend)?.map(|v| v.value()).unwrap_or(0);
    counts.insert(name, current.saturating_add_signed(delta)).map_err(backend)?;
    Ok(())
}

fn read_credential_row(txn: &WriteTransaction, codec: &Codec, id: &str) -> Result<Option<CredentialRow>, StoreError> {
    let creds = txn.open_table(CREDENTIALS).map_err(backend)?;
    let found = creds.get(id).map_err(backend)?;
    found.map(|v| codec.get("expiry_credentials", id, v.value())).transpose()
}

fn credential_ref(txn: &WriteTransaction, codec: &Codec, id: &str, delta: i64) -> Result<(), StoreError> {
    let Some(mut row) = read_credential_row(txn, codec, id)? else { return Ok(()) };
    row.refs = row.refs.saturating_add_signed(delta);
    let mut creds = txn.open_table(CREDENTIALS).map_err(backend)?;
    if row.refs == 0 {
        // Nothing pending needs this token any more: forget it.
        creds.remove(id).map_err(backend)?;
        let mut by_account = txn.open_table(ACCOUNT_CREDENTIAL).map_err(backend)?;
        let account_key = codec.account_key(&row.account);
        let points_here = by_account.get(account_key.as_str()).map_err(backend)?.is_some_and(|v| v.value() == id);
        if points_here {
            by_account.remove(account_key.as_str()).map_err(backend)?;
        }
    } else if delta != 0 {
        creds.insert(id, codec.put("expiry_credentials", id, &row)?.as_slice()).map_err(backend)?;
    }
    Ok(())
}

/// The credential an item holds a reference to, if its state needs one.
fn held_credential(item: Option<&Scheduled>) -> Option<String> {
    item.filter(|s| s.state.needs_credential()).and_then(|s| s.credential.clone())
}

/// The one way an item changes: keeps the due, deadline and failed indexes, the counts and
/// the credential references in step with the item itself.
fn replace(txn: &WriteTransaction, codec: &Codec, old: Option<&Scheduled>, new: &Scheduled) -> Result<(), StoreError> {
    let key = codec.item_key(&new.status_id);
    let key = key.as_str();
    {
        let mut due = txn.open_table(DUE).map_err(backend)?;
        if let Some(old) = old.filter(|o| is_due(o.state)) {
            due.remove((old.next_attempt, key)).map_err(backend)?;
        }
        if is_due(new.state) {
            due.insert((new.next_attempt, key), ()).map_err(backend)?;
        }
    }
    {
        let mut deadlines = txn.open_table(DEADLINES).map_err(backend)?;
        if let Some(old) = old.filter(|o| has_deadline(o)) {
            deadlines.remove((old.deadline, key)).map_err(backend)?;
        }
        if has_deadline(new) {
            deadlines.insert((new.deadline, key), ()).map_err(backend)?;
        }
    }
    {
        let mut failed = txn.open_table(FAILED).map_err(backend)?;
        if old.is_some_and(|o| o.state == ExpiryState::Failed) {
            failed.remove(key).map_err(backend)?;
        }
        if new.state == ExpiryState::Failed {
            failed.insert(key, codec.account_key(&new.account).as_str()).map_err(backend)?;
        }
    }
    if old.map(|o| o.state) != Some(new.state) {
        if let Some(old) = old {
            bump(txn, old.state.name(), -1)?;
        }
        bump(txn, new.state.name(), 1)?;
    }
    let (before, after) = (held_credential(old), held_credential(Some(new)));
    if before != after {
        // Take the new reference first, so a shared credential never drops to zero between.
        if let Some(c) = &after {
            credential_ref(txn, codec, c, 1)?;
        }
        if let Some(c) = &before {
            credential_ref(txn, codec, c, -1)?;
        }
    }
    let mut items = txn.open_table(ITEMS).map_err(backend)?;
    items.insert(key, codec.put("expiry_items", key, new)?.as_slice()).map_err(backend)?;
    Ok(())
}

/// Removes an item and every index entry of it; only the `gone` count remembers it.
fn purge(txn: &WriteTransaction, codec: &Codec, old: &Scheduled) -> Result<(), StoreError> {
    let key = codec.item_key(&old.status_id);
    let key = key.as_str();
    if is_due(old.state) {
        txn.open_table(DUE).map_err(backend)?.remove((old.next_attempt, key)).map_err(backend)?;
    }
    if has_deadline(old) {
        txn.open_table(DEADLINES).map_err(backend)?.remove((old.deadline, key)).map_err(backend)?;
    }
    if old.state == ExpiryState::Failed {
        txn.open_table(FAILED).map_err(backend)?.remove(key).map_err(backend)?;
    }
    bump(txn, old.state.name(), -1)?;
    bump(txn, GONE, 1)?;
    if let Some(c) = held_credential(Some(old)) {
        credential_ref(txn, codec, &c, -1)?;
    }
    txn.open_table(ITEMS).map_err(backend)?.remove(key).map_err(backend)?;
    Ok(())
}

fn schedule_in(
    txn: &WriteTransaction,
    codec: &Codec,
    items: &[(Scheduled, Option<SealedCredential>)],
    only_new: bool,
) -> Result<(u64, Vec<bool>), StoreError> {
    let now = now_ms();
    let mut requeued = 0;
    let mut inserted = Vec::with_capacity(items.len());
    for (item, cred) in items {
        if let Some(cred) = cred {
            requeued += put_credential(txn, codec, cred, now)?;
        }
        let old = get_item(txn, codec, &item.status_id)?;
        inserted.push(old.is_none());
        let new = match &old {
            Some(_) if only_new => continue,
            // The instance already answered its deletion: nothing to schedule any more.
            Some(o) if o.state == ExpiryState::Deleted => continue,
            Some(o) => Scheduled {
                flags: o.flags,
                credential: item.credential.clone().or_else(|| o.credential.clone()),
                created_at: o.created_at,
                host: item.host.clone().or_else(|| o.host.clone()),
                ..item.clone()
            },
            None => item.clone(),
        };
        replace(txn, codec, old.as_ref(), &new)?;
    }
    // A credential put above that no item took (all were final) must not linger.
    for cred in items.iter().filter_map(|(_, c)| c.as_ref()) {
        credential_ref(txn, codec, &cred.id, 0)?;
    }
    Ok((requeued, inserted))
}

/// Stores a credential if new; when it is new *for its account*, re-queues the account's
/// failed items with it. Returns how many were re-queued.
fn put_credential(
    txn: &WriteTransaction,
    codec: &Codec,
    cred: &SealedCredential,
    now: UnixMs,
) -> Result<u64, StoreError> {
    if read_credential_row(txn, codec, &cred.id)?.is_none() {
        let row = CredentialRow { account: cred.account.clone(), sealed: cred.sealed.clone(), refs: 0 };
        let mut creds = txn.open_table(CREDENTIALS).map_err(backend)?;
        creds.insert(cred.id.as_str(), codec.put("expiry_credentials", &cred.id, &row)?.as_slice()).map_err(backend)?;
    }
    let account_key = codec.account_key(&cred.account);
    let is_new_for_account = {
        let mut by_account = txn.open_table(ACCOUNT_CREDENTIAL).map_err(backend)?;
        let current = by_account.get(account_key.as_str()).map_err(backend)?.map(|v| v.value().to_owned());
        if current.as_deref() == Some(cred.id.as_str()) {
            false
        } else {
            by_account.insert(account_key.as_str(), cred.id.as_str()).map_err(backend)?;
            true
        }
    };
    if !is_new_for_account {
        return Ok(0);
    }
    let waiting: Vec<String> = {
        let failed = txn.open_table(FAILED).map_err(backend)?;
        let mut keys = Vec::new();
        for entry in failed.iter().map_err(backend)? {
            let (k, v) = entry.map_err(backend)?;
            if v.value() == account_key {
                keys.push(k.value().to_owned());
            }
        }
        keys
    };
    let mut n = 0;
    for key in waiting {
        let Some(old) = get_item_by_key(txn, codec, &key)? else { continue };
        let new = Scheduled {
            state: ExpiryState::Pending,
            next_attempt: now,
            credential: Some(cred.id.clone()),
            reason: Some("re-queued: a new token for the account appeared".into()),
            updated_at: now,
            ..old.clone()
        };
        replace(txn, codec, Some(&old), &new)?;
        n += 1;
    }
    Ok(n)
}

fn claim_in(
    txn: &WriteTransaction,
    codec: &Codec,
    now: UnixMs,
    limit: usize,
    lease_ms: u64,
) -> Result<Vec<Scheduled>, StoreError> {
    let keys: Vec<String> = {
        let due = txn.open_table(DUE).map_err(backend)?;
        let mut keys = Vec::new();
        for entry in due.iter().map_err(backend)? {
            let (k, _) = entry.map_err(backend)?;
            let (at, key) = k.value();
            if at > now || keys.len() >= limit {
                break;
            }
            keys.push(key.to_owned());
        }
        keys
    };
    let mut claimed = Vec::with_capacity(keys.len());
    for key in keys {
        let Some(old) = get_item_by_key(txn, codec, &key)? else { continue };
        let new = Scheduled {
            // A deleted item stays deleted while it is looked at again (its confirmation).
            state: if old.state == ExpiryState::Deleted { ExpiryState::Deleted } else { ExpiryState::Claimed },
            next_attempt: now.saturating_add(lease_ms),
            updated_at: now,
            ..old.clone()
        };
        replace(txn, codec, Some(&old), &new)?;
        claimed.push(new);
    }
    Ok(claimed)
}

fn settle_in(txn: &WriteTransaction, codec: &Codec, id: &str, outcome: &Outcome) -> Result<bool, StoreError> {
    let Some(old) = get_item(txn, codec, id)? else { return Ok(false) };
    let now = now_ms();
    let mut new = Scheduled { updated_at: now, ..old.clone() };
    match outcome {
        Outcome::Deleted { confirm_at } => {
            new.state = ExpiryState::Deleted;
            new.next_attempt = *confirm_at;
            new.reason = None;
        }
        Outcome::Gone | Outcome::Cancelled(_) => {
            purge(txn, codec, &old)?;
            return Ok(true);
        }
        Outcome::Kept(reason) => {
            new.state = ExpiryState::Kept;
            new.reason = Some(reason.clone());
        }
        Outcome::Retry { at, reason } => {
            // A deleted item whose confirmation failed stays deleted (the instance answered).
            if old.state != ExpiryState::Deleted {
                new.state = ExpiryState::Pending;
            }
            new.next_attempt = *at;
            new.attempts = old.attempts.saturating_add(1);
            new.reason = Some(reason.clone());
        }
        Outcome::Defer { at } => {
            if old.state != ExpiryState::Deleted {
                new.state = ExpiryState::Pending;
            }
            new.next_attempt = *at;
        }
        Outcome::Failed(reason) => {
            new.state = ExpiryState::Failed;
            new.attempts = old.attempts.saturating_add(1);
            new.reason = Some(reason.clone());
        }
    }
    replace(txn, codec, Some(&old), &new)?;
    Ok(true)
}

fn set_flags_in(txn: &WriteTransaction, codec: &Codec, id: &str, flags: KeepFlags) -> Result<bool, StoreError> {
    let Some(old) = get_item(txn, codec, id)? else { return Ok(false) };
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
    replace(txn, codec, Some(&old), &new)?;
    Ok(true)
}

fn read_item_by_key(txn: &redb::ReadTransaction, codec: &Codec, key: &str) -> Result<Option<Scheduled>, StoreError> {
    let items = txn.open_table(ITEMS).map_err(backend)?;
    let found = items.get(key).map_err(backend)?;
    found.map(|v| codec.get("expiry_items", key, v.value())).transpose()
}

fn read_next_due(txn: &redb::ReadTransaction) -> Result<Option<UnixMs>, StoreError> {
    let due = txn.open_table(DUE).map_err(backend)?;
    Ok(due.first().map_err(backend)?.map(|(k, _)| k.value().0))
}

fn read_credential(
    txn: &redb::ReadTransaction,
    codec: &Codec,
    id: &str,
) -> Result<Option<SealedCredential>, StoreError> {
    let creds = txn.open_table(CREDENTIALS).map_err(backend)?;
    let row: Option<CredentialRow> =
        creds.get(id).map_err(backend)?.map(|v| codec.get("expiry_credentials", id, v.value())).transpose()?;
    Ok(row.map(|r| SealedCredential { id: id.to_owned(), account: r.account, sealed: r.sealed }))
}

impl ScheduleStore for EmbeddedStore {
    fn schedule(&self, items: Vec<(Scheduled, Option<SealedCredential>)>) -> StoreFuture<'_, u64> {
        let codec = self.codec();
        Box::pin(self.write(move |txn| schedule_in(txn, &codec, &items, false).map(|(n, _)| n)))
    }

    fn schedule_new(&self, items: Vec<(Scheduled, Option<SealedCredential>)>) -> StoreFuture<'_, Vec<bool>> {
        let codec = self.codec();
        Box::pin(self.write(move |txn| schedule_in(txn, &codec, &items, true).map(|(_, inserted)| inserted)))
    }

    fn lookup<'a>(&'a self, status_id: &'a str) -> StoreFuture<'a, Option<Scheduled>> {
        let (codec, key) = (self.codec(), self.inner.codec.item_key(status_id));
        Box::pin(self.read(move |txn| read_item_by_key(txn, &codec, &key)))
    }

    fn claim_due(&self, now: UnixMs, limit: usize, lease_ms: u64) -> StoreFuture<'_, Vec<Scheduled>> {
        let codec = self.codec();
        Box::pin(self.write(move |txn| claim_in(txn, &codec, now, limit, lease_ms)))
    }

    fn next_due(&self) -> StoreFuture<'_, Option<UnixMs>> {
        Box::pin(self.read(read_next_due))
    }

    fn settle<'a>(&'a self, status_id: &'a str, outcome: Outcome) -> StoreFuture<'a, bool> {
        let (codec, id) = (self.codec(), status_id.to_owned());
        Box::pin(self.write(move |txn| settle_in(txn, &codec, &id, &outcome)))
    }

    fn set_flags<'a>(&'a self, status_id: &'a str, flags: KeepFlags) -> StoreFuture<'a, bool> {
        let (codec, id) = (self.codec(), status_id.to_owned());
        Box::pin(self.write(move |txn| set_flags_in(txn, &codec, &id, flags)))
    }

    fn counts(&self) -> StoreFuture<'_, ScheduleCounts> {
        Box::pin(self.read(|txn| {
            let counts = txn.open_table(COUNTS).map_err(backend)?;
            let get = |name: &str| -> Result<u64, StoreError> {
                Ok(counts.get(name).map_err(backend)?.map(|v| v.value()).unwrap_or(0))
            };
            let mut by_state = std::collections::BTreeMap::new();
            for state in ExpiryState::ALL {
                by_state.insert(state.name().to_owned(), get(state.name())?);
            }
            Ok(ScheduleCounts { by_state, next_due: read_next_due(txn)?, gone: get(GONE)? })
        }))
    }

    fn list(&self, state: Option<ExpiryState>, limit: usize) -> StoreFuture<'_, Vec<Scheduled>> {
        let codec = self.codec();
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
                    if let Some(item) = read_item_by_key(txn, &codec, k.value())? {
                        out.push(item);
                    }
                }
            } else {
                let items = txn.open_table(ITEMS).map_err(backend)?;
                for entry in items.iter().map_err(backend)? {
                    if out.len() >= limit {
                        break;
                    }
                    let (k, v) = entry.map_err(backend)?;
                    let item: Scheduled = codec.get("expiry_items", k.value(), v.value())?;
                    if state.is_none_or(|s| s == item.state) {
                        out.push(item);
                    }
                }
            }
            // A sealed store's keys are hashes: order what was found by status id.
            out.sort_by(|a, b| a.status_id.cmp(&b.status_id));
            Ok(out)
        }))
    }

    fn hidden_between(&self, from: UnixMs, to: UnixMs) -> StoreFuture<'_, Vec<Scheduled>> {
        let codec = self.codec();
        Box::pin(self.read(move |txn| {
            let mut out = Vec::new();
            if from > to {
                return Ok(out);
            }
            let deadlines = txn.open_table(DEADLINES).map_err(backend)?;
            for entry in deadlines.range((from, "")..).map_err(backend)? {
                let (k, _) = entry.map_err(backend)?;
                let (deadline, key) = k.value();
                if deadline > to {
                    break;
                }
                if let Some(item) = read_item_by_key(txn, &codec, key)?.filter(has_deadline) {
                    out.push(item);
                }
            }
            Ok(out)
        }))
    }

    fn next_deadline_after(&self, t: UnixMs) -> StoreFuture<'_, Option<UnixMs>> {
        Box::pin(self.read(move |txn| {
            let deadlines = txn.open_table(DEADLINES).map_err(backend)?;
            let Some(start) = t.checked_add(1) else { return Ok(None) };
            let mut range = deadlines.range((start, "")..).map_err(backend)?;
            Ok(range.next().transpose().map_err(backend)?.map(|(k, _)| k.value().0))
        }))
    }

    fn put_sweep(&self, progress: SweepProgress) -> StoreFuture<'_, ()> {
        let codec = self.codec();
        Box::pin(self.write(move |txn| {
            let key = codec.account_key(&progress.account);
            let mut table = txn.open_table(SWEEPS).map_err(backend)?;
            table.insert(key.as_str(), codec.put("expiry_sweeps", &key, &progress)?.as_slice()).map_err(backend)?;
            Ok(())
        }))
    }

    fn sweep<'a>(&'a self, account: &'a str) -> StoreFuture<'a, Option<SweepProgress>> {
        let (codec, key) = (self.codec(), self.inner.codec.account_key(account));
        Box::pin(self.read(move |txn| {
            let table = txn.open_table(SWEEPS).map_err(backend)?;
            let found = table.get(key.as_str()).map_err(backend)?;
            found.map(|v| codec.get("expiry_sweeps", &key, v.value())).transpose()
        }))
    }

    fn sweeps(&self) -> StoreFuture<'_, Vec<SweepProgress>> {
        let codec = self.codec();
        Box::pin(self.read(move |txn| {
            let table = txn.open_table(SWEEPS).map_err(backend)?;
            let mut out: Vec<SweepProgress> = Vec::new();
            for row in table.iter().map_err(backend)? {
                let (k, v) = row.map_err(backend)?;
                out.push(codec.get("expiry_sweeps", k.value(), v.value())?);
            }
            out.sort_by(|a, b| a.account.cmp(&b.account));
            Ok(out)
        }))
    }
}

impl CredentialStore for EmbeddedStore {
    fn offer_credential(&self, cred: SealedCredential) -> StoreFuture<'_, u64> {
        let codec = self.codec();
        Box::pin(self.write(move |txn| {
            let n = put_credential(txn, &codec, &cred, now_ms())?;
            // Kept only if a re-queued item took it.
            credential_ref(txn, &codec, &cred.id, 0)?;
            Ok(n)
        }))
    }

    fn credential<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<SealedCredential>> {
        let (codec, id) = (self.codec(), id.to_owned());
        Box::pin(self.read(move |txn| read_credential(txn, &codec, &id)))
    }

    fn account_credential<'a>(&'a self, account: &'a str) -> StoreFuture<'a, Option<SealedCredential>> {
        let (codec, key) = (self.codec(), self.inner.codec.account_key(account));
        Box::pin(self.read(move |txn| {
            let by_account = txn.open_table(ACCOUNT_CREDENTIAL).map_err(backend)?;
            let id = by_account.get(key.as_str()).map_err(backend)?.map(|v| v.value().to_owned());
            match id {
                Some(id) => read_credential(txn, &codec, &id),
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
    use crate::store::{Publication, SweepState};

    fn cred(id: &str, account: &str) -> SealedCredential {
        SealedCredential { id: id.into(), account: account.into(), sealed: vec![1, 2, 3] }
    }

    fn item(id: &str, deadline: UnixMs, cred: &str) -> Scheduled {
        let mut s = Scheduled::pending(id, "alice", "dm", 0, deadline);
        s.credential = Some(cred.into());
        s
    }

    fn seal() -> RecordSeal {
        RecordSeal::new(&[42; 32])
    }

    /// Both formats behave the same; the tests below run on each.
    fn open(dir: &Path, sealed: bool) -> EmbeddedStore {
        if sealed {
            EmbeddedStore::open_sealed(dir, 1 << 20, seal()).unwrap()
        } else {
            EmbeddedStore::open(dir, 1 << 20).unwrap()
        }
    }

    #[tokio::test]
    async fn schedule_claim_delete_confirm_and_purge() {
        for sealed in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let store = open(dir.path(), sealed);
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
            assert!(store.settle("2", Outcome::Deleted { confirm_at: 5000 }).await.unwrap());
            assert!(store.settle("1", Outcome::Deleted { confirm_at: 6000 }).await.unwrap());
            // Deleted but not yet confirmed: still due (for the confirmation), still hidden,
            // still holding the token that confirms it.
            assert_eq!(store.next_due().await.unwrap(), Some(5000));
            assert_eq!(store.hidden_between(0, 10_000).await.unwrap().len(), 2);
            assert_eq!(store.credential_count().await.unwrap(), 1);
            let again = store.claim_due(5000, 10, 1000).await.unwrap();
            assert_eq!(again.len(), 1);
            assert_eq!(again[0].state, ExpiryState::Deleted, "a confirmation claim keeps the state");
            assert!(store.settle("2", Outcome::Gone).await.unwrap());
            assert!(store.settle("1", Outcome::Gone).await.unwrap());
            assert_eq!(store.next_due().await.unwrap(), None);
            assert!(store.lookup("1").await.unwrap().is_none(), "purged: no tombstone");
            assert!(store.hidden_between(0, u64::MAX).await.unwrap().is_empty());
            // Nothing pending needs the token now: its sealed copy is gone.
            assert_eq!(store.credential_count().await.unwrap(), 0);
            let counts = store.counts().await.unwrap();
            assert_eq!(counts.gone, 2);
            assert_eq!(counts.by_state["deleted"], 0);
            assert_eq!(counts.by_state["pending"], 0);
            assert_eq!(counts.by_state["claimed"], 0);
        }
    }

    #[tokio::test]
    async fn failed_items_wait_for_a_new_credential() {
        for sealed in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let store = open(dir.path(), sealed);
            store.schedule(vec![(item("1", 10, "old"), Some(cred("old", "alice")))]).await.unwrap();
            store.claim_due(20, 10, 1000).await.unwrap();
            store.settle("1", Outcome::Failed("token revoked (401)".into())).await.unwrap();
            assert!(store.claim_due(10_000, 10, 1000).await.unwrap().is_empty());
            assert_eq!(store.list(Some(ExpiryState::Failed), 10).await.unwrap().len(), 1);
            assert_eq!(store.hidden_between(0, 10).await.unwrap().len(), 1, "a failed post stays hidden");
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
            assert_eq!(store.account_credential("alice").await.unwrap().unwrap().id, "newer");
        }
    }

    #[tokio::test]
    async fn final_items_are_not_rescheduled_and_kept_items_recheck_on_flag_change() {
        for sealed in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let store = open(dir.path(), sealed);
            store.schedule(vec![(item("1", 10, "c"), Some(cred("c", "alice")))]).await.unwrap();
            store.settle("1", Outcome::Deleted { confirm_at: 20 }).await.unwrap();
            store.schedule(vec![(item("1", 99, "c"), Some(cred("c", "alice")))]).await.unwrap();
            assert_eq!(store.lookup("1").await.unwrap().unwrap().state, ExpiryState::Deleted);
            store.settle("1", Outcome::Gone).await.unwrap();
            assert_eq!(store.credential_count().await.unwrap(), 0);

            store.schedule(vec![(item("2", 10, "c"), Some(cred("c", "alice")))]).await.unwrap();
            store.settle("2", Outcome::Kept("pinned".into())).await.unwrap();
            assert_eq!(store.next_due().await.unwrap(), None);
            assert!(store.hidden_between(0, 100).await.unwrap().is_empty(), "a kept post is served");
            store.set_flags("2", KeepFlags { pinned: false, favourited: true, bookmarked: false }).await.unwrap();
            assert_eq!(store.lookup("2").await.unwrap().unwrap().state, ExpiryState::Pending);

            // A cancelled item is purged at once.
            store.settle("2", Outcome::Cancelled("deleted by its author".into())).await.unwrap();
            assert!(store.lookup("2").await.unwrap().is_none());
            assert_eq!(store.counts().await.unwrap().gone, 2);
        }
    }

    #[tokio::test]
    async fn schedule_new_leaves_known_items_alone() {
        for sealed in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let store = open(dir.path(), sealed);
            store.schedule(vec![(item("1", 10, "c"), Some(cred("c", "alice")))]).await.unwrap();
            store.settle("1", Outcome::Kept("pinned".into())).await.unwrap();
            let inserted =
                store.schedule_new(vec![(item("1", 99, "c"), None), (item("2", 99, "c"), None)]).await.unwrap();
            assert_eq!(inserted, [false, true]);
            let kept = store.lookup("1").await.unwrap().unwrap();
            assert_eq!((kept.state, kept.deadline), (ExpiryState::Kept, 10), "a known item keeps its record");
            assert_eq!(store.lookup("2").await.unwrap().unwrap().deadline, 99);
        }
    }

    #[tokio::test]
    async fn deadlines_publications_and_sweeps() {
        for sealed in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let store = open(dir.path(), sealed);
            let mut publication = item("scheduled/9", 30, "c");
            publication.publication = Some(Publication {
                scheduled_id: "9".into(),
                scheduled_at: 30,
                expires_in: Some(60),
                digest: "d".into(),
                searches: 0,
            });
            store
                .schedule(vec![
                    (item("1", 10, "c"), Some(cred("c", "alice"))),
                    (item("2", 20, "c"), None),
                    (item("3", 40, "c"), None),
                    (publication, None),
                ])
                .await
                .unwrap();
            let ids = |v: Vec<Scheduled>| v.into_iter().map(|s| s.status_id).collect::<Vec<_>>();
            assert_eq!(ids(store.hidden_between(0, 20).await.unwrap()), ["1", "2"]);
            assert_eq!(ids(store.hidden_between(11, 40).await.unwrap()), ["2", "3"], "publications never hide");
            assert_eq!(store.next_deadline_after(10).await.unwrap(), Some(20));
            assert_eq!(store.next_deadline_after(40).await.unwrap(), None);
            assert_eq!(store.next_due().await.unwrap(), Some(10), "a publication is still due for its search");

            let progress = SweepProgress {
                account: "alice".into(),
                state: SweepState::Running,
                credential: Some("c".into()),
                token: Some(cred("c", "alice")),
                host: None,
                cursor: Some("100".into()),
                seen: 40,
                scheduled: 3,
                already_due: 1,
                started_at: 1,
                updated_at: 2,
                finished_at: None,
                reason: None,
                rules: Some("r".into()),
            };
            store.put_sweep(progress.clone()).await.unwrap();
            assert_eq!(store.sweep("alice").await.unwrap(), Some(progress.clone()));
            assert_eq!(store.sweep("bob").await.unwrap(), None);
            assert_eq!(store.sweeps().await.unwrap(), vec![progress]);
        }
    }

    #[tokio::test]
    async fn survives_reopen() {
        for sealed in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            {
                let store = open(dir.path(), sealed);
                store.schedule(vec![(item("7", 42, "c"), Some(cred("c", "alice")))]).await.unwrap();
            }
            // Dropping the last handle closed the file: it opens again at once.
            let store = open(dir.path(), sealed);
            assert_eq!(store.next_due().await.unwrap(), Some(42));
            assert!(store.credential("c").await.unwrap().is_some());
            assert!(store.account_credential("alice").await.unwrap().is_some());
            assert_eq!(store.lookup("7").await.unwrap().unwrap().account, "alice");
        }
    }

    /// What a seized file says: a sealed store holds no status id and no account name.
    #[tokio::test]
    async fn a_sealed_store_file_holds_no_id_or_name_in_clear() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(dir.path(), true);
            let mut items = Vec::new();
            for i in 0..50u64 {
                let mut s = Scheduled::pending(format!("1099{i:014}"), "mallorysecret", "dm", 0, 10 + i);
                s.credential = Some("c".into());
                s.host = Some("hidden.example".into());
                items.push((s, Some(cred("c", "mallorysecret"))));
            }
            store.schedule(items).await.unwrap();
            for i in 0..25u64 {
                store.settle(&format!("1099{i:014}"), Outcome::Gone).await.unwrap();
            }
            store
                .put_sweep(SweepProgress {
                    account: "mallorysecret".into(),
                    state: SweepState::Done,
                    credential: None,
                    token: None,
                    host: None,
                    cursor: None,
                    seen: 1,
                    scheduled: 1,
                    already_due: 0,
                    started_at: 0,
                    updated_at: 0,
                    finished_at: Some(1),
                    reason: None,
                    rules: None,
                })
                .await
                .unwrap();
        }
        let bytes = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
        let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        assert!(!has(b"mallorysecret"), "an account name is in the file");
        assert!(!has(b"1099"), "a status id is in the file");
        assert!(!has(b"hidden.example"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(FILE_NAME)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Wrong key, or no key: refused, never read as empty.
        let wrong = EmbeddedStore::open_sealed(dir.path(), 1 << 20, RecordSeal::new(&[1; 32])).unwrap_err();
        assert!(wrong.to_string().contains("another key"), "{wrong}");
        let clear = EmbeddedStore::open(dir.path(), 1 << 20).unwrap_err();
        assert!(clear.to_string().contains("sealed"), "{clear}");
        let store = open(dir.path(), true);
        assert_eq!(store.counts().await.unwrap().by_state["pending"], 25);
    }

    /// A store written in clear (an older version, or before sealing was configured) is
    /// converted when first opened sealed; what had ended is purged on the way.
    #[tokio::test]
    async fn a_clear_store_is_sealed_on_first_sealed_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(dir.path(), false);
            store
                .schedule(vec![
                    (item("11", 10, "c"), Some(cred("c", "alice"))),
                    (item("12", 20, "c"), None),
                    (item("13", 30, "c"), None),
                ])
                .await
                .unwrap();
            store.settle("12", Outcome::Failed("401".into())).await.unwrap();
            store.settle("13", Outcome::Deleted { confirm_at: 50 }).await.unwrap();
        }
        let legacy = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), legacy.path().join(entry.file_name())).unwrap();
        }
        {
            // What an older version left: the same tables, no recorded format.
            let db = Database::create(legacy.path().join(FILE_NAME)).unwrap();
            let txn = db.begin_write().unwrap();
            txn.delete_table(META).unwrap();
            txn.commit().unwrap();
        }

        let store = open(dir.path(), true);
        let pending = store.lookup("11").await.unwrap().unwrap();
        assert_eq!((pending.state, pending.account.as_str()), (ExpiryState::Pending, "alice"));
        assert_eq!(store.lookup("12").await.unwrap().unwrap().state, ExpiryState::Failed);
        assert_eq!(store.lookup("13").await.unwrap().unwrap().state, ExpiryState::Deleted, "still awaits its check");
        assert_eq!(store.credential_count().await.unwrap(), 1);
        assert_eq!(store.account_credential("alice").await.unwrap().unwrap().id, "c");
        assert_eq!(store.hidden_between(0, 100).await.unwrap().len(), 3);
        assert_eq!(store.list(Some(ExpiryState::Failed), 10).await.unwrap().len(), 1);
        assert_eq!(store.next_due().await.unwrap(), Some(10));
        let counts = store.counts().await.unwrap();
        assert_eq!((counts.by_state["pending"], counts.by_state["failed"], counts.gone), (1, 1, 0));

        // In the older format "deleted" was final: purged on the way.
        let store = open(legacy.path(), true);
        assert!(store.lookup("13").await.unwrap().is_none());
        assert_eq!(store.lookup("11").await.unwrap().unwrap().state, ExpiryState::Pending);
        assert_eq!(store.counts().await.unwrap().gone, 1);
    }
}
