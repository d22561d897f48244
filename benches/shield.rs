//! Shield limiter figures: decisions per second on one core, and memory at 1,000,000
//! distinct keys (the anchor: ≥ 1M decisions/s/core, ≤ 100 MB at 1M keys).
//!
//! Run: `cargo bench --bench shield` (release), or, on a machine without a warm release
//! build, the dev profile with the hot crates optimized:
//! `cargo test --bench shield --config 'profile.dev.package.pavise.opt-level=3' ... -- --bench`
//! (README.md, "Shield", has the exact command behind the published figures). Without
//! `--bench` it is a quick smoke run, as under `cargo test --all-targets`.

// A bench's output is its figures.
#![allow(clippy::print_stdout)]

use std::{hint::black_box, net::IpAddr, time::Instant};

use pavise::{
    proxy::contract::RouteClass,
    shield::{
        limiter::{KeyHasher, Limiter},
        policy::{KeyKind, LimitRule},
        wave::{WaveDetector, WaveParams},
    },
};

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

fn rule(cap_rate: &str) -> LimitRule {
    let (count, per) =
        pavise::shield::policy::parse_rate(cap_rate).unwrap_or((300, std::time::Duration::from_secs(60)));
    LimitRule {
        name: "bench".into(),
        route: RouteClass::Inbox,
        key: KeyKind::RemoteDomain,
        count,
        per,
        burst: count,
        methods: vec![],
        paths: vec![],
        file: "bench.toml".into(),
    }
}

fn rate(n: u64, started: Instant) -> f64 {
    n as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    // `cargo bench` passes `--bench`; under `cargo test --all-targets` this is a smoke run.
    let full = std::env::args().any(|a| a == "--bench");
    let keys: u64 = if full { 1_000_000 } else { 20_000 };
    let n: u64 = if full { 5_000_000 } else { 100_000 };
    let hasher = KeyHasher::default();
    // Tables are kept alive to the end: each RSS delta is memory newly taken, never memory
    // a previous phase freed and this one reused.

    // The default cap under a 1M-key flood: memory stays at the cap.
    let before = rss_bytes();
    let capped = Limiter::new(rule("300/min"), 250_000);
    for k in 0..keys {
        black_box(capped.check(hasher.hash(3, k + 10 * keys)).is_ok());
    }
    let after = rss_bytes();
    println!(
        "{keys} distinct keys against the default cap (250k): {} keys kept, RSS +{:.1} MB",
        capped.keys(),
        (after.saturating_sub(before)) as f64 / 1e6
    );

    // Memory: a million distinct keys, table large enough to hold them all.
    let before = rss_bytes();
    let limiter = Limiter::new(rule("300/min"), 1_100_000);
    let started = Instant::now();
    for k in 0..keys {
        black_box(limiter.check(hasher.hash(3, k)).is_ok());
    }
    let insert_rate = rate(keys, started);
    let after = rss_bytes();
    let mb = (after.saturating_sub(before)) as f64 / 1e6;
    println!(
        "{keys} distinct keys (cap 1.1M): {} keys, RSS +{mb:.1} MB ({:.0} B/key), inserting at {:.2} M decisions/s",
        limiter.keys(),
        (after.saturating_sub(before)) as f64 / keys as f64,
        insert_rate / 1e6
    );

    // Decisions on known keys, spread over the million (cache-unfriendly: the worst case).
    let started = Instant::now();
    for i in 0..n {
        black_box(limiter.check(hasher.hash(3, (i * 7919) % keys)).is_ok());
    }
    println!("known keys, {keys}-key table: {:.2} M decisions/s on one core (hash + GCRA)", rate(n, started) / 1e6);

    // A realistic hot set: 10,000 clients.
    let hot = Limiter::new(rule("300/min"), 250_000);
    let started = Instant::now();
    for i in 0..n {
        black_box(hot.check(hasher.hash(1, (i % 10_000) as u32)).is_ok());
    }
    println!("10k hot keys: {:.2} M decisions/s on one core", rate(n, started) / 1e6);

    // What the stage does per non-inbox request: hash a pseudonym, one GCRA decision.
    let ip: IpAddr = "2001:db8::1".parse().unwrap_or(IpAddr::from([0u8; 16]));
    let started = Instant::now();
    for _ in 0..n {
        black_box(hot.check(hasher.hash(1, black_box(ip))).is_ok());
    }
    println!("one client pseudonym (IpAddr hash + decision): {:.2} M decisions/s", rate(n, started) / 1e6);

    // The wave detector under a million fresh senders on 10,000 accounts.
    let before = rss_bytes();
    let waves = WaveDetector::new(10_000, std::time::Duration::from_secs(7 * 86_400));
    let params = WaveParams {
        window: std::time::Duration::from_secs(600),
        distinct: 20,
        shield_for: std::time::Duration::from_secs(7200),
        memory: std::time::Duration::from_secs(7 * 86_400),
        per_domain: 10,
        max_shield: std::time::Duration::from_secs(12 * 3600),
    };
    let now = Instant::now();
    let started = Instant::now();
    let names: Vec<String> = (0..10_000).map(|i| format!("victim{i}")).collect();
    for i in 0..keys {
        let account = &names[(i % 10_000) as usize];
        black_box(waves.observe(account, i, "remote.example", now, &params));
    }
    let obs_rate = rate(keys, started);
    let (windows, shields) = waves.entries();
    let after = rss_bytes();
    println!(
        "wave detector, {keys} senders on 10k accounts: {windows} windows, {shields} shields, RSS +{:.1} MB, {:.2} M observations/s",
        (after.saturating_sub(before)) as f64 / 1e6,
        obs_rate / 1e6
    );

    // Reading the worst delivery Mastodon accepts (~1 MiB, 55,000 distinct addressees):
    // bounded work, linear in what is read (the stage does it on the blocking pool).
    let cc: Vec<String> = (0..55_000).map(|i| format!("http://r/{i}")).collect();
    let body = serde_json::json!({
        "@context": "https://www.w3.org/ns/activitystreams", "type": "Create", "actor": "https://r0.x/a",
        "cc": cc, "object": {"id": "https://r0.x/a/notes/1", "type": "Note", "content": "x"},
    })
    .to_string();
    let locals = pavise::shield::mention::LocalHosts::new(["local.example"]);
    let rounds = if full { 50 } else { 3 };
    let started = Instant::now();
    let mut total = 0;
    for _ in 0..rounds {
        if let pavise::shield::document::Reading::Exact(doc) =
            pavise::shield::document::read(black_box(body.as_bytes()))
        {
            total += black_box(pavise::shield::mention::read(&doc, &locals)).total;
        }
    }
    println!(
        "a {} KiB delivery with 55,000 addressees: {:.1} ms to read (body + addressing), {} addressees counted",
        body.len() / 1024,
        started.elapsed().as_secs_f64() * 1e3 / rounds as f64,
        total / rounds
    );
}
