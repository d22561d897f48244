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

// ---------------------------------------------------------------------------------------
// The second attack pass (/work/notes/atk16/REPORT.md): F1 bodies held before any stage,
// F2 streams starving the web, F3 an edge that lets clients pick pseudonyms, F4 requests
// pavise makes for a client, F5 scheme headers, F7 Host and CONNECT; and the suspicions
// (reset streams, memory after an attack).
// ---------------------------------------------------------------------------------------

type ClientBody = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

/// A request body the test feeds chunk by chunk; it ends when the sender is dropped.
fn channel_body() -> (tokio::sync::mpsc::Sender<Bytes>, ClientBody) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (Ok(Frame::data(b)), rx)) });
    (tx, BodyExt::boxed(StreamBody::new(stream)))
}

fn whole(bytes: impl Into<Bytes>) -> ClientBody {
    BodyExt::boxed(Full::new(bytes.into()))
}

/// An HTTP/2 connection whose socket is bound to `source`.
async fn h2_from(source: &str, to: SocketAddr) -> hyper::client::conn::http2::SendRequest<ClientBody> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source.parse().unwrap(), 0)).unwrap();
    let stream = socket.connect(to).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::Builder::new(TokioExecutor::new()).handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    sender
}

/// F1: 2 HTTP/2 connections × 32 streams, each a form POST to a status route that sends
/// 4 MiB and then stalls (256 MiB in flight: what the relay held before). Before: every body was read whole before any stage (RSS
/// 45 → 1014 MiB with 15 MiB bodies, held for minutes, kept after). Now: at most 64 KiB
/// per `_method` read, what stages hold is budgeted, stalled bodies are cut after one
/// `body_rate_window`, and the memory comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_bodies_are_budgeted_stalled_ones_cut_and_the_memory_comes_back() {
    let upstream = RecordingUpstream::start().await;
    let relay = Binary::start(
        &upstream.url(),
        &[
            ("public", "header_read_timeout = \"1s\""),
            ("public", "body_rate_window = \"1s\""),
            ("public", "idle_timeout = \"6s\""),
            ("public", "body_memory = \"16MiB\""),
            ("public", "body_memory_per_connection = \"4MiB\""),
        ],
        None,
    );
    assert_eq!(get_status(relay.public, "/warm-up").await, 200);
    let before = relay.rss_kib();
    let chunk = Bytes::from(vec![b'a'; 16 * 1024]);
    let mut streams = Vec::new();
    let mut feeders = Vec::new();
    for _ in 0..2 {
        let sender = h2_from("127.0.0.1", relay.public).await;
        for _ in 0..32 {
            let (tx, body) = channel_body();
            let chunk = chunk.clone();
            feeders.push(tokio::spawn(async move {
                for _ in 0..256 {
                    if tx.send(chunk.clone()).await.is_err() {
                        return;
                    }
                }
                // Never finished: the body stays open until the test ends.
                tokio::time::sleep(Duration::from_secs(30)).await;
            }));
            let mut sender = sender.clone();
            streams.push(tokio::spawn(async move {
                let req = http::Request::post("http://social.example/api/v1/statuses").body(body).unwrap();
                match tokio::time::timeout(Duration::from_secs(15), sender.send_request(req)).await {
                    Ok(Ok(resp)) => resp.status().as_u16(),
                    Ok(Err(_)) => 0,
                    Err(_) => 1,
                }
            }));
        }
    }
    let started = Instant::now();
    let mut peak = before;
    while started.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(relay.rss_kib());
    }
    let mut statuses = Vec::new();
    for s in streams {
        statuses.push(s.await.unwrap());
    }
    let took = started.elapsed();
    for f in feeders {
        f.abort();
    }
    statuses.sort_unstable();
    assert!(statuses.iter().all(|s| [408, 413, 503].contains(s)), "{statuses:?}");
    assert!(statuses.contains(&503), "the body budget turned some away: {statuses:?}");
    assert!(statuses.contains(&408), "stalled bodies were cut: {statuses:?}");
    assert!(took < Duration::from_secs(12), "every stalled stream answered in {took:?}");
    let growth_mib = peak.saturating_sub(before) / 1024;
    assert!(growth_mib < 80, "RSS grew {growth_mib} MiB ({before} KiB → {peak} KiB)");
    let m = relay.metrics().await;
    assert_eq!(metric(&m, "pavise_body_memory_bytes"), Some(0), "every charge came back:\n{m}");
    assert!(metric(&m, "pavise_body_memory_refused_total").unwrap() > 0, "{m}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = relay.rss_kib();
    eprintln!(
        "held bodies: RSS {before} KiB → peak {peak} KiB → after {after} KiB; answered in {took:?}: {statuses:?}"
    );
    assert!(after.saturating_sub(before) / 1024 < 40, "RSS stayed up: {before} KiB → {after} KiB");
    let reached: Vec<_> = upstream.recorded().iter().map(|r| (r.uri.path().to_owned(), r.body.len())).collect();
    assert!(
        reached.iter().all(|(path, _)| path == "/warm-up"),
        "no stalled body reached the instance: {reached:?} {statuses:?}"
    );
}

