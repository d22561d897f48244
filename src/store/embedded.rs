//! The embedded backend: one redb file (`<data_dir>/pavise.redb`), opened once per process.
//!
//! Writes go through a single writer thread that *group-commits*: whatever writes are
//! waiting when a commit starts share it, so one fsync covers many posts under load while
//! each caller still resumes only after its own write is on disk. Every commit is
//! `Durability::Immediate` with redb's quick-repair enabled, so a `kill -9` loses nothing
//! that was acknowledged and the next start does not have to walk the whole file.
//! Reads run on tokio's blocking pool against a snapshot.
//!
//! **Sealed at rest, and forgotten for real.** Opened with the key file's [`StoreKey`]
//! ([`EmbeddedStore::open_sealed`], what the relay does), the expiry tables never hold a
//! status id, an account name or a token in clear: keys are keyed hashes and values are
//! sealed, under the current *epoch* key (see [`super::seal`] for why). The writer thread
//! also *rotates* the store ([`EmbeddedStore::rotate`]): within `forget_within` of a row
//! being purged, every live row is re-sealed under the next epoch's key into a fresh file
//! (`pavise.redb.next`, fsynced, renamed over `pavise.redb`), so the freed pages of the old
//! file go with its inode, and the old epoch key is overwritten in `pavise.epoch`. The same
//! happens when the store closes with something purged since the last rotation, and once
//! when an older store (clear, or sealed before epochs) is first opened sealed: what it had
//! in clear or under the key file's own secret does not survive the conversion.
//! [`EmbeddedStore::open`] keeps the expiry tables in clear, for tests and benchmarks; a
//! store knows which it is (`store_meta`) and refuses to be opened the other way.
//!
//! Tables, one set per concern (a feature adds its own, prefixed by its name, and lists it
//! in [`KNOWN_TABLES`] and the rotation's copy); "key" below is the status id (or account)
//! itself in a clear store and its keyed hash in a sealed one:
//! - `store_meta`: `format` (clear | sealed), the epoch and its key's check value, the
//!   shield tables' format, and `forgot` while something was purged since the last rotation;
//! - `expiry_items`: item key → the [`Scheduled`] item (JSON, sealed);
//! - `expiry_due`: (next attempt, item key) → () — pending, claimed and deleted items (the
//!   last wait for their confirmation), so the next due item is the first key and a lapsed
//!   claim is simply due again;
//! - `expiry_deadlines`: (deadline, item key) → () — items in a state that hides the post,
//!   from which the relay's in-memory index of hidden posts is built;
//! - `expiry_failed`: item key → account key — the few items waiting for a new credential;
//! - `expiry_counts`: state name → count, kept in step with `expiry_items`, plus `gone`
//!   (items purged: a number is all that remains of them);
//! - `expiry_credentials`: credential key → sealed token, account and reference count;
//! - `expiry_account_credential`: account key → the newest credential key seen for it;
//! - `expiry_sweeps`: account key → the [`SweepProgress`] of that member's archive sweep;
//! - `shield_seen`: the sender's key (`accepted:<actor URL>`, ...) → when it was first seen;
//! - `shield_follow`: (local account, remote actor URL) → when the follow was learned;
//! - `shield_held`: held delivery id → the [`HeldDelivery`] (JSON, body base64; only what
//!   an older version left, until the quarantine seals it at start);
//! - `shield_audit`: sequence number → one [`AuditRecord`] (JSON), the newest
//!   [`MAX_AUDIT_RECORDS`] and none older than eight days;
//! - `shield_sealed_held`: held delivery id → the [`HeldDelivery`] as the quarantine sealed
//!   it (with the key file's sealer).
//!
//! The shield's tables go through the same codec: values sealed under the epoch key (a
//! held delivery that left, a trimmed audit record, goes for good with the next rotation);
//! the first-seen and follow keys are [`StableIndex`] hashes, the same in every epoch, so
//! their values need not carry the actor's URL and a seizure, key file included, cannot
//! list whom pavise has seen write. An older version kept these tables in clear
//! (`shield_first_seen`, `shield_follows`, and the three others unsealed); the first open
//! converts them through a fresh file (`store_meta` then says `shield = 2`).

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use redb::{
    Database, ReadTransaction, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle, WriteTransaction,
};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::{
    AuditRecord, CredentialStore, ExpiryState, FollowChange, HeldDelivery, KeepFlags, Outcome, RecordSeal,
    ScheduleCounts, ScheduleStore, Scheduled, SealedCredential, ShieldStore, StoreError, StoreFuture, StoreKey,
    SweepProgress, UnixMs, now_ms,
    seal::{EPOCH_FILE, EpochFile, StableIndex},
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
const SHIELD_SEEN: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("shield_seen");
const SHIELD_FOLLOW: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("shield_follow");
const SHIELD_HELD: TableDefinition<'static, u64, &[u8]> = TableDefinition::new("shield_held");
const SHIELD_AUDIT: TableDefinition<'static, u64, &[u8]> = TableDefinition::new("shield_audit");
const SHIELD_SEALED_HELD: TableDefinition<'static, u64, &[u8]> = TableDefinition::new("shield_sealed_held");
// What older versions kept in clear, converted at the first open (see `settle_format`).
const LEGACY_FIRST_SEEN: TableDefinition<'static, &str, u64> = TableDefinition::new("shield_first_seen");
const LEGACY_FOLLOWS: TableDefinition<'static, (&str, &str), u64> = TableDefinition::new("shield_follows");

/// The `store_meta` entry that says the shield's tables are keyed and sealed like the
/// expiry tables (absent: an older version's store, its shield tables in clear).
const SHIELD_FORMAT: (&str, &str) = ("shield", "2");
/// The shield's audit trail keeps at most this many records, none older than
/// [`AUDIT_KEPT_MS`]: it says which domains sent what was held, and must not outlive its use
/// (the quarantine keeps a refused delivery seven days for the admin).
const MAX_AUDIT_RECORDS: u64 = 10_000;
const AUDIT_KEPT_MS: u64 = 8 * 86_400_000;

/// Every table a rotation knows how to carry into a fresh file. A store holding any other
/// is not rotated (nothing is ever dropped by a copy): add a new table here *and* to
/// [`copy_into`].
pub const KNOWN_TABLES: [&str; 16] = [
    "store_meta",
    "expiry_items",
    "expiry_due",
    "expiry_deadlines",
    "expiry_failed",
    "expiry_counts",
    "expiry_credentials",
    "expiry_account_credential",
    "expiry_sweeps",
    "shield_seen",
    "shield_follow",
    "shield_held",
    "shield_audit",
    "shield_sealed_held",
    "shield_first_seen",
    "shield_follows",
];

/// How many waiting writes one commit may carry.
const MAX_BATCH: usize = 1024;
/// How often the writer thread looks whether a rotation is due while idle.
const TICK: Duration = Duration::from_millis(500);

/// The file name inside the data dir.
pub const FILE_NAME: &str = "pavise.redb";
/// Where a rotation builds the fresh file before renaming it over [`FILE_NAME`].
const NEXT_FILE_NAME: &str = "pavise.redb.next";

/// The `expiry_counts` entry for purged items.
const GONE: &str = "gone";

fn backend(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Backend(e.into().to_string())
}

fn io_err(what: &str, e: std::io::Error) -> StoreError {
    StoreError::Backend(format!("{what}: {e}"))
}

/// How the store is opened.
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    /// redb's page cache.
    pub cache_bytes: usize,
    /// A purged row is re-sealed away (its epoch key destroyed, its file replaced) at most
    /// this long after its purge; rotations are at least this far apart.
    pub forget_within: Duration,
}

impl StoreOptions {
    pub fn new(cache_bytes: usize) -> StoreOptions {
        StoreOptions { cache_bytes, forget_within: Duration::from_secs(600) }
    }
}

/// What one rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// The epoch the store is in now (`None`: a clear store, only compacted).
    pub epoch: Option<u64>,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// A write to run inside a shared transaction; may run again alone if its batch fails.
/// It gets the codec of the generation it runs in (a rotation may have come between its
/// queueing and its turn).
trait Job: Send {
    fn run(&mut self, txn: &WriteTransaction, codec: &Codec) -> Result<(), StoreError>;
    fn finish(self: Box<Self>, committed: Result<(), StoreError>);
}

struct Typed<T, F> {
    f: F,
    out: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T: Send, F: Fn(&WriteTransaction, &Codec) -> Result<T, StoreError> + Send> Job for Typed<T, F> {
    fn run(&mut self, txn: &WriteTransaction, codec: &Codec) -> Result<(), StoreError> {
        let result = (self.f)(txn, codec);
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

enum Msg {
    Job(Box<dyn Job>),
    Rotate(oneshot::Sender<Result<Rotation, StoreError>>),
}

/// The embedded redb store. Cheap to clone; when the last clone goes, the writer thread
/// finishes what it was given (rotating if anything was purged since the last rotation)
/// and the file is closed before the drop returns, so the same process (a test, an
/// in-process restart) can open it again at once.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

/// One store file and the codec its rows are sealed with: swapped together by a rotation,
/// so a reader never opens a row with another epoch's key.
struct Generation {
    db: Database,
    codec: Codec,
}

type Current = Arc<RwLock<Arc<Generation>>>;

struct Inner {
    current: Current,
    writer: Option<mpsc::Sender<Msg>>,
    thread: Option<std::thread::JoinHandle<()>>,
    path: PathBuf,
    sealed: bool,
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
            .field("sealed", &self.inner.sealed)
            .finish_non_exhaustive()
    }
}

/// What a credential row holds besides its key.
#[derive(Serialize, Deserialize)]
struct CredentialRow {
    /// The credential id (a sealed store keys the row by its hash; the rotation needs the id
    /// to hash it again). Absent in rows written before: their key *is* the id.
    #[serde(default)]
    id: Option<String>,
    account: String,
    sealed: Vec<u8>,
    /// Live items that point at it; the row goes when this reaches zero.
    refs: u64,
}

// ---------------------------------------------------------------------------------------
// Sealed tables: how rows are keyed and sealed, for every feature.
// ---------------------------------------------------------------------------------------

/// How the tables' keys and values are written: in clear, or hashed and sealed under one
/// epoch's [`RecordSeal`]. Also carries the store's "something was purged" flag, which
/// makes the next rotation due.
#[derive(Clone)]
struct Codec {
    seal: Option<Arc<RecordSeal>>,
    /// Keys that outlive epochs (sealed stores only): see [`StableIndex`].
    stable: Option<Arc<StableIndex>>,
    forgot: Arc<AtomicBool>,
}

impl Codec {
    fn clear(forgot: &Arc<AtomicBool>) -> Codec {
        Codec { seal: None, stable: None, forgot: forgot.clone() }
    }

    /// A row key that stays the same across epochs (the plain value in a clear store).
    fn stable_key(&self, domain: &str, plain: &str) -> String {
        match &self.stable {
            Some(index) => index.key(domain, plain),
            None => plain.to_owned(),
        }
    }

    /// Seals opaque bytes for the row `key` of `table` (as they are in a clear store).
    fn put_raw(&self, table: &str, key: &str, plain: &[u8]) -> Result<Vec<u8>, StoreError> {
        match &self.seal {
            Some(seal) => seal.seal(table, key, plain).map_err(|e| StoreError::Backend(e.to_string())),
            None => Ok(plain.to_vec()),
        }
    }

    fn get_raw(&self, table: &str, key: &str, bytes: &[u8]) -> Result<Vec<u8>, StoreError> {
        match &self.seal {
            Some(seal) => seal
                .open(table, key, bytes)
                .map_err(|e| StoreError::Corrupt { key: format!("{table}/{key}"), message: e.to_string() }),
            None => Ok(bytes.to_vec()),
        }
    }

    fn row_key(&self, domain: &str, plain: &str) -> String {
        match &self.seal {
            Some(seal) => seal.key(domain, plain),
            None => plain.to_owned(),
        }
    }

    fn item_key(&self, status_id: &str) -> String {
        self.row_key("item", status_id)
    }

    fn account_key(&self, account: &str) -> String {
        self.row_key("account", account)
    }

    /// Credential rows are keyed by the credential id itself in clear stores and in stores
    /// sealed before epochs, by its keyed hash under an epoch.
    fn cred_key(&self, id: &str) -> String {
        match &self.seal {
            Some(seal) if seal.epoch().is_some() => seal.key("credential", id),
            _ => id.to_owned(),
        }
    }

    fn put<T: Serialize>(&self, table: &str, key: &str, value: &T) -> Result<Vec<u8>, StoreError> {
        self.put_raw(table, key, &encode(value)?)
    }

    fn get<T: for<'de> Deserialize<'de>>(&self, table: &str, key: &str, bytes: &[u8]) -> Result<T, StoreError> {
        decode(key, &self.get_raw(table, key, bytes)?)
    }

    /// Something left the store (a purge, a dropped token, a replaced record): the next
    /// rotation must come within `forget_within`.
    fn forgot(&self) {
        self.forgot.store(true, Ordering::Release);
    }

    fn format(&self) -> &'static str {
        if self.seal.is_some() { "sealed" } else { "clear" }
    }
}

impl EmbeddedStore {
    /// Opens (or creates) `<data_dir>/pavise.redb` with a page cache of `cache_bytes`,
    /// keeping the expiry tables in clear (tests, benchmarks). Refuses a sealed store.
    /// Blocking: call before serving, or from a blocking task.
    pub fn open(data_dir: &Path, cache_bytes: usize) -> Result<EmbeddedStore, StoreError> {
        Self::open_with(data_dir, StoreOptions::new(cache_bytes), None)
    }

