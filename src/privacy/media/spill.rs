//! Bodies and parts held while they arrive, and the budgets every request shares.
//!
//! A body is judged whole before any of it is forwarded, so it waits somewhere: in
//! memory, or in a temp file in `<data_dir>/media-tmp`. Both are finite and shared, and
//! issue 10's red team took each from one client (C1: all 256 temp-file slots with
//! 400-byte parts; C2: memory, with slow requests holding a MiB each outside any cap).
//! So every byte waiting is charged to [`Budgets`], globally and to the client's share:
//!
//! - **memory** ([`RequestMem`]): a request holds at most `spill_threshold` in memory
//!   (plus one small part of `min_spill`), charged against `spool_memory` for all
//!   requests and `spool_client_memory` for one client; the charge lasts until the
//!   rewritten body has been forwarded. When the relay's (or the client's) memory is
//!   short, a part large enough for a file spills early; a small one gets 503 with
//!   `Retry-After`.
//! - **disk** ([`SpillFile`]): a part goes to its own temp file only once it is at least
//!   `min_spill` long and the request's memory is used up, so tiny parts cannot each
//!   cost a file; and only where the route takes uploads, or the body is one file
//!   (a raw upload, a JSON or form body). Files and bytes are capped for all requests
//!   (`tmp_max_files`, `tmp_max_bytes`, and never past the data dir's free space) and
//!   for one client (`tmp_client_files`, `tmp_client_bytes`): past a cap, 413, and
//!   every other client keeps being served.
//!
//! A client is its pseudonym (in `drop` mode every client has the same one, so only the
//! global caps apply). A spilled part keeps no file descriptor open once it is written
//! (it is a path that deletes itself when dropped), so descriptors do not grow with parts.

use std::{
    collections::HashMap,
    io,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicU64, Ordering},
    },
};

use tempfile::TempPath;
use tokio::io::AsyncWriteExt as _;

/// How many leading bytes a spilled body keeps in memory for sniffing (the longest
/// look: an MPEG-TS sync byte at 188, `%PDF-` and `<svg` within the first KiB).
pub const HEAD: usize = 1024;

/// What [`Budgets`] allow.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_files: u64,
    pub max_disk: u64,
    pub client_files: u64,
    pub client_disk: u64,
    pub max_mem: u64,
    pub client_mem: u64,
    /// No new temp file while the data dir's file system has less than this free.
    pub disk_floor: u64,
}

/// Files, disk bytes and memory in use for waiting bodies: for all requests, and per
/// client.
#[derive(Debug)]
pub struct Budgets {
    total: Share,
    limits: Limits,
    clients: Mutex<Clients>,
    dir: PathBuf,
}

/// One holder's use (all requests, or one client's).
#[derive(Debug, Default)]
struct Share {
    files: AtomicU64,
    disk: AtomicU64,
    mem: AtomicU64,
}

#[derive(Debug, Default)]
struct Clients {
    map: HashMap<IpAddr, Weak<Share>>,
    /// The map is swept of clients with nothing held when it grows past this.
    sweep_at: usize,
}

/// A cap was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Exhausted {
    #[error("the relay is holding too many uploads on disk right now ({0} files); try again shortly")]
    Files(u64),
    #[error("the relay's temporary upload space ({0} bytes) is full right now; try again shortly")]
    Bytes(u64),
    #[error("you have too many uploads waiting on the relay ({0} files); let them finish first")]
    ClientFiles(u64),
    #[error(
        "your uploads waiting on the relay fill your share of its temporary space ({0} bytes); let them finish first"
    )]
    ClientBytes(u64),
    #[error("the relay's disk is nearly full; uploads cannot be taken right now")]
    DiskFull,
    /// Memory for waiting bodies is short (the relay's or this client's share): 503.
    #[error("the relay is busy reading other requests; try again shortly")]
    Memory,
    #[error(
        "more than {limit} bytes of this request would wait in memory; send large files to an upload route, and fewer small parts"
    )]
    RequestMemory { limit: u64 },
}

impl Exhausted {
    /// Whether the request may simply be tried again soon (503 + `Retry-After`), rather
    /// than being too large (413).
    pub fn is_transient(self) -> bool {
        matches!(self, Exhausted::Memory)
    }
}

