//! AV1 OBUs (AV1 Bitstream §5.3) in the low-overhead format ISOBMFF and Matroska use: a
//! header byte (`obu_type`, extension and size flags), an optional extension byte, a
//! LEB128 size (or none: the OBU runs to the end). Metadata OBUs (type 5: HDR, scalability,
//! ITU-T T.35 user data, timecode), padding with content and reserved types become
//! `OBU_PADDING` (15) of the same length: the header rewritten, the size kept, the
//! payload zeroed.

use super::{Codec, Config, Filler, Unwalkable};

const PADDING: u8 = 15;

/// OBU types a decoder reads in a sample: sequence header, temporal delimiter, frame
/// header, tile group, frame, redundant frame header, tile list.
fn in_samples(t: u8) -> bool {
    matches!(t, 1..=4 | 6..=8)
}

/// In `av1C`'s configOBUs: the sequence header only.
fn in_config(t: u8) -> bool {
    t == 1
}

/// A LEB128 value and its length (at most 8 bytes, at most 2^32 - 1).
fn leb128(b: &[u8]) -> Option<(usize, usize)> {
    let mut value = 0u64;
    for (i, &byte) in b.iter().take(8).enumerate() {
        value |= u64::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return usize::try_from(value).ok().filter(|_| value <= u64::from(u32::MAX)).map(|v| (v, i + 1));
        }
    }
    None
}

/// Walks the OBUs of `data` (which starts at `base` in what the caller holds), pushing
/// the padding each unread OBU becomes.
fn walk(data: &[u8], base: usize, keep: fn(u8) -> bool, out: &mut Vec<Filler>) -> Result<(), Unwalkable> {
    let bad = |what: &str| Unwalkable::new("AV1", what.to_owned());
    let mut at = 0usize;
    while at < data.len() {
        if data[at..].iter().all(|&b| b == 0) {
            break;
        }
        let h = data[at];
        let (t, ext, has_size) = ((h >> 3) & 0xF, h & 4 != 0, h & 2 != 0);
        let header = 1 + usize::from(ext);
        if data.len() - at < header {
            return Err(bad("OBU header runs past its sample"));
        }
        let (size, size_len) = if has_size {
            leb128(&data[at + header..]).ok_or_else(|| bad("OBU size is not a valid LEB128"))?
        } else {
            (data.len() - at - header, 0)
        };
        let total = header + size_len + size;
        if total > data.len() - at {
            return Err(bad("OBU runs past its sample"));
        }
        if h & 0x80 != 0 || !keep(t) {
            let mut head = vec![(PADDING << 3) | (h & 0x06)];
            if ext {
                head.push(data[at + 1] & 0xF8);
            }
            head.extend_from_slice(&data[at + header..at + header + size_len]);
            let what = match t {
                5 => "AV1 metadata OBU (not needed to decode)".to_owned(),
                PADDING => "AV1 padding OBU with content".to_owned(),
                t => format!("AV1 OBU of type {t} (no decoder reads it)"),
            };
            out.push(Filler { at: base + at, len: total, head, fill: 0, last: None, what });
        }
        at += total;
    }
    Ok(())
}

/// The OBUs of one sample.
pub(super) fn obus(sample: &[u8], base: usize, out: &mut Vec<Filler>) -> Result<(), Unwalkable> {
    walk(sample, base, in_samples, out)
}

/// `av1C`: a marker and version byte (0x81), three bytes of profile, level and flags,
/// then configOBUs. ffmpeg reads a record without the marker bit as bare OBUs: refused.
pub(super) fn config(r: &[u8]) -> Result<Config, Unwalkable> {
    if r.len() < 4 || r[0] != 0x81 {
        return Err(Unwalkable::new("AV1", "configuration (av1C) is not marker 1, version 1"));
    }
    let mut fillers = Vec::new();
    walk(&r[4..], 4, in_config, &mut fillers)?;
    Ok(Config { codec: Codec::Av1, fillers, fields_len: r.len() })
}

#[cfg(test)]
mod tests {
    use super::super::{ConfigKind, scrub_config, scrub_sample};
    use super::*;

    #[test]
    fn metadata_obus_become_padding_with_their_size_kept() {
        // Temporal delimiter, metadata (T.35 user data) with an extension byte, a frame.
        let s = [&[0x12, 0x00][..], &[0x2E, 0x47, 0x05, 4, b'G', b'P', b'S', b'!'], &[0x32, 0x02, 0xAA, 0xBB]].concat();
        let fillers = scrub_sample(Codec::Av1, &s).unwrap();
        assert_eq!(fillers.len(), 1);
        assert_eq!((fillers[0].at, fillers[0].len), (2, 8));
        assert_eq!(fillers[0].bytes(), [0x7E, 0x40, 0x05, 0, 0, 0, 0, 0]);
        let mut out = s.clone();
        out[2..10].copy_from_slice(&fillers[0].bytes());
        assert!(scrub_sample(Codec::Av1, &out).unwrap().is_empty());
        assert!(scrub_sample(Codec::Av1, &[0x32, 0x09, 0xAA]).is_err(), "a size past the sample");
        assert!(scrub_sample(Codec::Av1, &[0x32, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]).is_err());
    }

    #[test]
    fn av1c_keeps_the_sequence_header_only() {
        let r = [&[0x81, 0x00, 0x0C, 0x00][..], &[0x0A, 0x02, 0xAA, 0xBB], &[0x2A, 0x02, 0x04, 0x99]].concat();
        let c = scrub_config(ConfigKind::Av1, &r).unwrap();
        assert_eq!(c.fillers.len(), 1);
        assert_eq!((c.fillers[0].at, c.fillers[0].bytes()), (8, vec![0x7A, 0x02, 0, 0]));
        assert!(scrub_config(ConfigKind::Av1, &r[1..]).is_err());
    }
}
