//! Ogg Vorbis and Ogg Opus: the comment header is replaced by an empty one.
//!
//! Vorbis comments (`LOCATION=`, `GEO_LOCATION`, artist, encoder settings, embedded
//! cover art as `METADATA_BLOCK_PICTURE`) live in the second header packet of each
//! stream. The walker keeps the first page (identification) as it is, rebuilds the
//! header pages with an empty comment packet (the vendor string stays: decoders expect
//! it), and renumbers the later pages of that stream. Every page it writes gets its CRC
//! recomputed, since Ogg readers drop pages whose checksum fails. Streams of any other
//! codec (Theora, Speex, FLAC-in-Ogg, Skeleton) are refused rather than guessed at.

use std::collections::HashMap;

use super::{Format, MediaError, Report, le32};

const F: Format = Format::Ogg;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Codec {
    Vorbis,
    Opus,
}

impl Codec {
    fn header_packets(self) -> usize {
        match self {
            Codec::Vorbis => 3,
            Codec::Opus => 2,
        }
    }
}

struct Stream {
    codec: Codec,
    /// Header packets gathered so far (after the identification packet).
    packets: Vec<Vec<u8>>,
    partial: Vec<u8>,
    in_headers: bool,
    old_pages: u32,
    next_seq: u32,
    /// Added to every later page's sequence number.
    delta: i64,
}

struct Page<'a> {
    header_type: u8,
    granule: u64,
    serial: u32,
    seq: u32,
    lacing: &'a [u8],
    data: &'a [u8],
    raw: &'a [u8],
}

fn parse_page(b: &[u8], pos: usize) -> Result<Page<'_>, MediaError> {
    let short = || MediaError::truncated(F, format!("the page at byte {pos} is cut short"));
    let h = b.get(pos..pos + 27).ok_or_else(short)?;
    if &h[..4] != b"OggS" || h[4] != 0 {
        return Err(MediaError::malformed(F, format!("no page at byte {pos}")));
    }
    let n = usize::from(h[26]);
    let lacing = b.get(pos + 27..pos + 27 + n).ok_or_else(short)?;
    let data_len: usize = lacing.iter().map(|&x| usize::from(x)).sum();
    let start = pos + 27 + n;
    let data = b.get(start..start + data_len).ok_or_else(short)?;
    let mut g = [0u8; 8];
    g.copy_from_slice(&h[6..14]);
    Ok(Page {
        header_type: h[5],
        granule: u64::from_le_bytes(g),
        serial: le32(h, 14).unwrap_or(0),
        seq: le32(h, 18).unwrap_or(0),
        lacing,
        data,
        raw: &b[pos..start + data_len],
    })
}

/// Splits a page into (packet piece, whether the packet ends on this page).
fn pieces<'a>(page: &Page<'a>) -> Vec<(&'a [u8], bool)> {
    let mut out = Vec::new();
    let (mut at, mut len) = (0usize, 0usize);
    for &l in page.lacing {
        len += usize::from(l);
        if l < 255 {
            out.push((&page.data[at..at + len], true));
            at += len;
            len = 0;
        }
    }
    if len > 0 || page.lacing.last() == Some(&255) {
        out.push((&page.data[at..at + len], false));
    }
    out
}

pub fn scrub(input: &[u8], report: &mut Report) -> Result<Vec<u8>, MediaError> {
    let mut out = Vec::with_capacity(input.len());
    let mut streams: HashMap<u32, Stream> = HashMap::new();
    let mut pos = 0;
    while pos < input.len() {
        let page = parse_page(input, pos)?;
        pos += page.raw.len();
        if page.header_type & 0x02 != 0 {
            if streams.contains_key(&page.serial) {
                return Err(MediaError::malformed(F, "two streams with the same serial number"));
            }
            let codec = if page.data.starts_with(b"\x01vorbis") {
                Codec::Vorbis
            } else if page.data.starts_with(b"OpusHead") {
                Codec::Opus
            } else {
                return Err(MediaError::Unsupported("Ogg streams other than Vorbis or Opus"));
            };
            if page.lacing.last().is_none_or(|&l| l == 255) || page.lacing.iter().filter(|&&l| l < 255).count() != 1 {
                return Err(MediaError::malformed(F, "the first page must hold exactly the identification header"));
            }
            out.extend_from_slice(page.raw);
            streams.insert(
                page.serial,
                Stream {
                    codec,
                    packets: Vec::new(),
                    partial: Vec::new(),
                    in_headers: true,
                    old_pages: 1,
                    next_seq: page.seq.wrapping_add(1),
                    delta: 0,
                },
            );
            continue;
        }
        let Some(stream) = streams.get_mut(&page.serial) else {
            return Err(MediaError::malformed(F, "a page of a stream that never began"));
        };
        if !stream.in_headers {
            if stream.delta == 0 {
                out.extend_from_slice(page.raw);
            } else {
                let seq = (i64::from(page.seq) + stream.delta) as u32;
                write_page(&mut out, page.header_type, page.granule, page.serial, seq, page.lacing, page.data);
            }
            continue;
        }
        stream.old_pages += 1;
        for (piece, ends) in pieces(&page) {
            stream.partial.extend_from_slice(piece);
            if ends {
                if stream.packets.len() + 1 >= stream.codec.header_packets() {
                    return Err(MediaError::malformed(F, "audio data shares a page with the headers"));
                }
                stream.packets.push(std::mem::take(&mut stream.partial));
            }
        }
        if stream.packets.len() + 1 == stream.codec.header_packets() {
            if !stream.partial.is_empty() {
                return Err(MediaError::malformed(F, "audio data shares a page with the headers"));
            }
            stream.in_headers = false;
            let comment = std::mem::take(&mut stream.packets[0]);
            let empty = empty_comment(stream.codec, &comment)?;
            if empty != comment {
                report.remove(
                    match stream.codec {
                        Codec::Vorbis => "Vorbis comment header (tags)",
                        Codec::Opus => "OpusTags comment header (tags)",
                    },
                    (comment.len() - empty.len().min(comment.len())) as u64,
                );
            }
            stream.packets[0] = empty;
            let packets = std::mem::take(&mut stream.packets);
            let written = paginate(&mut out, page.serial, stream.next_seq, &packets);
            stream.delta = i64::from(written) - i64::from(stream.old_pages - 1);
        }
    }
    if streams.is_empty() {
        return Err(MediaError::malformed(F, "no streams"));
    }
    if streams.values().any(|s| s.in_headers) {
        return Err(MediaError::truncated(F, "the file ends inside the stream headers"));
    }
    Ok(out)
}

