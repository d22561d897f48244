//! Outbound federation over Tor, through a real private Tor network on loopback
//! (scripts/tornet: Debian `tor` daemons, brought up once per test run and torn down by
//! a watchdog when the test binary exits).
//!
//! Every destination here is a server on 127.0.0.1 reached by a `*.test` name that
//! the exits resolve through the network's loopback DNS responder; the destination
//! looks up which process owns the other end of each connection it accepts
//! (`/proc/net/tcp` inode → `/proc/PID/fd`): it must be one of the network's exit
//! relays, never pavise (this test process) — that is how a test on one machine can
//! tell "came through Tor" from "pavise connected directly".

// Helpers outside `#[test]` fns unwrap too: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use pavise::config::{EgressMode, FileConfig, Isolation};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::support::{Pavise, RecordingUpstream};

// ---------------------------------------------------------------------------------
// The shared private Tor network.

struct Tornet {
    /// Every process of the network (relays, onion service, DNS helper).
    pids: Vec<u32>,
    arti_config: PathBuf,
    onion_host: String,
    onion_marker: String,
    exit_pids: Vec<u32>,
}

static TORNET: OnceLock<Tornet> = OnceLock::new();

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The network, brought up on first use. `PAVISE_TORNET_DIR` names one that is
/// already running (kept after the tests); otherwise a fresh one in a temp dir, torn
/// down by a watchdog process once this test binary has exited (at most 1 h later).
fn tornet() -> &'static Tornet {
    TORNET.get_or_init(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = match std::env::var_os("PAVISE_TORNET_DIR") {
            Some(d) if Path::new(&d).join("tornet.json").exists() => PathBuf::from(d),
            _ => {
                let dir = std::env::temp_dir().join(format!("pavise-tornet-{}", std::process::id()));
                let status = std::process::Command::new("timeout")
                    .arg("150")
                    .arg(repo().join("scripts/tornet"))
                    .arg("up")
                    .arg(&dir)
                    .status()
                    .expect("run scripts/tornet (is tor installed? scripts/deps)");
                assert!(status.success(), "scripts/tornet up failed: {status}");
                spawn_watchdog(&dir);
                dir
            }
        };
        let state: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("tornet.json")).unwrap()).unwrap();
        let pids = state["pids"].as_object().unwrap();
        Tornet {
            arti_config: PathBuf::from(state["arti_config"].as_str().unwrap()),
            onion_host: state["onion_host"].as_str().unwrap().to_owned(),
            onion_marker: state["onion_marker"].as_str().unwrap().to_owned(),
            pids: pids.values().map(|v| v.as_u64().unwrap() as u32).collect(),
            exit_pids: ["exit0", "exit1"].iter().map(|n| pids[*n].as_u64().unwrap() as u32).collect(),
        }
    })
}

/// Tears the network down by PID after this process exits (statics are never
/// dropped, so no guard in this process could do it).
#[allow(clippy::zombie_processes)] // it must outlive this process: never waited for
fn spawn_watchdog(dir: &Path) {
    use std::os::unix::process::CommandExt as _;
    let script = "end=$(( $(date +%s) + 3600 )); \
                  while kill -0 \"$1\" 2>/dev/null && [ \"$(date +%s)\" -lt \"$end\" ]; do sleep 1; done; \
                  \"$3\" down \"$2\"; rm -rf \"$2\"";
    std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("tornet-watchdog")
        .arg(std::process::id().to_string())
        .arg(dir)
        .arg(repo().join("scripts/tornet"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .expect("spawn the tornet watchdog");
}

// ---------------------------------------------------------------------------------
// A destination server that records who connected to it.

#[derive(Debug, Clone)]
struct Peer {
    pid: Option<u32>,
    comm: Option<String>,
}

struct Dest {
    port: u16,
    peers: Arc<Mutex<Vec<Peer>>>,
    stop: CancellationToken,
}

impl Drop for Dest {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Dest {
    async fn start(tls: Option<TlsAcceptor>) -> Dest {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let local = listener.local_addr().unwrap();
        let peers = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let (p, s) = (peers.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    _ = s.cancelled() => return,
                    a = listener.accept() => a.unwrap(),
                };
                // While the connection is open, its other end still belongs to its owner.
                let owner = tokio::task::spawn_blocking(move || socket_owner(peer, local)).await.unwrap();
                p.lock().unwrap().push(Peer { pid: owner.as_ref().map(|o| o.0), comm: owner.map(|o| o.1) });
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                        let body = format!("dest ok {}\n", req.uri().path());
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(body))))
                    });
                    let builder = auto::Builder::new(TokioExecutor::new());
                    match tls {
                        Some(acceptor) => {
                            if let Ok(s) = acceptor.accept(stream).await {
                                let _ = builder.serve_connection(TokioIo::new(s), service).await;
                            }
                        }
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                });
            }
        });
        Dest { port: local.port(), peers, stop }
    }

    fn peers(&self) -> Vec<Peer> {
        self.peers.lock().unwrap().clone()
    }

    /// Every connection came from one of the network's exits, none from this process.
    fn assert_all_from_exits(&self, net: &Tornet) {
        let peers = self.peers();
        assert!(!peers.is_empty(), "the destination saw no connection");
        for p in peers {
            assert_ne!(p.pid, Some(std::process::id()), "pavise connected directly: {p:?}");
            assert_eq!(p.comm.as_deref(), Some("tor"), "connection not from a tor process: {p:?}");
            assert!(net.exit_pids.contains(&p.pid.unwrap()), "connection from a tor that is not an exit: {p:?}");
        }
    }
}

