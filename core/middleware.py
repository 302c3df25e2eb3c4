"""Pure-ASGI middleware: request context, body-size limit, CORS.

Order (outermost first, assembled in `main_enterprise.create_app`):

1. `RequestContextMiddleware` — request id, structlog context, the one access
   line, HTTP metrics by route template, last-resort 500 in the error shape.
2. `CORSMiddleware` — exact origins plus an anchored regex; credentials and
   `Access-Control-Allow-Origin` only for allowed origins; `Vary: Origin` always.
3. `BodySizeLimitMiddleware` — 413 before an oversized body is read, whether it
   declares a Content-Length or arrives chunked.

No `BaseHTTPMiddleware`: it breaks contextvars propagation and streaming.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Collection

import structlog
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core import metrics
from core.errors import (
    BadRequestError,
    GatewayError,
    PayloadTooLargeError,
    PermissionDeniedError,
    error_body,
)
from core.forwarding import ForwardedPolicy
from core.health import Lifecycle
from core.logging import access_line
from core.sentry import report_exception

log = structlog.get_logger("skygate.http")

REQUEST_ID_HEADER = b"x-request-id"
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
QUIET_ROUTES = frozenset({"/live", "/ready", "/health", "/metrics"})


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


def route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else metrics.UNMATCHED_ROUTE


async def send_error(
    send: Send, error: GatewayError, request_id: str | None, *, id_header: bool = False
) -> None:
    """Answer with `error` from inside middleware (no route ran)."""
    headers = [(b"content-type", b"application/json")]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    if request_id and id_header:
        headers.append((REQUEST_ID_HEADER, request_id.encode()))
    body = error_body(error, request_id)
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": error.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def apply_forwarded(
    scope: Scope,
    policy: ForwardedPolicy,
    forwarded_for: list[bytes],
    forwarded_proto: bytes | None,
) -> None:
    """Rewrite the scope's client and scheme from a trusted proxy's headers."""
    peer = (scope.get("client") or (None,))[0]
    client = policy.client(peer, forwarded_for)
    if client is not None:
        scope["client"] = (client, 0)
    scheme = policy.scheme(peer, forwarded_proto)
    if scheme is not None:
        scope["scheme"] = scheme


class RequestContextMiddleware:
    """Request id, bound log context, access line and HTTP metrics."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        enable_metrics: bool = True,
        lifecycle: Lifecycle | None = None,
        forwarded: ForwardedPolicy | None = None,
    ) -> None:
        self.app = app
        self.enable_metrics = enable_metrics
        self.lifecycle = lifecycle or Lifecycle()
        self.forwarded = forwarded if forwarded is not None and forwarded.active else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        raw_id = None
        forwarded_for: list[bytes] = []
        forwarded_proto = None
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER:
                raw_id = value
            elif name == b"x-forwarded-for":
                forwarded_for.append(value)
            elif name == b"x-forwarded-proto":
                forwarded_proto = value
        if self.forwarded is not None and (forwarded_for or forwarded_proto):
            apply_forwarded(scope, self.forwarded, forwarded_for, forwarded_proto)
        request_id = request_id_from(raw_id)
        scope.setdefault("state", {})["request_id"] = request_id
        # Bound for this request's other log lines, and reset (not cleared: clearing
        # walks every context variable of the task) when it ends.
        bound = structlog.contextvars.bind_contextvars(request_id=request_id)
        method = scope["method"]
        status = 500
        response_started = False
        lifecycle = self.lifecycle
        if self.enable_metrics:
            metrics.HTTP_IN_PROGRESS.labels(method).inc()

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers = message.setdefault("headers", [])
                headers.append((REQUEST_ID_HEADER, request_id.encode()))
                if lifecycle.draining or lifecycle.closing:
                    # This worker is stopping: the client's next request must open a
                    # new connection (to a worker that stays) instead of racing our close.
                    headers.append((b"connection", b"close"))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:  # the last line of defence: never a traceback to a client
            report_exception(exc)  # to Sentry, when on: structlog's lines do not reach it
            if response_started:
                # Starlette re-raises after its error handler answered (and logged).
                if not scope.get("state", {}).get("error_logged"):
                    log.error("response_failed_after_start", exc_info=exc)
            else:
                log.error("unhandled_exception", exc_info=exc)
                status = 500
                await send_error(send, GatewayError(), request_id, id_header=True)
        finally:
            elapsed = time.perf_counter() - started
            route = route_template(scope)
            if self.enable_metrics:
                metrics.HTTP_IN_PROGRESS.labels(method).dec()
                metrics.HTTP_REQUESTS.labels(method, route, str(status)).inc()
                metrics.HTTP_DURATION.labels(method, route).observe(elapsed)
                if route.startswith("/api/v1/"):
                    metrics.API_DURATION.labels(method, route).observe(elapsed)
            access_line(
                logging.DEBUG if route in QUIET_ROUTES and status < 500 else logging.INFO,
                {
                    "request_id": request_id,
                    "method": method,
                    "route": route,
                    "path": scope.get("path"),
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 3),
                    "client": (scope.get("client") or (None,))[0],
                },
            )
            structlog.contextvars.reset_contextvars(**bound)


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
        request_id = scope.get("state", {}).get("request_id")
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


