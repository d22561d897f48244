//! In-process throughput of `pavise::privacy::media::scrub` (scrub + verification pass)
//! over a directory of files held in memory, so disk and process start-up do not count.
//!
//! `cargo run --example media_throughput --config 'profile.dev.package.pavise.opt-level=3' -- DIR [SECONDS]`
//! (scripts/bench-media runs it after the CLI comparison.)

use std::{collections::BTreeMap, time::Instant};

// An example prints its results by design.
#[allow(clippy::print_stdout)]
fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "../shared/corpus".into());
    let secs: f64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let mut files: Vec<Vec<u8>> = Vec::new();
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        if let Ok(bytes) = std::fs::read(entry.path())
            && pavise::privacy::media::scrub(&bytes).is_ok()
        {
            files.push(bytes);
        }
    }
    let mut by_format: BTreeMap<&'static str, (u64, u64, f64)> = BTreeMap::new();
    for f in &files {
        let Ok(format) = pavise::privacy::media::sniff(f) else { continue };
        let mut n = 0u64;
        let t = Instant::now();
        while t.elapsed().as_secs_f64() < secs / files.len() as f64 || n == 0 {
            let _ = std::hint::black_box(pavise::privacy::media::scrub(std::hint::black_box(f)));
            n += 1;
        }
        let e = by_format.entry(format.name()).or_default();
        e.0 += n;
        e.1 += n * f.len() as u64;
        e.2 += t.elapsed().as_secs_f64();
    }
    let (mut files_total, mut bytes_total, mut time_total) = (0, 0, 0.0);
    for (format, (n, bytes, t)) in &by_format {
        println!("{format:6} {:9.0} files/s {:8.0} MB/s", *n as f64 / t, *bytes as f64 / t / 1e6);
        files_total += n;
        bytes_total += bytes;
        time_total += t;
    }
    println!(
        "all    {:9.0} files/s {:8.0} MB/s  ({} scrubbable files, in memory, scrub + verification pass)",
        files_total as f64 / time_total,
        bytes_total as f64 / time_total / 1e6,
        files.len()
    );
}
