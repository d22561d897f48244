//! FLAC: metadata blocks are dropped except those a decoder needs.
//!
//! Kept: STREAMINFO and SEEKTABLE. Dropped: VORBIS_COMMENT (tags, anything a recorder
//! writes), PICTURE (cover art is itself a photo with its own metadata), APPLICATION,
//! CUESHEET, PADDING and unknown blocks. An ID3v2 tag some taggers put in front and an
//! ID3v1 tag at the end are dropped too. The audio frames after the blocks are copied.

use super::{Format, MediaError, Report, mp3};

const F: Format = Format::Flac;

pub fn scrub(input: &[u8], report: &mut Report) -> Result<Vec<u8>, MediaError> {
    let body = mp3::after_id3(input).ok_or_else(|| MediaError::truncated(F, "the leading ID3 tag is cut short"))?;
    if body.len() != input.len() {
        report.remove("ID3v2 tag before the FLAC stream", (input.len() - body.len()) as u64);
    }
    if !body.starts_with(b"fLaC") {
        return Err(MediaError::malformed(F, "no fLaC signature"));
    }
    let mut end = body.len();
    if end >= 128 && body[end - 128..].starts_with(b"TAG") {
        report.remove("ID3v1 tag", 128);
        end -= 128;
    }
    let mut kept: Vec<&[u8]> = Vec::new();
    let mut pos = 4;
    loop {
        let Some(h) = body.get(pos..pos + 4) else {
            return Err(MediaError::truncated(F, "the file ends inside the metadata blocks"));
        };
        let last = h[0] & 0x80 != 0;
        let kind = h[0] & 0x7F;
        let len = (usize::from(h[1]) << 16) | (usize::from(h[2]) << 8) | usize::from(h[3]);
        let block_end = pos + 4 + len;
        let Some(block) = body.get(pos..block_end).filter(|_| block_end <= end) else {
            return Err(MediaError::truncated(F, "a metadata block runs past the end"));
        };
        match kind {
            0 if kept.is_empty() => kept.push(block),
            0 => return Err(MediaError::malformed(F, "a second STREAMINFO block")),
            _ if kept.is_empty() => return Err(MediaError::malformed(F, "the first block is not STREAMINFO")),
            3 => kept.push(block),
            127 => return Err(MediaError::malformed(F, "invalid metadata block type 127")),
            k => report.remove(block_name(k), block.len() as u64),
        }
        pos = block_end;
        if last {
            break;
        }
    }
    let frames = &body[pos..end];
    let starts_with_frame = frames.len() >= 2 && frames[0] == 0xFF && frames[1] & 0xFE == 0xF8;
    if !frames.is_empty() && !starts_with_frame {
        return Err(MediaError::malformed(F, "no audio frame after the metadata blocks"));
    }
    let mut out = Vec::with_capacity(4 + frames.len() + 64);
    out.extend_from_slice(b"fLaC");
    let n = kept.len();
    for (i, block) in kept.into_iter().enumerate() {
        let mut header = block[0] & 0x7F;
        if i + 1 == n {
            header |= 0x80;
        }
        out.push(header);
        out.extend_from_slice(&block[1..]);
    }
    out.extend_from_slice(frames);
    // An ID3v1 tag is found from the end backwards, so output that happens to end in a
    // "TAG" block would be cut on a second reading: refuse rather than guess.
    if out.len() >= 128 && out[out.len() - 128..].starts_with(b"TAG") {
        return Err(MediaError::malformed(F, "the audio ends in bytes that read as an ID3v1 tag"));
    }
    Ok(out)
}

fn block_name(kind: u8) -> String {
    match kind {
        1 => "PADDING block".into(),
        2 => "APPLICATION block".into(),
        4 => "VORBIS_COMMENT block (tags)".into(),
        5 => "CUESHEET block".into(),
        6 => "PICTURE block (cover art)".into(),
        k => format!("metadata block type {k}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_comments_and_pictures() {
        let mut f = b"fLaC".to_vec();
        f.extend_from_slice(&[0x00, 0, 0, 34]);
        f.extend_from_slice(&[7; 34]);
        f.extend_from_slice(&[0x04, 0, 0, 9]);
        f.extend_from_slice(b"LOCATION=");
        f.extend_from_slice(&[0x86, 0, 0, 3]);
        f.extend_from_slice(b"jpg");
        f.extend_from_slice(&[0xFF, 0xF8, 1, 2, 3]);
        let mut r = Report::default();
        let out = scrub(&f, &mut r).unwrap();
        assert_eq!(out[4], 0x80, "STREAMINFO becomes the last block");
        assert!(!out.windows(8).any(|w| w == b"LOCATION"));
        assert!(out.ends_with(&[0xFF, 0xF8, 1, 2, 3]));
        assert!(scrub(&f[..20], &mut Report::default()).is_err());
    }

    /// Found by `scripts/fuzz`: output whose last 128 bytes start with "TAG" would lose
    /// them to a second reading. It must be refused, or scrub to a fixed point.
    #[test]
    fn fuzz_finding_output_ending_in_a_fake_id3v1_tag() {
        let input = include_bytes!("testdata/fuzz-flac-ends-in-a-fake-id3v1-tag.flac");
        if let Ok(out) = scrub(input, &mut Report::default()) {
            assert_eq!(scrub(&out, &mut Report::default()).unwrap(), out);
        }
    }
}
