//! MP3 (and ADTS AAC): tags around the audio frames are dropped, the frames kept.
//!
//! Mastodon's own audio path writes a video's location into ID3 `TXXX` frames, so ID3
//! is exactly where location ends up. Dropped: every ID3v2 tag (at the start, appended
//! with a `3DI` footer at the end, or found between frames), ID3v1 (`TAG`, and the
//! enhanced `TAG+`), APEv2 and Lyrics3v2 at the end. The rest must be a clean run of
//! MPEG audio (or ADTS) frames; losing sync means the file is refused, because bytes
//! pavise cannot account for could carry anything.

use super::{Format, MediaError, Report, be32};

const F: Format = Format::Mp3;

/// Total length of an ID3v2 tag starting at `b[0]`, if it is one.
fn id3v2_len(b: &[u8]) -> Option<usize> {
    if !b.starts_with(b"ID3") {
        return None;
    }
    let flags = *b.get(5)?;
    let s = b.get(6..10)?;
    if s.iter().any(|&x| x & 0x80 != 0) {
        return None;
    }
    let size = (usize::from(s[0]) << 21) | (usize::from(s[1]) << 14) | (usize::from(s[2]) << 7) | usize::from(s[3]);
    Some(10 + size + if flags & 0x10 != 0 { 10 } else { 0 })
}

/// What follows the leading ID3v2 tag(s).
pub(crate) fn after_id3(b: &[u8]) -> Option<&[u8]> {
    let mut rest = b;
    for _ in 0..16 {
        match id3v2_len(rest) {
            Some(n) => rest = rest.get(n..)?,
            None => return Some(rest),
        }
    }
    Some(rest)
}

/// Length of the MPEG audio or ADTS frame starting at `b[0]`, if its header is valid.
fn frame_len(b: &[u8]) -> Option<usize> {
    let h = be32(b, 0)?;
    if h >> 21 != 0x7FF {
        return None;
    }
    let version = (h >> 19) & 3; // 0: MPEG 2.5, 1: reserved, 2: MPEG 2, 3: MPEG 1
    let layer = (h >> 17) & 3; // 1: III, 2: II, 3: I; 0: ADTS (AAC)
    if layer == 0 {
        // ADTS: 13-bit frame length including the header.
        // ADTS has a 12-bit sync word, so the top version bit must be set too.
        if version < 2 {
            return None;
        }
        let len = ((h & 0x3) << 11) as usize | (usize::from(*b.get(4)?) << 3) | (usize::from(*b.get(5)?) >> 5);
        return (len >= 7).then_some(len);
    }
    if version == 1 {
        return None;
    }
    let bitrate_idx = ((h >> 12) & 0xF) as usize;
    let rate_idx = ((h >> 10) & 3) as usize;
    let padding = ((h >> 9) & 1) as usize;
    if bitrate_idx == 0 || bitrate_idx == 15 || rate_idx == 3 {
        return None;
    }
    const V1: [[u32; 15]; 3] = [
        [0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448],
        [0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384],
        [0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320],
    ];
    const V2: [[u32; 15]; 2] = [
        [0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256],
        [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160],
    ];
    let kbps = match (version, layer) {
        (3, 3) => V1[0][bitrate_idx],
        (3, 2) => V1[1][bitrate_idx],
        (3, _) => V1[2][bitrate_idx],
        (_, 3) => V2[0][bitrate_idx],
        _ => V2[1][bitrate_idx],
    } as usize;
    let rate = [44100, 48000, 32000][rate_idx]
        / match version {
            3 => 1,
            2 => 2,
            _ => 4,
        };
    let len = match (version, layer) {
        (_, 3) => (12 * kbps * 1000 / rate + padding) * 4,
        (3, _) | (_, 2) => 144 * kbps * 1000 / rate + padding,
        _ => 72 * kbps * 1000 / rate + padding,
    };
    (len >= 4).then_some(len)
}

/// Whether `b` starts with a valid MPEG audio or ADTS frame header.
pub(crate) fn is_frame_start(b: &[u8]) -> bool {
    frame_len(b).is_some()
}

