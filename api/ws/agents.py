"""`/ws/agents`: agent clients over a WebSocket (protocol: docs/websocket.md).

Authentication, in this order:
1. `Authorization: Bearer <key or token>` (or `X-API-Key`) on the upgrade: servers.
2. A single-use ticket (`POST /api/v1/ws/tickets`) offered as the subprotocol
   `skygate.ticket.<ticket>` next to `skygate.agents.v1`: browsers.
3. Neither: the first message must be `{"type": "auth", "token": "..."}` within
   `AUTH_SECONDS` (what a bare `new WebSocket(url)` can do).
Bad credentials on the upgrade are an HTTP 401 before it (the route raises before
accepting). A credential in the query string is refused with close 4401 whatever
else is offered, and never logged (the access line has no query string; the server's
protocol class drops it from uvicorn's lines). A browser's `Origin` passes the CORS
rules first (core.http.cors answers 403 before this route).

Close codes (4xxx are the protocol's; see the doc): 1000 normal, 1008 policy (key
revoked, flood), 1009 message too big (the server's limit), 1011 internal error, 1012
restart (drain: reconnect and resume), 1013 try again later (slow consumer), 4400 bad
protocol, 4401 unauthenticated, 4429 tenant connection quota.
"""

from __future__ import annotations

import asyncio
import contextlib

import orjson
from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketState

from api.deps import presented_credential_of
from api.ws.session import PROTOCOL, Session
from core.auth.authenticator import Principal
from core.errors import AuthenticationError
from core.observability import metrics

router = APIRouter()
TICKET_PREFIX = "skygate.ticket."
AUTH_SECONDS = 5.0
CREDENTIAL_PARAMS = frozenset(
    {
        "token",
        "access_token",
        "api_key",
        "apikey",
        "key",
        "ticket",
        "auth",
        "authorization",
        "jwt",
        "bearer",
    }
)
CONNECTION_KEY = "skygate:ws:connections:{}"
CONNECTION_TTL = 3600  # a crashed worker's counts fade instead of blocking a tenant forever


@router.websocket("/ws/agents")
async def agents_socket(websocket: WebSocket) -> None:
    app = websocket.app
    services, agents = app.state.services, app.state.agents
    offered: list[str] = list(websocket.scope.get("subprotocols") or [])
    accept_with = PROTOCOL if PROTOCOL in offered else None
    if {name.lower() for name in websocket.query_params} & CREDENTIAL_PARAMS:
        metrics.SECURITY_EVENTS.labels("ws_query_credential").inc()
        await websocket.accept(subprotocol=accept_with)
        await _close(
            websocket,
            4401,
            "credentials in the URL are refused: use a header, a ticket or the auth message",
        )
        return
    client_ip = websocket.client.host if websocket.client else "unknown"
    principal: Principal | None = None
    credential = presented_credential_of(websocket.headers)
    ticket = next((p[len(TICKET_PREFIX) :] for p in offered if p.startswith(TICKET_PREFIX)), None)
    if credential:  # refused -> an HTTP 401 before the upgrade
        principal = await services.auth.authenticate(credential, client_ip=client_ip)
    elif ticket is not None:
        redeemed = await services.tickets.redeem(ticket)
        if redeemed is None:
            raise services.auth.reject("ws_ticket_invalid", "Invalid, used or expired ticket.")
        principal = await services.auth.recheck(redeemed)
    elif not services.auth.enabled:
        principal = await services.auth.authenticate(None, client_ip=client_ip)
    if offered and accept_with is None:
        await websocket.accept()
        await _close(websocket, 4400, f"offer the subprotocol {PROTOCOL}")
        return
    await websocket.accept(subprotocol=accept_with)
    if principal is None:
        principal = await _first_message_auth(websocket, services, client_ip)
        if principal is None:
            return
    counted = await _count(websocket, principal.tenant, +1)
    try:
        if counted > services.settings.ws_max_connections_per_tenant:
            metrics.SECURITY_EVENTS.labels("ws_connection_quota").inc()
            await _close(websocket, 4429, "this tenant has as many connections open as it may")
            return
        session = Session(
            websocket,
            services=services,
            agents=agents,
            principal=principal,
            live_available=agents.live_available(),
        )
        await session.run()
        if session.close_code is None:
            await _close(websocket, 1000, "")
    finally:
        await _count(websocket, principal.tenant, -1)


async def _first_message_auth(
    websocket: WebSocket, services: object, client_ip: str
) -> Principal | None:
    auth = services.auth  # type: ignore[attr-defined]
    try:
        async with asyncio.timeout(AUTH_SECONDS):
            message = await websocket.receive()
    except TimeoutError:
        await _close(websocket, 4401, f"authenticate within {AUTH_SECONDS:g} s")
        return None
    if message["type"] == "websocket.disconnect":
        return None
    try:
        data = orjson.loads(message.get("text") or "")
    except orjson.JSONDecodeError:
        data = None
    token = data.get("token") if isinstance(data, dict) and data.get("type") == "auth" else None
    if not isinstance(token, str) or not token:
        await _close(websocket, 4401, 'the first message must be {"type": "auth", "token": ...}')
        return None
    try:
        principal: Principal = await auth.authenticate(token, client_ip=client_ip)
    except AuthenticationError:
        await _close(websocket, 4401, "invalid credentials")
        return None
    ref = data.get("id") if isinstance(data, dict) else None
    if isinstance(ref, str | int) and not isinstance(ref, bool):
        await websocket.send_text(orjson.dumps({"type": "ack", "id": str(ref)[:128]}).decode())
    return principal


async def _count(websocket: WebSocket, tenant: str, delta: int) -> int:
    """This tenant's open sockets after `delta`: in Redis across the fleet, else in
    this process (then a floor, not the fleet's figure)."""
    state = websocket.app.state
    local: dict[str, int] = state.__dict__.setdefault("ws_connections", {})
    local[tenant] = local.get(tenant, 0) + delta
    if local[tenant] <= 0:
        local.pop(tenant, None)
    redis = state.services.redis
    key = CONNECTION_KEY.format(tenant)
    value = await redis.command("INCRBY", key, delta, fallback=None)
    if value is None:
        return local.get(tenant, 0)
    await redis.command("EXPIRE", key, CONNECTION_TTL, fallback=None)
    return int(value)


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    metrics.WEBSOCKET_CLOSES.labels(str(code)).inc()
    if websocket.application_state != WebSocketState.DISCONNECTED:
        with contextlib.suppress(Exception):
            await websocket.close(code, reason[:120])
