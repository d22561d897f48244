//! Issue 16, "Privacy under attack IV": the public listener's transport, the admin
//! listener, the caps. Each finding of the attack pass is a test here, run the way it was
//! found: on loopback, bounded, against the relay in-process or (where memory, descriptors
//! or CPU of the relay itself are measured) against the `pavise` binary.

use std::{
    io::{BufRead, BufReader},
    net::{IpAddr, SocketAddr},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use ipnet::IpNet;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::support::{Pavise, RecordingUpstream, logs, send_from, text};

const CLIENT: &str = "127.13.37.61";

/// One request per route class (`[[limit]] route = ...` names), as a client sends it.
const EVERY_CLASS: &[(&str, &str, &str)] = &[
    ("inbox", "POST", "/users/alice/inbox"),
    ("status_create", "POST", "/api/v1/statuses"),
    ("status_read", "GET", "/api/v1/statuses/109"),
    ("media_upload", "PUT", "/api/v1/media/7"),
    ("streaming", "GET", "/api/v1/streaming/public"),
    ("activitypub_object", "GET", "/users/alice"),
    ("auth", "POST", "/oauth/token"),
    ("api", "GET", "/api/v1/timelines/home"),
    ("web", "GET", "/about"),
];

/// What a client adds to remove or replace the forwarding headers: every name in
/// `Connection`, its own values, and the `_` spellings Rack folds into the same names.
const TRICKS: &[(&str, &str)] = &[
    ("x-forwarded-for", "127.0.0.1"),
    ("x-forwarded-proto", "https"),
    ("x-forwarded-host", "evil.example"),
    ("x_forwarded_for", "127.0.0.1"),
    ("x_real_ip", "127.0.0.1"),
    ("client_ip", "127.0.0.1"),
    ("x-http-method-override", "DELETE"),
];

fn tricked(method: &str, path: &str, connection: bool) -> http::Request<Full<Bytes>> {
    let body = if method == "GET" { Bytes::new() } else { Bytes::from_static(br#"{"x":1}"#) };
    let mut req = http::Request::builder().method(method).uri(path);
    if connection {
        req = req
            .header("host", "social.example")
            .header("connection", "keep-alive, X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host, Host, Forwarded");
    } else {
        // HTTP/2 has no Connection header (and no Host: `:authority` instead).
        req = req.uri(format!("http://social.example{path}"));
    }
    for (k, v) in TRICKS {
        req = req.header(*k, *v);
    }
    if method != "GET" {
        req = req.header("content-type", "application/json");
    }
    req.body(Full::new(body)).unwrap()
}

/// The pseudonym and nothing else: one `X-Forwarded-For` in 2001:db8::/32, the scheme the
/// client really used, the host it addressed, and none of the tricks.
fn assert_carries_the_pseudonym(headers: &http::HeaderMap, what: &str) {
    let xff: Vec<_> = headers.get_all("x-forwarded-for").iter().collect();
    assert_eq!(xff.len(), 1, "{what}: exactly one X-Forwarded-For: {headers:?}");
    let ip: IpAddr = xff[0].to_str().unwrap().parse().unwrap();
    assert!("2001:db8::/32".parse::<IpNet>().unwrap().contains(&ip), "{what}: {ip} is not a pseudonym");
    assert_eq!(headers["x-forwarded-proto"], "http", "{what}");
    assert_eq!(headers["x-forwarded-host"], "social.example", "{what}");
    assert_eq!(headers["host"], "social.example", "{what}: Host is kept");
    for name in ["x_forwarded_for", "x_real_ip", "client_ip", "x-http-method-override", "forwarded"] {
        assert!(!headers.contains_key(name), "{what}: {name} reached the instance");
    }
    let all = format!("{headers:?}");
    assert!(!all.contains("127.0.0.1") && !all.contains(CLIENT), "{what}: an address reached the instance: {all}");
}

async fn metrics(p: &Pavise) -> String {
    reqwest::Client::new()
        .get(p.admin_url("/metrics"))
        .bearer_auth(&p.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn route_count(metrics: &str, route: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("pavise_requests_total{{route=\"{route}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn quiet_pavise(c: &mut pavise::config::FileConfig) {
    // The transport is under test, not the shield's view of unsigned deliveries.
    c.shield.enabled = false;
}

#[tokio::test]
async fn the_pseudonym_survives_connection_tricks_on_every_route_class_over_http1() {
    let upstream = RecordingUpstream::start().await;
    let pavise = Pavise::start(&upstream.url(), quiet_pavise).await;
    for (class, method, path) in EVERY_CLASS {
        let (parts, _) = send_from(CLIENT.parse().unwrap(), pavise.addr, tricked(method, path, true)).await;
        assert!(parts.status.is_success(), "{class}: {}", parts.status);
        let rec = upstream.last();
        assert_eq!(rec.uri.path(), *path);
        assert_carries_the_pseudonym(&rec.headers, class);
    }
    let m = metrics(&pavise).await;
    for (class, _, _) in EVERY_CLASS {
        assert_eq!(route_count(&m, class), 1, "{class} was classified as such:\n{m}");
    }
    pavise.stop().await;
}

#[tokio::test]
async fn the_pseudonym_reaches_the_instance_on_every_route_class_over_http2() {
    let upstream = RecordingUpstream::start().await;
    let pavise = Pavise::start(&upstream.url(), quiet_pavise).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(CLIENT.parse().unwrap(), 0)).unwrap();
    let stream = socket.connect(pavise.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::Builder::new(TokioExecutor::new()).handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    for (class, method, path) in EVERY_CLASS {
        let resp = sender.send_request(tricked(method, path, false)).await.unwrap();
        assert!(resp.status().is_success(), "{class}: {}", resp.status());
        let rec = upstream.last();
        assert_eq!(rec.uri.path(), *path);
        assert_carries_the_pseudonym(&rec.headers, class);
    }
    let m = metrics(&pavise).await;
    for (class, _, _) in EVERY_CLASS {
        assert_eq!(route_count(&m, class), 1, "{class} over h2:\n{m}");
    }
    pavise.stop().await;
}

/// A WebSocket echo server standing in for Mastodon's streaming server, recording each
/// handshake's headers.
async fn websocket_upstream() -> (SocketAddr, Arc<Mutex<Vec<http::HeaderMap>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handshakes = Arc::new(Mutex::new(Vec::new()));
    let seen = handshakes.clone();
    tokio::spawn(async move {
        for _ in 0..64 {
            let Ok((stream, _)) = listener.accept().await else { return };
            let seen = seen.clone();
            tokio::spawn(async move {
                #[allow(clippy::result_large_err)] // the callback signature tungstenite asks for
                let callback = |req: &tokio_tungstenite::tungstenite::handshake::server::Request, resp| {
                    seen.lock().unwrap().push(req.headers().clone());
                    Ok(resp)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else { return };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() && ws.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, handshakes)
}

fn ws_request(addr: SocketAddr, path: &str) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let url = format!("ws://{addr}{path}");
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url).unwrap();
    let h = req.headers_mut();
    h.insert("host", "social.example".parse().unwrap());
    h.insert("connection", "Upgrade, X-Forwarded-For, X-Forwarded-Host, Host".parse().unwrap());
    for (k, v) in TRICKS {
        h.insert(*k, v.parse().unwrap());
    }
    req
}

#[tokio::test]
async fn websocket_upgrades_carry_the_pseudonym_and_only_websocket_on_the_streaming_route_is_spliced() {
    let (ws_addr, handshakes) = websocket_upstream().await;
    let upstream = RecordingUpstream::start().await;
    let pavise = Pavise::start(&upstream.url(), |c| {
        quiet_pavise(c);
        c.upstream.streaming_url = format!("http://{ws_addr}");
    })
    .await;
    let (mut ws, resp) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(ws_request(pavise.addr, "/api/v1/streaming?stream=user")),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(resp.status(), 101);
    ws.send(tokio_tungstenite::tungstenite::Message::text("ping")).await.unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(echoed.into_text().unwrap().as_str(), "ping");
    let seen = handshakes.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_carries_the_pseudonym(&seen[0], "websocket handshake");
    assert_eq!(seen[0]["upgrade"], "websocket");
    ws.close(None).await.unwrap();

    // The same handshake on another route, or another protocol on the streaming route,
    // is a plain request: the instance never sees an Upgrade it could accept.
    for (path, upgrade) in [("/api/v1/timelines/home", "websocket"), ("/about", "h2c"), ("/api/v1/streaming", "h2c")] {
        let mut s = TcpStream::connect(pavise.addr).await.unwrap();
        let head = format!(
            "GET {path} HTTP/1.1\r\nHost: social.example\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: {upgrade}\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
        let answer = String::from_utf8_lossy(&buf[..n]);
        assert!(answer.starts_with("HTTP/1.1 ") && !answer.starts_with("HTTP/1.1 101"), "{path} {upgrade}: {answer}");
    }
    // The streaming server saw no second handshake (the h2c request reached it as a plain GET).
    assert_eq!(handshakes.lock().unwrap().len(), 1);
    let plain = upstream.recorded();
    assert_eq!(plain.len(), 2, "{plain:?}");
    for rec in &plain {
        assert!(!rec.headers.contains_key("upgrade"), "{} reached the instance with Upgrade", rec.uri);
        assert!(!rec.headers.contains_key("http2-settings"));
    }
    pavise.stop().await;
}

#[tokio::test]
async fn every_inbox_spelling_gets_inbox_treatment() {
    let upstream = RecordingUpstream::with_handler(|_| text(202, "")).await;
    let pavise = Pavise::start(&upstream.url(), quiet_pavise).await;
    let spellings = [
        "/inbox",
        "/inbox/",
        "//inbox",
        "/inbox.json",
        "/users/alice/inbox",
        "/users/alice/inbox/",
        "/users/alice//inbox",
        "/users/alice/inbox.json",
        "/users/%61lice/inbox",
        "/users/ALICE/inbox",
        "/actor/inbox",
        "/ap/users/109/inbox",
    ];
    // Mastodon's own 1 MiB inbox cap, not the 16 MiB of other routes.
    let big = Bytes::from(vec![b'x'; (1 << 20) + 1]);
    for path in spellings {
        let req = http::Request::post(path).header("host", "social.example").body(Full::new(big.clone())).unwrap();
        let (parts, _) = send_from(CLIENT.parse().unwrap(), pavise.addr, req).await;
        assert_eq!(parts.status, 413, "{path} got the inbox body cap");
        let small = http::Request::post(path)
            .header("host", "social.example")
            .header("content-type", "application/activity+json")
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap();
        let (parts, _) = send_from(CLIENT.parse().unwrap(), pavise.addr, small).await;
        assert_eq!(parts.status, 202, "{path}");
        assert_eq!(upstream.last().uri.path(), path, "the raw path is forwarded unchanged (signatures cover it)");
    }
    assert_eq!(upstream.recorded().len(), spellings.len(), "no oversized delivery reached the instance");
    let m = metrics(&pavise).await;
    assert_eq!(route_count(&m, "inbox"), 2 * spellings.len() as u64, "{m}");
    pavise.stop().await;
}

#[tokio::test]
async fn rack_method_overrides_are_read_as_rails_reads_them() {
    let upstream = RecordingUpstream::start().await;
    let pavise = Pavise::start(&upstream.url(), quiet_pavise).await;
    let form = |path: &str, content_type: &str, body: &'static str| {
        http::Request::post(path)
            .header("host", "social.example")
            .header("content-type", content_type)
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap()
    };
    // `_method=get` on a status: Rails shows status 123, so pavise's stages see a read.
    let (parts, _) = send_from(
        CLIENT.parse().unwrap(),
        pavise.addr,
        form("/api/v1/statuses/0123", "application/x-www-form-urlencoded", "x=1&_method=g%65t"),
    )
    .await;
    assert_eq!(parts.status, 200);
    let rec = upstream.last();
    assert_eq!(rec.method, http::Method::POST, "the wire method reaches the instance unchanged");
    assert_eq!(&rec.body[..], b"x=1&_method=g%65t");
    assert_eq!(route_count(&metrics(&pavise).await, "status_read"), 1);
    // A multipart `_method` on a status route is refused, not guessed at.
    let (parts, body) = send_from(
        CLIENT.parse().unwrap(),
        pavise.addr,
        form(
            "/api/v1/statuses/123",
            "multipart/form-data; boundary=b",
            "--b\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nget\r\n--b--\r\n",
        ),
    )
    .await;
    assert_eq!(parts.status, 400, "{body:?}");
    // Elsewhere (a web form's `_method=patch`), the body streams through unread.
    let (parts, _) = send_from(
        CLIENT.parse().unwrap(),
        pavise.addr,
        form("/settings/preferences/other", "application/x-www-form-urlencoded", "_method=patch&user=1"),
    )
    .await;
    assert_eq!(parts.status, 200);
    assert_eq!(upstream.recorded().len(), 2);

    // A method longer than any real one: 400, never logged, never forwarded.
    let long = "M".repeat(4000);
    let mut s = TcpStream::connect(pavise.addr).await.unwrap();
    s.write_all(format!("{long} / HTTP/1.1\r\nHost: social.example\r\n\r\n").as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 400"));
    assert_eq!(upstream.recorded().len(), 2);
    assert!(!logs().contains(&long[..100]), "the method reached the log");
    pavise.stop().await;
}

#[tokio::test]
async fn past_the_in_flight_cap_a_503_with_retry_after_and_the_relay_stays_up() {
    let release = Arc::new(tokio::sync::Notify::new());
    let gate = release.clone();
    let upstream = RecordingUpstream::with_async_handler(move |rec| {
        let gate = gate.clone();
        Box::pin(async move {
            if rec.uri.path() == "/slow" {
                let _ = tokio::time::timeout(Duration::from_secs(10), gate.notified()).await;
            }
            text(200, "done")
        })
    })
    .await;
    let pavise = Pavise::start(&upstream.url(), |c| {
        quiet_pavise(c);
        c.upstream.max_in_flight = 2;
    })
    .await;
    let addr = pavise.addr;
    let slow: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn(async move {
                send_from(CLIENT.parse().unwrap(), addr, http::Request::get("/slow").body(Full::default()).unwrap())
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (parts, body) =
        send_from(CLIENT.parse().unwrap(), addr, http::Request::get("/slow").body(Full::default()).unwrap()).await;
    assert_eq!(parts.status, 503, "{body:?}");
    assert!(parts.headers.contains_key("retry-after"));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(v["error"].as_str().unwrap().contains("retry"), "{v}");
    release.notify_waiters();
    for t in slow {
        assert_eq!(tokio::time::timeout(Duration::from_secs(10), t).await.unwrap().unwrap().0.status, 200);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let m = metrics(&pavise).await;
    assert!(m.contains("pavise_capped_total{cap=\"upstream_in_flight\"} 1"), "{m}");
    assert!(m.contains("pavise_upstream_in_flight 0"), "permits come back when bodies end:\n{m}");
    pavise.stop().await;
}

#[tokio::test]
async fn past_the_upstream_connection_cap_a_503_once_connect_timeout_has_passed() {
    let upstream = RecordingUpstream::with_async_handler(|_| {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            text(200, "ok")
        })
    })
    .await;
    let pavise = Pavise::start(&upstream.url(), |c| {
        quiet_pavise(c);
        c.upstream.max_connections = 1;
        c.public.max_websockets = 1;
        c.upstream.connect_timeout = "500ms".parse().unwrap();
    })
    .await;
    let addr = pavise.addr;
    let get = || async move {
        send_from(CLIENT.parse().unwrap(), addr, http::Request::get("/slow").body(Full::default()).unwrap()).await
    };
    let (a, b) = tokio::join!(get(), get());
    let mut statuses = [a.0.status.as_u16(), b.0.status.as_u16()];
    statuses.sort();
    assert_eq!(statuses, [200, 503]);
    let busy = if a.0.status == 503 { &a.0 } else { &b.0 };
    assert!(busy.headers.contains_key("retry-after"));
    let m = metrics(&pavise).await;
    assert!(m.contains("pavise_capped_total{cap=\"upstream_connections\"} 1"), "{m}");
    assert!(m.contains("pavise_upstream_connections{upstream=\"web\"} 1"), "{m}");
    pavise.stop().await;
}

#[tokio::test]
async fn h2_connections_cannot_open_more_upstream_connections_than_the_cap() {
    let upstream = RecordingUpstream::with_async_handler(|_| {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            text(200, "ok")
        })
    })
    .await;
    let pavise = Pavise::start(&upstream.url(), |c| {
        quiet_pavise(c);
        c.upstream.max_connections = 3;
        c.public.max_websockets = 3;
        c.upstream.connect_timeout = "10s".parse().unwrap();
    })
    .await;
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let stream = TcpStream::connect(pavise.addr).await.unwrap();
        let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake::<_, Full<Bytes>>(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        for i in 0..20 {
            let mut sender = sender.clone();
            tasks.push(tokio::spawn(async move {
                let req =
                    http::Request::get(format!("http://social.example/api/v1/x{i}")).body(Full::default()).unwrap();
                sender.send_request(req).await.map(|r| r.status().as_u16()).unwrap_or(0)
            }));
        }
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(tokio::time::timeout(Duration::from_secs(30), t).await.unwrap().unwrap());
    }
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let peers: std::collections::HashSet<_> = upstream.recorded().iter().map(|r| r.peer).collect();
    assert!(peers.len() <= 3, "{} connections to the instance with max_connections = 3", peers.len());
    pavise.stop().await;
}

// ---------------------------------------------------------------------------------------
// Raw HTTP/2, for clients no library would be: a client that never reads, one that only
// pings, one that trickles its body.
// ---------------------------------------------------------------------------------------

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(9 + payload.len());
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The client's opening: the preface, SETTINGS (no push, the largest windows), an ACK of
/// the server's SETTINGS sent blind, and the largest connection window.
fn h2_opening() -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    let mut settings = Vec::new();
    for (id, value) in [(2u16, 0u32), (4, 0x7fff_ffff)] {
        settings.extend_from_slice(&id.to_be_bytes());
        settings.extend_from_slice(&value.to_be_bytes());
    }
    out.extend(h2_frame(4, 0, 0, &settings));
    out.extend(h2_frame(4, 1, 0, &[]));
    out.extend(h2_frame(8, 0, 0, &(0x7fff_ffffu32 - 65_535).to_be_bytes()));
    out
}

/// HEADERS for a GET, HPACK-literal (`:method GET`, `:scheme http` from the static table).
fn h2_get(stream: u32, path: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x86, 0x04, path.len() as u8];
    block.extend_from_slice(path.as_bytes());
    block.extend_from_slice(&[0x01, 14]);
    block.extend_from_slice(b"social.example");
    h2_frame(1, 0x5, stream, &block)
}

fn h2_ping() -> Vec<u8> {
    h2_frame(6, 0, 0, b"pavise!!")
}

#[tokio::test]
async fn ping_only_and_trickling_connections_are_closed_within_the_timeouts() {
    let upstream = RecordingUpstream::start().await;
    let pavise = Pavise::start(&upstream.url(), |c| {
        quiet_pavise(c);
        c.public.header_read_timeout = "1s".parse().unwrap();
        c.public.idle_timeout = "2s".parse().unwrap();
        c.public.min_body_rate = "1KiB".parse().unwrap();
    })
    .await;

    // PINGs every 300 ms and never a request: closed at the request-start timeout.
    let mut never = TcpStream::connect(pavise.addr).await.unwrap();
    never.write_all(&h2_opening()).await.unwrap();
    let pinger = |mut w: tokio::net::tcp::OwnedWriteHalf| {
        tokio::spawn(async move {
            for _ in 0..40 {
                tokio::time::sleep(Duration::from_millis(300)).await;
                if w.write_all(&h2_ping()).await.is_err() {
                    return;
                }
            }
        })
    };
    let (mut r, w) = never.into_split();
    let pings = pinger(w);
    let started = Instant::now();
    let mut buf = vec![0u8; 4096];
    let closed = tokio::time::timeout(Duration::from_secs(6), async {
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("a PING-only connection is closed");
    assert!(closed < Duration::from_secs(4), "closed after {closed:?}");
    pings.abort();

    // One request, then only PINGs: closed once idle, not before.
    let mut once = TcpStream::connect(pavise.addr).await.unwrap();
    once.write_all(&h2_opening()).await.unwrap();
    once.write_all(&h2_get(1, "/about")).await.unwrap();
    let (mut r, w) = once.into_split();
    let pings = pinger(w);
    let started = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(8), async {
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("PINGs do not keep a connection open");
    assert!(closed >= Duration::from_millis(1800) && closed < Duration::from_secs(6), "closed after {closed:?}");
    pings.abort();
    assert_eq!(upstream.recorded().len(), 1, "the one request was served");

    // HTTP/1.1: a POST body trickled one byte every 300 ms ends with a 408.
    let mut slow = TcpStream::connect(pavise.addr).await.unwrap();
    slow.write_all(b"POST /api/v1/x HTTP/1.1\r\nHost: social.example\r\nContent-Length: 1000\r\n\r\n").await.unwrap();
    let (mut r, mut w) = slow.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..40 {
            if w.write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let mut answer = Vec::new();
    let started = Instant::now();
    let _ = tokio::time::timeout(Duration::from_secs(8), r.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    trickle.abort();

    // HTTP/2: the same trickle on one stream.
    let stream = TcpStream::connect(pavise.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::Builder::new(TokioExecutor::new()).handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::convert::Infallible>>(1);
    tokio::spawn(async move {
        for _ in 0..40 {
            if tx.send(Ok(Frame::data(Bytes::from_static(b"x")))).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let body = StreamBody::new(Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|f| (f, rx))
    })));
    let req = http::Request::post("http://social.example/api/v1/x").body(body).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(8), sender.send_request(req)).await.unwrap().unwrap();
    assert_eq!(resp.status(), 408);
    pavise.stop().await;
}

#[tokio::test]
async fn websocket_tunnels_hold_their_slot_count_have_a_cap_and_idle_out() {
    let (ws_addr, _) = websocket_upstream().await;
    let upstream = RecordingUpstream::start().await;
    let pavise = Pavise::start(&upstream.url(), |c| {
        quiet_pavise(c);
        c.upstream.streaming_url = format!("http://{ws_addr}");
        c.public.max_connections = 2;
        c.public.max_websockets = 1;
        c.public.idle_timeout = "2s".parse().unwrap();
    })
    .await;
    let open = |path: &'static str| {
        let addr = pavise.addr;
        async move { tokio_tungstenite::connect_async(ws_request(addr, path)).await }
    };
    let (mut ws, _) = tokio::time::timeout(Duration::from_secs(5), open("/api/v1/streaming")).await.unwrap().unwrap();
    let m = metrics(&pavise).await;
    assert!(m.contains("pavise_open_connections 1"), "a tunnel counts as an open connection:\n{m}");
    assert!(m.contains("pavise_websocket_tunnels 1"), "{m}");

    // The tunnel cap: a second one is a 503 with Retry-After.
    match tokio::time::timeout(Duration::from_secs(5), open("/api/v1/streaming")).await.unwrap() {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 503);
            assert!(resp.headers().contains_key("retry-after"));
        }
        other => panic!("a second tunnel past max_websockets: {other:?}"),
    }

    // Traffic keeps it open past the idle timeout.
    for i in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        ws.send(tokio_tungstenite::tungstenite::Message::text(format!("{i}"))).await.unwrap();
        let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), format!("{i}"));
    }

    // The tunnel holds its connection slot: with the other slot taken by a kept-alive
    // connection, a third client waits in the backlog until one of them goes.
    let mut held = TcpStream::connect(pavise.addr).await.unwrap();
    held.write_all(b"GET /about HTTP/1.1\r\nHost: social.example\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = held.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let started = Instant::now();
    let mut waiting = TcpStream::connect(pavise.addr).await.unwrap();
    waiting.write_all(b"GET /about HTTP/1.1\r\nHost: social.example\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), waiting.read_to_end(&mut answer)).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    assert!(started.elapsed() >= Duration::from_millis(1500), "served at once: the slots were not held");

    // Silent for the idle timeout: the tunnel is closed, and so is its slot.
    let ended = tokio::time::timeout(Duration::from_secs(6), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) => return,
                Some(Ok(m)) if m.is_close() => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "an idle tunnel is closed");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = metrics(&pavise).await;
        if m.contains("pavise_websocket_tunnels 0") && m.contains("pavise_open_connections 0") {
            break;
        }
        assert!(Instant::now() < deadline, "the tunnel's slot was not given back:\n{m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pavise.stop().await;
}

// ---------------------------------------------------------------------------------------
// The binary, where the relay's own memory, descriptors and CPU are measured.
// ---------------------------------------------------------------------------------------

/// A `pavise run` process on loopback ports it picks itself, killed on drop.
struct Binary {
    child: Child,
    public: SocketAddr,
    admin: SocketAddr,
    token: String,
    log: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl Binary {
    /// `sections` are extra TOML lines per section (`[public]`, `[upstream]`, ...).
    fn start(upstream: &str, sections: &[(&str, &str)], nofile: Option<u64>) -> Binary {
        let dir = tempfile::tempdir().unwrap();
        let extra =
            |name: &str| sections.iter().filter(|(s, _)| *s == name).map(|(_, l)| *l).collect::<Vec<_>>().join("\n");
        let config = format!(
            "data_dir = {data:?}\npolicies = {policies:?}\n[public]\nlisten = \"127.0.0.1:0\"\n{public}\n[admin]\nlisten = \"127.0.0.1:0\"\n{admin}\n[egress]\nlisten = \"127.0.0.1:0\"\nmode = \"direct\"\n[upstream]\nurl = \"{upstream}\"\nstreaming_url = \"{upstream}\"\n{up}\n[shield]\nenabled = false\n[log]\naccess_log = false\n",
            data = dir.path().join("data"),
            policies = dir.path().join("policies"),
            public = extra("public"),
            admin = extra("admin"),
            up = extra("upstream"),
        );
        let path = dir.path().join("pavise.toml");
        std::fs::write(&path, config).unwrap();
        let bin = env!("CARGO_BIN_EXE_pavise");
        let mut cmd = match nofile {
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}")).arg("--").arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.arg("run").arg("--config").arg(&path).env("RUST_LOG", "info").stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start pavise (prlimit is util-linux, installed by scripts/deps)");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if line.contains("pavise is listening") {
                    let _ = tx.send(line.clone());
                }
                sink.lock().unwrap().push_str(&line);
                sink.lock().unwrap().push('\n');
            }
        });
        let line = rx.recv_timeout(Duration::from_secs(60)).expect("pavise started");
        let addr = |key: &str| -> SocketAddr {
            let at = line.find(&format!("{key}=")).unwrap() + key.len() + 1;
            line[at..].split_whitespace().next().unwrap().parse().unwrap()
        };
        let token = std::fs::read_to_string(dir.path().join("data/admin.token")).unwrap().trim().to_owned();
        Binary { public: addr("public"), admin: addr("admin"), child, token, log, _dir: dir }
    }

    fn status_field(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with(field)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    fn rss_kib(&self) -> u64 {
        self.status_field("VmRSS:")
    }

    fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id())).unwrap().count()
    }

    /// User + system CPU time so far (USER_HZ is 100 on Linux).
    fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<u64> = after_name.split(' ').skip(11).take(2).map(|f| f.parse().unwrap()).collect();
        Duration::from_millis((fields[0] + fields[1]) * 10)
    }

    async fn metrics(&self) -> String {
        reqwest::Client::new()
            .get(format!("http://{}/metrics", self.admin))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn get_status(addr: SocketAddr, path: &str) -> u16 {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(path).header("host", "social.example").body(Full::<Bytes>::default()).unwrap();
    sender.send_request(req).await.unwrap().status().as_u16()
}

fn metric(text: &str, name: &str) -> Option<i64> {
    text.lines().find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))?.rsplit(' ').next()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_unread_h2_connections_of_200_streams_stay_bounded_and_others_are_served() {
    static BIG: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    let big = BIG.get_or_init(|| Bytes::from(vec![b'x'; 2 << 20])).clone();
    let upstream = RecordingUpstream::with_handler(move |rec| {
        if rec.uri.path() == "/big" {
            let mut r = http::Response::new(Full::new(big.clone()).map_err(|e| match e {}).boxed());
            r.headers_mut().insert("content-type", "application/octet-stream".parse().unwrap());
            r
        } else {
            text(200, "ok")
        }
    })
    .await;
    let relay = Binary::start(
        &upstream.url(),
        &[("public", "idle_timeout = \"4s\""), ("public", "header_read_timeout = \"2s\"")],
        None,
    );
    assert_eq!(get_status(relay.public, "/warm-up").await, 200);
    let before = relay.rss_kib();

    let mut attackers = Vec::new();
    for _ in 0..5 {
        let mut s = TcpStream::connect(relay.public).await.unwrap();
        let mut out = h2_opening();
        for i in 0..200u32 {
            out.extend(h2_get(1 + 2 * i, "/big"));
        }
        s.write_all(&out).await.unwrap();
        attackers.push(s); // never read
    }
    let mut peak = before;
    let mut served = None;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(relay.rss_kib());
        if served.is_none() {
            let t = Instant::now();
            let status = tokio::time::timeout(Duration::from_secs(5), get_status(relay.public, "/about")).await;
            served = Some((status.expect("another client is served while the fan-out holds"), t.elapsed()));
        }
    }
    let growth_mib = (peak.saturating_sub(before)) / 1024;
    assert!(growth_mib < 100, "RSS grew {growth_mib} MiB under the fan-out ({before} KiB → {peak} KiB)");
    let (status, took) = served.unwrap();
    assert_eq!(status, 200);
    assert!(took < Duration::from_secs(2), "another client waited {took:?}");
    let m = relay.metrics().await;
    let in_flight = metric(&m, "pavise_upstream_in_flight").unwrap();
    assert!(in_flight <= 5 * 32, "{in_flight} requests in flight from 5 connections of 32 streams");

    // Nobody reads: the connections make no progress and are closed.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = relay.metrics().await;
        if metric(&m, "pavise_open_connections") == Some(0) && metric(&m, "pavise_upstream_in_flight") == Some(0) {
            break;
        }
        assert!(Instant::now() < deadline, "unread connections still open:\n{m}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!("h2 fan-out: RSS {before} KiB → peak {peak} KiB; other client served in {took:?}");
    drop(attackers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_survives_1000_half_sent_requests() {
    // 1,000 sockets of our own: lift this test process's soft limit too.
    let _ = pavise::accept::raise_nofile_limit();
    let upstream = RecordingUpstream::start().await;
    let relay = Binary::start(&upstream.url(), &[("public", "header_read_timeout = \"1s\"")], None);
    let baseline = relay.open_fds();
    let cpu_before = relay.cpu();
    let mut half = Vec::new();
    for _ in 0..1000 {
        let mut s = TcpStream::connect(relay.admin).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ").await.unwrap();
        half.push(s);
    }
    let mut most = 0;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        most = most.max(relay.open_fds());
    }
    assert!(most <= baseline + 64 + 16, "{most} descriptors open (baseline {baseline}, admin.max_connections 64)");
    let cpu = relay.cpu() - cpu_before;
    assert!(cpu < Duration::from_millis(1500), "{cpu:?} of CPU in 2 s");
    // The accepted ones are cut at the header timeout; the public listener never noticed.
    assert_eq!(get_status(relay.public, "/about").await, 200);
    drop(half);
    let started = Instant::now();
    let health = loop {
        let got = reqwest::Client::new()
            .get(format!("http://{}/healthz", relay.admin))
            .timeout(Duration::from_secs(20))
            .send()
            .await;
        if let Ok(r) = got {
            break r.status().as_u16();
        }
        assert!(started.elapsed() < Duration::from_secs(30));
    };
    assert_eq!(health, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_under_a_256_descriptor_limit_backs_off_and_recovers() {
    let _ = pavise::accept::raise_nofile_limit();
    let upstream = RecordingUpstream::start().await;
    let relay = Binary::start(&upstream.url(), &[("public", "header_read_timeout = \"30s\"")], Some(256));
    // More idle connections than the relay has descriptors.
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(TcpStream::connect(relay.public).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu_before = relay.cpu();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu = relay.cpu() - cpu_before;
    assert!(cpu < Duration::from_millis(500), "{cpu:?} of CPU in 2 s while out of descriptors: a busy loop");
    let log = relay.log.lock().unwrap().clone();
    assert!(log.contains("out_of_descriptors=true"), "{log}");
    assert!(log.contains("WARNING: the caps need up to"), "the start-up log says the limit is short:\n{log}");
    assert!(log.matches("accept failed").count() <= 3, "one warning per episode, not per try:\n{log}");
    drop(idle);
    let status = tokio::time::timeout(Duration::from_secs(10), get_status(relay.public, "/about")).await;
    assert_eq!(status.expect("accepting again once descriptors free up"), 200);

    // `pavise check` says what it found.
    let out = Command::new("prlimit")
        .args(["--nofile=256:256", "--", env!("CARGO_BIN_EXE_pavise"), "check"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("descriptors: limit 256") && text.contains("WARNING"), "{text}");
}
