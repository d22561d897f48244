"""Expiry end to end with real clients: Mastodon.py posts through the pavise release
binary (PAVISE_BIN) to mastodon-mock; rules with short `after`; `kill -9` durability.

mastodon-mock runs in this process (its MockServer: threaded uvicorn on a free loopback
port), so its statuses outlive every pavise restart; its authorization code
`mockcode_<username>` logs Mastodon.py in as that user.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests
from mastodon import Mastodon
from mastodon_mock.testing import MockServer

PAVISE_BIN = os.environ.get("PAVISE_BIN", str(Path(__file__).resolve().parents[2] / "target/release/pavise"))

POLICY = """
[[expire]]
name  = "short-dms"
match = { visibility = ["direct"] }
after = "5s"
keep  = { pinned = true, hashtags = ["keep"] }
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Relay:
    """One pavise process with a fixed data dir, restartable, killable."""

    def __init__(self, tmp: Path, upstream: str):
        self.tmp = tmp
        self.port, self.admin_port = free_port(), free_port()
        (tmp / "policies").mkdir(exist_ok=True)
        (tmp / "policies" / "e2e.toml").write_text(POLICY)
        (tmp / "pavise.toml").write_text(
            f"""
data_dir = "{tmp / 'data'}"
policies = "{tmp / 'policies'}"
[public]
listen = "127.0.0.1:{self.port}"
[upstream]
url = "{upstream}"
streaming_url = "{upstream}"
[admin]
listen = "127.0.0.1:{self.admin_port}"
[egress]
listen = "127.0.0.1:{free_port()}"
mode = "direct"
[expiry]
min_expires_in = "5s"
backoff = "1s"
lease = "5s"
"""
        )
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = open(self.tmp / "pavise.log", "ab")
        self.proc = subprocess.Popen([PAVISE_BIN, "run", "--config", str(self.tmp / "pavise.toml")], stdout=log, stderr=log)
        for _ in range(200):
            try:
                requests.get(f"http://127.0.0.1:{self.admin_port}/healthz", timeout=5)
                return
            # Not listening yet (refused) or too busy to answer in time (a loaded CI box).
            except requests.RequestException:
                time.sleep(0.05)
        # Never leave a half-started relay behind a failed test.
        self.proc.kill()
        self.proc.wait(timeout=10)
        raise RuntimeError("pavise did not start: " + (self.tmp / "pavise.log").read_text())

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)

    def admin(self, query: str = "") -> dict:
        token = (self.tmp / "data" / "admin.token").read_text().strip()
        r = requests.get(
            f"http://127.0.0.1:{self.admin_port}/admin/expiry{query}", headers={"Authorization": f"Bearer {token}"}, timeout=5
        )
        r.raise_for_status()
        return r.json()


@pytest.fixture
def mock():
    with MockServer() as server:
        yield server


@pytest.fixture
def relay(tmp_path, mock):
    r = Relay(tmp_path, mock.base_url)
    r.start()
    yield r
    r.stop()


def login(url: str, user: str) -> Mastodon:
    client_id, client_secret = Mastodon.create_app("pavise-e2e", api_base_url=url, scopes=["read", "write"])
    m = Mastodon(client_id=client_id, client_secret=client_secret, api_base_url=url, version_check_mode="none")
    m.log_in(code=f"mockcode_{user}", scopes=["read", "write"], allow_http=True)  # plain loopback
    return m


def upstream_has(mock: MockServer, token: str, status_id: str) -> bool:
    r = requests.get(f"{mock.base_url}/api/v1/statuses/{status_id}", headers={"Authorization": f"Bearer {token}"}, timeout=5)
    assert r.status_code in (200, 404), r.text
    return r.status_code == 200


def wait_until(cond, seconds: float) -> bool:
    end = time.time() + seconds
    while time.time() < end:
        if cond():
            return True
        time.sleep(0.2)
    return cond()


