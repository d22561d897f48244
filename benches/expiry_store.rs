//! Embedded-store throughput for the expiry schedule (run by `scripts/bench-expiry`).
//!
//! Measures schedule inserts per second three ways — one client at a time (one fsync
//! each), 64 concurrent clients (what a busy instance looks like: the writer thread
//! group-commits them), and batches of 1,000 (`pavise expiry sweep`) — then fills the
//! store to `--count` pending deletions for the script's RSS and restart measurements.
//!
//! Usage: cargo bench --bench expiry_store -- --dir DIR [--count 1000000]

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::{sync::Arc, time::Instant};

use pavise::store::{EmbeddedStore, ScheduleStore, Scheduled, SealedCredential, now_ms};

fn item(i: u64, base: u64) -> Scheduled {
    let mut s = Scheduled::pending(
        format!("{}", 110_000_000_000_000u64 + i),
        "alice",
        "direct-messages",
        base,
        base + 30 * 86_400_000 + i,
    );
    s.credential = Some("c0ffee".into());
    s.host = Some("example.social".into());
    s
}

fn cred() -> SealedCredential {
    SealedCredential { id: "c0ffee".into(), account: "alice".into(), sealed: vec![7; 60] }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let Some(dir) = arg("--dir") else {
        println!("usage: cargo bench --bench expiry_store -- --dir DIR [--count N]");
        return;
    };
    let count: u64 = arg("--count").and_then(|c| c.parse().ok()).unwrap_or(1_000_000);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let store = Arc::new(EmbeddedStore::open(std::path::Path::new(&dir), 16 << 20).unwrap());
        let base = now_ms();
        store.schedule(vec![(item(0, base), Some(cred()))]).await.unwrap();
        let mut next = 1u64;

        // One client at a time: every insert waits for its own fsync.
        let n = 500;
        let t = Instant::now();
        for _ in 0..n {
            store.schedule(vec![(item(next, base), Some(cred()))]).await.unwrap();
            next += 1;
        }
        let serial = n as f64 / t.elapsed().as_secs_f64();
        println!("serial single inserts:      {n:>8} in {:>7.2?} = {serial:>9.0}/s", t.elapsed());

        // 64 concurrent clients, one insert per request, as status creations arrive.
        let (clients, per) = (64u64, 500u64);
        let t = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..clients {
            let store = store.clone();
            let start = next + c * per;
            tasks.push(tokio::spawn(async move {
                for i in start..start + per {
                    store.schedule(vec![(item(i, base), Some(cred()))]).await.unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        next += clients * per;
        let concurrent = (clients * per) as f64 / t.elapsed().as_secs_f64();
        println!("64 concurrent clients:      {:>8} in {:>7.2?} = {concurrent:>9.0}/s", clients * per, t.elapsed());

        // Batches of 1,000 (a sweep), up to the requested total.
        let t = Instant::now();
        let first = next;
        while next < count {
            let end = (next + 1000).min(count);
            let batch = (next..end).map(|i| (item(i, base), Some(cred()))).collect();
            store.schedule(batch).await.unwrap();
            next = end;
        }
        let filled = next - first;
        if filled > 0 {
            let batched = filled as f64 / t.elapsed().as_secs_f64();
            println!("batched (1000 per commit):  {filled:>8} in {:>7.2?} = {batched:>9.0}/s", t.elapsed());
        }
        let counts = store.counts().await.unwrap();
        println!("pending now: {}", counts.by_state["pending"]);
        let size = std::fs::metadata(store.path()).map(|m| m.len()).unwrap_or(0);
        println!("store file: {:.1} MiB", size as f64 / (1u64 << 20) as f64);
    });
}
