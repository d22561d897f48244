//! The zlib streams of `iCCP`: inflated with one inflater per thread, written back as
//! stored (uncompressed) blocks when the profile is small.
//!
//! Profiled on a 145 KB PNG with a 3.6 KB profile, a new deflater's set-up (some 300 KiB
//! of tables zeroed) and its Huffman tables were most of the time its scrub took, ten
//! times what it took before profiles were rewritten. A stored block costs a copy and a
//! checksum; what it costs in size is the profile's compression, a couple of kilobytes
//! for a photo's profile. A larger profile is deflated (at the fastest level), so a
//! small stream that inflates to megabytes of zeros is not forwarded a thousand times
//! its size (red team pass 19, F3).
//!
//! A stream is read whole or not at all: bytes after its end inside the chunk are no
//! part of any profile a reader sees, and would be forwarded unread.

use std::cell::RefCell;

use flate2::{Decompress, FlushDecompress, Status};

thread_local! {
    static INFLATER: RefCell<Decompress> = RefCell::new(Decompress::new(true));
}

/// What `stream` inflates to, if it is one zlib stream, all of it, of at most `max`
/// bytes.
pub(super) fn inflate(stream: &[u8], max: u64) -> Option<Vec<u8>> {
    INFLATER.with_borrow_mut(|inflater| {
        inflater.reset(true);
        let mut out = Vec::with_capacity(stream.len().saturating_mul(3).min(max as usize) + 64);
        loop {
            let (read, written) = (inflater.total_in(), inflater.total_out());
            // `Finish` would ask for all the output in one call (miniz refuses a second).
            let status = inflater.decompress_vec(&stream[read as usize..], &mut out, FlushDecompress::None).ok()?;
            if out.len() as u64 > max {
                return None;
            }
            match status {
                Status::StreamEnd if inflater.total_in() as usize == stream.len() => return Some(out),
                Status::StreamEnd => return None,
                _ if out.len() == out.capacity() => out.reserve(out.len().max(4096)),
                // Room to write and nothing more done: the stream is cut short.
                _ if (inflater.total_in(), inflater.total_out()) == (read, written) => return None,
                _ => {}
            }
        }
    })
}

/// Profiles up to this size are written as stored blocks.
const STORED_MAX: usize = 64 << 10;

/// `data` as a zlib stream: stored blocks up to [`STORED_MAX`], deflated past it.
pub(super) fn compress(data: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write as _;
    if data.len() <= STORED_MAX {
        return Some(stored(data));
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(data).ok()?;
    z.finish().ok()
}

/// `data` as a zlib stream of stored blocks (RFC 1950, RFC 1951 section 3.2.4).
fn stored(data: &[u8]) -> Vec<u8> {
    const BLOCK: usize = u16::MAX as usize;
    let mut out = Vec::with_capacity(data.len() + 5 * (data.len() / BLOCK + 1) + 6);
    // CM 8 (deflate), a 32 KiB window, no dictionary, "fastest" level; a multiple of 31.
    out.extend_from_slice(&[0x78, 0x01]);
    let mut blocks = data.chunks(BLOCK).peekable();
    if blocks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xFF, 0xFF]);
    }
    while let Some(block) = blocks.next() {
        let len = block.len() as u16;
        out.push(u8::from(blocks.peek().is_none()));
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    out.extend_from_slice(&adler32(data).to_be_bytes());
    out
}

fn adler32(data: &[u8]) -> u32 {
    const MOD: u32 = 65_521;
    // The most bytes summed before `b` could pass 2^32 (zlib's NMAX).
    const RUN: usize = 5_552;
    let (mut a, mut b) = (1u32, 0u32);
    for run in data.chunks(RUN) {
        for &byte in run {
            a += u32::from(byte);
            b += a;
        }
        a %= MOD;
        b %= MOD;
    }
    (b << 16) | a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_inflates_back_and_a_cut_or_oversized_one_does_not() {
        let data: Vec<u8> = (0..150_000u32).map(|i| (i % 251) as u8).collect();
        let compressed = {
            use std::io::Write as _;
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            z.write_all(&data).unwrap();
            z.finish().unwrap()
        };
        for z in [compressed, stored(&data)] {
            assert_eq!(inflate(&z, 150_000).as_deref(), Some(&data[..]));
            assert_eq!(inflate(&z, 150_000).as_deref(), Some(&data[..]), "again, on the reused inflater");
            assert_eq!(inflate(&z[..z.len() - 5], 150_000), None, "a stream cut short");
            assert_eq!(inflate(&z, 149_999), None, "more than the cap");
        }
        assert_eq!(inflate(&stored(&[]), 10).as_deref(), Some(&[][..]), "an empty profile");
        assert_eq!(
            stored(b"Wikipedia")[2..],
            [&[1, 9, 0, 0xF6, 0xFF][..], b"Wikipedia", &0x11E6_0398u32.to_be_bytes()].concat()
        );
        let mut trailing = stored(b"profile");
        trailing.extend_from_slice(b"after");
        assert_eq!(inflate(&trailing, 100), None, "bytes after the stream");
        let big = vec![0u8; 1 << 20];
        let z = compress(&big).unwrap();
        assert!(z.len() < 8 << 10, "a large profile is deflated: {}", z.len());
        assert_eq!(inflate(&z, 1 << 20).as_deref(), Some(&big[..]));
        assert_eq!(inflate(b"not zlib", 100), None);
    }
}
