//! `application/x-www-form-urlencoded` bodies and query strings: every value that
//! decodes to a `data:` URI is scrubbed and written back percent-encoded.
//!
//! Rails reads a form body as Rack splits it: pairs at `&`, key and value at the first
//! `=`, `+` as a space, `%XX` as a byte. Rails 8 on Rack 2 (and every query string
//! parser of Rack 2) also splits at `;` when the text holds one, so a second reading is
//! checked too: the pieces between `;`s inside a pair. A `data:` URI has its own `;`
//! (`;base64`), which only survives that reading percent-encoded (`%3B`); both readings
//! see the same value once pavise has re-encoded it, because the rewrite encodes `;`.
//!
//! The query string matters as much as the body: Rails merges it into `params`, and a
//! small photo's `data:` URI fits in the 10 KiB Puma allows there.

use std::ops::Range;

use super::{MediaError, datauri};

/// Whether `raw` could hold a value decoding to a `data:` URI: a `%` (any letter may be
/// encoded) or the five bytes themselves.
pub fn may_hold_data_uri(raw: &[u8]) -> bool {
    memchr::memchr(b'%', raw).is_some() || super::json::has_data_colon(raw)
}

/// Why a form could not be rewritten.
#[derive(Debug, thiserror::Error)]
#[error("the data: URI in \"{key}\" was refused: {source}")]
pub struct FormRefusal {
    pub key: String,
    pub source: MediaError,
}

/// Calls `scrub` with every decoded value (in either reading) that starts like a `data:`
/// URI; where it returns new text, that value is replaced. `Ok(None)`: nothing changed.
pub fn rewrite(
    raw: &[u8],
    mut scrub: impl FnMut(&[u8]) -> Result<Option<Vec<u8>>, MediaError>,
) -> Result<Option<Vec<u8>>, FormRefusal> {
    let mut replacements: Vec<(Range<usize>, Vec<u8>)> = Vec::new();
    let mut visit = |key: Range<usize>, value: Range<usize>| -> Result<bool, FormRefusal> {
        let text = url_decode(&raw[value.clone()]);
        if !datauri::starts_like_data_uri(&text) {
            return Ok(false);
        }
        let key_text = || String::from_utf8_lossy(&url_decode(&raw[key.clone()])).into_owned();
        match scrub(&text).map_err(|source| FormRefusal { key: key_text(), source })? {
            Some(new) => {
                let mut encoded = Vec::with_capacity(new.len() + new.len() / 8);
                datauri::percent_encode(&new, &mut encoded);
                replacements.push((value, encoded));
                Ok(true)
            }
            None => Ok(false),
        }
    };
    for pair in split(raw, 0..raw.len(), b'&') {
        let (key, value) = key_value(raw, pair.clone());
        if visit(key, value)? {
            continue;
        }
        // The `;` reading: every piece after the first (which starts like the whole pair).
        for piece in split(raw, pair, b';').skip(1) {
            let (key, value) = key_value(raw, piece);
            visit(key, value)?;
        }
    }
    if replacements.is_empty() {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut copied = 0;
    for (range, new) in replacements {
        out.extend_from_slice(&raw[copied..range.start]);
        out.extend_from_slice(&new);
        copied = range.end;
    }
    out.extend_from_slice(&raw[copied..]);
    Ok(Some(out))
}

/// The pieces of `raw[range]` between `sep`s, as ranges of `raw`.
fn split(raw: &[u8], range: Range<usize>, sep: u8) -> impl Iterator<Item = Range<usize>> + '_ {
    let mut from = range.start;
    let end = range.end;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        match memchr::memchr(sep, &raw[from..end]) {
            Some(off) => {
                let piece = from..from + off;
                from += off + 1;
                Some(piece)
            }
            None => {
                done = true;
                Some(from..end)
            }
        }
    })
}

/// A pair's key and value: split at the first `=`; a pair without one is all key, and
/// its key is checked as a value too (Rack keeps it, with a nil value).
fn key_value(raw: &[u8], pair: Range<usize>) -> (Range<usize>, Range<usize>) {
    match memchr::memchr(b'=', &raw[pair.clone()]) {
        Some(off) => (pair.start..pair.start + off, pair.start + off + 1..pair.end),
        None => (pair.clone(), pair),
    }
}

/// `+` as a space, `%XX` as a byte; a stray `%` stays (as `CGI.unescape` keeps it).
pub fn url_decode(s: &[u8]) -> Vec<u8> {
    let plus: Vec<u8>;
    let s = if memchr::memchr(b'+', s).is_some() {
        plus = s.iter().map(|&b| if b == b'+' { b' ' } else { b }).collect();
        &plus[..]
    } else {
        s
    };
    datauri::percent_decode(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(raw: &str) -> Vec<String> {
        let mut out = Vec::new();
        rewrite(raw.as_bytes(), |t| {
            out.push(String::from_utf8_lossy(t).into_owned());
            Ok(None)
        })
        .unwrap();
        out
    }

    #[test]
    fn finds_data_uris_in_either_reading() {
        assert_eq!(seen("a=1&avatar=data:image/jpeg;base64,AA+B"), ["data:image/jpeg;base64,AA B"]);
        assert_eq!(seen("avatar=%64ata%3Aimage%2Fjpeg%3Bbase64%2CAA"), ["data:image/jpeg;base64,AA"]);
        // Rack 2's `;` reading: a second pair hidden after a `;`.
        assert_eq!(seen("note=hi;header=data:image/png%3Bbase64,iVBO"), ["data:image/png;base64,iVBO"]);
        assert_eq!(seen("data:image/png;base64,AAAA"), ["data:image/png;base64,AAAA"], "a bare key");
        assert!(seen("status=see+data:image/png;base64,xyz&x=1").is_empty(), "not at the start of a value");
    }

    #[test]
    fn rewritten_values_are_percent_encoded_in_place() {
        let raw = b"a=1&avatar=data:image/jpeg;base64,AAAA&b=2";
        let out = rewrite(raw, |_| Ok(Some(b"data:image/jpeg;base64,BB+/=".to_vec()))).unwrap().unwrap();
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "a=1&avatar=data%3Aimage%2Fjpeg%3Bbase64%2CBB%2B%2F%3D&b=2"
        );
        // Both readings now see one value, the new one.
        assert_eq!(seen(std::str::from_utf8(&out).unwrap()), ["data:image/jpeg;base64,BB+/="]);
    }

    #[test]
    fn a_refusal_names_the_decoded_key() {
        let err = rewrite(b"account%5Bavatar%5D=data:,x", |_| Err(MediaError::UnknownFormat)).unwrap_err();
        assert_eq!(err.key, "account[avatar]");
    }
}
