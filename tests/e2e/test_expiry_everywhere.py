"""An expired post is gone everywhere, at once — with real clients, against mastodon-mock.

Mastodon.py posts and reads through pavise; mastodon-mock's fault injection
(`/api/v1/_mock/faults`) makes every `DELETE /api/v1/statuses/:id` fail, so the instance
still holds the expired posts the whole time, as it does while a deletion waits behind a
rate limit or Mastodon's background job. Every spelling of the post, every listing that
can embed it (timelines, threads, search, notifications, conversations, bookmarks,
favourites, trends, batch lookups, boosts, quotes) and both streaming transports must
hide it, and a post that does not expire must stay visible everywhere.

Also: a client that hangs up before the instance answers, a member's archive swept from
the first sighting of their token, and what a seized data dir still says after a
workload with DMs, expiring posts and a harassment wave.

What mastodon-mock cannot express (ActivityPub collections, RSS, oEmbed answers, the
link timeline, scheduled posts published later) is tested in Rust against a recording
upstream (tests/expiry_hiding.rs).
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import http.server
import json
import queue
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from mastodon import Mastodon, MastodonAPIError, MastodonNetworkError, MastodonNotFoundError, StreamListener
from mastodon_mock.config import SeedAccount, SeedConfig, SeedStatus
from mastodon_mock.testing import MockServer
from websockets.sync.client import connect as ws_connect

from conftest import pavise_bin

EPHEMERAL = """
[[expire]]
name  = "ephemeral"
match = { hashtags = ["ephemeral"] }
after = "4s"

[[expire]]
name  = "direct-messages"
match = { visibility = ["direct"] }
after = "4s"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Relay:
    """One `pavise run` with its own data dir and policies, in front of `upstream`."""

    def __init__(self, tmp: Path, upstream: str, policy: str, extra: str = "", top: str = ""):
        self.tmp = tmp
        self.port, self.admin_port = free_port(), free_port()
        self.data = tmp / "data"
        (tmp / "policies").mkdir(exist_ok=True)
        (tmp / "policies" / "e2e.toml").write_text(policy)
        self.config = tmp / "pavise.toml"
        self.config.write_text(
            f"""
data_dir = "{self.data}"
policies = "{tmp / 'policies'}"
{top}
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
min_expires_in = "1s"
backoff = "1s"
max_backoff = "2s"
lease = "5s"
confirm_after = "1s"
{extra}
"""
        )
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Relay":
        log = open(self.tmp / "pavise.log", "ab")
        self.proc = subprocess.Popen([str(pavise_bin()), "run", "--config", str(self.config)], stdout=log, stderr=log)
        for _ in range(400):
            try:
                requests.get(f"http://127.0.0.1:{self.admin_port}/healthz", timeout=5)
                return self
            except requests.RequestException:
                time.sleep(0.05)
        self.proc.kill()
        self.proc.wait(timeout=10)
        raise RuntimeError("pavise did not start: " + (self.tmp / "pavise.log").read_text())

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)

    def admin(self, what: str = "expiry") -> dict:
        token = (self.data / "admin.token").read_text().strip()
        r = requests.get(f"http://127.0.0.1:{self.admin_port}/admin/{what}", headers={"Authorization": f"Bearer {token}"},
                         timeout=5)
        r.raise_for_status()
        return r.json()


def login(url: str, user: str, **kw) -> Mastodon:
    client_id, client_secret = Mastodon.create_app("pavise-e2e", api_base_url=url, scopes=["read", "write", "follow"])
    m = Mastodon(client_id=client_id, client_secret=client_secret, api_base_url=url, version_check_mode="none", **kw)
    m.log_in(code=f"mockcode_{user}", scopes=["read", "write", "follow"], allow_http=True)
    return m


