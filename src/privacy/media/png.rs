//! PNG: a chunk walk that keeps what draws the image and drops every text chunk.
//!
//! Location hides in `eXIf` (even after IDAT), `iTXt` XMP, and `tEXt`/`zTXt` "Raw
//! profile" chunks that ImageMagick fills with hex-encoded Exif and IPTC; `tIME` dates
//! the edit. Rather than chase names, the walker keeps an allow-list of ancillary chunks
//! that only describe pixels (colour, transparency, animation) and drops every other
//! ancillary chunk. An unknown *critical* chunk (uppercase first letter) is refused: a
//! decoder could not draw the image either. Nothing after IEND is kept. An `iCCP` colour
//! profile is inflated, stripped of everything that is not colour ([`super::icc`]),
//! and written back, uncompressed ([`zlib`]), under the keyword `ICC Profile` (the
//! keyword is free text too); one that does not inflate or parse is dropped.
//!
//! A suggested palette (`sPLT`) goes: its name is free text (exiftool prints it as
//! `SuggestedPalette`) and no decoder draws with it; so does `hIST`, a palette histogram
//! for quantisers, up to 512 bytes the sender picks, and the suggested `PLTE` of a
//! truecolour image (only a palette image, colour type 3, draws with its `PLTE`). A
//! kept chunk keeps only its defined fields: one of a fixed size whose length is
//! another (a `gAMA` with text after its 4 bytes) is dropped, as decoders ignore it, and `IEND` is written empty. Every
//! kept chunk gets its CRC computed afresh, since a wrong CRC is 4 bytes a sender chooses
//! per chunk, and `IDAT` may be split into any number of chunks. A chunk a PNG holds
//! once ([`ONCE`]: the colour and pixel descriptions, `acTL`) is kept once, before the
//! image data, as libpng reads it: a repeat or a copy after `IDAT` goes. APNG frames
//! (`fcTL`, `fdAT`) stay only after an `acTL`: without one no reader animates them.
//! and only as many frames as it announces. A kept pixel description of values its
//! specification does not allow (libpng ignores it) goes too ([`in_range`]).

mod zlib;

use super::{Format, MediaError, Report, be32, fourcc};

const F: Format = Format::Png;
const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// Ancillary chunks that describe pixels, not the photo's circumstances.
const KEEP: &[&[u8; 4]] = &[
    b"tRNS", b"cHRM", b"gAMA", b"iCCP", b"sBIT", b"sRGB", b"cICP", b"mDCV", b"mDCv", b"cLLI", b"cLLi", b"bKGD",
    b"pHYs", b"acTL", b"fcTL", b"fdAT",
];

/// The length the PNG (third edition) and APNG specifications give a kept ancillary chunk, for
/// the image's colour type; `None` for a chunk of variable length.
fn defined_len(kind: &[u8], color_type: u8) -> Option<usize> {
    Some(match kind {
        b"sRGB" => 1,
        b"gAMA" | b"cICP" => 4,
        b"acTL" => 8,
        b"pHYs" => 9,
        b"cLLI" | b"cLLi" => 8,
        b"mDCV" | b"mDCv" => 24,
        b"cHRM" => 32,
        b"fcTL" => 26,
        b"bKGD" => [2, 0, 6, 1, 2, 0, 6].get(usize::from(color_type)).copied()?,
        b"sBIT" => [1, 0, 3, 3, 2, 0, 4].get(usize::from(color_type)).copied()?,
        b"tRNS" if color_type != 3 => [2, 0, 6].get(usize::from(color_type)).copied()?,
        _ => return None,
    })
}

