//! The png walker on arbitrary bytes: it may refuse, it must never panic, and what it
//! accepts must scrub to a fixed point.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pavise::privacy::media::{Report, png};

fuzz_target!(|data: &[u8]| {
    if let Ok(out) = png::scrub(data, &mut Report::default()) {
        let mut again = Report::default();
        let twice = png::scrub(&out, &mut again).expect("scrubbed output re-parses");
        assert_eq!(twice, out);
    }
});
