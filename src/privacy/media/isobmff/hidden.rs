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

use std::sync::LazyLock;

use memchr::memmem::Finder;

use super::{Action, BoxAt, Format, MediaError, fourcc};
use crate::privacy::media::{be32, inplace::Store};

/// Signatures of GPS records readers find anywhere in `mdat`: the NextBase-style
/// `freeGPS ` block exiftool `-ee` decodes by scanning the media data, the universal
/// key of a MISB ST 0601 UAS Datalink local set (drone position and time, KLV), and the
/// magic of an Insta360 trailer: the 32 ASCII hex digits exiftool's `ProcessInsta360`
/// compares with the last 32 bytes of any MP4 (the text real INSV files end with), after
/// which it reads GPS fixes and times from the trailer before it. In `mdat` it is the end
/// of the file once a faststart copy puts that sample last.
const GPS_SIGNATURES: &[&[u8]] =
    &[b"freeGPS ", &[0x06, 0x0E, 0x2B, 0x34, 0x02, 0x0B, 0x01, 0x01, 0x0E, 0x01, 0x03, 0x01], INSTA360_MAGIC];
const INSTA360_MAGIC: &[u8; 32] = b"8db42d694ccc418790edff439fe026bf";

/// One SIMD searcher per signature: compressed media data is near random, and a search
/// for a signature's rarest bytes skips most of it (testing each byte read 300 MB/s).
static FINDERS: LazyLock<Vec<Finder<'static>>> = LazyLock::new(|| GPS_SIGNATURES.iter().map(Finder::new).collect());

/// The last backstop, over the media data as it is forwarded (run once the plan is
/// applied): a GPS record that survived (inside an audio frame, or any sample pavise
/// keeps without walking) is a refusal. exiftool finds a `freeGPS` block at any offset,
/// so pavise looks there too.
pub(super) fn scan_media(store: &mut impl Store, mdats: &[(u64, u64)], format: Format) -> Result<(), MediaError> {
    const CHUNK: u64 = 1 << 20;
    let overlap = GPS_SIGNATURES.iter().map(|s| s.len()).max().unwrap_or(1) as u64 - 1;
    let mut buf = Vec::new();
    for &(from, to) in mdats {
        let mut at = from;
        while at < to {
            let end = (at + CHUNK + overlap).min(to);
            let first = |bytes: &[u8]| FINDERS.iter().filter_map(|f| f.find(bytes)).min();
            let hit = match store.view(at, end - at) {
                Some(bytes) => first(bytes),
                None => {
                    buf.resize((end - at) as usize, 0);
                    store.read_at(at, &mut buf)?;
                    first(&buf)
                }
            };
            if let Some(i) = hit {
                return Err(MediaError::NotClean {
                    format,
                    what: format!(
                        "a GPS record at byte {} of the media data, inside data pavise cannot walk",
                        at + i as u64
                    ),
                });
            }
            at += CHUNK;
        }
    }
    Ok(())
}

/// Box types that carry metadata in every reader's table (ffmpeg `mov.c`, exiftool).
const METADATA_BOXES: &[&[u8; 4]] =
    &[b"udta", b"meta", b"ilst", b"keys", b"uuid", b"cmov", b"moov", b"XMP_", b"loci", b"chpl", b"----"];

/// The first bytes of [`METADATA_BOXES`]' types, and `©`.
static STARTS_A_TYPE: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < METADATA_BOXES.len() {
        table[METADATA_BOXES[i][0] as usize] = true;
        i += 1;
    }
    table[0xA9] = true;
    table
};

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
        // Most offsets fail on the type's first byte: one table lookup each.
        if !STARTS_A_TYPE[usize::from(b[at + 4])] {
            return None;
        }
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
    fn a_gps_record_left_in_the_media_data_is_a_refusal() {
        let mut file = vec![0u8; 3 << 20];
        let at = (1 << 20) - 3; // across a chunk boundary
        file[at..at + 8].copy_from_slice(b"freeGPS ");
        let mdats = [(16, file.len() as u64)];
        let mut store = crate::privacy::media::inplace::MemStore(&mut file);
        let err = scan_media(&mut store, &mdats, Format::Video).unwrap_err();
        assert!(err.to_string().contains(&format!("byte {at}")), "{err}");
        file[at + 2] = 0;
        let mut store = crate::privacy::media::inplace::MemStore(&mut file);
        assert!(scan_media(&mut store, &mdats, Format::Video).is_ok());
        // An Insta360 trailer's magic: the ASCII text exiftool compares with the file's
        // last 32 bytes, here across a chunk boundary (the overlap is the longest
        // signature less one byte).
        let magic = (2 << 20) - 31;
        file[magic..magic + 32].copy_from_slice(b"8db42d694ccc418790edff439fe026bf");
        let mut store = crate::privacy::media::inplace::MemStore(&mut file);
        let err = scan_media(&mut store, &mdats, Format::Video).unwrap_err();
        assert!(err.to_string().contains(&format!("byte {magic}")), "{err}");
        // The 16 bytes those digits spell, in binary, are not what exiftool looks for.
        file[magic..magic + 32].fill(0);
        let binary = [0x8D, 0xB4, 0x2D, 0x69, 0x4C, 0xCC, 0x41, 0x87, 0x90, 0xED, 0xFF, 0x43, 0x9F, 0xE0, 0x26, 0xBF];
        file[magic..magic + 16].copy_from_slice(&binary);
        let mut store = crate::privacy::media::inplace::MemStore(&mut file);
        assert!(scan_media(&mut store, &mdats, Format::Video).is_ok());
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