pub fn scrub(input: &[u8], report: &mut Report) -> Result<Vec<u8>, MediaError> {
    if !input.starts_with(SIGNATURE) {
        return Err(MediaError::malformed(F, "bad signature"));
    }
    let mut out = Vec::with_capacity(input.len());
    out.extend_from_slice(SIGNATURE);
    let mut pos = SIGNATURE.len();
    let mut first = true;
    let mut saw_idat = false;
    let mut color_type = 0u8;
    let mut bit_depth = 0u8;
    let mut saw_plte = false;
    let mut palette = 0usize;
    let mut once = Once::default();
    let mut frames = Frames::default();
    loop {
        let len = be32(input, pos).ok_or_else(|| MediaError::truncated(F, "the file ends before IEND"))? as usize;
        if len > 0x7FFF_FFFF {
            return Err(MediaError::malformed(F, format!("chunk length {len} at byte {pos}")));
        }
        let Some(kind) = input.get(pos + 4..pos + 8) else {
            return Err(MediaError::truncated(F, "the file ends inside a chunk header"));
        };
        let end = pos + 12 + len;
        let Some(whole) = input.get(pos..end) else {
            return Err(MediaError::truncated(F, format!("chunk {} runs past the end", fourcc(kind))));
        };
        if first && kind != b"IHDR" {
            return Err(MediaError::malformed(F, "the first chunk is not IHDR"));
        }
        first = false;
        if !kind.iter().all(u8::is_ascii_alphabetic) {
            return Err(MediaError::malformed(F, format!("invalid chunk type {:?}", fourcc(kind))));
        }
        let critical = kind[0].is_ascii_uppercase();
        let data = &whole[8..8 + len];
        // Decoders refuse these too; readers would disagree on where the next chunk starts.
        if (kind == b"IHDR" && len != 13) || (kind == b"PLTE" && (!len.is_multiple_of(3) || len > 768)) {
            return Err(MediaError::malformed(F, format!("a {} chunk of {len} bytes", fourcc(kind))));
        }
        // libpng refuses a second palette ("duplicate") and one after the image data; readers
        // that take the last would draw other colours than those that take the first.
        if kind == b"PLTE" && (saw_plte || saw_idat) {
            let why = if saw_plte { "a second PLTE chunk" } else { "a PLTE chunk after the image data" };
            return Err(MediaError::malformed(F, format!("{why} (decoders refuse it)")));
        }
        saw_plte |= kind == b"PLTE";
        match kind {
            // libpng refuses a second header; readers would draw different images.
            b"IHDR" if pos > SIGNATURE.len() => {
                return Err(MediaError::malformed(F, "a second IHDR chunk (decoders refuse it)"));
            }
            b"IHDR" => {
                bit_depth = data[8];
                color_type = data[9];
                keep(&mut out, kind, data);
            }
            // A truecolour image may carry a suggested palette for displays of few colours:
            // no decoder of today draws with it, and it is 768 bytes the sender picks
            // (exiftool prints `Palette`). Only a palette image (colour type 3) needs one;
            // libpng ignores one in a greyscale image.
            b"PLTE" if color_type != 3 => {
                report.remove("PLTE chunk of an image that is not a palette image", whole.len() as u64);
            }
            // A palette image indexes at most `1 << bit_depth` colours; libpng cuts the rest
            // off, so they draw nothing, and they are bytes the sender picks.
            b"PLTE" => {
                palette = (len / 3).min(1 << bit_depth.min(8));
                if palette < len / 3 {
                    report.remove("PLTE entries past the image's bit depth", (len - palette * 3) as u64);
                }
                keep(&mut out, kind, &data[..palette * 3]);
            }
            b"IDAT" => {
                saw_idat = true;
                keep(&mut out, kind, data);
            }
            b"IEND" => {
                if !saw_idat {
                    return Err(MediaError::malformed(F, "no image data (IDAT) before IEND"));
                }
                if len > 0 {
                    report.remove("data inside IEND", len as u64);
                }
                keep(&mut out, kind, &[]);
                if end < input.len() {
                    report.remove("data after IEND", (input.len() - end) as u64);
                }
                return Ok(out);
            }
            _ if critical => {
                return Err(MediaError::malformed(F, format!("unknown critical chunk {}", fourcc(kind))));
            }
            _ if let Some(why) = once.refuse(kind, saw_idat) => {
                report.remove(format!("{} chunk {why}", fourcc(kind)), whole.len() as u64);
            }
            // APNG frames draw nothing without an animation control chunk before the
            // image data: no reader looks at them, and each can be any length.
            b"fcTL" | b"fdAT" if !once.0.contains(b"acTL") => {
                report.remove(format!("{} chunk of no animation (no acTL)", fourcc(kind)), whole.len() as u64);
            }
            b"fcTL" | b"fdAT" if !frames.counted(kind) => {
                report.remove(format!("{} chunk past acTL's frame count", fourcc(kind)), whole.len() as u64);
            }
            b"iCCP" => {
                let before = out.len();
                keep_iccp(whole, &mut out, report);
                if out.len() > before {
                    once.kept(kind);
                }
            }
            _ if KEEP.iter().any(|k| k.as_slice() == kind) => {
                let fits = match defined_len(kind, color_type) {
                    Some(l) => l == len,
                    None if kind == b"tRNS" => len <= palette,
                    None => true,
                };
                if !fits {
                    report.remove(format!("{} chunk of the wrong length", fourcc(kind)), whole.len() as u64);
                } else if !in_range(kind, data, color_type, bit_depth, palette) {
                    report.remove(format!("{} chunk of values out of range", fourcc(kind)), whole.len() as u64);
                } else {
                    if kind == b"acTL" {
                        frames.allowed = be32(data, 0).unwrap_or(0);
                    }
                    keep(&mut out, kind, data);
                    once.kept(kind);
                }
            }
            _ => report.remove(chunk_name(kind, whole), whole.len() as u64),
        }
        pos = end;
    }
}

/// Whether a kept fixed-size chunk's values are ones its specification allows (red
/// team pass 8, P7: an `sBIT` of "LEA", a `bKGD` spelling "LEAKMARK", a `cICP` of
/// primaries 50 were kept as sent, and exiftool prints them). libpng ignores such a
/// chunk ("invalid"), so dropping it changes nothing a viewer shows: `sBIT` depths of 1
/// to the sample depth, a `bKGD` within the bit depth (a palette index within the
/// palette), a `tRNS` colour within the bit depth, `pHYs` units of none or metres, a
/// `cICP` of code points H.273 defines for RGB (matrix 0, full or narrow range), `cHRM`
/// chromaticities of at most 1.0.
fn in_range(kind: &[u8], data: &[u8], color_type: u8, bit_depth: u8, palette: usize) -> bool {
    let max = if bit_depth >= 16 { u32::from(u16::MAX) } else { (1u32 << bit_depth) - 1 };
    let samples_fit = || data.chunks(2).all(|s| s.len() == 2 && u32::from(u16::from_be_bytes([s[0], s[1]])) <= max);
    match kind {
        b"sBIT" => {
            let depth = if color_type == 3 { 8 } else { bit_depth };
            data.iter().all(|&d| (1..=depth).contains(&d))
        }
        b"bKGD" if color_type == 3 => usize::from(data[0]) < palette,
        b"bKGD" => samples_fit(),
        b"tRNS" if color_type != 3 => samples_fit(),
        b"pHYs" => data[8] <= 1,
        b"cICP" => {
            let primaries = matches!(data[0], 1 | 2 | 4..=12 | 22);
            let transfer = matches!(data[1], 1 | 2 | 4..=18);
            primaries && transfer && data[2] == 0 && data[3] <= 1
        }
        b"cHRM" => data.chunks(4).all(|v| be32(v, 0).is_some_and(|v| v <= 100_000)),
        _ => true,
    }
}