impl Budgets {
    pub fn new(limits: Limits, dir: &Path) -> Arc<Budgets> {
        Arc::new(Budgets {
            total: Share::default(),
            limits,
            clients: Mutex::new(Clients { map: HashMap::new(), sweep_at: 64 }),
            dir: dir.to_owned(),
        })
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Files and disk bytes in use now (for tests and metrics).
    pub fn in_use(&self) -> (u64, u64) {
        (self.total.files.load(Ordering::Relaxed), self.total.disk.load(Ordering::Relaxed))
    }

    /// Memory held by waiting bodies now.
    pub fn mem_in_use(&self) -> u64 {
        self.total.mem.load(Ordering::Relaxed)
    }

    /// A client's handle on the budgets (`None`: only the global caps).
    pub fn account(self: &Arc<Self>, client: Option<IpAddr>) -> Account {
        let share = client.map(|ip| {
            let mut c = self.clients.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(s) = c.map.get(&ip).and_then(Weak::upgrade) {
                return s;
            }
            let s = Arc::new(Share::default());
            c.map.insert(ip, Arc::downgrade(&s));
            if c.map.len() > c.sweep_at {
                c.map.retain(|_, w| w.strong_count() > 0);
                c.sweep_at = (c.map.len() * 2).max(64);
            }
            s
        });
        Account { budgets: self.clone(), share }
    }
}

/// Adds `n` to `counter` unless that passes `max`.
fn take(counter: &AtomicU64, n: u64, max: u64) -> bool {
    counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| v.checked_add(n).filter(|&t| t <= max)).is_ok()
}

fn give(counter: &AtomicU64, n: u64) {
    counter.fetch_sub(n, Ordering::AcqRel);
}

/// One client's handle on the shared budgets.
#[derive(Debug, Clone)]
pub struct Account {
    budgets: Arc<Budgets>,
    share: Option<Arc<Share>>,
}

impl Account {
    fn limits(&self) -> &Limits {
        &self.budgets.limits
    }

    /// Memory for `n` more bytes, from the relay's budget and the client's share.
    fn take_mem(&self, n: u64) -> Result<(), Exhausted> {
        if !take(&self.budgets.total.mem, n, self.limits().max_mem) {
            return Err(Exhausted::Memory);
        }
        if let Some(s) = &self.share
            && !take(&s.mem, n, self.limits().client_mem)
        {
            give(&self.budgets.total.mem, n);
            return Err(Exhausted::Memory);
        }
        Ok(())
    }

    /// Memory whatever the caps (a rewrite a little larger than what it replaces).
    fn force_mem(&self, n: u64) {
        self.budgets.total.mem.fetch_add(n, Ordering::AcqRel);
        if let Some(s) = &self.share {
            s.mem.fetch_add(n, Ordering::AcqRel);
        }
    }

    fn give_mem(&self, n: u64) {
        give(&self.budgets.total.mem, n);
        if let Some(s) = &self.share {
            give(&s.mem, n);
        }
    }

    fn claim_file(&self) -> Result<Claim, Exhausted> {
        let l = *self.limits();
        if !take(&self.budgets.total.files, 1, l.max_files) {
            return Err(Exhausted::Files(l.max_files));
        }
        if let Some(s) = &self.share
            && !take(&s.files, 1, l.client_files)
        {
            give(&self.budgets.total.files, 1);
            return Err(Exhausted::ClientFiles(l.client_files));
        }
        let claim = Claim { account: self.clone(), bytes: 0 };
        if free_space(&self.budgets.dir).is_some_and(|free| free < l.disk_floor) {
            return Err(Exhausted::DiskFull);
        }
        Ok(claim)
    }
}

/// Free bytes for an unprivileged writer on the file system holding `dir`.
pub fn free_space(dir: &Path) -> Option<u64> {
    let s = rustix::fs::statvfs(dir).ok()?;
    Some(s.f_bavail.saturating_mul(s.f_frsize))
}

/// One file's share of the disk budgets, given back when it is dropped.
#[derive(Debug)]
struct Claim {
    account: Account,
    bytes: u64,
}

impl Claim {
    fn grow(&mut self, n: u64) -> Result<(), Exhausted> {
        let b = &self.account.budgets;
        if !take(&b.total.disk, n, b.limits.max_disk) {
            return Err(Exhausted::Bytes(b.limits.max_disk));
        }
        if let Some(s) = &self.account.share
            && !take(&s.disk, n, b.limits.client_disk)
        {
            give(&b.total.disk, n);
            return Err(Exhausted::ClientBytes(b.limits.client_disk));
        }
        self.bytes += n;
        Ok(())
    }

