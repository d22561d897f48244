//! Part heads and the text check on arbitrary input. A head pavise accepts is written
//! again with two headers; that head must read back as the same name, filename, type and
//! charset (what every Rack then reads), and hold no line a Rack could read more from.
//! The chunked text check must agree with the whole-value one wherever the value is cut.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pavise::privacy::media::{
    part_head::PartHead,
    text::{self, Charset, TextCheck},
};

fn headers(raw: &[u8]) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    for line in raw.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(&line[..colon]),
            http::HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        h.append(name, value);
    }
    h
}

fuzz_target!(|data: &[u8]| {
    let (&cut, rest) = data.split_first().unwrap_or((&0, &[]));
    let Ok(head) = PartHead::read(&headers(rest)) else { return };
    let mut written = Vec::new();
    head.write(&mut written);
    assert!(written.ends_with(b"\r\n\r\n") && written.len() > 4, "an empty head would not frame");
    let lines: Vec<&[u8]> = written[..written.len() - 4].split(|&b| b == b'\n').collect();
    assert!(lines.len() <= 2, "more than two header lines");
    for l in &lines {
        let l = l.strip_suffix(b"\r").unwrap_or(l);
        assert!(l.starts_with(b"Content-Disposition: form-data") || l.starts_with(b"Content-Type: "));
        assert!(!l.iter().any(|&b| b < 0x20), "a control byte in a written head");
        // Rack 2.2's unanchored type and filename readers find nothing but ours.
        let lower = l.to_ascii_lowercase();
        assert!(lower.windows(13).filter(|w| *w == b"content-type:").count() <= 1);
        assert!(!(lower.starts_with(b"content-type") && lower.windows(8).any(|w| w == b"filename")));
    }
    let again = PartHead::read(&headers(&written)).expect("a written head reads again");
    assert_eq!(again.filename, head.filename, "the filename reads back");
    assert_eq!(again.media_type, head.media_type);
    assert_eq!(again.charset, head.charset);
    if head.name.is_some() {
        assert_eq!(again.name, head.name, "the name reads back");
    }

    for charset in [Charset::Utf8, Charset::Iso2022Jp, Charset::Other] {
        let whole = text::is_text(rest, charset);
        let at = usize::from(cut) % (rest.len() + 1);
        let mut c = TextCheck::new(charset);
        c.feed(&rest[..at]);
        c.feed(&rest[at..]);
        assert_eq!(c.finish(), whole, "chunked and whole text checks disagree");
    }
    let _ = text::media_in_text(rest);
    let _ = pavise::privacy::media::unsupported::sniff(rest);
});
