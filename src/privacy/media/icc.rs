//! ICC colour profiles: kept (a photo's colours depend on them, and Mastodon keeps them),
//! minus everything in them that is not colour.
//!
//! A profile is a header, a tag table and tag data. Cameras and phones write their own:
//! the header names the device maker and model (`APPL`, `iPhone`), the creator, the
//! platform and the creation date; text tags describe the device ("sRGB Monitor (for
//! DiMAGE Master)", seen by the red team in a real photo), its maker and model, and the
//! copyright; `dict`, `data` and private tags can hold anything. [`blank`] keeps the
//! header fields a colour engine reads (sizes, class, colour spaces, version, flags,
//! intent, illuminant) and every tag of a colorimetric type (curves, matrices, LUTs,
//! chromaticities, measurement and viewing conditions, `cicp`, `vcgt`), and zeroes the
//! rest in place: the device fields of the header, the profile ID (an MD5 that no longer
//! holds; zero means "not computed"), the contents of every other tag (left as valid
//! empty text where the type has a structure), and every byte no tag points at. Lengths
//! never change, so a profile split over JPEG `APP2` chunks or lying inside an ISOBMFF
//! `colr` box is patched where it lies.
//!
//! A profile that does not parse with certainty is not kept at all (the caller drops it;
//! the image is then shown as sRGB).

use super::be32;

/// Header ranges zeroed: preferred CMM, date and time, platform, device manufacturer,
/// model and attributes, creator, profile ID.
const HEADER_BLANK: &[(usize, usize)] = &[(4, 8), (24, 36), (40, 44), (48, 64), (80, 100)];

/// Tag types that are colour and nothing else.
const COLOUR_TYPES: &[&[u8; 4]] = &[
    b"curv", b"para", b"XYZ ", b"sf32", b"mft1", b"mft2", b"mAB ", b"mBA ", b"chrm", b"clro", b"clrt", b"meas",
    b"view", b"sig ", b"ui08", b"ui16", b"ui32", b"ui64", b"uf32", b"cicp", b"mpet", b"vcgt",
];