    /// After a scrub rewrote the file: its new length (a scrub never grows a file much).
    fn set(&mut self, len: u64) {
        let b = &self.account.budgets;
        let adjust = |c: &AtomicU64| {
            if len >= self.bytes {
                c.fetch_add(len - self.bytes, Ordering::AcqRel);
            } else {
                c.fetch_sub(self.bytes - len, Ordering::AcqRel);
            }
        };
        adjust(&b.total.disk);
        if let Some(s) = &self.account.share {
            adjust(&s.disk);
        }
        self.bytes = len;
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let b = &self.account.budgets;
        give(&b.total.disk, self.bytes);
        give(&b.total.files, 1);
        if let Some(s) = &self.account.share {
            give(&s.disk, self.bytes);
            give(&s.files, 1);
        }
    }
}

/// A temp file with no descriptor held open; deleted (and its budget returned) on drop.
#[derive(Debug)]
pub struct SpillFile {
    // Field order: the file is deleted before its claim is returned.
    path: TempPath,
    claim: Claim,
}

impl SpillFile {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records the file's length after it was rewritten in place or replaced.
    pub fn resized(&mut self, len: u64) {
        self.claim.set(len);
    }
}

/// Memory one request holds for its waiting body, charged to the budgets until dropped
/// (it travels with the rewritten body to the upstream).
#[derive(Debug)]
pub struct MemCharge {
    account: Account,
    bytes: u64,
}

impl MemCharge {
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for MemCharge {
    fn drop(&mut self) {
        self.account.give_mem(self.bytes);
    }
}

/// One request's spooling rules and what it holds in memory.
#[derive(Debug)]
pub struct RequestMem {
    charge: MemCharge,
    /// Bytes the request may hold in memory before parts go to files (`spill_threshold`).
    soft: u64,
    /// A part this short never gets a file of its own (`min_spill`).
    min_spill: u64,
    /// Whether parts may go to temp files at all.
    may_spill: bool,
    dir: PathBuf,
}

impl RequestMem {
    pub fn new(account: Account, soft: u64, min_spill: u64, may_spill: bool, dir: &Path) -> RequestMem {
        RequestMem { charge: MemCharge { account, bytes: 0 }, soft, min_spill, may_spill, dir: dir.to_owned() }
    }

    /// Bytes held in memory now.
    pub fn held(&self) -> u64 {
        self.charge.bytes
    }

    /// The most the request may hold: its threshold, plus one part too small for a file.
    fn hard(&self) -> u64 {
        self.soft.saturating_add(self.min_spill)
    }

    /// Charges `n` bytes the request keeps in memory (part heads, rewritten values).
    pub fn hold(&mut self, n: u64) -> Result<(), Exhausted> {
        if self.charge.bytes.saturating_add(n) > self.hard() {
            return Err(Exhausted::RequestMemory { limit: self.soft });
        }
        self.charge.account.take_mem(n)?;
        self.charge.bytes += n;
        Ok(())
    }

    /// A rewrite replaced `from` bytes held with `to`: the charge follows, whatever the caps.
    pub fn replace(&mut self, from: u64, to: u64) {
        let from = from.min(self.charge.bytes);
        self.charge.account.give_mem(from);
        self.charge.account.force_mem(to);
        self.charge.bytes = self.charge.bytes - from + to;
    }

    fn release(&mut self, n: u64) {
        let n = n.min(self.charge.bytes);
        self.charge.account.give_mem(n);
        self.charge.bytes -= n;
    }

