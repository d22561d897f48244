//! H.264/AVC NAL units (ITU-T H.264 §7.3.1, Table 7-1): a one-byte header
//! (`forbidden_zero_bit`, `nal_ref_idc`, `nal_unit_type`). Kept where a decoder reads
//! them; everything else (SEI, 6; filler, 12; reserved and unspecified types) becomes
//! filler data: type 12 with `nal_ref_idc` 0, payload 0xFF…, RBSP trailing bits 0x80.

use super::{Codec, Config, Filler, Unwalkable, nal_array};

const FILLER: u8 = 12;

/// NAL unit types the base picture needs, kept in a sample: slices and data partitions
/// (1–5), sequence and picture parameter sets (7, 8), access unit delimiters and end of
/// sequence or stream (9–11). Everything else becomes filler: the SPS extension (13)
/// and auxiliary (alpha) slices (19), the SVC/MVC/3D prefix, subset SPS, depth
/// parameter set and extension slices (14–16, 20, 21) are read only by decoders of
/// those extensions (ffmpeg, and so Mastodon, skips them), so their bytes are free for
/// anything: an Insta360 GPS trailer inside a type 14 unit ends the stored file. Those
/// extra layers (a second MVC view, an alpha plane) are lost; the base picture stays.
pub(super) fn in_samples(t: u8) -> bool {
    matches!(t, 1..=5 | 7..=11)
}

/// In `avcC`'s arrays: sequence and picture parameter sets only.
fn in_config(t: u8) -> bool {
    matches!(t, 7 | 8)
}

/// The filler a NAL unit (`nal`, at `at`) becomes, or `None` when it is kept.
pub(super) fn padding(at: usize, nal: &[u8], keep: fn(u8) -> bool) -> Result<Option<Filler>, Unwalkable> {
    let h = *nal.first().ok_or_else(|| Unwalkable::new("H.264", "empty NAL unit"))?;
    let t = h & 0x1F;
    if h & 0x80 == 0 && keep(t) {
        return Ok(None);
    }
    let what = match t {
        _ if h & 0x80 != 0 => "H.264 NAL unit with its forbidden bit set".to_owned(),
        6 => "H.264 SEI (user data, timing; not needed to decode)".to_owned(),
        FILLER => "H.264 filler data with content".to_owned(),
        t => format!("H.264 NAL unit of type {t} (no decoder reads it)"),
    };
    Ok(Some(Filler { at, len: nal.len(), head: vec![FILLER], fill: 0xFF, last: (nal.len() > 1).then_some(0x80), what }))
}

/// NAL lengths of 3 bytes: ISO/IEC 14496-15 allows 1, 2 or 4, and readers split such
/// samples differently (ffmpeg reads 3 bytes, exiftool 1), so a unit one of them reads
/// is hidden inside a unit the other keeps.
pub(super) const THREE_BYTE_LENGTHS: &str = "gives NAL units 3-byte lengths, which readers split differently";

/// `avcC`: version 1, profile, compatibility, level, the NAL length size, the SPS and
/// PPS arrays and, for the High profiles, chroma and bit depth and the SPS extensions.
/// ffmpeg reads a record whose first byte is not 1 as Annex B start codes: refused.
pub(super) fn config(r: &[u8]) -> Result<Config, Unwalkable> {
    let bad = |what: &str| Unwalkable::new("H.264", format!("configuration (avcC) {what}"));
    if r.first() != Some(&1) {
        return Err(bad("is not version 1 (a decoder would read it as Annex B)"));
    }
    if r.len() < 7 {
        return Err(bad("is too short"));
    }
    let length_size = (r[4] & 3) + 1;
    if length_size == 3 {
        return Err(bad(THREE_BYTE_LENGTHS));
    }
    let (mut units, at) = nal_array(r, 6, usize::from(r[5] & 0x1F), "H.264")?;
    let pps = usize::from(*r.get(at).ok_or_else(|| bad("has no picture parameter set count"))?);
    let (more, mut at) = nal_array(r, at + 1, pps, "H.264")?;
    units.extend(more);
    if matches!(r[1], 100 | 110 | 122 | 144) && r.len() - at >= 4 {
        let (ext, end) = nal_array(r, at + 4, usize::from(r[at + 3]), "H.264")?;
        units.extend(ext);
        at = end;
    }
    let mut fillers = Vec::new();
    for (from, len) in units {
        fillers.extend(padding(from, &r[from..from + len], in_config)?);
    }
    Ok(Config { codec: Codec::H264 { length_size }, fillers, fields_len: at })
}

