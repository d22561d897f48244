//! `data:` URIs, read the way the instance reads them.
//!
//! Mastodon registers Paperclip's `DataUriAdapter` (`config/initializers/paperclip.rb`),
//! so every attachment parameter (`file`, `thumbnail`, `avatar`, `header`, ...) may be a
//! string matching `/\Adata:([-\w]+\/[-\w\+\.]+)?;base64,(.*)/m`, decoded with Ruby's
//! `Base64.decode64`. That decoder is lenient: it skips every byte outside the base64
//! alphabet (whitespace, `-`, `_`, `;`, anything), skips `=` in the first two positions
//! of a group and stops at `=` in the last two. [`ruby_decode64`] is that algorithm
//! (`pack.c`, `unpack("m")`), byte for byte, because a stricter decoder would see
//! different bytes than the instance does: a JPEG to Ruby, garbage to us.
//!
//! [`locate`] recognises more than Paperclip does, on purpose: any case (`DATA:`), leading
//! whitespace, parameters (`;charset=...`) and percent-encoded payloads. Scrubbing a value
//! the instance would not treat as a file changes nothing for it; missing one it would
//! treat as a file is a leak.
//!
//! [`scrub_value`] decodes a value, scrubs the media inside, and re-encodes it in the same
//! encoding under the same declared type, with no other parameter: the request still
//! works, and a `;name=` the upload library wrote stays behind.
//! A payload that is media pavise cannot parse with certainty, or binary that is no media
//! format at all, is refused, as a file part would be.

use super::{
    Format, MediaError, Report,
    text::{self, Charset},
};

/// Where a `data:` URI sits in a decoded text value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataUri {
    /// Index just after the first `,`: where the payload begins.
    pub payload_at: usize,
    /// Index just after `data:`.
    pub scheme_end: usize,
    /// Where the declared media type (trimmed) starts and ends.
    pub media_type: (usize, usize),
    /// `;base64` among the parameters; otherwise the payload is percent-encoded.
    pub base64: bool,
    /// The declared media type is `image/*`, `video/*` or `audio/*`.
    pub declared_media: bool,
    /// The charset its text is in (`;charset=`), UTF-8 when none is named.
    pub charset: Charset,
}

/// Leading whitespace accepted before `data:` (Paperclip accepts none; this is slack).
const MAX_LEADING_SPACE: usize = 256;

/// The `data:` URI that `text` starts with (after optional ASCII whitespace), if any.
pub fn locate(text: &[u8]) -> Option<DataUri> {
    let start = text.iter().take(MAX_LEADING_SPACE + 1).position(|b| !b.is_ascii_whitespace())?;
    let rest = &text[start..];
    if rest.len() < 5 || !rest[..5].eq_ignore_ascii_case(b"data:") {
        return None;
    }
    let comma = memchr::memchr(b',', &rest[5..])?;
    let header = &rest[5..5 + comma];
    let mut params = header.split(|&b| b == b';');
    let first = params.next().unwrap_or_default();
    let media_type = first.trim_ascii();
    let type_start = start + 5 + first.iter().take_while(|b| b.is_ascii_whitespace()).count();
    let (mut base64, mut charset) = (false, Charset::Utf8);
    for p in params {
        let p = p.trim_ascii();
        if p.eq_ignore_ascii_case(b"base64") {
            base64 = true;
        } else if p.len() > 8 && p[..8].eq_ignore_ascii_case(b"charset=") {
            charset = Charset::named(&String::from_utf8_lossy(&p[8..]));
        }
    }
    let declared_media = ["image/", "video/", "audio/"]
        .iter()
        .any(|p| media_type.len() >= p.len() && media_type[..p.len()].eq_ignore_ascii_case(p.as_bytes()));
    Some(DataUri {
        payload_at: start + 5 + comma + 1,
        scheme_end: start + 5,
        media_type: (type_start, type_start + media_type.len()),
        base64,
        declared_media,
        charset,
    })
}

/// Whether `text` could start a `data:` URI: the cheap test before any decoding.
pub fn starts_like_data_uri(text: &[u8]) -> bool {
    let t = text.trim_ascii_start();
    t.len() >= 5 && t[..5].eq_ignore_ascii_case(b"data:")
}

/// The base64 alphabet's values; -1 for every other byte (which the decoder skips).
const B64: [i8; 256] = {
    let mut t = [-1i8; 256];
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut i = 0;
    while i < 64 {
        t[alphabet[i] as usize] = i as i8;
        i += 1;
    }
    t
};

