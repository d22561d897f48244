//! ICC colour profiles: kept (a photo's colours depend on them, and Mastodon keeps them),
//! minus everything in them that is not colour.
//!
//! A profile is a header, a tag table and tag data. Cameras and phones write their own:
//! the header names the device maker and model (`APPL`, `iPhone`), the creator, the
//! platform and the creation date; text tags describe the device ("sRGB Monitor (for
//! DiMAGE Master)", seen by the red team in a real photo), its maker and model, and the
//! copyright; `dict`, `data` and private tags can hold anything. [`blank`] keeps, in
//! place:
//! - of the header, what a colour engine reads: size, version 2 or 4, a registered class,
//!   colour space and connection space (any other header is no profile to keep), the two
//!   defined flag bits, a rendering intent of 0 to 3 and the D50 illuminant the
//!   specification requires (written as such); the device fields, dates, creator,
//!   profile ID (an MD5 that no longer holds; zero means "not computed") and reserved
//!   bytes are zeroed;
//! - of the tags, those whose signature a colour engine reads, in a type ICC defines for
//!   that signature (the curves, matrices, lookup tables, chromaticities, colorants,
//!   measurement and viewing conditions, `cicp`, `vcgt`), and of each only its type's
//!   fields: reserved bytes, a colorant's 32-byte name and what follows the fields (past
//!   one XYZ number, past a 3x3 matrix) are zeroed, a `sig ` keeps only a value the
//!   specification registers, a colorant order only a permutation, a lookup table needs
//!   1 to 15 channels and grids of two points or more (and keeps a matrix only where one
//!   applies), and `chrm`, `clrt`, `cicp` and `vcgt` only the shapes lcms reads;
//! - a tag table that lists only those; every other byte is zeroed.
//!
//! Lengths never change, so a profile split over JPEG `APP2` chunks or lying inside an
//! ISOBMFF `colr` box is patched where it lies.
//!
//! Why so narrow (red team passes 19 and 20): exiftool names a tag by its signature and
//! prints whatever type it has, and prints a dropped entry's signature and type too, so a
//! `desc` of type `sig `, eight `cprt` entries of four letters each, private tags, a
//! header's reserved bytes or an illuminant spelling a GPS position were all text it
//! printed, and ImageMagick's re-encode keeps the profile byte for byte.
//!
//! Left as they are: the numbers of a colour tag (curve entries, matrix and LUT values:
//! any value is a colour to a colour engine, so they can carry bytes as pixels can), and
//! the layout: where each tag and lookup-table element lies (red team pass 25, F2: a
//! sender can spell four bytes a tag in its offset and size).
//!
//! A profile that does not parse with certainty is not kept at all (the caller drops it;
//! the image is then shown as sRGB).

use super::be32;

/// Header ranges zeroed: preferred CMM, the version's unused bytes, date and time,
/// platform, device manufacturer, model and attributes, creator, profile ID, and the 28
/// reserved bytes (red team pass 20, F2: kept, they carried text in a real iPhone HEIC).
const HEADER_BLANK: &[(usize, usize)] = &[(4, 8), (10, 12), (24, 36), (40, 44), (48, 64), (80, 128)];

/// The tag signatures a colour engine reads, each with the types ICC defines for it
/// (ICC.1:2022 section 9, ICC v2; `vcgt` and `arts` of Apple and ArgyllCMS, which displays
/// and lcms read). A tag is kept only as a pair in this table (red team pass 24, F2: a
/// `tech` of type `XYZ `, kept by signature and type apart, carried any bytes).
const COLOUR_TAGS: &[(&[u8; 4], &[&[u8; 4]])] = &[
    (b"A2B0", A_TO_B),
    (b"A2B1", A_TO_B),
    (b"A2B2", A_TO_B),
    (b"A2B3", A_TO_B),
    (b"B2A0", B_TO_A),
    (b"B2A1", B_TO_A),
    (b"B2A2", B_TO_A),
    (b"B2A3", B_TO_A),
    (b"gamt", B_TO_A),
    (b"pre0", ANY_LUT),
    (b"pre1", ANY_LUT),
    (b"pre2", ANY_LUT),
    (b"rXYZ", &[b"XYZ "]),
    (b"gXYZ", &[b"XYZ "]),
    (b"bXYZ", &[b"XYZ "]),
    (b"wtpt", &[b"XYZ "]),
    (b"bkpt", &[b"XYZ "]),
    (b"lumi", &[b"XYZ "]),
    (b"rTRC", &[b"curv", b"para"]),
    (b"gTRC", &[b"curv", b"para"]),
    (b"bTRC", &[b"curv", b"para"]),
    (b"kTRC", &[b"curv", b"para"]),
    (b"chad", &[b"sf32"]),
    (b"arts", &[b"sf32"]),
    (b"chrm", &[b"chrm"]),
    (b"clro", &[b"clro"]),
    (b"clrt", &[b"clrt"]),
    (b"clot", &[b"clrt"]),
    (b"meas", &[b"meas"]),
    (b"view", &[b"view"]),
    (b"cicp", &[b"cicp"]),
    (b"vcgt", &[b"vcgt"]),
    (b"tech", &[b"sig "]),
    (b"ciis", &[b"sig "]),
    (b"rig0", &[b"sig "]),
    (b"rig2", &[b"sig "]),
];
const A_TO_B: &[&[u8; 4]] = &[b"mft1", b"mft2", b"mAB "];
const B_TO_A: &[&[u8; 4]] = &[b"mft1", b"mft2", b"mBA "];
const ANY_LUT: &[&[u8; 4]] = &[b"mft1", b"mft2", b"mAB ", b"mBA "];