CORS_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD")
CORS_HEADERS = (
    "content-type",
    "authorization",
    "x-request-id",
    "accept",
    "accept-language",
    "content-language",
    "x-api-key",
)
CORS_EXPOSE = (
    "X-Request-ID",
    "X-Cache",
    "Retry-After",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
)


class CORSMiddleware:
    """CORS with exact origins plus an anchored (full-match) origin regex.

    Written here rather than taken from starlette because starlette's sends
    `Access-Control-Allow-Credentials` to every origin, answers a refused
    preflight in plain text, and omits `Vary: Origin` when no Origin was sent
    (letting a shared cache serve a CORS-less copy to a browser).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        origins: Collection[str],
        origin_regex: str | None,
        allow_credentials: bool = True,
        max_age: int = 600,
        on_reject: Callable[[str], None] | None = None,
    ) -> None:
        self.app = app
        self.origins = frozenset(origins)
        self.allow_all = "*" in self.origins
        self.regex = re.compile(origin_regex) if origin_regex else None
        self.allow_credentials = allow_credentials and not self.allow_all
        self.max_age = str(max_age)
        self.on_reject = on_reject

    def allowed(self, origin: str) -> bool:
        if self.allow_all or origin in self.origins:
            return True
        return bool(self.regex and self.regex.fullmatch(origin))

    def _grant(self, headers: MutableHeaders, origin: str) -> None:
        headers["Access-Control-Allow-Origin"] = "*" if self.allow_all else origin
        if self.allow_credentials:
            headers["Access-Control-Allow-Credentials"] = "true"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_headers = Headers(scope=scope)
        origin = request_headers.get("origin")
        if (
            origin is not None
            and scope["method"] == "OPTIONS"
            and "access-control-request-method" in request_headers
        ):
            await self._preflight(scope, send, origin, request_headers)
            return
        allowed = origin is not None and self.allowed(origin)
        if origin is not None and not allowed and self.on_reject:
            self.on_reject(origin)

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.add_vary_header("Origin")
                if allowed and origin is not None:
                    self._grant(headers, origin)
                    headers["Access-Control-Expose-Headers"] = ", ".join(CORS_EXPOSE)
            await send(message)

        await self.app(scope, receive, send_with_cors)

    async def _preflight(
        self, scope: Scope, send: Send, origin: str, request_headers: Headers
    ) -> None:
        method = request_headers["access-control-request-method"]
        requested = [
            h.strip().lower()
            for h in request_headers.get("access-control-request-headers", "").split(",")
            if h.strip()
        ]
        problems = []
        if not self.allowed(origin):
            problems.append(f"origin {origin!r} is not allowed")
            if self.on_reject:
                self.on_reject(origin)
        if method not in CORS_METHODS:
            problems.append(f"method {method!r} is not allowed")
        bad = [h for h in requested if h not in CORS_HEADERS]
        if bad:
            problems.append(f"headers {', '.join(bad)} are not allowed")
        request_id = scope.get("state", {}).get("request_id")
        if problems:
            await send_error(
                send,
                PermissionDeniedError(
                    "CORS preflight refused: " + "; ".join(problems), code="cors_rejected"
                ),
                request_id,
            )
            return
        headers = MutableHeaders(raw=[])
        self._grant(headers, origin)
        headers["Access-Control-Allow-Methods"] = ", ".join(CORS_METHODS)
        headers["Access-Control-Allow-Headers"] = ", ".join(CORS_HEADERS)
        headers["Access-Control-Max-Age"] = self.max_age
        headers["Vary"] = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
        headers["Content-Length"] = "0"
        await send({"type": "http.response.start", "status": 204, "headers": headers.raw})
        await send({"type": "http.response.body", "body": b""})
