"""`Replay`: a provider that says exactly what a test sets (what the fakes never say:
other finish reasons, reasoning blocks, float token counts, errors mid-stream)."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web


class Replay:
    """A provider stand-in on 127.0.0.1 answering POSTs to `path` (Cohere's `/v2/chat`
    unless told) with whatever the test set, verbatim."""

    def __init__(self, path: str = "/v2/chat") -> None:
        self.path = path
        self.status = 200
        self.content_type = "application/json"
        self.body = b"{}"
        self.url = ""
        self._runner: web.AppRunner | None = None

    def answer(self, data: Any) -> None:
        self.status, self.content_type, self.body = 200, "application/json", orjson.dumps(data)

    def stream(
        self, events: list[dict[str, Any]], *, done: bool = False, lines: bool = False
    ) -> None:
        """SSE as Cohere and Anthropic send it (`event:` and `data:` lines, the event's
        `type` as its name), or one JSON event a line (Cohere's other framing)."""
        if lines:
            self.content_type = "application/stream+json"
            self.body = b"".join(orjson.dumps(event) + b"\n" for event in events)
        else:
            self.content_type = "text/event-stream"
            self.body = b"".join(
                b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"
                for event in events
            ) + (b"data: [DONE]\n\n" if done else b"")
        self.status = 200

    async def _chat(self, request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=self.status, body=self.body, content_type=self.content_type)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post(self.path, self._chat)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> Replay:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
