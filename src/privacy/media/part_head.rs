//! A multipart part's head: read as broadly as any Rack the instance may run, and written
//! again so narrowly that every Rack reads exactly what pavise judged.
//!
//! Rack versions disagree about a part head (issue 10, red team F1). Rack 2.2 takes the
//! filename from `;filename=` anywhere in the whole head (`head.scan(DISPPARM)` over
//! every line) and the type from an unanchored `/Content-Type: (.*)\r\n/`, which matches
//! inside `X-Content-Type:`; Rack 3.x anchors both to a line and parses the disposition's
//! parameters itself. A part whose filename sat in `X-Note: ; filename="voice.asf"` was a
//! file to Rack 2.2 and text to pavise.
//!
//! So pavise does two things:
//! - **reads broadly** ([`PartHead::read`]): a part is a file part if *any* header line
//!   mentions a filename, and declares media if any header names an `image/`, `video/` or
//!   `audio/` type. These only ever make pavise stricter (a part's bytes are judged by
//!   content whatever its head says: media is scrubbed, text passes, anything else is
//!   refused);
//! - **writes narrowly** ([`PartHead::write`]): the forwarded part carries exactly two
//!   headers rebuilt from pavise's own parse, `Content-Disposition: form-data; name="…";
//!   filename="…"` and `Content-Type: type/subtype; charset=…`, and nothing else, spelled
//!   so that Rack 2.2 and 3.x read the same name, filename, type and charset: the name
//!   may not hold `"`, `\`, `;`, `:` or control bytes (a request with such a name is
//!   refused with 400), the filename is percent-encoded (both Racks decode it) and the
//!   type is checked token by token.
//!
//! The disposition's parameters are parsed as Rack 3.1 parses them (quoted values with
//! backslash escapes, `filename*=charset'lang'value` winning over `filename`), and the
//! filename normalized as both Racks normalize it (percent-decoded when every `%` is an
//! escape); a part with no name and no filename gets the name Rack would give it.

use super::text::Charset;

/// What pavise read from one part's head.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PartHead {
    /// The disposition's `name`, as Rack 3.1 reads it.
    pub name: Option<Vec<u8>>,
    /// The filename Rack would report (percent-decoded, `filename*` decoded).
    pub filename: Option<Vec<u8>>,
    /// `type/subtype` as sent (tokens only).
    pub media_type: Option<String>,
    /// The last `charset` parameter (Rack's reading), unquoted.
    pub charset: Option<String>,
    /// Any header line mentions a filename: Rack 2.2 (or 3.x) may store the part as a file.
    pub has_filename: bool,
    /// Any header names an `image/`, `video/` or `audio/` type.
    pub declared_media: bool,
    /// Any `charset` parameter of the type names ISO-2022-JP (which Rack transcodes).
    pub iso_2022_jp: bool,
    /// `Content-Transfer-Encoding`, lowercased.
    pub transfer_encoding: Option<String>,
}

/// Why a part head cannot be forwarded unambiguously (400).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeadError {
    #[error(
        "a part name holds a character pavise cannot forward unambiguously (quote, backslash, `;`, `:` or a control byte)"
    )]
    Name,
    #[error("a part's Content-Type is not a media type pavise can read")]
    ContentType,
}

/// Rack 3.1's cap on disposition parameters.
const MAX_PARAMS: usize = 16;