/// The most channels a lookup table or colorant list has (`FCLR`, 15 colours); lcms
/// reads no more.
const MAX_CHANNELS: usize = 15;

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
    let paired = COLOUR_TAGS.iter().any(|(s, types)| *s == sig && types.iter().any(|k| k[..] == *kind));
    paired && (kind != b"sig " || t.len() >= 12 && SIGNATURE_VALUES.iter().any(|v| v[..] == t[8..12]))
}

/// A lookup table's channel counts as ICC allows them: 1 to [`MAX_CHANNELS`] each (a
/// table of none has header fields nothing reads, red team pass 24, F3).
fn channels(t: &[u8]) -> Option<(usize, usize)> {
    let (inputs, outputs) = (usize::from(*t.get(8)?), usize::from(*t.get(9)?));
    let counts = 1..=MAX_CHANNELS;
    (counts.contains(&inputs) && counts.contains(&outputs)).then_some((inputs, outputs))
}

/// A colorant order: a permutation of the colorants' numbers, at most [`MAX_CHANNELS`]
/// of them (red team pass 24, F1: any bytes at all were kept).
fn colorant_order(t: &[u8]) -> Option<usize> {
    let n = be32(t, 8)? as usize;
    let order = t.get(12..12usize.checked_add(n)?)?;
    let mut seen = [false; MAX_CHANNELS];
    let permutation = (1..=MAX_CHANNELS).contains(&n)
        && order.iter().all(|&c| usize::from(c) < n && !std::mem::replace(&mut seen[usize::from(c)], true));
    permutation.then_some(12 + n)
}

/// Where a kept tag's fields end (`t` is the whole tag, type and reserved bytes first);
/// `None` for fields pavise cannot read (an unknown `para` function), and the tag goes.
fn fields_len(kind: &[u8; 4], t: &[u8]) -> Option<usize> {
    let count = |at: usize| be32(t, at).map(|n| n as usize);
    let half = |at: usize| t.get(at..at + 2).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])));
    let table = |head: usize, entry: usize, n: usize| n.checked_mul(entry)?.checked_add(head);
    match kind {
        b"curv" => table(12, 2, count(8)?),
        b"para" => table(12, 4, *[1usize, 3, 4, 5, 7].get(half(8)?)?),
        // Every tag of these types holds one XYZ number; `chad` and `arts` a 3x3 matrix
        // (red team pass 24, F4: more entries were kept, and printed).
        b"XYZ " => Some(20),
        b"sf32" => Some(44),
        // Three channels (red team pass 25, F4: lcms reads three, more were printed).
        b"chrm" => (half(8)? == 3).then_some(36),
        // lcms reads at most 16 colorants (pass 25, F5: any number was kept).
        b"clrt" => table(12, 38, count(8).filter(|n| (1..=MAX_CHANNELS).contains(n))?),
        b"clro" => colorant_order(t),
        b"meas" | b"view" => Some(36),
        // A grid of fewer than two points, or a table of no channels, leaves header
        // fields that nothing reads (red team pass 24, F3).
        b"mft1" => {
            let ((inputs, outputs), grid) = (channels(t)?, usize::from(*t.get(10)?));
            let clut = grid.checked_pow(u32::try_from(inputs).ok()?)?.checked_mul(outputs)?;
            (grid >= 2).then_some(())?;
            table(48, 1, clut.checked_add(256 * (inputs + outputs))?)
        }
        b"mft2" => {
            let ((inputs, outputs), grid) = (channels(t)?, usize::from(*t.get(10)?));
            let (in_entries, out_entries) = (half(48)?, half(50)?);
            // lcms reads 2 to 4096 entries a curve.
            let entries = 2..=4096;
            (grid >= 2 && entries.contains(&in_entries) && entries.contains(&out_entries)).then_some(())?;
            let clut = grid.checked_pow(u32::try_from(inputs).ok()?)?.checked_mul(outputs)?;
            table(52, 2, clut.checked_add(in_entries * inputs)?.checked_add(out_entries * outputs)?)
        }
        // Apple's video card gamma: a table of three channels of 1- or 2-byte entries, as
        // lcms reads it (red team pass 25, F1: one channel of 13-byte entries carried
        // text), or a formula of three times (gamma, min, max).
        b"vcgt" => match count(8)? {
            0 => {
                let (channels, entries, size) = (half(12)?, half(14)?, half(16)?);
                (channels == 3 && entries >= 2 && matches!(size, 1 | 2)).then_some(())?;
                table(18, 3 * size, entries)
            }
            1 => Some(48),
            _ => None,
        },
        // Its elements lie at offsets, with gaps between them ([`lut_elements`]).
        b"mAB " | b"mBA " => Some(t.len()),
        // Registered code points only (pass 25, F6: four free bytes).
        b"cicp" => {
            let (codes, range) = (t.get(8..11)?, *t.get(11)?);
            let known = CodePoint::IN_ORDER.iter().zip(codes).all(|(kind, &code)| kind.known(code.into()));
            (known && range <= 1).then_some(12)
        }
        b"sig " => Some(12),
        _ => None,
    }
}

