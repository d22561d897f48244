//! The foundation, end to end on loopback: what reaches the instance, what does not.

use std::{net::IpAddr, time::Duration};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use ipnet::IpNet;

use crate::support::{Pavise, RecordingUpstream, files_under, logs, send_from, text};

/// The distinctive source address the leak tests connect from.
const CLIENT: &str = "127.13.37.42";

/// Every client-IP and geolocation header of issue 2, each with a value that must not leak.
fn spoofed_headers() -> Vec<(&'static str, String)> {
    [
        "Forwarded",
        "Client-IP",
        "X-Forwarded-For",
        "X-Real-IP",
        "True-Client-IP",
        "CF-Connecting-IP",
        "CF-Connecting-IPv6",
        "CF-IPCountry",
        "CF-IPCity",
        "CF-IPContinent",
        "CF-IPLatitude",
        "CF-IPLongitude",
        "CF-Region",
        "CF-Postal-Code",
        "CF-Timezone",
        "Fastly-Client-IP",
        "X-Client-IP",
        "X-Cluster-Client-IP",
        "X-Forwarded",
        "Forwarded-For",
        "CloudFront-Viewer-Address",
        "CloudFront-Viewer-Country",
        "CloudFront-Viewer-City",
        "CloudFront-Viewer-Latitude",
        "CloudFront-Viewer-Longitude",
        "CloudFront-Viewer-Postal-Code",
        "X-AppEngine-Country",
        "X-AppEngine-Region",
        "X-AppEngine-City",
        "X-AppEngine-CityLatLong",
        "X-Geo-Country",
        "X-GeoIP-City",
        "X-Country-Code",
        "X-Real-Country",
        "Fly-Client-IP",
        "x-vercel-forwarded-for",
        "x-vercel-ip-city",
        "x-vercel-ip-latitude",
        "X-Azure-ClientIP",
        "X-Azure-SocketIP",
        "DO-Connecting-IP",
        "X-Original-Forwarded-For",
        "X-Envoy-External-Address",
        "X-ProxyUser-Ip",
        "WL-Proxy-Client-IP",
        "Proxy-Client-IP",
    ]
    .into_iter()
    .enumerate()
    .map(|(i, name)| (name, format!("leak{i:02}x.{}", 198 + i % 50)))
    .collect()
}

fn get(path: &str) -> http::Request<Full<Bytes>> {
    http::Request::get(path).header("host", "social.example").body(Full::new(Bytes::new())).unwrap()
}

fn forwarded_for(rec: &crate::support::Recorded) -> IpAddr {
    let all: Vec<_> = rec.headers.get_all("x-forwarded-for").iter().collect();
    assert_eq!(all.len(), 1, "exactly one X-Forwarded-For reaches the instance: {all:?}");
    all[0].to_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn no_client_address_or_location_reaches_the_instance_logs_or_disk() {
    let upstream = RecordingUpstream::start().await;
    let pavise = Pavise::start(&upstream.url(), |_| {}).await;
    let spoofed = spoofed_headers();

    let mut req = get("/api/v1/timelines/home?x=1");
    for (name, value) in &spoofed {
        req.headers_mut().insert(*name, value.parse().unwrap());
    }
    let (parts, _) = send_from(CLIENT.parse().unwrap(), pavise.addr, req).await;
    assert_eq!(parts.status, 200);

    // The same headers on a WebSocket handshake to the streaming API.
    let mut ws = get("/api/v1/streaming?stream=public");
    for (name, value) in &spoofed {
        ws.headers_mut().insert(*name, value.parse().unwrap());
    }
    ws.headers_mut().insert("connection", "Upgrade".parse().unwrap());
    ws.headers_mut().insert("upgrade", "websocket".parse().unwrap());
    ws.headers_mut().insert("sec-websocket-version", "13".parse().unwrap());
    ws.headers_mut().insert("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==".parse().unwrap());
    let _ = send_from(CLIENT.parse().unwrap(), pavise.addr, ws).await;

    let recorded = upstream.recorded();
    assert_eq!(recorded.len(), 2);
    for rec in &recorded {
        let mut seen = format!("{} {}\n", rec.method, rec.uri);
        for (name, value) in &rec.headers {
            seen.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("?")));
        }
        seen.push_str(&String::from_utf8_lossy(&rec.body));
        assert!(!seen.contains(CLIENT), "the raw client address reached the instance:\n{seen}");
        for (name, value) in &spoofed {
            assert!(!seen.contains(value.as_str()), "{name}'s value reached the instance:\n{seen}");
        }
        let pseudonym = forwarded_for(rec);
        assert!("2001:db8::/32".parse::<IpNet>().unwrap().contains(&pseudonym), "{pseudonym} is not a pseudonym");
        assert_eq!(rec.headers["host"], "social.example", "Host is kept as the client sent it");
    }

    let log = logs();
    assert!(log.contains("pavise::access"), "the access log is captured (else this test proves nothing)");
    assert!(!log.contains(CLIENT), "the raw client address reached the log");
    for (name, value) in &spoofed {
        assert!(!log.contains(value.as_str()), "{name}'s value reached the log");
    }
    let needle = CLIENT.as_bytes();
    for (path, bytes) in files_under(pavise.data_dir.path()) {
        assert!(!bytes.windows(needle.len()).any(|w| w == needle), "{} holds the raw address", path.display());
    }
    pavise.stop().await;
}

