//! Several nodes, one instance (`[cluster]`): real PostgreSQL and Redis servers started
//! here on loopback (initdb/pg_ctl in a temp dir, `redis-server --save '' --appendonly
//! no`), real pavise nodes in front of a recording instance, real signed deliveries.
//! Under CI=true a missing server binary is a failure, never a skip (scripts/deps
//! installs both).

use std::{
    collections::HashSet,
    net::IpAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::Full;
use pavise::{
    cluster::{ClusterConfig, journal::JournaledStore, redis::Shared},
    store::{
        CredentialStore, EmbeddedStore, ExpiryState, Outcome, ScheduleStore, Scheduled, SealedCredential, StoreKey,
        now_ms, postgres::PostgresStore,
    },
};

use crate::{
    shield::{ActorServer, LOCAL, MASTODON_UA, admin_get, deliver, note, policies, rsa_key, start_with},
    support::{Pavise, RecordingUpstream, send_from, text},
};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A binary of a server this module needs, or None (a skip) outside CI.
fn server_binary(name: &str, candidates: &[PathBuf]) -> Option<PathBuf> {
    let found = candidates.iter().find(|p| p.is_file()).cloned();
    if found.is_none() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{name} is missing under CI=true (run scripts/deps)");
        eprintln!("skipping: {name} is not installed (scripts/deps installs it)");
    }
    found
}

fn pg_bin(name: &str) -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin").join(name))
        .collect();
    candidates.sort();
    candidates.reverse();
    candidates.push(PathBuf::from("/usr/bin").join(name));
    server_binary(name, &candidates)
}

