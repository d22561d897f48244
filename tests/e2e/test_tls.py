"""pavise's own TLS listener with a pair from scripts/dev-cert: http/1.1 and h2 (ALPN)
both negotiate, and a real client gets answers from the instance through it."""

from __future__ import annotations

import http.client
import socket
import ssl
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, login


@pytest.fixture
def tls_pavise(tmp_path: Path, pavise_factory, mastodon_mock):
    certs = tmp_path / "certs"
    out = subprocess.run([str(ROOT / "scripts/dev-cert"), str(certs)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    config = f'[public]\ntls_cert = "{certs}/dev-cert.pem"\ntls_key = "{certs}/dev-key.pem"\n'
    relay = pavise_factory(mastodon_mock.url, config_text=config)
    ctx = ssl.create_default_context(cafile=str(certs / "dev-cert.pem"))
    return relay, ctx


def negotiated(port: int, ctx: ssl.SSLContext, offer: list[str]) -> str | None:
    ctx.set_alpn_protocols(offer)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            return tls.selected_alpn_protocol()


def test_alpn_offers_h2_and_http11(tls_pavise):
    relay, ctx = tls_pavise
    assert negotiated(relay.port, ctx, ["h2", "http/1.1"]) == "h2"
    assert negotiated(relay.port, ctx, ["http/1.1"]) == "http/1.1"


def test_h2_request_through_tls(tls_pavise):
    """A minimal HTTP/2 exchange by hand (no h2 client library in the venv): preface,
    SETTINGS, one HEADERS frame (HPACK literals, no Huffman), read until a HEADERS frame
    comes back, and decode its `:status` (static-table index 8 = 200)."""
    relay, ctx = tls_pavise
    ctx.set_alpn_protocols(["h2"])

    def literal(name: bytes, value: bytes) -> bytes:  # literal without indexing, new name
        return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value

    block = (b"\x82"  # :method GET
             + b"\x86"  # :scheme http (scheme is informational here)
             + literal(b":path", b"/api/v1/instance")
             + literal(b":authority", f"localhost:{relay.port}".encode()))
    frame = lambda kind, flags, stream, payload: (len(payload).to_bytes(3, "big") + bytes([kind, flags])
                                                  + stream.to_bytes(4, "big") + payload)
    with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.selected_alpn_protocol() == "h2"
            tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0, b"")
                        + frame(1, 0x05, 1, block))  # END_STREAM | END_HEADERS
            buf = b""
            status = None
            while status is None:
                chunk = tls.recv(65536)
                assert chunk, "connection closed before a response"
                buf += chunk
                while len(buf) >= 9:
                    length = int.from_bytes(buf[:3], "big")
                    if len(buf) < 9 + length:
                        break
                    kind, stream, payload = buf[3], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF, buf[9:9 + length]
                    buf = buf[9 + length:]
                    if kind == 1 and stream == 1:
                        first = payload[0]
                        # 0x88 = indexed :status 200; anything else: show the bytes.
                        status = 200 if first == 0x88 else payload[:16]
                        break
    assert status == 200, f"h2 response header block starts {status!r}"


def test_http11_and_mastodon_py_over_tls(tls_pavise, monkeypatch):
    relay, ctx = tls_pavise
    ctx.set_alpn_protocols(["http/1.1"])
    conn = http.client.HTTPSConnection("localhost", relay.port, timeout=10, context=ctx)
    conn.request("GET", "/api/v1/instance")
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    assert resp.status == 200, body[:200]
    assert resp.getheader("Server") is None, "pavise strips the Server header"

    # A real client over https: the instance learns the scheme from X-Forwarded-Proto and
    # hands out https URLs, which lead back to pavise's TLS listener.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(relay.log_path.parent.parent / "certs/dev-cert.pem"))
    api = login(f"https://localhost:{relay.port}", "alice")
    assert api.status_post("over TLS").id
    assert api.instance_v1().urls.streaming_api == f"wss://localhost:{relay.port}"
