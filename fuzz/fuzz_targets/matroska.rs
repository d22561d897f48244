//! The in-place Matroska/WebM walker on arbitrary bytes: refuse or neutralise, never
//! panic, never change the length, and leave nothing for a second audit to find.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pavise::privacy::media::{Report, inplace::MemStore, matroska};

fuzz_target!(|data: &[u8]| {
    let mut buf = data.to_vec();
    if matroska::scrub(&mut MemStore(&mut buf), &mut Report::default()).is_ok() {
        assert_eq!(buf.len(), data.len());
        let mut check = Report::default();
        matroska::audit(&mut MemStore(&mut buf), &mut check).expect("output re-parses");
        assert!(check.removed.is_empty(), "{check:?}");
    }
});
