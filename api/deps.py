"""Request dependencies shared by the routers: the caller and its admission.

`PrincipalDep` authenticates (API key, JWT or the admin key) and applies the
request-rate limits of that principal; the limit headers of the decision are
kept on `request.state.limit_headers` for the route to send. `AdminDep`
additionally requires an admin principal. `CallerDep` (the LLM routes)
authenticates and hands the route a `RequestAdmission` to await later, so the
pipeline can send the limit check in the same Redis round trip as its cache
lookup; the route still awaits it before answering any error, so every
authenticated request is counted and a 429 wins over any other refusal.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from core import metrics
from core.auth import Principal
from core.errors import PermissionDeniedError
from core.rate_limit import rate_limit_error


def presented_credential(request: Request) -> str | None:
    authorization = request.headers.get("authorization")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        return token.strip() if scheme.lower() == "bearer" else ""
    return request.headers.get("x-api-key")


def client_ip(request: Request) -> str:
    """The peer address; uvicorn has already applied X-Forwarded-For, and only when
    the direct peer is listed in FORWARDED_ALLOW_IPS."""
    return request.client.host if request.client else "unknown"


async def authenticate(request: Request) -> Principal:
    services = request.app.state.services
    principal: Principal = await services.auth.authenticate(
        presented_credential(request), client_ip=client_ip(request)
    )
    return principal


class RequestAdmission:
    """The request-rate check of one request, run at most once."""

    __slots__ = ("request", "principal", "_done")

    def __init__(self, request: Request, principal: Principal) -> None:
        self.request = request
        self.principal = principal
        self._done = False

    async def __call__(self) -> None:
        """Count the request; 429 when it is over a limit."""
        if self._done:
            return
        self._done = True
        services = self.request.app.state.services
        settings = services.settings
        principal = self.principal
        decision = await services.limiter.admit(
            principal.limit_key,
            per_minute=principal.rpm or settings.rate_limit_per_minute,
            per_hour=principal.rph or settings.rate_limit_per_hour,
        )
        if not decision.allowed:
            raise rate_limit_error(decision, limit_key=principal.limit_key)
        self.request.state.limit_headers = decision.request_headers()
        self.request.state.request_decision = decision


async def admit(request: Request) -> Principal:
    principal = await authenticate(request)
    await RequestAdmission(request, principal)()
    return principal


async def require_admin(principal: Annotated[Principal, Depends(admit)]) -> Principal:
    if not principal.admin:
        metrics.SECURITY_EVENTS.labels("admin_forbidden").inc()
        raise PermissionDeniedError("This endpoint requires the admin key or an admin token.")
    return principal


PrincipalDep = Annotated[Principal, Depends(admit)]
CallerDep = Annotated[Principal, Depends(authenticate)]
AdminDep = Annotated[Principal, Depends(require_admin)]
