"""The pavise binary as an admin meets it: the CLI, the admin API, the token file,
an instance that is down, and a clean stop on SIGTERM."""

from __future__ import annotations

import http.client
import json
import stat
import subprocess
import time

import pytest

from conftest import free_port, pavise_bin


def test_admin_api(pavise):
    status, body = pavise.admin_get("/healthz", token="")
    assert status == 200 and json.loads(body)["status"] == "ok"

    # Everything else needs the token from <data_dir>/admin.token, made 0600 on first run.
    mode = stat.S_IMODE((pavise.data_dir / "admin.token").stat().st_mode)
    assert mode == 0o600, oct(mode)
    assert len(pavise.admin_token) >= 32
    assert pavise.admin_get("/readyz", token="")[0] == 401
    assert pavise.admin_get("/metrics", token="wrong")[0] == 401

    # Readiness probes are retried by whatever polls them; on a loaded 2-core CI box the
    # Python mock can miss the relay's 3 s probe budget once, so allow a few tries.
    deadline = time.monotonic() + 20
    while True:
        status, body = pavise.admin_get("/readyz")
        if status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert status == 200, body
    assert json.loads(body)["ready"] is True

    # Some traffic, then the counters show it.
    conn = http.client.HTTPConnection("127.0.0.1", pavise.port, timeout=10)
    conn.request("GET", "/api/v1/instance")
    assert conn.getresponse().status == 200
    conn.close()
    status, metrics = pavise.admin_get("/metrics")
    assert status == 200
    assert "pavise_" in metrics, metrics[:500]
    assert "127.0.0.1" not in metrics, "an address in a metric label"


def test_upstream_down_is_a_502_with_a_mastodon_style_error(pavise_factory):
    dead = f"http://127.0.0.1:{free_port()}"
    relay = pavise_factory(dead)
    conn = http.client.HTTPConnection("127.0.0.1", relay.port, timeout=15)
    conn.request("GET", "/api/v1/timelines/public")
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    assert resp.status == 502, (resp.status, body)
    assert "error" in json.loads(body)
    status, ready = relay.admin_get("/readyz")
    assert status == 503, ready
    assert relay.proc.poll() is None, "pavise died"


def test_sigterm_stops_cleanly(pavise_factory, mastodon_mock):
    relay = pavise_factory(mastodon_mock.url)
    assert relay.stop(grace=15) == 0, relay.log_text()[-2000:]


def test_check_prints_a_summary_and_rejects_a_bad_key(tmp_path):
    good = subprocess.run([str(pavise_bin()), "check"], capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert good.returncode == 0, good.stderr
    assert "127.0.0.1:8080" in good.stdout

    bad = tmp_path / "bad.toml"
    bad.write_text('[public]\nlisen = "127.0.0.1:1"\n')
    out = subprocess.run([str(pavise_bin()), "check", "--config", str(bad)], capture_output=True, text=True,
                         timeout=30, cwd=tmp_path)
    assert out.returncode == 1
    assert "lisen" in out.stderr, out.stderr


def raw_exchange(port: int, data: bytes) -> bytes:
    """Sends raw bytes, returns what comes back until the server closes (bounded)."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        out = b""
        while len(out) < 65536:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    return out


def test_malformed_and_oversized_requests_get_4xx_and_pavise_stays_up(pavise):
    big = raw_exchange(pavise.port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n")
    assert big.startswith(b"HTTP/1.1 431"), big[:80]
    garbage = raw_exchange(pavise.port, b"NOT HTTP AT ALL\r\n\r\n")
    assert garbage.startswith(b"HTTP/1.1 400"), garbage[:80]
    bad_length = raw_exchange(pavise.port, b"POST /inbox HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n")
    assert bad_length.startswith(b"HTTP/1.1 400"), bad_length[:80]
    assert pavise.proc.poll() is None
    assert pavise.admin_get("/healthz", token="")[0] == 200


def test_text_log_to_a_file_has_no_terminal_escapes(pavise):
    assert "\x1b[" not in pavise.log_text()
