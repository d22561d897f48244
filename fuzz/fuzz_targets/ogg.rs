//! The ogg walker on arbitrary bytes: it may refuse, it must never panic, and what it
//! accepts must scrub to a fixed point.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pavise::privacy::media::{Report, ogg};

fuzz_target!(|data: &[u8]| {
    if let Ok(out) = ogg::scrub(data, &mut Report::default()) {
        let mut again = Report::default();
        let twice = ogg::scrub(&out, &mut again).expect("scrubbed output re-parses");
        assert_eq!(twice, out);
    }
});