/// F1: a `_method` form is read at most 64 KiB; a longer one streams on with its wire
/// method and, when its whole body turns out to override the method, fails before the
/// instance has all of it (Puma dispatches nothing it has not read whole).
#[tokio::test]
async fn a_long_method_form_streams_through_and_an_override_in_it_never_reaches_rails_whole() {
    let upstream = RecordingUpstream::start().await;
    let pavise = Pavise::start(&upstream.url(), quiet_pavise).await;
    let head = format!("status={}", "x".repeat(80 * 1024));
    let post = |tail: &'static str| {
        let head = head.clone();
        async move {
            let mut sender = h2_from(CLIENT, pavise.addr).await;
            let (tx, body) = channel_body();
            tokio::spawn(async move {
                tx.send(Bytes::from(head)).await.unwrap();
                // The end is not known when the head has been read.
                tokio::time::sleep(Duration::from_millis(100)).await;
                tx.send(Bytes::from_static(tail.as_bytes())).await.unwrap();
            });
            let req = http::Request::post("http://social.example/api/v1/statuses/109")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .unwrap();
            sender.send_request(req).await.unwrap().status().as_u16()
        }
    };
    assert_eq!(post("&visibility=direct").await, 200);
    let rec = upstream.last();
    assert_eq!(rec.body.len(), 80 * 1024 + "status=".len() + "&visibility=direct".len(), "every byte arrived");
    assert_eq!(rec.method, http::Method::POST);
    let m = metrics(&pavise).await;
    assert_eq!(route_count(&m, "api"), 1, "the stages saw the wire method (a POST to a status):\n{m}");

    // `_method=get` would make Rails show status 109; pavise's stages had seen a POST.
    assert_eq!(post("&_method=get").await, 400);
    for rec in upstream.recorded().iter().skip(1) {
        assert!(!rec.body.ends_with(b"_method=get"), "the overriding body reached the instance whole");
    }
    assert_eq!(route_count(&metrics(&pavise).await, "status_read"), 0);
    pavise.stop().await;
}

/// A streaming upstream: `/api/v1/streaming/...` answers an SSE stream that stays open
/// (a heartbeat a second) for as long as the test runs; everything else is a plain 200.
async fn sse_upstream() -> RecordingUpstream {
    RecordingUpstream::with_handler(|rec| {
        if !rec.uri.path().starts_with("/api/v1/streaming") {
            return text(200, "ok");
        }
        let beats = futures_util::stream::unfold(0u32, |n| async move {
            if n > 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            (n < 60).then(|| {
                (
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Frame::data(Bytes::from_static(b":thump\n\n"))),
                    n + 1,
                )
            })
        });
        let mut r = http::Response::new(BodyExt::boxed(StreamBody::new(beats)));
        r.headers_mut().insert("content-type", "text/event-stream".parse().unwrap());
        r
    })
    .await
}

