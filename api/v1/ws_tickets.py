"""`POST /api/v1/ws/tickets`: a single-use ticket for a browser's WebSocket.

A browser cannot send an `Authorization` header on a WebSocket, and a credential in a
URL ends up in logs; it trades its (short-lived) token here for a ticket valid 60 s
and offers it as the subprotocol `skygate.ticket.<ticket>` next to
`skygate.agents.v1` (core.auth.tickets, docs/websocket.md).
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter

from api import bodies, openapi
from api.deps import PrincipalDep
from api.ws.session import PROTOCOL
from core.auth.tickets import TICKET_SECONDS
from core.container import ServicesDep

router = APIRouter(tags=["agents"])


class Ticket(bodies.GatewayBody):
    object: Literal["ws.ticket"]
    ticket: str
    expires_at: int
    expires_in: int
    url: str
    subprotocols: list[str]


@router.post("/api/v1/ws/tickets", status_code=201, responses=openapi.ok(Ticket, 503, status=201))
async def create_ticket(services: ServicesDep, principal: PrincipalDep) -> Ticket:
    ticket, expires_at = await services.tickets.issue(principal)
    return Ticket(
        object="ws.ticket",
        ticket=ticket,
        expires_at=int(expires_at),
        expires_in=TICKET_SECONDS,
        url="/ws/agents",
        subprotocols=[f"skygate.ticket.{ticket}", PROTOCOL],
    )
