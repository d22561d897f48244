"""Signed federation deliveries pass pavise byte for byte and still verify.

A sender signs an inbox POST the way Mastodon does (draft-cavage HTTP Signatures,
rsa-sha256 over `(request-target) host date digest content-type`, `Digest: SHA-256=`),
the way Akkoma does (`content-length` signed too) and the RFC 9421 way
(`Signature-Input`, `Content-Digest`). pavise forwards it to a small recording server
that verifies the signature and the digest on arrival, as the instance would
(ANCHORS.md §B8), and the test compares every signed header and the body byte for byte.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import http.client
import http.server
import json
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
KEY_ID = "https://remote.example/users/mallory#main-key"
INSTANCE_HOST = "social.example"

# A body that breaks if anything re-encodes it: UTF-8, CRLF, trailing spaces, a NUL-free
# but unusual JSON layout that a re-serializer would normalise.
BODY = (
    '{"@context":"https://www.w3.org/ns/activitystreams",  "type":"Create",\r\n'
    ' "actor":"https://remote.example/users/mallory", "object":{"type":"Note",'
    '"id":"https://remote.example/users/mallory/statuses/1",'
    '"content":"caf\u00e9 \u2014 \u00fcber \U0001F30D  ","to":["https://social.example/users/alice"]}}  \n'
).encode("utf-8")


def sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def cavage_signing_string(method: str, target: str, headers: dict[str, str], names: list[str]) -> bytes:
    lines = []
    for name in names:
        if name == "(request-target)":
            lines.append(f"(request-target): {method.lower()} {target}")
        else:
            lines.append(f"{name}: {headers[name]}")
    return "\n".join(lines).encode()


def rfc9421_base(method: str, host: str, path: str, headers: dict[str, str], params: str) -> bytes:
    return (f'"@method": {method}\n"@target-uri": https://{host}{path}\n'
            f'"content-digest": {headers["content-digest"]}\n"@signature-params": {params}').encode()


@dataclass
class Arrival:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes
    verified: bool
    reason: str

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        assert len(values) <= 1, f"{name} arrived {len(values)} times"
        return values[0] if values else None


@dataclass
class VerifyingInstance:
    """The instance's side: records each delivery and verifies it as Mastodon would."""

    url: str
    arrivals: list[Arrival] = field(default_factory=list)


def verify(method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[bool, str]:
    """Mastodon's checks: digest over the raw body, then the signature over the signed headers."""
    public = KEY.public_key()
    if "signature-input" in headers:
        if headers.get("content-digest") != f"sha-256=:{sha256_b64(body)}:":
            return False, "Content-Digest does not match the body"
        params = headers["signature-input"].removeprefix("sig1=")
        sig = base64.b64decode(headers["signature"].removeprefix("sig1=:").removesuffix(":"))
        base = rfc9421_base(method, headers["host"], path, headers, params)
    else:
        if headers.get("digest") != f"SHA-256={sha256_b64(body)}":
            return False, "Digest does not match the body"
        fields = dict(part.split("=", 1) for part in headers["signature"].split(","))
        fields = {k: v.strip('"') for k, v in fields.items()}
        if fields.get("keyId") != KEY_ID or fields.get("algorithm") != "rsa-sha256":
            return False, f"unexpected signature parameters {fields}"
        names = fields["headers"].split()
        missing = [n for n in names if n != "(request-target)" and n not in headers]
        if missing:
            return False, f"signed headers missing on arrival: {missing}"
        base = cavage_signing_string(method, path, headers, names)
        sig = base64.b64decode(fields["signature"])
    try:
        public.verify(sig, base, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False, "signature does not verify"
    return True, "ok"


@pytest.fixture
def verifying_instance() -> Iterator[VerifyingInstance]:
    arrivals: list[Arrival] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            raw_headers = list(self.headers.items())
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                body = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0], 16)
                    if size == 0:
                        self.rfile.readline()
                        break
                    body += self.rfile.read(size)
                    self.rfile.readline()
            else:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            lower = {k.lower(): v for k, v in raw_headers}
            ok, reason = verify(self.command, self.path, lower, body)
            arrivals.append(Arrival(self.command, self.path, raw_headers, body, ok, reason))
            answer = b"" if ok else json.dumps({"error": reason}).encode()
            self.send_response(202 if ok else 401)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield VerifyingInstance(f"http://127.0.0.1:{server.server_address[1]}", arrivals)
    finally:
        server.shutdown()
        server.server_close()


def signed_delivery(style: str, path: str) -> list[tuple[str, str]]:
    """The headers a sender of `style` puts on an inbox POST of BODY, signature included."""
    date = email.utils.formatdate(usegmt=True)
    headers = {
        "host": INSTANCE_HOST,
        "date": date,
        "content-type": "application/activity+json",
        "content-length": str(len(BODY)),
    }
    if style == "rfc9421":
        headers["content-digest"] = f"sha-256=:{sha256_b64(BODY)}:"
        params = f'("@method" "@target-uri" "content-digest");created={int(time.time())};keyid="{KEY_ID}";alg="rsa-v1_5-sha256"'
        base = rfc9421_base("POST", INSTANCE_HOST, path, headers, params)
        sig = base64.b64encode(KEY.sign(base, padding.PKCS1v15(), hashes.SHA256())).decode()
        headers["signature-input"] = f"sig1={params}"
        headers["signature"] = f"sig1=:{sig}:"
    else:
        headers["digest"] = f"SHA-256={sha256_b64(BODY)}"
        names = {
            "mastodon": ["(request-target)", "host", "date", "digest", "content-type"],
            "akkoma": ["(request-target)", "host", "date", "digest", "content-length"],
            "gotosocial": ["(request-target)", "host", "date", "digest"],
        }[style]
        sig = base64.b64encode(KEY.sign(cavage_signing_string("POST", path, headers, names), padding.PKCS1v15(),
                                        hashes.SHA256())).decode()
        headers["signature"] = (f'keyId="{KEY_ID}",algorithm="rsa-sha256",headers="{" ".join(names)}",'
                                f'signature="{sig}"')
    # Mastodon sends the header names capitalised; so do we (names are case-insensitive).
    return [("-".join(p.capitalize() for p in k.split("-")), v) for k, v in headers.items()]


