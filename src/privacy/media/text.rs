//! What "text" means: the one kind of bytes that may reach the instance without being
//! scrubbed media.
//!
//! A multipart part or a `data:` URI payload is forwarded only when it is media pavise
//! scrubbed or text by this definition; anything else is refused, whatever its headers
//! say (issue 10, red team F1: a WMA file in a part without a filename passed unread, and
//! Rack 2.2 stored it as a file). Text is defined so that no file format a decoder of the
//! instance reads passes for it:
//!
//! - **no control bytes** but tab, line feed, form feed and carriage return (and escape,
//!   only where the part declares ISO-2022-JP, which needs it), and no DEL: every binary
//!   container has a length, a version or a flag byte below 0x20 in its first bytes;
//! - **valid UTF-8** throughout (a BOM allowed), unless the part declares another charset
//!   (Rack then labels the value with it): binary data almost never decodes as UTF-8, and
//!   Rails refuses a parameter that is not;
//! - **not a text form of media** ([`media_in_text`]): SVG and any XML (XMP sidecars, GPX,
//!   KML, DASH manifests, TTML), PDF, PostScript, netpbm, XPM, XBM, ImageMagick's MIFF,
//!   MVG and pixel-enumeration formats, Radiance HDR, FITS, VICAR, playlists and
//!   concat lists ffmpeg follows, subtitles (SRT, which drones fill with GPS, WebVTT,
//!   ASS/SSA, MicroDVD), SDP. These are all valid UTF-8 and control-free, and several carry
//!   a location in plain words (an SVG's or PDF's XMP, a DJI SRT).
//!
//! The whole value is checked, not its first bytes: [`TextCheck`] reads it in chunks as
//! a spooled part is read back, carrying a UTF-8 sequence split between two chunks.

/// The charset a value declares, as far as text is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Charset {
    /// None, or UTF-8 (or US-ASCII): the bytes must be UTF-8.
    #[default]
    Utf8,
    /// ISO-2022-JP: 7-bit, with escape sequences.
    Iso2022Jp,
    /// Another charset (ISO-8859-x, Windows-125x, Shift_JIS, ...): any byte above 0x7F.
    Other,
}

impl Charset {
    /// The charset a `charset=` parameter names (Ruby's `Encoding.find` reads these).
    pub fn named(name: &str) -> Charset {
        let n = name.trim().trim_matches('"').to_ascii_lowercase();
        match n.as_str() {
            "" | "utf-8" | "utf8" | "us-ascii" | "ascii" | "ascii-8bit" | "binary" => Charset::Utf8,
            "iso-2022-jp" | "iso2022-jp" | "iso-2022-jp-2" | "iso-2022-jp-1" | "csiso2022jp" | "iso-2022-jp-kddi"
            | "cp50220" | "cp50221" => Charset::Iso2022Jp,
            _ => Charset::Other,
        }
    }
}

/// Bytes no text holds.
const fn control_table(esc: bool) -> [bool; 256] {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        let allowed = matches!(i as u8, b'\t' | b'\n' | 0x0C | b'\r') || (esc && i == 0x1B);
        t[i] = !allowed;
        i += 1;
    }
    t[0x7F] = true;
    t
}

const CONTROL: [bool; 256] = control_table(false);
const CONTROL_OR_NOT_ESC: [bool; 256] = control_table(true);

/// Whether `bytes`, whole, are text in `charset` (see the module docs).
pub fn is_text(bytes: &[u8], charset: Charset) -> bool {
    let mut check = TextCheck::new(charset);
    check.feed(bytes);
    check.finish()
}

