//! Bodies and parts held while they arrive: memory up to a threshold, then a temp file
//! in `<data_dir>/media-tmp`, with every temp file counted against caps shared by all
//! requests.
//!
//! A spilled part keeps no file descriptor open once it is written (it is a path that
//! deletes itself when dropped, [`SpillFile`]), so the number of open descriptors does not
//! grow with the number of parts. What does grow, the files and bytes in `media-tmp`, is
//! capped by [`TmpBudget`]: past `tmp_max_files` or `tmp_max_bytes` a request gets 413
//! and its files are deleted, and every other request keeps being served.

use std::{
    io,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use tempfile::TempPath;
use tokio::io::AsyncWriteExt as _;

/// The `media-tmp` caps, and what is in use now.
#[derive(Debug)]
pub struct TmpBudget {
    files: AtomicU64,
    bytes: AtomicU64,
    max_files: u64,
    max_bytes: u64,
}

/// A temp-space cap was reached.
#[derive(Debug, Clone, Copy, thiserror::Error)]
pub enum Exhausted {
    #[error("the relay is holding too many uploads on disk right now ({0} files); try again shortly")]
    Files(u64),
    #[error("the relay's temporary upload space ({0} bytes) is full right now; try again shortly")]
    Bytes(u64),
}

impl TmpBudget {
    pub fn new(max_files: u64, max_bytes: u64) -> Arc<TmpBudget> {
        Arc::new(TmpBudget { files: AtomicU64::new(0), bytes: AtomicU64::new(0), max_files, max_bytes })
    }

    /// Files and bytes in use now (for tests and metrics).
    pub fn in_use(&self) -> (u64, u64) {
        (self.files.load(Ordering::Relaxed), self.bytes.load(Ordering::Relaxed))
    }

    fn claim_file(self: &Arc<Self>) -> Result<Claim, Exhausted> {
        let before = self.files.fetch_add(1, Ordering::AcqRel);
        if before >= self.max_files {
            self.files.fetch_sub(1, Ordering::AcqRel);
            return Err(Exhausted::Files(self.max_files));
        }
        Ok(Claim { budget: self.clone(), bytes: 0 })
    }
}

/// One file's share of the budget, given back when it is dropped.
#[derive(Debug)]
struct Claim {
    budget: Arc<TmpBudget>,
    bytes: u64,
}

impl Claim {
    fn grow(&mut self, n: u64) -> Result<(), Exhausted> {
        let before = self.budget.bytes.fetch_add(n, Ordering::AcqRel);
        if before.saturating_add(n) > self.budget.max_bytes {
            self.budget.bytes.fetch_sub(n, Ordering::AcqRel);
            return Err(Exhausted::Bytes(self.budget.max_bytes));
        }
        self.bytes += n;
        Ok(())
    }

    /// After a scrub rewrote the file: its new length (a scrub never grows a file much).
    fn set(&mut self, len: u64) {
        if len >= self.bytes {
            self.budget.bytes.fetch_add(len - self.bytes, Ordering::AcqRel);
        } else {
            self.budget.bytes.fetch_sub(self.bytes - len, Ordering::AcqRel);
        }
        self.bytes = len;
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.budget.bytes.fetch_sub(self.bytes, Ordering::AcqRel);
        self.budget.files.fetch_sub(1, Ordering::AcqRel);
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

/// Why spooling stopped.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error(transparent)]
    Exhausted(#[from] Exhausted),
    #[error("temporary file: {0}")]
    Io(#[from] io::Error),
}

/// How many leading bytes a spilled body keeps in memory for sniffing (the longest
/// look: an MPEG-TS sync byte at 188, `%PDF-` and `<svg` within the first KiB).
pub const HEAD: usize = 1024;

/// One body or part while it arrives.
pub struct Spool {
    mem: Vec<u8>,
    /// Buffered: each unbuffered tokio file write is a trip to the blocking pool.
    file: Option<(SpillFile, tokio::io::BufWriter<tokio::fs::File>)>,
    len: u64,
    threshold: u64,
    dir: PathBuf,
    budget: Arc<TmpBudget>,
}

/// A body or part, fully received.
#[derive(Debug)]
pub enum Spooled {
    Mem(Vec<u8>),
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
            Spooled::Mem(v) => Ok(v.clone()),
            Spooled::File(f, _, _) => tokio::fs::read(f.path()).await,
        }
    }
}

impl Spool {
    /// `threshold`: bytes kept in memory before spilling to a file in `dir`.
    pub fn new(threshold: u64, dir: &Path, budget: &Arc<TmpBudget>) -> Spool {
        Spool { mem: Vec::new(), file: None, len: 0, threshold, dir: dir.to_owned(), budget: budget.clone() }
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

    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), SpoolError> {
        self.len += chunk.len() as u64;
        if self.file.is_none() && self.len > self.threshold {
            let mut claim = self.budget.claim_file()?;
            claim.grow(self.mem.len() as u64)?;
            let tmp = tempfile::Builder::new().prefix("upload-").tempfile_in(&self.dir)?;
            let (file, path) = tmp.into_parts();
            let mut f = tokio::io::BufWriter::with_capacity(1 << 20, tokio::fs::File::from_std(file));
            f.write_all(&self.mem).await?;
            self.file = Some((SpillFile { path, claim }, f));
        }
        match &mut self.file {
            Some((spill, f)) => {
                spill.claim.grow(chunk.len() as u64)?;
                // Once spilled, `mem` keeps only the first bytes, for sniffing.
                let mut buf = std::mem::take(&mut self.mem);
                buf.extend_from_slice(chunk.get(..HEAD.saturating_sub(buf.len())).unwrap_or(chunk));
                buf.truncate(HEAD);
                self.mem = buf;
                f.write_all(chunk).await?;
                Ok(())
            }
            None => {
                self.mem.extend_from_slice(chunk);
                Ok(())
            }
        }
    }

    /// Ends the spool; a spilled one closes its file (the path stays until dropped).
    pub async fn finish(self) -> io::Result<Spooled> {
        match self.file {
            None => Ok(Spooled::Mem(self.mem)),
            Some((spill, mut f)) => {
                f.flush().await?;
                drop(f);
                Ok(Spooled::File(spill, self.len, self.mem))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn spilled_files_are_counted_capped_and_returned_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let budget = TmpBudget::new(2, 100);
        let spill = |threshold| Spool::new(threshold, dir.path(), &budget);
        let mut a = spill(4);
        a.write(b"0123456789").await.unwrap();
        assert!(a.spilled());
        let a = a.finish().await.unwrap();
        assert_eq!(budget.in_use(), (1, 10));
        let mut b = spill(0);
        b.write(&[7; 90]).await.unwrap();
        // The bytes cap: 10 + 90 + 1 > 100.
        assert!(matches!(b.write(b"x").await, Err(SpoolError::Exhausted(Exhausted::Bytes(100)))));
        // The files cap.
        let mut c = spill(0);
        assert!(matches!(c.write(b"y").await, Err(SpoolError::Exhausted(Exhausted::Files(2)))));
        let Spooled::File(file, ..) = &a else { panic!("spilled") };
        let path = file.path().to_owned();
        assert!(path.exists());
        drop((a, b, c));
        assert!(!path.exists(), "the temp file goes with its value");
        assert_eq!(budget.in_use(), (0, 0));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