/// Ruby's `Base64.decode64` (`String#unpack1("m")`), exactly: bytes outside the alphabet
/// are skipped, `=` ends the input in the third or fourth place of a group, and a final
/// partial group still yields its whole bytes.
pub fn ruby_decode64(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3 + 3);
    let (mut a, mut b, mut c): (i8, i8, i8) = (-1, -1, -1);
    let mut i = 0;
    let n = s.len();
    // Each loop reads one group of four; `break` leaves a, b, c as the C code leaves them.
    while i < n {
        (a, b, c) = (-1, -1, -1);
        while i < n && B64[s[i] as usize] == -1 {
            i += 1;
        }
        if i >= n {
            break;
        }
        a = B64[s[i] as usize];
        i += 1;
        while i < n && B64[s[i] as usize] == -1 {
            i += 1;
        }
        if i >= n {
            break;
        }
        b = B64[s[i] as usize];
        i += 1;
        while i < n && B64[s[i] as usize] == -1 && s[i] != b'=' {
            i += 1;
        }
        if i >= n || s[i] == b'=' {
            break;
        }
        c = B64[s[i] as usize];
        i += 1;
        while i < n && B64[s[i] as usize] == -1 && s[i] != b'=' {
            i += 1;
        }
        if i >= n || s[i] == b'=' {
            break;
        }
        let d = B64[s[i] as usize];
        i += 1;
        let (a8, b8, c8, d8) = (a as u8, b as u8, c as u8, d as u8);
        out.extend_from_slice(&[a8 << 2 | b8 >> 4, b8 << 4 | c8 >> 2, c8 << 6 | d8]);
        a = -1;
    }
    if a != -1 && b != -1 {
        let (a8, b8) = (a as u8, b as u8);
        out.push(a8 << 2 | b8 >> 4);
        if c != -1 {
            out.push(b8 << 4 | (c as u8) >> 2);
        }
    }
    out
}

/// Percent-decoding of a non-base64 payload (RFC 2397); a stray `%` stays as it is.
pub fn percent_decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%'
            && let (Some(h), Some(l)) = (s.get(i + 1).and_then(|&c| hex(c)), s.get(i + 2).and_then(|&c| hex(c)))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

pub(crate) fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn percent_encode(bytes: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
}

/// A text value with its `data:` URI scrubbed.
#[derive(Debug)]
pub struct Rewritten {
    /// The whole new value: the original prefix and header, then the new payload.
    pub text: Vec<u8>,
    pub format: Format,
    pub report: Report,
}

/// What the bytes of a value or part are, judged by content alone.
#[derive(Debug)]
pub enum Content {
    /// A format pavise scrubs.
    Media(Format),
    /// Media pavise does not take (TIFF, JPEG XL, camera raw): refused.
    Refused(MediaError),
    /// Plain text (CSV, JSON, a caption): passes.
    Text,
    /// Bytes that are neither: refused where the instance would store them as a file.
    Binary,
}

/// Judges bytes by their content: a format pavise scrubs, one it refuses (a binary
/// format it does not scrub, or a text form of media such as SVG or PDF), text by
/// [`super::text`]'s definition, or binary. Text and binary are only told apart for
/// certain when `bytes` is the whole value.
pub fn content_of(bytes: &[u8], charset: Charset) -> Content {
    match super::sniff(bytes) {
        Ok(format) => Content::Media(format),
        Err(MediaError::UnknownFormat) => match text::media_in_text(bytes) {
            Some(what) => Content::Refused(MediaError::Unsupported(what)),
            None if text::is_text(bytes, charset) => Content::Text,
            None => Content::Binary,
        },
        Err(e) => Content::Refused(e),
    }
}

/// Scrubs the media inside a `data:` URI value. `Ok(None)`: not a `data:` URI, or one
/// holding text; nothing to change. `max` caps the decoded size.
pub fn scrub_value(text: &[u8], max: u64) -> Result<Option<Rewritten>, MediaError> {
    let Some(uri) = locate(text) else { return Ok(None) };
    let payload = &text[uri.payload_at..];
    let bytes = if uri.base64 { ruby_decode64(payload) } else { percent_decode(payload) };
    if bytes.is_empty() {
        return Ok(None);
    }
    if bytes.len() as u64 > max {
        return Err(MediaError::TooLarge { kind: "file in a data: URI", limit: crate::units::Size(max) });
    }
    match content_of(&bytes, uri.charset) {
        Content::Media(_) => {}
        Content::Refused(e) => return Err(e),
        Content::Text if !uri.declared_media => return Ok(None),
        Content::Text | Content::Binary => return Err(MediaError::UnknownFormat),
    }
    let scrubbed = super::scrub(&bytes)?;
    let mut out = Vec::with_capacity(uri.payload_at + scrubbed.bytes.len() * 4 / 3 + 4);
    write_header(text, &uri, &mut out);
    if uri.base64 {
        use base64::Engine as _;
        out.extend_from_slice(base64::engine::general_purpose::STANDARD.encode(&scrubbed.bytes).as_bytes());
    } else {
        percent_encode(&scrubbed.bytes, &mut out);
    }
    Ok(Some(Rewritten { text: out, format: scrubbed.format, report: scrubbed.report }))
}