def test_policy_expiry_with_mastodon_py(relay, mock):
    m = login(relay.url, "alice")
    dm = m.status_post("meet at the usual place", visibility="direct")
    kept = m.status_post("this one stays #keep", visibility="direct")
    public = m.status_post("hello world", visibility="public")
    token = m.access_token
    assert upstream_has(mock, token, dm["id"])
    assert m.status(dm["id"])["id"] == dm["id"], "served before the deadline"

    # Past the deadline pavise hides it at once; shortly after, it is gone upstream.
    time.sleep(5.2)
    seen_hidden = []
    for path, code in [(f"/api/v1/statuses/{dm['id']}", 404), (f"/users/alice/statuses/{dm['id']}", 410), (f"/@alice/{dm['id']}", 410)]:
        r = requests.get(relay.url + path, headers={"Authorization": f"Bearer {token}"}, timeout=5)
        seen_hidden.append((path, r.status_code))
        assert r.status_code == code, (path, r.status_code, r.text)
    assert wait_until(lambda: not upstream_has(mock, token, dm["id"]), 15), "the DM was not deleted upstream"
    assert upstream_has(mock, token, kept["id"]), "a #keep post was deleted"
    assert upstream_has(mock, token, public["id"]), "a post no rule matches was deleted"
    report = relay.admin()
    # Deleted, then (once the instance confirms it is gone) purged: only a count remains.
    assert report["counts"]["deleted"] + report["counts"]["gone"] == 1 and report["counts"]["kept"] == 1, report


def test_expires_in_form_and_json(relay, mock):
    m = login(relay.url, "bob")
    api = m._Mastodon__api_request  # Mastodon.py's own request path (form or JSON bodies)
    form = api("POST", "/api/v1/statuses", {"status": "gone soon", "expires_in": 5})
    js = api("POST", "/api/v1/statuses", {"status": "gone soon too", "expires_in": 6}, use_json=True)
    with pytest.raises(Exception) as too_soon:
        api("POST", "/api/v1/statuses", {"status": "nope", "expires_in": 4})
    assert "422" in str(too_soon.value) or "at least" in str(too_soon.value)
    token = m.access_token
    for s in (form, js):
        assert upstream_has(mock, token, s["id"])
        assert "expires_in" not in s.get("content", "")
    assert wait_until(lambda: not upstream_has(mock, token, form["id"]) and not upstream_has(mock, token, js["id"]), 20)


def test_kill_9_at_random_points_loses_no_schedule(relay, mock):
    """Posts keep coming while pavise is `kill -9`ed at a random moment (mid-request,
    right after an answer, while deletions are in flight), then restarted. Every post
    whose client saw a successful answer must still be deleted: lost schedules = 0."""
    import threading

    rng = random.Random(int(os.environ.get("PAVISE_E2E_SEED", "5")))
    m = login(relay.url, "carol")
    token = m.access_token
    answered: list[str] = []
    errors: list[str] = []
    rounds = 5
    for _ in range(rounds):
        # A status creation takes from tens of ms to seconds on a loaded machine: a kill
        # anywhere in 6 s lands before, during and after requests.
        killer = threading.Timer(rng.uniform(0.1, 6.0), relay.kill9)
        killer.start()
        deadline = time.time() + 6.5
        while time.time() < deadline:
            try:
                answered.append(m.status_post(f"dm {len(answered)}", visibility="direct")["id"])
            except Exception as e:  # pavise is down: this post's client saw no success
                errors.append(type(e).__name__)
                time.sleep(0.05)
        killer.join()
        relay.start()
        # Sometimes also kill while due deletions are being worked through.
        if rng.random() < 0.5:
            time.sleep(rng.uniform(4.5, 6.5))
            relay.kill9()
            relay.start()
    assert len(answered) >= 3, f"too few posts got through to prove anything; errors: {errors[:5]}"
    lost = [i for i in answered if not wait_until(lambda i=i: not upstream_has(mock, token, i), 30)]
    print(f"kill -9 rounds: {rounds}, posts answered: {len(answered)}, lost schedules: {len(lost)}")
    assert lost == [], f"lost schedules: {lost}"
