//! The public entry: sniff, dispatch, verify. Any input; refusals are fine, panics are not.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = pavise::privacy::media::scrub(data);
});
