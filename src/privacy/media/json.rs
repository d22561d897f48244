//! JSON bodies: every string that decodes to a `data:` URI, at any depth (keys too), is
//! scrubbed and written back in place; every other byte of the body is kept as sent.
//!
//! Rails parses these bodies with Ruby's `json` gem, so this module reads strings the way
//! that parser does, not the way a strict one would:
//! - comments (`/* */`, `//`) are whitespace, and a `"` inside one starts no string;
//! - a backslash escapes the next byte, whatever it is: `\d` is `d` (the 2.x parsers up
//!   to 2.9; later ones refuse it), so `d\ata:` is `data:`;
//! - `\uXXXX` always takes the four bytes after it (a non-hex one makes U+FFFD), and a
//!   high surrogate swallows what follows it exactly as `json_string_unescape` does.
//!   Where newer versions refuse such input, nothing reaches Rails' params at all.
//!
//! [`may_hold_data_uri`] is the cheap test that runs first: without a backslash, a JSON
//! decoder can only produce `data:` from those five bytes written out, so a body with
//! neither is passed without tokenizing. Tokenizing itself decodes only the first bytes of
//! each string; only a string that starts like a `data:` URI is decoded whole.

use super::{MediaError, datauri};

/// Why a JSON body was not rewritten.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    /// Not JSON the instance would parse either (a `data:`-like body only).
    #[error("malformed JSON body: {0}")]
    Malformed(&'static str),
    /// A `data:` URI (under the key shown) holds media that was refused.
    #[error("the data: URI in \"{key}\" was refused: {source}")]
    Refused { key: String, source: MediaError },
}

/// Whether any string in `body` could decode to text that starts with `data:`.
pub fn may_hold_data_uri(body: &[u8]) -> bool {
    memchr::memchr(b'\\', body).is_some() || has_data_colon(body)
}

/// A case-insensitive `data:` anywhere: each `:` checks the four bytes before it.
pub(crate) fn has_data_colon(b: &[u8]) -> bool {
    memchr::memchr_iter(b':', b).any(|i| i >= 4 && b[i - 4..i].eq_ignore_ascii_case(b"data"))
}

/// Calls `scrub` with the decoded text of every string that starts like a `data:` URI;
/// where it returns new text, that string is replaced. `Ok(None)`: nothing changed.
pub fn rewrite(
    body: &[u8],
    mut scrub: impl FnMut(&[u8]) -> Result<Option<Vec<u8>>, MediaError>,
) -> Result<Option<Vec<u8>>, JsonError> {
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    let mut last_key = String::new();
    let mut i = 0;
    while let Some(off) = memchr::memchr2(b'"', b'/', &body[i..]) {
        let at = i + off;
        if body[at] == b'/' {
            i = skip_comment(body, at)?;
            continue;
        }
        let start = at + 1;
        let end = string_end(body, start)?;
        let raw = &body[start..end];
        i = end + 1;
        let is_key = body[i..].iter().find(|b| !b.is_ascii_whitespace()) == Some(&b':');
        if is_key {
            last_key = String::from_utf8_lossy(&decode(raw, Some(64)).unwrap_or_default()).into_owned();
        }
        if !might_start_data_uri(raw)? {
            continue;
        }
        let text = decode(raw, None)?;
        let replaced = scrub(&text).map_err(|source| JsonError::Refused {
            key: if is_key { "(an object key)".into() } else { last_key.clone() },
            source,
        })?;
        if let Some(new) = replaced {
            let buf = out.get_or_insert_with(|| Vec::with_capacity(body.len()));
            buf.extend_from_slice(&body[copied..start]);
            escape_into(&new, buf);
            copied = end;
        }
    }
    Ok(out.map(|mut buf| {
        buf.extend_from_slice(&body[copied..]);
        buf
    }))
}

/// Where the string whose contents start at `from` ends (the index of its closing quote).
fn string_end(body: &[u8], mut from: usize) -> Result<usize, JsonError> {
    loop {
        let Some(off) = memchr::memchr2(b'"', b'\\', &body[from..]) else {
            return Err(JsonError::Malformed("unterminated string"));
        };
        let at = from + off;
        if body[at] == b'"' {
            return Ok(at);
        }
        // A backslash makes the next byte part of the escape, whatever it is.
        match body.get(at + 1) {
            Some(&c) if c >= 0x20 => from = at + 2,
            _ => return Err(JsonError::Malformed("bad escape in a string")),
        }
    }
}

