"""Outbound federation over Tor, end to end with real clients: curl `-x` and Python
`requests` (as Mastodon's `http_proxy` would be used) through the pavise binary's
egress listener, over a private Tor network of Debian `tor` daemons on loopback
(scripts/tornet, brought up for this module and torn down by PID).

Each destination looks up which process owns the client end of every connection it
accepts (/proc/net/tcp inode -> /proc/PID/fd): a tor exit of the private network,
never pavise. The last test stops the Tor network under a running pavise: requests
then fail 502/503 and the destination gets no connection at all.

Self-contained (own fixtures); binary: PAVISE_BIN, else the newer of target/debug and
target/release `pavise` (build it first). Loopback only; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pavise_bin() -> Path:
    if os.environ.get("PAVISE_BIN"):
        return Path(os.environ["PAVISE_BIN"])
    found = [p for p in (ROOT / "target/debug/pavise", ROOT / "target/release/pavise") if p.exists()]
    if not found:
        pytest.fail("no pavise binary: run `cargo build --bin pavise` first")
    return max(found, key=lambda p: p.stat().st_mtime)


# ------------------------------------------------------------------------------------
# Who owns the other end of a loopback connection.


def _proc_addr(s: str) -> tuple[str, int]:
    ip, port = s.split(":")
    if len(ip) == 8:
        b = int(ip, 16).to_bytes(4, "little")
        return socket.inet_ntop(socket.AF_INET, b), int(port, 16)
    b = b"".join(int(ip[i:i + 8], 16).to_bytes(4, "little") for i in range(0, 32, 8))
    text = socket.inet_ntop(socket.AF_INET6, b)
    return (text[7:] if text.startswith("::ffff:") else text), int(port, 16)


def socket_owner(local: tuple[str, int], remote: tuple[str, int]) -> tuple[int, str] | None:
    inode = None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if _proc_addr(f[1]) == local and _proc_addr(f[2]) == remote:
                inode = f[9]
                break
        if inode:
            break
    if not inode:
        return None
    target = f"socket:[{inode}]"
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            for fd in (pid_dir / "fd").iterdir():
                if os.readlink(fd) == target:
                    return int(pid_dir.name), (pid_dir / "comm").read_text().strip()
        except OSError:
            continue
    return None


class Destination:
    """A threaded HTTP(S) server on 127.0.0.1 that records who connected."""

    def __init__(self, tls_dir: Path | None = None):
        self.owners: list[tuple[int, str] | None] = []
        owners = self.owners

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                body = f"dest ok {self.path}\n".encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 512
            daemon_threads = True

            def get_request(self):
                sock, peer = super().get_request()
                owners.append(socket_owner(peer[:2], self.server_address[:2]))
                return sock, peer

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        if tls_dir:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(tls_dir / "cert.pem", tls_dir / "key.pem")
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True, do_handshake_on_connect=False)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def assert_all_from_exits(self, exit_pids):
        assert self.owners, "the destination saw no connection"
        for owner in self.owners:
            assert owner is not None, "owner of the connection not found"
            pid, comm = owner
            assert comm == "tor" and pid in exit_pids, f"connection not from a tor exit: {owner}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# ------------------------------------------------------------------------------------
# Fixtures: one Tor network and one pavise for the module.


@pytest.fixture(scope="module")
def tornet(tmp_path_factory):
    d = tmp_path_factory.mktemp("tornet")
    try:
        subprocess.run([str(ROOT / "scripts/tornet"), "up", str(d)], check=True, timeout=150)
        state = json.loads((d / "tornet.json").read_text())
        state["dir"] = d
        state["exit_pids"] = [state["pids"]["exit0"], state["pids"]["exit1"]]
        yield state
    finally:
        subprocess.run([str(ROOT / "scripts/tornet"), "down", str(d)], timeout=30)


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "2", "-subj", "/CN=dest.test", "-addext", "subjectAltName=DNS:dest.test",
         "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
        check=True, capture_output=True, timeout=30)
    return d


@pytest.fixture(scope="module")
def dests(tls_dir):
    plain, tls = Destination(), Destination(tls_dir)
    yield {"plain": plain, "tls": tls}
    plain.close()
    tls.close()


@pytest.fixture(scope="module")
def pavise(tornet, dests, tmp_path_factory):
    d = tmp_path_factory.mktemp("pavise")
    egress, socks, admin, public = free_port(), free_port(), free_port(), free_port()
    ports = [443, 80, dests["plain"].port, dests["tls"].port]
    (d / "pavise.toml").write_text(f"""
