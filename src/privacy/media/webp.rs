//! WebP: a RIFF chunk walk. WebP was the format every anchor skipped (Pleroma, Akkoma,
//! mat2 on bookworm), and every WebP in the corpus carries EXIF GPS.
//!
//! Kept: the bitstreams (`VP8 `, `VP8L`, `ALPH`), `VP8X`, `ICCP`, and animation (`ANIM`,
//! `ANMF`). Dropped: `EXIF`, `XMP `, and any chunk the spec does not define (readers
//! ignore them, so they could only carry something). The VP8X flags that announce EXIF
//! and XMP are cleared and the RIFF size rewritten; bytes past the RIFF size are dropped.

use super::{Format, MediaError, Report, fourcc, le32};

const F: Format = Format::Webp;
const KEEP: &[&[u8; 4]] = &[b"VP8 ", b"VP8L", b"VP8X", b"ALPH", b"ANIM", b"ANMF", b"ICCP"];
/// VP8X flag bits for "has EXIF" and "has XMP".
const EXIF_FLAG: u8 = 0x08;
const XMP_FLAG: u8 = 0x04;
const ICC_FLAG: u8 = 0x20;

pub fn scrub(input: &[u8], report: &mut Report) -> Result<Vec<u8>, MediaError> {
    let riff = le32(input, 4).ok_or_else(|| MediaError::truncated(F, "no RIFF header"))? as usize;
    if input.get(8..12) != Some(b"WEBP") {
        return Err(MediaError::malformed(F, "not a WEBP RIFF form"));
    }
    let end = riff.checked_add(8).filter(|&e| e <= input.len()).ok_or_else(|| {
        MediaError::truncated(F, format!("RIFF says {riff} bytes, the file has {}", input.len().saturating_sub(8)))
    })?;
    if end < input.len() {
        report.remove("data after the RIFF form", (input.len() - end) as u64);
    }
    let mut out = Vec::with_capacity(end);
    out.extend_from_slice(b"RIFF\0\0\0\0WEBP");
    let mut pos = 12;
    let mut vp8x_at = None;
    let mut saw_bitstream = false;
    let mut saw_icc = false;
    while pos < end {
        let Some(kind) = input.get(pos..pos + 4) else {
            return Err(MediaError::truncated(F, "the file ends inside a chunk header"));
        };
        let len = le32(input, pos + 4).ok_or_else(|| MediaError::truncated(F, "the file ends inside a chunk header"))?
            as usize;
        let padded = len + (len & 1);
        let chunk_end = pos + 8 + padded;
        // A missing pad byte on the very last chunk is a common writer slip; tolerate it.
        let chunk_end = if chunk_end == end + 1 && len & 1 == 1 { end } else { chunk_end };
        if chunk_end > end {
            return Err(MediaError::truncated(F, format!("chunk {} runs past the end", fourcc(kind))));
        }
        let whole = &input[pos..chunk_end];
        if kind == b"ICCP" {
            // The profile keeps its colour and loses the device (super::icc), in place.
            let mut chunk = whole.to_vec();
            let end_of_data = (8 + len).min(chunk.len());
            match super::icc::blank(&mut chunk[8..end_of_data]) {
                Ok(changed) => {
                    if changed > 0 {
                        report.remove("ICCP device, description and text tags", changed);
                    }
                    out.extend_from_slice(&chunk);
                    if chunk.len() & 1 == 1 {
                        out.push(0);
                    }
                    saw_icc = true;
                }
                Err(e) => report.remove(format!("ICCP chunk ({e})"), whole.len() as u64),
            }
        } else if KEEP.iter().any(|k| k.as_slice() == kind) {
            if kind == b"VP8X" {
                if len < 10 || vp8x_at.is_some() {
                    return Err(MediaError::malformed(F, "bad VP8X chunk"));
                }
                vp8x_at = Some(out.len());
            }
            if matches!(kind, b"VP8 " | b"VP8L" | b"ANMF") {
                saw_bitstream = true;
            }
            if kind == b"ANMF" {
                keep_frame(&whole[8..8 + len], &mut out, report)?;
                pos = chunk_end;
                continue;
            }
            out.extend_from_slice(whole);
            if whole.len() & 1 == 1 {
                out.push(0);
            }
        } else {
            report.remove(format!("{} chunk", fourcc(kind).trim_end()), whole.len() as u64);
        }
        pos = chunk_end;
    }
    if !saw_bitstream {
        return Err(MediaError::malformed(F, "no image data"));
    }
    if let Some(at) = vp8x_at {
        let flags = &mut out[at + 8];
        let drop = EXIF_FLAG | XMP_FLAG | if saw_icc { 0 } else { ICC_FLAG };
        if *flags & drop != 0 {
            *flags &= !drop;
            report.kept.push("VP8X with its EXIF/XMP (and dropped ICC) flags cleared".into());
        }
    }
    let size = u32::try_from(out.len() - 8).map_err(|_| MediaError::malformed(F, "too large"))?;
    out[4..8].copy_from_slice(&size.to_le_bytes());
    Ok(out)
}

