"""CORS for browsers: exact origins plus an anchored (full-match) origin regex,
for HTTP requests and WebSocket upgrades.

A WebSocket is not covered by the browser's same-origin checks (any page may open
one to any host and the browser sends its cookies), so an upgrade carrying an
`Origin` the rules refuse is denied (HTTP 403) before the app, and counted like a
refused HTTP origin. An upgrade without `Origin` comes from a server, not a
browser, and passes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.errors import PermissionDeniedError
from core.http.middleware import deny_websocket, request_id_of, send_error

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
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
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

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        origin = Headers(scope=scope).get("origin")
        if origin is not None and not self.allowed(origin):
            if self.on_reject:
                self.on_reject(origin)
            refused = PermissionDeniedError(
                f"WebSocket refused: origin {origin!r} is not allowed", code="cors_rejected"
            )
            await deny_websocket(scope, send, refused, request_id_of(scope))
            return
        await self.app(scope, receive, send)

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
        request_id = request_id_of(scope)
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