/// A comment packet with the same vendor string and no comments.
fn empty_comment(codec: Codec, packet: &[u8]) -> Result<Vec<u8>, MediaError> {
    let magic: &[u8] = match codec {
        Codec::Vorbis => b"\x03vorbis",
        Codec::Opus => b"OpusTags",
    };
    if !packet.starts_with(magic) {
        return Err(MediaError::malformed(F, "the second header is not a comment header"));
    }
    let vlen = le32(packet, magic.len()).ok_or_else(|| MediaError::malformed(F, "short comment header"))? as usize;
    let vendor = packet
        .get(magic.len() + 4..magic.len() + 4 + vlen)
        .ok_or_else(|| MediaError::malformed(F, "the vendor string runs past the comment header"))?;
    let mut out = magic.to_vec();
    out.extend_from_slice(&(vlen as u32).to_le_bytes());
    out.extend_from_slice(vendor);
    out.extend_from_slice(&0u32.to_le_bytes());
    if codec == Codec::Vorbis {
        out.push(1);
    }
    Ok(out)
}

/// Writes `packets` as fresh pages (granule 0 where a packet ends); returns the count.
fn paginate(out: &mut Vec<u8>, serial: u32, first_seq: u32, packets: &[Vec<u8>]) -> u32 {
    // Lacing values and data for all packets, then cut into pages of ≤255 values.
    let mut lacing: Vec<(u8, usize, bool)> = Vec::new(); // (value, packet index, ends)
    for (i, p) in packets.iter().enumerate() {
        let full = p.len() / 255;
        for _ in 0..full {
            lacing.push((255, i, false));
        }
        lacing.push(((p.len() % 255) as u8, i, true));
    }
    let data: Vec<u8> = packets.concat();
    let mut seq = first_seq;
    let (mut li, mut di, mut continued) = (0usize, 0usize, false);
    let mut pages = 0;
    while li < lacing.len() {
        let take = (lacing.len() - li).min(255);
        let values: Vec<u8> = lacing[li..li + take].iter().map(|l| l.0).collect();
        let len: usize = values.iter().map(|&v| usize::from(v)).sum();
        let any_end = lacing[li..li + take].iter().any(|l| l.2);
        let granule = if any_end { 0 } else { u64::MAX };
        let header_type = if continued { 1 } else { 0 };
        write_page(out, header_type, granule, serial, seq, &values, &data[di..di + len]);
        continued = !lacing[li + take - 1].2;
        li += take;
        di += len;
        seq = seq.wrapping_add(1);
        pages += 1;
    }
    pages
}

fn write_page(out: &mut Vec<u8>, header_type: u8, granule: u64, serial: u32, seq: u32, lacing: &[u8], data: &[u8]) {
    let start = out.len();
    out.extend_from_slice(b"OggS\0");
    out.push(header_type);
    out.extend_from_slice(&granule.to_le_bytes());
    out.extend_from_slice(&serial.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.push(lacing.len() as u8);
    out.extend_from_slice(lacing);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out[start + 22..start + 26].copy_from_slice(&crc.to_le_bytes());
}

/// Ogg's CRC-32: polynomial 0x04C11DB7, MSB first, no reflection, no final xor.
fn crc32(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut r = (i as u32) << 24;
            for _ in 0..8 {
                r = if r & 0x8000_0000 != 0 { (r << 1) ^ 0x04C1_1DB7 } else { r << 1 };
            }
            *slot = r;
        }
        t
    });
    data.iter().fold(0u32, |crc, &b| (crc << 8) ^ table[((crc >> 24) as u8 ^ b) as usize])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_a_known_page() {
        // The CRC of a page with its CRC field zeroed must be what writers store there.
        let mut page = Vec::new();
        write_page(&mut page, 2, 0, 1, 0, &[19], b"OpusHead\x01\x02\x38\x01\x80\xbb\0\0\0\0\0");
        let stored = le32(&page, 22).unwrap();
        let mut zeroed = page.clone();
        zeroed[22..26].copy_from_slice(&[0; 4]);
        assert_eq!(crc32(&zeroed), stored);
    }
}
