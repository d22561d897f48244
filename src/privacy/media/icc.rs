//! ICC colour profiles: kept (a photo's colours depend on them, and Mastodon keeps them),
//! minus everything in them that is not colour.
//!
//! A profile is a header, a tag table and tag data. Cameras and phones write their own:
//! the header names the device maker and model (`APPL`, `iPhone`), the creator, the
//! platform and the creation date; text tags describe the device ("sRGB Monitor (for
//! DiMAGE Master)", seen by the red team in a real photo), its maker and model, and the
//! copyright; `dict`, `data` and private tags can hold anything. [`blank`] keeps the
//! header fields a colour engine reads (sizes, class, colour spaces, version, flags,
//! intent, illuminant) and every tag that is colour by both its signature and its type
//! (the curves, matrices, LUTs, chromaticities, colorants, measurement and viewing
//! conditions a colour engine reads, `cicp`, `vcgt`), and zeroes the rest in place: the
//! device fields of the header, the profile ID (an MD5 that no longer holds; zero means
//! "not computed"), the contents of every other tag (left as valid empty text where the
//! type has a structure), and every byte no tag points at. Lengths never change, so a
//! profile split over JPEG `APP2` chunks or lying inside an ISOBMFF `colr` box is
//! patched where it lies.
//!
//! Why the signature too (red team pass 19, F2): exiftool names a tag by its signature
//! and prints whatever type it has, so a `desc` of type `sig `, a `cprt` of `ui08` bytes
//! or a thousand private tags of a colour type were text it printed. And a kept tag
//! keeps only its type's fields: its reserved bytes, a colorant's 32-byte name and the
//! bytes after a curve's last entry are zeroed, and a `sig ` (technology, image state,
//! gamut) only a value the specification registers.
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
    b"view", b"cicp", b"mpet", b"vcgt",
];

/// Tag signatures a colour engine reads (ICC.1:2022, ICC v2; `vcgt` and `arts` of Apple
/// and ArgyllCMS, which displays and lcms read).
const COLOUR_SIGNATURES: &[&[u8; 4]] = &[
    b"A2B0", b"A2B1", b"A2B2", b"A2B3", b"B2A0", b"B2A1", b"B2A2", b"B2A3", b"D2B0", b"D2B1", b"D2B2", b"D2B3",
    b"B2D0", b"B2D1", b"B2D2", b"B2D3", b"rXYZ", b"gXYZ", b"bXYZ", b"rTRC", b"gTRC", b"bTRC", b"kTRC", b"wtpt",
    b"bkpt", b"chad", b"chrm", b"clro", b"clrt", b"clot", b"gamt", b"lumi", b"meas", b"pre0", b"pre1", b"pre2",
    b"view", b"cicp", b"vcgt", b"arts", b"tech", b"ciis", b"rig0", b"rig2",
];

/// The values a `sig ` tag may keep (ICC.1 tables 29 to 31: technology, colorimetric
/// intent image state, rendering intent gamut); any other is four bytes the sender chose.
const SIGNATURE_VALUES: &[&[u8; 4]] = &[
    b"fscn", b"dcam", b"rscn", b"ijet", b"twax", b"epho", b"esta", b"dsub", b"rpho", b"fprn", b"vidm", b"vidc",
    b"pjtv", b"CRT ", b"PMD ", b"AMD ", b"KPCD", b"imgs", b"grav", b"offs", b"silk", b"flex", b"mpfs", b"mpfr",
    b"dmpc", b"dcpj", b"scoe", b"sape", b"fpce", b"rhoc", b"rpoc", b"prmg",
];

/// Whether a tag of signature `sig` is colour and kept (see the module docs).
fn is_colour(sig: &[u8; 4], t: &[u8]) -> bool {
    let kind = &t[..4];
    if kind == b"sig " {
        return matches!(sig, b"tech" | b"ciis" | b"rig0" | b"rig2")
            && t.len() >= 12
            && SIGNATURE_VALUES.iter().any(|v| v[..] == t[8..12]);
    }
    COLOUR_SIGNATURES.contains(&sig) && COLOUR_TYPES.iter().any(|c| c[..] == *kind)
}