/// The three ITU-T H.273 code points that name a colour space (ICC `cicp`, ISOBMFF
/// `colr nclx`), in the order both write them.
#[derive(Debug, Clone, Copy)]
pub(super) enum CodePoint {
    Primaries,
    Transfer,
    Matrix,
}

impl CodePoint {
    pub(super) const IN_ORDER: [CodePoint; 3] = [CodePoint::Primaries, CodePoint::Transfer, CodePoint::Matrix];
    /// "Unspecified", for each of them.
    pub(super) const UNSPECIFIED: u16 = 2;

    /// Whether H.273 registers `value`; any other is a value the sender chose.
    pub(super) fn known(self, value: u16) -> bool {
        match self {
            CodePoint::Primaries => matches!(value, 1 | 2 | 4..=12 | 22),
            CodePoint::Transfer => matches!(value, 1 | 2 | 4..=18),
            CodePoint::Matrix => matches!(value, 0..=2 | 4..=14),
        }
    }
}

/// The identity matrix of an `mft1`/`mft2` table (nine s15Fixed16 numbers), which lcms
/// applies to three inputs only: with any other number, the 36 bytes are read by no one
/// (red team pass 25, F3) and are written as the identity.
const IDENTITY: [u8; 36] = {
    let mut m = [0u8; 36];
    m[1] = 1;
    m[17] = 1;
    m[33] = 1;
    m
};

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
    check_header(p)?;
    let count = be32(p, 128).ok_or(Invalid("no tag table"))? as usize;
    let table_end = count.checked_mul(12).and_then(|n| n.checked_add(132)).filter(|&e| e <= size);
    let table_end = table_end.ok_or(Invalid("the tag table runs past the end"))?;
    // lcms refuses a tag listed twice, and exiftool prints every copy; checked first, since
    // each copy of a lookup table would be walked again.
    let mut signatures: Vec<[u8; 4]> =
        (0..count).map(|i| p[132 + 12 * i..136 + 12 * i].try_into().unwrap_or([0; 4])).collect();
    signatures.sort_unstable();
    if signatures.windows(2).any(|w| w[0] == w[1]) {
        return Err(Invalid("a tag listed twice"));
    }
    let mut kept: Vec<([u8; 4], usize, usize)> = Vec::with_capacity(count);
    let mut blanks: Vec<(usize, usize)> = Vec::new();
    let mut matrices: Vec<usize> = Vec::new();
    for i in 0..count {
        let e = 132 + 12 * i;
        let (off, len) = (be32(p, e + 4).unwrap_or(0) as usize, be32(p, e + 8).unwrap_or(0) as usize);
        let end = off.checked_add(len).filter(|&end| end <= size).ok_or(Invalid("a tag runs past the end"))?;
        if off < table_end || len < 8 {
            return Err(Invalid("a tag overlaps the header or is too short"));
        }
        let sig = [p[e], p[e + 1], p[e + 2], p[e + 3]];
        let tag = &p[off..end];
        // A kept tag keeps only its type's fields; one too short for them goes.
        let Some(fields) = is_colour(&sig, tag).then(|| fields_len(tag[..4].try_into().ok()?, tag)).flatten() else {
            continue;
        };
        if fields > len {
            continue;
        }
        let Some(reserved) = reserved_fields(tag) else { continue };
        if matches!(&tag[..4], b"mft1" | b"mft2") && tag[8] != 3 {
            matrices.push(off + 12);
        }
        blanks.extend([(off + 4, off + 8), (off + fields, end)]);
        blanks.extend(reserved.into_iter().map(|(from, to)| (off + from, off + to)));
        kept.push((sig, off, end));
    }
    // Two kept tags that overlap (not one shared copy) would each blank the other's fields.
    // The kept tags' extents, sorted: checked here, and what the last step keeps.
    let mut covered: Vec<(usize, usize)> = kept.iter().map(|&(_, off, end)| (off, end)).collect();
    covered.sort_unstable();
    if covered.windows(2).any(|w| w[1].0 < w[0].1 && w[1] != w[0]) {
        return Err(Invalid("two tags overlap"));
    }
    let mut changed = 0u64;
    for &(from, to) in HEADER_BLANK {
        changed += zero(p, from, to);
    }
    changed += fix_header(p);
    // The table lists the kept tags only: exiftool prints a dropped entry's type and
    // signature (red team pass 20, F3), and its bytes are no tag's once it is gone.
    let mut table = Vec::with_capacity(4 + 12 * kept.len());
    table.extend_from_slice(&(kept.len() as u32).to_be_bytes());
    for &(sig, off, end) in &kept {
        table.extend_from_slice(&sig);
        table.extend_from_slice(&(off as u32).to_be_bytes());
        table.extend_from_slice(&((end - off) as u32).to_be_bytes());
    }
    changed += p[128..128 + table.len()].iter().zip(&table).filter(|(a, b)| a != b).count() as u64;
    p[128..128 + table.len()].copy_from_slice(&table);
    // Each byte once, however many entries share a tag (red team pass 21, F2: 170,000
    // entries of one 2 MB curve were minutes of zeroing).
    blanks.sort_unstable();
    let mut pos = 0;
    for (from, to) in blanks {
        changed += zero(p, from.max(pos), to);
        pos = pos.max(to);
    }
    // Every byte the header, the table and the kept tags do not cover is zeroed.
    let mut pos = 128 + table.len();
    for (from, to) in covered {
        changed += zero(p, pos, from.min(size));
        pos = pos.max(to);
    }
    changed += zero(p, pos, p.len());
    for at in matrices {
        let matrix = &mut p[at..at + IDENTITY.len()];
        changed += matrix.iter().zip(&IDENTITY).filter(|(a, b)| a != b).count() as u64;
        matrix.copy_from_slice(&IDENTITY);
    }
    Ok(changed)
}