#[tokio::test]
async fn pseudonyms_are_stable_per_client_distinct_across_clients_and_rotate() {
    let upstream = RecordingUpstream::start().await;
    let pavise = Pavise::start(&upstream.url(), |c| c.client_ip.rotate = "1s".parse().unwrap()).await;
    let a: IpAddr = "127.13.37.42".parse().unwrap();
    let b: IpAddr = "127.13.37.43".parse().unwrap();

    send_from(a, pavise.addr, get("/")).await;
    send_from(a, pavise.addr, get("/")).await;
    send_from(b, pavise.addr, get("/")).await;
    let seen: Vec<IpAddr> = upstream.recorded().iter().map(forwarded_for).collect();
    assert_eq!(seen[0], seen[1], "same client, same period → same pseudonym");
    assert_ne!(seen[0], seen[2], "two clients → two pseudonyms");

    tokio::time::sleep(Duration::from_millis(1100)).await;
    send_from(a, pavise.addr, get("/")).await;
    let after = forwarded_for(&upstream.last());
    assert_ne!(after, seen[0], "after a rotation the same client is unlinkable");
    pavise.stop().await;
}

#[tokio::test]
async fn trusted_load_balancer_hop_is_believed_then_pseudonymized() {
    let upstream = RecordingUpstream::start().await;
    let pavise =
        Pavise::start(&upstream.url(), |c| c.client_ip.trusted_proxies = vec!["127.13.37.0/24".parse().unwrap()]).await;
    let mut req = get("/");
    req.headers_mut().insert("x-forwarded-for", "203.0.113.77".parse().unwrap());
    send_from("127.13.37.1".parse().unwrap(), pavise.addr, req).await;
    let via_lb = forwarded_for(&upstream.last());

    let direct_to_pavise = {
        let mut req = get("/");
        req.headers_mut().insert("x-forwarded-for", "203.0.113.77".parse().unwrap());
        send_from("127.99.0.1".parse().unwrap(), pavise.addr, req).await;
        forwarded_for(&upstream.last())
    };
    // Another LB hop carrying the same client: same pseudonym.
    let mut req = get("/");
    req.headers_mut().insert("x-forwarded-for", "203.0.113.77".parse().unwrap());
    send_from("127.13.37.2".parse().unwrap(), pavise.addr, req).await;
    assert_eq!(forwarded_for(&upstream.last()), via_lb);
    assert_ne!(direct_to_pavise, via_lb, "an untrusted peer's X-Forwarded-For is ignored");
    assert!(upstream.recorded().iter().all(|r| !format!("{:?}", r.headers).contains("203.0.113.77")));
    pavise.stop().await;
}