impl PartHead {
    pub fn read(headers: &http::HeaderMap) -> Result<PartHead, HeadError> {
        let mut head = PartHead::default();
        for (name, value) in headers {
            let lower = value.as_bytes().to_ascii_lowercase();
            let find = |needle: &[u8]| memchr::memmem::find(&lower, needle).is_some();
            if name.as_str().contains("filename") || find(b"filename") {
                head.has_filename = true;
            }
            if find(b"image/") || find(b"video/") || find(b"audio/") {
                head.declared_media = true;
            }
        }
        if let Some(cd) = headers.get(http::header::CONTENT_DISPOSITION) {
            let (name, filename) = disposition(cd.as_bytes());
            if let Some(n) = &name
                && n.iter().any(|&b| b < 0x20 || matches!(b, b'"' | b'\\' | b';' | b':' | 0x7F))
            {
                return Err(HeadError::Name);
            }
            head.name = name;
            head.filename = filename;
        }
        if let Some(ct) = headers.get(http::header::CONTENT_TYPE) {
            let raw = ct.as_bytes().trim_ascii();
            if !raw.is_empty() {
                let text = std::str::from_utf8(raw).map_err(|_| HeadError::ContentType)?;
                let mut params = text.split(';');
                let media_type = params.next().unwrap_or_default().trim();
                if !is_media_type(media_type) {
                    return Err(HeadError::ContentType);
                }
                head.media_type = Some(media_type.to_owned());
                for p in params {
                    let Some((k, v)) = p.split_once('=') else { continue };
                    if !k.trim().eq_ignore_ascii_case("charset") {
                        continue;
                    }
                    let v = v.trim();
                    let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v);
                    if Charset::named(v) == Charset::Iso2022Jp {
                        head.iso_2022_jp = true;
                    }
                    head.charset = Some(v.to_owned());
                }
                if head.charset.as_deref().is_some_and(|c| !c.bytes().all(is_token_byte) || c.is_empty()) {
                    return Err(HeadError::ContentType);
                }
            }
        }
        head.transfer_encoding = headers
            .get("content-transfer-encoding")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_ascii_lowercase());
        Ok(head)
    }

    /// The charset a text part's bytes are judged in: file parts are read by the instance
    /// as files (Rack labels no charset on them; Mastodon reads its imports as UTF-8).
    pub fn text_charset(&self) -> Charset {
        if self.filename.is_some() || self.has_filename {
            return Charset::Utf8;
        }
        if self.iso_2022_jp {
            return Charset::Iso2022Jp;
        }
        self.charset.as_deref().map_or(Charset::Utf8, Charset::named)
    }

    /// The forwarded head: the part's headers and the blank line after them.
    pub fn write(&self, out: &mut Vec<u8>) {
        let start = out.len();
        let name = match (&self.name, &self.filename, &self.media_type) {
            // Rack would call a part with nothing to name it by `text/plain[]`; say so, as
            // an empty head would not even frame (Rack looks for `.*\r\n\r\n`).
            (None, None, None) => Some(&b"text/plain[]"[..]),
            (name, _, _) => name.as_deref(),
        };
        if name.is_some() || self.filename.is_some() {
            out.extend_from_slice(b"Content-Disposition: form-data");
            if let Some(name) = name {
                out.extend_from_slice(b"; name=\"");
                out.extend_from_slice(name);
                out.push(b'"');
            }
            if let Some(filename) = &self.filename {
                out.extend_from_slice(b"; filename=\"");
                write_filename(filename, out);
                out.push(b'"');
            }
            out.extend_from_slice(b"\r\n");
        }
        if let Some(media_type) = &self.media_type {
            out.extend_from_slice(b"Content-Type: ");
            out.extend_from_slice(media_type.as_bytes());
            if let Some(charset) = &self.charset {
                out.extend_from_slice(b"; charset=");
                out.extend_from_slice(charset.as_bytes());
            }
            out.extend_from_slice(b"\r\n");
        }
        debug_assert!(out.len() > start);
        out.extend_from_slice(b"\r\n");
    }

    /// The filename of a part pavise scrubbed as media: `file` and the sent extension
    /// (Paperclip checks the extension against the content), nothing of the device's
    /// name for it, which is often when and with what app the photo was taken.
    pub fn neutralize_filename(&mut self) {
        let Some(sent) = self.filename.take() else { return };
        let extension = sent
            .rsplit(|b| *b == b'.')
            .next()
            .filter(|ext| ext.len() < sent.len() && (1..=8).contains(&ext.len()))
            // A letter, too: `Screenshot 2024-10-07 at 14.20.45` has no extension, only seconds.
            .filter(|ext| ext.iter().all(u8::is_ascii_alphanumeric) && ext.iter().any(u8::is_ascii_alphabetic));
        let mut neutral = b"file".to_vec();
        if let Some(ext) = extension {
            neutral.push(b'.');
            neutral.extend(ext.iter().map(u8::to_ascii_lowercase));
        }
        self.filename = Some(neutral);
    }

    /// A printable name for messages.
    pub fn display_name(&self) -> String {
        String::from_utf8_lossy(self.name.as_deref().or(self.filename.as_deref()).unwrap_or_default()).into_owned()
    }
}