/// Profile classes, colour spaces and connection spaces ICC.1 registers (tables 18 to 20).
const CLASSES: &[&[u8; 4]] = &[b"scnr", b"mntr", b"prtr", b"link", b"spac", b"abst", b"nmcl"];
const SPACES: &[&[u8; 4]] = &[
    b"XYZ ", b"Lab ", b"Luv ", b"YCbr", b"Yxy ", b"RGB ", b"GRAY", b"HSV ", b"HLS ", b"CMYK", b"CMY ", b"2CLR",
    b"3CLR", b"4CLR", b"5CLR", b"6CLR", b"7CLR", b"8CLR", b"9CLR", b"ACLR", b"BCLR", b"CCLR", b"DCLR", b"ECLR",
    b"FCLR",
];

/// A header a colour engine reads as it is: version 2 or 4 (lcms reads no later one), and
/// a class, a colour space and a connection space of registered values (red team pass
/// 20, F2: `Unknown (N48E)` was printed). Anything else is not a profile to keep.
fn check_header(p: &[u8]) -> Result<(), Invalid> {
    let registered = |at: usize, values: &[&[u8; 4]]| values.iter().any(|v| v[..] == p[at..at + 4]);
    if !matches!(p[8], 2 | 4) {
        return Err(Invalid("a version other than 2 or 4"));
    }
    if !registered(12, CLASSES) || !registered(16, SPACES) || !registered(20, SPACES) {
        return Err(Invalid("a class or colour space ICC does not register"));
    }
    Ok(())
}

