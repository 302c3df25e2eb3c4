"""The last line of defence: an exception nobody answered never reaches a client
as a traceback or a dropped connection.

- HTTP, nothing sent yet: a 500 in the OpenAI error shape, with the request id.
- HTTP, the response already started (a stream failed midway): nothing more can
  be said to the client; the exception is logged.
- WebSocket before accept: a denial (HTTP 500 with the error body, or a close
  where the server lacks the denial extension, which it answers with 403).
- WebSocket after accept: close 1011 ("internal error"), unless already closed.

Each exception is logged once: the app's own error handler marks the exceptions it
logged (`core.errors.mark_logged`) and this middleware does not log those again.
Every one is sent to Sentry (when on): structlog's lines do not reach it.
"""

from __future__ import annotations

import contextlib

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocketDisconnect

from core.errors import GatewayError, was_logged
from core.http.errors import client_fault
from core.http.middleware import deny_websocket, request_id_of, send_error
from core.observability.sentry import report_exception

log = structlog.get_logger("skygate.http")


class LastResortMiddleware:
    """Answer what the app left unanswered because it raised."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_tracked)
        except Exception as exc:  # never a traceback to a client
            refused = client_fault(exc)
            if refused is not None and not started:
                await send_error(send, refused, request_id_of(scope))
                return
            report_exception(exc)
            if started:
                if not was_logged(exc):
                    log.error("response_failed_after_start", exc_info=exc)
                return
            if not was_logged(exc):
                log.error("unhandled_exception", exc_info=exc)
            await send_error(send, GatewayError(), request_id_of(scope))

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        accepted = finished = False

        async def send_tracked(message: Message) -> None:
            nonlocal accepted, finished
            kind = message["type"]
            if kind == "websocket.accept":
                accepted = True
            elif kind == "websocket.close" or kind == "websocket.http.response.start":
                finished = True
            await send(message)

        async def receive_tracked() -> Message:
            nonlocal finished
            message = await receive()
            if message["type"] == "websocket.disconnect":
                finished = True
            return message

        try:
            await self.app(scope, receive_tracked, send_tracked)
        except WebSocketDisconnect:
            return  # the client left while the app was reading: nothing went wrong here
        except Exception as exc:
            report_exception(exc)
            if not was_logged(exc):
                log.error("websocket_failed", exc_info=exc, accepted=accepted)
            if finished:
                return
            # The client may be gone already: then there is nobody left to tell.
            with contextlib.suppress(OSError, RuntimeError):
                if accepted:
                    await send({"type": "websocket.close", "code": 1011, "reason": ""})
                else:
                    await deny_websocket(scope, send, GatewayError(), request_id_of(scope))
