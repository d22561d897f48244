"""Fixtures for pavise's end-to-end tests: real processes on loopback, nothing mocked
inside pavise.

What you get (see each fixture's docstring):

* ``mastodon_mock`` (session): the real ``mastodon-mock`` server (PyPI, FastAPI +
  SQLite in memory) on a free loopback port, seeded with local accounts ``alice`` and
  ``bob``, streaming (SSE and WebSocket) switched on. It records every request it
  receives (headers included) so a test can check what reached the instance:
  ``mastodon_mock.requests()``. Uploaded media land in ``mastodon_mock.media_dir``.
* ``pavise`` (session): the pavise binary in front of ``mastodon_mock`` (web and
  streaming upstream), ``--egress-mode direct``, temp data dir. Its ``url``,
  ``admin_url``, ``log_path`` (stderr + stdout), ``data_dir``, ``admin_token``.
* ``pavise_factory`` (function): start more pavise processes in front of any
  upstream, with extra flags or a config file; each is stopped at teardown.
* ``ws_streaming_pavise`` (function): ``(pavise, adapter)`` — a pavise whose streaming
  upstream is tests/e2e/streaming_adapter.py, which gives mastodon-mock's events
  Mastodon's multiplexed WebSocket protocol (what Mastodon.py's WebSocket client speaks).
* ``mastodon_app`` (function): a logged-in Mastodon.py client (``alice``) through
  pavise, from a freshly registered app.

Which binary: ``PAVISE_BIN`` if set (scripts/test sets it), else the newer of
target/debug/pavise and target/release/pavise. Build it first with ``cargo test
--no-run`` (the same feature set as the Rust tests, so nothing compiles twice); the
suite never builds anything itself.

Every wait is bounded; every process is killed at teardown. Loopback only.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from streaming_adapter import StreamingAdapter

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

# The accounts seeded into mastodon-mock; `mockcode_<username>` logs in as one.
MOCK_ACCOUNTS = ("alice", "bob")


# --------------------------------------------------------------------------------------
# Small helpers, importable from tests as `from conftest import ...`.
# --------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what: str, check: Callable[[], bool], timeout: float = 30.0, proc: subprocess.Popen | None = None,
               log: Path | None = None) -> None:
    """Polls ``check`` until it is true; fails after ``timeout`` s or if ``proc`` dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what}: process exited with {proc.returncode} while starting\n{tail(log)}")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    pytest.fail(f"{what}: not ready within {timeout}s\n{tail(log)}")


def tail(path: Path | None, lines: int = 40) -> str:
    if path is None or not path.exists():
        return ""
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return f"--- last lines of {path} ---\n" + "\n".join(text)


def http_status(url_host: str, port: int, path: str, headers: dict[str, str] | None = None) -> int:
    """GET ``path`` and return the status (raises OSError if nothing listens)."""
    conn = http.client.HTTPConnection(url_host, port, timeout=5)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def stop_process(proc: subprocess.Popen, grace: float = 15.0) -> int:
    """SIGTERM, wait up to ``grace`` s, then SIGKILL. Returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return proc.returncode


def pavise_bin() -> Path:
    """The binary under test (see the module docs)."""
    if env := os.environ.get("PAVISE_BIN"):
        path = Path(env)
        if not path.is_file():
            pytest.fail(f"PAVISE_BIN={env} does not exist")
        return path
    candidates = [p for p in (ROOT / "target/debug/pavise", ROOT / "target/release/pavise") if p.is_file()]
    if not candidates:
        pytest.fail("no pavise binary: run `cargo test --no-run` or set PAVISE_BIN")
    return max(candidates, key=lambda p: p.stat().st_mtime)


# --------------------------------------------------------------------------------------
# mastodon-mock
# --------------------------------------------------------------------------------------


@dataclass
class MockServer:
    """A running mastodon-mock (see tests/e2e/mockserver.py)."""

    url: str
    port: int
    record_path: Path
    media_dir: Path
    log_path: Path
    proc: subprocess.Popen = field(repr=False)

    def requests(self) -> list[dict]:
        """Every request received so far, oldest first (see mockserver.py for the shape)."""
        if not self.record_path.exists():
            return []
        return [json.loads(line) for line in self.record_path.read_text().splitlines() if line.strip()]

    def received_text(self) -> str:
        """All recorded request lines as one string, for "never appears" checks."""
        return self.record_path.read_text() if self.record_path.exists() else ""


MOCK_CONFIG = """\
[streaming]
enabled = true
heartbeat_seconds = 1.0

