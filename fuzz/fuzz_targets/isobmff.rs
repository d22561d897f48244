//! The in-place ISOBMFF walker on arbitrary bytes: refuse or neutralise, never panic,
//! never change the length, and leave nothing for a second audit to find.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pavise::privacy::media::{Format, Report, inplace::MemStore, isobmff};

fuzz_target!(|data: &[u8]| {
    for format in [Format::Video, Format::Heif] {
        let mut buf = data.to_vec();
        if isobmff::scrub(&mut MemStore(&mut buf), format, &mut Report::default()).is_ok() {
            assert_eq!(buf.len(), data.len());
            let mut check = Report::default();
            isobmff::audit(&mut MemStore(&mut buf), format, &mut check).expect("output re-parses");
            assert!(check.removed.is_empty(), "{check:?}");
        }
    }
});