/// Whether a text value's start is a text form of media.
pub fn media_in_text(start: &[u8]) -> Option<&'static str> {
    let s = start.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(start);
    let head = &s[..s.len().min(1024)];
    let t = head.trim_ascii_start();
    let lower: Vec<u8> = t.iter().take(1024).map(u8::to_ascii_lowercase).collect();
    let starts = |p: &str| lower.starts_with(p.as_bytes());
    let within = |p: &[u8]| memchr::memmem::find(&lower, p).is_some();
    if t.first() == Some(&b'<') {
        let xml = [
            "<?xml",
            "<svg",
            "<!doctype svg",
            "<x:xmpmeta",
            "<?xpacket",
            "<rdf:",
            "<gpx",
            "<kml",
            "<mpd",
            "<smil",
            "<sami",
            "<tt ",
            "<tt>",
            "<!--",
        ];
        if xml.iter().any(|p| starts(p)) || within(b"<svg") {
            return Some("SVG/XML");
        }
    }
    if memchr::memmem::find(head, b"%PDF-").is_some() {
        return Some("PDF");
    }
    if starts("%!") {
        return Some("PostScript");
    }
    // netpbm: P1..P7, then whitespace, then a size (or a comment).
    if let [b'P', b'1'..=b'7', ws, rest @ ..] = t
        && ws.is_ascii_whitespace()
        && rest.trim_ascii_start().first().is_some_and(|c| c.is_ascii_digit() || *c == b'#')
    {
        return Some("netpbm");
    }
    if starts("/* xpm */") || starts("! xpm2") {
        return Some("XPM");
    }
    if starts("#define ") && within(b"_width") {
        return Some("XBM");
    }
    if starts("id=imagemagick") || starts("# imagemagick pixel enumeration") {
        return Some("ImageMagick MIFF/TXT");
    }
    if starts("viewbox ") || starts("push graphic-context") {
        return Some("ImageMagick MVG");
    }
    if starts("#?radiance") || starts("#?rgbe") {
        return Some("Radiance HDR");
    }
    if starts("simple  =") || starts("lblsize=") || starts("pds_version_id") {
        return Some("FITS/VICAR/PDS");
    }
    if starts("#extm3u") || starts("ffconcat version") || starts("[playlist]") {
        return Some("a playlist");
    }
    if starts("webvtt") || starts("[script info]") || starts("v=0\n") || starts("v=0\r\n") {
        return Some("subtitles or a stream description");
    }
    if is_srt(t) || is_microdvd(t) {
        return Some("subtitles");
    }
    None
}

/// SRT: a cue number line, then `00:00:01,000 --> 00:00:02,000`.
fn is_srt(t: &[u8]) -> bool {
    let mut lines = t.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let (Some(n), Some(time)) = (lines.next(), lines.next()) else { return false };
    let n = n.trim_ascii();
    !n.is_empty() && n.iter().all(u8::is_ascii_digit) && memchr::memmem::find(time, b"-->").is_some()
}

/// MicroDVD: `{0}{25}text`.
fn is_microdvd(t: &[u8]) -> bool {
    let frame = |s: &[u8]| -> Option<usize> {
        let s = s.strip_prefix(b"{")?;
        let end = memchr::memchr(b'}', s)?;
        (end > 0 && s[..end].iter().all(u8::is_ascii_digit)).then_some(end + 2)
    };
    frame(t).is_some_and(|n| frame(&t[n..]).is_some())
}

/// Text, checked a chunk at a time.
#[derive(Debug)]
pub struct TextCheck {
    charset: Charset,
    /// The start of a UTF-8 sequence the last chunk ended in.
    carry: [u8; 4],
    carried: usize,
    bad: bool,
}

impl TextCheck {
    pub fn new(charset: Charset) -> TextCheck {
        TextCheck { charset, carry: [0; 4], carried: 0, bad: false }
    }

    pub fn feed(&mut self, mut chunk: &[u8]) {
        if self.bad {
            return;
        }
        let table = if self.charset == Charset::Iso2022Jp { &CONTROL_OR_NOT_ESC } else { &CONTROL };
        if chunk.iter().any(|&b| table[usize::from(b)]) {
            self.bad = true;
            return;
        }
        match self.charset {
            Charset::Other => return,
            // 7-bit: any byte above 0x7F is no ISO-2022-JP.
            Charset::Iso2022Jp => {
                self.bad = !chunk.is_ascii();
                return;
            }
            Charset::Utf8 => {}
        }
        while self.carried > 0 && !chunk.is_empty() {
            self.carry[self.carried] = chunk[0];
            self.carried += 1;
            chunk = &chunk[1..];
            match std::str::from_utf8(&self.carry[..self.carried]) {
                Ok(_) => self.carried = 0,
                Err(e) if e.error_len().is_some() || self.carried == 4 => {
                    self.bad = true;
                    return;
                }
                Err(_) => {}
            }
        }
        if let Err(e) = std::str::from_utf8(chunk) {
            let tail = &chunk[e.valid_up_to()..];
            if e.error_len().is_some() || tail.len() > 3 {
                self.bad = true;
                return;
            }
            self.carry[..tail.len()].copy_from_slice(tail);
            self.carried = tail.len();
        }
    }