/// Which process owns the socket `local → remote` (the client end of a connection we
/// accepted): `/proc/net/tcp{,6}` gives its inode, `/proc/PID/fd` its owner.
fn socket_owner(local: SocketAddr, remote: SocketAddr) -> Option<(u32, String)> {
    let inode = ["/proc/net/tcp", "/proc/net/tcp6"].iter().find_map(|f| {
        let text = std::fs::read_to_string(f).ok()?;
        text.lines().skip(1).find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (l, r, inode) = (fields.get(1)?, fields.get(2)?, fields.get(9)?);
            (parse_proc_addr(l)? == local && parse_proc_addr(r)? == remote).then(|| inode.to_string())
        })
    })?;
    let target = format!("socket:[{inode}]");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == target) {
                let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
                return Some((pid, comm.trim().to_owned()));
            }
        }
    }
    None
}

/// `0100007F:1F90` → 127.0.0.1:8080 (address words in host byte order, little-endian here).
fn parse_proc_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Option<Vec<[u8; 4]>> =
        (0..ip.len() / 8).map(|i| u32::from_str_radix(&ip[i * 8..i * 8 + 8], 16).ok().map(u32::to_le_bytes)).collect();
    let bytes: Vec<u8> = words?.concat();
    let ip: std::net::IpAddr = match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok()?.into(),
        16 => std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?).to_canonical(),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

struct TlsDest {
    dest: Dest,
    ca_pem: String,
    _dir: tempfile::TempDir,
}

async fn tls_dest(name: &str) -> TlsDest {
    let ck = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let acceptor = pavise::server::tls_acceptor(&cert, &key).unwrap();
    TlsDest { dest: Dest::start(Some(acceptor)).await, ca_pem: ck.cert.pem(), _dir: dir }
}

// ---------------------------------------------------------------------------------
// Pavise over the private network.

async fn pavise_over_tor(upstream: &RecordingUpstream, tweak: impl FnOnce(&mut FileConfig)) -> Pavise {
    let net = tornet();
    let arti = net.arti_config.clone();
    let p = Pavise::start(&upstream.url(), move |f| {
        f.egress.mode = EgressMode::Tor;
        f.egress.tor.arti_config = Some(arti);
        tweak(f);
    })
    .await;
    wait_bootstrapped(&p).await;
    p
}

async fn admin_get(p: &Pavise, path: &str) -> (u16, String) {
    let resp = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(p.admin_url(path))
        .bearer_auth(&p.token)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

async fn wait_bootstrapped(p: &Pavise) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, metrics) = admin_get(p, "/metrics").await;
        if metrics.contains("pavise_egress_tor_bootstrapped{mode=\"tor\"} 1") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "arti did not bootstrap within 120 s; readyz: {:?}",
            admin_get(p, "/readyz").await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn client(p: &Pavise, ca_pem: Option<&str>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(format!("http://{}", p.egress)).unwrap())
        .timeout(Duration::from_secs(90));
    if let Some(pem) = ca_pem {
        b = b.add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap());
    }
    b.build().unwrap()
}

