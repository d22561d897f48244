"""Runs the real mastodon-mock app, recording every request it receives.

The e2e suite needs to know what actually reached the instance behind pavise (which
headers, from which address), so this launcher does what ``mastodon_mock serve``
does (build the app with ``create_app(config)`` and run it under uvicorn) with one
addition: a thin ASGI wrapper that appends one JSON line per HTTP request or
WebSocket handshake to ``--record``, *before* the app sees it. Nothing in the app
itself is replaced.

Usage (the ``mastodon_mock`` fixture in conftest.py does this):

    python mockserver.py --port 3000 --config mock.toml --record requests.jsonl

Each recorded line: ``{"type": "http"|"websocket", "method", "path", "query",
"headers": [[name, value], ...], "client": "ip"}`` with header names lowercased
(as ASGI delivers them) and values decoded as latin-1.
"""

from __future__ import annotations

import argparse
import json
import threading
from pathlib import Path
from typing import Any

import uvicorn
from mastodon_mock.app import create_app
from mastodon_mock.config import MastodonMockConfig


class RecordRequests:
    """ASGI middleware: one JSON line per request, flushed before the app runs."""

    def __init__(self, app: Any, path: Path) -> None:
        self.app = app
        self.path = path
        self.lock = threading.Lock()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            line = {
                "type": scope["type"],
                "method": scope.get("method", "GET"),
                "path": scope.get("path", ""),
                "query": scope.get("query_string", b"").decode("latin-1"),
                "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope.get("headers", [])],
                "client": (scope.get("client") or ["", 0])[0],  # after uvicorn read X-Forwarded-For
            }
            with self.lock, self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(line) + "\n")
        await self.app(scope, receive, send)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--config", required=True, help="a .mastodon_mock.toml file")
    parser.add_argument("--record", required=True, help="JSON-lines file of received requests")
    args = parser.parse_args()

    config = MastodonMockConfig.load(args.config)
    # As `mastodon_mock serve` does: links in API answers name a reachable host. The
    # mock builds most URLs (streaming_api, media, OAuth) from the Host it receives,
    # which through pavise is pavise's own address.
    config.domain = f"127.0.0.1:{args.port}"
    config.url_scheme = "http"
    app = RecordRequests(create_app(config), Path(args.record))
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        server_header=False,
        # pavise is the instance's trusted proxy (TRUSTED_PROXY_IP): believe its
        # X-Forwarded-Proto/-For as Mastodon does. The recorder sees the raw headers anyway.
        proxy_headers=True,
        forwarded_allow_ips="127.0.0.1",
        log_level="warning",
    )


if __name__ == "__main__":
    main()