    /// Whether everything fed was text (a sequence cut off at the end is not).
    pub fn finish(&self) -> bool {
        !self.bad && self.carried == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_utf8_without_control_bytes() {
        for ok in ["a caption", "line\r\nbreaks\tand\x0cfeeds", "café ☕ 日本語", "\u{FEFF}with a BOM", ""] {
            assert!(is_text(ok.as_bytes(), Charset::Utf8), "{ok:?}");
        }
        for bad in [&b"nul\0"[..], b"bell\x07", b"esc\x1b(B", b"del\x7f", b"\xff\xfe", b"caf\xe9", b"cut \xe6\x97"] {
            assert!(!is_text(bad, Charset::Utf8), "{bad:?}");
        }
        assert!(is_text(b"caf\xe9", Charset::Other), "a declared Latin-1 value");
        assert!(!is_text(b"caf\xe9\0", Charset::Other));
        assert!(is_text(b"\x1b$BF|K\\\x1b(B", Charset::Iso2022Jp));
        assert!(!is_text(b"\x1b$B\xe6", Charset::Iso2022Jp));
        assert_eq!(Charset::named("\"ISO-2022-JP\""), Charset::Iso2022Jp);
        assert_eq!(Charset::named("UTF-8"), Charset::Utf8);
        assert_eq!(Charset::named("windows-1252"), Charset::Other);
    }

    #[test]
    fn a_sequence_split_between_chunks_is_carried() {
        let text = "日本語のテキスト".as_bytes();
        for cut in 0..text.len() {
            let mut c = TextCheck::new(Charset::Utf8);
            c.feed(&text[..cut]);
            c.feed(&text[cut..]);
            assert!(c.finish(), "cut at {cut}");
        }
        let mut c = TextCheck::new(Charset::Utf8);
        c.feed(&text[..2]);
        assert!(!c.finish(), "ends inside a sequence");
        let mut c = TextCheck::new(Charset::Utf8);
        c.feed(&text[..2]);
        c.feed(b"x");
        assert!(!c.finish());
    }

    #[test]
    fn text_forms_of_media_are_recognised_and_captions_are_not() {
        for (start, what) in [
            ("<?xml version=\"1.0\"?><svg>", "SVG/XML"),
            ("  <svg xmlns=\"http://www.w3.org/2000/svg\">", "SVG/XML"),
            ("<!-- made by hand --><svg>", "SVG/XML"),
            ("\u{FEFF}<x:xmpmeta xmlns:x='adobe:ns:meta/'>", "SVG/XML"),
            ("<gpx version=\"1.1\">", "SVG/XML"),
            ("%PDF-1.7\n%", "PDF"),
            ("junk first\n%PDF-1.4", "PDF"),
            ("%!PS-Adobe-3.0", "PostScript"),
            ("P3\n2 2\n255\n", "netpbm"),
            ("P1 # comment", "netpbm"),
            ("/* XPM */\nstatic char", "XPM"),
            ("#define i_width 16\n", "XBM"),
            ("id=ImageMagick  version=1.0", "ImageMagick MIFF/TXT"),
            ("#?RADIANCE\nFORMAT=32-bit_rle_rgbe", "Radiance HDR"),
            ("SIMPLE  =                    T", "FITS/VICAR/PDS"),
            ("#EXTM3U\n#EXTINF:10,\nhttp://x/a.ts", "a playlist"),
            ("ffconcat version 1.0\nfile a.mp4", "a playlist"),
            ("WEBVTT\n\n00:00.000 --> 00:01.000", "subtitles or a stream description"),
            ("[Script Info]\nTitle: x", "subtitles or a stream description"),
            ("1\r\n00:00:00,000 --> 00:00:01,000\r\nGPS(34.86,32.09)", "subtitles"),
            ("{0}{25}hello", "subtitles"),
        ] {
            assert_eq!(media_in_text(start.as_bytes()), Some(what), "{start:?}");
        }
        for caption in [
            "the tower at dusk",
            "<3 you all",
            "P1 of my trip",
            "Pictures 2024",
            "100% sure",
            "1 2 3",
            "{braces} are fine",
            "#define is C",
            "v=0 is a version",
            "",
        ] {
            assert_eq!(media_in_text(caption.as_bytes()), None, "{caption:?}");
        }
    }
}
