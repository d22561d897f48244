//! The `CodecPrivate` of Xiph-style tracks, which carries tags of its own: an `A_VORBIS`
//! or `V_THEORA` track's three headers (Xiph-laced) include a comment header
//! (`LOCATION=`, `DATE=`, the encoder), and an `A_FLAC` track's metadata blocks include
//! `VORBIS_COMMENT`, `PICTURE` (cover art, with its own EXIF), `APPLICATION` and
//! `CUESHEET`. Rewritten in place at the same length: the comment header becomes one
//! with no comments and a zeroed vendor string, each FLAC block but `STREAMINFO` and
//! `SEEKTABLE` a zeroed `PADDING` block. A record that cannot be read is refused.

/// The bytes to write over a `CodecPrivate` record (same length), or `None` when it is
/// already clean. `Err(why)` when it cannot be read with certainty.
pub(super) fn scrub(codec_id: &str, record: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut out = record.to_vec();
    match codec_id {
        "A_VORBIS" => xiph(&mut out, b"\x03vorbis", true)?,
        "V_THEORA" => xiph(&mut out, b"\x81theora", false)?,
        "A_FLAC" => flac(&mut out)?,
        _ => return Ok(None),
    }
    Ok((out != record).then_some(out))
}

/// Three Xiph-laced headers; the second is the comment header (`marker`, a vendor
/// string, a count of comments, each a length and text; Vorbis ends with a framing bit).
fn xiph(r: &mut [u8], marker: &[u8; 7], framing: bool) -> Result<(), String> {
    let bad = |what: &str| format!("Xiph CodecPrivate ({}): {what}", String::from_utf8_lossy(&marker[1..]));
    if r.first() != Some(&2) {
        return Err(bad("not three laced headers"));
    }
    let mut at = 1;
    let mut sizes = [0usize; 2];
    for size in &mut sizes {
        loop {
            let b = *r.get(at).ok_or_else(|| bad("ends in its lace sizes"))?;
            at += 1;
            *size += usize::from(b);
            if b != 255 {
                break;
            }
        }
    }
    let comment = at + sizes[0];
    let len = sizes[1];
    let tail = 4 + usize::from(framing);
    if comment + len > r.len() || len < 11 + tail || r.get(comment..comment + 7) != Some(marker) {
        return Err(bad("no comment header where the lacing puts it"));
    }
    let c = &mut r[comment..comment + len];
    c[7..11].copy_from_slice(&((len - 11 - tail) as u32).to_le_bytes());
    c[11..].fill(0);
    if framing {
        c[len - 1] = 1;
    }
    Ok(())
}

/// `fLaC` and metadata blocks (a 4-byte header: last flag and type, 24-bit length).
fn flac(r: &mut [u8]) -> Result<(), String> {
    let bad = |what: &str| format!("A_FLAC CodecPrivate: {what}");
    if !r.starts_with(b"fLaC") {
        return Err(bad("no fLaC marker"));
    }
    let mut at = 4;
    while at < r.len() {
        let head = r.get(at..at + 4).ok_or_else(|| bad("ends inside a block header"))?;
        let (last, kind) = (head[0] & 0x80, head[0] & 0x7F);
        let len = usize::from(head[1]) << 16 | usize::from(head[2]) << 8 | usize::from(head[3]);
        let end = at + 4 + len;
        if end > r.len() {
            return Err(bad("a block runs past the record"));
        }
        if !matches!(kind, 0 | 3) {
            r[at] = last | 1;
            r[at + 4..end].fill(0);
        }
        at = end;
        if last != 0 {
            r[at..].fill(0);
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vorbis_comments_and_flac_tag_blocks_are_emptied_in_place() {
        let id = [&b"\x01vorbis"[..], &[0; 23]].concat();
        let comment = [
            &b"\x03vorbis"[..],
            &4u32.to_le_bytes(),
            b"Lavc",
            &1u32.to_le_bytes(),
            &17u32.to_le_bytes(),
            b"LOCATION=+48.85+2",
            &[1],
        ]
        .concat();
        let record = [&[2, id.len() as u8, comment.len() as u8][..], &id, &comment, b"\x05vorbis-setup"].concat();
        let out = scrub("A_VORBIS", &record).unwrap().unwrap();
        assert_eq!(out.len(), record.len());
        assert!(!out.windows(8).any(|w| w == b"LOCATION") && !out.windows(4).any(|w| w == b"Lavc"));
        assert!(out.ends_with(b"\x05vorbis-setup") && out[3..3 + id.len()] == id[..]);
        assert_eq!(scrub("A_VORBIS", &out).unwrap(), None, "a second pass changes nothing");

        let block = |last: bool, kind: u8, body: &[u8]| {
            [&[u8::from(last) << 7 | kind, 0, 0, body.len() as u8][..], body].concat()
        };
        let record = [
            &b"fLaC"[..],
            &block(false, 0, &[7; 34]),
            &block(false, 4, b"\x04\0\0\0Lavf"),
            &block(true, 6, b"JPEG EXIF"),
        ]
        .concat();
        let out = scrub("A_FLAC", &record).unwrap().unwrap();
        assert!(!out.windows(4).any(|w| w == b"Lavf") && !out.windows(4).any(|w| w == b"EXIF"));
        assert_eq!(&out[4..42], &block(false, 0, &[7; 34])[..], "STREAMINFO stays");
        assert_eq!(scrub("A_FLAC", &out).unwrap(), None);
        assert!(scrub("A_FLAC", b"fLaC\x00\x00\x00\x22").is_err());
        assert_eq!(scrub("A_OPUS", b"OpusHead").unwrap(), None);
    }
}