[[seed.accounts]]
username = "alice"
display_name = "Alice"

[[seed.accounts]]
username = "bob"
display_name = "Bob"
"""


@pytest.fixture(scope="session")
def mastodon_mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockServer]:
    """The real mastodon-mock on a free loopback port, recording what it receives."""
    work = tmp_path_factory.mktemp("mastodon-mock")
    media = work / "media"
    media.mkdir()
    config = work / "mock.toml"
    # media_storage_path is a top-level key: TOML wants it before any table.
    config.write_text(f'media_storage_path = "{media}"\n' + MOCK_CONFIG)
    port = free_port()
    record = work / "requests.jsonl"
    log = work / "mock.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "mockserver.py"), "--port", str(port), "--config", str(config),
             "--record", str(record)],
            stdout=out, stderr=subprocess.STDOUT, cwd=work,
        )
    server = MockServer(f"http://127.0.0.1:{port}", port, record, media, log, proc)
    try:
        wait_until("mastodon-mock", lambda: http_status("127.0.0.1", port, "/api/v1/instance") == 200,
                   timeout=60, proc=proc, log=log)
        yield server
    finally:
        stop_process(proc, grace=5)


# --------------------------------------------------------------------------------------
# pavise
# --------------------------------------------------------------------------------------


@dataclass
class PaviseProcess:
    """A running `pavise run` with its ports, files and process handle."""

    url: str
    port: int
    admin_url: str
    admin_port: int
    egress_port: int
    data_dir: Path
    policies_dir: Path
    log_path: Path
    proc: subprocess.Popen = field(repr=False)

    @property
    def admin_token(self) -> str:
        """The bearer token pavise created (0600) in its data dir on first run."""
        return (self.data_dir / "admin.token").read_text().strip()

    def log_text(self) -> str:
        """Everything pavise has written to stderr/stdout so far."""
        return self.log_path.read_text(errors="replace")

    def admin_get(self, path: str, token: str | None = None) -> tuple[int, str]:
        """GET on the admin listener with the admin token (or ``token``, "" for none)."""
        token = self.admin_token if token is None else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=10)
        try:
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read().decode("utf-8", "replace")
        finally:
            conn.close()

    def files_text(self) -> bytes:
        """The bytes of every file under the data dir, concatenated (for leak checks)."""
        out = b""
        for p in sorted(self.data_dir.rglob("*")):
            if p.is_file():
                out += p.read_bytes()
        return out

    def stop(self, grace: float = 15.0) -> int:
        return stop_process(self.proc, grace)


def start_pavise(workdir: Path, upstream: str, streaming_upstream: str | None = None,
                 extra_args: list[str] | tuple[str, ...] = (), config_text: str | None = None,
                 env: dict[str, str] | None = None) -> PaviseProcess:
    """Starts ``pavise run`` on free loopback ports and waits until it serves.

    Readiness: the admin ``/healthz`` answers and the public port accepts connections
    (bounded: 30 s). The caller stops it (``stop()``); the fixtures do that for you.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    data_dir = workdir / "data"
    policies = workdir / "policies"
    policies.mkdir(exist_ok=True)
    port, admin_port, egress_port = free_port(), free_port(), free_port()
    args = [
        str(pavise_bin()), "run",
        "--listen", f"127.0.0.1:{port}",
        "--upstream", upstream,
        "--streaming-upstream", streaming_upstream or upstream,
        "--admin-listen", f"127.0.0.1:{admin_port}",
        "--egress-listen", f"127.0.0.1:{egress_port}",
        # Development mode on purpose: the e2e suite never touches a real network.
        "--egress-mode", "direct",
        "--data-dir", str(data_dir),
        "--policies", str(policies),
    ]
    if config_text is not None:
        config = workdir / "pavise.toml"
        config.write_text(config_text)
        args += ["--config", str(config)]
    args += list(extra_args)
    log = workdir / "pavise.log"
    # The expiry key apart from the data dir, as in production (a seized data dir alone
    # must open nothing); the same path on a restart in the same workdir.
    proc_env = {**os.environ, "RUST_LOG": os.environ.get("PAVISE_E2E_LOG", "info,pavise=debug"),
                "PAVISE_EXPIRY_KEY_FILE": str(workdir / "keys" / "expiry.key"), **(env or {})}
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=workdir, env=proc_env)
    p = PaviseProcess(f"http://127.0.0.1:{port}", port, f"http://127.0.0.1:{admin_port}", admin_port,
                      egress_port, data_dir, policies, log, proc)

    def ready() -> bool:
        if http_status("127.0.0.1", admin_port, "/healthz") != 200:
            return False
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True

    try:
        wait_until("pavise", ready, timeout=30, proc=proc, log=log)
    except BaseException:
        p.stop(grace=2)
        raise
    return p