/// The APNG frames `acTL` announces: each `fcTL` starts one, and the `fdAT` after it
/// belong to it. Frames past the count draw nothing (libpng and browsers stop there)
/// and any number of them fit after it: they go (red team pass 8, P6).
#[derive(Default)]
struct Frames {
    allowed: u32,
    seen: u32,
}

impl Frames {
    /// Whether this `fcTL` or `fdAT` belongs to an announced frame.
    fn counted(&mut self, kind: &[u8]) -> bool {
        if kind == b"fcTL" {
            self.seen = self.seen.saturating_add(1);
        }
        self.seen <= self.allowed
    }
}

/// The chunks a PNG may hold once, before its image data: the colour and pixel
/// descriptions (`cLLi` and `mDCv` are the draft spellings of `cLLI` and `mDCV`) and
/// `acTL`. libpng reads the first copy and calls a later one "duplicate", and one after
/// `IDAT` "out of place", ignoring both; exiftool prints every copy. Those go.
const ONCE: &[&[u8; 4]] =
    &[b"cHRM", b"gAMA", b"iCCP", b"sBIT", b"sRGB", b"cICP", b"mDCV", b"cLLI", b"bKGD", b"tRNS", b"pHYs", b"acTL"];

/// Which of the [`ONCE`] chunks are kept already.
#[derive(Default)]
struct Once(Vec<[u8; 4]>);

impl Once {
    fn spelling(kind: &[u8]) -> Option<[u8; 4]> {
        let kind: [u8; 4] = match kind {
            b"cLLi" => *b"cLLI",
            b"mDCv" => *b"mDCV",
            other => other.try_into().ok()?,
        };
        ONCE.contains(&&kind).then_some(kind)
    }

    /// Why a chunk of `kind` no decoder reads is dropped, if it is one.
    fn refuse(&self, kind: &[u8], after_idat: bool) -> Option<&'static str> {
        let kind = Self::spelling(kind)?;
        if self.0.contains(&kind) {
            Some("repeated (decoders read the first)")
        } else if after_idat {
            Some("after the image data (decoders ignore it there)")
        } else {
            None
        }
    }

    fn kept(&mut self, kind: &[u8]) {
        self.0.extend(Self::spelling(kind));
    }
}

/// Writes a chunk with its CRC computed afresh.
fn keep(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
    let mut crc = flate2::Crc::new();
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    out.extend_from_slice(&crc.sum().to_be_bytes());
}

/// Profiles larger than this are no colour profile a photo needs.
const MAX_ICC: u64 = 4 << 20;
const ICC_KEYWORD: &[u8] = b"ICC Profile";