/// The header's free values made the ones a colour engine expects: the version's minor
/// number without its bug-fix digit, the two flag bits ICC defines, a rendering intent of
/// 0 to 3, and the D50 illuminant the specification requires, written as ICC encodes it
/// (a GPS position spelled as XYZ was kept; so were the last bits of a value near D50,
/// red team pass 24, F5: colour engines use D50 whatever the header says). Returns how
/// many bytes changed.
fn fix_header(p: &mut [u8]) -> u64 {
    const D50: [u8; 12] = [0, 0, 0xF6, 0xD6, 0, 1, 0, 0, 0, 0, 0xD3, 0x2D];
    let before: [u8; 80] = p[..80].try_into().unwrap_or([0; 80]);
    p[9] &= 0xF0;
    p[44..47].fill(0);
    p[47] &= 0x03;
    if be32(p, 64).is_none_or(|intent| intent > 3) {
        p[64..68].fill(0);
    }
    p[68..80].copy_from_slice(&D50);
    before.iter().zip(&p[..80]).filter(|(a, b)| a != b).count() as u64
}

/// Reserved bytes and free text inside a kept type's fields (a colorant's 32-byte name,
/// the gaps between a lookup table's elements), as offsets in the tag, whose fields are
/// known to fit; `None` when the elements cannot be read, and the tag goes.
fn reserved_fields(t: &[u8]) -> Option<Vec<(usize, usize)>> {
    Some(match &t[..4] {
        b"para" | b"chrm" => vec![(10, 12)],
        b"mft1" | b"mft2" => vec![(11, 12)],
        b"mAB " | b"mBA " => {
            let mut used = lut_elements(t)?;
            used.push((0, 32));
            used.sort_unstable();
            let mut gaps = vec![(10, 12)];
            let mut pos = 0;
            for (from, to) in used {
                gaps.push((pos, from.max(pos)));
                pos = pos.max(to);
            }
            gaps.push((pos, t.len()));
            gaps
        }
        b"clrt" => (0..be32(t, 8).unwrap_or(0) as usize).map(|i| (12 + 38 * i, 12 + 38 * i + 32)).collect(),
        // Enumerations (observer, geometry, illuminant type) of a value ICC does not define.
        b"meas" | b"view" => {
            let enums: &[(usize, u32)] = if &t[..4] == b"meas" { &[(8, 2), (24, 2), (32, 8)] } else { &[(32, 8)] };
            enums
                .iter()
                .filter(|&&(at, max)| be32(t, at).is_none_or(|v| v > max))
                .map(|&(at, _)| (at, at + 4))
                .collect()
        }
        _ => Vec::new(),
    })
}

/// Where the elements of an `mAB `/`mBA ` table lie in it (ICC.1 10.12, 10.13): curve
/// sets, a matrix and a CLUT, each at the offset the table gives (0: absent).
fn lut_elements(t: &[u8]) -> Option<Vec<(usize, usize)>> {
    let (inputs, outputs) = channels(t)?;
    let (b_curves, a_curves) = if &t[..4] == b"mAB " { (outputs, inputs) } else { (inputs, outputs) };
    let offset = |at: usize| be32(t, at).map(|o| o as usize);
    let fits = |from: usize, len: usize| from.checked_add(len).filter(|&end| end <= t.len()).map(|end| (from, end));
    let mut used = Vec::new();
    // Each element's whole extent and what it is: two curve sets of one count may share an
    // extent, nothing else may overlap, or one element's numbers would be another's
    // reserved bytes (red team passes 22, F2, and 23, F1: a matrix exactly over 48 bytes
    // of curves). `usize::MAX` marks the matrix, `usize::MAX - 1` the CLUT.
    let mut elements: Vec<(usize, usize, usize)> = Vec::new();
    // Of each curve, its type and its fields (not its reserved bytes or its padding, red
    // team pass 21, F1); each starts on a 4-byte boundary.
    let mut curves = |from: usize, n: usize| -> Option<usize> {
        let mut at = from;
        for _ in 0..n {
            let curve = t.get(at..)?;
            let kind: &[u8; 4] = curve.get(..4)?.try_into().ok()?;
            let len = match kind {
                b"curv" | b"para" => fields_len(kind, curve)?,
                _ => return None,
            };
            let end = fits(at, len)?.1;
            used.push((at, at + 4));
            used.push(if kind == b"para" { (at + 8, at + 10) } else { (at + 8, end) });
            if kind == b"para" {
                used.push((at + 12, end));
            }
            at = end.checked_add(3)? / 4 * 4;
        }
        Some(at.min(t.len()))
    };
    for (at, n) in [(12, b_curves), (20, b_curves), (28, a_curves)] {
        match offset(at)? {
            0 => {}
            from => {
                let end = curves(from, n)?;
                elements.push((from, end, n));
            }
        }
    }
    match offset(16)? {
        0 => {}
        // The matrix works on three channels (the outputs of `mAB `, the inputs of
        // `mBA `); on any other number no engine applies it (red team pass 25, F3).
        _ if b_curves != 3 => return None,
        from => {
            let (from, end) = fits(from, 48)?;
            used.push((from, end));
            elements.push((from, end, usize::MAX));
        }
    }
    match offset(24)? {
        0 => {}
        from => {
            // The grid points of the inputs there are, the precision (1 or 2 bytes), the values.
            let grid = t.get(from..from.checked_add(16)?)?.get(..inputs)?;
            let precision = usize::from(*t.get(from + 16)?);
            // A dimension of fewer than two points makes the others' bytes free (red team
            // pass 24, F3: a first dimension of 0 left 15 bytes as sent).
            if !matches!(precision, 1 | 2) || grid.iter().any(|&g| g < 2) {
                return None;
            }
            let points = grid.iter().try_fold(1usize, |n, &g| n.checked_mul(usize::from(g)))?;
            let (_, end) = fits(from, points.checked_mul(outputs)?.checked_mul(precision)?.checked_add(20)?)?;
            used.extend([(from, from + inputs), (from + 16, from + 17), (from + 20, end)]);
            elements.push((from, end, usize::MAX - 1));
        }
    }
    elements.sort_unstable();
    let shared_curves = |a: (usize, usize, usize), b: (usize, usize, usize)| a == b && a.2 < usize::MAX - 1;
    if elements.windows(2).any(|w| w[1].0 < w[0].1 && !shared_curves(w[0], w[1])) {
        return None;
    }
    Some(used)
}