    /// The charge, to travel with the forwarded body.
    pub fn into_charge(self) -> MemCharge {
        self.charge
    }
}

/// Why spooling stopped.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error(transparent)]
    Exhausted(#[from] Exhausted),
    #[error("temporary file: {0}")]
    Io(#[from] io::Error),
}

/// A part's bytes in memory: a `Vec` while small, an anonymous mapping once large.
///
/// Why not always a `Vec`: glibc keeps memory it freed from its heaps (a `Vec` grown
/// past 128 KiB raises its mmap threshold, and the next ones come from the heap), so
/// after a load of large bodies pavise's RSS stayed ~40 MiB up (red team C2). A
/// mapping is given back to the OS the moment the part is done, and its pages cost
/// memory only as they are written.
#[derive(Debug)]
pub enum MemBuf {
    Small(Vec<u8>),
    Mapped { map: memmap2::MmapMut, len: usize },
}

/// Parts grow into a mapping past this.
const MAP_FROM: usize = 64 << 10;

impl Default for MemBuf {
    fn default() -> Self {
        MemBuf::Small(Vec::new())
    }
}

impl std::ops::Deref for MemBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            MemBuf::Small(v) => v,
            MemBuf::Mapped { map, len } => &map[..*len],
        }
    }
}

impl MemBuf {
    /// Appends `chunk`; `room` is the most this buffer may ever hold (its mapping's size).
    fn extend(&mut self, chunk: &[u8], room: usize) -> io::Result<()> {
        match self {
            MemBuf::Small(v) if v.len() + chunk.len() <= MAP_FROM || room <= MAP_FROM => {
                v.extend_from_slice(chunk);
            }
            MemBuf::Small(v) => {
                let size = room.max(v.len() + chunk.len()).next_multiple_of(4096);
                let mut map = memmap2::MmapOptions::new().len(size).map_anon()?;
                map[..v.len()].copy_from_slice(v);
                map[v.len()..v.len() + chunk.len()].copy_from_slice(chunk);
                *self = MemBuf::Mapped { map, len: v.len() + chunk.len() };
            }
            MemBuf::Mapped { map, len } => {
                if *len + chunk.len() > map.len() {
                    let mut bigger =
                        memmap2::MmapOptions::new().len((*len + chunk.len()).next_multiple_of(1 << 20)).map_anon()?;
                    bigger[..*len].copy_from_slice(&map[..*len]);
                    *map = bigger;
                }
                map[*len..*len + chunk.len()].copy_from_slice(chunk);
                *len += chunk.len();
            }
        }
        Ok(())
    }

    /// The bytes as a `Bytes`, still in the mapping (unmapped when the last clone goes).
    pub fn into_bytes(self) -> bytes::Bytes {
        struct Owner(memmap2::MmapMut, usize);
        impl AsRef<[u8]> for Owner {
            fn as_ref(&self) -> &[u8] {
                &self.0[..self.1]
            }
        }
        match self {
            MemBuf::Small(v) => bytes::Bytes::from(v),
            MemBuf::Mapped { map, len } => bytes::Bytes::from_owner(Owner(map, len)),
        }
    }
}

/// One body or part while it arrives.
pub struct Spool {
    mem: MemBuf,
    /// Buffered: each unbuffered tokio file write is a trip to the blocking pool.
    file: Option<(SpillFile, tokio::io::BufWriter<tokio::fs::File>)>,
    len: u64,
}

/// A body or part, fully received.
#[derive(Debug)]
pub enum Spooled {
    Mem(MemBuf),
    /// The temp file, its length, and its first bytes (for sniffing).
    File(SpillFile, u64, Vec<u8>),
}

