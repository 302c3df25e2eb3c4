"""Skygate's pure-ASGI middleware, for `http` and `websocket` scopes: the shared pieces.

The stack, outermost first, as `main_enterprise.create_app` declares it; one concern
a class, each serving both scope types where the concern applies:

1. `ForwardedMiddleware` (context.py) — the client's address and scheme from a
   trusted proxy's `X-Forwarded-*` (only installed when a policy is active).
2. `RequestIdMiddleware` (context.py) — `x-request-id`: the client's when sane,
   else a fresh one; echoed on the HTTP response and on the WebSocket accept.
   `TracingMiddleware` (tracing.py) — the request's server span, only when tracing
   is configured (`core.observability.tracing`); its trace id beside the request id.
3. `LogContextMiddleware` (context.py) — `request_id` (and `trace_id`) bound for
   every log line.
4. `DrainMiddleware` (context.py) — `Connection: close` while the worker stops.
5. `AccessMiddleware` (access.py) — metrics by route template and the one access
   line (per request; per WebSocket session, at its close).
6. `LastResortMiddleware` (last_resort.py) — an exception nobody answered: a 500
   in the error shape; for a WebSocket a denial before accept, 1011 after.
7. `CORSMiddleware` (cors.py) — exact origins plus an anchored regex; a refused
   Origin on a WebSocket upgrade is denied (403) before the app.
8. `BodySizeLimitMiddleware` (body_limit.py) — 413 before an oversized body is read.

The order matters where one reads what another writes: everything below 1 sees
the real client; everything below 2 reads the request id from
`scope["state"]["request_id"]`; 5 sits outside 6 so the 500 (or 1011) that 6
sends is what 5 counts and logs; 7 and 8 answer inside 5, so their refusals are
counted and carry the request id like any response.

No `BaseHTTPMiddleware`: it breaks contextvars propagation and streaming.
"""

from __future__ import annotations

from starlette.types import Scope, Send

from core.errors import GatewayError, error_body
from core.observability import metrics

REQUEST_ID_HEADER = b"x-request-id"
_DENIAL_EXTENSION = "websocket.http.response"


def request_id_of(scope: Scope) -> str | None:
    """The id `RequestIdMiddleware` gave this request (None outside the stack)."""
    rid = scope.get("state", {}).get("request_id")
    return rid if isinstance(rid, str) else None


def trace_fields(scope: Scope) -> dict[str, str]:
    """`{"trace_id": ...}` for a traced request's access line (`core.http.tracing`), else {}."""
    trace_id = scope.get("state", {}).get("trace_id")
    return {"trace_id": trace_id} if isinstance(trace_id, str) else {}


def route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else metrics.UNMATCHED_ROUTE


async def send_error(send: Send, error: GatewayError, request_id: str | None) -> None:
    """Answer an HTTP request with `error` from inside middleware (no route ran)."""
    await _send_response(send, "http.response", error, request_id)


async def deny_websocket(
    scope: Scope, send: Send, error: GatewayError, request_id: str | None
) -> None:
    """Refuse a WebSocket before it is accepted. With the ASGI denial-response
    extension (uvicorn has it) the client gets `error`'s status and body, like an
    HTTP client; without it, a close, which the server answers with HTTP 403."""
    if _DENIAL_EXTENSION in scope.get("extensions", {}):
        await _send_response(send, "websocket.http.response", error, request_id)
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": ""})


async def _send_response(
    send: Send, prefix: str, error: GatewayError, request_id: str | None
) -> None:
    headers = [(b"content-type", b"application/json")]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    body = error_body(error, request_id)
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": prefix + ".start", "status": error.status_code, "headers": headers})
    await send({"type": prefix + ".body", "body": body})
