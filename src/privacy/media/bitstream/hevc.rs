//! HEVC NAL units (ITU-T H.265 §7.3.1.2, Table 7-1): a two-byte header
//! (`forbidden_zero_bit`, `nal_unit_type`, `nuh_layer_id`, `nuh_temporal_id_plus1`).
//! Kept where a decoder reads them; everything else (prefix and suffix SEI, 39 and 40;
//! filler, 38; reserved and unspecified types, Dolby Vision's 62 and 63 among them)
//! becomes `FD_NUT` (38) with the same layer and temporal IDs, payload 0xFF…, RBSP
//! trailing bits 0x80.

use super::{Codec, Config, Filler, Unwalkable};

const FD_NUT: u8 = 38;

/// NAL unit types a decoder reads in a sample: the VCL types (0–9, 16–21), VPS, SPS,
/// PPS, access unit delimiter, end of sequence and of bitstream (32–37). Reserved types
/// (10–15, 22–31, 41–47) and unspecified ones (48–63) are read by no decoder. A unit of
/// a layer above the base (`nuh_layer_id` > 0: the second view of MV-HEVC spatial video,
/// scalable or 3D layers) is skipped by ffmpeg's decoder, so it too becomes filler
/// ([`padding`]): the base picture stays, the extra view is lost.
pub(super) fn in_samples(t: u8) -> bool {
    matches!(t, 0..=9 | 16..=21 | 32..=37)
}

/// In `hvcC`/`lhvC` arrays: parameter sets only (declarative SEI arrays go).
fn in_config(t: u8) -> bool {
    matches!(t, 32..=34)
}

/// The filler a NAL unit (`nal`, at `at`) becomes, or `None` when it is kept.
/// `base_only`: in a sample, where units of upper layers go too.
pub(super) fn padding(
    at: usize,
    nal: &[u8],
    keep: fn(u8) -> bool,
    base_only: bool,
) -> Result<Option<Filler>, Unwalkable> {
    let [h0, h1, ..] = *nal else {
        return Err(Unwalkable::new("HEVC", "NAL unit shorter than its header"));
    };
    let t = (h0 >> 1) & 0x3F;
    // In samples only: an `lhvC` holds the upper layers' parameter sets on purpose.
    let upper_layer = base_only && ((h0 & 1) << 5 | h1 >> 3) != 0;
    if h0 & 0x80 == 0 && keep(t) && !upper_layer {
        return Ok(None);
    }
    let what = match t {
        _ if h0 & 0x80 != 0 => "HEVC NAL unit with its forbidden bit set".to_owned(),
        _ if upper_layer => {
            format!("HEVC NAL unit of type {t} in a layer above the base (no decoder Mastodon runs reads it)")
        }
        39 | 40 => "HEVC SEI (user data, timing; not needed to decode)".to_owned(),
        FD_NUT => "HEVC filler data with content".to_owned(),
        t => format!("HEVC NAL unit of type {t} (no decoder reads it)"),
    };
    // nuh_temporal_id_plus1 may not be 0.
    let head = vec![(FD_NUT << 1) | (h0 & 1), if h1 & 7 == 0 { h1 | 1 } else { h1 }];
    Ok(Some(Filler { at, len: nal.len(), head, fill: 0xFF, last: (nal.len() > 2).then_some(0x80), what }))
}

/// `hvcC` (23 bytes of fields, the NAL length size in the low bits of byte 21) or
/// `lhvC` (6 bytes, in byte 4), then arrays: a type byte, a count, units with 16-bit
/// lengths. ffmpeg reads an `hvcC` starting `00 00 0x` (x < 2) as Annex B: refused.
pub(super) fn config(r: &[u8], layered: bool) -> Result<Config, Unwalkable> {
    let name = if layered { "lhvC" } else { "hvcC" };
    let bad = |what: &str| Unwalkable::new("HEVC", format!("configuration ({name}) {what}"));
    let (fields, size_at) = if layered { (6, 4) } else { (23, 21) };
    if r.len() < fields {
        return Err(bad("is too short"));
    }
    if !layered && r[0] == 0 && r[1] == 0 && r[2] <= 1 {
        return Err(bad("starts like Annex B start codes (a decoder would read it so)"));
    }
    let length_size = (r[size_at] & 3) + 1;
    if length_size == 3 {
        return Err(bad(super::h264::THREE_BYTE_LENGTHS));
    }
    let mut at = fields;
    let mut fillers = Vec::new();
    for _ in 0..r[fields - 1] {
        let count = r.get(at + 1..at + 3).ok_or_else(|| bad("ends inside an array header"))?;
        let count = usize::from(u16::from_be_bytes([count[0], count[1]]));
        let (units, end) = super::nal_array(r, at + 3, count, "HEVC")?;
        for (from, len) in units {
            fillers.extend(padding(from, &r[from..from + len], in_config, false)?);
        }
        at = end;
    }
    Ok(Config { codec: Codec::Hevc { length_size }, fillers, fields_len: at })
}

#[cfg(test)]
mod tests {
    use super::super::{ConfigKind, scrub_config, scrub_sample};
    use super::*;

    #[test]
    fn prefix_and_suffix_sei_become_filler_keeping_layer_and_temporal_ids() {
        let prefix = b"\x4E\x01\x05\x10freeGPS 48.8584\x80";
        let suffix = b"\x50\x0B\x05time";
        let slice = b"\x26\x01\xAFslice";
        let upper = b"\x26\x09\xAFsecond view";
        let s: Vec<u8> = [&prefix[..], slice, suffix, b"\x7C\x01RPU", upper]
            .iter()
            .flat_map(|n| [&(n.len() as u32).to_be_bytes()[..], n].concat())
            .collect();
        let fillers = scrub_sample(Codec::Hevc { length_size: 4 }, &s).unwrap();
        assert_eq!(fillers.len(), 4, "{fillers:?}");
        assert_eq!(&fillers[3].bytes()[..2], [0x4C, 0x09], "a slice of layer 1 becomes filler of layer 1");
        assert_eq!(fillers[0].bytes(), [&[0x4C, 0x01][..], &vec![0xFF; prefix.len() - 3], &[0x80]].concat());
        assert_eq!(&fillers[1].bytes()[..2], [0x4C, 0x0B], "a suffix SEI of layer 1, temporal ID 2");
        assert!(fillers[2].what.contains("type 62"), "Dolby Vision RPU: {:?}", fillers[2].what);
        assert!(scrub_sample(Codec::Hevc { length_size: 4 }, &[0, 0, 0, 1, 0x26]).is_err(), "a one-byte unit");
    }

    #[test]
    fn hvcc_sei_arrays_become_filler_and_parameter_sets_stay() {
        let mut r = vec![1u8; 23];
        r[21] = 0x0F; // length size 4
        r[22] = 2;
        r.extend_from_slice(&[0xA0, 0, 1, 0, 3, 0x40, 0x01, 0x0C]); // VPS
        r.extend_from_slice(&[0x27, 0, 1, 0, 7, 0x4E, 0x01, 0x05, 2, b'x', b'2', 0x80]); // prefix SEI
        let c = scrub_config(ConfigKind::Hevc, &r).unwrap();
        assert_eq!((c.codec, c.fields_len), (Codec::Hevc { length_size: 4 }, r.len()));
        assert_eq!(c.fillers.len(), 1);
        assert_eq!(c.fillers[0].at, r.len() - 7);
        let mut annex_b = r.clone();
        annex_b[..4].copy_from_slice(&[0, 0, 0, 1]);
        assert!(scrub_config(ConfigKind::Hevc, &annex_b).is_err());
    }
}
