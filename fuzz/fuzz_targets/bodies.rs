//! The text-body readers on arbitrary bytes: JSON, form and query rewrites, `data:` URI
//! decoding and the Content-Type reading. The first byte picks the reader. Invariants: no
//! panic; Ruby's base64 decoder reads back what a standard encoder wrote; and a rewritten
//! body is a fixed point (rewriting it again changes nothing).
#![no_main]

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use pavise::privacy::media::{body::BodyKind, datauri, form, json};

fn scrub(text: &[u8]) -> Result<Option<Vec<u8>>, pavise::privacy::media::MediaError> {
    datauri::scrub_value(text, 1 << 20).map(|r| r.map(|r| r.text))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode % 4 {
        0 => {
            if let Ok(Some(out)) = json::rewrite(rest, scrub) {
                match json::rewrite(&out, scrub) {
                    Ok(None) => {}
                    Ok(Some(again)) => assert_eq!(again, out, "a JSON rewrite is a fixed point"),
                    Err(e) => panic!("the rewritten JSON no longer reads: {e}"),
                }
            }
        }
        1 => {
            if let Ok(Some(out)) = form::rewrite(rest, scrub) {
                match form::rewrite(&out, scrub) {
                    Ok(None) => {}
                    Ok(Some(again)) => assert_eq!(again, out, "a form rewrite is a fixed point"),
                    Err(e) => panic!("the rewritten form no longer reads: {e}"),
                }
            }
        }
        2 => {
            let encoded = base64::engine::general_purpose::STANDARD.encode(rest);
            assert_eq!(datauri::ruby_decode64(encoded.as_bytes()), rest);
            let _ = datauri::ruby_decode64(rest);
            let _ = scrub(rest);
        }
        _ => {
            if let Ok(v) = http::HeaderValue::from_bytes(rest) {
                let mut h = http::HeaderMap::new();
                h.insert(http::header::CONTENT_TYPE, v);
                let _ = BodyKind::of(&h);
            }
        }
    }
});
