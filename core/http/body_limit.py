"""The request-body limit: 413 before an oversized body is read, whether it
declares a Content-Length or arrives chunked.

HTTP only: a WebSocket has no request body, and the size of its messages is
bounded by the server (uvicorn's `ws_max_size`, which closes with 1009).
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.errors import BadRequestError, PayloadTooLargeError
from core.http.middleware import request_id_of, send_error
from core.observability import metrics


class BodyTooLarge(HTTPException):
    """Raised from `receive` when a streamed body crosses the limit.

    An HTTPException so FastAPI's body parsing re-raises it untouched.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The request body exceeds the limit of {limit} bytes.")


class BodySizeLimitMiddleware:
    """Reject bodies over `max_bytes` without reading them in full."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        request_id = request_id_of(scope)
        if declared is not None:
            if not declared.isdigit():
                await send_error(
                    send, BadRequestError("Invalid Content-Length header."), request_id
                )
                return
            if int(declared) > self.max_bytes:
                metrics.SECURITY_EVENTS.labels("body_too_large").inc()
                await send_error(
                    send,
                    PayloadTooLargeError(
                        f"The request body exceeds the limit of {self.max_bytes} bytes."
                    ),
                    request_id,
                )
                return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    metrics.SECURITY_EVENTS.labels("body_too_large").inc()
                    raise BodyTooLarge(self.max_bytes)
            return message

        response_started = False

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge as exc:
            if response_started:
                raise
            await send_error(send, PayloadTooLargeError(str(exc.detail)), request_id)
