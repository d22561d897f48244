"""No client address or location reaches the instance, pavise's log or its data dir.

A client on a distinctive loopback address (127.13.37.42) sends every client-IP and
geolocation header of issue 2 §6 (and ../shared/METADATA.md §2, and the edge headers of
issue 10's red team, some in no table: only the allowlist stops those), each with a value of
its own, on ordinary API calls, a status post, an inbox delivery and a WebSocket
upgrade. Then: none of those values and not the client's address appear in what
mastodon-mock received, in pavise's log, or in any file under pavise's data dir.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import socket

import pytest
from websockets.sync.client import connect as ws_connect

from conftest import login

CLIENT_ADDR = "127.13.37.42"

# Header name → the kind of value a CDN would put there. Each value is made unique below.
IP_HEADERS = [
    "Forwarded", "Client-IP", "X-Forwarded-For", "X-Real-IP", "True-Client-IP", "CF-Connecting-IP",
    "CF-Pseudo-IPv4", "Fastly-Client-IP", "X-Client-IP", "X-Cluster-Client-IP", "X-Forwarded",
    "Forwarded-For", "CloudFront-Viewer-Address", "X-AppEngine-User-IP", "Fly-Client-IP",
    "x-vercel-forwarded-for", "X-Azure-ClientIP", "X-Azure-SocketIP", "DO-Connecting-IP",
    "X-Original-Forwarded-For", "X-Envoy-External-Address", "X-ProxyUser-Ip", "WL-Proxy-Client-IP",
    "Proxy-Client-IP", "X-Nf-Client-Connection-Ip",
    # Issue 10 (red team H1): what edges add that the first table missed.
    "Cdn-Src-Ip", "X-Real-Client-IP",
]
IPV6_HEADERS = ["CF-Connecting-IPv6"]
GEO_HEADERS = [
    "CF-IPCountry", "CF-IPCity", "CF-IPContinent", "CF-IPLatitude", "CF-IPLongitude", "CF-Region",
    "CF-Region-Code", "CF-Metro-Code", "CF-Postal-Code", "CF-Timezone",
    "CloudFront-Viewer-Country", "CloudFront-Viewer-Country-Name", "CloudFront-Viewer-Country-Region",
    "CloudFront-Viewer-Country-Region-Name", "CloudFront-Viewer-City", "CloudFront-Viewer-Postal-Code",
    "CloudFront-Viewer-Time-Zone", "CloudFront-Viewer-Latitude", "CloudFront-Viewer-Longitude",
    "CloudFront-Viewer-Metro-Code", "CloudFront-Viewer-ASN",
    "X-AppEngine-Country", "X-AppEngine-Region", "X-AppEngine-City", "X-AppEngine-CityLatLong",
    "X-Geo-Country", "X-Geo-City", "X-GeoIP-Country-Code", "X-GeoIP-Latitude", "GeoIP-City",
    "X-Country-Code", "X-Real-Country", "X-City", "x-vercel-ip-country", "x-vercel-ip-country-region",
    "x-vercel-ip-city", "x-vercel-ip-latitude", "x-vercel-ip-longitude", "x-vercel-ip-timezone",
    "x-vercel-ip-postal-code", "X-Nf-Geo", "X-Akamai-Edgescape", "X-Fastly-Country-Code",
    # Issue 10: the edge a phone reached names its city; and names no table lists at all,
    # which only the allowlist keeps out.
    "CF-Ray", "Fly-Region", "Fly-Request-Id", "Fastly-FF", "X-Vercel-Id", "X-User-Location", "Geo-Position",
]


def spoofed_headers() -> list[tuple[str, str]]:
    """Every header with a unique, greppable value (3-digit octets: no value is a prefix of another)."""
    out: list[tuple[str, str]] = []
    for i, name in enumerate(IP_HEADERS):
        ip = f"203.0.113.{100 + i}"
        if name == "Forwarded":
            out.append((name, f"for={ip};proto=https"))
        elif name == "CloudFront-Viewer-Address":
            out.append((name, f"{ip}:46532"))
        else:
            out.append((name, ip))
    for i, name in enumerate(IPV6_HEADERS):
        out.append((name, f"2a0b:f00d:{0xa100 + i:x}::1"))
    for i, name in enumerate(GEO_HEADERS):
        out.append((name, f"Geoleak{100 + i}"))
    # A second X-Forwarded-For line and odd capitalisation: all copies go.
    out.append(("x-FORWARDED-for", "203.0.113.199"))
    return out


SPOOFED = spoofed_headers()

# Issue 16: a client naming pavise's own headers in `Connection` used to remove them
# after pavise had set them (the instance then saw 127.0.0.1, which Mastodon exempts
# from every throttle), and Rack reads `X_Forwarded_For` as `X-Forwarded-For`.
TRICKS = {
    "Connection": "keep-alive, X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host, Host, X-Real-IP",
    "X_Forwarded_For": "127.0.0.1",
    "X_Real_IP": "127.0.0.1",
    "X-HTTP-Method-Override": "DELETE",
    # Red-team F5: a plain-HTTP client claiming https (Rack 2.2 and 3.1 believe
    # X-Forwarded-Ssl, Rack 2.2 and Puma X-Forwarded-Scheme), another port, another path.
    "X-Forwarded-Ssl": "on",
    "X-Forwarded-Scheme": "https",
    "Front-End-Https": "on",
    "X-Url-Scheme": "https",
    "X-Forwarded-Port": "443",
    "X-Original-URL": "/admin/accounts",
}
SCHEME_TRICKS = ("x-forwarded-ssl", "x-forwarded-scheme", "front-end-https", "x-url-scheme", "x-forwarded-port",
                 "x-original-url")


def marker(name: str, value: str) -> str:
    """The address or place inside a header value, without `for=`/`;proto=`/`:port`."""
    core = value.removeprefix("for=").split(";")[0]
    return core.rsplit(":", 1)[0] if name == "CloudFront-Viewer-Address" else core


def connection_from(addr: str, port: int) -> http.client.HTTPConnection:
    """An HTTP connection whose source address is `addr` (any 127/8 address works on Linux)."""
    return http.client.HTTPConnection("127.0.0.1", port, timeout=15, source_address=(addr, 0))


def send(port: int, method: str, path: str, body: bytes | None = None, extra: dict[str, str] | None = None) -> int:
    conn = connection_from(CLIENT_ADDR, port)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in SPOOFED:
            conn.putheader(name, value)
        for name, value in (extra or {}).items():
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


@pytest.fixture(scope="module")
def leak_run(pavise, mastodon_mock):
    """Drives every kind of request once, from CLIENT_ADDR with every spoofed header."""
    token = login(pavise.url, "alice").access_token
    before = len(mastodon_mock.requests())
    statuses = {
        "instance": send(pavise.port, "GET", "/api/v1/instance"),
        "public": send(pavise.port, "GET", "/api/v1/timelines/public?limit=1"),
        "post": send(pavise.port, "POST", "/api/v1/statuses", b"status=leak+test",
                     {"Authorization": f"Bearer {token}", "Content-Type": "application/x-www-form-urlencoded"}),
        "inbox": send(pavise.port, "POST", "/users/alice/inbox", b'{"type":"Follow"}',
                      {"Content-Type": "application/activity+json"}),
        "web": send(pavise.port, "GET", "/@alice"),
        "instance_tricked": send(pavise.port, "GET", "/api/v1/instance", extra=TRICKS),
        "post_tricked": send(pavise.port, "POST", "/api/v1/statuses", b"status=leak+test+2",
                             {**TRICKS, "Authorization": f"Bearer {token}",
                              "Content-Type": "application/x-www-form-urlencoded"}),
        "inbox_tricked": send(pavise.port, "POST", "/users/alice/inbox/", b'{"type":"Follow"}',
                              {**TRICKS, "Content-Type": "application/activity+json"}),
    }
    url = f"ws://127.0.0.1:{pavise.port}/api/v1/streaming?stream=public"
    tricked = [(k, v) for k, v in TRICKS.items() if k != "Connection"] + [("Connection", "X-Forwarded-For, Host")]
    for extra in ([], tricked):
        sock = socket.create_connection(("127.0.0.1", pavise.port), timeout=10, source_address=(CLIENT_ADDR, 0))
        with ws_connect(url, sock=sock, additional_headers=SPOOFED + extra, open_timeout=10, close_timeout=5):
            pass
    received = mastodon_mock.requests()[before:]
    return statuses, received


def test_the_requests_reached_the_instance(leak_run):
    statuses, received = leak_run
    assert statuses["instance"] == 200 and statuses["public"] == 200 and statuses["post"] == 200, statuses
    assert statuses["instance_tricked"] == 200 and statuses["post_tricked"] == 200, statuses
    paths = {r["path"] for r in received}
    assert {"/api/v1/instance", "/api/v1/timelines/public", "/api/v1/statuses", "/users/alice/inbox",
            "/api/v1/streaming"} <= paths, paths
    assert sum(r["type"] == "websocket" for r in received) == 2
    assert "/users/alice/inbox/" in paths


@pytest.mark.parametrize("name,value", SPOOFED, ids=[f"{n}" for n, _ in SPOOFED])
def test_no_spoofed_value_reaches_the_instance(leak_run, name, value):
    _, received = leak_run
    text = json.dumps(received)
    assert marker(name, value) not in text, f"{name}: {value} reached the instance"
    # The header itself is gone (pavise sets its own X-Forwarded-For: the pseudonym).
    if name.lower() != "x-forwarded-for":
        for r in received:
            assert name.lower() not in dict(r["headers"]), f"{name} reached the instance"


def test_instance_sees_only_a_pseudonym(leak_run):
    _, received = leak_run
    for r in received:
        xffs = [v for k, v in r["headers"] if k == "x-forwarded-for"]
        assert len(xffs) == 1, (r["path"], xffs)
        assert ipaddress.ip_address(xffs[0]) in ipaddress.ip_network("2001:db8::/32"), xffs
        assert CLIENT_ADDR not in json.dumps(r)
        assert not any(k in ("client-ip", "forwarded", "x-real-ip") for k, _ in r["headers"])
        # Nothing a client sent removed pavise's headers or slipped an address past them.
        headers = dict(r["headers"])
        assert headers.get("host"), (r["path"], "Host is kept")
        assert headers.get("x-forwarded-proto") == "http", (r["path"], headers.get("x-forwarded-proto"))
        assert not any("_" in k for k, _ in r["headers"]), (r["path"], r["headers"])
        assert not any(k in SCHEME_TRICKS for k, _ in r["headers"]), (r["path"], r["headers"])
        assert not any(v == "127.0.0.1" for _, v in r["headers"]), (r["path"], r["headers"])
        assert "x-http-method-override" not in headers


def test_nothing_in_the_log_or_data_dir(leak_run, pavise):
    log = pavise.log_text()
    files = pavise.files_text().decode("latin-1")
    for name, value in SPOOFED:
        assert marker(name, value) not in log, f"{name} value {value} is in pavise's log"
        assert marker(name, value) not in files, f"{name} value {value} is under the data dir"
    assert CLIENT_ADDR not in log, "the client's raw address is in pavise's log"
    assert CLIENT_ADDR not in files, "the client's raw address is under the data dir"
    # The log did record these requests (so the checks above looked at real lines).
    assert "inbox" in log, "no access-log line for the inbox delivery"
