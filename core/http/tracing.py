"""The server span of each HTTP request (installed only when tracing is configured,
`core.observability.tracing`).

Named by OpenTelemetry's HTTP conventions, `{method} {route template}`
(`POST /api/v1/chat/completions`), so span names stay a small fixed set; the GenAI
names (`chat gpt-4o-mini`) belong to the upstream attempts below it
(`core.llm.traced`), which are the GenAI operations. A client's W3C `traceparent`
(and `tracestate`) makes this span its child; the sampler (OTEL_TRACES_SAMPLER,
parent-based by default) honours the client's sampled flag.

The trace id goes into `scope["state"]["trace_id"]`, beside the request id, for the
log context (`core.http.context.LogContextMiddleware`) and the access line
(`core.http.access`). Not traced: the probes and `/metrics` (`QUIET_ROUTES`, a span
every few seconds per prober), and WebSocket sessions (a span lasting a whole
session says nothing; the model turns of agent runs still get theirs, as roots).
"""

from __future__ import annotations

from opentelemetry import context, trace
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.http.access import QUIET_ROUTES
from core.http.middleware import request_id_of, route_template
from core.observability.logging import redactor
from core.observability.metrics import UNMATCHED_ROUTE
from core.observability.tracing import (
    RequestTrace,
    Tracing,
    client_context,
    request_context,
    trace_id_hex,
)

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


class TracingMiddleware:
    """A SERVER span around each HTTP request, current while the request runs."""

    def __init__(self, app: ASGIApp, *, tracing: Tracing) -> None:
        self.app = app
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        tracer = self.tracing.tracer
        if tracer is None or scope["type"] != "http" or scope["path"] in QUIET_ROUTES:
            await self.app(scope, receive, send)  # probes and scrapes: a span each says nothing
            return
        traceparent = tracestate = None
        for name, value in scope["headers"]:
            if name == b"traceparent":
                traceparent = value.decode("latin-1")
            elif name == b"tracestate":  # W3C: repeated headers are one list
                text = value.decode("latin-1")
                tracestate = text if tracestate is None else f"{tracestate},{text}"
        parent = client_context(traceparent, tracestate)
        method = scope["method"] if scope["method"] in _METHODS else "_OTHER"
        client = scope.get("client")
        span = tracer.start_span(
            method,
            context=parent,
            kind=trace.SpanKind.SERVER,
            attributes={
                "http.request.method": method,
                "url.path": redactor.scrub_text(scope.get("path", "")),  # as the access line
                "url.scheme": scope.get("scheme", "http"),
                "network.protocol.version": scope.get("http_version", "1.1"),
                **({"client.address": client[0]} if client else {}),
                **({"skygate.request_id": rid} if (rid := request_id_of(scope)) else {}),
            },
        )
        record = RequestTrace(span, self.tracing.capture_tenants)
        scope.setdefault("state", {})["trace_id"] = trace_id_hex(span)
        status = 500  # unless a response starts: nothing was answered

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        failure: str | None = None
        token = context.attach(request_context(record, parent))
        try:
            await self.app(scope, receive, send_observed)
        except BaseException as exc:  # a cancelled request (client gone), or a bug
            failure = type(exc).__qualname__
            raise
        finally:
            context.detach(token)
            route = route_template(scope)
            if route != UNMATCHED_ROUTE:
                span.update_name(f"{method} {route}")
                span.set_attribute("http.route", route)
            span.set_attribute("http.response.status_code", status)
            if failure is None and status >= 500:
                failure = str(status)
            if failure is not None:
                span.set_attribute("error.type", failure)
                span.set_status(trace.StatusCode.ERROR)
            span.end()