SIGNED = ["Host", "Date", "Digest", "Content-Type", "Content-Length", "Signature", "Signature-Input",
          "Content-Digest"]


def enable_wave_shield(relay) -> None:
    """Loads the shipped wave policy: from then on the shield reads (and verifies) every
    inbox body before forwarding it, which is the path whose bytes must not change."""
    shutil.copy(Path(__file__).resolve().parents[2] / "policies" / "wave.toml", relay.policies_dir / "wave.toml")
    conn = http.client.HTTPConnection("127.0.0.1", relay.admin_port, timeout=10)
    conn.request("POST", "/admin/reload", headers={"Authorization": f"Bearer {relay.admin_token}"})
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()
    conn.close()


@pytest.mark.parametrize("style", ["mastodon", "akkoma", "gotosocial", "rfc9421"])
@pytest.mark.parametrize("path", ["/inbox", "/users/alice/inbox"])
@pytest.mark.parametrize("shield", ["limits-only", "wave", "wave-held"])
def test_signed_delivery_verifies_after_pavise(pavise_factory, verifying_instance, style, path, shield):
    # remote.example cannot be reached from here: its key fetch fails (fast) and the
    # delivery counts as unverified. Without local_domain pavise cannot call the delivery
    # the instance's and forwards it as it is ("wave"); with it ("wave-held") the delivery,
    # which addresses alice and which pavise cannot verify now, is held (sealed, in the
    # store) and released to the instance at once, since no shield is up: the bytes and
    # the signed headers must come out of the quarantine unchanged too.
    config = '[shield]\nkey_fetch_timeout = "1s"\n'
    if shield == "wave-held":
        config = f'local_domain = "{INSTANCE_HOST}"\n{config}domain_blocks = "off"\n'
    relay = pavise_factory(verifying_instance.url, config_text=config)
    if shield != "limits-only":
        enable_wave_shield(relay)
    sent = signed_delivery(style, path)

    # Straight to the instance first: the verifier itself accepts this delivery.
    for target in (verifying_instance.url, relay.url):
        port = int(target.rsplit(":", 1)[1])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
        conn.putrequest("POST", path, skip_host=True, skip_accept_encoding=True)
        for name, value in sent:
            conn.putheader(name, value)
        # A spoofed client address on a delivery: stripped, and the signature still holds.
        conn.putheader("X-Forwarded-For", "203.0.113.250")
        conn.endheaders(BODY)
        resp = conn.getresponse()
        answer = resp.read()
        conn.close()
        assert resp.status == 202, f"via {target}: {resp.status} {answer!r}"

    # A held delivery reaches the instance a moment later, from the quarantine.
    deadline = time.monotonic() + 15
    while len(verifying_instance.arrivals) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    direct, relayed = verifying_instance.arrivals
    assert direct.verified, direct.reason
    assert relayed.verified, f"the signature broke in pavise: {relayed.reason}"
    assert relayed.body == BODY
    assert relayed.path == path
    for name in SIGNED:
        assert relayed.header(name) == dict((k.lower(), v) for k, v in sent).get(name.lower()), name
    assert relayed.header("Transfer-Encoding") is None, "pavise re-framed the body"
    assert relayed.header("X-Forwarded-For") != "203.0.113.250"
    if shield != "limits-only":
        status, report = relay.admin_get("/admin/shield")
        assert status == 200
        totals = json.loads(report)["totals"]
        assert totals["signatures_verified"] + totals["signatures_unverified"] == 1, totals
        reason = "key_unavailable" if shield == "wave-held" else "foreign_host"
        assert totals["unverified_by_reason"][reason] == 1, totals
        assert totals["held_unverified"] == (1 if shield == "wave-held" else 0), totals


def test_tampered_delivery_is_caught_by_the_verifier(verifying_instance):
    """The verifier is real: a body changed by one byte fails (so the test above can fail)."""
    sent = signed_delivery("mastodon", "/inbox")
    conn = http.client.HTTPConnection("127.0.0.1", int(verifying_instance.url.rsplit(":", 1)[1]), timeout=15)
    conn.putrequest("POST", "/inbox", skip_host=True, skip_accept_encoding=True)
    for name, value in sent:
        conn.putheader(name, value)
    conn.endheaders(BODY.replace(b"caf", b"cap"))
    assert conn.getresponse().status == 401
    conn.close()
    assert not verifying_instance.arrivals[0].verified
    # And a changed Date breaks the signature even with a good digest.
    sent = [(k, "Mon, 01 Jan 2024 00:00:00 GMT" if k == "Date" else v) for k, v in sent]
    conn = http.client.HTTPConnection("127.0.0.1", int(verifying_instance.url.rsplit(":", 1)[1]), timeout=15)
    conn.putrequest("POST", "/inbox", skip_host=True, skip_accept_encoding=True)
    for name, value in sent:
        conn.putheader(name, value)
    conn.endheaders(BODY)
    assert conn.getresponse().status == 401
    conn.close()
    assert verifying_instance.arrivals[1].reason == "signature does not verify"
