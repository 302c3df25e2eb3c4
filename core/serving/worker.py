"""The gunicorn worker: uvicorn-worker's UvicornWorker with a readiness drain.

On SIGTERM (a deploy, a scale-down) the worker first marks itself not ready —
`/ready` answers 503 so the load balancer stops sending new traffic — keeps
serving for `SHUTDOWN_DRAIN_SECONDS`, then stops accepting and lets in-flight
requests finish (uvicorn's graceful shutdown, bounded by gunicorn's
`graceful_timeout`). SIGINT and SIGQUIT still stop at once. Uvicorn's own
access log is off: `core.http.access` writes the one access line.

The HTTP protocol and its parser limits live in `core.serving.http_protocol`, the
WebSocket protocol and its limits in `core.serving.ws_protocol`. `Lifecycle.stopping`
is set when the drain begins and when shutdown begins (also a recycle's), so a
WebSocket can close itself before uvicorn's 1012.
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
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker

from core.config import Settings
from core.serving.balance import BalancedListener, ConnectionBoard
from core.serving.http_protocol import HttpLimits, SkygateHttpProtocol
from core.serving.ws_protocol import WebSocketLimits

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
        """uvicorn's startup for gunicorn's sockets, with `core.serving.balance` accepting
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

        from core.observability import metrics  # in the worker: metric values are per process

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
                lifecycle.begin_stopping()  # a signal handler: sets the event via the loop
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
            lifecycle.begin_stopping()
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


class SkygateWorker(UvicornWorker):  # type: ignore[misc]  # uvicorn-worker ships no types
    """`worker_class` for gunicorn: uvloop + httptools, no access log, drain on TERM."""

    CONFIG_KWARGS: dict[str, Any] = {
        "loop": "uvloop",
        "http": SkygateHttpProtocol,
        "access_log": False,
        "server_header": False,
        "lifespan": "on",
        # X-Forwarded-For is applied by core.http.forwarding (by hop count); uvicorn's
        # middleware would take the client-written leftmost entry under `*`.
        "proxy_headers": False,
        **WebSocketLimits().server_options(),  # the settings' values are set in _serve
    }

    async def _serve(self) -> None:
        self.config.app = self.wsgi
        state = getattr(self.wsgi, "state", None)
        if state is not None:  # tell the app how it is run, from gunicorn's own config
            from core.container import Process  # here: the master loads this module too

            state.process = Process(kind="gunicorn", workers=self.cfg.workers)
        settings = Settings()
        self.config.http = SkygateHttpProtocol.with_limits(HttpLimits.from_settings(settings))
        for name, value in WebSocketLimits.from_settings(settings).server_options().items():
            setattr(self.config, name, value)  # read by Config.load(), later in serve()
        drain = settings.shutdown_drain_seconds
        balance = getattr(self, "balance", None)  # set by the master's pre_fork hook
        server = DrainingServer(config=self.config, drain_seconds=drain, balance=balance)
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            from gunicorn.arbiter import Arbiter

            sys.exit(Arbiter.WORKER_BOOT_ERROR)