    /// Opens (or creates) the store with the expiry tables sealed under epoch keys that
    /// `key` (from the expiry key file) unlocks; an older store is converted on the way.
    /// What the relay and the CLI use.
    pub fn open_sealed(data_dir: &Path, cache_bytes: usize, key: StoreKey) -> Result<EmbeddedStore, StoreError> {
        Self::open_with(data_dir, StoreOptions::new(cache_bytes), Some(key))
    }

    /// [`EmbeddedStore::open_sealed`] (or, without a key, [`EmbeddedStore::open`]) with
    /// every option.
    pub fn open_with(data_dir: &Path, opts: StoreOptions, key: Option<StoreKey>) -> Result<EmbeddedStore, StoreError> {
        let path = data_dir.join(FILE_NAME);
        let open_err = |message: String| StoreError::Open { path: path.display().to_string(), message };
        super::perms::create_private_dir(data_dir).map_err(|e| open_err(e.to_string()))?;
        // A rotation that did not finish: the fresh file was never renamed into place.
        match std::fs::remove_file(data_dir.join(NEXT_FILE_NAME)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(open_err(e.to_string())),
            _ => {}
        }
        let db = open_db(&path, opts.cache_bytes).map_err(|e| open_err(e.to_string()))?;
        restrict(&path).map_err(|e| open_err(e.to_string()))?;
        let forgot = Arc::new(AtomicBool::new(false));
        let opened = settle_format(db, &path, opts, key, &forgot).map_err(|e| open_err(e.to_string()))?;
        let sealed = opened.generation.codec.seal.is_some();
        let current: Current = Arc::new(RwLock::new(opened.generation.clone()));
        let (writer, jobs) = mpsc::channel::<Msg>();
        let mut state = Writer {
            current: current.clone(),
            generation: opened.generation,
            keys: opened.keys,
            path: path.clone(),
            opts,
            forgot,
            last_rotation: Instant::now(),
            marked: opened.marked,
        };
        let thread = std::thread::Builder::new()
            .name("pavise-store".into())
            .spawn(move || state.run(&jobs))
            .map_err(|e| open_err(e.to_string()))?;
        Ok(EmbeddedStore {
            inner: Arc::new(Inner { current, writer: Some(writer), thread: Some(thread), path, sealed }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The epoch the store's records are sealed under now (`None` for a clear store).
    pub fn epoch(&self) -> Option<u64> {
        self.generation().codec.seal.as_ref().and_then(|s| s.epoch())
    }

    /// Re-seals every live row under the next epoch's key into a fresh file and destroys
    /// the old epoch key (a clear store is only copied into a fresh file). The writer
    /// thread does this on its own within `forget_within` of a purge; this does it now.
    pub async fn rotate(&self) -> Result<Rotation, StoreError> {
        let (reply, rx) = oneshot::channel();
        let writer = self.inner.writer.as_ref().ok_or(StoreError::Closed)?;
        writer.send(Msg::Rotate(reply)).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    fn generation(&self) -> Arc<Generation> {
        self.inner.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A write with the codec it runs under.
    async fn write_with<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(&WriteTransaction, &Codec) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let writer = self.inner.writer.as_ref().ok_or(StoreError::Closed)?;
        writer.send(Msg::Job(Box::new(Typed { f, out: None, reply }))).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// A read with the codec of the snapshot it reads.
    async fn read_with<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTransaction, &Codec) -> Result<T, StoreError> + Send + 'static,
    {
        let generation = self.generation();
        tokio::task::spawn_blocking(move || {
            let txn = generation.db.begin_read().map_err(backend)?;
            f(&txn, &generation.codec)
        })
        .await
        .map_err(|e| StoreError::Backend(e.to_string()))?
    }

    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        self.read_with(move |txn, _| f(txn)).await
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

/// redb creates its file with the process umask; the data dir is pavise's alone.
fn restrict(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(META).map_err(backend)?;
    txn.open_table(ITEMS).map_err(backend)?;
    txn.open_table(DUE).map_err(backend)?;
    txn.open_table(DEADLINES).map_err(backend)?;
    txn.open_table(FAILED).map_err(backend)?;
    txn.open_table(COUNTS).map_err(backend)?;
    txn.open_table(CREDENTIALS).map_err(backend)?;
    txn.open_table(ACCOUNT_CREDENTIAL).map_err(backend)?;
    txn.open_table(SWEEPS).map_err(backend)?;
    txn.open_table(SHIELD_SEEN).map_err(backend)?;
    txn.open_table(SHIELD_FOLLOW).map_err(backend)?;
    txn.open_table(SHIELD_HELD).map_err(backend)?;
    txn.open_table(SHIELD_AUDIT).map_err(backend)?;
    txn.open_table(SHIELD_SEALED_HELD).map_err(backend)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Opening: the format, the epoch, and conversions of older stores.
// ---------------------------------------------------------------------------------------

/// The epoch keys in use, and where they are kept.
struct Keys {
    store_key: StoreKey,
    file: EpochFile,
    epoch: u64,
    secret: [u8; 32],
    /// A slot that holds the current epoch's key (after a rotation, both do).
    slot: usize,
    /// The other slot still holds an older key (overwriting it failed): retried.
    unsettled: bool,
}

struct Opened {
    generation: Arc<Generation>,
    keys: Option<Keys>,
    /// The store records that something was purged since its last rotation.
    marked: bool,
}

/// What `store_meta` says.
struct Meta {
    format: Option<String>,
    check: Option<String>,
    epoch: Option<u64>,
    forgot: bool,
    has_data: bool,
    /// The shield's tables are still as an older version wrote them (in clear), and hold
    /// something: the open converts them through a fresh file.
    shield_legacy: bool,
}

fn read_meta(db: &Database) -> Result<Meta, StoreError> {
    let txn = db.begin_read().map_err(backend)?;
    let get = |k: &str| -> Result<Option<String>, StoreError> {
        match txn.open_table(META) {
            Ok(t) => Ok(t.get(k).map_err(backend)?.map(|v| v.value().to_owned())),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(backend(e)),
        }
    };
    let non_empty = |def: TableDefinition<'static, &str, &[u8]>| -> Result<bool, StoreError> {
        match txn.open_table(def) {
            Ok(t) => Ok(!t.is_empty().map_err(backend)?),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(false),
            Err(e) => Err(backend(e)),
        }
    };
    let by_account = match txn.open_table(ACCOUNT_CREDENTIAL) {
        Ok(t) => !t.is_empty().map_err(backend)?,
        Err(redb::TableError::TableDoesNotExist(_)) => false,
        Err(e) => return Err(backend(e)),
    };
    fn rows<K: redb::Key + 'static, V: redb::Value + 'static>(
        txn: &ReadTransaction,
        def: TableDefinition<'static, K, V>,
    ) -> Result<bool, StoreError> {
        match txn.open_table(def) {
            Ok(t) => Ok(!t.is_empty().map_err(backend)?),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(false),
            Err(e) => Err(backend(e)),
        }
    }
    let shield_rows = rows(&txn, LEGACY_FIRST_SEEN)?
        || rows(&txn, LEGACY_FOLLOWS)?
        || rows(&txn, SHIELD_HELD)?
        || rows(&txn, SHIELD_AUDIT)?
        || rows(&txn, SHIELD_SEALED_HELD)?;
    Ok(Meta {
        format: get("format")?,
        check: get("check")?,
        epoch: get("epoch")?.and_then(|e| e.parse().ok()),
        forgot: get("forgot")?.is_some(),
        has_data: non_empty(ITEMS)? || non_empty(CREDENTIALS)? || by_account,
        shield_legacy: shield_rows && get(SHIELD_FORMAT.0)?.as_deref() != Some(SHIELD_FORMAT.1),
    })
}

/// Works out what the file is (clear, sealed before epochs, sealed under an epoch, new),
/// opens it with the right codec, and converts what needs converting (through a fresh
/// file, so nothing of the old format survives in freed pages).
fn settle_format(
    db: Database,
    path: &Path,
    opts: StoreOptions,
    key: Option<StoreKey>,
    forgot: &Arc<AtomicBool>,
) -> Result<Opened, StoreError> {
    let meta = read_meta(&db)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let clear = Codec::clear(forgot);
    let stable = key.as_ref().map(|k| Arc::new(k.stable_index()));
    let epoch_codec = |epoch: u64, secret: &[u8; 32]| Codec {
        seal: Some(Arc::new(RecordSeal::for_epoch(epoch, secret))),
        stable: stable.clone(),
        forgot: forgot.clone(),
    };
    let shield = Shield { legacy: meta.shield_legacy, path, cache_bytes: opts.cache_bytes };
    match (meta.format.as_deref(), key) {
        (Some("sealed"), None) => {
            Err(StoreError::Backend("the store is sealed; open it with its key (expiry.key_file)".into()))
        }
        (Some("clear"), None) => Ok(Opened { generation: shield.init(db, clear)?, keys: None, marked: meta.forgot }),
        (Some(other), None) => Err(StoreError::Backend(format!("unknown store format {other:?}"))),
        (None, None) if !meta.has_data => Ok(Opened { generation: shield.init(db, clear)?, keys: None, marked: false }),
        // Unmarked data opened clear: an older version's store, its final items purged.
        (None, None) => {
            let db = fresh_copy(
                path,
                &db,
                &clear,
                &clear,
                Legacy { items: true, shield: meta.shield_legacy },
                opts.cache_bytes,
            )?;
            Ok(Opened { generation: Arc::new(Generation { db, codec: clear }), keys: None, marked: false })
        }
        (Some("sealed"), Some(store_key)) if meta.epoch.is_some() => {
            let epoch = meta.epoch.unwrap_or_default();
            let file = EpochFile::open_or_create(&dir.join(EPOCH_FILE)).map_err(|e| io_err("the epoch file", e))?;
            let slots = file.read(&store_key).map_err(|e| io_err("the epoch file", e))?;
            let found = slots.iter().find(|(_, e, secret)| {
                *e == epoch
                    && meta.check.as_deref() == Some(RecordSeal::for_epoch(epoch, secret).check_value().as_str())
            });
            let Some(&(slot, _, secret)) = found else {
                return Err(StoreError::Backend(if slots.is_empty() {
                    format!(
                        "the store's epoch key ({}) is missing or was sealed with another key file (expiry.key_file); the store cannot be read with this one",
                        file.path().display()
                    )
                } else {
                    "the store was sealed with another key (expiry.key_file), or restored from a copy older than its epoch file; it cannot be read with this one".into()
                }));
            };
            let mut keys = Keys { store_key, file, epoch, secret, slot, unsettled: false };
            // A rotation that stopped after the rename: the old key goes now.
            if slots.iter().any(|(s, e, k)| *s != slot && (*e != epoch || *k != secret)) || slots.len() < 2 {
                keys.unsettled = keys.file.write(&keys.store_key, 1 - slot, epoch, &secret).is_err();
            }
            Ok(Opened {
                generation: shield.init(db, epoch_codec(epoch, &secret))?,
                keys: Some(keys),
                marked: meta.forgot,
            })
        }
        (format, Some(store_key)) => {
            let file = EpochFile::open_or_create(&dir.join(EPOCH_FILE)).map_err(|e| io_err("the epoch file", e))?;
            let secret = super::seal::fresh_epoch_key().map_err(|e| StoreError::Backend(e.to_string()))?;
            // Both slots first: a crash before the fresh file is in place leaves the old
            // store as it was, to be converted again.
            for slot in 0..2 {
                file.write(&store_key, slot, 0, &secret).map_err(|e| io_err("the epoch file", e))?;
            }
            let target = epoch_codec(0, &secret);
            let source = match format {
                Some("sealed") => {
                    let legacy = store_key.legacy_seal();
                    if meta.check.as_deref() != Some(legacy.check_value().as_str()) {
                        return Err(StoreError::Backend(
                            "the store was sealed with another key (expiry.key_file); it cannot be read with this one"
                                .into(),
                        ));
                    }
                    Some(Codec { seal: Some(Arc::new(legacy)), stable: None, forgot: forgot.clone() })
                }
                Some("clear") => Some(clear.clone()),
                None if meta.has_data => Some(clear.clone()),
                None => None,
                Some(other) => return Err(StoreError::Backend(format!("unknown store format {other:?}"))),
            };
            let generation = match source {
                Some(source) => {
                    let legacy = Legacy { items: format.is_none(), shield: meta.shield_legacy };
                    let db = fresh_copy(path, &db, &source, &target, legacy, opts.cache_bytes)?;
                    tracing::info!("store: converted to sealed epochs (the old file is gone)");
                    Arc::new(Generation { db, codec: target })
                }
                None => shield.init(db, target)?,
            };
            Ok(Opened {
                generation,
                keys: Some(Keys { store_key, file, epoch: 0, secret, slot: 0, unsettled: false }),
                marked: false,
            })
        }
    }
}

/// What an older version left of the shield's tables, and how to convert it.
struct Shield<'a> {
    legacy: bool,
    path: &'a Path,
    cache_bytes: usize,
}

impl Shield<'_> {
    /// [`init`], or, when the shield's tables are an older version's (in clear), a fresh
    /// file with them keyed and sealed (nothing of them survives in freed pages).
    fn init(&self, db: Database, codec: Codec) -> Result<Arc<Generation>, StoreError> {
        if !self.legacy {
            return init(db, codec);
        }
        let db = fresh_copy(self.path, &db, &codec, &codec, Legacy { items: false, shield: true }, self.cache_bytes)?;
        tracing::info!("store: the shield's tables are sealed now (the old file is gone)");
        Ok(Arc::new(Generation { db, codec }))
    }
}

/// What a fresh copy converts from an older version's store.
#[derive(Debug, Clone, Copy, Default)]
struct Legacy {
    /// Ended items (deleted, cancelled) are purged on the way.
    items: bool,
    /// The shield's tables are in clear.
    shield: bool,
}

/// Creates every table (so readers never meet a missing one) and records the format.
fn init(db: Database, codec: Codec) -> Result<Arc<Generation>, StoreError> {
    let txn = db.begin_write().map_err(backend)?;
    create_tables(&txn)?;
    write_meta(&txn, &codec)?;
    txn.commit().map_err(backend)?;
    Ok(Arc::new(Generation { db, codec }))
}

fn write_meta(txn: &WriteTransaction, codec: &Codec) -> Result<(), StoreError> {
    let mut meta = txn.open_table(META).map_err(backend)?;
    meta.insert("format", codec.format()).map_err(backend)?;
    meta.insert(SHIELD_FORMAT.0, SHIELD_FORMAT.1).map_err(backend)?;
    if let Some(seal) = &codec.seal {
        meta.insert("check", seal.check_value().as_str()).map_err(backend)?;
        if let Some(epoch) = seal.epoch() {
            meta.insert("epoch", epoch.to_string().as_str()).map_err(backend)?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Rotation: a fresh file, re-sealed under the next epoch.
// ---------------------------------------------------------------------------------------

/// Writes every live row of `src` into a fresh `pavise.redb.next` in `dst`'s format, fsyncs
/// it, renames it over `path` and fsyncs the directory; returns the new file, open. The old
/// file (and every freed page in it) goes with its last open handle. `legacy`: what of the
/// source is an older version's (see [`Legacy`]).
fn fresh_copy(
    path: &Path,
    src: &Database,
    src_codec: &Codec,
    dst_codec: &Codec,
    legacy: Legacy,
    cache_bytes: usize,
) -> Result<Database, StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let next = dir.join(NEXT_FILE_NAME);
    match std::fs::remove_file(&next) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_err("removing a stale fresh file", e)),
        _ => {}
    }
    let dst = Database::builder().set_cache_size(cache_bytes).create(&next).map_err(backend)?;
    restrict(&next).map_err(|e| io_err("the fresh store file", e))?;
    {
        let rtxn = src.begin_read().map_err(backend)?;
        for table in rtxn.list_tables().map_err(backend)? {
            if !KNOWN_TABLES.contains(&table.name()) {
                return Err(StoreError::Backend(format!(
                    "the store holds a table this version cannot carry into a fresh file ({}); not rotating",
                    table.name()
                )));
            }
        }
        let mut wtxn = dst.begin_write().map_err(backend)?;
        wtxn.set_durability(redb::Durability::Immediate);
        wtxn.set_quick_repair(true);
        create_tables(&wtxn)?;
        copy_into(&rtxn, src_codec, &wtxn, dst_codec, legacy)?;
        write_meta(&wtxn, dst_codec)?;
        wtxn.commit().map_err(backend)?;
    }
    std::fs::rename(&next, path).map_err(|e| io_err("renaming the fresh store file into place", e))?;
    #[cfg(unix)]
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_err("syncing the data dir", e))?;
    Ok(dst)
}

/// Copies what is live: items (their indexes, counts and credential references rebuilt in
/// the target format), credentials still referenced, each account's newest credential,
/// sweeps, the `gone` count, and the shield's tables (re-sealed; an older version's
/// converted).
fn copy_into(
    src: &ReadTransaction,
    src_codec: &Codec,
    dst: &WriteTransaction,
    dst_codec: &Codec,
    legacy: Legacy,
) -> Result<(), StoreError> {
    let exists =
        |name: &str| -> Result<bool, StoreError> { Ok(src.list_tables().map_err(backend)?.any(|t| t.name() == name)) };
    // Credentials first, with no references yet: the items take them again.
    if exists("expiry_credentials")? {
        let table = src.open_table(CREDENTIALS).map_err(backend)?;
        let mut out = dst.open_table(CREDENTIALS).map_err(backend)?;
        for row in table.iter().map_err(backend)? {
            let (k, v) = row.map_err(backend)?;
            let mut cred: CredentialRow = src_codec.get("expiry_credentials", k.value(), v.value())?;
            let id = cred.id.clone().unwrap_or_else(|| k.value().to_owned());
            cred.id = Some(id.clone());
            cred.refs = 0;
            let key = dst_codec.cred_key(&id);
            out.insert(key.as_str(), dst_codec.put("expiry_credentials", &key, &cred)?.as_slice()).map_err(backend)?;
        }
    }
    let mut gone = if exists("expiry_counts")? {
        src.open_table(COUNTS).map_err(backend)?.get(GONE).map_err(backend)?.map_or(0, |v| v.value())
    } else {
        0
    };
    if exists("expiry_items")? {
        let table = src.open_table(ITEMS).map_err(backend)?;
        for row in table.iter().map_err(backend)? {
            let (k, v) = row.map_err(backend)?;
            let item: Scheduled = src_codec.get("expiry_items", k.value(), v.value())?;
            if item.state == ExpiryState::Cancelled || (legacy.items && item.state == ExpiryState::Deleted) {
                gone += 1;
                continue;
            }
            replace(dst, dst_codec, None, &item)?;
        }
    }
    {
        // Credentials no item needs any more go now.
        let keys: Vec<String> = {
            let table = dst.open_table(CREDENTIALS).map_err(backend)?;
            let mut keys = Vec::new();
            for row in table.iter().map_err(backend)? {
                keys.push(row.map_err(backend)?.0.value().to_owned());
            }
            keys
        };
        for key in keys {
            credential_ref_by_key(dst, dst_codec, &key, 0)?;
        }
    }
    if exists("expiry_account_credential")? {
        let table = src.open_table(ACCOUNT_CREDENTIAL).map_err(backend)?;
        let creds = src.open_table(CREDENTIALS).map_err(backend)?;
        let kept = dst.open_table(CREDENTIALS).map_err(backend)?;
        let mut out = dst.open_table(ACCOUNT_CREDENTIAL).map_err(backend)?;
        for row in table.iter().map_err(backend)? {
            let (_, v) = row.map_err(backend)?;
            let Some(found) = creds.get(v.value()).map_err(backend)? else { continue };
            let cred: CredentialRow = src_codec.get("expiry_credentials", v.value(), found.value())?;
            let id = cred.id.unwrap_or_else(|| v.value().to_owned());
            let key = dst_codec.cred_key(&id);
            if kept.get(key.as_str()).map_err(backend)?.is_some() {
                out.insert(dst_codec.account_key(&cred.account).as_str(), key.as_str()).map_err(backend)?;
            }
        }
    }
    if exists("expiry_sweeps")? {
        let table = src.open_table(SWEEPS).map_err(backend)?;
        let mut out = dst.open_table(SWEEPS).map_err(backend)?;
        for row in table.iter().map_err(backend)? {
            let (k, v) = row.map_err(backend)?;
            let progress: SweepProgress = src_codec.get("expiry_sweeps", k.value(), v.value())?;
            let key = dst_codec.account_key(&progress.account);
            out.insert(key.as_str(), dst_codec.put("expiry_sweeps", &key, &progress)?.as_slice()).map_err(backend)?;
        }
    }
    dst.open_table(COUNTS).map_err(backend)?.insert(GONE, gone).map_err(backend)?;
    copy_shield(src, src_codec, dst, dst_codec, legacy.shield, &exists)
}

/// The shield's tables into the fresh file: values re-sealed under the target's epoch;
/// first-seen and follow keys kept (they are [`StableIndex`] hashes, the same in every
/// epoch), or hashed now when the source kept them in clear. `legacy`: the source's shield
/// tables are an older version's, all in clear.
fn copy_shield(
    src: &ReadTransaction,
    src_codec: &Codec,
    dst: &WriteTransaction,
    dst_codec: &Codec,
    legacy: bool,
    exists: &dyn Fn(&str) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    let clear = Codec::clear(&src_codec.forgot);
    let src_codec = if legacy { &clear } else { src_codec };
    // A stable key from the source, as the target writes it.
    let rekey = |domain: &str, key: &str| {
        if src_codec.stable.is_some() { key.to_owned() } else { dst_codec.stable_key(domain, key) }
    };
    for (name, def, domain) in [("shield_seen", SHIELD_SEEN, "seen"), ("shield_follow", SHIELD_FOLLOW, "follow")] {
        if !exists(name)? {
            continue;
        }
        let table = src.open_table(def).map_err(backend)?;
        let mut out = dst.open_table(def).map_err(backend)?;
        for row in table.iter().map_err(backend)? {
            let (k, v) = row.map_err(backend)?;
            let at: UnixMs = src_codec.get(name, k.value(), v.value())?;
            let key = rekey(domain, k.value());
            out.insert(key.as_str(), dst_codec.put(name, &key, &at)?.as_slice()).map_err(backend)?;
        }
    }
    // An older version's first-seen and follows, in tables of their own.
    if exists("shield_first_seen")? {
        let table = src.open_table(LEGACY_FIRST_SEEN).map_err(backend)?;
        let seen: Vec<(String, UnixMs)> = table
            .iter()
            .map_err(backend)?
            .map(|row| row.map(|(k, v)| (k.value().to_owned(), v.value())).map_err(backend))
            .collect::<Result<_, _>>()?;
        first_seen_in(dst, dst_codec, &seen)?;
    }
    if exists("shield_follows")? {
        let table = src.open_table(LEGACY_FOLLOWS).map_err(backend)?;
        let mut out = dst.open_table(SHIELD_FOLLOW).map_err(backend)?;
        for row in table.iter().map_err(backend)? {
            let (k, v) = row.map_err(backend)?;
            let (account, actor) = k.value();
            let key = dst_codec.stable_key("follow", &follow_key(account, actor));
            out.insert(key.as_str(), dst_codec.put("shield_follow", &key, &v.value())?.as_slice()).map_err(backend)?;
        }
    }
    for (name, def) in
        [("shield_held", SHIELD_HELD), ("shield_audit", SHIELD_AUDIT), ("shield_sealed_held", SHIELD_SEALED_HELD)]
    {
        if !exists(name)? {
            continue;
        }
        let table = src.open_table(def).map_err(backend)?;
        let mut out = dst.open_table(def).map_err(backend)?;
        for row in table.iter().map_err(backend)? {
            let (k, v) = row.map_err(backend)?;
            let key = k.value().to_string();
            let plain = src_codec.get_raw(name, &key, v.value())?;
            out.insert(k.value(), dst_codec.put_raw(name, &key, &plain)?.as_slice()).map_err(backend)?;
        }
    }
    Ok(())
}

/// The writer thread: group commits, rotations.
struct Writer {
    current: Current,
    generation: Arc<Generation>,
    keys: Option<Keys>,
    path: PathBuf,
    opts: StoreOptions,
    forgot: Arc<AtomicBool>,
    last_rotation: Instant,
    /// `forgot` is on disk (`store_meta`), so a crash before the rotation still rotates.
    marked: bool,
}

impl Writer {
    fn run(&mut self, jobs: &mpsc::Receiver<Msg>) {
        if self.marked {
            self.forgot.store(true, Ordering::Release);
        }
        loop {
            let first = match jobs.recv_timeout(TICK) {
                Ok(m) => m,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.maybe_rotate();
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            let mut batch = Vec::new();
            let mut rotations = Vec::new();
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Job(job) => batch.push(job),
                    Msg::Rotate(reply) => rotations.push(reply),
                }
                if batch.len() < MAX_BATCH {
                    next = jobs.try_recv().ok();
                }
            }
            if !batch.is_empty() {
                self.commit_batch(batch);
            }
            if !rotations.is_empty() {
                let result = self.rotate();
                for reply in rotations {
                    let _ = reply.send(result.clone());
                }
            }
            self.maybe_rotate();
        }
        // Closing: what was purged since the last rotation does not outlive the process.
        if self.forgot.load(Ordering::Acquire) {
            self.rotate_logged();
        }
    }

    fn maybe_rotate(&mut self) {
        if let Some(keys) = self.keys.as_mut()
            && keys.unsettled
        {
            keys.unsettled = keys.file.write(&keys.store_key, 1 - keys.slot, keys.epoch, &keys.secret).is_err();
        }
        if self.forgot.load(Ordering::Acquire) && self.last_rotation.elapsed() >= self.opts.forget_within {
            self.rotate_logged();
        }
    }

    fn rotate_logged(&mut self) {
        match self.rotate() {
            Ok(r) => {
                tracing::debug!(epoch = ?r.epoch, bytes_before = r.bytes_before, bytes_after = r.bytes_after, "store: rotated into a fresh file")
            }
            Err(e) => {
                // Try again later, not at once: a disk that is full stays full for a while.
                self.last_rotation = Instant::now();
                tracing::error!(error = %e, "store: rotation failed; purged records stay readable with the key file until it succeeds");
            }
        }
    }

    fn rotate(&mut self) -> Result<Rotation, StoreError> {
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let bytes_before = size(&self.path);
        let forgot = self.forgot.clone();
        let next = match &self.keys {
            Some(k) => {
                let epoch = k.epoch + 1;
                let secret =
                    super::seal::next_epoch_key(&k.secret, epoch).map_err(|e| StoreError::Backend(e.to_string()))?;
                // The new key into the spare slot first: whichever way this ends, one slot
                // opens the epoch the store is in.
                let spare = 1 - k.slot;
                k.file.write(&k.store_key, spare, epoch, &secret).map_err(|e| io_err("the epoch file", e))?;
                Some((epoch, secret, spare))
            }
            None => None,
        };
        let codec = match &next {
            Some((epoch, secret, _)) => Codec {
                seal: Some(Arc::new(RecordSeal::for_epoch(*epoch, secret))),
                stable: self.generation.codec.stable.clone(),
                forgot,
            },
            None => Codec { seal: None, stable: None, forgot },
        };
        // Taken now: whatever is purged from here on belongs to the fresh file.
        self.forgot.store(false, Ordering::Release);
        let db = match fresh_copy(
            &self.path,
            &self.generation.db,
            &self.generation.codec,
            &codec,
            Legacy::default(),
            self.opts.cache_bytes,
        ) {
            Ok(db) => db,
            Err(e) => {
                self.forgot.store(true, Ordering::Release);
                return Err(e);
            }
        };
        let generation = Arc::new(Generation { db, codec });
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = generation.clone();
        self.generation = generation;
        self.marked = false;
        self.last_rotation = Instant::now();
        if let (Some(k), Some((epoch, secret, spare))) = (self.keys.as_mut(), next) {
            let old = k.slot;
            k.epoch = epoch;
            k.secret = secret;
            k.slot = spare;
            // The old key, overwritten in place.
            k.unsettled = k.file.write(&k.store_key, old, epoch, &secret).is_err();
        }
        Ok(Rotation { epoch: self.keys.as_ref().map(|k| k.epoch), bytes_before, bytes_after: size(&self.path) })
    }

    fn commit_batch(&mut self, mut batch: Vec<Box<dyn Job>>) {
        match self.commit(&mut batch) {
            Ok(()) => batch.into_iter().for_each(|j| j.finish(Ok(()))),
            Err(e) if batch.len() == 1 => batch.into_iter().for_each(|j| j.finish(Err(e.clone()))),
            Err(_) => {
                // One write failed and took its neighbours' commit with it: run each alone,
                // so only the failing one reports the failure.
                for job in batch {
                    let mut one = vec![job];
                    let result = self.commit(&mut one);
                    one.into_iter().for_each(|j| j.finish(result.clone()));
                }
            }
        }
    }

    fn commit(&mut self, batch: &mut [Box<dyn Job>]) -> Result<(), StoreError> {
        let generation = self.generation.clone();
        let mut txn = generation.db.begin_write().map_err(backend)?;
        txn.set_durability(redb::Durability::Immediate);
        txn.set_quick_repair(true);
        for job in batch.iter_mut() {
            job.run(&txn, &generation.codec)?;
        }
        let mark = !self.marked && self.forgot.load(Ordering::Acquire);
        if mark {
            txn.open_table(META).map_err(backend)?.insert("forgot", "1").map_err(backend)?;
        }
        txn.commit().map_err(backend)?;
        self.marked |= mark;
        Ok(())
    }
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

fn read_credential_row(txn: &WriteTransaction, codec: &Codec, key: &str) -> Result<Option<CredentialRow>, StoreError> {
    let creds = txn.open_table(CREDENTIALS).map_err(backend)?;
    let found = creds.get(key).map_err(backend)?;
    found.map(|v| codec.get("expiry_credentials", key, v.value())).transpose()
}

fn credential_ref(txn: &WriteTransaction, codec: &Codec, id: &str, delta: i64) -> Result<(), StoreError> {
    credential_ref_by_key(txn, codec, &codec.cred_key(id), delta)
}

fn credential_ref_by_key(txn: &WriteTransaction, codec: &Codec, key: &str, delta: i64) -> Result<(), StoreError> {
    let Some(mut row) = read_credential_row(txn, codec, key)? else { return Ok(()) };
    row.refs = row.refs.saturating_add_signed(delta);
    let mut creds = txn.open_table(CREDENTIALS).map_err(backend)?;
    if row.refs == 0 {
        // Nothing pending needs this token any more: forget it.
        creds.remove(key).map_err(backend)?;
        codec.forgot();
        let mut by_account = txn.open_table(ACCOUNT_CREDENTIAL).map_err(backend)?;
        let account_key = codec.account_key(&row.account);
        let points_here = by_account.get(account_key.as_str()).map_err(backend)?.is_some_and(|v| v.value() == key);
        if points_here {
            by_account.remove(account_key.as_str()).map_err(backend)?;
        }
    } else if delta != 0 {
        creds.insert(key, codec.put("expiry_credentials", key, &row)?.as_slice()).map_err(backend)?;
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
    codec.forgot();
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
                tags: if item.tags.is_empty() { o.tags.clone() } else { item.tags.clone() },
                attachments: if item.attachments.is_empty() { o.attachments.clone() } else { item.attachments.clone() },
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
    let cred_key = codec.cred_key(&cred.id);
    if read_credential_row(txn, codec, &cred_key)?.is_none() {
        let row = CredentialRow {
            id: Some(cred.id.clone()),
            account: cred.account.clone(),
            sealed: cred.sealed.clone(),
            refs: 0,
        };
        let mut creds = txn.open_table(CREDENTIALS).map_err(backend)?;
        creds
            .insert(cred_key.as_str(), codec.put("expiry_credentials", &cred_key, &row)?.as_slice())
            .map_err(backend)?;
    }
    if cred.account.is_empty() {
        // Not known yet whose it is (see `publish`): no account to re-queue for.
        return Ok(0);
    }
    let account_key = codec.account_key(&cred.account);
    let is_new_for_account = {
        let mut by_account = txn.open_table(ACCOUNT_CREDENTIAL).map_err(backend)?;
        let current = by_account.get(account_key.as_str()).map_err(backend)?.map(|v| v.value().to_owned());
        if current.as_deref() == Some(cred_key.as_str()) {
            false
        } else {
            by_account.insert(account_key.as_str(), cred_key.as_str()).map_err(backend)?;
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
        let Some(new) = super::requeued(&old, cred, now) else { continue };
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
    match outcome.settle(&old, now_ms()) {
        Some(new) => replace(txn, codec, Some(&old), &new)?,
        None => purge(txn, codec, &old)?,
    }
    Ok(true)
}

fn set_flags_in(
    txn: &WriteTransaction,
    codec: &Codec,
    id: &str,
    flags: KeepFlags,
    cred: Option<&SealedCredential>,
) -> Result<bool, StoreError> {
    let Some(old) = get_item(txn, codec, id)? else { return Ok(false) };
    if old.flags == flags {
        return Ok(true);
    }
    let now = now_ms();
    let mut new = Scheduled { flags, updated_at: now, ..old.clone() };
    if old.state == ExpiryState::Kept {
        // What kept it may be gone: let the scheduler look again, with the author's token.
        new.state = ExpiryState::Pending;
        new.next_attempt = now;
        new.reason = Some("keep condition changed; re-checking".into());
        if let Some(cred) = cred {
            put_credential(txn, codec, cred, now)?;
            new.credential = Some(cred.id.clone());
        }
    }
    replace(txn, codec, Some(&old), &new)?;
    if let Some(cred) = cred {
        credential_ref(txn, codec, &cred.id, 0)?;
    }
    Ok(true)
}

fn read_item_by_key(txn: &ReadTransaction, codec: &Codec, key: &str) -> Result<Option<Scheduled>, StoreError> {
    let items = txn.open_table(ITEMS).map_err(backend)?;
    let found = items.get(key).map_err(backend)?;
    found.map(|v| codec.get("expiry_items", key, v.value())).transpose()
}

fn read_next_due(txn: &ReadTransaction) -> Result<Option<UnixMs>, StoreError> {
    let due = txn.open_table(DUE).map_err(backend)?;
    Ok(due.first().map_err(backend)?.map(|(k, _)| k.value().0))
}

fn read_credential_by_key(
    txn: &ReadTransaction,
    codec: &Codec,
    key: &str,
) -> Result<Option<SealedCredential>, StoreError> {
    let creds = txn.open_table(CREDENTIALS).map_err(backend)?;
    let row: Option<CredentialRow> =
        creds.get(key).map_err(backend)?.map(|v| codec.get("expiry_credentials", key, v.value())).transpose()?;
    Ok(row.map(|r| SealedCredential {
        id: r.id.unwrap_or_else(|| key.to_owned()),
        account: r.account,
        sealed: r.sealed,
    }))
}

impl ScheduleStore for EmbeddedStore {
    fn schedule(&self, items: Vec<(Scheduled, Option<SealedCredential>)>) -> StoreFuture<'_, u64> {
        Box::pin(self.write_with(move |txn, codec| schedule_in(txn, codec, &items, false).map(|(n, _)| n)))
    }

    fn schedule_new(&self, items: Vec<(Scheduled, Option<SealedCredential>)>) -> StoreFuture<'_, Vec<bool>> {
        Box::pin(self.write_with(move |txn, codec| schedule_in(txn, codec, &items, true).map(|(_, inserted)| inserted)))
    }

    fn lookup<'a>(&'a self, status_id: &'a str) -> StoreFuture<'a, Option<Scheduled>> {
        let id = status_id.to_owned();
        Box::pin(self.read_with(move |txn, codec| read_item_by_key(txn, codec, &codec.item_key(&id))))
    }

    fn claim_due(&self, now: UnixMs, limit: usize, lease_ms: u64) -> StoreFuture<'_, Vec<Scheduled>> {
        Box::pin(self.write_with(move |txn, codec| claim_in(txn, codec, now, limit, lease_ms)))
    }

    fn next_due(&self) -> StoreFuture<'_, Option<UnixMs>> {
        Box::pin(self.read(read_next_due))
    }

    fn settle<'a>(&'a self, status_id: &'a str, outcome: Outcome) -> StoreFuture<'a, bool> {
        let id = status_id.to_owned();
        Box::pin(self.write_with(move |txn, codec| settle_in(txn, codec, &id, &outcome)))
    }

    fn set_flags<'a>(
        &'a self,
        status_id: &'a str,
        flags: KeepFlags,
        cred: Option<SealedCredential>,
    ) -> StoreFuture<'a, bool> {
        let id = status_id.to_owned();
        Box::pin(self.write_with(move |txn, codec| set_flags_in(txn, codec, &id, flags, cred.as_ref())))
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
        Box::pin(self.read_with(move |txn, codec| {
            let mut out = Vec::new();
            if state == Some(ExpiryState::Failed) {
                // The failed index is small; no need to walk every item.
                let failed = txn.open_table(FAILED).map_err(backend)?;
                for entry in failed.iter().map_err(backend)? {
                    let (k, _) = entry.map_err(backend)?;
                    if out.len() >= limit {
                        break;
                    }
                    if let Some(item) = read_item_by_key(txn, codec, k.value())? {
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
        Box::pin(self.read_with(move |txn, codec| {
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
                if let Some(item) = read_item_by_key(txn, codec, key)?.filter(has_deadline) {
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
        Box::pin(self.write_with(move |txn, codec| {
            let key = codec.account_key(&progress.account);
            let mut table = txn.open_table(SWEEPS).map_err(backend)?;
            // The record it replaces may hold the sweep's token (while it ran).
            codec.forgot();
            table.insert(key.as_str(), codec.put("expiry_sweeps", &key, &progress)?.as_slice()).map_err(backend)?;
            Ok(())
        }))
    }

    fn sweep<'a>(&'a self, account: &'a str) -> StoreFuture<'a, Option<SweepProgress>> {
        let account = account.to_owned();
        Box::pin(self.read_with(move |txn, codec| {
            let key = codec.account_key(&account);
            let table = txn.open_table(SWEEPS).map_err(backend)?;
            let found = table.get(key.as_str()).map_err(backend)?;
            found.map(|v| codec.get("expiry_sweeps", &key, v.value())).transpose()
        }))
    }

    fn sweeps(&self) -> StoreFuture<'_, Vec<SweepProgress>> {
        Box::pin(self.read_with(move |txn, codec| {
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
        Box::pin(self.write_with(move |txn, codec| {
            let n = put_credential(txn, codec, &cred, now_ms())?;
            // Kept only if a re-queued item took it.
            credential_ref(txn, codec, &cred.id, 0)?;
            Ok(n)
        }))
    }

    fn credential<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<SealedCredential>> {
        let id = id.to_owned();
        Box::pin(self.read_with(move |txn, codec| read_credential_by_key(txn, codec, &codec.cred_key(&id))))
    }

    fn account_credential<'a>(&'a self, account: &'a str) -> StoreFuture<'a, Option<SealedCredential>> {
        let account = account.to_owned();
        Box::pin(self.read_with(move |txn, codec| {
            let by_account = txn.open_table(ACCOUNT_CREDENTIAL).map_err(backend)?;
            let key =
                by_account.get(codec.account_key(&account).as_str()).map_err(backend)?.map(|v| v.value().to_owned());
            match key {
                Some(key) => read_credential_by_key(txn, codec, &key),
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

/// A follow's plain key: one member's, of one actor.
fn follow_key(account: &str, actor: &str) -> String {
    format!("{account}\n{actor}")
}

/// Records first-seen times; an existing, older one wins.
fn first_seen_in(txn: &WriteTransaction, codec: &Codec, seen: &[(String, UnixMs)]) -> Result<(), StoreError> {
    let mut table = txn.open_table(SHIELD_SEEN).map_err(backend)?;
    for (actor, at) in seen {
        let key = codec.stable_key("seen", actor);
        let existing: Option<UnixMs> = match table.get(key.as_str()).map_err(backend)? {
            Some(v) => Some(codec.get("shield_seen", &key, v.value())?),
            None => None,
        };
        if existing.is_none_or(|old| *at < old) {
            if existing.is_some() {
                codec.forgot();
            }
            table.insert(key.as_str(), codec.put("shield_seen", &key, at)?.as_slice()).map_err(backend)?;
        }
    }
    Ok(())
}

/// Appends one audit record, and lets the oldest go (see [`MAX_AUDIT_RECORDS`]).
fn append_audit(txn: &WriteTransaction, codec: &Codec, record: &AuditRecord) -> Result<(), StoreError> {
    let mut audit = txn.open_table(SHIELD_AUDIT).map_err(backend)?;
    let next = audit.last().map_err(backend)?.map_or(0, |(k, _)| k.value() + 1);
    audit.insert(next, codec.put("shield_audit", &next.to_string(), record)?.as_slice()).map_err(backend)?;
    let too_old = record.at.saturating_sub(AUDIT_KEPT_MS);
    loop {
        let Some((seq, at)) = (match audit.first().map_err(backend)? {
            Some((k, v)) => {
                let seq = k.value();
                let old: AuditRecord = codec.get("shield_audit", &seq.to_string(), v.value())?;
                Some((seq, old.at))
            }
            None => None,
        }) else {
            break;
        };
        if seq == next || (next - seq < MAX_AUDIT_RECORDS && at >= too_old) {
            break;
        }
        audit.remove(seq).map_err(backend)?;
        codec.forgot();
    }
    Ok(())
}

/// Removes a row of a table keyed by a held delivery's id; whether it was there.
fn remove_by_id(
    txn: &WriteTransaction,
    codec: &Codec,
    def: TableDefinition<'static, u64, &[u8]>,
    id: u64,
) -> Result<Option<Vec<u8>>, StoreError> {
    let mut table = txn.open_table(def).map_err(backend)?;
    let removed = table.remove(id).map_err(backend)?.map(|v| v.value().to_vec());
    if removed.is_some() {
        codec.forgot();
    }
    Ok(removed)
}

/// Inserts or replaces a row of a table keyed by a held delivery's id.
fn put_by_id(
    txn: &WriteTransaction,
    codec: &Codec,
    def: TableDefinition<'static, u64, &[u8]>,
    id: u64,
    sealed: &[u8],
) -> Result<(), StoreError> {
    let mut table = txn.open_table(def).map_err(backend)?;
    if table.insert(id, sealed).map_err(backend)?.is_some() {
        codec.forgot();
    }
    Ok(())
}

/// Every row of a table keyed by a held delivery's id, opened, lowest id first.
fn all_by_id(
    txn: &ReadTransaction,
    codec: &Codec,
    name: &str,
    def: TableDefinition<'static, u64, &[u8]>,
) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
    let table = txn.open_table(def).map_err(backend)?;
    let mut out = Vec::new();
    for row in table.iter().map_err(backend)? {
        let (k, v) = row.map_err(backend)?;
        out.push((k.value(), codec.get_raw(name, &k.value().to_string(), v.value())?));
    }
    Ok(out)
}

/// The shield's rows, as the expiry's: in a sealed store, values sealed under the epoch key
/// (so a removed held delivery or audit record goes for good with the next rotation) and
/// the first-seen and follow keys [`StableIndex`] hashes (a seizure cannot list who wrote).
/// Only a removal or a replacement counts as forgetting something (an insert frees pages
/// that hold other, live rows).
impl ShieldStore for EmbeddedStore {
    fn first_seen<'a>(&'a self, actor: &'a str) -> StoreFuture<'a, Option<UnixMs>> {
        let actor = actor.to_owned();
        Box::pin(self.read_with(move |txn, codec| {
            let key = codec.stable_key("seen", &actor);
            let table = txn.open_table(SHIELD_SEEN).map_err(backend)?;
            let found = table.get(key.as_str()).map_err(backend)?;
            found.map(|v| codec.get("shield_seen", &key, v.value())).transpose()
        }))
    }

    fn record_first_seen(&self, seen: Vec<(String, UnixMs)>) -> StoreFuture<'_, ()> {
        Box::pin(self.write_with(move |txn, codec| first_seen_in(txn, codec, &seen)))
    }

    fn follows<'a>(&'a self, account: &'a str, actor: &'a str) -> StoreFuture<'a, bool> {
        let key = follow_key(account, actor);
        Box::pin(self.read_with(move |txn, codec| {
            let table = txn.open_table(SHIELD_FOLLOW).map_err(backend)?;
            Ok(table.get(codec.stable_key("follow", &key).as_str()).map_err(backend)?.is_some())
        }))
    }

    fn record_follows(&self, changes: Vec<FollowChange>) -> StoreFuture<'_, ()> {
        Box::pin(self.write_with(move |txn, codec| {
            let mut table = txn.open_table(SHIELD_FOLLOW).map_err(backend)?;
            let now = now_ms();
            for c in &changes {
                let key = codec.stable_key("follow", &follow_key(&c.account, &c.actor));
                let replaced = if c.following {
                    table.insert(key.as_str(), codec.put("shield_follow", &key, &now)?.as_slice()).map_err(backend)?
                } else {
                    table.remove(key.as_str()).map_err(backend)?
                };
                if replaced.is_some() {
                    codec.forgot();
                }
            }
            Ok(())
        }))
    }

    fn put_held(&self, held: HeldDelivery, audit: AuditRecord) -> StoreFuture<'_, ()> {
        Box::pin(self.write_with(move |txn, codec| {
            let sealed = codec.put("shield_held", &held.id.to_string(), &held)?;
            put_by_id(txn, codec, SHIELD_HELD, held.id, &sealed)?;
            append_audit(txn, codec, &audit)
        }))
    }

    fn remove_held(&self, id: u64, audit: AuditRecord) -> StoreFuture<'_, Option<HeldDelivery>> {
        Box::pin(self.write_with(move |txn, codec| {
            let Some(removed) = remove_by_id(txn, codec, SHIELD_HELD, id)? else { return Ok(None) };
            let held: HeldDelivery = codec.get("shield_held", &id.to_string(), &removed)?;
            append_audit(txn, codec, &audit)?;
            Ok(Some(held))
        }))
    }

    fn held(&self, id: u64) -> StoreFuture<'_, Option<HeldDelivery>> {
        Box::pin(self.read_with(move |txn, codec| {
            let table = txn.open_table(SHIELD_HELD).map_err(backend)?;
            let found = table.get(id).map_err(backend)?;
            found.map(|v| codec.get("shield_held", &id.to_string(), v.value())).transpose()
        }))
    }

    fn list_held(&self) -> StoreFuture<'_, Vec<HeldDelivery>> {
        Box::pin(self.read_with(|txn, codec| {
            all_by_id(txn, codec, "shield_held", SHIELD_HELD)?
                .into_iter()
                .map(|(id, plain)| decode(&format!("shield_held/{id}"), &plain))
                .collect()
        }))
    }

    fn audit_log(&self, limit: usize) -> StoreFuture<'_, Vec<AuditRecord>> {
        Box::pin(self.read_with(move |txn, codec| {
            let table = txn.open_table(SHIELD_AUDIT).map_err(backend)?;
            let mut out = Vec::new();
            for row in table.iter().map_err(backend)?.rev().take(limit) {
                let (k, v) = row.map_err(backend)?;
                out.push(codec.get("shield_audit", &k.value().to_string(), v.value())?);
            }
            Ok(out)
        }))
    }

    fn put_sealed_held(&self, id: u64, sealed: Vec<u8>, audit: AuditRecord) -> StoreFuture<'_, ()> {
        Box::pin(self.write_with(move |txn, codec| {
            let sealed = codec.put_raw("shield_sealed_held", &id.to_string(), &sealed)?;
            put_by_id(txn, codec, SHIELD_SEALED_HELD, id, &sealed)?;
            append_audit(txn, codec, &audit)
        }))
    }

    fn remove_sealed_held(&self, id: u64, audit: AuditRecord) -> StoreFuture<'_, bool> {
        Box::pin(self.write_with(move |txn, codec| {
            let removed = remove_by_id(txn, codec, SHIELD_SEALED_HELD, id)?.is_some();
            if removed {
                append_audit(txn, codec, &audit)?;
            }
            Ok(removed)
        }))
    }

    fn sealed_held(&self, id: u64) -> StoreFuture<'_, Option<Vec<u8>>> {
        Box::pin(self.read_with(move |txn, codec| {
            let table = txn.open_table(SHIELD_SEALED_HELD).map_err(backend)?;
            let found = table.get(id).map_err(backend)?;
            found.map(|v| codec.get_raw("shield_sealed_held", &id.to_string(), v.value())).transpose()
        }))
    }

    fn list_sealed_held(&self) -> StoreFuture<'_, Vec<(u64, Vec<u8>)>> {
        Box::pin(self.read_with(|txn, codec| all_by_id(txn, codec, "shield_sealed_held", SHIELD_SEALED_HELD)))
    }

    fn forget_follows(&self) -> StoreFuture<'_, u64> {
        Box::pin(self.write_with(|txn, codec| {
            let mut table = txn.open_table(SHIELD_FOLLOW).map_err(backend)?;
            let n = table.len().map_err(backend)?;
            if n > 0 {
                table.retain(|_, _| false).map_err(backend)?;
                codec.forgot();
            }
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

    fn key() -> StoreKey {
        StoreKey::new(&[42; 32])
    }

    fn contains(bytes: &[u8], needle: &[u8]) -> bool {
        bytes.windows(needle.len()).any(|w| w == needle)
    }

    /// Every row of every redb leaf page in `bytes`, live or freed, read both ways redb lays
    /// a leaf out (variable-width keys, and fixed 8-byte keys): what a forensic read of a
    /// seized file gets to try keys on.
    fn leaf_rows(bytes: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        const PAGE: usize = 4096;
        let u32_at = |at: usize| bytes.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
        let ordered = |v: &[usize]| v.windows(2).all(|w| w[0] <= w[1]);
        let mut rows = Vec::new();
        for page in (0..bytes.len().saturating_sub(PAGE - 1)).step_by(PAGE) {
            if bytes[page] != 1 {
                continue;
            }
            let n = usize::from(u16::from_le_bytes([bytes[page + 2], bytes[page + 3]]));
            if n == 0 || n > 500 {
                continue;
            }
            let ends = |from: usize| (0..n).map(|i| u32_at(page + from + 4 * i)).collect::<Option<Vec<_>>>();
            // Fixed 8-byte keys: value ends, keys, values.
            if let Some(vends) = ends(4) {
                let start = 4 + 12 * n;
                if ordered(&vends) && vends[0] >= start && vends[n - 1] <= PAGE * 16 {
                    let mut prev = start;
                    for (i, &end) in vends.iter().enumerate() {
                        let key = bytes.get(page + 4 + 4 * n + 8 * i..page + 4 + 4 * n + 8 * (i + 1));
                        let value = bytes.get(page + prev..page + end);
                        if let (Some(k), Some(v)) = (key, value) {
                            rows.push((k.to_vec(), v.to_vec()));
                        }
                        prev = end;
                    }
                }
            }
            // Variable-width keys: key ends, value ends, keys, values.
            if let (Some(kends), Some(vends)) = (ends(4), ends(4 + 4 * n)) {
                let start = 4 + 8 * n;
                if ordered(&kends) && kends[0] >= start && ordered(&vends) && vends[0] >= kends[n - 1] {
                    let (mut kprev, mut vprev) = (start, kends[n - 1]);
                    for (&kend, &vend) in kends.iter().zip(&vends) {
                        if let (Some(k), Some(v)) =
                            (bytes.get(page + kprev..page + kend), bytes.get(page + vprev..page + vend))
                        {
                            rows.push((k.to_vec(), v.to_vec()));
                        }
                        (kprev, vprev) = (kend, vend);
                    }
                }
            }
        }
        rows
    }

    /// The sealed held deliveries a seizure of the data dir and the key file opens in
    /// `bytes`: their ids.
    fn seized_held(dir: &Path, bytes: &[u8]) -> Vec<u64> {
        let file = EpochFile::open_or_create(&dir.join(EPOCH_FILE)).unwrap();
        let seals: Vec<RecordSeal> =
            file.read(&key()).unwrap().into_iter().map(|(_, e, k)| RecordSeal::for_epoch(e, &k)).collect();
        let mut ids = Vec::new();
        for (k, v) in leaf_rows(bytes) {
            let Ok(k) = <[u8; 8]>::try_from(k.as_slice()) else { continue };
            let id = u64::from_le_bytes(k);
            if seals.iter().any(|s| s.open("shield_sealed_held", &id.to_string(), &v).is_ok()) {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// The shield's leftover from earlier red-team passes: its tables were in clear, so a
    /// seized disk listed the senders pavise had seen, the domains of held deliveries and
    /// who followed whom. Now: nothing of it in the file, and a delivery that left the
    /// quarantine cannot be opened once the store has rotated, even with the key file.
    #[tokio::test]
    async fn a_sealed_store_names_no_sender_and_what_left_the_quarantine_goes_with_the_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open_sealed(dir.path(), 1 << 20, key()).unwrap();
        let troll = "accepted:https://troll.example/users/t0";
        store.record_first_seen(vec![(troll.into(), 5)]).await.unwrap();
        store
            .record_follows(vec![FollowChange {
                account: "alice".into(),
                actor: "https://friend.example/users/f".into(),
                following: true,
            }])
            .await
            .unwrap();
        let sent = |id: u64, action: &str| AuditRecord {
            at: now_ms(),
            id,
            domain: "troll.example".into(),
            action: action.into(),
            detail: "held for a while".into(),
        };
        // What the quarantine hands over is sealed already; the store seals it again,
        // under the epoch.
        store.put_sealed_held(7, b"quarantine-record-seven".to_vec(), sent(7, "held")).await.unwrap();
        store.put_sealed_held(8, b"quarantine-record-eight".to_vec(), sent(8, "held")).await.unwrap();
        assert_eq!(store.first_seen(troll).await.unwrap(), Some(5));
        assert!(store.follows("alice", "https://friend.example/users/f").await.unwrap());
        assert!(!store.follows("bob", "https://friend.example/users/f").await.unwrap());
        assert_eq!(store.sealed_held(7).await.unwrap().as_deref(), Some(&b"quarantine-record-seven"[..]));
        assert_eq!(store.audit_log(10).await.unwrap()[0].domain, "troll.example");

        assert!(store.remove_sealed_held(7, sent(7, "released")).await.unwrap());
        let bytes = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
        for clear in [&b"troll.example"[..], b"friend.example", b"alice", b"quarantine-record", b"held for a while"] {
            assert!(!contains(&bytes, clear), "{} is in the file", String::from_utf8_lossy(clear));
        }
        // Before a rotation the released delivery is still in a freed page, and opens with
        // the seized keys (so the reader can fail) ...
        assert_eq!(seized_held(dir.path(), &bytes), [7, 8]);
        store.rotate().await.unwrap();
        // ... after it, only what is still held does.
        let bytes = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
        assert_eq!(seized_held(dir.path(), &bytes), [8]);
        // The keys outlive the epoch: everything reads as before, also after a reopen.
        drop(store);
        let store = EmbeddedStore::open_sealed(dir.path(), 1 << 20, key()).unwrap();
        assert_eq!(store.first_seen(troll).await.unwrap(), Some(5));
        assert!(store.follows("alice", "https://friend.example/users/f").await.unwrap());
        assert_eq!(store.list_sealed_held().await.unwrap(), vec![(8, b"quarantine-record-eight".to_vec())]);
        let log = store.audit_log(10).await.unwrap();
        assert_eq!(
            log.iter().map(|a| (a.id, a.action.as_str())).collect::<Vec<_>>(),
            [(7, "released"), (8, "held"), (7, "held")]
        );
        assert_eq!(store.forget_follows().await.unwrap(), 1);
        assert!(!store.follows("alice", "https://friend.example/users/f").await.unwrap());
    }

    /// What an older version wrote in clear (first-seen senders, follows, the audit trail,
    /// held deliveries) is carried into a fresh file at the first open, keyed and sealed;
    /// the old file, and what it said, is gone. A clear store (tests) converts its tables
    /// the same way.
    #[tokio::test]
    async fn an_older_versions_clear_shield_tables_are_sealed_at_the_first_open() {
        let held = HeldDelivery {
            id: 4,
            received: 1,
            date: None,
            method: "POST".into(),
            path_and_query: "/inbox".into(),
            headers: vec![],
            body: b"a private word".to_vec(),
            domain: "troll.example".into(),
            targets: vec!["alice".into()],
            state: HeldState::Held,
        };
        for sealed in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            {
                let db = Database::create(dir.path().join(FILE_NAME)).unwrap();
                let txn = db.begin_write().unwrap();
                if !sealed {
                    txn.open_table(META).unwrap().insert("format", "clear").unwrap();
                }
                txn.open_table(LEGACY_FIRST_SEEN).unwrap().insert("accepted:https://troll.example/u", 5).unwrap();
                txn.open_table(LEGACY_FOLLOWS).unwrap().insert(("alice", "https://friend.example/u"), 6).unwrap();
                let record = AuditRecord {
                    at: now_ms(),
                    id: 3,
                    domain: "troll.example".into(),
                    action: "held".into(),
                    detail: String::new(),
                };
                txn.open_table(SHIELD_AUDIT).unwrap().insert(0, encode(&record).unwrap().as_slice()).unwrap();
                txn.open_table(SHIELD_SEALED_HELD).unwrap().insert(3, &b"opaque troll.example"[..]).unwrap();
                txn.open_table(SHIELD_HELD).unwrap().insert(4, encode(&held).unwrap().as_slice()).unwrap();
                txn.commit().unwrap();
            }
            let store = if sealed {
                EmbeddedStore::open_sealed(dir.path(), 1 << 20, key()).unwrap()
            } else {
                EmbeddedStore::open(dir.path(), 1 << 20).unwrap()
            };
            assert_eq!(store.first_seen("accepted:https://troll.example/u").await.unwrap(), Some(5));
            assert!(store.follows("alice", "https://friend.example/u").await.unwrap());
            assert_eq!(store.audit_log(10).await.unwrap()[0].domain, "troll.example");
            assert_eq!(store.sealed_held(3).await.unwrap().as_deref(), Some(&b"opaque troll.example"[..]));
            assert_eq!(store.list_held().await.unwrap(), vec![held.clone()]);
            if sealed {
                let bytes = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
                for clear in [&b"troll.example"[..], b"friend.example", b"alice", b"a private word"] {
                    assert!(!contains(&bytes, clear), "{} is in the file", String::from_utf8_lossy(clear));
                }
            }
            // Converted once: the next open reads the new tables as they are.
            drop(store);
            let store = if sealed {
                EmbeddedStore::open_sealed(dir.path(), 1 << 20, key()).unwrap()
            } else {
                EmbeddedStore::open(dir.path(), 1 << 20).unwrap()
            };
            assert_eq!(
                store.first_seen("accepted:https://troll.example/u").await.unwrap(),
                Some(5),
                "sealed: {sealed}"
            );
            assert_eq!(store.list_held().await.unwrap(), vec![held.clone()]);
        }
    }

    /// The audit trail does not outlive its use: the newest `MAX_AUDIT_RECORDS`, none older
    /// than `AUDIT_KEPT_MS`.
    #[test]
    fn the_audit_trail_keeps_its_newest_records_only() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join(FILE_NAME)).unwrap();
        let codec = Codec::clear(&Arc::default());
        let record = |at: UnixMs, id: u64| AuditRecord {
            at,
            id,
            domain: "r.example".into(),
            action: "held".into(),
            detail: String::new(),
        };
        let now = now_ms();
        let txn = db.begin_write().unwrap();
        create_tables(&txn).unwrap();
        append_audit(&txn, &codec, &record(now - AUDIT_KEPT_MS - 1, 0)).unwrap();
        append_audit(&txn, &codec, &record(now - AUDIT_KEPT_MS + 60_000, 1)).unwrap();
        append_audit(&txn, &codec, &record(now, 2)).unwrap();
        {
            let table = txn.open_table(SHIELD_AUDIT).unwrap();
            let ids: Vec<u64> =
                table.iter().unwrap().map(|r| decode::<AuditRecord>("a", r.unwrap().1.value()).unwrap().id).collect();
            assert_eq!(ids, [1, 2], "older than the trail is kept: gone");
        }
        for i in 0..MAX_AUDIT_RECORDS + 5 {
            append_audit(&txn, &codec, &record(now, 10 + i)).unwrap();
        }
        let table = txn.open_table(SHIELD_AUDIT).unwrap();
        assert_eq!(table.len().unwrap(), MAX_AUDIT_RECORDS);
        let (_, last) = table.last().unwrap().unwrap();
        assert_eq!(decode::<AuditRecord>("a", last.value()).unwrap().id, 10 + MAX_AUDIT_RECORDS + 4);
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

    fn seal() -> StoreKey {
        StoreKey::new(&[42; 32])
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
            store.set_flags("2", KeepFlags { pinned: false, favourited: true, bookmarked: false }, None).await.unwrap();
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
                kind: crate::store::PublicationKind::Scheduled,
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
        let wrong = EmbeddedStore::open_sealed(dir.path(), 1 << 20, StoreKey::new(&[1; 32])).unwrap_err();
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

    /// A forensic read of a store file: every redb leaf page (live or freed) walked for its
    /// rows, each row's value tried against `seal` as a record of every sealed table. What
    /// the red team's `forensic.py` does.
    fn forensic(bytes: &[u8], seal: &RecordSeal) -> Vec<(String, serde_json::Value)> {
        const PAGE: usize = 4096;
        let u32_at = |at: usize| bytes.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
        let mut opened = Vec::new();
        let mut off = 0;
        while off + PAGE <= bytes.len() {
            let page = off;
            off += PAGE;
            if bytes[page] != 1 {
                continue;
            }
            let n = usize::from(u16::from_le_bytes([bytes[page + 2], bytes[page + 3]]));
            if n == 0 || n > 500 {
                continue;
            }
            let (Some(kends), Some(vends)) = (
                (0..n).map(|i| u32_at(page + 4 + 4 * i)).collect::<Option<Vec<_>>>(),
                (0..n).map(|i| u32_at(page + 4 + 4 * n + 4 * i)).collect::<Option<Vec<_>>>(),
            ) else {
                continue;
            };
            let start = 4 + 8 * n;
            let ordered = |v: &[usize]| v.windows(2).all(|w| w[0] < w[1]);
            if !ordered(&kends) || kends[0] <= start || vends[0] < kends[n - 1] || vends[n - 1] > 1 << 20 {
                continue;
            }
            let mut prev = start;
            let mut keys = Vec::new();
            for &end in &kends {
                keys.push(bytes.get(page + prev..page + end).unwrap_or_default());
                prev = end;
            }
            let mut prev = kends[n - 1];
            for (key, &end) in keys.into_iter().zip(&vends) {
                let value = bytes.get(page + prev..page + end).unwrap_or_default();
                prev = end;
                let Ok(key) = std::str::from_utf8(key) else { continue };
                for table in ["expiry_items", "expiry_credentials", "expiry_sweeps"] {
                    if let Ok(plain) = seal.open(table, key, value) {
                        opened.push((table.to_owned(), serde_json::from_slice(&plain).unwrap_or_default()));
                    }
                }
            }
        }
        opened
    }

    /// The keys a seizure of the data dir *and* the key file gives: every epoch key the
    /// epoch file still holds, and the key file's own secret.
    fn seized_keys(dir: &Path, key: &StoreKey) -> Vec<RecordSeal> {
        let file = EpochFile::open_or_create(&dir.join(EPOCH_FILE)).unwrap();
        let mut seals: Vec<RecordSeal> =
            file.read(key).unwrap().into_iter().map(|(_, epoch, k)| RecordSeal::for_epoch(epoch, &k)).collect();
        seals.push(key.legacy_seal());
        seals
    }

    fn purged_ids(opened: &[(String, serde_json::Value)], purged: &[String]) -> Vec<String> {
        let mut found: Vec<String> = opened
            .iter()
            .filter_map(|(_, v)| v.get("status_id").and_then(|s| s.as_str()).map(str::to_owned))
            .filter(|id| purged.contains(id))
            .collect();
        found.sort();
        found.dedup();
        found
    }

    /// Finding 1 of the red team (issue 11): a seized data dir plus the key file opened
    /// every purged record still lying in freed pages. Now the rotation re-seals what lives
    /// under a new epoch key into a fresh file and destroys the old key: the same read opens
    /// nothing that was purged, and no token that was dropped.
    #[tokio::test]
    async fn purged_records_cannot_be_opened_from_the_raw_file_even_with_the_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), true);
        let ids: Vec<String> = (0..60u64).map(|i| format!("1099{i:014}")).collect();
        let items = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let c = if i < 30 { "gone-token" } else { "live-token" };
                (item(id, 10 + i as u64, c), Some(cred(c, if i < 30 { "erin" } else { "alice" })))
            })
            .collect();
        store.schedule(items).await.unwrap();
        let purged: Vec<String> = ids[..30].to_vec();
        for id in &purged {
            store.settle(id, Outcome::Deleted { confirm_at: 1 }).await.unwrap();
            store.settle(id, Outcome::Gone).await.unwrap();
        }
        assert_eq!(store.credential_count().await.unwrap(), 1, "erin's token is dropped with her last item");

        // Before the rotation the attack works (so the reader below can fail): freed pages
        // still hold purged records, sealed under the key the seized files give.
        let seized = |p: &Path| seized_keys(p, &seal()).into_iter().next().unwrap();
        let before = forensic(&std::fs::read(dir.path().join(FILE_NAME)).unwrap(), &seized(dir.path()));
        assert!(!purged_ids(&before, &purged).is_empty(), "the forensic read finds purged records in freed pages");

        let epoch = store.epoch().unwrap();
        let rotation = store.rotate().await.unwrap();
        assert_eq!(rotation.epoch, Some(epoch + 1));
        assert_eq!(store.epoch(), Some(epoch + 1));
        let bytes = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
        for key in seized_keys(dir.path(), &seal()) {
            let opened = forensic(&bytes, &key);
            assert!(purged_ids(&opened, &purged).is_empty(), "a purged record opened after the rotation");
            assert!(
                !opened.iter().any(|(_, v)| v.get("account").and_then(|a| a.as_str()) == Some("erin")),
                "erin's dropped token opened after the rotation"
            );
        }
        // What lives still opens with the new epoch, and the store works as before.
        let live = forensic(&bytes, &seized(dir.path()));
        assert_eq!(purged_ids(&live, &ids[30..]).len(), 30);
        assert_eq!(store.lookup(&ids[40]).await.unwrap().unwrap().account, "alice");
        assert!(store.lookup(&ids[0]).await.unwrap().is_none());
        assert_eq!(store.counts().await.unwrap().gone, 30);
        assert_eq!(store.credential_count().await.unwrap(), 1);
        assert_eq!(store.account_credential("alice").await.unwrap().unwrap().id, "live-token");
        assert_eq!(store.hidden_between(0, 1000).await.unwrap().len(), 30);
        // The epoch file holds the new key only: the old one was overwritten in place.
        let slots = EpochFile::open_or_create(&dir.path().join(EPOCH_FILE)).unwrap().read(&seal()).unwrap();
        assert!(slots.iter().all(|(_, e, _)| *e == epoch + 1), "{:?}", slots.iter().map(|s| s.1).collect::<Vec<_>>());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for f in [FILE_NAME, EPOCH_FILE] {
                let mode = std::fs::metadata(dir.path().join(f)).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "{f}");
            }
        }
        drop(store);
        let store = open(dir.path(), true);
        assert_eq!(store.epoch(), Some(epoch + 1), "nothing purged since: closing did not rotate");
        assert_eq!(store.lookup(&ids[59]).await.unwrap().unwrap().deadline, 69);
    }

    /// The writer rotates on its own within `forget_within` of a purge, and when the store
    /// closes with something purged since the last rotation.
    #[tokio::test]
    async fn purges_rotate_on_their_own_and_at_close() {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions { cache_bytes: 1 << 20, forget_within: Duration::from_millis(200) };
        let store = EmbeddedStore::open_with(dir.path(), opts, Some(seal())).unwrap();
        let first = store.epoch().unwrap();
        store.schedule(vec![(item("1", 10, "c"), Some(cred("c", "alice"))), (item("2", 10, "c"), None)]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1300)).await;
        assert_eq!(store.epoch(), Some(first), "nothing purged: no rotation");
        store.settle("1", Outcome::Gone).await.unwrap();
        let mut rotated = false;
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if store.epoch() == Some(first + 1) {
                rotated = true;
                break;
            }
        }
        assert!(rotated, "a purge did not rotate the store within forget_within");
        store.settle("2", Outcome::Cancelled("x".into())).await.unwrap();
        drop(store);
        let store = EmbeddedStore::open_with(dir.path(), StoreOptions::new(1 << 20), Some(seal())).unwrap();
        assert_eq!(store.epoch(), Some(first + 2), "closing with a purge since the last rotation rotates");
        assert_eq!(store.counts().await.unwrap().gone, 2);
    }