/// F2: one client's SSE streams used to hold every `max_in_flight` permit (32 connections
/// of 32 streams), and the web UI, the API and federation all got 503. Now streams draw
/// on their own pool, and per connection and per client caps turn the hog away first.
#[tokio::test]
async fn sse_streams_never_starve_the_web_and_the_client_that_opens_too_many_is_refused() {
    let upstream = sse_upstream().await;
    let pavise = Pavise::start(&upstream.url(), |c| {
        quiet_pavise(c);
        c.upstream.max_in_flight = 8;
        c.public.max_sse = 6;
        c.public.max_streams_per_client = 4;
        c.public.max_streams_per_connection = 2;
    })
    .await;
    // Opens `n` SSE streams on one connection from `source`; the open ones are kept.
    let open = |source: &'static str, n: usize| async move {
        let sender = h2_from(source, pavise.addr).await;
        let mut kept = Vec::new();
        let mut refused = Vec::new();
        for _ in 0..n {
            let req = http::Request::get("http://social.example/api/v1/streaming/public").body(whole("")).unwrap();
            let resp = sender.clone().send_request(req).await.unwrap();
            match resp.status().as_u16() {
                200 => kept.push(resp),
                503 => {
                    assert!(resp.headers().contains_key("retry-after"));
                    refused.push(503);
                }
                other => panic!("an SSE request got {other}"),
            }
        }
        (kept, refused.len())
    };
    // The hog: three connections of three streams.
    let mut hog = Vec::new();
    let mut hog_refused = 0;
    for _ in 0..3 {
        let (kept, refused) = open(CLIENT, 3).await;
        hog.extend(kept);
        hog_refused += refused;
    }
    assert_eq!(hog.len(), 4, "max_streams_per_client");
    assert_eq!(hog_refused, 5);
    // Another client still gets its streams, until the streaming pool is full.
    let (other, refused) = open("127.13.37.62", 2).await;
    assert_eq!((other.len(), refused), (2, 0));
    let (third, refused) = open("127.13.37.63", 1).await;
    assert_eq!((third.len(), refused), (0, 1), "max_sse holds");
    // Meanwhile the web, the API and federation are served, the hog's requests included.
    for source in [CLIENT, "127.13.37.63"] {
        for (method, path) in [("GET", "/api/v1/timelines/home"), ("POST", "/inbox"), ("GET", "/")] {
            let req = http::Request::builder()
                .method(method)
                .uri(path)
                .header("host", "social.example")
                .body(Full::new(Bytes::from_static(b"{}")))
                .unwrap();
            let (parts, _) = send_from(source.parse().unwrap(), pavise.addr, req).await;
            assert_eq!(parts.status, 200, "{method} {path} from {source} while streams are open");
        }
    }
    let m = metrics(&pavise).await;
    assert_eq!(metric(&m, "pavise_streaming_in_flight"), Some(6), "{m}");
    for (cap, at_least) in [("connection_streams", 2), ("client_streams", 3), ("sse", 1)] {
        let n = metric(&m, &format!("pavise_capped_total{{cap=\"{cap}\"}}")).unwrap();
        assert!(n >= at_least, "{cap}: {n}\n{m}");
    }
    // Streams that end give their places back.
    drop((hog, other));
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&metrics(&pavise).await, "pavise_streaming_in_flight") != Some(0) {
        assert!(Instant::now() < deadline, "stream permits were not given back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (again, refused) = open(CLIENT, 2).await;
    assert_eq!((again.len(), refused), (2, 0));
    drop(again);
    pavise.stop().await;
}

/// A real nginx in front of pavise, configured as README step 4 says (and, on a second
/// port, as it used to say: the `X-Forwarded-For` line removed). Killed on drop.
struct Nginx {
    child: Child,
    readme: SocketAddr,
    without_xff: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// `None` when nginx is not installed (a failure under CI=true: scripts/deps installs it).
    async fn start(pavise: SocketAddr) -> Option<Nginx> {
        let bin = ["/usr/sbin/nginx", "/usr/bin/nginx"].into_iter().find(|p| std::path::Path::new(p).exists());
        let Some(bin) = bin else {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "nginx is missing under CI=true (scripts/deps)");
            eprintln!("nginx not installed: skipping");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let port = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let (readme, without_xff) = (port(), port());
        let d = dir.path().display();
        let location = |xff: &str| {
            format!(
                "location / {{ proxy_set_header Host $host; {xff} proxy_set_header X-Forwarded-Proto $scheme; proxy_http_version 1.1; proxy_pass http://{pavise}; }}"
            )
        };
        let conf = format!(
            "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{ access_log off; client_body_temp_path {d}/t1; proxy_temp_path {d}/t2; fastcgi_temp_path {d}/t3; uwsgi_temp_path {d}/t4; scgi_temp_path {d}/t5;\n\
             server {{ listen {readme}; {} }}\n\
             server {{ listen {without_xff}; {} }} }}\n",
            location("proxy_set_header X-Forwarded-For $remote_addr;"),
            location(""),
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let child = Command::new(bin)
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let nginx = Nginx { child, readme, without_xff, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(without_xff).await.is_err() || TcpStream::connect(readme).await.is_err() {
            assert!(Instant::now() < deadline, "nginx did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Some(nginx)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// F3: following README step 4 used to let clients choose their pseudonyms (nginx passed
/// a client's own `X-Forwarded-For` through, pavise believed it: 12 sign-ups, 12
/// pseudonyms). With the edge overwriting the header, one client is one pseudonym
/// whatever it sends; an edge that sends nothing gets one pseudonym for everybody, and
/// says so in the log and `/metrics`.
#[tokio::test]
async fn behind_a_real_nginx_set_up_as_the_readme_says_clients_cannot_choose_their_pseudonym() {
    let upstream = RecordingUpstream::start().await;
    let pavise = Pavise::start(&upstream.url(), |c| {
        quiet_pavise(c);
        c.client_ip.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let Some(nginx) = Nginx::start(pavise.addr).await else { return };
    let through = |edge: SocketAddr, source: &'static str, spoof: Option<String>| {
        let upstream = &upstream;
        async move {
            let mut req = http::Request::post("/api/v1/accounts").header("host", "social.example");
            if let Some(spoof) = spoof {
                req = req.header("x-forwarded-for", spoof).header("x-real-ip", "198.51.100.200");
            }
            let (parts, _) = send_from(source.parse().unwrap(), edge, req.body(Full::default()).unwrap()).await;
            assert_eq!(parts.status, 200);
            let rec = upstream.last();
            assert_eq!(rec.headers["x-forwarded-proto"], "http");
            rec.headers["x-forwarded-for"].to_str().unwrap().to_owned()
        }
    };
    let other = "127.13.37.62";
    let mut mine = std::collections::HashSet::new();
    for i in 0..6 {
        mine.insert(through(nginx.readme, CLIENT, Some(format!("198.51.100.{i}"))).await);
    }
    // Claiming to be the other client, or the edge itself, changes nothing either.
    mine.insert(through(nginx.readme, CLIENT, Some(other.to_owned())).await);
    mine.insert(through(nginx.readme, CLIENT, Some("127.0.0.1".to_owned())).await);
    mine.insert(through(nginx.readme, CLIENT, None).await);
    assert_eq!(mine.len(), 1, "one client, one pseudonym: {mine:?}");
    let theirs = through(nginx.readme, other, Some("198.51.100.1".to_owned())).await;
    assert!(!mine.contains(&theirs), "two clients, two pseudonyms");
    let theirs_again = through(nginx.readme, other, None).await;
    assert_eq!(theirs, theirs_again);

    // The old step 4 (no X-Forwarded-For line): two clients that send none share the
    // edge's pseudonym (never one of theirs), and pavise says why.
    let a = through(nginx.without_xff, CLIENT, None).await;
    let b = through(nginx.without_xff, other, None).await;
    assert_eq!(a, b);
    assert!(!mine.contains(&a) && a != theirs);
    let m = metrics(&pavise).await;
    assert!(metric(&m, "pavise_client_ip_unresolved_total{reason=\"missing\"}").unwrap() >= 2, "{m}");
    assert!(logs().contains("proxy_set_header X-Forwarded-For $remote_addr;"), "the log says what the edge must send");
    drop(nginx);
    pavise.stop().await;
}

/// F4: what pavise asks the instance because of a client's request carries that
/// client's pseudonym (so the instance's throttles count it): the status creation expiry
/// sends on the client's behalf, over HTTP/1.1 with `Connection` tricks and over HTTP/2,
/// and the look-up of a scheduled post's account the same exchange makes.
#[tokio::test]
async fn requests_pavise_makes_because_of_a_client_carry_its_pseudonym() {
    let upstream = RecordingUpstream::with_handler(|rec| {
        let json = |body: &str| {
            let mut r = text(200, body);
            r.headers_mut().insert("content-type", "application/json".parse().unwrap());
            r
        };
        match rec.uri.path() {
            "/api/v1/statuses" => json(
                r#"{"id":"7","scheduled_at":"2999-01-01T00:00:00.000Z","params":{"text":"later","visibility":"public"},"media_attachments":[]}"#,
            ),
            "/api/v1/accounts/verify_credentials" => json(r#"{"id":"1","username":"alice","acct":"alice"}"#),
            _ => text(200, "ok"),
        }
    })
    .await;
    let pavise = Pavise::start(&upstream.url(), |c| {
        quiet_pavise(c);
        // Sweeps are pavise's own housekeeping (no X-Forwarded-For); not under test here.
        c.expiry.sweep_archives = false;
    })
    .await;
    let create = || {
        let mut req = tricked("POST", "/api/v1/statuses", true);
        req.headers_mut().insert("authorization", "Bearer t0ken".parse().unwrap());
        *req.body_mut() = Full::new(Bytes::from_static(br#"{"status":"later","scheduled_at":"2999-01-01T00:00:00Z"}"#));
        req
    };
    let (parts, _) = send_from(CLIENT.parse().unwrap(), pavise.addr, create()).await;
    assert_eq!(parts.status, 200);
    let mut sender = h2_from(CLIENT, pavise.addr).await;
    let mut req = tricked("POST", "/api/v1/statuses", false).map(BodyExt::boxed);
    req.headers_mut().insert("authorization", "Bearer t0ken".parse().unwrap());
    *req.body_mut() = whole(&br#"{"status":"later","scheduled_at":"2999-01-01T00:00:00Z"}"#[..]);
    assert_eq!(sender.send_request(req).await.unwrap().status(), 200);

    let recorded = upstream.recorded();
    let creations: Vec<_> = recorded.iter().filter(|r| r.uri.path() == "/api/v1/statuses").collect();
    let lookups: Vec<_> = recorded.iter().filter(|r| r.uri.path() == "/api/v1/accounts/verify_credentials").collect();
    assert_eq!((creations.len(), lookups.len()), (2, 2), "{recorded:?}");
    for rec in creations {
        assert_carries_the_pseudonym(&rec.headers, "status creation");
    }
    let pseudonym = recorded[0].headers["x-forwarded-for"].clone();
    for rec in lookups {
        assert_eq!(rec.headers.get_all("x-forwarded-for").iter().collect::<Vec<_>>(), [&pseudonym]);
    }
    pavise.stop().await;
}

/// F5: a client over plain HTTP that sent `X-Forwarded-Ssl: on` was https to Rack 2.2
/// and 3.1; `X-Forwarded-Scheme` to Rack 2.2 and Puma. No header a framework reads a
/// scheme, host, port or path from reaches the instance, however spelled.
#[tokio::test]
async fn no_client_header_tells_the_instance_another_scheme_host_port_or_path() {
    let upstream = RecordingUpstream::start().await;
    let pavise = Pavise::start(&upstream.url(), quiet_pavise).await;
    const SPOOFS: &[(&str, &str)] = &[
        ("X-Forwarded-Ssl", "on"),
        ("X-Forwarded-Scheme", "https"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Port", "443"),
        ("X-Forwarded-Host", "evil.example"),
        ("X-Forwarded-Prefix", "/admin"),
        ("Forwarded", "proto=https;host=evil.example"),
        ("Front-End-Https", "on"),
        ("X-Url-Scheme", "https"),
        ("X-Original-URL", "/admin/accounts"),
        ("X-Rewrite-URL", "/admin/accounts"),
        ("X-Original-Host", "evil.example"),
    ];
    let mut req = http::Request::get("/api/v1/timelines/home").header("host", "social.example");
    for (k, v) in SPOOFS {
        req = req.header(*k, *v);
    }
    let (parts, _) = send_from(CLIENT.parse().unwrap(), pavise.addr, req.body(Full::default()).unwrap()).await;
    assert_eq!(parts.status, 200);
    let h = upstream.last().headers;
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "social.example");
    for (k, _) in SPOOFS.iter().filter(|(k, _)| !["X-Forwarded-Proto", "X-Forwarded-Host"].contains(k)) {
        assert!(!h.contains_key(*k), "{k} reached the instance: {h:?}");
    }
    assert!(!format!("{h:?}").contains("evil.example") && !format!("{h:?}").contains("/admin"), "{h:?}");
    pavise.stop().await;
}

/// F7: two `Host`s reached Puma (joined "a, b", while pavise's `X-Forwarded-Host` said
/// "a"), and `CONNECT host:port` was forwarded. Now both are refused on entry, over
/// HTTP/1.1 and HTTP/2, and nothing reaches the instance.
#[tokio::test]
async fn two_hosts_a_host_against_the_authority_connect_and_trace_are_refused() {
    let upstream = RecordingUpstream::start().await;
    let pavise = Pavise::start(&upstream.url(), quiet_pavise).await;
    let raw = |head: &'static str| async move {
        let mut s = TcpStream::connect(pavise.addr).await.unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    for (head, status) in [
        ("GET /about HTTP/1.1\r\nHost: social.example\r\nHost: evil.example\r\n\r\n", "400"),
        ("GET http://social.example/about HTTP/1.1\r\nHost: evil.example\r\n\r\n", "400"),
        ("CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n", "405"),
        ("TRACE /about HTTP/1.1\r\nHost: social.example\r\n\r\n", "405"),
    ] {
        let answer = raw(head).await;
        assert!(answer.starts_with(&format!("HTTP/1.1 {status}")), "{head:?} → {answer}");
    }
    // HTTP/2: a `host` header that is not the `:authority`.
    let mut sender = h2_from(CLIENT, pavise.addr).await;
    let req = http::Request::get("http://social.example/about").header("host", "evil.example").body(whole("")).unwrap();
    assert_eq!(sender.send_request(req).await.unwrap().status(), 400);
    // The same host twice in agreement is fine.
    let req =
        http::Request::get("http://social.example/about").header("host", "social.example").body(whole("")).unwrap();
    assert_eq!(sender.send_request(req).await.unwrap().status(), 200);
    assert_eq!(upstream.recorded().len(), 1, "only the agreeing request reached the instance");
    pavise.stop().await;
}

/// Suspicion: a client that resets its HTTP/2 streams after they were accepted still
/// made Puma do each request's work, outside `h2_max_streams` and `max_in_flight`. Now a
/// reset request keeps its permits until the instance answers: a connection never has
/// more than `h2_max_streams` requests running at the instance.
#[tokio::test]
async fn reset_streams_keep_their_place_until_the_instance_has_answered() {
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
        c.public.h2_max_streams = 4;
    })
    .await;
    let sender = h2_from(CLIENT, pavise.addr).await;
    // Four slow requests, reset by the client as soon as they are at the instance.
    let mut waiting = Vec::new();
    for _ in 0..4 {
        let mut s = sender.clone();
        waiting.push(tokio::spawn(async move {
            let _ = s.send_request(http::Request::get("http://social.example/slow").body(whole("")).unwrap()).await;
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while upstream.recorded().len() < 4 {
        assert!(Instant::now() < deadline, "the slow requests did not reach the instance");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for w in waiting {
        w.abort();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let m = metrics(&pavise).await;
    assert_eq!(metric(&m, "pavise_upstream_in_flight"), Some(4), "reset requests keep their permits:\n{m}");
    // The connection's streams are free again, but its four requests still run: a fifth
    // is refused, and never reaches the instance.
    let resp = sender
        .clone()
        .send_request(http::Request::get("http://social.example/x").body(whole("")).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    assert_eq!(upstream.recorded().len(), 4);
    // Another connection is served meanwhile.
    assert_eq!(get_status(pavise.addr, "/about").await, 200);
    // Once the instance has answered, the permits come back.
    release.notify_waiters();
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&metrics(&pavise).await, "pavise_upstream_in_flight") != Some(0) {
        assert!(Instant::now() < deadline, "the permits did not come back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let resp = sender
        .clone()
        .send_request(http::Request::get("http://social.example/x").body(whole("")).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let m = metrics(&pavise).await;
    assert!(m.contains("pavise_capped_total{cap=\"connection_requests\"} 1"), "{m}");
    pavise.stop().await;
}