impl Spooled {
    pub fn len(&self) -> u64 {
        match self {
            Spooled::Mem(v) => v.len() as u64,
            Spooled::File(_, n, _) => *n,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn head(&self) -> &[u8] {
        match self {
            Spooled::Mem(v) => v.get(..HEAD).unwrap_or(v),
            Spooled::File(_, _, head) => head,
        }
    }

    /// The whole contents in memory (read from the temp file when spilled).
    pub async fn bytes(&self) -> io::Result<Vec<u8>> {
        match self {
            Spooled::Mem(v) => Ok(v.to_vec()),
            Spooled::File(f, _, _) => tokio::fs::read(f.path()).await,
        }
    }
}

impl Default for Spool {
    fn default() -> Self {
        Spool::new()
    }
}

impl Spool {
    pub fn new() -> Spool {
        Spool { mem: MemBuf::default(), file: None, len: 0 }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether this spool has gone to disk.
    pub fn spilled(&self) -> bool {
        self.file.is_some()
    }

    /// Takes `chunk` in: into memory while the request's share and the budgets allow,
    /// into a file once the part is long enough for one (see the module docs).
    pub async fn write(&mut self, chunk: &[u8], req: &mut RequestMem) -> Result<(), SpoolError> {
        let n = chunk.len() as u64;
        self.len += n;
        if let Some((spill, f)) = &mut self.file {
            spill.claim.grow(n)?;
            if self.mem.len() < HEAD {
                let room = HEAD - self.mem.len();
                self.mem.extend(&chunk[..chunk.len().min(room)], HEAD)?;
            }
            f.write_all(chunk).await?;
            return Ok(());
        }
        // The most this part can reach in memory.
        let room = usize::try_from(req.hard().saturating_sub(req.held()) + self.mem.len() as u64).unwrap_or(usize::MAX);
        let mut short = None;
        if req.held().saturating_add(n) <= req.soft {
            match req.hold(n) {
                Ok(()) => {
                    self.mem.extend(chunk, room)?;
                    return Ok(());
                }
                Err(e) => short = Some(e),
            }
        }
        // Past the request's share of memory, or the relay's: a part long enough goes to a
        // file of its own; a short one stays in memory if it still may, or is refused.
        if req.may_spill && self.len >= req.min_spill {
            return self.spill(chunk, req).await;
        }
        match req.hold(n) {
            Ok(()) => {
                self.mem.extend(chunk, room)?;
                Ok(())
            }
            Err(e) => Err(short.filter(|s| s.is_transient()).unwrap_or(e).into()),
        }
    }

    async fn spill(&mut self, chunk: &[u8], req: &mut RequestMem) -> Result<(), SpoolError> {
        let mut claim = req.charge.account.claim_file()?;
        claim.grow(self.mem.len() as u64 + chunk.len() as u64)?;
        let tmp = tempfile::Builder::new().prefix("upload-").tempfile_in(&req.dir)?;
        let (file, path) = tmp.into_parts();
        // The buffer is bounded by the files that can be open at once (`tmp_max_files`).
        let mut f = tokio::io::BufWriter::with_capacity(128 << 10, tokio::fs::File::from_std(file));
        f.write_all(&self.mem).await?;
        f.write_all(chunk).await?;
        req.release(self.mem.len() as u64);
        // Once spilled, `mem` keeps only the first bytes, for sniffing.
        let mut head = self.mem.get(..HEAD).unwrap_or(&self.mem).to_vec();
        head.extend_from_slice(&chunk[..chunk.len().min(HEAD.saturating_sub(head.len()))]);
        self.mem = MemBuf::Small(head);
        self.file = Some((SpillFile { path, claim }, f));
        Ok(())
    }

    /// Ends the spool; a spilled one closes its file (the path stays until dropped).
    pub async fn finish(self) -> io::Result<Spooled> {
        match self.file {
            None => Ok(Spooled::Mem(self.mem)),
            Some((spill, mut f)) => {
                f.flush().await?;
                drop(f);
                Ok(Spooled::File(spill, self.len, self.mem.to_vec()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_files: 3,
            max_disk: 1000,
            client_files: 2,
            client_disk: 600,
            max_mem: 300,
            client_mem: 200,
            disk_floor: 0,
        }
    }

    #[tokio::test]
    async fn small_parts_stay_in_memory_and_large_ones_spill_within_every_cap() {
        let dir = tempfile::tempdir().unwrap();
        let budgets = Budgets::new(limits(), dir.path());
        let a = budgets.account(Some("2001:db8::a".parse().unwrap()));
        // 100 bytes of memory per request, files from 50 bytes.
        let mut req = RequestMem::new(a.clone(), 100, 50, true, dir.path());
        let mut small = Spool::new();
        small.write(&[1; 80], &mut req).await.unwrap();
        assert!(!small.spilled());
        // Past the request's 100 bytes, a 40-byte part is too small for a file: it stays in
        // memory up to 100 + 50, then the request is refused.
        let mut tiny = Spool::new();
        tiny.write(&[2; 40], &mut req).await.unwrap();
        assert!(!tiny.spilled());
        assert_eq!(req.held(), 120);
        let mut more = Spool::new();
        assert!(matches!(
            more.write(&[3; 40], &mut req).await,
            Err(SpoolError::Exhausted(Exhausted::RequestMemory { limit: 100 }))
        ));
        // A part that reaches 50 bytes goes to a file, and its memory is returned.
        let mut big = Spool::new();
        big.write(&[4; 30], &mut req).await.unwrap();
        big.write(&[4; 30], &mut req).await.unwrap();
        assert!(big.spilled());
        assert_eq!(req.held(), 120);
        let big = big.finish().await.unwrap();
        assert_eq!(budgets.in_use(), (1, 60));
        assert_eq!(budgets.mem_in_use(), 120);
        drop((small, tiny, more, req));
        assert_eq!(budgets.mem_in_use(), 0, "memory is returned with the request");

        // The client's share of files (2): a second file, then 413 for the third.
        let mut req = RequestMem::new(a.clone(), 0, 1, true, dir.path());
        let mut second = Spool::new();
        second.write(b"x", &mut req).await.unwrap();
        let mut third = Spool::new();
        assert!(matches!(third.write(b"y", &mut req).await, Err(SpoolError::Exhausted(Exhausted::ClientFiles(2)))));
        // Another client still gets one (the global cap is 3), then the global cap holds.
        let b = budgets.account(Some("2001:db8::b".parse().unwrap()));
        let mut req_b = RequestMem::new(b.clone(), 0, 1, true, dir.path());
        let mut other = Spool::new();
        other.write(b"z", &mut req_b).await.unwrap();
        let mut again = Spool::new();
        assert!(matches!(again.write(b"w", &mut req_b).await, Err(SpoolError::Exhausted(Exhausted::Files(3)))));
        let path = match &big {
            Spooled::File(f, ..) => f.path().to_owned(),
            Spooled::Mem(_) => panic!("spilled"),
        };
        assert!(path.exists());
        drop((big, second, third, other, again, req, req_b));
        assert!(!path.exists(), "the temp file goes with its value");
        assert_eq!(budgets.in_use(), (0, 0));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn memory_is_shared_fairly_and_short_memory_spills_early_or_is_transient() {
        let dir = tempfile::tempdir().unwrap();
        let budgets = Budgets::new(limits(), dir.path());
        let a = budgets.account(Some("2001:db8::a".parse().unwrap()));
        // A client's share of memory is 200 of the relay's 300.
        let mut r1 = RequestMem::new(a.clone(), 150, 50, false, dir.path());
        let mut r2 = RequestMem::new(a.clone(), 150, 50, false, dir.path());
        Spool::new().write(&[0; 150], &mut r1).await.unwrap();
        let e = Spool::new().write(&[0; 60], &mut r2).await.unwrap_err();
        assert!(matches!(e, SpoolError::Exhausted(Exhausted::Memory)), "{e:?}");
        // Another client gets the rest of the relay's memory; past it, memory is short.
        let b = budgets.account(Some("2001:db8::b".parse().unwrap()));
        let mut r3 = RequestMem::new(b.clone(), 150, 50, true, dir.path());
        Spool::new().write(&[0; 140], &mut r3).await.unwrap();
        // Short memory: a part long enough for a file spills early...
        let mut r4 = RequestMem::new(b.clone(), 150, 50, true, dir.path());
        let mut early = Spool::new();
        early.write(&[0; 60], &mut r4).await.unwrap();
        assert!(early.spilled());
        // ... and a short one is told to come back (503), not that it is too large.
        let e = Spool::new().write(&[0; 20], &mut r4).await.unwrap_err();
        assert!(matches!(e, SpoolError::Exhausted(x) if x.is_transient()));
        drop((r1, r2, r3, r4, early));
        assert_eq!(budgets.mem_in_use(), 0);
        // No client key (drop mode): only the relay's caps.
        let anyone = budgets.account(None);
        let mut r = RequestMem::new(anyone, 300, 50, false, dir.path());
        Spool::new().write(&[0; 300], &mut r).await.unwrap();
    }

    #[test]
    fn large_parts_live_in_a_mapping_and_keep_their_bytes() {
        let mut m = MemBuf::default();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        for c in data.chunks(10_000) {
            m.extend(c, 200_000).unwrap();
        }
        assert!(matches!(m, MemBuf::Mapped { .. }), "past 64 KiB the part is mapped");
        assert_eq!(&m[..], &data[..], "and grows past its planned room intact");
        assert_eq!(m.into_bytes(), data);
        let mut small = MemBuf::default();
        small.extend(b"caption", 1 << 20).unwrap();
        assert!(matches!(small, MemBuf::Small(_)));
    }
}