#[tokio::test]
async fn federation_delivery_arrives_byte_identical() {
    let upstream = RecordingUpstream::with_handler(|_| text(202, "")).await;
    let pavise = Pavise::start(&upstream.url(), |_| {}).await;
    let body = Bytes::from_static(
        br#"{"@context":"https://www.w3.org/ns/activitystreams","type":"Create","actor":"https://remote.example/users/bob"}"#,
    );
    let signed = [
        ("host", "social.example"),
        ("date", "Thu, 26 Nov 2026 13:00:00 GMT"),
        ("digest", "SHA-256=abc123="),
        ("content-type", "application/activity+json"),
        (
            "signature",
            r#"keyId="https://remote.example/users/bob#main-key",algorithm="rsa-sha256",headers="(request-target) host date digest content-type",signature="c2ln""#,
        ),
        ("signature-input", r#"sig1=("@method" "@target-uri" "content-digest");created=1700000000"#),
        ("content-digest", "sha-256=:YWJj:"),
    ];
    let mut req = http::Request::post("/users/alice/inbox?x=1").body(Full::new(body.clone())).unwrap();
    for (k, v) in signed {
        req.headers_mut().insert(k, v.parse().unwrap());
    }
    req.headers_mut().insert("content-length", body.len().to_string().parse().unwrap());
    let (parts, _) = send_from(CLIENT.parse().unwrap(), pavise.addr, req).await;
    assert_eq!(parts.status, 202);
    let rec = upstream.last();
    assert_eq!(rec.uri.path_and_query().unwrap().as_str(), "/users/alice/inbox?x=1");
    assert_eq!(rec.body, body);
    assert_eq!(rec.headers["content-length"], body.len().to_string().as_str());
    for (k, v) in signed {
        assert_eq!(rec.headers[k], v, "{k} changed on the way");
    }
    pavise.stop().await;
}

#[tokio::test]
async fn hop_by_hop_headers_go_forwarding_headers_come_and_fingerprints_are_hidden() {
    let upstream = RecordingUpstream::with_handler(|_| {
        let mut r = text(200, "<html></html>");
        for (k, v) in [
            ("server", "Mastodon"),
            ("x-powered-by", "Phusion"),
            ("x-runtime", "0.01"),
            ("via", "1.1 varnish"),
            ("content-type", "text/html"),
        ] {
            r.headers_mut().insert(k, v.parse().unwrap());
        }
        r
    })
    .await;
    let pavise = Pavise::start(&upstream.url(), |c| {
        c.response_headers.onion_location =
            Some("http://abcdefghijklmnopqrstuvwxyz234567abcdefghijklmnopqrstuv.onion".into())
    })
    .await;
    let mut req = get("/about");
    req.headers_mut().insert("connection", "x-private-hop".parse().unwrap());
    req.headers_mut().insert("x-private-hop", "secret".parse().unwrap());
    req.headers_mut().insert("te", "trailers".parse().unwrap());
    req.headers_mut().insert("x-forwarded-proto", "https".parse().unwrap());
    let (parts, _) = send_from(CLIENT.parse().unwrap(), pavise.addr, req).await;
    let rec = upstream.last();
    assert!(!rec.headers.contains_key("x-private-hop"), "a header named in Connection is hop-by-hop");
    assert!(!rec.headers.contains_key("te"));
    assert_eq!(rec.headers["x-forwarded-proto"], "http", "a client cannot claim https over plain HTTP");
    assert_eq!(rec.headers["x-forwarded-host"], "social.example");
    for h in ["server", "x-powered-by", "x-runtime", "via"] {
        assert!(!parts.headers.contains_key(h), "{h} reached the client");
    }
    assert_eq!(
        parts.headers["onion-location"],
        "http://abcdefghijklmnopqrstuvwxyz234567abcdefghijklmnopqrstuv.onion/about"
    );
    pavise.stop().await;
}

#[tokio::test]
async fn websocket_streaming_is_spliced_both_ways() {
    // A WebSocket echo server standing in for Mastodon's streaming server.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws_addr = listener.local_addr().unwrap();
    let handshake_headers = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = handshake_headers.clone();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        #[allow(clippy::result_large_err)] // the callback signature tungstenite asks for
        let callback = |req: &tokio_tungstenite::tungstenite::handshake::server::Request, resp| {
            *seen.lock().unwrap() = req.headers().iter().map(|(k, v)| format!("{k}: {v:?}")).collect();
            Ok(resp)
        };
        let mut ws = tokio_tungstenite::accept_hdr_async(stream, callback).await.unwrap();
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_text() {
                ws.send(msg).await.unwrap();
            }
        }
    });
    let upstream = RecordingUpstream::start().await;
    let pavise = Pavise::start(&upstream.url(), |c| c.upstream.streaming_url = format!("http://{ws_addr}")).await;

    let url = format!("ws://{}/api/v1/streaming?stream=user", pavise.addr);
    let mut request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url).unwrap();
    request.headers_mut().insert("x-real-ip", "198.51.100.200".parse().unwrap());
    request.headers_mut().insert("cf-ipcity", "Somewhere".parse().unwrap());
    let (mut ws, resp) = tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::connect_async(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 101);
    for i in 0..3 {
        let msg = format!(r#"{{"event":"update","payload":"{i}"}}"#);
        ws.send(tokio_tungstenite::tungstenite::Message::text(msg.clone())).await.unwrap();
        let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), msg);
    }
    let headers = handshake_headers.lock().unwrap().join("\n");
    assert!(!headers.contains("198.51.100.200") && !headers.contains("Somewhere"), "{headers}");
    assert!(headers.contains("x-forwarded-for: \"2001:db8:"), "{headers}");
    assert!(upstream.recorded().is_empty(), "streaming went to the streaming upstream, not the web one");
    ws.close(None).await.unwrap();
    pavise.stop().await;
}

