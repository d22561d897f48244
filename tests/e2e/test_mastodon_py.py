"""A real Mastodon client (Mastodon.py) through pavise, in front of mastodon-mock.

What a member's app does every day: register, log in, upload a picture, post it, read
the timeline. Each step goes through pavise; the mock's request record shows what the
instance saw (a pseudonym in X-Forwarded-For, the Host the client used, no raw
address).
"""

from __future__ import annotations

import io
import ipaddress

from conftest import login


def _xff_values(requests: list[dict]) -> list[str]:
    return [v for r in requests for k, v in r["headers"] if k == "x-forwarded-for"]


def test_register_login_upload_post_and_read_timeline(pavise, mastodon_mock, mastodon_app, tiny_png):
    api = mastodon_app
    me = api.account_verify_credentials()
    assert me.username == "alice"

    media = api.media_post(io.BytesIO(tiny_png), mime_type="image/png", file_name="pixel.png",
                           description="a red square", synchronous=True)
    assert media.type == "image", media
    # The mock builds media URLs from the Host it received: pavise kept it intact.
    assert media.url.startswith(pavise.url), media.url

    status = api.status_post("hello through pavise #e2e", media_ids=[media.id])
    assert status.media_attachments and status.media_attachments[0].id == media.id

    home = api.timeline_home(limit=20)
    assert status.id in [s.id for s in home]
    fetched = api.status(status.id)
    assert "hello through pavise" in fetched.content

    # The upload reached the instance whole (media scrubbing may change metadata, never pixels
    # of a metadata-free PNG: it has none to remove).
    stored = [p for p in mastodon_mock.media_dir.rglob("*") if p.is_file()]
    assert any(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in stored), stored


def test_instance_sees_pseudonyms_and_the_clients_host(pavise, mastodon_mock, mastodon_app):
    before = len(mastodon_mock.requests())
    mastodon_app.timeline_public(limit=1)
    seen = mastodon_mock.requests()[before:]
    assert seen, "the request never reached the instance"
    for r in seen:
        headers = dict(r["headers"])
        assert headers.get("host") == f"127.0.0.1:{pavise.port}", headers
        assert headers.get("x-forwarded-proto") == "http", headers
        xff = headers.get("x-forwarded-for")
        assert xff is not None, "pavise must give the instance a pseudonym"
        addr = ipaddress.ip_address(xff)
        assert addr in ipaddress.ip_network("2001:db8::/32"), xff
        assert "127.0.0.1" not in xff


def test_same_client_same_pseudonym_two_accounts_still_work(pavise, mastodon_mock):
    alice = login(pavise.url, "alice")
    bob = login(pavise.url, "bob")
    before = len(mastodon_mock.requests())
    alice.timeline_home(limit=1)
    bob.timeline_home(limit=1)
    xffs = set(_xff_values(mastodon_mock.requests()[before:]))
    # One machine (127.0.0.1) → one pseudonym for the day, whoever is logged in.
    assert len(xffs) == 1, xffs


def test_follow_and_read_a_followers_home(pavise, mastodon_mock):
    alice = login(pavise.url, "alice")
    bob = login(pavise.url, "bob")
    target = bob.account_search("alice", limit=5)
    alice_acct = next(a for a in target if a.username == "alice")
    rel = bob.account_follow(alice_acct.id)
    assert rel.following or rel.requested
    status = alice.status_post("for my followers", visibility="private")
    assert status.id in [s.id for s in bob.timeline_home(limit=20)]