/// The scrubbed value's header: `data:`, the declared type if it is a plain one, and the
/// encoding. No other parameter: `;name=PXL_20241007_142045194.jpg`, which some upload
/// libraries write, is the photo's capture time.
fn write_header(text: &[u8], uri: &DataUri, out: &mut Vec<u8>) {
    out.extend_from_slice(&text[..uri.scheme_end]);
    let media_type = &text[uri.media_type.0..uri.media_type.1];
    if media_type.iter().all(|b| b.is_ascii_alphanumeric() || b"-_/+.".contains(b)) {
        out.extend_from_slice(media_type);
    }
    out.extend_from_slice(if uri.base64 { b";base64," } else { b"," });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode64_is_rubys_lenient_decoder() {
        // Standard input.
        assert_eq!(ruby_decode64(b"aGVsbG8="), b"hello");
        assert_eq!(ruby_decode64(b"aGVsbG8"), b"hello", "no padding: the partial group still counts");
        // Whitespace and any other non-alphabet byte are skipped, anywhere.
        assert_eq!(ruby_decode64(b"aG V\nsb\r\n\tG8="), b"hello");
        assert_eq!(ruby_decode64(b"a-G_V;s*b!G8"), b"hello");
        // `=` in the first two places of a group is skipped; in the last two it ends the input.
        assert_eq!(ruby_decode64(b"=aGVs"), b"hel");
        assert_eq!(ruby_decode64(b"aGVs=bG8="), b"hello", "a leading `=` of a group is skipped");
        assert_eq!(ruby_decode64(b"aG=VsbG8"), b"h");
        // A lone trailing character yields nothing.
        assert_eq!(ruby_decode64(b"aGVsbG8gd"), b"hello ");
        assert!(ruby_decode64(b"").is_empty());
        assert!(ruby_decode64(b"====").is_empty());
    }

    #[test]
    fn locates_every_spelling_of_a_data_uri() {
        let jpeg = |s: &str| locate(s.as_bytes());
        let paperclip = jpeg("data:image/jpeg;base64,/9j/").unwrap();
        assert_eq!((paperclip.payload_at, paperclip.base64, paperclip.declared_media), (23, true, true));
        assert!(jpeg("data:;base64,AAAA").unwrap().base64, "no media type");
        assert!(jpeg("DATA:IMAGE/JPEG;BASE64,/9j/").unwrap().base64, "any case");
        assert!(jpeg("  \n data:image/png;base64,iVBO").is_some(), "leading whitespace");
        assert!(jpeg("data:image/jpeg;charset=utf-8;base64,/9j/").unwrap().base64, "parameters");
        let plain = jpeg("data:image/png,%89PNG").unwrap();
        assert!(!plain.base64 && plain.declared_media, "percent-encoded payload");
        assert!(jpeg("data:text/plain;base64,aGk=").is_some_and(|u| !u.declared_media));
        assert!(jpeg("data:image/jpeg;base64").is_none(), "no comma: no payload");
        assert!(jpeg("see data:image/jpeg;base64,/9j/").is_none(), "must start the value");
        assert!(jpeg("https://example.com/a.jpg").is_none());
    }

    #[test]
    fn a_scrubbed_value_keeps_only_its_type_and_encoding() {
        let header = |s: &str| {
            let uri = locate(s.as_bytes()).unwrap();
            let mut out = Vec::new();
            write_header(s.as_bytes(), &uri, &mut out);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(header("data:image/jpeg;name=PXL_20241007_142045194.jpg;base64,/9j/"), "data:image/jpeg;base64,");
        assert_eq!(header(" data:image/png;charset=utf-8,%89PNG"), " data:image/png,");
        assert_eq!(header("DATA: image/jpeg ;BASE64,/9j/"), "DATA:image/jpeg;base64,");
        assert_eq!(header("data:image/jpeg PXL_2024;base64,/9j/"), "data:;base64,", "no type that is not a plain one");
        assert_eq!(header("data:;base64,/9j/"), "data:;base64,");
    }

    #[test]
    fn percent_coding_round_trips() {
        let raw: Vec<u8> = (0..=255).collect();
        let mut enc = Vec::new();
        percent_encode(&raw, &mut enc);
        assert!(enc.iter().all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(b)));
        assert_eq!(percent_decode(&enc), raw);
        assert_eq!(percent_decode(b"100%+sure%zz%4"), b"100%+sure%zz%4");
    }

    #[test]
    fn text_payloads_pass_and_binary_ones_are_refused() {
        assert!(scrub_value(b"data:text/plain;base64,aGVsbG8=", 1 << 20).unwrap().is_none());
        assert!(scrub_value(b"data:,hello%20world", 1 << 20).unwrap().is_none());
        assert!(scrub_value(b"just a caption", 1 << 20).unwrap().is_none());
        // Text where an image was declared: the instance would try to store it.
        assert!(matches!(scrub_value(b"data:image/png;base64,aGVsbG8=", 1 << 20), Err(MediaError::UnknownFormat)));
        // Binary that is no format pavise knows.
        assert!(matches!(scrub_value(b"data:;base64,AAECAwQF", 1 << 20), Err(MediaError::UnknownFormat)));
        // Media that is broken: refused, not passed.
        let cut = b"data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAA";
        assert!(matches!(scrub_value(cut, 1 << 20), Err(MediaError::Truncated { .. } | MediaError::Malformed { .. })));
        assert!(matches!(scrub_value(b"data:;base64,SUkqAAgAAAA=", 1 << 20), Err(MediaError::Unsupported(_))));
        assert!(matches!(scrub_value(b"data:;base64,/9j/4AAQSkZJRg==", 4), Err(MediaError::TooLarge { .. })));
    }
}