/// Where a kept tag's fields end, for the types whose length its counts fix (`t` is the
/// whole tag, type and reserved bytes first); `None` keeps all of it (the LUT types,
/// `vcgt`).
fn fields_len(kind: &[u8; 4], t: &[u8]) -> Option<usize> {
    let count = |at: usize| be32(t, at).map(|n| n as usize);
    let half = |at: usize| t.get(at..at + 2).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])));
    let table = |head: usize, entry: usize, n: usize| n.checked_mul(entry)?.checked_add(head);
    match kind {
        b"curv" => table(12, 2, count(8)?),
        b"para" => table(12, 4, *[1usize, 3, 4, 5, 7].get(half(8)?)?),
        b"XYZ " => Some(8 + (t.len() - 8) / 12 * 12),
        b"sf32" => Some(8 + (t.len() - 8) / 4 * 4),
        b"chrm" => table(12, 8, half(8)?),
        b"clrt" => table(12, 38, count(8)?),
        b"clro" => table(12, 1, count(8)?),
        b"meas" | b"view" => Some(36),
        b"cicp" | b"sig " => Some(12),
        _ => None,
    }
}

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
    let mut tags: Vec<([u8; 4], usize, usize)> = Vec::with_capacity(count);
    for i in 0..count {
        let e = 132 + 12 * i;
        let (off, len) = (be32(p, e + 4).unwrap_or(0) as usize, be32(p, e + 8).unwrap_or(0) as usize);
        let end = off.checked_add(len).filter(|&end| end <= size).ok_or(Invalid("a tag runs past the end"))?;
        if off < table_end || len < 8 {
            return Err(Invalid("a tag overlaps the header or is too short"));
        }
        covered.push((off, end));
        tags.push(([p[e], p[e + 1], p[e + 2], p[e + 3]], off, end));
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
    for &(sig, off, end) in &tags {
        let kind: [u8; 4] = [p[off], p[off + 1], p[off + 2], p[off + 3]];
        if is_colour(&sig, &p[off..end]) {
            // Only the type's fields: reserved bytes, a colorant's name and what follows
            // the fields (or all of a tag too short for them) are zeroed.
            let blank: Vec<(usize, usize)> = match fields_len(&kind, &p[off..end]).unwrap_or(end - off) {
                fields if fields > end - off => vec![(off + 4, end)],
                fields if &kind == b"clrt" => [(off + 4, off + 8), (off + fields, end)]
                    .into_iter()
                    .chain((0..(fields - 12) / 38).map(|i| (off + 12 + 38 * i, off + 12 + 38 * i + 32)))
                    .collect(),
                fields => vec![(off + 4, off + 8), (off + fields, end)],
            };
            for (from, to) in blank {
                for at in from..to {
                    set(p, at, 0);
                }
            }
            continue;
        }
        for at in off + 4..end {
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

    /// Red team pass 19, F2: exiftool names a tag by its signature whatever its type.
    #[test]
    fn only_colour_signatures_of_colour_types_stay_and_only_their_fields() {
        let marker = b"LEAKMARK GPS 48.858370N 2.294481E";
        let mut clrt = b"clrt\0\0\0\0\0\0\0\x01".to_vec();
        clrt.extend_from_slice(&[marker.as_slice(), &[0; 6]].concat()[..38]);
        let tags: Vec<(&[u8; 4], Vec<u8>)> = vec![
            (b"desc", [&b"sig \0\0\0\0"[..], b"N48E"].concat()),
            (b"tech", [&b"sig \0\0\0\0"[..], b"N2E "].concat()),
            (b"ciis", [&b"sig \0\0\0\0"[..], b"scoe"].concat()),
            (b"cprt", [&b"ui08\0\0\0\0"[..], marker].concat()),
            (b"prvt", [&b"XYZ \0\0\0\0"[..], &marker[..24]].concat()),
            (b"clrt", clrt),
            (b"rTRC", [&b"curvLK48\0\0\0\x01\x01\x00"[..], marker].concat()),
            (b"wtpt", [&b"XYZ \0\0\0\0"[..], &[0, 0, 0xF3, 0x51, 0, 1, 0, 0, 0, 1, 0x16, 0xCC], b"LK"].concat()),
        ];
        let mut p = vec![0u8; 128];
        p[36..40].copy_from_slice(b"acsp");
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
        blank(&mut p).unwrap();
        for planted in [&b"LEAKMARK"[..], b"48.8", b"N48E", b"N2E ", b"LK"] {
            assert!(!p.windows(planted.len()).any(|w| w == planted), "{}", String::from_utf8_lossy(planted));
        }
        let at = |needle: &[u8]| p.windows(needle.len()).position(|w| w == needle).unwrap();
        assert_eq!(p[at(b"curv")..][8..14], [0, 0, 0, 1, 1, 0], "the curve's fields stay");
        assert!(p.windows(4).any(|w| w == b"scoe"), "a registered signature value stays");
        assert_eq!(p[at(b"XYZ \0\0\0\0\0\0\xF3")..][8..20], [0, 0, 0xF3, 0x51, 0, 1, 0, 0, 0, 1, 0x16, 0xCC]);
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