#[cfg(test)]
mod tests {
    use super::super::{ConfigKind, scrub_config, scrub_sample};
    use super::*;

    /// A length-prefixed (4-byte) sample of these NAL units.
    fn sample(nals: &[&[u8]]) -> Vec<u8> {
        nals.iter().flat_map(|n| [&(n.len() as u32).to_be_bytes()[..], n].concat()).collect()
    }

    #[test]
    fn sei_and_unread_units_become_filler_of_the_same_length() {
        let sei = b"\x06\x05\x10freeGPS LEAKMARK 48.8584\x80";
        let s =
            sample(&[b"\x09\xF0", sei, b"\x65\x88\x84slice", b"\x18unspecified", b"\x0Cfill", b"\x0E\x8D\xB4-iLEAK"]);
        let fillers = scrub_sample(Codec::H264 { length_size: 4 }, &s).unwrap();
        let mut out = s.clone();
        for f in &fillers {
            out[f.at..f.at + f.len].copy_from_slice(&f.bytes());
        }
        assert_eq!(out.len(), s.len());
        assert_eq!(&out[10..10 + sei.len()], [&[0x0C][..], &vec![0xFF; sei.len() - 2], &[0x80]].concat().as_slice());
        assert!(["freeGPS", "spec", "LEAK"].iter().all(|m| !String::from_utf8_lossy(&out).contains(m)));
        assert!(out.windows(7).any(|w| w == b"\x65\x88\x84slice".get(..7).unwrap()), "slices stay");
        assert!(out.starts_with(&[0, 0, 0, 2, 0x09, 0xF0]), "the access unit delimiter stays");
        assert_eq!(fillers.len(), 4, "{fillers:?}");
        assert!(fillers[3].what.contains("type 14"), "an SVC prefix no base decoder reads: {:?}", fillers[3].what);
        assert!(scrub_sample(Codec::H264 { length_size: 4 }, &out).unwrap().is_empty(), "a second pass finds nothing");
    }

    #[test]
    fn avcc_keeps_parameter_sets_and_loses_anything_else() {
        let sps = b"\x67\x64\x00\x1F";
        let sei = b"\x06\x05x264 core";
        let mut r = vec![1, 100, 0, 31, 0xFF, 0xE2];
        for n in [&sps[..], sei] {
            r.extend_from_slice(&(n.len() as u16).to_be_bytes());
            r.extend_from_slice(n);
        }
        r.extend_from_slice(&[1, 0, 2, 0x68, 0xEE]);
        r.extend_from_slice(&[0xFD, 0xF8, 0xF8, 0]);
        let fields = r.len();
        r.extend_from_slice(b"<x:xmpmeta>");
        let c = scrub_config(ConfigKind::Avc, &r).unwrap();
        assert_eq!(c.codec, Codec::H264 { length_size: 4 });
        let mut three = r.clone();
        three[4] = (three[4] & !3) | 2;
        assert!(config(&three).is_err(), "3-byte NAL lengths");
        assert_eq!(c.fields_len, fields, "the XMP after the fields is past them");
        assert_eq!(c.fillers.len(), 1);
        assert_eq!((c.fillers[0].at, c.fillers[0].len), (6 + 2 + sps.len() + 2, sei.len()));
        let mut annex_b = r.clone();
        annex_b[0] = 0;
        assert!(scrub_config(ConfigKind::Avc, &annex_b).unwrap_err().to_string().contains("Annex B"));
        assert!(scrub_config(ConfigKind::Avc, &r[..12]).is_err(), "an array past the record");
    }
}