def ids_in(value) -> set[str]:
    """Every `id` anywhere in a Mastodon.py answer (nested boosts, quotes, statuses)."""
    found: set[str] = set()
    if isinstance(value, dict):
        for k, v in value.items():
            if k in ("id", "status_id", "quoted_status_id") and v is not None:
                found.add(str(v))
            found |= ids_in(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            found |= ids_in(v)
    return found


def wait_until(cond, seconds: float) -> bool:
    end = time.time() + seconds
    while time.time() < end:
        if cond():
            return True
        time.sleep(0.1)
    return cond()


class Collect(StreamListener):
    def __init__(self) -> None:
        super().__init__()
        self.events: queue.Queue = queue.Queue()

    def on_update(self, status):
        self.events.put(status)


def drain(q: queue.Queue, seconds: float) -> list:
    out, end = [], time.time() + seconds
    while time.time() < end:
        try:
            out.append(q.get(timeout=max(0.01, end - time.time())))
        except queue.Empty:
            break
    return out


@pytest.fixture
def mock():
    with MockServer() as server:
        yield server


def fail_deletes(mock: MockServer) -> None:
    r = requests.post(f"{mock.base_url}/api/v1/_mock/faults", timeout=5, json={
        "match": {"methods": ["DELETE"], "path_regex": r"^/api/v1/statuses/\d+$"},
        "effect": {"type": "status", "status": 500},
    })
    r.raise_for_status()


def test_an_expired_post_is_gone_everywhere_while_the_instance_still_has_it(tmp_path, mock):
    fail_deletes(mock)
    relay = Relay(tmp_path, mock.base_url, EPHEMERAL).start()
    try:
        alice, bob = login(relay.url, "alice"), login(relay.url, "bob")
        alice_id = alice.me()["id"]
        bob.account_follow(alice_id)
        friends = bob.list_create("friends")
        bob.list_accounts_add(friends, [alice_id])

        visible = alice.status_post("hello world #visible")
        hidden = alice.status_post("the meeting moved to the old place #ephemeral")
        dm = alice.status_post("@bob meet at the usual place", visibility="direct")
        hidden_reply = alice.status_post("and more on that #ephemeral", in_reply_to_id=visible["id"])
        visible_reply = alice.status_post("a reply that stays", in_reply_to_id=visible["id"])
        # What others do with it before the deadline: boosts, quotes, favourites, bookmarks.
        for s in (visible, hidden):
            bob.status_favourite(s["id"])
            bob.status_bookmark(s["id"])
        boost_of_visible = bob.status_reblog(visible["id"])
        boost_of_hidden = bob.status_reblog(hidden["id"])
        quote_of_hidden = bob.status_post("look at this", quoted_status_id=hidden["id"])
        quote_of_visible = bob.status_post("and this", quoted_status_id=visible["id"])
        gone = {str(x["id"]) for x in (hidden, dm, hidden_reply, boost_of_hidden, quote_of_hidden)}
        gone_first = {str(hidden["id"]), str(dm["id"]), str(hidden_reply["id"])}
        stays = str(visible["id"])

        # The live streams, opened before the deadline (WebSocket in the mock's one-stream form).
        sse = Collect()
        sse_handle = bob.stream_public(sse, run_async=True, timeout=30)
        ws = ws_connect(f"ws://127.0.0.1:{relay.port}/api/v1/streaming?stream=public&access_token={bob.access_token}",
                        open_timeout=10, close_timeout=2)
        time.sleep(4.5)
        assert requests.get(f"{mock.base_url}/api/v1/statuses/{hidden['id']}", timeout=5,
                            headers={"Authorization": f"Bearer {alice.access_token}"}).status_code == 200, \
            "the instance still has it: its DELETE fails"

        # Every spelling of it, and every sub-resource, answers as for a deleted post.
        hid = str(hidden["id"])
        for path in [f"/api/v1/statuses/{hid}", f"/api/v1/statuses/{hid}.json", f"/api/v1/statuses/0{hid}",
                     f"/api/v1/statuses/{hid}-x", f"/api//v1/statuses/{hid}/",
                     "/api/v1/statuses/" + "".join(f"%{ord(c):02X}" for c in hid),
                     f"/api/v1/statuses/{hid}/context", f"/api/v1/statuses/{hid}/source",
                     f"/api/v1/statuses/{hid}/history", f"/api/v1/statuses/{hid}/reblogged_by",
                     f"/api/v1/statuses/{hid}/favourited_by", f"/users/alice/statuses/{hid}",
                     f"/@alice/{hid}", f"/@alice/{hid}/embed"]:
            r = requests.get(relay.url + path, headers={"Authorization": f"Bearer {bob.access_token}"}, timeout=5)
            assert r.status_code == (404 if path.startswith("/api") else 410), (path, r.status_code, r.text)
            assert "old place" not in r.text
        for gone_id in gone:
            with pytest.raises(MastodonNotFoundError):
                bob.status(gone_id)
        assert str(bob.status(visible["id"])["id"]) == stays
        assert str(bob.status(boost_of_visible["id"])["id"]) == str(boost_of_visible["id"])
        with pytest.raises(MastodonNotFoundError):
            bob.status_reblog(hidden["id"])
        with pytest.raises(MastodonNotFoundError):
            bob.status_favourite(dm["id"])
        assert str(bob.status_unfavourite(visible["id"])["id"]) == stays, "an action's answer passes"
        oembed = lambda u: requests.get(f"{relay.url}/api/oembed", params={"url": u}, timeout=5).status_code  # noqa: E731
        assert oembed(f"{relay.url}/@alice/0{hid}.json") == 404
        assert oembed(f"{relay.url}/@alice/{stays}") == 200

        # Every listing and embedding.
        api = bob._Mastodon__api_request
        listings = {
            "home": bob.timeline_home(limit=40),
            "public": bob.timeline_public(limit=40),
            "tag": bob.timeline_hashtag("ephemeral") + bob.timeline_hashtag("visible"),
            "list": bob.timeline_list(friends, limit=40),
            "account": bob.account_statuses(alice_id, limit=40),
            "context": bob.status_context(visible["id"]),
            "search v2": [bob.search_v2("place"), bob.search_v2("hello")],
            "search v1": api("GET", "/api/v1/search", {"q": "hello"}),
            "bookmarks": bob.bookmarks(),
            "favourites": bob.favourites(),
            "trends": bob.trending_statuses(),
            "batch": api("GET", "/api/v1/statuses", {"id[]": [hid, stays, f"0{dm['id']}"]}),
            "notifications (alice)": alice.notifications(limit=40),
            "grouped notifications (alice)": alice.grouped_notifications(),
            "notifications (bob)": bob.notifications(limit=40),
            "conversations (bob)": bob.conversations(),
            "direct (bob)": api("GET", "/api/v1/timelines/direct"),
        }
        for name, answer in listings.items():
            found = ids_in(answer)
            assert not (found & gone), f"{name} still has {found & gone}"
        must_have = {"home", "public", "tag", "list", "account", "search v2", "search v1", "bookmarks", "trends",
                     "batch", "notifications (alice)"}
        for name in must_have:
            assert stays in ids_in(listings[name]), f"{name} over-hid the post that does not expire"
        assert str(visible_reply["id"]) in ids_in(listings["context"]), "a live reply stays in the thread"
        assert str(boost_of_visible["id"]) in ids_in(listings["home"]), "a boost of a live post stays"
        assert str(quote_of_visible["id"]) in ids_in(listings["home"]), "a quote of a live post stays"
        assert listings["conversations (bob)"] == [], "the DM's conversation went with it"

        # Streaming: what carries it is dropped; the rest arrives. Carol acts on the instance
        # directly (as another server's member would), after the deadline.
        carol = Mastodon(access_token="carol_token", api_base_url=mock.base_url, version_check_mode="none")
        carol.status_reblog(hidden["id"])
        carol.status_post("quoting it", quoted_status_id=hidden["id"])
        carol.status_post("carol says hi")
        seen_sse = drain(sse.events, 3)
        texts = [s.content for s in seen_sse]
        assert any("carol says hi" in t for t in texts), texts
        assert not (ids_in(seen_sse) & gone_first), f"SSE carried it: {texts}"
        frames = []
        end = time.time() + 3
        while time.time() < end:
            try:
                frames.append(ws.recv(timeout=max(0.05, end - time.time())))
            except TimeoutError:
                break
        payloads = [json.loads(json.loads(f)["payload"]) for f in frames if json.loads(f).get("event") == "update"]
        assert any("carol says hi" in p["content"] for p in payloads), frames
        assert not (ids_in(payloads) & gone_first), f"WebSocket carried it: {frames}"
        sse_handle.close()
        ws.close()

        report = relay.admin()
        assert report["hidden_now"] == 3, report
    finally:
        relay.stop()


def test_a_client_that_hangs_up_before_the_answer_still_gets_its_post_deleted(tmp_path, mock):
    relay = Relay(tmp_path, mock.base_url, EPHEMERAL).start()
    try:
        impatient = login(relay.url, "alice", request_timeout=0.5)
        # The instance takes 2 s to answer this one creation; the client gives up after 0.5 s.
        requests.post(f"{mock.base_url}/api/v1/_mock/faults", timeout=5, json={
            "match": {"methods": ["POST"], "path": "/api/v1/statuses"},
            "effect": {"type": "latency", "delay_ms": 2000}, "count": 1,
        }).raise_for_status()
        with pytest.raises((MastodonNetworkError, MastodonAPIError)):
            impatient.status_post("sent from a train, signal lost", visibility="direct")
        direct = Mastodon(access_token="alice_token", api_base_url=mock.base_url, version_check_mode="none")
        mine = lambda: [s for s in direct.account_statuses(direct.me()["id"]) if "signal lost" in s.content]  # noqa: E731
        assert wait_until(lambda: len(mine()) == 1, 10), "the instance created it"
        assert wait_until(lambda: not mine(), 15), "a post whose client hung up was never deleted"
    finally:
        relay.stop()


ARCHIVE_POSTS = 400  # scripts/bench-expiry runs the 10,000-post archive


def test_an_archive_is_swept_from_the_first_sighting_of_a_token(tmp_path):
    seed = SeedConfig(
        accounts=[SeedAccount(username="alice", access_token="alice_token"), SeedAccount(username="bob", access_token="bob_token")],
        statuses=[SeedStatus(account="alice", text=f"old {'dm' if i % 4 else 'note'} {i}",
                             visibility="direct" if i % 4 else "public") for i in range(ARCHIVE_POSTS)],
    )
    policy = '[[expire]]\nname = "dms"\nmatch = { visibility = ["direct"] }\nafter = "1s"\n'
    with MockServer(seed=seed) as mock:
        relay = Relay(tmp_path, mock.base_url, policy).start()
        try:
            direct = Mastodon(access_token="alice_token", api_base_url=mock.base_url, version_check_mode="none")
            me = direct.me()["id"]

            def remaining() -> tuple[int, int]:
                page, dms, notes = direct.account_statuses(me, limit=40), 0, 0
                while page:
                    dms += sum(1 for s in page if s.visibility == "direct")
                    notes += sum(1 for s in page if s.visibility == "public")
                    page = direct.fetch_next(page)
                return dms, notes

            assert remaining() == (ARCHIVE_POSTS * 3 // 4, ARCHIVE_POSTS // 4)
            time.sleep(1.1)
            started = time.monotonic()
            # The first authenticated request with alice's token, for anything at all.
            Mastodon(access_token="alice_token", api_base_url=relay.url, version_check_mode="none").account_verify_credentials()
            assert wait_until(lambda: relay.admin()["sweeps"] and relay.admin()["sweeps"][0]["state"] == "done", 60), relay.admin()
            dms = ARCHIVE_POSTS * 3 // 4
            # pavise's own count first (cheap to ask), then the instance itself, once.
            answered = lambda: relay.admin()["counts"]["deleted"] + relay.admin()["counts"]["gone"] >= dms  # noqa: E731
            assert wait_until(answered, 120), relay.admin()
            spent = time.monotonic() - started
            assert wait_until(lambda: remaining()[0] == 0, 30), f"DMs left: {remaining()}"
            assert remaining()[1] == ARCHIVE_POSTS // 4, "a post no rule matches was deleted"
            print(f"archive of {ARCHIVE_POSTS}: swept and deleted {ARCHIVE_POSTS * 3 // 4} in {spent:.1f}s "
                  f"({ARCHIVE_POSTS * 3 // 4 / spent:.0f} posts/s)")
            sweep = relay.admin()["sweeps"][0]
            assert (sweep["account"], sweep["seen"], sweep["scheduled"]) == ("alice", ARCHIVE_POSTS, ARCHIVE_POSTS * 3 // 4)
            listing = subprocess.run([str(pavise_bin()), "expiry", "--config", str(relay.config), "list"],
                                     capture_output=True, text=True, timeout=30)
            assert "@alice  done" in listing.stdout, listing.stdout + listing.stderr
        finally:
            relay.stop()


# The seizure test's wave: real senders on loopback addresses of their own, each serving
# its actors' documents (and keys), signing their deliveries the way Mastodon does.
SENDER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
SENDER_PEM = SENDER_KEY.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo).decode()
LOCAL = "social.example"
MASTODON_UA = "http.rb/5.2.0 (Mastodon/4.3.0; +https://troll.example/)"
GTS_UA = "gotosocial/0.17.3 (+https://gts.example/)"


class ActorServer:
    """A remote server on `ip`: `GET /users/NAME` is NAME's actor document with the key."""

    def __init__(self, ip: str):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                host, port = self.server.server_address[:2]
                actor = f"http://{host}:{port}{self.path}"
                doc = json.dumps({
                    "@context": ["https://www.w3.org/ns/activitystreams", "https://w3id.org/security/v1"],
                    "id": actor, "type": "Person", "inbox": f"{actor}/inbox",
                    "publicKey": {"id": f"{actor}#main-key", "owner": actor, "publicKeyPem": SENDER_PEM},
                }).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/activity+json")
                self.send_header("Content-Length", str(len(doc)))
                self.end_headers()
                self.wfile.write(doc)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((ip, 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def actor(self, name: str) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/users/{name}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def deliver_signed(relay: "Relay", source: str, actor: str, body: bytes, user_agent: str) -> int:
    """POSTs `body` to alice's inbox from `source`, signed as `actor` (draft-cavage rsa-sha256)."""
    path = "/users/alice/inbox"
    date = email.utils.formatdate(usegmt=True)
    digest = "SHA-256=" + base64.b64encode(hashlib.sha256(body).digest()).decode()
    signed = f"(request-target): post {path}\nhost: {LOCAL}\ndate: {date}\ndigest: {digest}\ncontent-type: application/activity+json"
    signature = base64.b64encode(SENDER_KEY.sign(signed.encode(), padding.PKCS1v15(), hashes.SHA256())).decode()
    head = (f"POST {path} HTTP/1.1\r\nHost: {LOCAL}\r\nDate: {date}\r\nDigest: {digest}\r\n"
            f"Content-Type: application/activity+json\r\nUser-Agent: {user_agent}\r\n"
            f'Signature: keyId="{actor}#main-key",algorithm="rsa-sha256",'
            f'headers="(request-target) host date digest content-type",signature="{signature}"\r\n'
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    with socket.create_connection(("127.0.0.1", relay.port), source_address=(source, 0), timeout=30) as s:
        s.sendall(head.encode() + body)
        return int(s.recv(64).split(b" ")[1])


def mention_of_alice(actor: str, text: str) -> bytes:
    alice = f"https://{LOCAL}/users/alice"
    return json.dumps({
        "@context": "https://www.w3.org/ns/activitystreams", "type": "Create", "id": f"{actor}/notes/1/activity",
        "actor": actor, "to": [alice], "cc": [],
        "object": {"id": f"{actor}/notes/1", "type": "Note", "attributedTo": actor, "content": f"<p>{text}</p>",
                   "to": [alice], "tag": [{"type": "Mention", "href": alice}]},
    }).encode()


def test_a_seized_data_dir_names_no_member_no_deleted_post_no_message_and_no_address(tmp_path, mock):
    wave = """
[wave]
window           = "10m"
distinct_senders = 3
per_domain       = 10
familiar_after   = "1h"
shield_for       = "1m"
hellthread       = 0
action           = "defer"
"""
    policy = EPHEMERAL + '\n[[expire]]\nname = "everything-else"\nafter = "30d"\n' + wave
    # The instance takes federation deliveries (mastodon-mock has no inbox: a fault stands
    # in), so the senders it accepted are remembered as first seen.
    requests.post(f"{mock.base_url}/api/v1/_mock/faults", timeout=5, json={
        "match": {"methods": ["POST"], "path_regex": r"^/users/[^/]+/inbox$"},
        "effect": {"type": "status", "status": 202, "body": {}},
    }).raise_for_status()
    keys = tmp_path / "keys"
    shield = ('[shield]\nkey_fetch = "direct"\nkey_fetch_allow_private = true\ndomain_blocks = "off"\n'
              'housekeeping = "200ms"\n')
    relay = Relay(tmp_path, mock.base_url, policy, extra=f'key_file = "{keys / "expiry.key"}"\n{shield}',
                  top=f'local_domain = "{LOCAL}"').start()
    trolls, gts = ActorServer("127.0.0.77"), ActorServer("127.0.0.78")
    try:
        alice, bob = login(relay.url, "alice"), login(relay.url, "bob")
        secrets = ["meet at the usual place at nine", "the files are under the floor", "burn this after reading"]
        deleted = [alice.status_post(f"@bob {secrets[0]}", visibility="direct"),
                   bob.status_post(f"@alice {secrets[1]}", visibility="direct"),
                   alice.status_post(f"{secrets[2]} #ephemeral")]
        later = bob.status_post("a post that expires in a month")
        # A harassment wave: fresh, verified senders mention alice, each from an address of
        # its own. The first ones reach the instance, then the shield over alice goes up.
        codes = [deliver_signed(relay, f"127.13.37.{i + 1}", trolls.actor(f"troll{i}"),
                                mention_of_alice(trolls.actor(f"troll{i}"), f"wave message {i}"), MASTODON_UA)
                 for i in range(5)]
        assert codes == [202, 202, 202, 429, 429], codes
        # A sender that gives up within minutes (GoToSocial) is answered 202 and its
        # delivery held, sealed, in the store: what a seizure finds of it is the test.
        held = [deliver_signed(relay, f"127.13.38.{i + 1}", gts.actor(f"gts{i}"),
                               mention_of_alice(gts.actor(f"gts{i}"), f"wave message held {i}"), GTS_UA)
                for i in range(3)]
        assert held == [202, 202, 202], held
        shield_report = relay.admin("shield")
        totals = shield_report["totals"]
        assert totals["signatures_verified"] == 8, totals
        assert len(shield_report["held"]) == 3, shield_report
        # Deletions go through, are confirmed, and their records purged.
        assert wait_until(lambda: relay.admin()["counts"]["gone"] == 3, 30), relay.admin()
        report = relay.admin()
        assert report["counts"]["pending"] == 1, report
        # The senders the instance took are remembered (flushed by the housekeeping pass).
        time.sleep(0.5)
    finally:
        relay.stop()
        trolls.close()
        gts.close()

    files = [p for p in relay.data.rglob("*") if p.is_file()]
    assert any(p.name == "pavise.redb" for p in files)
    needles = ["alice", "bob", *secrets, "wave message", "127.13.37", "127.13.38", "usual place", str(later["id"]),
               "127.0.0.77", "127.0.0.78", "users/troll", "users/gts", LOCAL]
    needles += [str(s["id"]) for s in deleted]
    for path in files:
        data = path.read_bytes()
        for needle in needles:
            assert needle.encode() not in data, f"{path.name} holds {needle!r}"
    assert oct(relay.data.stat().st_mode & 0o777) == "0o700"
    for path in relay.data.rglob("*"):
        want = 0o700 if path.is_dir() else 0o600
        assert path.stat().st_mode & 0o777 == want, f"{path} is {oct(path.stat().st_mode & 0o777)}"