/// `iCCP`: keyword, NUL, compression method 0, a zlib stream of the profile.
fn keep_iccp(whole: &[u8], out: &mut Vec<u8>, report: &mut Report) {
    let data = &whole[8..whole.len() - 4];
    let Some(nul) = data.iter().position(|&b| b == 0) else {
        return report.remove("iCCP chunk (unreadable)", whole.len() as u64);
    };
    let (keyword, rest) = (&data[..nul], &data[nul + 1..]);
    if rest.first() != Some(&0) {
        return report.remove("iCCP chunk (unknown compression)", whole.len() as u64);
    }
    let Some(mut profile) = zlib::inflate(&rest[1..], MAX_ICC) else {
        return report.remove("iCCP chunk (does not inflate)", whole.len() as u64);
    };
    let changed = match super::icc::blank(&mut profile) {
        Ok(n) => n,
        Err(e) => return report.remove(format!("iCCP chunk ({e})"), whole.len() as u64),
    };
    // Written afresh even when nothing in it changed: how it was compressed is bytes the
    // sender chose too (red team pass 19, F1: a second stream after the first). The
    // profile ends at its size field; what `blank` zeroed after it does not go on.
    profile.truncate(super::be32(&profile, 0).map_or(0, |size| size as usize));
    let Some(stream) = zlib::compress(&profile) else {
        return report.remove("iCCP chunk (does not deflate)", whole.len() as u64);
    };
    let mut body = b"iCCP".to_vec();
    body.extend_from_slice(ICC_KEYWORD);
    body.extend_from_slice(&[0, 0]);
    body.extend_from_slice(&stream);
    let mut crc = flate2::Crc::new();
    crc.update(&body);
    out.extend_from_slice(&((body.len() - 4) as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc.sum().to_be_bytes());
    if changed > 0 || keyword != ICC_KEYWORD {
        report.remove("iCCP profile name, device, description and text tags", changed.max(1));
    }
}

fn chunk_name(kind: &[u8], whole: &[u8]) -> String {
    // tEXt/zTXt/iTXt start with a keyword; it says what was inside (XMP, raw profiles).
    if matches!(kind, b"tEXt" | b"zTXt" | b"iTXt") {
        let keyword: String = whole
            .get(8..)
            .unwrap_or_default()
            .iter()
            .take(40)
            .take_while(|&&c| c != 0)
            .map(|&c| if c.is_ascii_graphic() || c == b' ' { c as char } else { '?' })
            .collect();
        return format!("{} chunk \"{keyword}\"", fourcc(kind));
    }
    format!("{} chunk", fourcc(kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let mut c = (data.len() as u32).to_be_bytes().to_vec();
        c.extend_from_slice(kind);
        c.extend_from_slice(data);
        c.extend_from_slice(&[0, 0, 0, 0]);
        c
    }

    /// The chunks of a PNG file, each with whether its CRC is right.
    fn chunks(png: &[u8]) -> Vec<([u8; 4], Vec<u8>, bool)> {
        let mut out = Vec::new();
        let mut pos = SIGNATURE.len();
        while pos < png.len() {
            let len = be32(png, pos).unwrap() as usize;
            let kind: [u8; 4] = png[pos + 4..pos + 8].try_into().unwrap();
            let data = png[pos + 8..pos + 8 + len].to_vec();
            let mut crc = flate2::Crc::new();
            crc.update(&png[pos + 4..pos + 8 + len]);
            out.push((kind, data, be32(png, pos + 8 + len) == Some(crc.sum())));
            pos += 12 + len;
        }
        out
    }

    /// Red team pass 6, P1: a suggested palette's name is free text (exiftool's
    /// `SuggestedPalette`). The class: every ancillary chunk a decoder does not draw with
    /// goes (sPLT, hIST, the text, time, calibration, stereo, signature, provenance and
    /// private chunks), a kept chunk of a fixed size keeps no bytes past its fields,
    /// `IEND` is empty, and every CRC is written afresh.
    #[test]
    fn only_what_draws_the_image_is_kept_each_chunk_only_its_fields() {
        let rgb_header = [0, 0, 0, 1, 0, 0, 0, 1, 8, 2, 0, 0, 0];
        let marker = b"LEAKMARK GPS 48.8584N 2.2945E";
        let with = |fields: &[u8]| [fields, &marker[..]].concat();
        let mut bad_crc = chunk(b"IDAT", b"pixels");
        let at = bad_crc.len() - 4;
        bad_crc[at..].copy_from_slice(b"LK48");
        let mut png = SIGNATURE.to_vec();
        for c in [
            chunk(b"IHDR", &rgb_header),
            chunk(b"gAMA", &[0, 0, 0xB1, 0x8F]),
            chunk(b"sRGB", &with(&[0])),
            chunk(b"sPLT", &with(b"\0\x08\x10\x20\x30\xFF\0\x01")),
            chunk(b"hIST", marker),
            chunk(b"tIME", &with(&[7, 0xE8, 6, 4, 14, 2, 0])),
            chunk(b"pCAL", &with(b"\0")),
            chunk(b"sCAL", &with(b"\x01")),
            chunk(b"sTER", marker),
            chunk(b"dSIG", marker),
            chunk(b"caBX", marker),
            chunk(b"tEXt", &with(b"Comment\0")),
            chunk(b"zTXt", &with(b"Raw profile type exif\0\0")),
            chunk(b"prVt", marker),
            chunk(b"pHYs", &[0, 0, 0x0B, 0x13, 0, 0, 0x0B, 0x13, 1]),
            bad_crc,
            chunk(b"IEND", marker),
        ] {
            png.extend_from_slice(&c);
        }
        let mut r = Report::default();
        let out = scrub(&png, &mut r).unwrap();
        assert!(!out.windows(8).any(|w| w == b"LEAKMARK") && !out.windows(4).any(|w| w == b"LK48"), "{r:?}");
        let kept = chunks(&out);
        let kinds: Vec<&[u8]> = kept.iter().map(|(k, _, _)| &k[..]).collect();
        assert_eq!(kinds, [&b"IHDR"[..], b"gAMA", b"pHYs", b"IDAT", b"IEND"], "{r:?}");
        assert!(kept.iter().all(|(_, _, crc_ok)| *crc_ok), "every CRC is right");
        assert!(kept[3].1 == b"pixels" && kept[4].1.is_empty(), "{r:?}");
        let mut again = Report::default();
        assert_eq!(scrub(&out, &mut again).unwrap(), out);
        assert!(again.removed.is_empty(), "{again:?}");

        // A header or palette of another length: decoders refuse it, and so does pavise.
        let image = |header: &[u8], palette: &[u8]| {
            let mut file = [SIGNATURE, &chunk(b"IHDR", header)[..]].concat();
            if !palette.is_empty() {
                file.extend(chunk(b"PLTE", palette));
            }
            [file, chunk(b"IDAT", b"pixels"), chunk(b"IEND", b"")].concat()
        };
        scrub(&image(&rgb_header, &[0; 6]), &mut Report::default()).unwrap();
        for (bad, what) in
            [(image(&with(&rgb_header), b""), "IHDR chunk of 42"), (image(&rgb_header, &[0; 4]), "PLTE chunk of 4")]
        {
            let err = scrub(&bad, &mut Report::default()).unwrap_err();
            assert!(err.to_string().contains(what), "{err}");
        }
    }

    /// Red team pass 7, P2: every copy of a fixed-size chunk was kept (two `cHRM` of 32
    /// bytes spelling "LEAK", two `pHYs`...), and exiftool `-a` prints each. libpng reads
    /// the first and ignores a repeat or one after `IDAT`: those go, for every chunk a PNG
    /// holds once, whatever its spelling (`cLLi` is `cLLI`'s draft name).
    /// The white point and primaries of sRGB, as `cHRM` writes them (times 100,000).
    const SRGB_CHROMATICITIES: [u32; 8] = [31270, 32900, 64000, 33000, 30000, 60000, 15000, 6000];

    /// Red team pass 8, P7: the one `sBIT`, `bKGD`, `pHYs`, `cICP`, `cHRM` or `tRNS` kept
    /// kept values no specification allows ("LEA" as significant bits, "LEAKMARK" as a
    /// background colour, primaries 50), which libpng ignores and exiftool prints. Such
    /// a chunk goes; one of values in range stays.
    #[test]
    fn a_pixel_description_of_values_out_of_range_is_dropped() {
        let png = |header: [u8; 13], palette: Option<&[u8]>, extra: Vec<u8>| {
            let mut file = [SIGNATURE, &chunk(b"IHDR", &header)[..]].concat();
            if let Some(palette) = palette {
                file.extend(chunk(b"PLTE", palette));
            }
            [file, extra, chunk(b"IDAT", b"pixels"), chunk(b"IEND", b"")].concat()
        };
        let rgb = [0, 0, 0, 1, 0, 0, 0, 1, 8, 2, 0, 0, 0];
        let mut grey4 = rgb;
        grey4[8..10].copy_from_slice(&[4, 0]);
        let mut indexed = rgb;
        indexed[9] = 3;
        let chrm = |v: &[u32]| chunk(b"cHRM", &v.iter().flat_map(|v| v.to_be_bytes()).collect::<Vec<u8>>());
        let mut wide = SRGB_CHROMATICITIES;
        wide[0] = 100_001;
        // (header, palette, a chunk in range, one out of range)
        type Case<'a> = ([u8; 13], Option<&'a [u8]>, Vec<u8>, Vec<u8>);
        let cases: [Case<'_>; 7] = [
            (rgb, None, chunk(b"sBIT", &[8, 8, 8]), chunk(b"sBIT", b"LEA")),
            (rgb, None, chunk(b"sBIT", &[5, 6, 5]), chunk(b"sBIT", &[0, 8, 8])),
            (rgb, None, chunk(b"bKGD", &[0, 255, 0, 0, 0, 0]), chunk(b"bKGD", b"LEAKMA")),
            (grey4, None, chunk(b"tRNS", &[0, 15]), chunk(b"tRNS", &[0, 16])),
            (indexed, Some(&[0; 6]), chunk(b"bKGD", &[1]), chunk(b"bKGD", &[2])),
            (
                rgb,
                None,
                chunk(b"pHYs", &[0, 0, 0x0B, 0x13, 0, 0, 0x0B, 0x13, 1]),
                chunk(b"pHYs", &[0, 0, 0x0B, 0x13, 0, 0, 0x0B, 0x13, 2]),
            ),
            (rgb, None, chunk(b"cICP", &[9, 16, 0, 1]), chunk(b"cICP", &[50, 13, 0, 1])),
        ];
        for (header, palette, good, bad) in
            cases.into_iter().chain([(rgb, None, chrm(&SRGB_CHROMATICITIES), chrm(&wide))])
        {
            let kind = good[4..8].to_vec();
            let mut r = Report::default();
            let out = scrub(&png(header, palette, good.clone()), &mut r).unwrap();
            let fields = &good[..good.len() - 4]; // its CRC is written afresh
            assert!(out.windows(fields.len()).any(|w| w == fields), "{}: {r:?}", String::from_utf8_lossy(&kind));
            let mut r = Report::default();
            let out = scrub(&png(header, palette, bad), &mut r).unwrap();
            assert!(!out.windows(4).any(|w| w == kind), "{}: {r:?}", String::from_utf8_lossy(&kind));
            assert!(r.removed.iter().any(|x| x.what.contains("values out of range")), "{r:?}");
        }
        for cicp in [[1, 13, 1, 1], [1, 13, 0, 2], [1, 3, 0, 1]] {
            let out = scrub(&png(rgb, None, chunk(b"cICP", &cicp)), &mut Report::default()).unwrap();
            assert!(!out.windows(4).any(|w| w == b"cICP"), "{cicp:?}");
        }
    }

    /// Red team pass 8, P6: a second `IHDR` (13 bytes the sender picks; ImageMagick then
    /// draws nothing) is refused, as libpng refuses it; `fcTL`/`fdAT` past `acTL`'s frame
    /// count, which no reader plays, go.
    #[test]
    fn a_second_header_is_refused_and_frames_past_the_count_go() {
        let header = chunk(b"IHDR", &[0, 0, 0, 1, 0, 0, 0, 1, 8, 2, 0, 0, 0]);
        let file = [SIGNATURE, &header, &header, &chunk(b"IDAT", b"pixels"), &chunk(b"IEND", b"")].concat();
        let err = scrub(&file, &mut Report::default()).unwrap_err();
        assert!(err.to_string().contains("a second IHDR chunk"), "{err}");

        let fctl = |seq: u8| chunk(b"fcTL", &[&[0, 0, 0, seq, 0, 0, 0, 1, 0, 0, 0, 1][..], &[0; 14]].concat());
        let fdat = |seq: u8, data: &[u8]| chunk(b"fdAT", &[&[0, 0, 0, seq][..], data].concat());
        let mut file = [SIGNATURE, &header, &chunk(b"acTL", &[0, 0, 0, 2, 0, 0, 0, 0])].concat();
        file.extend([fctl(0), chunk(b"IDAT", b"pixels"), fctl(1), fdat(2, b"frame2")].concat());
        for seq in 3..8 {
            file.extend([fctl(seq * 2), fdat(seq * 2 + 1, b"LEAKMARK")].concat());
        }
        file.extend(chunk(b"IEND", b""));
        let mut r = Report::default();
        let out = scrub(&file, &mut r).unwrap();
        assert_eq!(out.windows(4).filter(|w| *w == b"fcTL").count(), 2, "{r:?}");
        assert!(out.windows(6).any(|w| w == b"frame2") && !out.windows(8).any(|w| w == b"LEAKMARK"), "{r:?}");
    }

    #[test]
    fn a_chunk_decoders_read_once_is_kept_once_and_only_before_the_image_data() {
        use std::io::Write as _;
        let marker = b"LEAKMARK GPS 48.8584N 2.2945E Pixel8";
        let iccp = |name: &[u8]| {
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            z.write_all(&crate::privacy::media::icc::sample_profile()).unwrap();
            [name, b"\0\0", &z.finish().unwrap()].concat()
        };
        let first = [
            chunk(b"cHRM", &SRGB_CHROMATICITIES.iter().flat_map(|v: &u32| v.to_be_bytes()).collect::<Vec<u8>>()),
            chunk(b"gAMA", &[0, 0, 0xB1, 0x8F]),
            chunk(b"pHYs", &[0, 0, 0x0B, 0x13, 0, 0, 0x0B, 0x13, 1]),
            chunk(b"sBIT", &[8, 8, 8]),
            chunk(b"cICP", &[1, 13, 0, 1]),
            chunk(b"cLLI", &[0, 0, 1, 0, 0, 0, 2, 0]),
            chunk(b"iCCP", &iccp(b"ICC Profile")),
        ];
        let again = [
            chunk(b"cHRM", &marker[..32]),
            chunk(b"gAMA", &marker[..4]),
            chunk(b"pHYs", &marker[8..17]),
            chunk(b"sBIT", &marker[17..20]),
            chunk(b"cICP", &marker[20..24]),
            chunk(b"cLLi", &marker[24..32]),
            chunk(b"iCCP", &iccp(b"LEAKMARK")),
        ];
        let mut png = [SIGNATURE, &chunk(b"IHDR", &[0, 0, 0, 1, 0, 0, 0, 1, 8, 2, 0, 0, 0])].concat();
        png.extend(first.concat());
        png.extend(again.concat());
        png.extend(chunk(b"IDAT", b"pixels"));
        png.extend(chunk(b"bKGD", &marker[..6]));
        png.extend(chunk(b"IEND", b""));
        let mut r = Report::default();
        let out = scrub(&png, &mut r).unwrap();
        assert!(!out.windows(4).any(|w| w == b"LEAK" || w == b"MARK" || w == b"48.8"), "{r:?}");
        let kinds: Vec<[u8; 4]> = chunks(&out).into_iter().map(|(k, _, _)| k).collect();
        let want: Vec<[u8; 4]> = ["IHDR", "cHRM", "gAMA", "pHYs", "sBIT", "cICP", "cLLI", "iCCP", "IDAT", "IEND"]
            .iter()
            .map(|k| k.as_bytes().try_into().unwrap())
            .collect();
        assert_eq!(kinds, want, "{r:?}");
        for c in &first[..6] {
            assert!(out.windows(c.len() - 4).any(|w| w == &c[..c.len() - 4]), "the first copy stays: {r:?}");
        }
        let mut again = Report::default();
        assert_eq!(scrub(&out, &mut again).unwrap(), out);
        assert!(again.removed.is_empty(), "{again:?}");
    }

    /// Red team pass 7, P3: `fcTL` and `fdAT` chunks in a PNG with no `acTL` were kept
    /// whole, though no reader animates such a file. They go; with an `acTL` before the
    /// image data they stay (an APNG's frames and their delays are its content).
    #[test]
    fn animation_frames_stay_only_in_an_animated_png() {
        let marker = b"LEAKMARK GPS 48.8584N 2.2945E Pixel8Pro";
        let fctl = |seq: u8| chunk(b"fcTL", &[&[0, 0, 0, seq, 0, 0, 0, 1, 0, 0, 0, 1][..], &[0; 14]].concat());
        let png = |actl: Option<Vec<u8>>| {
            let mut file = [SIGNATURE, &chunk(b"IHDR", &[0, 0, 0, 1, 0, 0, 0, 1, 8, 2, 0, 0, 0])].concat();
            file.extend(actl.unwrap_or_default());
            file.extend(fctl(0));
            file.extend(chunk(b"IDAT", b"pixels"));
            file.extend(fctl(1));
            file.extend(chunk(b"fdAT", &[&[0, 0, 0, 2][..], marker].concat()));
            file.extend(chunk(b"IEND", b""));
            file
        };
        let mut r = Report::default();
        let out = scrub(&png(None), &mut r).unwrap();
        assert!(!out.windows(8).any(|w| w == b"LEAKMARK"), "{r:?}");
        assert!(!out.windows(4).any(|w| w == b"fcTL" || w == b"fdAT"), "{r:?}");
        let animated = png(Some(chunk(b"acTL", &[0, 0, 0, 2, 0, 0, 0, 0])));
        let out = scrub(&animated, &mut Report::default()).unwrap();
        assert_eq!(out.windows(4).filter(|w| *w == b"fcTL").count(), 2);
        assert!(out.windows(8).any(|w| w == b"LEAKMARK"), "an APNG's frame data is its content");
        // An acTL after the image data animates nothing (libpng ignores it there).
        let mut late = png(None);
        let at = late.len() - 12;
        late.splice(at..at, chunk(b"acTL", &[0, 0, 0, 2, 0, 0, 0, 0]));
        let out = scrub(&late, &mut Report::default()).unwrap();
        assert!(!out.windows(4).any(|w| w == b"acTL" || w == b"fdAT"));
    }

    #[test]
    fn drops_text_and_exif_even_after_idat() {
        use std::io::Write as _;
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&crate::privacy::media::icc::sample_profile()).unwrap();
        let iccp = [&b"Marker-X1 display\0\0"[..], &z.finish().unwrap()].concat();
        let mut png = SIGNATURE.to_vec();
        for c in [
            chunk(b"IHDR", &[0; 13]),
            chunk(b"iCCP", &iccp),
            chunk(b"iTXt", b"XML:com.adobe.xmp\0GPS"),
            chunk(b"IDAT", b"pixels"),
            chunk(b"eXIf", b"MM\0*GPS"),
            chunk(b"IEND", b""),
        ] {
            png.extend_from_slice(&c);
        }
        png.extend_from_slice(b"trailer");
        let mut r = Report::default();
        let out = scrub(&png, &mut r).unwrap();
        assert!(!out.windows(3).any(|w| w == b"GPS"));
        assert!(out.windows(4).any(|w| w == b"iCCP"));
        assert!(out.windows(12).any(|w| w == b"ICC Profile\0"), "the profile kept, under a neutral name");
        assert!(!out.windows(9).any(|w| w == b"Marker-X1"));
        assert_eq!(r.removed.len(), 4, "{r:?}");
        let mut again = Report::default();
        assert_eq!(scrub(&out, &mut again).unwrap(), out);
        assert!(again.removed.is_empty(), "{again:?}");
        assert!(scrub(&png[..png.len() - 20], &mut Report::default()).is_err());
    }

    /// Red team pass 19, F1: an already clean profile was kept as sent, with whatever
    /// followed its zlib stream in the chunk (a marker, or a second stream holding a
    /// whole other profile). Every profile is written afresh; a chunk with bytes after
    /// its stream goes.
    #[test]
    fn a_profile_is_written_afresh_and_bytes_after_its_stream_go() {
        use std::io::Write as _;
        let mut clean = crate::privacy::media::icc::sample_profile();
        crate::privacy::media::icc::blank(&mut clean).unwrap();
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(&clean).unwrap();
        let stream = z.finish().unwrap();
        let image = |iccp: &[u8]| {
            [SIGNATURE, &chunk(b"IHDR", &[0, 0, 0, 1, 0, 0, 0, 1, 8, 2, 0, 0, 0]), &chunk(b"iCCP", iccp)[..]]
                .iter()
                .flat_map(|c| c.iter().copied())
                .chain(chunk(b"IDAT", b"pixels"))
                .chain(chunk(b"IEND", b""))
                .collect::<Vec<u8>>()
        };
        let sent = image(&[&b"ICC Profile\0\0"[..], &stream, b"LEAKMARK GPS 48.8584N"].concat());
        let out = scrub(&sent, &mut Report::default()).unwrap();
        assert!(!out.windows(8).any(|w| w == b"LEAKMARK") && !out.windows(4).any(|w| w == b"iCCP"));
        let out = scrub(&image(&[&b"ICC Profile\0\0"[..], &stream].concat()), &mut Report::default()).unwrap();
        let (_, data, crc_ok) = chunks(&out).into_iter().find(|(k, _, _)| k == b"iCCP").unwrap();
        assert!(crc_ok && data.starts_with(b"ICC Profile\0\0\x78\x01"), "stored afresh, not as sent");
        assert_eq!(zlib::inflate(&data[13..], MAX_ICC).unwrap(), clean);
    }

    /// Red team pass 8, P5: an RGB image's optional suggested `PLTE` was kept whole, 768
    /// bytes the sender chose (exiftool's `Palette`). A truecolour (types 2, 6) or
    /// greyscale image loses it; a palette image (type 3) keeps its own.
    #[test]
    fn only_a_palette_image_keeps_its_palette() {
        let marker = b"LEAKMARK GPS 48.8584N 2.2945E Pixel8Pro ";
        let image = |color_type: u8| {
            let header = [0, 0, 0, 1, 0, 0, 0, 1, 8, color_type, 0, 0, 0];
            [SIGNATURE, &chunk(b"IHDR", &header), &chunk(b"PLTE", &marker.repeat(6)[..240])[..]].concat()
        };
        for color_type in [0, 2, 4, 6] {
            let png = [image(color_type), chunk(b"IDAT", b"pixels"), chunk(b"IEND", b"")].concat();
            let mut r = Report::default();
            let out = scrub(&png, &mut r).unwrap();
            let kinds: Vec<[u8; 4]> = chunks(&out).into_iter().map(|(k, _, _)| k).collect();
            assert_eq!(kinds, [*b"IHDR", *b"IDAT", *b"IEND"], "colour type {color_type}: {r:?}");
        }
        let palette = [image(3), chunk(b"tRNS", &[0, 0x80]), chunk(b"IDAT", b"pixels"), chunk(b"IEND", b"")].concat();
        let out = scrub(&palette, &mut Report::default()).unwrap();
        let kept = chunks(&out);
        assert_eq!(kept[1].0, *b"PLTE", "a palette image draws with its palette");
        assert_eq!(kept[1].1, marker.repeat(6)[..240], "kept whole");
        assert_eq!(kept[2].0, *b"tRNS", "its transparency indexes the palette");
    }

    /// Red team pass 9, P8: a second `PLTE`, before or after `IDAT`, was kept (exiftool
    /// prints it, libpng refuses the file: "duplicate"); so was one after the image data.
    #[test]
    fn a_second_or_late_palette_is_refused() {
        let header = chunk(b"IHDR", &[0, 0, 0, 1, 0, 0, 0, 1, 8, 3, 0, 0, 0]);
        let plte = chunk(b"PLTE", &[1, 2, 3]);
        let (idat, iend) = (chunk(b"IDAT", b"pixels"), chunk(b"IEND", b""));
        let cases = [
            ([&plte, &plte, &idat].map(|c| c.to_vec()), "a second PLTE chunk"),
            ([&plte, &idat, &plte].map(|c| c.to_vec()), "a second PLTE chunk"),
            ([&idat, &plte, &idat].map(|c| c.to_vec()), "a PLTE chunk after the image data"),
        ];
        for (body, what) in cases {
            let png = [SIGNATURE.to_vec(), header.clone(), body.concat(), iend.clone()].concat();
            let err = scrub(&png, &mut Report::default()).unwrap_err();
            assert!(matches!(err, MediaError::Malformed { .. }) && err.to_string().contains(what), "{what}: {err}");
        }
        let once = [SIGNATURE.to_vec(), header, plte, idat, iend].concat();
        assert_eq!(chunks(&scrub(&once, &mut Report::default()).unwrap())[1].0, *b"PLTE");
    }

    /// Red team pass 9, P9: a palette longer than the bit depth indexes kept every entry,
    /// up to 765 bytes the sender picks (libpng cuts them off, exiftool prints them). The
    /// palette is cut to `1 << bit_depth` colours, and `tRNS` is checked against the cut.
    #[test]
    fn a_palette_is_cut_to_the_colours_its_bit_depth_indexes() {
        let contains = |out: &[u8], what: &[u8]| out.windows(what.len()).any(|w| w == what);
        let marker = b"LEAKMARK GPS 48.8584N 2.2945E Pixel8Pro ";
        let colours = [&[10, 20, 30, 40, 50, 60][..], &marker.repeat(6)[..234]].concat();
        let png = |bit_depth: u8, trns: usize| {
            let header = [0, 0, 0, 1, 0, 0, 0, 1, bit_depth, 3, 0, 0, 0];
            let mut file = [SIGNATURE, &chunk(b"IHDR", &header), &chunk(b"PLTE", &colours)[..]].concat();
            file.extend(chunk(b"tRNS", &vec![0x80; trns]));
            [file, chunk(b"IDAT", b"pixels"), chunk(b"IEND", b"")].concat()
        };
        for (bit_depth, kept) in [(1, 2), (2, 4), (4, 16), (8, 80)] {
            let mut r = Report::default();
            let out = scrub(&png(bit_depth, kept), &mut r).unwrap();
            let chunks = chunks(&out);
            assert_eq!(chunks[1].0, *b"PLTE");
            assert_eq!(chunks[1].1, colours[..kept * 3], "bit depth {bit_depth}: the first colours stay: {r:?}");
            assert_eq!(chunks[2].0, *b"tRNS", "one alpha per kept colour: {r:?}");
            if bit_depth < 8 {
                assert!(!contains(&out, &colours[kept * 3..]), "bit depth {bit_depth}: {r:?}");
                assert!(bit_depth == 4 || !contains(&out, marker), "bit depth {bit_depth}: {r:?}");
                let out = scrub(&png(bit_depth, kept + 1), &mut Report::default()).unwrap();
                assert!(!contains(&out, b"tRNS"), "more alphas than kept colours: bit depth {bit_depth}");
            }
        }
    }
}