    /// A rotation that stopped half way (the new key written, the fresh file not in place;
    /// or the fresh file in place, the old key not yet overwritten) leaves a store that
    /// opens, in the right epoch, and the old key goes at that open.
    #[tokio::test]
    async fn a_rotation_interrupted_anywhere_leaves_a_store_that_opens() {
        let dir = tempfile::tempdir().unwrap();
        let key = seal();
        let store = open(dir.path(), true);
        store.schedule(vec![(item("7", 42, "c"), Some(cred("c", "alice")))]).await.unwrap();
        let epoch = store.epoch().unwrap();
        drop(store);
        let file = EpochFile::open_or_create(&dir.path().join(EPOCH_FILE)).unwrap();
        // 1. Crash after the spare slot got the next key: the store still says `epoch`.
        let next = super::super::seal::next_epoch_key(&[0; 32], epoch + 1).unwrap();
        file.write(&key, 1, epoch + 1, &next).unwrap();
        std::fs::write(dir.path().join(NEXT_FILE_NAME), b"half a fresh file").unwrap();
        let store = open(dir.path(), true);
        assert_eq!(store.epoch(), Some(epoch));
        assert_eq!(store.lookup("7").await.unwrap().unwrap().account, "alice");
        assert!(!dir.path().join(NEXT_FILE_NAME).exists(), "the unfinished fresh file is removed");
        let slots = file.read(&key).unwrap();
        assert!(slots.iter().all(|(_, e, _)| *e == epoch), "the unused next key was overwritten at open");
        // 2. Crash after the rename: the store is in the next epoch, one slot still holds
        // the old key. Made by rotating, then writing the old key back into a slot.
        let old = slots[0].2;
        store.rotate().await.unwrap();
        drop(store);
        file.write(&key, 0, epoch, &old).unwrap();
        let store = open(dir.path(), true);
        assert_eq!(store.epoch(), Some(epoch + 1));
        assert_eq!(store.lookup("7").await.unwrap().unwrap().deadline, 42);
        assert!(file.read(&key).unwrap().iter().all(|(_, e, _)| *e == epoch + 1), "the old key goes at open");
        // 3. A copy of the store older than its epoch file cannot be read: by design.
        drop(store);
        let again = EpochFile::open_or_create(&dir.path().join(EPOCH_FILE)).unwrap();
        let fresh = super::super::seal::fresh_epoch_key().unwrap();
        again.write(&key, 0, epoch + 1, &fresh).unwrap();
        again.write(&key, 1, epoch + 1, &fresh).unwrap();
        let err = EmbeddedStore::open_sealed(dir.path(), 1 << 20, seal()).unwrap_err().to_string();
        assert!(err.contains("cannot be read"), "{err}");
    }

