//! WAV: a RIFF chunk walk keeping only what plays the sound.
//!
//! Kept: `fmt `, `data`, `fact`, `cue `, `smpl`, `inst`. Dropped: `LIST` (INFO tags),
//! `id3 `/`ID3 `, `bext` (broadcast originator and time), `iXML`, `axml`, `_PMX` (XMP),
//! and every other chunk. A `data` chunk whose size runs past the end (streamed WAVs
//! written before their length was known) is clamped to the file; any other overrun
//! is refused. The RIFF size is rewritten.

use super::{Format, MediaError, Report, fourcc, le32};

const F: Format = Format::Wav;
const KEEP: &[&[u8; 4]] = &[b"fmt ", b"data", b"fact", b"cue ", b"smpl", b"inst"];

pub fn scrub(input: &[u8], report: &mut Report) -> Result<Vec<u8>, MediaError> {
    if input.get(8..12) != Some(b"WAVE") {
        return Err(MediaError::malformed(F, "not a RIFF WAVE file"));
    }
    let mut out = Vec::with_capacity(input.len());
    out.extend_from_slice(b"RIFF\0\0\0\0WAVE");
    let mut pos = 12;
    let (mut fmt, mut data) = (false, false);
    while pos + 8 <= input.len() {
        let kind = &input[pos..pos + 4];
        let len = le32(input, pos + 4).unwrap_or(0) as usize;
        let avail = input.len() - pos - 8;
        let (len, clamped) = if len > avail && kind == b"data" { (avail, true) } else { (len, false) };
        let padded = len + (len & 1);
        let chunk_end = (pos + 8 + padded).min(input.len());
        if pos + 8 + len > input.len() {
            return Err(MediaError::truncated(F, format!("chunk {} runs past the end", fourcc(kind))));
        }
        if KEEP.iter().any(|k| k.as_slice() == kind) {
            fmt |= kind == b"fmt ";
            data |= kind == b"data";
            out.extend_from_slice(kind);
            out.extend_from_slice(&(len as u32).to_le_bytes());
            out.extend_from_slice(&input[pos + 8..pos + 8 + len]);
            if len & 1 == 1 {
                out.push(0);
            }
            if clamped {
                report.kept.push("data chunk size fixed to the file's length".into());
            }
        } else {
            report.remove(format!("{} chunk", fourcc(kind).trim_end()), (chunk_end - pos) as u64);
        }
        pos = chunk_end;
    }
    if pos < input.len() {
        report.remove("trailing bytes after the last chunk", (input.len() - pos) as u64);
    }
    if !fmt || !data {
        return Err(MediaError::malformed(F, "no fmt or data chunk"));
    }
    let size = u32::try_from(out.len() - 8).map_err(|_| MediaError::malformed(F, "too large for RIFF"))?;
    out[4..8].copy_from_slice(&size.to_le_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_list_and_id3() {
        let mut body = b"WAVE".to_vec();
        for (k, d) in [
            (b"fmt ", &[1u8; 16][..]),
            (b"LIST", b"INFOICMT\x05\0\0\0Paris\0"),
            (b"data", &[0, 1, 2, 3]),
            (b"id3 ", b"ID3..."),
        ] {
            body.extend_from_slice(k);
            body.extend_from_slice(&(d.len() as u32).to_le_bytes());
            body.extend_from_slice(d);
            if d.len() % 2 == 1 {
                body.push(0);
            }
        }
        let mut wav = b"RIFF".to_vec();
        wav.extend_from_slice(&(body.len() as u32).to_le_bytes());
        wav.extend(body);
        let mut r = Report::default();
        let out = scrub(&wav, &mut r).unwrap();
        assert!(!out.windows(5).any(|w| w == b"Paris"));
        assert_eq!(r.removed.len(), 2);
        assert_eq!(le32(&out, 4).unwrap() as usize, out.len() - 8);
    }
}