#[tokio::test]
async fn server_sent_events_arrive_one_by_one() {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let rx = std::sync::Arc::new(std::sync::Mutex::new(Some(rx)));
    let upstream = RecordingUpstream::with_handler(move |_| {
        let rx = rx.lock().unwrap().take().expect("one SSE request");
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|b| (Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Frame::data(b)), rx))
        });
        let mut r = http::Response::new(BodyExt::boxed(StreamBody::new(stream)));
        r.headers_mut().insert("content-type", "text/event-stream".parse().unwrap());
        r
    })
    .await;
    let pavise = Pavise::start(&upstream.url(), |_| {}).await;

    let stream = tokio::net::TcpStream::connect(pavise.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    tx.send(Bytes::from_static(b"event: update\ndata: {\"id\":\"1\"}\n\n")).await.unwrap();
    let resp = sender.send_request(get("/api/v1/streaming/public")).await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let first =
        tokio::time::timeout(Duration::from_secs(5), body.frame()).await.expect("first event while the stream is open");
    let first = first.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"event: update\ndata: {\"id\":\"1\"}\n\n");
    tx.send(Bytes::from_static(b"event: delete\ndata: 1\n\n")).await.unwrap();
    let second = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap();
    assert_eq!(&second[..], b"event: delete\ndata: 1\n\n");
    drop(tx);
    pavise.stop().await;
}

#[tokio::test]
async fn tls_listener_speaks_h2_and_http11() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let upstream = RecordingUpstream::start().await;
    let pavise = Pavise::start(&upstream.url(), |c| {
        c.public.tls_cert = Some(cert_path.clone());
        c.public.tls_key = Some(key_path.clone());
    })
    .await;
    let root = reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap();
    let url = format!("https://localhost:{}/api/v1/instance", pavise.addr.port());
    for (h1_only, expected) in [(false, http::Version::HTTP_2), (true, http::Version::HTTP_11)] {
        let mut builder =
            reqwest::Client::builder().add_root_certificate(root.clone()).resolve("localhost", pavise.addr);
        if h1_only {
            builder = builder.http1_only();
        }
        let resp = builder.build().unwrap().get(&url).send().await.unwrap();
        assert_eq!(resp.version(), expected);
        assert_eq!(resp.status(), 200);
        assert_eq!(upstream.last().headers["x-forwarded-proto"], "https");
        assert_eq!(upstream.last().headers["host"], format!("localhost:{}", pavise.addr.port()).as_str());
    }
    pavise.stop().await;
}

#[tokio::test]
async fn upstream_down_is_a_502_in_mastodon_style_and_the_relay_stays_up() {
    // A port nobody listens on.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let pavise = Pavise::start(&format!("http://{dead}"), |_| {}).await;
    for _ in 0..3 {
        let (parts, body) = send_from("127.0.0.1".parse().unwrap(), pavise.addr, get("/api/v1/instance")).await;
        assert_eq!(parts.status, 502);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(v["error"].as_str().unwrap().contains("not reachable"), "{v}");
    }
    let ready =
        reqwest::Client::new().get(pavise.admin_url("/readyz")).bearer_auth(&pavise.token).send().await.unwrap();
    assert_eq!(ready.status(), 503, "readyz reports the instance down");
    pavise.stop().await;
}

