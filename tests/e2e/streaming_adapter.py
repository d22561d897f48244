"""A thin stand-in for Mastodon's multiplexed WebSocket streaming protocol, in front of
mastodon-mock's event bus.

Why it exists: Mastodon.py's WebSocket client (`stream_open_websocket`) speaks the
protocol of Mastodon's streaming server: one connection to `/api/v1/streaming`,
authenticated with `Authorization: Bearer`, then `{"type": "subscribe", "stream":
"user"}` messages. mastodon-mock 0.6.1 serves WebSocket streaming only in the older
one-stream-per-connection form (`?stream=user&access_token=...`) and closes anything
else. This adapter accepts the multiplexed form and, per subscription, opens the mock's
one-stream form and relays its frames (already in Mastodon's wire format:
`{"stream": [...], "event": ..., "payload": "<json string>"}`). Every event still comes
from the mock; only the framing of subscriptions is adapted.

It records each handshake it receives (headers included), so tests can check what
pavise forwarded on the upgrade.
"""

from __future__ import annotations

import asyncio
import json
import threading
from urllib.parse import parse_qsl, urlencode, urlsplit

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed


class StreamingAdapter:
    """Runs on its own event loop thread; `url` is what pavise's --streaming-upstream gets."""

    def __init__(self, mock_port: int) -> None:
        self.mock_port = mock_port
        self.handshakes: list[dict] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self.port = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "StreamingAdapter":
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("streaming adapter did not start")
        return self

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        # Open relays may take a moment to close; the thread is a daemon, so do not wait long.
        self._thread.join(2)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with serve(self._session, "127.0.0.1", 0, close_timeout=1) as server:
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stop.wait()

    async def _session(self, client: ServerConnection) -> None:
        request = client.request
        self.handshakes.append({"path": request.path, "headers": [[k.lower(), v] for k, v in request.headers.raw_items()]})
        token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        token = token or dict(parse_qsl(urlsplit(request.path).query)).get("access_token", "")
        relays: dict[tuple, asyncio.Task] = {}
        try:
            async for raw in client:
                msg = json.loads(raw)
                params = {k: str(v) for k, v in msg.items() if k in ("tag", "list")}
                key = (msg.get("stream"), *params.values())
                if msg.get("type") == "subscribe" and key not in relays:
                    relays[key] = asyncio.create_task(self._relay(client, msg["stream"], params, token))
                elif msg.get("type") == "unsubscribe" and key in relays:
                    relays.pop(key).cancel()
        except ConnectionClosed:
            pass
        finally:
            for task in relays.values():
                task.cancel()

    async def _relay(self, client: ServerConnection, stream: str, params: dict, token: str) -> None:
        query = urlencode({"stream": stream, **params, "access_token": token})
        try:
            async with connect(f"ws://127.0.0.1:{self.mock_port}/api/v1/streaming?{query}", close_timeout=1) as upstream:
                async for frame in upstream:
                    await client.send(frame)
        except ConnectionClosed as e:
            await client.send(json.dumps({"stream": [stream], "error": f"upstream closed: {e}", "status": 400}))