/// A filename as Rack will read it back: raw bytes (UTF-8 names stay one byte a byte:
/// Rack ignores a disposition past 1,536 bytes, and nine per CJK character would drop a
/// long import name), with `%` escapes only for what cannot stand in a quoted value.
/// Every `%` is escaped, so Rack, which decodes a name only when every `%` starts an
/// escape, decodes exactly these.
fn write_filename(name: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in name {
        if matches!(b, b'"' | b'\\' | b'%' | 0x7F) || b < 0x20 {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        } else {
            out.push(b);
        }
    }
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_media_type(t: &str) -> bool {
    let Some((a, b)) = t.split_once('/') else { return false };
    !a.is_empty() && !b.is_empty() && a.bytes().all(is_token_byte) && b.bytes().all(is_token_byte)
}

/// The disposition's `name` and filename, as Rack 3.1 parses them.
fn disposition(value: &[u8]) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let Some(semi) = memchr::memchr(b';', value) else { return (None, None) };
    let mut rest = &value[semi + 1..];
    let (mut name, mut filename, mut filename_star) = (None, None, None);
    let mut params = 0;
    while let Some(eq) = memchr::memchr(b'=', rest) {
        params += 1;
        if params > MAX_PARAMS {
            break;
        }
        let param = rest[..eq].trim_ascii_start();
        rest = &rest[eq + 1..];
        let value: Vec<u8>;
        if rest.first() == Some(&b'"') {
            rest = &rest[1..];
            let mut v = Vec::new();
            loop {
                let Some(i) = rest.iter().position(|&b| b == b'"' || b == b'\\') else {
                    // No closing quote: Rack keeps what it has and reads no further.
                    v.extend_from_slice(rest);
                    rest = &[];
                    break;
                };
                v.extend_from_slice(&rest[..i]);
                let c = rest[i];
                rest = &rest[i + 1..];
                if c == b'"' {
                    break;
                }
                let Some(&escaped) = rest.first() else { break };
                rest = &rest[1..];
                if param == b"filename" && escaped != b'"' {
                    // Internet Explorer's unescaped Windows paths: Rack keeps both.
                    v.extend_from_slice(&[b'\\', escaped]);
                } else {
                    v.push(escaped);
                }
            }
            value = v;
        } else if let Some(i) = memchr::memchr(b';', rest) {
            value = rest[..i].to_vec();
            rest = &rest[i..];
        } else {
            value = rest.trim_ascii().to_vec();
            rest = &[];
        }
        match param {
            b"name" => name = Some(value),
            b"filename" => filename = Some(value),
            b"filename*" => filename_star = Some(value),
            _ => {}
        }
        if let Some(i) = memchr::memchr(b';', rest) {
            rest = &rest[i + 1..];
        }
    }
    let filename = match filename_star {
        Some(star) => {
            let mut it = star.splitn(3, |&b| b == b'\'');
            let (_charset, _lang) = (it.next(), it.next());
            Some(normalize_filename(it.next().unwrap_or_default()))
        }
        None => filename.map(|f| normalize_filename(&f)),
    };
    (name, filename)
}

