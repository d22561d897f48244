//! The multipart rewrite on arbitrary bodies under a fixed boundary: refuse or rewrite,
//! never panic, and leave no temp file behind.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pavise::privacy::media::{MediaConfig, multipart::Scrubber};

fn scrubber() -> &'static (Scrubber, tempfile_dir::Dir) {
    static S: OnceLock<(Scrubber, tempfile_dir::Dir)> = OnceLock::new();
    S.get_or_init(|| {
        let dir = tempfile_dir::Dir::new();
        let mut config = MediaConfig::default();
        // Small, so fuzzed parts also take the spill-to-disk path.
        config.spill_threshold = pavise::units::Size(256);
        config.min_spill = pavise::units::Size(64);
        (Scrubber::new(config, &dir.0).expect("temp dir"), dir)
    })
}

mod tempfile_dir {
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Dir {
            let p = std::env::temp_dir().join(format!("pavise-fuzz-{}", std::process::id()));
            std::fs::create_dir_all(&p).expect("temp dir");
            Dir(p)
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let (scrubber, dir) = scrubber();
    let body = pavise::proxy::full(bytes::Bytes::copy_from_slice(data));
    rt.block_on(async {
        let mut mem = scrubber.request(None, true);
        let _ = scrubber.rewrite_multipart(body, "XyZ", "form-data", &mut mem).await;
    });
    let left = std::fs::read_dir(dir.0.join("media-tmp")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "temp files left behind");
});
