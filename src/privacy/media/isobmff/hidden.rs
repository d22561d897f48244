//! Defence in depth: the walker keeps only boxes it has read, but a reader does not stop
//! where pavise's lists do. ffmpeg reads a `udta`, `meta`, `ilst`, `uuid` or a `cmov`
//! (a compressed movie header, metadata included) wherever its one table meets them; a
//! `©xyz` is a location inside any of those. So once a header box (`moov`, `moof`, a
//! HEIF `meta`) is planned, its bytes as they will be forwarded (the plan applied to a
//! copy) are searched for the header of such a box at every byte offset, and a hit
//! refuses the file: something the lists did not foresee is still there.
//!
//! A hit needs a plausible size (0, 1 or one that fits in the rest of the box) before the
//! type, so the sizes and offsets of a sample table do not look like boxes by chance.

use super::{Action, BoxAt, Format, MediaError, fourcc};
use crate::privacy::media::be32;

/// Box types that carry metadata in every reader's table (ffmpeg `mov.c`, exiftool).
const METADATA_BOXES: &[&[u8; 4]] =
    &[b"udta", b"meta", b"ilst", b"keys", b"uuid", b"cmov", b"moov", b"XMP_", b"loci", b"chpl", b"----"];

/// Refuses when the header box `b` (whose bytes are `buf`) would still hold a metadata
/// box once `actions` are applied.
pub(super) fn check(buf: &[u8], b: &BoxAt, actions: &[Action], format: Format) -> Result<(), MediaError> {
    let out = forwarded(buf, b.start, actions);
    match find(&out, (b.payload - b.start) as usize) {
        Some((at, kind)) => Err(MediaError::NotClean {
            format,
            what: format!("a '{}' box at byte {} that pavise does not read", fourcc(&kind), b.start + at as u64),
        }),
        None => Ok(()),
    }
}

/// `buf` (the file from offset `base`) with every planned change applied.
fn forwarded(buf: &[u8], base: u64, actions: &[Action]) -> Vec<u8> {
    let mut out = buf.to_vec();
    let end = base + buf.len() as u64;
    let mut write = |off: u64, bytes: Option<&[u8]>, len: u64| {
        let (from, to) = (off.max(base), off.saturating_add(len).min(end));
        if from < to {
            let (a, z) = ((from - base) as usize, (to - base) as usize);
            match bytes {
                Some(bytes) => out[a..z].copy_from_slice(&bytes[(from - off) as usize..(to - off) as usize]),
                None => out[a..z].fill(0),
            }
        }
    };
    for action in actions {
        match action {
            Action::Free { at, zero_from, end, .. } => {
                write(at + 4, Some(b"free"), 4);
                write(*zero_from, None, end - zero_from);
            }
            Action::ItemType { at, .. } => write(*at, Some(b"free"), 4),
            Action::Zero { off, len, .. } | Action::Blank { off, len, .. } => write(*off, None, *len),
            Action::Patch { off, bytes, .. } => write(*off, Some(bytes), bytes.len() as u64),
            Action::Fill { off, filler } => write(*off, Some(&filler.bytes()), filler.len as u64),
            Action::Note(_) => {}
        }
    }
    out
}

/// The first metadata box header at or after `from`: its offset in `b` and its type.
fn find(b: &[u8], from: usize) -> Option<(usize, [u8; 4])> {
    (from..b.len().saturating_sub(7)).find_map(|at| {
        let kind: [u8; 4] = b[at + 4..at + 8].try_into().ok()?;
        let named = METADATA_BOXES.contains(&&kind)
            // The `©` atoms of QuickTime user data: `©xyz`, `©day`, `©mak`, `©mod`, ...
            || (kind[0] == 0xA9 && kind[1..].iter().all(u8::is_ascii_alphanumeric));
        let size = be32(b, at)? as usize;
        (named && (size <= 1 || (8..=b.len() - at).contains(&size))).then_some((at, kind))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_metadata_box_at_any_offset_with_a_plausible_size() {
        let mut b = vec![0u8; 64];
        b[21..25].copy_from_slice(&20u32.to_be_bytes());
        b[25..29].copy_from_slice(b"\xa9xyz");
        assert_eq!(find(&b, 0), Some((21, *b"\xa9xyz")));
        assert_eq!(find(&b, 22), None, "from is honoured");
        // A size that cannot fit is a table value, not a box.
        b[21..25].copy_from_slice(&400u32.to_be_bytes());
        assert_eq!(find(&b, 0), None);
        b[21..25].copy_from_slice(&0u32.to_be_bytes());
        assert_eq!(find(&b, 0), Some((21, *b"\xa9xyz")), "size 0 runs to the end of the parent");
        b[25..29].copy_from_slice(b"\xa9\x01yz");
        assert_eq!(find(&b, 0), None, "not a QuickTime user data key");
        b[25..29].copy_from_slice(b"ilst");
        assert_eq!(find(&b, 0), Some((21, *b"ilst")));
    }

    #[test]
    fn what_the_plan_frees_or_zeroes_is_not_searched() {
        let mut buf = [&16u32.to_be_bytes()[..], b"moov", &8u32.to_be_bytes(), b"udta"].concat();
        let b = BoxAt { kind: *b"moov", start: 100, payload: 108, body: 108, end: 116 };
        assert!(check(&buf, &b, &[], Format::Video).is_err());
        let freed = Action::Free { at: 108, zero_from: 116, end: 116, what: String::new() };
        assert!(check(&buf, &b, &[freed], Format::Video).is_ok());
        buf[12..16].copy_from_slice(b"trak");
        assert!(check(&buf, &b, &[], Format::Video).is_ok(), "the box's own header is not a hit");
    }
}
