//! PNG: a chunk walk that keeps what draws the image and drops every text chunk.
//!
//! Location hides in `eXIf` (even after IDAT), `iTXt` XMP, and `tEXt`/`zTXt` "Raw
//! profile" chunks that ImageMagick fills with hex-encoded Exif and IPTC; `tIME` dates
//! the edit. Rather than chase names, the walker keeps an allow-list of ancillary chunks
//! that only describe pixels (colour, transparency, animation) and drops every other
//! ancillary chunk. An unknown *critical* chunk (uppercase first letter) is refused: a
//! decoder could not draw the image either. Nothing after IEND is kept. An `iCCP` colour
//! profile is inflated, stripped of everything that is not colour ([`super::icc`]),
//! and deflated again under the keyword `ICC Profile` (the keyword is free text too); one
//! that does not inflate or parse is dropped.

use super::{Format, MediaError, Report, be32, fourcc};

const F: Format = Format::Png;
const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// Ancillary chunks that describe pixels, not the photo's circumstances.
const KEEP: &[&[u8; 4]] = &[
    b"tRNS", b"cHRM", b"gAMA", b"iCCP", b"sBIT", b"sRGB", b"cICP", b"mDCV", b"mDCv", b"cLLI", b"cLLi", b"bKGD",
    b"hIST", b"pHYs", b"sPLT", b"acTL", b"fcTL", b"fdAT",
];

pub fn scrub(input: &[u8], report: &mut Report) -> Result<Vec<u8>, MediaError> {
    if !input.starts_with(SIGNATURE) {
        return Err(MediaError::malformed(F, "bad signature"));
    }
    let mut out = Vec::with_capacity(input.len());
    out.extend_from_slice(SIGNATURE);
    let mut pos = SIGNATURE.len();
    let mut first = true;
    let mut saw_idat = false;
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
        match kind {
            b"IHDR" | b"PLTE" => out.extend_from_slice(whole),
            b"IDAT" => {
                saw_idat = true;
                out.extend_from_slice(whole);
            }
            b"IEND" => {
                if !saw_idat {
                    return Err(MediaError::malformed(F, "no image data (IDAT) before IEND"));
                }
                out.extend_from_slice(whole);
                if end < input.len() {
                    report.remove("data after IEND", (input.len() - end) as u64);
                }
                return Ok(out);
            }
            _ if critical => {
                return Err(MediaError::malformed(F, format!("unknown critical chunk {}", fourcc(kind))));
            }
            b"iCCP" => keep_iccp(whole, &mut out, report),
            _ if KEEP.iter().any(|k| k.as_slice() == kind) => out.extend_from_slice(whole),
            _ => report.remove(chunk_name(kind, whole), whole.len() as u64),
        }
        pos = end;
    }
}

/// Profiles larger than this are no colour profile a photo needs.
const MAX_ICC: u64 = 4 << 20;
const ICC_KEYWORD: &[u8] = b"ICC Profile";

/// `iCCP`: keyword, NUL, compression method 0, a zlib stream of the profile.
fn keep_iccp(whole: &[u8], out: &mut Vec<u8>, report: &mut Report) {
    use std::io::{Read as _, Write as _};
    let data = &whole[8..whole.len() - 4];
    let Some(nul) = data.iter().position(|&b| b == 0) else {
        return report.remove("iCCP chunk (unreadable)", whole.len() as u64);
    };
    let (keyword, rest) = (&data[..nul], &data[nul + 1..]);
    if rest.first() != Some(&0) {
        return report.remove("iCCP chunk (unknown compression)", whole.len() as u64);
    }
    let mut profile = Vec::new();
    let inflated = flate2::read::ZlibDecoder::new(&rest[1..]).take(MAX_ICC + 1).read_to_end(&mut profile);
    if inflated.is_err() || profile.len() as u64 > MAX_ICC {
        return report.remove("iCCP chunk (does not inflate)", whole.len() as u64);
    }
    let changed = match super::icc::blank(&mut profile) {
        Ok(n) => n,
        Err(e) => return report.remove(format!("iCCP chunk ({e})"), whole.len() as u64),
    };
    if changed == 0 && keyword == ICC_KEYWORD {
        out.extend_from_slice(whole);
        return;
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    if z.write_all(&profile).is_err() {
        return report.remove("iCCP chunk (does not deflate)", whole.len() as u64);
    }
    let Ok(deflated) = z.finish() else {
        return report.remove("iCCP chunk (does not deflate)", whole.len() as u64);
    };
    let mut body = b"iCCP".to_vec();
    body.extend_from_slice(ICC_KEYWORD);
    body.extend_from_slice(&[0, 0]);
    body.extend_from_slice(&deflated);
    let mut crc = flate2::Crc::new();
    crc.update(&body);
    out.extend_from_slice(&((body.len() - 4) as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc.sum().to_be_bytes());
    report.remove("iCCP profile name, device, description and text tags", changed.max(1));
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
}