/// Why a profile is not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unreadable ICC profile: {0}")]
pub struct Invalid(pub &'static str);

/// Zeroes what is not colour (see the module docs); returns how many bytes changed.
pub fn blank(p: &mut [u8]) -> Result<u64, Invalid> {
    let size = be32(p, 0).ok_or(Invalid("shorter than its header"))? as usize;
    if size < 132 || size > p.len() {
        return Err(Invalid("its size field does not match"));
    }
    if p.get(36..40) != Some(b"acsp") {
        return Err(Invalid("no 'acsp' signature"));
    }
    let count = be32(p, 128).ok_or(Invalid("no tag table"))? as usize;
    let table_end = count.checked_mul(12).and_then(|n| n.checked_add(132)).filter(|&e| e <= size);
    let table_end = table_end.ok_or(Invalid("the tag table runs past the end"))?;
    // Every byte a kept structure covers; the rest is zeroed.
    let mut covered: Vec<(usize, usize)> = vec![(0, table_end)];
    let mut tags: Vec<(usize, usize)> = Vec::with_capacity(count);
    for i in 0..count {
        let e = 132 + 12 * i;
        let (off, len) = (be32(p, e + 4).unwrap_or(0) as usize, be32(p, e + 8).unwrap_or(0) as usize);
        let end = off.checked_add(len).filter(|&end| end <= size).ok_or(Invalid("a tag runs past the end"))?;
        if off < table_end || len < 8 {
            return Err(Invalid("a tag overlaps the header or is too short"));
        }
        covered.push((off, end));
        tags.push((off, end));
    }
    let mut changed = 0u64;
    let mut set = |p: &mut [u8], at: usize, v: u8| {
        if p[at] != v {
            p[at] = v;
            changed += 1;
        }
    };
    for &(from, to) in HEADER_BLANK {
        for at in from..to {
            set(p, at, 0);
        }
    }
    for &(off, end) in &tags {
        let kind: [u8; 4] = [p[off], p[off + 1], p[off + 2], p[off + 3]];
        if COLOUR_TYPES.contains(&&kind) {
            continue;
        }
        for at in off + 8..end {
            set(p, at, 0);
        }
        // Empty, but still well-formed, where the type's reader checks a field.
        let well_formed: &[(usize, u8)] = match &kind {
            b"mluc" => &[(15, 12)],
            b"dict" => &[(15, 16)],
            _ => &[],
        };
        for &(rel, v) in well_formed {
            if off + rel < end {
                set(p, off + rel, v);
            }
        }
    }
    covered.sort_unstable();
    let mut pos = 0;
    for (from, to) in covered {
        for at in pos..from.min(size) {
            set(p, at, 0);
        }
        pos = pos.max(to);
    }
    for at in pos..p.len() {
        set(p, at, 0);
    }
    Ok(changed)
}

/// A small but complete profile for tests: a description, a copyright, a device
/// maker and model in the header, and the colour tags of a display profile.
#[cfg(test)]
pub(crate) fn sample_profile() -> Vec<u8> {
    let text = |s: &str| {
        let mut t = b"desc\0\0\0\0".to_vec();
        t.extend_from_slice(&(s.len() as u32 + 1).to_be_bytes());
        t.extend_from_slice(s.as_bytes());
        t.extend_from_slice(&[0; 1 + 4 + 4 + 2 + 1 + 67]);
        while !t.len().is_multiple_of(4) {
            t.push(0);
        }
        t
    };
    let xyz = |x: u32| [&b"XYZ \0\0\0\0"[..], &x.to_be_bytes(), &x.to_be_bytes(), &x.to_be_bytes()].concat();
    let curv = b"curv\0\0\0\0\0\0\0\x01\x01\x00".to_vec();
    let mut cprt = b"text\0\0\0\0Copyright Marker-X1 PaviseCam\0".to_vec();
    while !cprt.len().is_multiple_of(4) {
        cprt.push(0);
    }
    let tags: Vec<(&[u8; 4], Vec<u8>)> = vec![
        (b"desc", text("sRGB Monitor (for PaviseCam Marker-X1)")),
        (b"cprt", cprt),
        (b"wtpt", xyz(0xF351)),
        (b"rXYZ", xyz(0x6FA2)),
        (b"rTRC", curv),
    ];
    let mut p = vec![0u8; 128];
    p[4..8].copy_from_slice(b"lcms");
    p[8..12].copy_from_slice(&[2, 0x10, 0, 0]);
    p[12..16].copy_from_slice(b"mntr");
    p[16..20].copy_from_slice(b"RGB ");
    p[20..24].copy_from_slice(b"XYZ ");
    p[24..36].copy_from_slice(&[0x07, 0xE8, 0, 6, 0, 4, 0, 14, 0, 2, 0, 0]);
    p[36..40].copy_from_slice(b"acsp");
    p[40..44].copy_from_slice(b"APPL");
    p[48..52].copy_from_slice(b"PCAM");
    p[52..56].copy_from_slice(b"MX01");
    p[80..84].copy_from_slice(b"PCAM");
    p.extend_from_slice(&(tags.len() as u32).to_be_bytes());
    let mut off = 132 + 12 * tags.len();
    let mut data = Vec::new();
    for (sig, body) in &tags {
        p.extend_from_slice(*sig);
        p.extend_from_slice(&(off as u32).to_be_bytes());
        p.extend_from_slice(&(body.len() as u32).to_be_bytes());
        data.extend_from_slice(body);
        off += body.len();
    }
    p.extend(data);
    let size = p.len() as u32;
    p[0..4].copy_from_slice(&size.to_be_bytes());
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_stays_and_the_device_goes() {
        let mut p = sample_profile();
        let colour: Vec<u8> = p[12..24].iter().chain(&p[64..80]).copied().collect();
        let changed = blank(&mut p).unwrap();
        assert!(changed > 40, "{changed}");
        for planted in [&b"PaviseCam"[..], b"Marker-X1", b"PCAM", b"MX01", b"APPL", b"lcms"] {
            assert!(!p.windows(planted.len()).any(|w| w == planted), "{}", String::from_utf8_lossy(planted));
        }
        let after: Vec<u8> = p[12..24].iter().chain(&p[64..80]).copied().collect();
        assert_eq!(after, colour, "class, colour spaces, intent and illuminant are kept");
        assert!(p.windows(4).any(|w| w == b"curv") && p.windows(4).any(|w| w == b"XYZ "));
        assert_eq!(blank(&mut p).unwrap(), 0, "a second pass changes nothing");
    }

    #[test]
    fn a_profile_that_does_not_parse_is_refused() {
        let good = sample_profile();
        let mut short = good[..100].to_vec();
        assert!(blank(&mut short).is_err());
        let mut bad_magic = good.clone();
        bad_magic[36] = b'x';
        assert!(blank(&mut bad_magic).is_err());
        let mut bad_tag = good.clone();
        bad_tag[132 + 4..132 + 8].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(blank(&mut bad_tag).is_err());
        // Bytes after the profile (a JPEG chunk's slack) are zeroed too.
        let mut padded = good.clone();
        padded.extend_from_slice(b"hidden");
        blank(&mut padded).unwrap();
        assert!(padded.ends_with(&[0; 6]));
    }
}
