//! Random access to a file being scrubbed in place: a buffer, or an upload spooled to a
//! temp file. The in-place walkers ([`super::isobmff`], [`super::matroska`]) read only
//! the headers they need and overwrite metadata where it lies, so a 90 MB video never
//! has to be held in memory and no byte offset in it moves.

use std::{fs::File, io};

/// Random access to the file being scrubbed: a buffer, or a spooled temp file.
#[allow(clippy::len_without_is_empty)]
pub trait Store {
    fn len(&self) -> u64;
    fn read_at(&mut self, off: u64, buf: &mut [u8]) -> io::Result<()>;
    fn write_at(&mut self, off: u64, buf: &[u8]) -> io::Result<()>;
}

pub struct MemStore<'a>(pub &'a mut Vec<u8>);

fn out_of_range() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "range outside the file")
}

impl Store for MemStore<'_> {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_at(&mut self, off: u64, buf: &mut [u8]) -> io::Result<()> {
        let start = usize::try_from(off).map_err(|_| out_of_range())?;
        let src = self.0.get(start..start + buf.len()).ok_or_else(out_of_range)?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn write_at(&mut self, off: u64, buf: &[u8]) -> io::Result<()> {
        let start = usize::try_from(off).map_err(|_| out_of_range())?;
        let dst = self.0.get_mut(start..start + buf.len()).ok_or_else(out_of_range)?;
        dst.copy_from_slice(buf);
        Ok(())
    }
}

pub struct FileStore {
    file: File,
    len: u64,
}

impl FileStore {
    pub fn new(file: File) -> io::Result<FileStore> {
        let len = file.metadata()?.len();
        Ok(FileStore { file, len })
    }
}

impl Store for FileStore {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_at(&mut self, off: u64, buf: &mut [u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt as _;
        self.file.read_exact_at(buf, off)
    }
    fn write_at(&mut self, off: u64, buf: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt as _;
        if off.checked_add(buf.len() as u64).is_none_or(|end| end > self.len) {
            return Err(out_of_range());
        }
        self.file.write_all_at(buf, off)
    }
}

const CHUNK: usize = 64 * 1024;

/// Overwrites `len` bytes at `off` with zeros.
pub fn zero(store: &mut impl Store, mut off: u64, mut len: u64) -> io::Result<()> {
    let zeros = [0u8; CHUNK];
    while len > 0 {
        let n = len.min(CHUNK as u64) as usize;
        store.write_at(off, &zeros[..n])?;
        off += n as u64;
        len -= n as u64;
    }
    Ok(())
}

/// Whether `len` bytes at `off` are all zero.
pub fn is_zero(store: &mut impl Store, mut off: u64, mut len: u64) -> io::Result<bool> {
    let mut buf = vec![0u8; CHUNK.min(len as usize)];
    while len > 0 {
        let n = len.min(CHUNK as u64) as usize;
        store.read_at(off, &mut buf[..n])?;
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        off += n as u64;
        len -= n as u64;
    }
    Ok(true)
}
