"""The request's context: who sent it, its id, its log context, and whether this
worker is stopping. Four small middleware, each one concern (order and reasons in
`core.http.middleware`)."""

from __future__ import annotations

import re
import uuid

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.http.forwarding import ForwardedPolicy
from core.http.middleware import REQUEST_ID_HEADER, request_id_of
from core.infra.health import Lifecycle

_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_SCOPES = ("http", "websocket")
# The messages that open an answer: their headers carry the request id.
_ANSWER_STARTS = frozenset(
    {"http.response.start", "websocket.accept", "websocket.http.response.start"}
)


def request_id_from(raw: bytes | None) -> str:
    """The client's request id when it is a sane token, else a fresh one."""
    if raw:
        try:
            candidate = raw.decode("ascii")
        except UnicodeDecodeError:
            candidate = ""
        if _SANE_REQUEST_ID.fullmatch(candidate):
            return candidate
    return uuid.uuid4().hex


class ForwardedMiddleware:
    """Rewrite the scope's client and scheme from a trusted proxy's headers
    (`core.http.forwarding`), once, before anything reads them: the access line,
    the per-address limits and the failed-authentication throttle."""

    def __init__(self, app: ASGIApp, *, policy: ForwardedPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in _SCOPES:
            forwarded_for: list[bytes] = []
            forwarded_proto = None
            for name, value in scope["headers"]:
                if name == b"x-forwarded-for":
                    forwarded_for.append(value)
                elif name == b"x-forwarded-proto":
                    forwarded_proto = value
            if forwarded_for or forwarded_proto:
                peer = (scope.get("client") or (None,))[0]
                client = self.policy.client(peer, forwarded_for)
                if client is not None:
                    scope["client"] = (client, 0)
                scheme = self.policy.scheme(peer, forwarded_proto)
                if scheme is not None:
                    scope["scheme"] = scheme
        await self.app(scope, receive, send)


class RequestIdMiddleware:
    """Give the request an id (`scope["state"]["request_id"]`) and echo it in
    `x-request-id` on the HTTP response, the WebSocket accept, or the denial."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in _SCOPES:
            await self.app(scope, receive, send)
            return
        raw = None
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER:
                raw = value  # the last one, as before
        request_id = request_id_from(raw)
        scope.setdefault("state", {})["request_id"] = request_id
        header = (REQUEST_ID_HEADER, request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] in _ANSWER_STARTS:
                headers = message.get("headers")
                if isinstance(headers, list):
                    headers.append(header)
                else:  # absent (an accept may omit it) or another iterable
                    message["headers"] = [*(headers or ()), header]
            await send(message)

        await self.app(scope, receive, send_with_id)


class LogContextMiddleware:
    """Bind the request id, and the trace id when the request is traced
    (`core.http.tracing`), for every log line written while the request (or the
    WebSocket session) runs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = request_id_of(scope) if scope["type"] in _SCOPES else None
        if request_id is None:
            await self.app(scope, receive, send)
            return
        trace_id = scope["state"].get("trace_id")
        # Reset (not cleared) at the end: clearing walks every context variable of the task.
        bound = (
            structlog.contextvars.bind_contextvars(request_id=request_id, trace_id=trace_id)
            if trace_id
            else structlog.contextvars.bind_contextvars(request_id=request_id)
        )
        try:
            await self.app(scope, receive, send)
        finally:
            structlog.contextvars.reset_contextvars(**bound)


class DrainMiddleware:
    """While the worker stops (drain or recycle), answer with `Connection: close`,
    so the client's next request opens a new connection (to a worker that stays)
    instead of racing our close. HTTP only: a WebSocket holds its connection for
    the session, and the server's shutdown closes it (1012, "service restart")."""

    def __init__(self, app: ASGIApp, *, lifecycle: Lifecycle) -> None:
        self.app = app
        self.lifecycle = lifecycle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        lifecycle = self.lifecycle

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start" and (
                lifecycle.draining or lifecycle.closing
            ):
                message.setdefault("headers", []).append((b"connection", b"close"))
            await send(message)

        await self.app(scope, receive, send_closing)
