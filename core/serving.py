"""The gunicorn worker: uvicorn-worker's UvicornWorker with a readiness drain.

On SIGTERM (a deploy, a scale-down) the worker first marks itself not ready —
`/ready` answers 503 so the load balancer stops sending new traffic — keeps
serving for `SHUTDOWN_DRAIN_SECONDS`, then stops accepting and lets in-flight
requests finish (uvicorn's graceful shutdown, bounded by gunicorn's
`graceful_timeout`). SIGINT and SIGQUIT still stop at once. Uvicorn's own
access log is off: `core.middleware` writes the one access line.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import time
from types import FrameType
from typing import Any

from uvicorn.config import STARTUP_FAILURE, Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker

from core.balance import BalancedListener, ConnectionBoard
from core.config import Settings

ACCEPT_GRACE_SECONDS = 1.0


class DrainingServer(Server):
    """A uvicorn Server that drains for a while before it stops on SIGTERM."""

    def __init__(
        self,
        config: Config,
        *,
        drain_seconds: float,
        balance: tuple[ConnectionBoard, int] | None = None,
    ) -> None:
        super().__init__(config)
        self.drain_seconds = drain_seconds
        self.drain_until: float | None = None
        self.balance = balance

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's startup for gunicorn's sockets, with `core.balance` accepting
        connections in place of the event loop's server."""
        if self.balance is None or not sockets or self.config.ssl is not None:
            await super().startup(sockets)
            return
        await self.lifespan.startup()
        if self.lifespan.should_exit:
            sys.exit(STARTUP_FAILURE)
        config, state = self.config, self.server_state
        app_state = self.lifespan.state

        def create_protocol() -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=state, app_state=app_state
            )

        from core import metrics  # in the worker: metric values are per process

        board, slot = self.balance
        listeners: list[Any] = [  # the asyncio Server surface uvicorn uses: close, wait_closed
            BalancedListener(
                sock,
                create_protocol,
                board=board,
                slot=slot,
                on_change=metrics.WORKER_CONNECTIONS.set,
            )
            for sock in sockets
        ]
        self.servers = listeners
        self.started = True

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM and self.drain_until is not None:
            return  # already draining: a repeated TERM (e.g. to the process group) changes nothing
        if sig == signal.SIGTERM and self.drain_seconds > 0:
            self.drain_until = time.monotonic() + self.drain_seconds
            lifecycle = getattr(getattr(self.config.app, "state", None), "lifecycle", None)
            if lifecycle is not None:
                lifecycle.draining = True
            self._captured_signals.append(sig)
            return
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Stop accepting, keep serving the connections we have for a moment —
        each answer now says `Connection: close`, so clients reconnect to a worker
        that stays — then let uvicorn finish in-flight requests and close.

        Uvicorn alone closes every idle keep-alive connection at once, so a client
        whose next request is already on the wire (or a connection accepted a
        moment ago) would see "server disconnected" when a worker is recycled
        (`max_requests`) or stopped.
        """
        lifecycle = getattr(getattr(self.config.app, "state", None), "lifecycle", None)
        if lifecycle is not None:
            lifecycle.closing = True
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        deadline = time.monotonic() + ACCEPT_GRACE_SECONDS
        while self.server_state.connections and time.monotonic() < deadline:  # noqa: ASYNC110 - uvicorn exposes no event for "connections closed"
            await asyncio.sleep(0.05)
        await super().shutdown(sockets)

    async def on_tick(self, counter: int) -> bool:
        if self.drain_until is not None and time.monotonic() >= self.drain_until:
            self.should_exit = True
        return await super().on_tick(counter)


class _HeadWithBody:
    """The connection's transport, except that a response head is held until the
    body's first write and both leave in one `send()`.

    uvicorn writes the head when the app sends `http.response.start` and the body
    on `http.response.body`; uvloop sends each write at once, so every response
    cost two system calls (on loopback each also runs the peer's TCP receive:
    ~12 us of a ~300 us cache hit, docs/PERFORMANCE.md). A head whose body does
    not follow in the same step (a stream waiting for its first event) leaves on
    the next loop iteration.
    """

    __slots__ = ("_transport", "_head", "_loop")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._head: bytes | None = None
        self._loop = asyncio.get_running_loop()

    def write(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._transport.write(head + data)
        elif data[:5] == b"HTTP/":
            self._head = data
            self._loop.call_soon(self._flush)
        else:
            self._transport.write(data)

    def _flush(self) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._transport.write(head)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class SkygateHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol writing each response head with its body."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_HeadWithBody(transport))  # type: ignore[arg-type]


class SkygateWorker(UvicornWorker):  # type: ignore[misc]  # uvicorn-worker ships no types
    """`worker_class` for gunicorn: uvloop + httptools, no access log, drain on TERM."""

    CONFIG_KWARGS: dict[str, Any] = {
        "loop": "uvloop",
        "http": SkygateHttpProtocol,
        "access_log": False,
        "server_header": False,
        "lifespan": "on",
    }

    async def _serve(self) -> None:
        self.config.app = self.wsgi
        drain = Settings().shutdown_drain_seconds
        balance = getattr(self, "balance", None)  # set by the master's pre_fork hook
        server = DrainingServer(config=self.config, drain_seconds=drain, balance=balance)
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            from gunicorn.arbiter import Arbiter

            sys.exit(Arbiter.WORKER_BOOT_ERROR)