/// The first streams on a young network may fail while relays still disagree about
/// the consensus: retry for up to 90 s, and say what failed.
async fn get_retrying(client: &reqwest::Client, url: &str) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut failures = Vec::new();
    while Instant::now() < deadline {
        match client.get(url).send().await {
            Ok(r) if r.status().is_success() => {
                if !failures.is_empty() {
                    eprintln!("{url}: succeeded after {} failures: {failures:?}", failures.len());
                }
                return (r.status().as_u16(), r.text().await.unwrap());
            }
            Ok(r) => failures.push(format!("{} {}", r.status(), r.text().await.unwrap_or_default().trim())),
            Err(e) => failures.push(format!("{e:?}")),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!("{url}: no success within 90 s; failures: {failures:?}");
}

// ---------------------------------------------------------------------------------
// The tests.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_connect_reaches_the_destination_through_a_tor_exit() {
    let up = RecordingUpstream::start().await;
    let dest = tls_dest("dest.test").await;
    let port = dest.dest.port;
    let p = pavise_over_tor(&up, |f| f.egress.allow_ports.push(port)).await;
    let (status, body) =
        get_retrying(&client(&p, Some(&dest.ca_pem)), &format!("https://dest.test:{port}/hello")).await;
    assert_eq!((status, body.as_str()), (200, "dest ok /hello\n"));
    dest.dest.assert_all_from_exits(tornet());

    let (_, metrics) = admin_get(&p, "/metrics").await;
    assert!(metrics.contains("pavise_egress_streams_total "), "{metrics}");
    assert!(!metrics.contains("pavise_egress_streams_total 0"), "{metrics}");
    assert!(!metrics.contains("pavise_egress_connect_seconds_count 0"), "{metrics}");
    assert!(metrics.contains("pavise_egress_tor_isolation_groups 1"), "{metrics}");
    let (code, ready) = admin_get(&p, "/readyz").await;
    assert_eq!(code, 200, "{ready}");
    assert!(ready.contains("\"tor\"") && ready.contains("bootstrapped in"), "{ready}");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_http_reaches_the_destination_through_a_tor_exit() {
    let up = RecordingUpstream::start().await;
    let dest = Dest::start(None).await;
    let port = dest.port;
    let p = pavise_over_tor(&up, |f| f.egress.allow_ports.push(port)).await;
    let (status, body) = get_retrying(&client(&p, None), &format!("http://plain.test:{port}/inbox")).await;
    assert_eq!((status, body.as_str()), (200, "dest ok /inbox\n"));
    dest.assert_all_from_exits(tornet());
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onion_service_is_reachable() {
    let up = RecordingUpstream::start().await;
    let net = tornet();
    let p = pavise_over_tor(&up, |_| {}).await;
    let (status, body) = get_retrying(&client(&p, None), &format!("http://{}/", net.onion_host)).await;
    assert_eq!(status, 200);
    assert_eq!(body.trim(), format!("onion ok {}", net.onion_marker));
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_authorization_is_enforced() {
    let up = RecordingUpstream::start().await;
    let dest = Dest::start(None).await;
    let port = dest.port;
    let p = pavise_over_tor(&up, |f| {
        f.egress.allow_ports.push(port);
        f.egress.proxy_auth = Some("mastodon:s3cret".into());
    })
    .await;
    let url = format!("http://auth.test:{port}/");
    let resp = client(&p, None).get(&url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 407);
    assert!(resp.headers().contains_key("proxy-authenticate"));
    let wrong = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(format!("http://{}", p.egress)).unwrap().basic_auth("mastodon", "wrong"))
        .build()
        .unwrap();
    assert_eq!(wrong.get(&url).send().await.unwrap().status().as_u16(), 407);
    assert!(dest.peers().is_empty(), "a refused client must not cause a connection");
    let right = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(format!("http://{}", p.egress)).unwrap().basic_auth("mastodon", "s3cret"))
        .build()
        .unwrap();
    let (status, _) = get_retrying(&right, &url).await;
    assert_eq!(status, 200);
    dest.assert_all_from_exits(tornet());
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks5_with_remote_dns_goes_through_tor() {
    let up = RecordingUpstream::start().await;
    let dest = Dest::start(None).await;
    let port = dest.port;
    let socks_port = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
    let p = pavise_over_tor(&up, |f| {
        f.egress.allow_ports.push(port);
        f.egress.socks_listen = Some(SocketAddr::from(([127, 0, 0, 1], socks_port)));
    })
    .await;
    let socks = SocketAddr::from(([127, 0, 0, 1], socks_port));
    let mut ok = None;
    let deadline = Instant::now() + Duration::from_secs(90);
    while ok.is_none() && Instant::now() < deadline {
        let (code, body) = socks_get(socks, "socks.test", port).await;
        if code == 0 {
            ok = Some(body);
        } else {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    let body = ok.expect("SOCKS CONNECT through Tor succeeded within 90 s");
    assert!(body.contains("dest ok /socks"), "{body}");
    dest.assert_all_from_exits(tornet());
    // The SSRF guard applies to SOCKS too: reply 2, "not allowed by ruleset".
    let (code, _) = socks_get(socks, "127.0.0.1", port).await;
    assert_eq!(code, 2);
    p.stop().await;
}

/// A SOCKS5 CONNECT by name (remote DNS) and a GET; (reply code, response text).
async fn socks_get(socks: SocketAddr, host: &str, port: u16) -> (u8, String) {
    let mut s = TcpStream::connect(socks).await.unwrap();
    s.write_all(&[5, 1, 0]).await.unwrap();
    let mut choice = [0u8; 2];
    s.read_exact(&mut choice).await.unwrap();
    assert_eq!(choice, [5, 0]);
    let mut req = vec![5, 1, 0, 3, host.len() as u8];
    req.extend_from_slice(host.as_bytes());
    req.extend_from_slice(&port.to_be_bytes());
    s.write_all(&req).await.unwrap();
    let mut reply = [0u8; 10];
    s.read_exact(&mut reply).await.unwrap();
    if reply[1] != 0 {
        return (reply[1], String::new());
    }
    s.write_all(format!("GET /socks HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_string(&mut out)).await.unwrap().unwrap();
    (0, out)
}

/// arti's stream log line "Got a circuit for [scrubbed]:PORT" carries the circuit's
/// `tunnel_id`: recorded per destination port. On a current-thread runtime every task
/// (pavise's handlers, arti's) runs on this thread, so a thread-local subscriber sees it.
#[derive(Clone, Default)]
struct CircuitLog(Arc<Mutex<Vec<(String, String)>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CircuitLog {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        #[derive(Default)]
        struct V {
            message: String,
            tunnel: String,
        }
        impl tracing::field::Visit for V {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                match field.name() {
                    "message" => self.message = format!("{value:?}"),
                    "tunnel_id" => self.tunnel = format!("{value:?}"),
                    _ => {}
                }
            }
        }
        if !event.metadata().target().starts_with("arti_client") {
            return;
        }
        let mut v = V::default();
        event.record(&mut v);
        if v.message.starts_with("Got a circuit for") && !v.tunnel.is_empty() {
            self.0.lock().unwrap().push((v.message, v.tunnel));
        }
    }
}

impl CircuitLog {
    fn tunnels_for_port(&self, port: u16) -> Vec<String> {
        let suffix = format!(":{port}");
        self.0.lock().unwrap().iter().filter(|(m, _)| m.ends_with(&suffix)).map(|(_, t)| t.clone()).collect()
    }
}

/// Requests a.test, b.test, a.test again; returns the circuits each used.
async fn circuits_for(isolation: Isolation) -> (Vec<String>, Vec<String>) {
    use tracing_subscriber::layer::SubscriberExt as _;
    let log = CircuitLog::default();
    let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(log.clone()));
    let up = RecordingUpstream::start().await;
    let (a, b) = (Dest::start(None).await, Dest::start(None).await);
    let (pa, pb) = (a.port, b.port);
    let p = pavise_over_tor(&up, |f| {
        f.egress.allow_ports.extend([pa, pb]);
        f.egress.tor.isolation = isolation;
    })
    .await;
    let c = client(&p, None);
    get_retrying(&c, &format!("http://a.test:{pa}/")).await;
    get_retrying(&c, &format!("http://b.test:{pb}/")).await;
    get_retrying(&c, &format!("http://a.test:{pa}/")).await;
    a.assert_all_from_exits(tornet());
    b.assert_all_from_exits(tornet());
    p.stop().await;
    (log.tunnels_for_port(pa), log.tunnels_for_port(pb))
}

#[tokio::test(flavor = "current_thread")]
async fn different_destinations_get_different_circuits() {
    let (a, b) = circuits_for(Isolation::PerHost).await;
    assert!(!a.is_empty() && !b.is_empty(), "no circuit log lines seen: a={a:?} b={b:?}");
    let (a_first, a_last) = (a.first().unwrap(), a.last().unwrap());
    for tb in &b {
        assert!(!a.contains(tb), "a.test and b.test shared circuit {tb}: a={a:?} b={b:?}");
    }
    // Per host, not per request: the same host keeps its circuit.
    assert_eq!(a_first, a_last, "a.test changed circuit between requests: {a:?}");
}

/// The control for the test above: without isolation arti does share a circuit between
/// the two hosts, so the log really can tell circuits apart.
#[tokio::test(flavor = "current_thread")]
async fn without_isolation_destinations_share_circuits() {
    let (a, b) = circuits_for(Isolation::None).await;
    assert!(!a.is_empty() && !b.is_empty(), "no circuit log lines seen: a={a:?} b={b:?}");
    assert!(b.iter().any(|t| a.contains(t)), "expected a shared circuit without isolation: a={a:?} b={b:?}");
}

/// An arti config for the same network with every address moved to a closed port:
/// a Tor network that is not running.
fn dead_network_config(dir: &Path) -> PathBuf {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let text = std::fs::read_to_string(&tornet().arti_config).unwrap();
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("127.0.0.1:") {
        out.push_str(&rest[..i]);
        let after = &rest[i + "127.0.0.1:".len()..];
        let digits = after.find(|c: char| !c.is_ascii_digit()).unwrap_or(after.len());
        out.push_str(&format!("127.0.0.1:{closed}"));
        rest = &after[digits..];
    }
    out.push_str(rest);
    let path = dir.join("dead-arti.toml");
    std::fs::write(&path, out).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_when_tor_is_unreachable() {
    let up = RecordingUpstream::start().await;
    let dest = Dest::start(None).await;
    let port = dest.port;
    let tmp = tempfile::tempdir().unwrap();
    let dead = dead_network_config(tmp.path());
    let p = Pavise::start(&up.url(), move |f| {
        f.egress.mode = EgressMode::Tor;
        f.egress.tor.arti_config = Some(dead);
        f.egress.allow_ports.push(port);
    })
    .await;
    let c = client(&p, None);
    // Both request shapes, by name and by allowed loopback literal, repeatedly.
    for _ in 0..3 {
        let r = c.get(format!("http://dest.test:{port}/")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 503);
        assert_eq!(r.headers()["x-pavise-egress"], "not_bootstrapped");
        assert!(r.text().await.unwrap().contains("never connects directly"));
        let raw = raw_connect(p.egress, &format!("dest.test:{port}")).await;
        assert!(raw.starts_with("HTTP/1.1 503"), "{raw}");
    }
    let (code, ready) = admin_get(&p, "/readyz").await;
    assert_eq!(code, 503, "{ready}");
    assert!(ready.contains("bootstrapping"), "{ready}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(dest.peers().is_empty(), "the destination got a connection: {:?}", dest.peers());
    p.stop().await;
}

/// Sends `CONNECT target` and returns the response head.
async fn raw_connect(proxy: SocketAddr, target: &str) -> String {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(90), s.read(&mut buf)).await.unwrap().unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssrf_guard_refuses_private_destinations_before_connecting() {
    // Against a Tor network that is not running: if the guard let anything through, the
    // answer would be 503 (not bootstrapped), never 403, and no packet could leave.
    let up = RecordingUpstream::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let dead = dead_network_config(tmp.path());
    let p = Pavise::start(&up.url(), move |f| {
        f.egress.mode = EgressMode::Tor;
        f.egress.tor.arti_config = Some(dead);
    })
    .await;
    for (target, reason) in [
        ("10.0.0.1:443", "private"),
        ("127.0.0.1:22", "port 22"),
        ("[::1]:443", "loopback"),
        ("169.254.169.254:80", "link-local"),
        ("[::ffff:127.0.0.1]:443", "loopback"),
        ("100.64.1.1:443", "CGNAT"),
        ("localhost:443", "loopback"),
    ] {
        let head = raw_connect(p.egress, target).await;
        assert!(head.starts_with("HTTP/1.1 403"), "{target}: {head}");
        assert!(head.contains(reason), "{target}: {head}");
    }
    let r = client(&p, None).get("http://192.168.1.1/").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let (_, metrics) = admin_get(&p, "/metrics").await;
    assert!(metrics.contains("pavise_egress_failures_total{reason=\"refused_private_address\"} 7"), "{metrics}");
    assert!(metrics.contains("pavise_egress_failures_total{reason=\"refused_port\"} 1"), "{metrics}");
    assert!(metrics.contains("pavise_egress_failures_total{reason=\"not_bootstrapped\"} 0"), "{metrics}");
    assert!(metrics.contains("pavise_egress_streams_total 0"), "{metrics}");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssrf_guard_in_direct_mode_leaves_loopback_listeners_untouched() {
    // Direct mode would connect if the guard let it: listeners on the guarded loopback
    // addresses prove that nothing reached them; an allow_hosts entry opens exactly one.
    let up = RecordingUpstream::start().await;
    let v4 = Dest::start(None).await;
    let port = v4.port;
    let p = Pavise::start(&up.url(), move |f| {
        f.egress.mode = EgressMode::Direct;
        f.egress.allow_ports.push(port);
    })
    .await;
    let head = raw_connect(p.egress, &format!("127.0.0.1:{port}")).await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    let head = raw_connect(p.egress, &format!("[::ffff:127.0.0.1]:{port}")).await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert!(v4.peers().is_empty());
    let (code, ready) = admin_get(&p, "/readyz").await;
    assert_eq!(code, 200, "{ready}");
    assert!(ready.contains("DIRECT"), "{ready}");
    p.stop().await;

    let p = Pavise::start(&up.url(), move |f| {
        f.egress.mode = EgressMode::Direct;
        f.egress.allow_hosts = vec![format!("127.0.0.1:{port}")];
    })
    .await;
    let body = client(&p, None).get(format!("http://127.0.0.1:{port}/x")).send().await.unwrap().text().await.unwrap();
    assert_eq!(body, "dest ok /x\n");
    let peers = v4.peers();
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].pid, Some(std::process::id()), "direct mode connects from pavise itself");
    p.stop().await;
}

/// TORNET.md's first rule, checked: no socket of the network's daemons, nor of this
/// process (pavise's arti), has a peer outside loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_socket_stays_on_loopback() {
    let up = RecordingUpstream::start().await;
    let dest = Dest::start(None).await;
    let port = dest.port;
    let p = pavise_over_tor(&up, |f| f.egress.allow_ports.push(port)).await;
    get_retrying(&client(&p, None), &format!("http://loop.test:{port}/")).await;
    let net = tornet();
    let mut owners = net.pids.clone();
    owners.push(std::process::id());
    let mut inodes = std::collections::HashMap::new();
    for pid in &owners {
        for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
            if let Ok(link) = std::fs::read_link(fd.path()) {
                let link = link.to_string_lossy().into_owned();
                if let Some(inode) = link.strip_prefix("socket:[").and_then(|l| l.strip_suffix(']')) {
                    inodes.insert(inode.to_owned(), *pid);
                }
            }
        }
    }
    let mut seen = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6", "/proc/net/udp", "/proc/net/udp6"] {
        for line in std::fs::read_to_string(table).unwrap().lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let Some(pid) = inodes.get(f[9]) else { continue };
            seen += 1;
            let (local, remote) = (parse_proc_addr(f[1]).unwrap(), parse_proc_addr(f[2]).unwrap());
            let ok = |a: SocketAddr| a.ip().is_loopback() || a.ip().is_unspecified();
            assert!(ok(local) && ok(remote), "{table}: pid {pid} has a socket {local} -> {remote}");
        }
    }
    assert!(seen > 20, "too few sockets found ({seen}) for the check to mean anything");
    p.stop().await;
}

/// Issue 16: the egress listener answered an HTTP/2 preface as HTTP/2, and logged a
/// 60,000-byte method verbatim.
#[tokio::test]
async fn egress_speaks_http1_only_and_refuses_absurd_methods_without_logging_them() {
    let up = RecordingUpstream::start().await;
    let p = Pavise::start(&up.url(), |f| f.egress.mode = EgressMode::Direct).await;

    let mut s = TcpStream::connect(p.egress).await.unwrap();
    // The h2 preface, then an empty SETTINGS frame.
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await;
    assert!(
        answer.is_empty() || answer.starts_with(b"HTTP/1.1 "),
        "the egress listener answered an h2 preface with {:?}",
        &answer[..answer.len().min(32)]
    );
    assert!(answer.len() < 9 || answer[3] != 0x04, "an HTTP/2 SETTINGS frame came back");

    let method = format!("M{}", "ETHOD".repeat(12_000));
    let mut s = TcpStream::connect(p.egress).await.unwrap();
    s.write_all(format!("{method} http://remote.example/ HTTP/1.1\r\nHost: remote.example\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut answer = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut answer)).await.unwrap().unwrap();
    assert!(
        String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&answer[..n])
    );
    assert!(!crate::support::logs().contains(&method[..200]), "the method reached the log");
    p.stop().await;
}