/// Rack's `normalize_filename`: percent-decoded when every `%` starts an escape, then only
/// what follows the last `/` or `\` (Ruby's `split(/[\/\\]/).last`). Rack drops the
/// directories; forwarding them would hand the instance process `C:\Users\<name>\...`,
/// which old browsers send.
fn normalize_filename(f: &[u8]) -> Vec<u8> {
    let all_escapes = f.iter().enumerate().filter(|(_, b)| **b == b'%').all(|(i, _)| {
        f.get(i + 1).is_some_and(u8::is_ascii_hexdigit) && f.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
    });
    let decoded = if all_escapes { super::datauri::percent_decode(f) } else { f.to_vec() };
    let separator = |b: &u8| matches!(b, b'/' | b'\\');
    // Ruby's split drops trailing empty fields: `a/` is `a`, `/` is nothing.
    let Some(last) = decoded.iter().rposition(|b| !separator(b)) else { return Vec::new() };
    let first = decoded[..last].iter().rposition(separator).map_or(0, |i| i + 1);
    decoded[first..=last].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(pairs: &[(&str, &str)]) -> Result<PartHead, HeadError> {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        PartHead::read(&h)
    }

    #[test]
    fn a_media_part_keeps_only_its_extension_of_the_name_it_was_sent_with() {
        let named = |f: &str| {
            let mut h = head(&[("content-disposition", &format!("form-data; name=file; filename=\"{f}\""))]).unwrap();
            h.neutralize_filename();
            String::from_utf8(h.filename.unwrap()).unwrap()
        };
        assert_eq!(named("PXL_20241007_142045194.jpg"), "file.jpg");
        assert_eq!(named("Screenshot_20240101-101010_WhatsApp.PNG"), "file.png");
        assert_eq!(named("IMG 0001.heic"), "file.heic");
        assert_eq!(named("20240101_101010"), "file", "no extension: none invented");
        assert_eq!(named("Screenshot 2024-10-07 at 14.20.45"), "file", "digits are no extension");
        assert_eq!(named("clip.mp4"), "file.mp4");
        assert_eq!(named(".jpg"), "file.jpg");
        assert_eq!(named("x.2024-01-01 10:10"), "file", "only a plain extension is kept");
        let mut unnamed = head(&[("content-disposition", "form-data; name=file")]).unwrap();
        unnamed.neutralize_filename();
        assert_eq!(unnamed.filename, None, "a part sent without a name gets none");
    }

    fn written(h: &PartHead) -> String {
        let mut out = Vec::new();
        h.write(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn file_ness_and_declared_type_are_read_from_every_header_line() {
        // The red team's part: Rack 2.2 reads a file named voice.asf of type x-ms-asf.
        let h = head(&[
            ("content-disposition", "form-data; name=\"file\""),
            ("x-note", "; filename=\"voice.asf\""),
            ("x-content-type", "video/x-ms-asf"),
        ])
        .unwrap();
        assert!(h.has_filename && h.declared_media);
        assert_eq!(h.filename, None, "no filename pavise could forward: the instance gets a plain field");
        assert_eq!(written(&h), "Content-Disposition: form-data; name=\"file\"\r\n\r\n");
    }

    #[test]
    fn the_disposition_is_parsed_as_rack_3_parses_it() {
        let h = head(&[("content-disposition", r#"form-data; name="a;b=c"; filename="C:\\dir\x.jpg""#)]);
        assert_eq!(h, Err(HeadError::Name), "a name Rack 2.2's greedy regex reads differently");
        let h = head(&[("content-disposition", r#"form-data; filename*=UTF-8''IMG%200001.jpg; name=file"#)]).unwrap();
        assert_eq!(h.name.as_deref(), Some(&b"file"[..]));
        assert_eq!(h.filename.as_deref(), Some(&b"IMG 0001.jpg"[..]));
        let base = |f: &str| {
            let h = head(&[("content-disposition", &format!("form-data; name=f; filename=\"{f}\""))]).unwrap();
            String::from_utf8(h.filename.unwrap()).unwrap()
        };
        assert_eq!(base(r"C:\\Users\\alice.smith\\Downloads\\contacts.csv"), "contacts.csv", "only the base name");
        assert_eq!(base("home%2Falice%2Fnotes.txt"), "notes.txt", "decoded first, as Rack does");
        assert_eq!(base("dir/"), "dir");
        assert_eq!(base("/"), "");
        assert!(h.has_filename);
        assert_eq!(written(&h), "Content-Disposition: form-data; name=\"file\"; filename=\"IMG 0001.jpg\"\r\n\r\n");
        let h = head(&[(
            "content-disposition",
            r#"form-data; name="f"; filename="100% \"real\".jpg"; filename*=utf-8''x"#,
        )])
        .unwrap();
        assert_eq!(h.filename.as_deref(), Some(&b"x"[..]), "filename* wins, as in Rack 3");
        let h = head(&[("content-disposition", "form-data; name=f; filename*=x")]).unwrap();
        assert_eq!(h.filename.as_deref(), Some(&b""[..]), "Rack splits at `'`: no value, an empty name");
        let h = head(&[("content-disposition", r#"form-data; name="f"; filename="100% \"real\".jpg""#)]).unwrap();
        assert_eq!(h.filename.as_deref(), Some(&b"100% \"real\".jpg"[..]), "a lone % is kept");
        assert_eq!(
            written(&h),
            "Content-Disposition: form-data; name=\"f\"; filename=\"100%25 %22real%22.jpg\"\r\n\r\n"
        );
        // A long import name in CJK stays one byte per byte, not nine: Rack ignores a
        // disposition past 1,536 bytes, and the import would arrive without its file.
        let long = "通讯录".repeat(60);
        let escaped: String = long.bytes().map(|b| format!("%{b:02X}")).collect();
        let h =
            head(&[("content-disposition", &format!("form-data; name=f; filename*=UTF-8''{escaped}.csv"))]).unwrap();
        let out = written(&h);
        assert!(out.contains(&format!("filename=\"{long}.csv\"")), "{out}");
        assert!(out.len() < 1536, "{} bytes", out.len());
        for bad in ["form-data; name=\"a:b\"", "form-data; name=\"Content-Type: text/plain\""] {
            assert_eq!(head(&[("content-disposition", bad)]), Err(HeadError::Name), "{bad}");
        }
    }

    #[test]
    fn only_the_type_and_its_charset_are_forwarded() {
        let h = head(&[
            ("content-disposition", "form-data; name=\"caption\""),
            ("content-type", "Text/Plain; charset=\"ISO-2022-JP\"; filename=evil.asf"),
            ("content-id", "<x>"),
        ])
        .unwrap();
        assert!(h.iso_2022_jp && h.has_filename && !h.declared_media);
        assert_eq!(h.text_charset(), Charset::Utf8, "pavise counts it a file part: its bytes must be UTF-8");
        assert_eq!(
            written(&h),
            "Content-Disposition: form-data; name=\"caption\"\r\nContent-Type: Text/Plain; charset=ISO-2022-JP\r\n\r\n"
        );
        let h = head(&[("content-type", "text/plain; charset=latin1")]).unwrap();
        assert_eq!(h.text_charset(), Charset::Other);
        assert_eq!(written(&h), "Content-Type: text/plain; charset=latin1\r\n\r\n", "Rack names it itself");
        assert_eq!(
            written(&head(&[("x-anything", "1")]).unwrap()),
            "Content-Disposition: form-data; name=\"text/plain[]\"\r\n\r\n"
        );
        for bad in ["image", "image/jpeg/x", "image/jp eg", "text/plain; charset=\"a b\""] {
            assert_eq!(head(&[("content-type", bad)]), Err(HeadError::ContentType), "{bad}");
        }
        let qp = head(&[("content-transfer-encoding", " Quoted-Printable ")]).unwrap();
        assert_eq!(qp.transfer_encoding.as_deref(), Some("quoted-printable"));
    }

    /// The in-process stand-in for the `part_head` fuzz target: mutated heads either
    /// refuse, or write a two-line head that reads back the same.
    #[test]
    fn mutated_heads_refuse_or_read_back_the_same() {
        let seeds: [&[u8]; 4] = [
            b"content-disposition: form-data; name=\"file\"; filename=\"IMG 1.jpg\"\ncontent-type: image/jpeg",
            b"content-disposition: form-data; name=f; filename*=UTF-8''a%20b.csv\nx-note: ; filename=x",
            b"content-disposition: form-data; name=\"d\"\ncontent-type: text/plain; charset=\"iso-2022-jp\"",
            b"content-type: application/octet-stream\ncontent-id: <a>",
        ];
        let mut rng = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let (mut accepted, mut refused) = (0, 0);
        for _ in 0..3000 {
            let mut raw = seeds[(next() % 4) as usize].to_vec();
            for _ in 0..1 + next() % 3 {
                let at = (next() as usize) % raw.len().max(1);
                match next() % 3 {
                    0 => {
                        let pick = b"\"\\;:=%*' \n\x01/aZ";
                        raw[at] = pick[(next() as usize) % pick.len()];
                    }
                    1 => raw.insert(at, b"\";=%\\'"[(next() % 6) as usize]),
                    _ => drop(raw.drain(at..(at + (next() as usize) % 8).min(raw.len()))),
                }
            }
            let mut h = http::HeaderMap::new();
            for line in raw.split(|&b| b == b'\n') {
                let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
                if let (Ok(n), Ok(v)) = (
                    http::HeaderName::from_bytes(&line[..colon]),
                    http::HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
                ) {
                    h.append(n, v);
                }
            }
            let Ok(head) = PartHead::read(&h) else {
                refused += 1;
                continue;
            };
            accepted += 1;
            let out = written(&head);
            let lines: Vec<&str> = out.trim_end().split("\r\n").collect();
            assert!(lines.len() <= 2 && lines.iter().all(|l| !l.bytes().any(|b| b < 0x20)), "{out:?}");
            let mut again = http::HeaderMap::new();
            for l in lines {
                let (n, v) = l.split_once(": ").unwrap();
                again.append(http::HeaderName::from_bytes(n.as_bytes()).unwrap(), v.parse().unwrap());
            }
            let back = PartHead::read(&again).unwrap();
            assert_eq!(
                (&back.filename, &back.media_type, &back.charset),
                (&head.filename, &head.media_type, &head.charset)
            );
            if head.name.is_some() {
                assert_eq!(back.name, head.name);
            }
        }
        assert!(accepted > 500 && refused > 50, "{accepted} accepted, {refused} refused");
    }
}
