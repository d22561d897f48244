"""The streaming API through pavise: SSE with Mastodon.py's own streaming client, and
WebSocket with the wire format Mastodon's web UI and browser apps use.

mastodon-mock serves both on `/api/v1/streaming...` (its streaming upstream is the same
process), and announces `streaming_api` from the Host it receives, so clients that
follow the instance's advice stay on pavise's address.
"""

from __future__ import annotations

import json
import queue
import time

import pytest
from mastodon import StreamListener
from websockets.sync.client import connect as ws_connect

from conftest import login


class Collect(StreamListener):
    """Puts every event on a queue; notes the first heartbeat (the `:connected` comment)."""

    def __init__(self) -> None:
        super().__init__()
        self.events: queue.Queue = queue.Queue()
        self.heartbeats = 0

    def on_update(self, status):
        self.events.put(("update", status))

    def on_notification(self, notification):
        self.events.put(("notification", notification))

    def handle_heartbeat(self):
        self.heartbeats += 1


def wait_for(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.02)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def next_update(listener: Collect, content: str, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            kind, item = listener.events.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            break
        if kind == "update" and content in item.content:
            return item
    pytest.fail(f"no update containing {content!r} within {timeout}s")


def test_instance_points_streaming_clients_at_pavise(pavise, mastodon_app):
    assert mastodon_app.instance_v1().urls.streaming_api == f"ws://127.0.0.1:{pavise.port}"
    assert mastodon_app.instance_v2().configuration.urls.streaming == f"ws://127.0.0.1:{pavise.port}"


def test_sse_user_stream_with_mastodon_py(pavise, mastodon_mock):
    alice = login(pavise.url, "alice")
    bob = login(pavise.url, "bob")
    alice_id = next(a.id for a in bob.account_search("alice") if a.username == "alice")
    bob.account_follow(alice_id)

    listener = Collect()
    handle = bob.stream_user(listener, run_async=True, timeout=30)
    try:
        # The mock's first bytes are a `:connected` comment: it must arrive while the stream
        # is still open, i.e. pavise flushes SSE event by event instead of buffering.
        wait_for(lambda: listener.heartbeats >= 1, 10, "the first SSE comment through pavise")
        alice.status_post("streamed over SSE through pavise")
        status = next_update(listener, "streamed over SSE through pavise")
        assert status.account.username == "alice"
        # A second event on the same stream: the connection stays live.
        alice.status_post("and a second one")
        next_update(listener, "and a second one")
    finally:
        handle.close()

    seen = [r for r in mastodon_mock.requests() if r["path"] == "/api/v1/streaming/user"]
    assert seen, "the SSE request never reached the streaming upstream"
    assert dict(seen[-1]["headers"]).get("x-forwarded-for", "").startswith("2001:db8:")


def test_sse_public_stream_heartbeats_keep_flowing(pavise):
    api = login(pavise.url, "alice")
    listener = Collect()
    handle = api.stream_public(listener, run_async=True, timeout=30)
    try:
        # heartbeat_seconds = 1 in the mock: a buffering relay would deliver none of these.
        wait_for(lambda: listener.heartbeats >= 3, 10, "three SSE heartbeats")
    finally:
        handle.close()


def test_websocket_user_stream(pavise, mastodon_mock):
    alice = login(pavise.url, "alice")
    url = f"ws://127.0.0.1:{pavise.port}/api/v1/streaming?stream=user&access_token={alice.access_token}"
    # Spoofed client-IP headers on the upgrade request must not pass either.
    spoof = {"X-Forwarded-For": "198.51.100.77", "X-Real-IP": "198.51.100.78", "CF-IPCountry": "ZZ"}
    with ws_connect(url, additional_headers=spoof, open_timeout=10, close_timeout=5) as ws:
        # The subscription is set up once the handshake is through; post, then read.
        time.sleep(0.2)
        alice.status_post("streamed over a websocket through pavise")
        deadline = time.monotonic() + 15
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, "no update frame within 15s"
            frame = json.loads(ws.recv(timeout=remaining))
            if frame["event"] == "update":
                status = json.loads(frame["payload"])
                if "streamed over a websocket" in status["content"]:
                    break
        assert frame["stream"] == ["user"]
        # The tunnel keeps its connection's slot: it counts as an open connection.
        code, metrics = pavise.admin_get("/metrics")
        assert code == 200
        gauges = dict(line.rsplit(" ", 1) for line in metrics.splitlines() if line and not line.startswith("#"))
        assert int(gauges["pavise_websocket_tunnels"]) >= 1, gauges
        assert int(gauges["pavise_open_connections"]) >= 1, gauges

    upgrades = [r for r in mastodon_mock.requests() if r["type"] == "websocket"]
    assert upgrades, "the WebSocket handshake never reached the streaming upstream"
    headers = dict(upgrades[-1]["headers"])
    assert headers["x-forwarded-for"].startswith("2001:db8:"), headers
    received = json.dumps(upgrades[-1])
    for value in spoof.values():
        assert value not in received, f"{value} reached the instance on a WebSocket upgrade"


def test_websocket_rejected_by_instance_is_reported_not_hung(pavise):
    # The mock closes unknown streams with 1008 (policy violation), like Mastodon does.
    url = f"ws://127.0.0.1:{pavise.port}/api/v1/streaming?stream=nonsense"
    start = time.monotonic()
    with pytest.raises(Exception):
        with ws_connect(url, open_timeout=10, close_timeout=5) as ws:
            ws.recv(timeout=10)
    assert time.monotonic() - start < 15


def test_websocket_with_mastodon_py(ws_streaming_pavise):
    relay, adapter = ws_streaming_pavise
    alice = login(relay.url, "alice")
    listener = Collect()
    handle = alice.stream_open_websocket(listener, timeout=30)
    try:
        alice.stream_user(listener, websocket_handle=handle)
        alice.stream_public(listener, websocket_handle=handle)
        deadline = time.monotonic() + 15
        # Subscriptions travel as messages after the upgrade; retry the post until one lands.
        while True:
            alice.status_post("multiplexed websocket through pavise")
            try:
                kind, status = listener.events.get(timeout=2)
                break
            except queue.Empty:
                assert time.monotonic() < deadline, "no event over Mastodon.py's WebSocket"
        assert kind == "update" and "multiplexed websocket" in status.content
    finally:
        handle.close()

    assert adapter.handshakes, "the upgrade never reached the streaming upstream"
    headers = dict(adapter.handshakes[-1]["headers"])
    assert headers["authorization"] == f"Bearer {alice.access_token}"
    assert headers["x-forwarded-for"].startswith("2001:db8:"), headers
    assert headers["host"] == f"127.0.0.1:{relay.port}"
