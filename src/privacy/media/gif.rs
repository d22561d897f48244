//! GIF: a block walk. Comments and application extensions can carry anything (XMP in
//! `XMP DataXMP`, editor tags); only the looping extensions (`NETSCAPE2.0`,
//! `ANIMEXTS1.0`) are needed to play the animation, so every other application
//! extension and every comment is dropped. Image data, colour tables, graphic-control
//! and plain-text extensions are copied unchanged. Nothing after the trailer is kept.

use super::{Format, MediaError, Report};

const F: Format = Format::Gif;

pub fn scrub(input: &[u8], report: &mut Report) -> Result<Vec<u8>, MediaError> {
    let lsd = input.get(..13).ok_or_else(|| MediaError::truncated(F, "the header is incomplete"))?;
    let mut pos = 13 + color_table(lsd[10]);
    let head = input.get(..pos).ok_or_else(|| MediaError::truncated(F, "the global colour table is incomplete"))?;
    let mut out = Vec::with_capacity(input.len());
    out.extend_from_slice(head);
    let mut images = 0usize;
    loop {
        let Some(&introducer) = input.get(pos) else {
            if images > 0 {
                // The trailer byte alone is missing; the blocks before it are whole.
                out.push(0x3B);
                return Ok(out);
            }
            return Err(MediaError::truncated(F, "no image before the end of the file"));
        };
        match introducer {
            0x3B => {
                if images == 0 {
                    return Err(MediaError::malformed(F, "no image before the trailer"));
                }
                out.push(0x3B);
                if pos + 1 < input.len() {
                    report.remove("data after the GIF trailer", (input.len() - pos - 1) as u64);
                }
                return Ok(out);
            }
            0x2C => {
                let desc = input
                    .get(pos..pos + 10)
                    .ok_or_else(|| MediaError::truncated(F, "an image descriptor is incomplete"))?;
                let data_start = pos + 10 + color_table(desc[9]);
                // LZW minimum code size, then the data sub-blocks.
                if input.get(data_start).is_none() {
                    return Err(MediaError::truncated(F, "an image has no data"));
                }
                let end = sub_blocks_end(input, data_start + 1)?;
                out.extend_from_slice(&input[pos..end]);
                images += 1;
                pos = end;
            }
            0x21 => {
                let label =
                    *input.get(pos + 1).ok_or_else(|| MediaError::truncated(F, "an extension is incomplete"))?;
                let end = sub_blocks_end(input, pos + 2)?;
                let whole = &input[pos..end];
                let keep = match label {
                    // Graphic control (timing, transparency) and plain text (drawn pixels).
                    0xF9 | 0x01 => true,
                    0xFF => {
                        let id = input.get(pos + 2..pos + 14);
                        matches!(id, Some(b"\x0bNETSCAPE2.0") | Some(b"\x0bANIMEXTS1.0"))
                    }
                    _ => false,
                };
                if keep {
                    out.extend_from_slice(whole);
                } else {
                    report.remove(extension_name(label, input.get(pos + 3..pos + 14)), whole.len() as u64);
                }
                pos = end;
            }
            other => {
                return Err(MediaError::malformed(F, format!("unknown block 0x{other:02X} at byte {pos}")));
            }
        }
    }
}

fn color_table(packed: u8) -> usize {
    if packed & 0x80 != 0 { 3 << ((packed & 0x07) + 1) } else { 0 }
}

/// The position after a chain of data sub-blocks ending in a zero-length block.
fn sub_blocks_end(input: &[u8], mut pos: usize) -> Result<usize, MediaError> {
    loop {
        let Some(&n) = input.get(pos) else {
            return Err(MediaError::truncated(F, "the file ends inside a data block"));
        };
        pos += 1 + n as usize;
        if n == 0 {
            return Ok(pos);
        }
        if pos > input.len() {
            return Err(MediaError::truncated(F, "the file ends inside a data block"));
        }
    }
}

fn extension_name(label: u8, id: Option<&[u8]>) -> String {
    match label {
        0xFE => "comment extension".into(),
        0xFF => {
            let id: String = id
                .unwrap_or_default()
                .iter()
                .map(|&c| if c.is_ascii_graphic() || c == b' ' { c as char } else { '?' })
                .collect();
            format!("application extension \"{id}\"")
        }
        other => format!("extension 0x{other:02X}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_comments_and_xmp_keeps_looping() {
        let mut gif = b"GIF89a\x01\x00\x01\x00\x80\x00\x00".to_vec();
        gif.extend_from_slice(&[0, 0, 0, 255, 255, 255]);
        gif.extend_from_slice(b"\x21\xFF\x0bNETSCAPE2.0\x03\x01\x00\x00\x00");
        gif.extend_from_slice(b"\x21\xFE\x05Paris\x00");
        gif.extend_from_slice(b"\x21\xFF\x0bXMP DataXMP\x03GPS\x00");
        gif.extend_from_slice(b"\x2C\0\0\0\0\x01\0\x01\0\0\x02\x02\x44\x01\x00");
        gif.push(0x3B);
        let mut r = Report::default();
        let out = scrub(&gif, &mut r).unwrap();
        assert!(!out.windows(5).any(|w| w == b"Paris"));
        assert!(!out.windows(3).any(|w| w == b"GPS"));
        assert!(out.windows(8).any(|w| w == b"NETSCAPE"));
        assert_eq!(r.removed.len(), 2);
        assert!(scrub(&gif[..gif.len() - 4], &mut Report::default()).is_err());
    }
}