/// Zeroes `p[from..to]` (nothing when `to <= from`); returns how many bytes changed. Whole
/// ranges at a time: a profile can be most of a photo's bytes, and one byte at a time
/// was most of the scrub of a JPEG with a large profile.
fn zero(p: &mut [u8], from: usize, to: usize) -> u64 {
    let range = &mut p[from..to.max(from)];
    let changed = range.iter().filter(|&&b| b != 0).count() as u64;
    range.fill(0);
    changed
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
    p[68..80].copy_from_slice(&[0, 0, 0xF6, 0xD6, 0, 1, 0, 0, 0, 0, 0xD3, 0x2D]);
    p[40..44].copy_from_slice(b"APPL");
    p[48..52].copy_from_slice(b"PCAM");
    p[52..56].copy_from_slice(b"MX01");
    p[80..84].copy_from_slice(b"PCAM");
    with_tags(&p, &tags)
}

/// A profile of the 128-byte `header` and `tags` (signature, whole tag), laid out in
/// order after the table, its size field set.
#[cfg(test)]
fn with_tags(header: &[u8], tags: &[(&[u8; 4], Vec<u8>)]) -> Vec<u8> {
    let mut p = header[..128].to_vec();
    p.extend_from_slice(&(tags.len() as u32).to_be_bytes());
    let mut off = 132 + 12 * tags.len();
    for (sig, body) in tags {
        p.extend_from_slice(*sig);
        p.extend_from_slice(&(off as u32).to_be_bytes());
        p.extend_from_slice(&(body.len() as u32).to_be_bytes());
        off += body.len();
    }
    for (_, body) in tags {
        p.extend_from_slice(body);
    }
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
        let mut p = with_tags(&sample_profile(), &tags);
        // Red team pass 20, F2: the header's reserved bytes and free values.
        p[100..128].copy_from_slice(b"LEAKMARK GPS 48.858370N 2.29");
        p[64..68].copy_from_slice(b"N48E");
        blank(&mut p).unwrap();
        assert_eq!(be32(&p, 128), Some(4), "only the kept tags are listed");
        let listed: Vec<&[u8]> = (0..4).map(|i| &p[132 + 12 * i..136 + 12 * i]).collect();
        assert_eq!(listed, [b"ciis", b"clrt", b"rTRC", b"wtpt"].map(|s| &s[..]));
        assert!(p[100..128].iter().all(|&b| b == 0) && p[64..68] == [0; 4]);
        for planted in [&b"LEAKMARK"[..], b"48.8", b"N48E", b"N2E ", b"LK"] {
            assert!(!p.windows(planted.len()).any(|w| w == planted), "{}", String::from_utf8_lossy(planted));
        }
        let at = |needle: &[u8]| p.windows(needle.len()).position(|w| w == needle).unwrap();
        assert_eq!(p[at(b"curv")..][8..14], [0, 0, 0, 1, 1, 0], "the curve's fields stay");
        assert!(p.windows(4).any(|w| w == b"scoe"), "a registered signature value stays");
        assert_eq!(p[at(b"XYZ \0\0\0\0\0\0\xF3")..][8..20], [0, 0, 0xF3, 0x51, 0, 1, 0, 0, 0, 1, 0x16, 0xCC]);
        assert_eq!(blank(&mut p).unwrap(), 0, "a second pass changes nothing");
    }

    /// Red team pass 20, F1: text in the gaps of a lookup table and after its elements.
    #[test]
    fn a_lookup_table_keeps_only_its_elements() {
        let mut lut = b"mAB \0\0\0\0\x01\x01\0\0".to_vec();
        lut.extend_from_slice(&[0, 0, 0, 40, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        lut.extend_from_slice(b"LEAKMARK");
        let curve = b"curv\0\0\0\0\0\0\0\x01\x01\x00".to_vec();
        lut.extend_from_slice(b"curvLK48\0\0\0\x01\x01\x00LK");
        lut.extend_from_slice(b"GPS 48.8584N");
        let mut p = sample_profile();
        let at = p.len();
        p.extend_from_slice(&lut);
        // The red TRC entry points at the table instead, under a signature that reads one.
        let entry = (132..132 + 12 * 5).step_by(12).find(|&e| &p[e..e + 4] == b"rTRC").unwrap();
        p[entry..entry + 4].copy_from_slice(b"A2B0");
        p[entry + 4..entry + 8].copy_from_slice(&(at as u32).to_be_bytes());
        p[entry + 8..entry + 12].copy_from_slice(&(lut.len() as u32).to_be_bytes());
        let size = p.len() as u32;
        p[0..4].copy_from_slice(&size.to_be_bytes());
        blank(&mut p).unwrap();
        assert!(!p.windows(4).any(|w| w == b"LEAK" || w == b"GPS "), "{:?}", &p[at..]);
        assert!(!p.windows(2).any(|w| w == b"LK"), "a curve's reserved bytes and padding: {:?}", &p[at..]);
        assert_eq!(p[at + 40..at + 54], curve, "the element's fields stay");
        assert_eq!(blank(&mut p).unwrap(), 0);
        // A tag listed twice is no profile lcms opens (and the repeats made zeroing slow).
        let mut twice = p.clone();
        twice[132 + 4..132 + 12].copy_from_slice(&p.clone()[132 + 16..132 + 24]);
        twice[132..132 + 4].copy_from_slice(&p.clone()[132 + 12..132 + 16]);
        assert_eq!(blank(&mut twice), Err(Invalid("a tag listed twice")));
        assert_eq!(&p[at..at + 4], b"mAB ");
    }

    /// Red team pass 24: a tag is kept as a signature-and-type pair, a colorant order only
    /// as a permutation, a lookup table only with channels and grids, one XYZ number.
    #[test]
    fn pairs_permutations_channels_and_single_numbers() {
        let marker = b"PLANTEDMARKER GPS 48.8584N";
        let clro = |order: &[u8]| [&b"clro\0\0\0\0"[..], &(order.len() as u32).to_be_bytes(), order].concat();
        let mft2 = |inputs: u8, grid: u8| {
            let mut t = b"mft2\0\0\0\0".to_vec();
            t.extend_from_slice(&[inputs, 1, grid, 0]);
            t.extend_from_slice(&[0; 36]);
            t.extend_from_slice(&[0, 2, 0, 2]);
            let clut = usize::from(grid).pow(u32::from(inputs));
            t.extend(std::iter::repeat_n(0x11, 2 * (clut + 2 * usize::from(inputs) + 2)));
            t
        };
        let kept = |tags: Vec<(&[u8; 4], Vec<u8>)>| {
            let mut p = with_tags(&sample_profile(), &tags);
            blank(&mut p).unwrap();
            let n = be32(&p, 128).unwrap_or(0) as usize;
            let listed: Vec<[u8; 4]> = (0..n).map(|i| p[132 + 12 * i..136 + 12 * i].try_into().unwrap()).collect();
            assert!(!p.windows(8).any(|w| w == &marker[..8]), "{listed:?}");
            tags.iter().map(|(sig, _)| listed.contains(sig)).collect::<Vec<bool>>()
        };
        // F1: a colorant order of text, or under another signature.
        assert_eq!(kept(vec![(b"clro", clro(&marker[..])), (b"wtpt", clro(&[0, 1, 2]))]), [false, false]);
        assert_eq!(kept(vec![(b"clro", clro(&[2, 0, 1])), (b"lumi", clro(&[0, 0, 1]))]), [true, false]);
        // F2: `tech` is a `sig `, never an XYZ number or a curve.
        let xyz = [&b"XYZ \0\0\0\0"[..], &marker[..12]].concat();
        let curve = [&b"curv\0\0\0\0\0\0\0\x06"[..], &marker[..12]].concat();
        assert_eq!(kept(vec![(b"tech", xyz), (b"ciis", curve)]), [false, false]);
        // F3: no channels, or a grid of fewer than two points.
        assert_eq!(
            kept(vec![(b"A2B0", mft2(0, 2)), (b"A2B1", mft2(2, 0)), (b"A2B2", mft2(2, 2))]),
            [false, false, true]
        );
        // F4: one white point, however long the tag says its list is.
        let mut p = with_tags(
            &sample_profile(),
            &[(b"bkpt", [&b"XYZ \0\0\0\0\0\0\0\x01\0\0\0\x01\0\0\0\x01"[..], &marker[..24]].concat())],
        );
        blank(&mut p).unwrap();
        assert!(!p.windows(8).any(|w| w == &marker[..8]), "entries past the first XYZ number are zeroed");
        // F5: the version's bug-fix digit and an illuminant near D50 are written afresh.
        let mut p = sample_profile();
        p[9] = 0x1F;
        p[79] ^= 0x3F;
        blank(&mut p).unwrap();
        assert_eq!((p[9], &p[68..80]), (0x10, &[0, 0, 0xF6, 0xD6, 0, 1, 0, 0, 0, 0, 0xD3, 0x2D][..]));
    }

    /// Red team pass 25: fields no colour engine reads in `vcgt`, lookup-table matrices,
    /// `chrm`, `clrt` and `cicp`.
    #[test]
    fn fields_no_engine_reads_are_not_kept() {
        let marker = b"PLANTEDMARKER";
        let vcgt = |channels: u8, size: u8| {
            let mut t = b"vcgt\0\0\0\0\0\0\0\0\0".to_vec();
            t.extend_from_slice(&[channels, 0, 2, 0, size]);
            t.extend(std::iter::repeat_n(0x22, usize::from(channels) * 2 * usize::from(size)));
            t
        };
        let kept = |tags: Vec<(&[u8; 4], Vec<u8>)>| {
            let mut p = with_tags(&sample_profile(), &tags);
            blank(&mut p).unwrap();
            let n = be32(&p, 128).unwrap_or(0) as usize;
            let listed: Vec<[u8; 4]> = (0..n).map(|i| p[132 + 12 * i..136 + 12 * i].try_into().unwrap()).collect();
            (tags.iter().map(|(sig, _)| listed.contains(sig)).collect::<Vec<bool>>(), p)
        };
        let mut one_channel = vcgt(1, 13);
        one_channel.extend_from_slice(marker);
        assert_eq!(kept(vec![(b"vcgt", one_channel)]).0, [false]);
        assert_eq!(kept(vec![(b"vcgt", vcgt(3, 2))]).0, [true]);
        let chrm = |n: u8| [&b"chrm\0\0\0\0\0"[..], &[n, 0, 0], &vec![0x33; 8 * usize::from(n)]].concat();
        let clrt = |n: u8| [&b"clrt\0\0\0\0\0\0\0"[..], &[n], &vec![0; 38 * usize::from(n)]].concat();
        let cicp = |codes: &[u8; 4]| [&b"cicp\0\0\0\0"[..], codes].concat();
        let (flags, _) = kept(vec![
            (b"chrm", chrm(4)),
            (b"clrt", clrt(20)),
            (b"cicp", cicp(b"PLAN")),
            (b"clot", clrt(3)),
            (b"arts", [&b"sf32\0\0\0\0"[..], &[0x44; 36]].concat()),
        ]);
        assert_eq!(flags, [false, false, false, true, true]);
        assert_eq!(kept(vec![(b"chrm", chrm(3)), (b"cicp", cicp(&[1, 13, 0, 1]))]).0, [true, true]);
        // A table of one input keeps its curves and grid, and the identity for a matrix.
        let mut mft1 = b"mft1\0\0\0\0\x01\x01\x02\0".to_vec();
        mft1.extend_from_slice(&marker[..12]);
        mft1.extend_from_slice(&[0x55; 24]);
        mft1.extend(std::iter::repeat_n(0x66, 256 + 2 + 256));
        let (flags, p) = kept(vec![(b"A2B0", mft1)]);
        assert_eq!(flags, [true]);
        let at = p.windows(4).position(|w| w == b"mft1").unwrap();
        assert_eq!(p[at + 12..at + 48], IDENTITY);
        assert!(p[at + 48..at + 48 + 514].iter().all(|&b| b == 0x66), "the curves and grid stay");
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