/// PostgreSQL refuses to run as root: a root test run (a container) runs its server as the
/// `postgres` user scripts/deps' package creates.
fn pg_command(bin: &Path) -> Command {
    if rustix::process::geteuid().is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

/// A PostgreSQL cluster of its own in a temp dir, on a loopback port, trust auth.
struct Postgres {
    dir: tempfile::TempDir,
    port: u16,
    pg_ctl: PathBuf,
}

impl Postgres {
    fn start() -> Option<Postgres> {
        let initdb = pg_bin("initdb")?;
        let pg_ctl = pg_bin("pg_ctl")?;
        let dir = tempfile::tempdir().unwrap();
        if rustix::process::geteuid().is_root() {
            let ok = Command::new("chown").arg("postgres").arg(dir.path()).status().unwrap();
            assert!(ok.success(), "chown postgres");
        }
        let out = pg_command(&initdb)
            .args(["-D"])
            .arg(dir.path().join("data"))
            .args(["-U", "pavise", "--auth=trust", "--no-sync", "-E", "UTF8"])
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let pg = Postgres { dir, port: free_port(), pg_ctl };
        pg.ctl_start();
        Some(pg)
    }

    fn ctl_start(&self) {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c full_page_writes=off",
            self.port,
            self.dir.path().display()
        );
        let out = pg_command(&self.pg_ctl)
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-o", &opts, "-l"])
            .arg(self.dir.path().join("log"))
            .args(["-w", "-t", "30", "start"])
            .stdout(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "pg_ctl start: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn ctl_stop(&self) {
        let _ = pg_command(&self.pg_ctl)
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    fn url(&self) -> String {
        format!("postgres://pavise@127.0.0.1:{}/postgres", self.port)
    }

    async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        client
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.ctl_stop();
    }
}

/// A Redis of its own, persistence off (or on, for the refusal test).
struct Redis {
    child: Option<Child>,
    port: u16,
    persistent: bool,
    dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Option<Redis> {
        Self::start_with(false)
    }

    fn start_with(persistent: bool) -> Option<Redis> {
        server_binary("redis-server", &[PathBuf::from("/usr/bin/redis-server")])?;
        let mut r = Redis { child: None, port: free_port(), persistent, dir: tempfile::tempdir().unwrap() };
        r.spawn();
        Some(r)
    }

    fn spawn(&mut self) {
        let port = self.port.to_string();
        let mut cmd = Command::new("/usr/bin/redis-server");
        cmd.args(["--port", &port, "--bind", "127.0.0.1", "--dir"]).arg(self.dir.path());
        if self.persistent {
            cmd.args(["--save", "3600 1", "--appendonly", "yes"]);
        } else {
            cmd.args(["--save", "", "--appendonly", "no"]);
        }
        self.child = Some(cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap());
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/3", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

fn store_key(secret: u8) -> StoreKey {
    StoreKey::new(&[secret; 32])
}

fn item(id: &str, deadline: u64, cred: Option<&str>) -> Scheduled {
    let mut s = Scheduled::pending(id, "alice", "dm-7d", deadline.saturating_sub(1000), deadline);
    s.credential = cred.map(str::to_owned);
    s
}

fn cred(id: &str) -> SealedCredential {
    SealedCredential { id: id.into(), account: "alice".into(), sealed: b"sealed-token-bytes".to_vec() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_claims_each_due_item_once_across_nodes_and_a_dead_nodes_claims_come_back() {
    let Some(pg) = Postgres::start() else { return };
    let key = store_key(7);
    let a = PostgresStore::connect(&pg.url(), &key, "node-a").await.unwrap();
    let b = PostgresStore::connect(&pg.url(), &key, "node-b").await.unwrap();
    assert_eq!(a.info().await.unwrap().schema_version, pavise::store::postgres::SCHEMA_VERSION);

    // 300 posts due now, one credential shared by all, scheduled through node a.
    let now = now_ms();
    let items: Vec<_> =
        (0..300).map(|i| (item(&format!("11{i:04}"), now - 10, Some("cred-1")), Some(cred("cred-1")))).collect();
    a.schedule(items).await.unwrap();
    assert_eq!(b.credential_count().await.unwrap(), 1, "one copy of the token, shared");

    // Both nodes claim at once, in small batches: every item exactly once.
    let claim = |s: PostgresStore| async move {
        let mut got = Vec::new();
        loop {
            let batch = s.claim_due(now_ms(), 7, 60_000).await.unwrap();
            if batch.is_empty() {
                break got;
            }
            got.extend(batch.into_iter().map(|i| i.status_id));
        }
    };
    let (ga, gb) = tokio::join!(claim(a.clone()), claim(b.clone()));
    assert!(!ga.is_empty() && !gb.is_empty(), "both nodes claimed some: {} {}", ga.len(), gb.len());
    let all: HashSet<_> = ga.iter().chain(&gb).cloned().collect();
    assert_eq!(ga.len() + gb.len(), 300, "no item claimed twice");
    assert_eq!(all.len(), 300, "every item claimed");

    // Settle them (the instance answered, then confirmed gone): the credential goes with the last.
    for id in &all {
        assert!(b.settle(id, Outcome::Gone).await.unwrap());
    }
    let counts = a.counts().await.unwrap();
    assert_eq!((counts.gone, counts.by_state["claimed"]), (300, 0), "{counts:?}");
    assert_eq!(a.credential_count().await.unwrap(), 0, "no token outlives what needed it");

    // Node a claims, then dies before settling (its claims are leases, nothing else).
    // Ids long enough that no key check or ciphertext in the dump below holds one by chance.
    a.schedule((0..5).map(|i| (item(&format!("11000000000022{i}"), now - 10, None), None)).collect()).await.unwrap();
    let held = a.claim_due(now_ms(), 100, 1500).await.unwrap();
    assert_eq!(held.len(), 5);
    drop(a);
    assert!(b.claim_due(now_ms(), 100, 60_000).await.unwrap().is_empty(), "leased to the dead node");
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let taken: HashSet<_> =
        b.claim_due(now_ms(), 100, 60_000).await.unwrap().into_iter().map(|i| i.status_id).collect();
    assert_eq!(taken.len(), 5, "the dead node's claims came back after the lease");
    for id in &taken {
        b.settle(id, Outcome::Deleted { confirm_at: now_ms() + 60_000 }).await.unwrap();
    }
    assert_eq!(b.lookup("110000000000220").await.unwrap().unwrap().state, ExpiryState::Deleted);

    // Sealed at rest: no status id, account name or token in any row.
    let raw = pg.client().await;
    let mut dump = Vec::new();
    for table in ["expiry_items", "expiry_credentials", "pavise_meta"] {
        for row in raw.query(&format!("SELECT * FROM {table}"), &[]).await.unwrap() {
            for i in 0..row.len() {
                if let Ok(Some(bytes)) = row.try_get::<_, Option<Vec<u8>>>(i) {
                    dump.extend(bytes);
                } else if let Ok(Some(text)) = row.try_get::<_, Option<String>>(i) {
                    dump.extend(text.into_bytes());
                }
            }
        }
    }
    let dump = String::from_utf8_lossy(&dump);
    for clear in ["110000000000220", "alice", "dm-7d", "sealed-token-bytes"] {
        assert!(!dump.contains(clear), "{clear:?} is in the database in clear");
    }
    let version: i32 = raw.query_one("SELECT version FROM pavise_schema", &[]).await.unwrap().get(0);
    assert_eq!(version, pavise::store::postgres::SCHEMA_VERSION);

    // A node with another key file is refused, saying why.
    let err = PostgresStore::connect(&pg.url(), &store_key(8), "node-c").await.unwrap_err().to_string();
    assert!(err.contains("same expiry key file"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_posts_are_journaled_locally_and_replayed_when_it_returns() {
    let Some(pg) = Postgres::start() else { return };
    let key = store_key(9);
    let dir = tempfile::tempdir().unwrap();
    let local = EmbeddedStore::open_sealed(dir.path(), 1 << 20, store_key(9)).unwrap();
    let store = JournaledStore::new(PostgresStore::connect(&pg.url(), &key, "node-a").await.unwrap(), local).await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let replay = tokio::spawn(pavise::cluster::journal::replay(store.clone(), shutdown.clone()));

    let deadline = now_ms() + 3_000;
    store.schedule(vec![(item("900", deadline, Some("c9")), Some(cred("c9")))]).await.unwrap();
    pg.ctl_stop();
    // Posting while PostgreSQL is down: every write still succeeds (journaled, durable).
    for i in 1..=5 {
        store.schedule(vec![(item(&format!("90{i}"), deadline, Some("c9")), Some(cred("c9")))]).await.unwrap();
    }
    assert!(store.postgres_down());
    assert_eq!(store.journaled(), 5);
    assert!(store.claim_due(now_ms(), 10, 1000).await.is_err(), "the scheduler waits");
    // The node still knows the journaled posts (the edge keeps hiding them).
    assert_eq!(store.lookup("903").await.unwrap().unwrap().deadline, deadline);

    pg.ctl_start();
    let t0 = Instant::now();
    while store.journaled() > 0 || store.postgres_down() {
        assert!(t0.elapsed() < Duration::from_secs(20), "journal not replayed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // All six are in PostgreSQL, with their token, and become due at their deadline.
    let other = PostgresStore::connect(&pg.url(), &key, "node-b").await.unwrap();
    for i in 0..=5 {
        let got = other.lookup(&format!("90{i}")).await.unwrap().expect("replayed");
        assert_eq!((got.deadline, got.credential.as_deref()), (deadline, Some("c9")));
    }
    assert_eq!(other.credential_count().await.unwrap(), 1);
    tokio::time::sleep(Duration::from_millis(deadline.saturating_sub(now_ms()) + 50)).await;
    assert_eq!(other.claim_due(now_ms(), 100, 60_000).await.unwrap().len(), 6, "every post still expires");
    shutdown.cancel();
    replay.await.unwrap();
}

/// `pavise expiry list` on a stopped node of a cluster reads PostgreSQL, where the schedule
/// is, not the node's own redb file (only a journal there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_list_on_a_cluster_node_reads_the_shared_schedule() {
    let Some(pg) = Postgres::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("expiry.key");
    let key = pavise::expiry::seal::Sealer::load_or_create(&key_file).unwrap().store_key();
    let other_node = PostgresStore::connect(&pg.url(), &key, "node-b").await.unwrap();
    let deadline = now_ms() + 3_600_000;
    let items = (0..3).map(|i| (item(&format!("70{i}"), deadline, None), None)).collect();
    other_node.schedule(items).await.unwrap();
    let config = dir.path().join("pavise.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {data:?}\n[admin]\nlisten = \"127.0.0.1:{port}\"\n[expiry]\nkey_file = {key:?}\n\
             [cluster]\npostgres = {pg:?}\nredis = \"redis://127.0.0.1:1\"\nnode = \"node-a\"\n",
            data = dir.path().join("data"),
            port = free_port(),
            key = key_file,
            pg = pg.url(),
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pavise"))
        .args(["expiry", "--config"])
        .arg(&config)
        .arg("list")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(r#""pending":3"#), "the shared schedule: {stdout}");
}

fn cluster_cfg(pg: &Postgres, redis: &Redis, node: &str) -> ClusterConfig {
    ClusterConfig {
        postgres: Some(pg.url()),
        redis: Some(redis.url()),
        node: Some(node.into()),
        // The tests are about sharing, not the 5 ms default: on a loaded 2-core CI machine a
        // Redis round trip past 5 ms makes a node decide alone (by design), which is not what
        // these tests look at.
        redis_budget: pavise::units::Span(std::time::Duration::from_millis(500)),
        ..ClusterConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persisting_redis_is_refused_unless_allowed() {
    let Some(redis) = Redis::start_with(true) else { return };
    let mut cfg = ClusterConfig {
        postgres: Some("postgres://unused@127.0.0.1/x".into()),
        redis: Some(redis.url()),
        ..ClusterConfig::default()
    };
    let err = Shared::connect(&cfg, &[1; 32]).await.unwrap_err().to_string();
    assert!(err.contains("persists its data to disk") && err.contains("allow_persistent_redis"), "{err}");
    assert!(err.contains("seizes that disk"), "the error explains the trade-off: {err}");
    cfg.allow_persistent_redis = true;
    assert!(Shared::connect(&cfg, &[1; 32]).await.is_ok());
}

/// Two nodes in front of one recording instance, sharing one key file, one PostgreSQL and
/// one Redis.
async fn two_nodes(
    upstream: &RecordingUpstream,
    pg: &Postgres,
    redis: &Redis,
    policy_dir: &Path,
    key_dir: &Path,
    rotate: Duration,
) -> (Pavise, Pavise) {
    let mut nodes = Vec::new();
    for name in ["node-a", "node-b"] {
        let cluster = cluster_cfg(pg, redis, name);
        let key_file = key_dir.join("expiry.key");
        nodes.push(
            start_with(upstream, policy_dir, move |f| {
                f.cluster = cluster;
                f.expiry.key_file = Some(key_file);
                f.client_ip.rotate = pavise::units::Span(rotate);
            })
            .await,
        );
    }
    let b = nodes.pop().unwrap();
    (nodes.pop().unwrap(), b)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn get(path: &str) -> http::Request<Full<Bytes>> {
    http::Request::get(path).header("host", LOCAL).body(Full::new(Bytes::new())).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_one_wave_one_pseudonym_one_limit() {
    let (Some(pg), Some(redis)) = (Postgres::start(), Redis::start()) else { return };
    let key = rsa_key(0);
    let upstream = RecordingUpstream::with_handler(|_| text(202, "")).await;
    let policy_dir = tempfile::tempdir().unwrap();
    policies(
        policy_dir.path(),
        r#"
[wave]
window           = "10m"
distinct_senders = 10
familiar_after   = "2s"
shield_for       = "10m"
action           = "defer"
hellthread       = 0
retry_after      = "1s"

[[limit]]
name  = "logins"
route = "auth"
key   = "client"
rate  = "20/1m"
methods = ["POST"]
paths = ["/auth/sign_in"]
"#,
    );
    let key_dir = tempfile::tempdir().unwrap();
    let (a, b) = two_nodes(&upstream, &pg, &redis, policy_dir.path(), key_dir.path(), Duration::from_secs(3)).await;
    let nodes = [&a, &b];
    let friends = ActorServer::start("127.0.0.4", key).await;
    let trolls = ActorServer::start("127.0.0.3", key).await;

    // A friend writes to bob through node a before the wave, twice, half of familiar_after
    // apart (what makes a sender familiar), and becomes familiar to both nodes.
    let friend = friends.actor("friend");
    for (i, pause) in [(0, 1100), (1, 1200)] {
        let hello = note(&friend, &["bob"], &format!("hello{i}"));
        let (resp, _) = deliver(&a, "127.0.0.4", key, &friend, &hello, MASTODON_UA).await;
        assert_eq!(resp.status, 202);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }

    // 40 fresh actors mention alice, alternating between the nodes: each node alone sees
    // 20 (over its own threshold only after its tenth), the cluster counts 40.
    let mut passed = 0;
    let mut deferred_from = Vec::new();
    for i in 0..40 {
        let node = nodes[i % 2];
        let actor = trolls.actor(&format!("troll{i}"));
        let (resp, _) =
            deliver(node, "127.0.0.3", key, &actor, &note(&actor, &["alice"], &format!("t{i}")), MASTODON_UA).await;
        match resp.status.as_u16() {
            202 => {
                assert!(deferred_from.is_empty(), "troll{i} passed after the shield went up");
                passed += 1;
            }
            429 => deferred_from.push(i),
            other => panic!("troll{i}: {other}"),
        }
    }
    assert_eq!(passed, 10, "the threshold is counted across both nodes, not per node");
    for node in nodes {
        let friend_note = note(&friend, &["alice"], "friend-during-wave");
        let (resp, _) = deliver(node, "127.0.0.4", key, &friend, &friend_note, MASTODON_UA).await;
        assert_eq!(resp.status, 202, "a familiar sender passes through either node");
    }

    // One client address, either node: the same pseudonym; after a rotation, both agree on
    // the new one.
    let client = ip("127.0.0.77");
    let mut seen = Vec::new();
    for node in nodes {
        send_from(client, node.addr, get("/api/v1/timelines/public")).await;
        seen.push(upstream.last().headers["x-forwarded-for"].to_str().unwrap().to_owned());
    }
    // A period boundary may fall between the two: then both must agree in the next one.
    if seen[0] != seen[1] {
        seen.clear();
        for node in nodes {
            send_from(client, node.addr, get("/api/v1/timelines/public")).await;
            seen.push(upstream.last().headers["x-forwarded-for"].to_str().unwrap().to_owned());
        }
    }
    assert_eq!(seen[0], seen[1], "the same client gets the same pseudonym through either node");
    assert!(!seen[0].contains("127.0.0.77"));
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let mut after = Vec::new();
    for node in nodes {
        send_from(client, node.addr, get("/api/v1/timelines/public")).await;
        after.push(upstream.last().headers["x-forwarded-for"].to_str().unwrap().to_owned());
    }
    assert_eq!(after[0], after[1], "after the rotation both nodes agree on the new pseudonym");
    assert_ne!(after[0], seen[0], "and it is a new one");

    // A limit of 20 a minute holds across both nodes (not 20 each).
    let flooder = ip("127.0.0.60");
    let mut allowed = 0;
    for i in 0..60 {
        let req = http::Request::post("/auth/sign_in")
            .header("host", LOCAL)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from_static(b"username=x&password=y")))
            .unwrap();
        let (resp, _) = send_from(flooder, nodes[i % 2].addr, req).await;
        if resp.status != 429 {
            allowed += 1;
        }
    }
    assert!((18..=22).contains(&allowed), "20/min across two nodes, ±10%: {allowed}");

    let report = admin_get(&b, "/readyz").await;
    assert_eq!(report["checks"]["cluster"]["detail"], "postgresql and redis answer", "{report}");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_limits_fall_back_per_node_and_readyz_says_degraded() {
    let (Some(pg), Some(mut redis)) = (Postgres::start(), Redis::start()) else { return };
    let upstream = RecordingUpstream::start().await;
    let policy_dir = tempfile::tempdir().unwrap();
    policies(
        policy_dir.path(),
        r#"
[[limit]]
name  = "logins"
route = "auth"
key   = "client"
rate  = "5/1h"
methods = ["POST"]
paths = ["/auth/sign_in"]
"#,
    );
    let key_dir = tempfile::tempdir().unwrap();
    let cluster = cluster_cfg(&pg, &redis, "solo");
    let key_file = key_dir.path().join("expiry.key");
    let node = start_with(&upstream, policy_dir.path(), move |f| {
        f.cluster = cluster;
        f.expiry.key_file = Some(key_file);
    })
    .await;
    let login = || {
        http::Request::post("/auth/sign_in")
            .header("host", LOCAL)
            .body(Full::new(Bytes::from_static(b"username=x&password=y")))
            .unwrap()
    };
    // `pavise check`'s section: both servers found, what they run, nothing refused.
    let check = pavise::cluster::check::summary(&cluster_cfg(&pg, &redis, "solo")).await.unwrap();
    assert!(check.contains("postgresql") && check.contains("schema 1 (current)"), "{check}");
    assert!(check.contains("redis") && check.contains("persistence off"), "{check}");
    redis.kill();
    // Requests keep being served; the limit still holds (this node's own budget), nothing
    // fails open.
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(send_from(ip("127.0.0.61"), node.addr, login()).await.0.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
    assert_eq!(send_from(ip("127.0.0.62"), node.addr, get("/api/v1/instance")).await.0.status, 200);
    let ready = admin_get(&node, "/readyz").await;
    // Degraded, not down: the node still serves (200), and /readyz names what is degraded.
    assert_eq!(ready["ready"], true, "{ready}");
    assert!(ready["degraded"].as_array().is_some_and(|d| d.iter().any(|n| n == "cluster")), "{ready}");
    let detail = ready["checks"]["cluster"]["reason"].as_str().unwrap().to_owned();
    assert!(detail.contains("redis"), "{ready}");
    let metrics = metrics_of(&node).await;
    assert!(metrics.contains("pavise_cluster_redis_degraded 1"), "{metrics}");
    assert!(crate::support::logs().matches("limits and waves are decided by this node alone").count() >= 1);

    // Redis back: the shared state resumes (a fresh client's budget is the shared one).
    redis.spawn();
    let t0 = Instant::now();
    for i in 0.. {
        // A fresh client's login: a decision that reaches Redis again clears the fallback.
        send_from(ip("127.0.1.1"), node.addr, login()).await;
        let ready = admin_get(&node, "/readyz").await;
        if ready["checks"]["cluster"]["detail"] == "postgresql and redis answer"
            && metrics_of(&node).await.contains("pavise_cluster_redis_degraded 0")
        {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(15), "did not resume after {i} tries: {ready}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(crate::support::logs().contains("limits and waves are shared by the nodes again"));
    node.stop().await;
}

async fn metrics_of(node: &Pavise) -> String {
    let resp = reqwest::Client::new().get(node.admin_url("/metrics")).bearer_auth(&node.token).send().await.unwrap();
    resp.text().await.unwrap()
}
