//! Embedded-store throughput for the expiry schedule. The measurement itself lives in
//! `pavise::expiry::cli::bench_store` so the release binary can run it too
//! (`pavise expiry bench-store`, which `scripts/bench-expiry` uses: no extra build).
//!
//! Usage: cargo bench --bench expiry_store -- --dir DIR [--count 1000000]

#![allow(clippy::unwrap_used, clippy::print_stdout)]

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let Some(dir) = arg("--dir") else {
        println!("usage: cargo bench --bench expiry_store -- --dir DIR [--count N]");
        return;
    };
    let count: u64 = arg("--count").and_then(|c| c.parse().ok()).unwrap_or(1_000_000);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let out = rt.block_on(pavise::expiry::cli::bench_store(std::path::Path::new(&dir), count)).unwrap();
    print!("{out}");
}
