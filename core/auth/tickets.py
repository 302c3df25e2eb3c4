"""Single-use WebSocket tickets.

A browser cannot set headers on a WebSocket and must not put a credential in a URL
(proxies and servers log URLs). It trades its short-lived token for a ticket
(`POST /api/v1/ws/tickets`), valid `TICKET_SECONDS`, and offers it as the subprotocol
`skygate.ticket.<ticket>`; the first upgrade that presents it consumes it.

Tickets live in Redis (`SET ... EX`, redeemed with `GETDEL`, so any worker or instance
takes it exactly once). Without Redis configured (the embedded default, one process)
they live in this process. With Redis configured but away, issuing answers 503: a
ticket kept in one worker would fail on the others, and a client can still
authenticate with its first message.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import asdict

import orjson

from core.auth.authenticator import Principal
from core.errors import ServiceUnavailableError
from core.infra.redis import ResilientRedis

TICKET_SECONDS = 60
PREFIX = "skygate:ws:ticket:"
_LOCAL_LIMIT = 10_000  # tickets one process keeps at most without Redis


def _encode(principal: Principal) -> bytes:
    data = asdict(principal)
    if principal.allowed_models is not None:
        data["allowed_models"] = sorted(principal.allowed_models)
    return orjson.dumps(data)


def _decode(raw: bytes | str) -> Principal:
    data = orjson.loads(raw)
    if data.get("allowed_models") is not None:
        data["allowed_models"] = frozenset(data["allowed_models"])
    return Principal(**data)


class TicketService:
    def __init__(self, redis: ResilientRedis, *, ttl: int = TICKET_SECONDS) -> None:
        self.redis = redis
        self.ttl = ttl
        self._local: dict[str, tuple[float, bytes]] = {}

    async def issue(self, principal: Principal) -> tuple[str, float]:
        """A new ticket for `principal` and when it expires (epoch seconds)."""
        ticket = "tkt_" + secrets.token_urlsafe(24)  # an HTTP token: usable as a subprotocol
        expires_at = time.time() + self.ttl
        payload = _encode(principal)
        if self.redis.configured:
            stored = await self.redis.command(
                "SET", PREFIX + ticket, payload, "EX", self.ttl, fallback=None
            )
            if stored is None:
                raise ServiceUnavailableError(
                    "Tickets cannot be issued while Redis is unavailable; authenticate with "
                    "the first message instead, or retry shortly.",
                    code="tickets_unavailable",
                    headers={"Retry-After": "2"},
                )
            return ticket, expires_at
        self._sweep()
        self._local[ticket] = (time.monotonic() + self.ttl, payload)
        return ticket, expires_at

    async def redeem(self, ticket: str) -> Principal | None:
        """The principal a ticket was issued to, once; None for an unknown, used or
        expired ticket (or Redis away: nothing can be proven then)."""
        if not ticket.startswith("tkt_") or len(ticket) > 64:
            return None
        if self.redis.configured:
            raw = await self.redis.command("GETDEL", PREFIX + ticket, fallback=None)
            return _decode(raw) if isinstance(raw, bytes | str) and raw else None
        entry = self._local.pop(ticket, None)
        if entry is None or entry[0] < time.monotonic():
            return None
        return _decode(entry[1])

    def _sweep(self) -> None:
        now = time.monotonic()
        for ticket in [t for t, (until, _) in self._local.items() if until < now]:
            del self._local[ticket]
        while len(self._local) >= _LOCAL_LIMIT:
            self._local.pop(next(iter(self._local)))
