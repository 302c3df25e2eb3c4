"""What an operator sees of each exchange: Prometheus metrics by route template and
the one access line, for HTTP requests and WebSocket sessions.

An HTTP request is counted with the fault of the error it was answered with
(`error_type`, `core.errors`): the one the error renderer or a stream's error
event noted (`note_answered`), else what a bare error status stands for
(`fault_for_status`), else none. A stream that began 200 and then ended with an
error event counts as that error, since that is what its client got.

A WebSocket session is logged and counted once, when it ends, with its close code
and duration. Its outcome (a bounded label) is:

- `rejected`: never accepted (closed or denied before accept), status < 500;
- `error`: closed with 1011, or denied with a 5xx;
- `normal`: closed with 1000 (normal) or 1001 (going away), by either side, or the
  app returned without a close (the server then closes with 1000);
- `other`: any other close code (1006 dropped, 1008 policy, an app's 4xxx).
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.errors import answering, done_answering, fault_for_status
from core.http.middleware import request_id_of, route_template, trace_fields
from core.observability import metrics
from core.observability.logging import access_line

QUIET_ROUTES = frozenset({"/live", "/ready", "/health", "/metrics"})
_NORMAL_CLOSES = frozenset({1000, 1001, None})
ACCEPTED = 101  # a WebSocket's status once accepted: HTTP 101 Switching Protocols


def websocket_outcome(status: int, close_code: int | None) -> str:
    if status != ACCEPTED:
        return "error" if status >= 500 else "rejected"
    if close_code == 1011:
        return "error"
    return "normal" if close_code in _NORMAL_CLOSES else "other"


class AccessMiddleware:
    """HTTP: requests in progress, requests by method/route/status, durations, and
    an access line per request (DEBUG for the probes and `/metrics` unless they fail).
    WebSocket: connections open now, sessions by route/outcome, session duration,
    and an access line per session."""

    def __init__(self, app: ASGIApp, *, enable_metrics: bool = True) -> None:
        self.app = app
        self.enable_metrics = enable_metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        method = scope["method"]
        status = 500  # unless a response starts: nothing was answered

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        if self.enable_metrics:
            metrics.HTTP_IN_PROGRESS.labels(method).inc()
        answered, token = answering()
        try:
            await self.app(scope, receive, send_observed)
        finally:
            done_answering(token)
            elapsed = time.perf_counter() - started
            route = route_template(scope)
            if self.enable_metrics:
                fault = answered.fault or fault_for_status(status)
                metrics.HTTP_IN_PROGRESS.labels(method).dec()
                metrics.HTTP_REQUESTS.labels(method, route, str(status), fault).inc()
                metrics.HTTP_DURATION.labels(method, route).observe(elapsed)
                if route.startswith("/api/v1/"):
                    metrics.API_DURATION.labels(method, route).observe(elapsed)
            access_line(
                logging.DEBUG if route in QUIET_ROUTES and status < 500 else logging.INFO,
                {
                    "request_id": request_id_of(scope),
                    **trace_fields(scope),
                    "method": method,
                    "route": route,
                    "path": scope.get("path"),
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 3),
                    "client": (scope.get("client") or (None,))[0],
                },
            )

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = 500  # unless accepted or denied: the app ended without an answer
        close_code: int | None = None
        enable_metrics = self.enable_metrics

        async def send_observed(message: Message) -> None:
            nonlocal status, close_code
            kind = message["type"]
            if kind == "websocket.accept":
                await send(message)
                status = ACCEPTED
                if enable_metrics:
                    metrics.WEBSOCKET_ACTIVE.inc()
                return
            if kind == "websocket.close":
                if status != ACCEPTED:
                    status = 403  # a close before accept is the server's 403 denial
                if close_code is None:
                    close_code = message.get("code", 1000)
            elif kind == "websocket.http.response.start":
                status = message["status"]
            await send(message)

        async def receive_observed() -> Message:
            nonlocal close_code
            message = await receive()
            if message["type"] == "websocket.disconnect" and close_code is None:
                close_code = message.get("code", 1005)
            return message

        try:
            await self.app(scope, receive_observed, send_observed)
        finally:
            elapsed = time.perf_counter() - started
            route = route_template(scope)
            outcome = websocket_outcome(status, close_code)
            if enable_metrics:
                if status == ACCEPTED:
                    metrics.WEBSOCKET_ACTIVE.dec()
                metrics.WEBSOCKET_SESSIONS.labels(route, outcome).inc()
                metrics.WEBSOCKET_DURATION.labels(route).observe(elapsed)
            access_line(
                logging.WARNING if outcome == "error" else logging.INFO,
                {
                    "request_id": request_id_of(scope),
                    "route": route,
                    "path": scope.get("path"),
                    "status": status,
                    "close_code": close_code,
                    "outcome": outcome,
                    "duration_ms": round(elapsed * 1000, 3),
                    "client": (scope.get("client") or (None,))[0],
                },
                event="websocket",
            )