pub fn scrub(input: &[u8], report: &mut Report) -> Result<Vec<u8>, MediaError> {
    let mut start = 0;
    while let Some(n) = id3v2_len(&input[start..]) {
        report.remove("ID3v2 tag", n.min(input.len() - start) as u64);
        start = (start + n).min(input.len());
    }
    let end = strip_trailing_tags(input, start, report);
    let mut out = Vec::with_capacity(end - start);
    let mut pos = start;
    let mut frames = 0usize;
    while pos < end {
        let rest = &input[pos..end];
        if let Some(n) = id3v2_len(rest) {
            report.remove("ID3v2 tag between frames", n.min(rest.len()) as u64);
            pos += n.min(rest.len());
            continue;
        }
        match frame_len(rest) {
            Some(n) if n <= rest.len() => {
                out.extend_from_slice(&rest[..n]);
                pos += n;
                frames += 1;
            }
            // A last frame cut short is common (recordings stopped mid-frame); keep it.
            Some(_) if frames > 0 => {
                out.extend_from_slice(rest);
                pos = end;
            }
            _ if frames > 0 && rest.iter().all(|&b| b == 0) => {
                report.remove("zero padding after the last frame", rest.len() as u64);
                pos = end;
            }
            _ => {
                return Err(if frames == 0 {
                    MediaError::malformed(F, "no audio frame where the audio should start")
                } else {
                    MediaError::malformed(F, format!("lost frame sync at byte {pos}"))
                });
            }
        }
    }
    if frames == 0 {
        return Err(MediaError::malformed(F, "no audio frames"));
    }
    // Tags are found from the end of the file backwards, so audio that happens to end in
    // bytes shaped like a tag would be cut on a second reading: refuse rather than guess.
    if strip_trailing_tags(&out, 0, &mut Report::default()) != out.len() {
        return Err(MediaError::malformed(F, "the audio ends in bytes that read as a tag"));
    }
    Ok(out)
}

/// The end of the audio once ID3v1, APE, Lyrics3 and appended ID3v2 tags are cut off.
fn strip_trailing_tags(input: &[u8], start: usize, report: &mut Report) -> usize {
    let mut end = input.len();
    for _ in 0..8 {
        let b = &input[start..end];
        let len = b.len();
        if len >= 128 && b[len - 128..].starts_with(b"TAG") {
            report.remove("ID3v1 tag", 128);
            end -= 128;
            if end - start >= 227 && input[end - 227..].starts_with(b"TAG+") {
                report.remove("ID3v1 enhanced tag", 227);
                end -= 227;
            }
            continue;
        }
        if len >= 32 && b[len - 32..].starts_with(b"APETAGEX") {
            let size = super::le32(b, len - 20).unwrap_or(0) as usize;
            let flags = super::le32(b, len - 12).unwrap_or(0);
            let total = size + if flags & 0x8000_0000 != 0 { 32 } else { 0 };
            if total >= 32 && total <= len {
                report.remove("APEv2 tag", total as u64);
                end -= total;
                continue;
            }
        }
        if len >= 15 && b.ends_with(b"LYRICS200") {
            let digits = std::str::from_utf8(&b[len - 15..len - 9]).ok().and_then(|s| s.parse::<usize>().ok());
            if let Some(total) = digits.map(|d| d + 15).filter(|&t| t <= len) {
                report.remove("Lyrics3v2 tag", total as u64);
                end -= total;
                continue;
            }
        }
        if len >= 10 && b[len - 10..].starts_with(b"3DI") {
            let footer = &b[len - 10..];
            let s = &footer[6..10];
            if s.iter().all(|&x| x & 0x80 == 0) {
                let size = (usize::from(s[0]) << 21)
                    | (usize::from(s[1]) << 14)
                    | (usize::from(s[2]) << 7)
                    | usize::from(s[3]);
                let total = size + 20;
                if total <= len {
                    report.remove("appended ID3v2 tag", total as u64);
                    end -= total;
                    continue;
                }
            }
        }
        break;
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_id3v2_and_v1_keeps_frames() {
        // MPEG-1 Layer III, 128 kbps, 44.1 kHz, no padding: 417-byte frames.
        let mut frame = vec![0xFF, 0xFB, 0x90, 0x00];
        frame.resize(417, 0x55);
        let mut tag = b"ID3\x03\x00\x00\x00\x00\x00\x12".to_vec();
        tag.extend_from_slice(b"TXXX\0\0\0\x0a\0\0location");
        let mut file = tag.clone();
        file.extend(frame.iter().chain(frame.iter()));
        let mut v1 = b"TAG".to_vec();
        v1.resize(128, b'x');
        file.extend(v1);
        let mut r = Report::default();
        let out = scrub(&file, &mut r).unwrap();
        assert_eq!(out.len(), 834);
        assert_eq!(r.removed.len(), 2, "{r:?}");
        file.truncate(tag.len() + 417 + 300);
        assert!(scrub(&file, &mut Report::default()).is_ok(), "a short last frame is kept");
        assert!(scrub(b"ID3\x03\0\0\0\0\0\x01xgarbage", &mut Report::default()).is_err());
    }

    /// Found by `scripts/fuzz`: audio whose last bytes look like an appended ID3v2 footer
    /// ("3DI"). It must be refused, or scrub to a fixed point; never half-read.
    #[test]
    fn fuzz_finding_audio_ending_in_a_fake_tag() {
        let input = include_bytes!("testdata/fuzz-mp3-ends-in-a-fake-id3-footer.mp3");
        if let Ok(out) = scrub(input, &mut Report::default()) {
            assert_eq!(scrub(&out, &mut Report::default()).unwrap(), out);
        }
    }
}