    /// A store sealed before epochs (under the key file's own secret) is converted at its
    /// first open into a fresh file under epoch 0: the old secret opens nothing in it.
    #[tokio::test]
    async fn a_store_sealed_before_epochs_is_converted_and_the_old_key_opens_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let key = seal();
        {
            let db = Database::create(dir.path().join(FILE_NAME)).unwrap();
            let legacy = Codec { seal: Some(Arc::new(key.legacy_seal())), stable: None, forgot: Arc::default() };
            let txn = db.begin_write().unwrap();
            create_tables(&txn).unwrap();
            write_meta(&txn, &legacy).unwrap();
            put_credential(&txn, &legacy, &cred("c", "alice"), 0).unwrap();
            let mut gone = item("5", 10, "c");
            gone.account = "erin".into();
            replace(&txn, &legacy, None, &item("4", 10, "c")).unwrap();
            replace(&txn, &legacy, None, &gone).unwrap();
            purge(&txn, &legacy, &gone).unwrap();
            txn.commit().unwrap();
            let before = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
            assert!(!forensic(&before, &key.legacy_seal()).is_empty(), "the old format opens with the key file");
        }
        let store = open(dir.path(), true);
        assert_eq!(store.epoch(), Some(0));
        assert_eq!(store.lookup("4").await.unwrap().unwrap().account, "alice");
        assert!(store.lookup("5").await.unwrap().is_none());
        assert_eq!(store.credential("c").await.unwrap().unwrap().account, "alice");
        let bytes = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
        assert!(forensic(&bytes, &key.legacy_seal()).is_empty(), "the key file's own secret opens nothing now");
        let live = forensic(&bytes, &seized_keys(dir.path(), &key)[0]);
        assert!(live.iter().all(|(_, v)| v.get("account").and_then(|a| a.as_str()) != Some("erin")));
    }
}