/// An animation frame: its 16-byte header, then only the sub-chunks that draw it
/// (`ALPH`, `VP8 `, `VP8L`); anything else riding inside a frame is dropped.
fn keep_frame(data: &[u8], out: &mut Vec<u8>, report: &mut Report) -> Result<(), MediaError> {
    let header = data.get(..16).ok_or_else(|| MediaError::truncated(F, "an ANMF frame header"))?;
    let mut frame = header.to_vec();
    let mut pos = 16;
    let mut drew = false;
    while pos < data.len() {
        let kind = data.get(pos..pos + 4).ok_or_else(|| MediaError::truncated(F, "a frame's sub-chunk header"))?;
        let len = le32(data, pos + 4).ok_or_else(|| MediaError::truncated(F, "a frame's sub-chunk header"))? as usize;
        let end = pos.checked_add(8 + len + (len & 1)).ok_or_else(|| MediaError::malformed(F, "sub-chunk size"))?;
        let end = if end == data.len() + 1 && len & 1 == 1 { data.len() } else { end };
        let whole = data.get(pos..end).ok_or_else(|| MediaError::truncated(F, "a frame's sub-chunk runs past it"))?;
        if matches!(kind, b"ALPH" | b"VP8 " | b"VP8L") {
            drew |= kind != b"ALPH";
            frame.extend_from_slice(whole);
            if whole.len() & 1 == 1 {
                frame.push(0);
            }
        } else {
            report.remove(format!("{} chunk inside an animation frame", fourcc(kind).trim_end()), whole.len() as u64);
        }
        pos = end;
    }
    if !drew {
        return Err(MediaError::malformed(F, "an animation frame without image data"));
    }
    let size = u32::try_from(frame.len()).map_err(|_| MediaError::malformed(F, "too large"))?;
    out.extend_from_slice(b"ANMF");
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&frame);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let mut c = kind.to_vec();
        c.extend_from_slice(&(data.len() as u32).to_le_bytes());
        c.extend_from_slice(data);
        if data.len() % 2 == 1 {
            c.push(0);
        }
        c
    }

    #[test]
    fn drops_exif_and_xmp_and_clears_flags() {
        let mut body = b"WEBP".to_vec();
        body.extend(chunk(b"VP8X", &[0x2C, 0, 0, 0, 1, 0, 0, 1, 0, 0]));
        body.extend(chunk(b"ICCP", &crate::privacy::media::icc::sample_profile()));
        body.extend(chunk(b"VP8 ", b"frame"));
        body.extend(chunk(b"EXIF", b"MM\0*GPS"));
        body.extend(chunk(b"XMP ", b"<x:xmpmeta>GPS"));
        let mut webp = b"RIFF".to_vec();
        webp.extend_from_slice(&(body.len() as u32).to_le_bytes());
        webp.extend(body);
        let mut r = Report::default();
        let out = scrub(&webp, &mut r).unwrap();
        assert!(!out.windows(3).any(|w| w == b"GPS"));
        assert!(!out.windows(9).any(|w| w == b"PaviseCam"), "the profile's device is gone");
        assert!(out.windows(4).any(|w| w == b"ICCP"));
        assert_eq!(out[20], 0x20, "only the ICC flag stays");
        assert_eq!(le32(&out, 4).unwrap() as usize, out.len() - 8);
        assert_eq!(r.removed.len(), 3, "{r:?}");
        assert!(scrub(&webp[..webp.len() - 3], &mut Report::default()).is_err());
    }

    #[test]
    fn animation_frames_keep_only_what_draws_them() {
        let mut frame = vec![0u8; 16];
        frame.extend(chunk(b"VP8 ", b"frame"));
        frame.extend(chunk(b"EXIF", b"48.8584 GPS"));
        let mut body = b"WEBP".to_vec();
        body.extend(chunk(b"VP8X", &[0x02, 0, 0, 0, 1, 0, 0, 1, 0, 0]));
        body.extend(chunk(b"ANIM", &[0; 6]));
        body.extend(chunk(b"ANMF", &frame));
        let mut webp = b"RIFF".to_vec();
        webp.extend_from_slice(&(body.len() as u32).to_le_bytes());
        webp.extend(body);
        let mut r = Report::default();
        let out = scrub(&webp, &mut r).unwrap();
        assert!(!out.windows(3).any(|w| w == b"GPS"));
        assert!(out.windows(5).any(|w| w == b"frame"));
        assert_eq!(r.removed.len(), 1, "{r:?}");
        let mut again = Report::default();
        assert_eq!(scrub(&out, &mut again).unwrap(), out);
        assert!(again.removed.is_empty());
    }
}