#[tokio::test]
async fn malformed_and_oversized_requests_get_clear_errors() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = RecordingUpstream::start().await;
    let pavise = Pavise::start(&upstream.url(), |c| c.public.max_header_bytes = "16KiB".parse().unwrap()).await;

    async fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(bytes).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }
    let garbage = raw(pavise.addr, b"NOT HTTP AT ALL\r\n\r\n").await;
    assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage}");
    let huge = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(64 * 1024));
    let answer = raw(pavise.addr, huge.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    // Inbox bodies above Mastodon's 1 MiB cap never reach the instance.
    let big = Bytes::from(vec![b'x'; (1 << 20) + 1]);
    let req = http::Request::post("/inbox").header("host", "social.example").body(Full::new(big)).unwrap();
    let (parts, body) = send_from("127.0.0.1".parse().unwrap(), pavise.addr, req).await;
    assert_eq!(parts.status, 413, "{body:?}");
    assert!(upstream.recorded().is_empty(), "nothing reached the instance");
    // Still serving.
    let (parts, _) = send_from("127.0.0.1".parse().unwrap(), pavise.addr, get("/")).await;
    assert_eq!(parts.status, 200);
    pavise.stop().await;
}

#[tokio::test]
async fn admin_api_needs_the_token_and_counts_requests() {
    let upstream = RecordingUpstream::start().await;
    let pavise = Pavise::start(&upstream.url(), |_| {}).await;
    let client = reqwest::Client::new();
    assert_eq!(client.get(pavise.admin_url("/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(client.get(pavise.admin_url("/metrics")).send().await.unwrap().status(), 401);
    assert_eq!(client.get(pavise.admin_url("/metrics")).bearer_auth("wrong").send().await.unwrap().status(), 401);
    send_from("127.0.0.1".parse().unwrap(), pavise.addr, get("/api/v1/timelines/public")).await;
    let metrics =
        client.get(pavise.admin_url("/metrics")).bearer_auth(&pavise.token).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("pavise_requests_total{route=\"api\",status=\"2xx\"} 1"), "{metrics}");
    assert!(metrics.contains("pavise_upstream_latency_seconds_count 1"), "{metrics}");
    assert!(metrics.contains("pavise_open_connections"), "{metrics}");
    assert!(!metrics.contains("127.0.0.1"), "no addresses in metrics");
    let ready = client.get(pavise.admin_url("/readyz")).bearer_auth(&pavise.token).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(pavise.data_dir.path().join("admin.token")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the admin token is private to its owner");
    }
    pavise.stop().await;
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish_and_refuses_new_ones() {
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let gate = release.clone();
    let upstream = RecordingUpstream::with_async_handler(move |rec| {
        let gate = gate.clone();
        Box::pin(async move {
            if rec.uri.path() == "/slow" {
                // Hold the answer until the test has begun shutting down.
                let _ = tokio::time::timeout(Duration::from_secs(10), gate.notified()).await;
            }
            text(200, "done")
        })
    })
    .await;
    let pavise = Pavise::start(&upstream.url(), |_| {}).await;
    let addr = pavise.addr;
    let in_flight = tokio::spawn(async move { send_from("127.0.0.1".parse().unwrap(), addr, get("/slow")).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    pavise.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "no new connections once shutdown began");
    release.notify_one();
    let (parts, body) = tokio::time::timeout(Duration::from_secs(10), in_flight).await.unwrap().unwrap();
    assert_eq!(parts.status, 200);
    assert_eq!(&body[..], b"done");
    pavise.stop().await;
}

#[tokio::test]
async fn slow_headers_and_idle_connections_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = RecordingUpstream::start().await;
    let pavise = Pavise::start(&upstream.url(), |c| {
        c.public.header_read_timeout = "1s".parse().unwrap();
        c.public.idle_timeout = "2s".parse().unwrap();
    })
    .await;

    // Slowloris: half a request head, then silence.
    let mut slow = tokio::net::TcpStream::connect(pavise.addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "a connection that never finishes its head is closed");

    // Idle keep-alive: one request, then nothing either way.
    let mut idle = tokio::net::TcpStream::connect(pavise.addr).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(8), idle.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "an idle connection is closed");
    assert!(started.elapsed() >= Duration::from_millis(900), "not before it was idle: {:?}", started.elapsed());
    pavise.stop().await;
}
