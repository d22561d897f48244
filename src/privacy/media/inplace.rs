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

    /// Whether `len` bytes at `off` are all zero (a large `free` box is checked by the
    /// scrub and again by the audit, so this reads in large chunks; a buffer is checked
    /// where it lies, and a file remembers what it already knows to be zero).
    fn all_zero(&mut self, off: u64, len: u64) -> io::Result<bool> {
        read_zero(self, off, len)
    }

    /// `len` bytes at `off` where they lie, when the store holds them in memory: a
    /// search over a whole video then reads it without copying it first.
    fn view(&self, _off: u64, _len: u64) -> Option<&[u8]> {
        None
    }
}

fn read_zero(store: &mut (impl Store + ?Sized), mut off: u64, mut len: u64) -> io::Result<bool> {
    let mut buf = vec![0u8; CHUNK.min(usize::try_from(len).unwrap_or(CHUNK))];
    while len > 0 {
        let n = len.min(CHUNK as u64) as usize;
        store.read_at(off, &mut buf[..n])?;
        if !zeros(&buf[..n]) {
            return Ok(false);
        }
        off += n as u64;
        len -= n as u64;
    }
    Ok(true)
}

/// Whether every byte is zero: words OR-ed a block at a time, which compiles to vector
/// code, with an early exit per block.
fn zeros(b: &[u8]) -> bool {
    b.chunks(4096).all(|block| {
        let mut words = block.chunks_exact(8);
        let acc = words.by_ref().fold(0u64, |a, w| a | u64::from_ne_bytes(w.try_into().unwrap_or([1; 8])));
        acc == 0 && words.remainder().iter().all(|&x| x == 0)
    })
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
    fn all_zero(&mut self, off: u64, len: u64) -> io::Result<bool> {
        let start = usize::try_from(off).map_err(|_| out_of_range())?;
        let len = usize::try_from(len).map_err(|_| out_of_range())?;
        let end = start.checked_add(len).ok_or_else(out_of_range)?;
        Ok(zeros(self.0.get(start..end).ok_or_else(out_of_range)?))
    }
    fn view(&self, off: u64, len: u64) -> Option<&[u8]> {
        let start = usize::try_from(off).ok()?;
        self.0.get(start..start.checked_add(usize::try_from(len).ok()?)?)
    }
}

pub struct FileStore {
    file: File,
    len: u64,
    /// Ranges (start, end) this store wrote as zeros or read as zeros and has not
    /// written since: the audit after a scrub need not read a 90 MB `free` box again.
    known_zero: Vec<(u64, u64)>,
}

impl FileStore {
    pub fn new(file: File) -> io::Result<FileStore> {
        let len = file.metadata()?.len();
        Ok(FileStore { file, len, known_zero: Vec::new() })
    }

    fn remember_zero(&mut self, start: u64, end: u64) {
        match self.known_zero.last_mut() {
            Some(last) if last.1 == start => last.1 = end,
            _ => self.known_zero.push((start, end)),
        }
    }

    fn known(&self, start: u64, end: u64) -> bool {
        self.known_zero.iter().any(|&(a, b)| a <= start && end <= b)
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
        let end = off.checked_add(buf.len() as u64).filter(|&end| end <= self.len).ok_or_else(out_of_range)?;
        self.file.write_all_at(buf, off)?;
        if zeros(buf) {
            self.remember_zero(off, end);
        } else {
            self.known_zero.retain(|&(a, b)| b <= off || a >= end);
        }
        Ok(())
    }
    fn all_zero(&mut self, off: u64, len: u64) -> io::Result<bool> {
        let end = off.checked_add(len).ok_or_else(out_of_range)?;
        if self.known(off, end) {
            return Ok(true);
        }
        let zero = read_zero(self, off, len)?;
        if zero {
            self.remember_zero(off, end);
        }
        Ok(zero)
    }
}

const CHUNK: usize = 1 << 20;

/// Overwrites `len` bytes at `off` with zeros.
pub fn zero(store: &mut impl Store, mut off: u64, mut len: u64) -> io::Result<()> {
    let zeros = vec![0u8; CHUNK.min(usize::try_from(len).unwrap_or(CHUNK))];
    while len > 0 {
        let n = len.min(CHUNK as u64) as usize;
        store.write_at(off, &zeros[..n])?;
        off += n as u64;
        len -= n as u64;
    }
    Ok(())
}

/// Whether `len` bytes at `off` are all zero.
pub fn is_zero(store: &mut impl Store, off: u64, len: u64) -> io::Result<bool> {
    store.all_zero(off, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_checks_find_any_non_zero_byte() {
        let mut buf = vec![0u8; 3 * CHUNK + 13];
        assert!(is_zero(&mut MemStore(&mut buf), 0, (3 * CHUNK + 13) as u64).unwrap());
        for at in [0, 7, 8, 4095, 4096, CHUNK - 1, CHUNK, 3 * CHUNK + 12] {
            let mut b = buf.clone();
            b[at] = 1;
            let len = b.len() as u64;
            assert!(!is_zero(&mut MemStore(&mut b), 0, len).unwrap(), "{at}");
            let file = tempfile::tempfile().unwrap();
            std::io::Write::write_all(&mut &file, &b).unwrap();
            let mut store = FileStore::new(file).unwrap();
            assert!(!is_zero(&mut store, 0, len).unwrap(), "file, {at}");
            assert!(store.all_zero(at as u64 + 1, len - at as u64 - 1).unwrap(), "after {at}");
        }
        assert!(is_zero(&mut MemStore(&mut buf), 5, 0).unwrap());
        assert!(is_zero(&mut MemStore(&mut buf), 5, u64::MAX).is_err());
    }

    #[test]
    fn a_file_forgets_what_it_knew_to_be_zero_once_written() {
        let file = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut &file, &[0u8; 4096]).unwrap();
        let mut store = FileStore::new(file).unwrap();
        assert!(store.all_zero(0, 4096).unwrap());
        store.write_at(100, b"free").unwrap();
        assert!(!store.all_zero(0, 4096).unwrap(), "a write inside a known range is seen");
        assert!(store.all_zero(200, 1000).unwrap());
        zero(&mut store, 100, 4).unwrap();
        assert!(store.all_zero(0, 4096).unwrap());
    }
}