/// Skips the comment starting at `at` (a `/`); returns where parsing resumes.
fn skip_comment(body: &[u8], at: usize) -> Result<usize, JsonError> {
    match body.get(at + 1) {
        Some(b'*') => memchr::memmem::find(&body[at + 2..], b"*/")
            .map(|off| at + 2 + off + 2)
            .ok_or(JsonError::Malformed("unterminated comment")),
        Some(b'/') => Ok(memchr::memchr(b'\n', &body[at..]).map_or(body.len(), |off| at + off + 1)),
        _ => Err(JsonError::Malformed("unexpected '/'")),
    }
}

/// The decoded start of a string is enough to rule it out; most strings are ruled out by
/// their first raw byte.
fn might_start_data_uri(raw: &[u8]) -> Result<bool, JsonError> {
    match raw.first() {
        Some(b'd' | b'D' | b'\\') => {}
        Some(c) if c.is_ascii_whitespace() => {}
        _ => return Ok(false),
    }
    Ok(datauri::starts_like_data_uri(&decode(raw, Some(256 + 5))?))
}

/// Decodes a string's contents as Ruby's `json` gem does (see the module docs); stops
/// after `limit` output bytes when given.
pub(crate) fn decode(raw: &[u8], limit: Option<usize>) -> Result<Vec<u8>, JsonError> {
    let mut out = Vec::with_capacity(limit.unwrap_or(raw.len()).min(raw.len()));
    let n = raw.len();
    let mut i = 0;
    while i < n && limit.is_none_or(|l| out.len() < l) {
        let c = raw[i];
        if c != b'\\' {
            if c < 0x20 {
                return Err(JsonError::Malformed("control character in a string"));
            }
            out.push(c);
            i += 1;
            continue;
        }
        let Some(&e) = raw.get(i + 1) else { return Err(JsonError::Malformed("bad escape in a string")) };
        let simple = match e {
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            b'b' => Some(8),
            b'f' => Some(12),
            b'u' => None,
            c if c < 0x20 => return Err(JsonError::Malformed("bad escape in a string")),
            // `"`, `\`, `/` and every unknown escape: the character itself.
            c => Some(c),
        };
        if let Some(byte) = simple {
            out.push(byte);
            i += 2;
            continue;
        }
        // `\u`: the parser reads four bytes past the `u` (the closing quote counts as one).
        if i + 5 > n {
            return Err(JsonError::Malformed("incomplete unicode escape"));
        }
        let mut cp = hex4(raw, i + 2);
        let mut j = i + 5; // the last of the four
        if cp & 0xFC00 == 0xD800 {
            j += 1;
            if n < 6 || j > n - 6 {
                return Err(JsonError::Malformed("incomplete surrogate pair"));
            }
            if raw[j] == b'\\' && raw[j + 1] == b'u' {
                let low = hex4(raw, j + 2);
                cp = ((cp & 0x3F) << 10) | ((((cp >> 6) & 0xF) + 1) << 16) | (low & 0x3FF);
                j += 5;
            } else {
                // No second escape: a `?`, and the byte after the first escape is lost.
                out.push(b'?');
                i = j + 1;
                continue;
            }
        }
        push_utf8(cp, &mut out);
        i = j + 1;
    }
    if let Some(l) = limit {
        out.truncate(l);
    }
    Ok(out)
}

/// Four hex digits at `at` (U+FFFD if any is not one; past the end reads as the quote).
fn hex4(raw: &[u8], at: usize) -> u32 {
    (at..at + 4).try_fold(0u32, |v, k| Some(v << 4 | u32::from(datauri::hex(*raw.get(k)?)?))).unwrap_or(0xFFFD)
}

/// UTF-8 of a code point, surrogates included (as the parser writes them).
fn push_utf8(cp: u32, out: &mut Vec<u8>) {
    match cp {
        0..=0x7F => out.push(cp as u8),
        0x80..=0x7FF => out.extend_from_slice(&[0xC0 | (cp >> 6) as u8, 0x80 | (cp & 0x3F) as u8]),
        0x800..=0xFFFF => {
            out.extend_from_slice(&[0xE0 | (cp >> 12) as u8, 0x80 | ((cp >> 6) & 0x3F) as u8, 0x80 | (cp & 0x3F) as u8])
        }
        _ => out.extend_from_slice(&[
            0xF0 | ((cp >> 18) & 0x07) as u8,
            0x80 | ((cp >> 12) & 0x3F) as u8,
            0x80 | ((cp >> 6) & 0x3F) as u8,
            0x80 | (cp & 0x3F) as u8,
        ]),
    }
}