data_dir = "{d / 'data'}"
[public]
listen = "127.0.0.1:{public}"
[admin]
listen = "127.0.0.1:{admin}"
[egress]
listen = "127.0.0.1:{egress}"
socks_listen = "127.0.0.1:{socks}"
allow_ports = {ports}
[egress.tor]
arti_config = "{tornet['arti_config']}"
""")
    log = open(d / "pavise.log", "w")
    proc = subprocess.Popen([str(pavise_bin()), "run", "--config", str(d / "pavise.toml")],
                            stdout=log, stderr=subprocess.STDOUT)
    token = None
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            assert proc.poll() is None, (d / "pavise.log").read_text()[-3000:]
            tf = d / "data" / "admin.token"
            if tf.exists() and tf.read_text().strip():
                token = tf.read_text().strip()
                try:
                    m = requests.get(f"http://127.0.0.1:{admin}/metrics", headers={"Authorization": f"Bearer {token}"},
                                     timeout=5, proxies={"http": None, "https": None}).text
                    if 'pavise_egress_tor_bootstrapped{mode="tor"} 1' in m:
                        break
                except requests.RequestException:
                    pass
            time.sleep(0.2)
        else:
            pytest.fail("pavise did not bootstrap Tor within 120 s")
        # On a fresh private network (and a loaded 2-core CI machine) arti's first exit circuits
        # can fail for a while after it reports a usable directory: wait, bounded, for one
        # stream to succeed so each test below asserts behaviour, not the network's warm-up.
        warm = f"http://127.0.0.1:{egress}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            r = curl("-x", warm, f"http://dest.test:{dests['plain'].port}/warm-up")
            if r.returncode == 0 and r.stdout.startswith("dest ok"):
                break
            time.sleep(2)
        else:
            pytest.fail("no stream through Tor within 120 s of bootstrap:\n"
                        + (d / "pavise.log").read_text()[-3000:])
        yield {"egress": f"http://127.0.0.1:{egress}", "socks": f"127.0.0.1:{socks}", "admin": admin,
               "token": token, "proc": proc, "log": d / "pavise.log"}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def curl(*args, timeout=90):
    r = subprocess.run(["curl", "-sS", "--max-time", "80", *args], capture_output=True, text=True, timeout=timeout)
    return r


def curl_retrying(*args):
    """First streams on a fresh network may race circuit building; a 502 from pavise's egress
    (Tor could not open a stream) is such a race too, not an answer to assert on."""
    for _ in range(8):
        r = curl(*args)
        if r.returncode == 0 and not r.stdout.startswith("pavise egress: Tor could not"):
            return r
        time.sleep(2)
    return r


# ------------------------------------------------------------------------------------
# Tests, in order: the last one stops the Tor network.


def test_curl_connect_https(pavise, dests, tls_dir, tornet):
    d = dests["tls"]
    r = curl_retrying("-x", pavise["egress"], "--cacert", str(tls_dir / "cert.pem"),
                      f"https://dest.test:{d.port}/curl-https")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "dest ok /curl-https\n"
    d.assert_all_from_exits(tornet["exit_pids"])


def test_curl_absolute_form_http(pavise, dests, tornet):
    d = dests["plain"]
    r = curl_retrying("-x", pavise["egress"], f"http://dest.test:{d.port}/curl-http")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "dest ok /curl-http\n"
    d.assert_all_from_exits(tornet["exit_pids"])


def test_curl_onion(pavise, tornet):
    r = curl_retrying("-x", pavise["egress"], f"http://{tornet['onion_host']}/")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"onion ok {tornet['onion_marker']}"


def test_curl_socks5h(pavise, dests, tornet):
    d = dests["plain"]
    r = curl_retrying("--socks5-hostname", pavise["socks"], f"http://dest.test:{d.port}/socks")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "dest ok /socks\n"
    d.assert_all_from_exits(tornet["exit_pids"])


def test_requests_https_http_and_onion(pavise, dests, tls_dir, tornet):
    proxies = {"http": pavise["egress"], "https": pavise["egress"]}
    s = requests.Session()
    s.trust_env = False
    for _ in range(5):
        try:
            r = s.get(f"https://dest.test:{dests['tls'].port}/requests", proxies=proxies,
                      verify=str(tls_dir / "cert.pem"), timeout=60)
            break
        except requests.RequestException:
            time.sleep(2)
    assert r.status_code == 200 and r.text == "dest ok /requests\n"
    r = s.get(f"http://dest.test:{dests['plain'].port}/requests", proxies=proxies, timeout=60)
    assert r.status_code == 200 and r.text == "dest ok /requests\n"
    r = s.get(f"http://{tornet['onion_host']}/", proxies=proxies, timeout=60)
    assert r.status_code == 200 and tornet["onion_marker"] in r.text
    dests["tls"].assert_all_from_exits(tornet["exit_pids"])
    dests["plain"].assert_all_from_exits(tornet["exit_pids"])


@pytest.mark.parametrize("target", ["10.0.0.1:443", "127.0.0.1:22", "[::1]:443", "169.254.169.254:80"])
def test_ssrf_guard_403(pavise, target):
    host, port = target.rsplit(":", 1)
    scheme = "https" if port == "443" else "http"
    # -p forces CONNECT for http too, so every case is the tunnel request.
    r = curl("-p", "-x", pavise["egress"], "-o", "/dev/null", "-w", "%{http_connect}", f"{scheme}://{host}:{port}/")
    assert r.stdout == "403", (r.stdout, r.stderr)
    s = requests.Session()
    s.trust_env = False
    if scheme == "http":
        r = s.get(f"http://{host}:{port}/", proxies={"http": pavise["egress"]}, timeout=30)
        assert r.status_code == 403
        assert "refused" in r.text


def test_readyz_and_metrics(pavise):
    h = {"Authorization": f"Bearer {pavise['token']}"}
    no_proxy = {"http": None, "https": None}
    m = requests.get(f"http://127.0.0.1:{pavise['admin']}/metrics", headers=h, proxies=no_proxy, timeout=10).text
    assert 'pavise_egress_failures_total{reason="refused_private_address"}' in m
    assert "pavise_egress_streams_total 0" not in m
    r = requests.get(f"http://127.0.0.1:{pavise['admin']}/readyz", headers=h, proxies=no_proxy, timeout=10).json()
    assert r["checks"]["tor"]["ready"] is True, r


def test_zz_fail_closed_after_the_tor_network_stops(pavise, dests, tls_dir, tornet):
    subprocess.run([str(ROOT / "scripts/tornet"), "down", str(tornet["dir"])], check=True, timeout=30)
    before = {k: len(d.owners) for k, d in dests.items()}
    # Three at once (each may wait for pavise's 30 s stream timeout): plain http by
    # name, https CONNECT by name, plain http again.
    base = ["curl", "-sS", "--max-time", "80", "-x", pavise["egress"], "-o", "/dev/null"]
    procs = [
        subprocess.Popen(base + ["-w", "%{http_code}", f"http://dest.test:{dests['plain'].port}/after-stop"],
                         stdout=subprocess.PIPE, text=True),
        subprocess.Popen(base + ["--cacert", str(tls_dir / "cert.pem"), "-w", "%{http_connect}",
                                 f"https://dest.test:{dests['tls'].port}/after-stop"],
                         stdout=subprocess.PIPE, text=True),
        subprocess.Popen(base + ["-w", "%{http_code}", f"http://dest.test:{dests['plain'].port}/after-stop-2"],
                         stdout=subprocess.PIPE, text=True),
    ]
    codes = [p.communicate(timeout=90)[0] for p in procs]
    assert all(c in ("502", "503") for c in codes), codes
    time.sleep(1)
    assert {k: len(d.owners) for k, d in dests.items()} == before, "a destination got a connection"
    # Three streams failed inside Tor in a row: /readyz says so.
    h = {"Authorization": f"Bearer {pavise['token']}"}
    ready = requests.get(f"http://127.0.0.1:{pavise['admin']}/readyz", headers=h,
                         proxies={"http": None, "https": None}, timeout=10).json()
    assert ready["checks"]["tor"]["ready"] is False, ready
    assert "failed inside Tor" in ready["checks"]["tor"]["reason"], ready
    assert pavise["proc"].poll() is None, "pavise must keep running"
