//! PNG: a chunk walk that keeps what draws the image and drops every text chunk.
//!
//! Location hides in `eXIf` (even after IDAT), `iTXt` XMP, and `tEXt`/`zTXt` "Raw
//! profile" chunks that ImageMagick fills with hex-encoded Exif and IPTC; `tIME` dates
//! the edit. Rather than chase names, the walker keeps an allow-list of ancillary chunks
//! that only describe pixels (colour, transparency, animation) and drops every other
//! ancillary chunk. An unknown *critical* chunk (uppercase first letter) is refused: a
//! decoder could not draw the image either. Nothing after IEND is kept.

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
            _ if KEEP.iter().any(|k| k.as_slice() == kind) => out.extend_from_slice(whole),
            _ => report.remove(chunk_name(kind, whole), whole.len() as u64),
        }
        pos = end;
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

    #[test]
    fn drops_text_and_exif_even_after_idat() {
        let mut png = SIGNATURE.to_vec();
        for c in [
            chunk(b"IHDR", &[0; 13]),
            chunk(b"iCCP", b"icc"),
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
        assert_eq!(r.removed.len(), 3, "{r:?}");
        assert!(scrub(&png[..png.len() - 20], &mut Report::default()).is_err());
    }
}