@pytest.fixture(scope="session")
def pavise(mastodon_mock: MockServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PaviseProcess]:
    """pavise in front of ``mastodon_mock`` (web and streaming), shared by the session."""
    p = start_pavise(tmp_path_factory.mktemp("pavise"), mastodon_mock.url)
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture
def pavise_factory(tmp_path: Path) -> Iterator[Callable[..., PaviseProcess]]:
    """``start(upstream, streaming_upstream=None, extra_args=(), config_text=None)``:
    another pavise, stopped at teardown. Each gets its own data dir and log."""
    started: list[PaviseProcess] = []

    def start(upstream: str, streaming_upstream: str | None = None, extra_args=(), config_text=None,
              env=None) -> PaviseProcess:
        p = start_pavise(tmp_path / f"pavise-{len(started)}", upstream, streaming_upstream, extra_args,
                         config_text, env)
        started.append(p)
        return p

    try:
        yield start
    finally:
        for p in started:
            p.stop(grace=5)


@pytest.fixture
def ws_streaming_pavise(mastodon_mock, pavise_factory):
    """pavise with mastodon-mock as web upstream and the multiplexing adapter
    (tests/e2e/streaming_adapter.py) as streaming upstream."""
    adapter = StreamingAdapter(mastodon_mock.port).start()
    try:
        yield pavise_factory(mastodon_mock.url, streaming_upstream=adapter.url), adapter
    finally:
        adapter.stop()


# --------------------------------------------------------------------------------------
# Mastodon.py through pavise
# --------------------------------------------------------------------------------------


def login(base_url: str, username: str = "alice"):
    """Registers an app and logs in as ``username`` with Mastodon.py, through ``base_url``."""
    from mastodon import Mastodon

    client_id, client_secret = Mastodon.create_app(
        "pavise-e2e", api_base_url=base_url, scopes=["read", "write", "follow"],
        redirect_uris="urn:ietf:wg:oauth:2.0:oob",
    )
    api = Mastodon(client_id=client_id, client_secret=client_secret, api_base_url=base_url,
                   request_timeout=15)
    api.log_in(code=f"mockcode_{username}", redirect_uri="urn:ietf:wg:oauth:2.0:oob",
               scopes=["read", "write", "follow"], allow_http=True)
    return api


@pytest.fixture
def mastodon_app(pavise: PaviseProcess):
    """A Mastodon.py client logged in as ``alice`` through the session pavise."""
    return login(pavise.url, "alice")


@pytest.fixture
def tiny_png() -> bytes:
    """A valid 2×2 RGB PNG, made here (zlib + CRC by hand, no fixture files)."""
    return make_png(2, 2)


def make_png(width: int, height: int, text_chunks: dict[str, str] | None = None) -> bytes:
    """A valid RGB PNG of the given size, optionally with tEXt chunks (metadata to scrub)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + bytes([200, 30, 30]) * width for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    texts = b"".join(chunk(b"tEXt", k.encode() + b"\x00" + v.encode()) for k, v in (text_chunks or {}).items())
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + texts + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


@contextlib.contextmanager
def timed(limit: float, what: str) -> Iterator[None]:
    """Fails if the block takes longer than ``limit`` seconds (after it finishes)."""
    start = time.monotonic()
    yield
    spent = time.monotonic() - start
    assert spent <= limit, f"{what} took {spent:.1f}s (limit {limit}s)"