/// The JSON string contents for `text` (without quotes).
fn escape_into(text: &[u8], out: &mut Vec<u8>) {
    for &b in text {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0..=0x1F => out.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
            _ => out.push(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(body: &str) -> Vec<String> {
        let mut seen = Vec::new();
        rewrite(body.as_bytes(), |t| {
            seen.push(String::from_utf8_lossy(t).into_owned());
            Ok(None)
        })
        .unwrap();
        seen
    }

    #[test]
    fn the_pre_check_sees_every_spelling_a_decoder_could_produce() {
        assert!(!may_hold_data_uri(br#"{"status":"hello","visibility":"public"}"#));
        assert!(may_hold_data_uri(br#"{"file":"data:image/jpeg;base64,x"}"#));
        assert!(may_hold_data_uri(br#"{"file":"DaTa:x"}"#));
        assert!(may_hold_data_uri(br#"{"file":"\u0064ata:x"}"#), "an escape means tokenizing");
        assert!(may_hold_data_uri(br#"{"file":"d\ata:x"}"#));
    }

    #[test]
    fn finds_data_uris_at_any_depth_through_escapes_and_comments() {
        let found = strings(
            r#"{"a": [{"b": "data:,1"}], /* "data:,fake" */ "c": "\u0064ata:,2", // "data:,x"
            "d": "d\ata:,3", "e": "DATA:,4", "f\u0022": " data:,5", "data:,6": 1, "g": "no data:,7"}"#,
        );
        assert_eq!(found, ["data:,1", "data:,2", "data:,3", "DATA:,4", " data:,5", "data:,6"]);
    }

    #[test]
    fn decodes_strings_as_rubys_json_gem_does() {
        let d = |s: &str| String::from_utf8_lossy(&decode(s.as_bytes(), None).unwrap()).into_owned();
        assert_eq!(d(r#"a\/b\\c\"d\n"#), "a/b\\c\"d\n");
        assert_eq!(d(r"\q\:"), "q:", "unknown escapes keep their character");
        assert_eq!(d(r"\u00e9\u0041"), "éA");
        assert_eq!(d(r"\uD83D\uDE00"), "😀");
        assert_eq!(d(r"\uZZZZA"), "\u{FFFD}A", "four bytes taken even when not hex");
        // A high surrogate without a second escape: `?`, and the next byte is swallowed.
        assert_eq!(d(r"\uD800XYZabc"), "?YZabc");
        // With a second escape that is no low surrogate, both make one non-ASCII character.
        assert!(!d(r"\uD800\u0041rest").contains('A'));
        assert!(decode(br"\uD800", None).is_err());
        assert!(decode(b"tab\there", None).is_err(), "raw control characters are refused");
    }

    #[test]
    fn rewrites_only_the_strings_it_is_given_and_keeps_every_other_byte() {
        let body = br#"{ "x" : 1 , "file" : "data:image\/png;base64,AAAA" /* c */, "y": "data:,keep" }"#;
        let out = rewrite(body, |t| Ok(t.starts_with(b"data:image").then(|| b"data:image/png;base64,\"BB\"".to_vec())))
            .unwrap()
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{ "x" : 1 , "file" : "data:image/png;base64,\"BB\"" /* c */, "y": "data:,keep" }"#
        );
    }

    #[test]
    fn refusals_name_the_key_and_bad_json_is_malformed() {
        let err = rewrite(br#"{"media": {"avatar": "data:,x"}}"#, |_| Err(MediaError::UnknownFormat)).unwrap_err();
        assert!(matches!(&err, JsonError::Refused { key, .. } if key == "avatar"), "{err}");
        for bad in [&br#"{"a": "data:,x"#[..], br#"{"a": /* "#, br#"{"a": 1 / 2}"#] {
            assert!(matches!(rewrite(bad, |_| Ok(None)), Err(JsonError::Malformed(_))));
        }
    }
}
