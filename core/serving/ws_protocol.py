"""Skygate's WebSocket protocol: uvicorn's sans-I/O `websockets` protocol with the
limits from the settings, no compression, and log lines that hold no credential.
Both servers pin it (`WebSocketLimits.server_options`): the gunicorn worker
(`core.serving.worker`) and the embedded server (`main_enterprise`).

What it changes, and why:

- Limits in one place (`WebSocketLimits`): a message over WS_MAX_MESSAGE_BYTES
  closes the socket with 1009 (websockets checks the frame header, before the
  payload is read); a server ping every WS_PING_INTERVAL_SECONDS, and a peer that
  does not answer within WS_PING_TIMEOUT_SECONDS is dropped. Per-message deflate
  is off: it costs ~33 KiB per idle connection (its zlib windows), and the
  1,000-idle-sockets budget is 50 MiB.
- uvicorn logs each handshake at INFO on `uvicorn.error` with the path *and query
  string*, where a client that put its token (`?token=`) would leave it in every
  log pipeline; websockets itself, at DEBUG, logs the request line, every header
  (Authorization, a ticket offered as a subprotocol) and every frame (an `auth`
  message's token). Here uvicorn's lines keep the path only, and the websockets
  tracing is off.
- A denial (an HTTP response in place of the upgrade: a 401, CORS's 403) is a
  finished handshake, not an ERROR "ASGI callable returned without completing
  handshake." logged for each one.
- The connection's end is reported to what waits for it (the balancer's count,
  `core.serving.balance.call_when_lost`), handed over from the HTTP protocol at the
  upgrade: asyncio tells only the protocol that holds the transport at the end.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from uvicorn.config import Config
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState

from core.config import Settings
from core.serving.balance import LostCallbacks

if TYPE_CHECKING:
    from uvicorn._types import ASGISendEvent


@dataclass(frozen=True, slots=True)
class WebSocketLimits:
    """What one WebSocket may send in a message, and how its liveness is checked."""

    max_message_bytes: int = 1024 * 1024
    ping_interval: float = 20.0  # 0: no server pings (tests that count frames)
    ping_timeout: float = 20.0

    @classmethod
    def from_settings(cls, settings: Settings) -> WebSocketLimits:
        return cls(
            max_message_bytes=settings.ws_max_message_bytes,
            ping_interval=settings.ws_ping_interval_seconds,
            ping_timeout=settings.ws_ping_timeout_seconds,
        )

    def server_options(self) -> dict[str, Any]:
        """uvicorn `Config` keywords (also `uvicorn.run`'s): this protocol and these limits."""
        return {
            "ws": SkygateWebSocketProtocol,
            "ws_max_size": self.max_message_bytes,
            "ws_ping_interval": self.ping_interval or None,
            "ws_ping_timeout": self.ping_timeout,
            "ws_per_message_deflate": False,  # ~33 KiB per idle connection (module docstring)
        }


def _without_query(value: object) -> object:
    return value.partition("?")[0] if isinstance(value, str) and "?" in value else value


class _PathOnlyLogger(logging.LoggerAdapter[logging.Logger]):
    """`uvicorn.error` with the query string cut from every string argument: uvicorn's
    WebSocket lines pass `path?query` as one (`get_path_with_query_string`). The
    other string arguments it logs (a client address) hold no `?`."""

    @property
    def level(self) -> int:  # uvicorn reads `logger.level` to decide on TRACE lines
        return self.logger.level

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if self.isEnabledFor(level):
            self.logger.log(level, msg, *(_without_query(arg) for arg in args), **kwargs)


_LOGGER = _PathOnlyLogger(logging.getLogger("uvicorn.error"))


class SkygateWebSocketProtocol(LostCallbacks, WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, as the module docstring describes."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.logger = _LOGGER  # type: ignore[assignment]
        self.conn.logger = _LOGGER
        self.conn.debug = False  # its DEBUG trace holds headers, the query and frames

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            super().connection_lost(exc)
        finally:
            self.run_lost_callbacks()

    async def send(self, message: ASGISendEvent) -> None:
        if (
            message["type"] == "websocket.close"
            and self.handshake_complete
            and not self.close_sent
            and not self.writable.is_set()
            and not self.transport.is_closing()
        ):
            self._close_past_backpressure(message)
            return
        await super().send(message)
        if self.initial_response is not None and self.close_sent:
            # The denial's body went out: the handshake is over, answered with an HTTP
            # response, as uvicorn marks its own 403 for a close before accept.
            self.handshake_complete = True

    def _close_past_backpressure(self, message: ASGISendEvent) -> None:
        """A close while the peer is not reading (writes paused): uvicorn would wait
        for the buffer to drain, forever for a reader that stopped (the app closes such
        a socket *because* it stopped). The close frame is queued behind the data now,
        and the connection is dropped if the peer has not taken it within the close
        timeout, so a stuck reader's buffers are freed either way."""
        code = int(message.get("code", 1000))  # type: ignore[call-overload]
        reason = str(message.get("reason", "") or "")
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.conn.send_close(code, reason)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        self.close_timer = self.loop.call_later(self.close_timeout, self.transport.abort)
