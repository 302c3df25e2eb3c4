"""A real uvicorn server for an ASGI app, inside the test's event loop.

For what the in-process ASGI transport cannot show: a WebSocket handshake and
its close over a real socket, spoken by a real client (`websockets`), with
uvicorn's own protocol code deciding what a denial or a close looks like on the
wire. The server shares the test's loop, so the test sees the app's metrics and
log lines directly, and can await the app's own completion (`SessionWatch`)
instead of sleeping.

It runs the production protocols (`SkygateHttpProtocol`, `SkygateWebSocketProtocol`
with `WebSocketLimits`), so what a test sees on the wire and in the log is what
gunicorn's workers do; server pings are off unless a test asks for them.

The listening socket is bound before the server starts, so a client may connect
at once: the kernel queues the connection until uvicorn accepts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from core.serving.http_protocol import SkygateHttpProtocol
from core.serving.ws_protocol import WebSocketLimits
from tests.support.servers import HOST

WAIT_SECONDS = 10.0
# No keepalive pings between the test's own frames.
TEST_LIMITS = WebSocketLimits(ping_interval=0)


class SessionWatch:
    """The outermost ASGI layer: counts the WebSocket sessions whose whole stack has
    returned (the access line written, the metrics counted), for a test to await."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.ended = 0
        self._changed = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            if scope["type"] == "websocket":
                self.ended += 1
                self._changed.set()

    async def wait_ended(self, count: int) -> None:
        """Return once `count` sessions in all have ended (within `WAIT_SECONDS`)."""
        async with asyncio.timeout(WAIT_SECONDS):
            while self.ended < count:
                self._changed.clear()
                await self._changed.wait()


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the test runner owns SIGINT and SIGTERM


@dataclass(frozen=True)
class Served:
    http_url: str
    ws_url: str
    watch: SessionWatch


@contextlib.asynccontextmanager
async def serve(app: ASGIApp, *, limits: WebSocketLimits = TEST_LIMITS) -> AsyncIterator[Served]:
    """Serve `app` (lifespan included) on a free loopback port until the block ends."""
    watch = SessionWatch(app)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        watch,
        log_config=None,
        access_log=False,
        lifespan="on",
        http=SkygateHttpProtocol,
        **limits.server_options(),
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield Served(f"http://{HOST}:{port}", f"ws://{HOST}:{port}", watch)
    finally:
        server.should_exit = True
        try:
            await asyncio.wait_for(task, timeout=30)
        finally:
            sock.close()
