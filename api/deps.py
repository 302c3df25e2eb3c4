"""Request dependencies shared by the routers: the caller and its admission.

`PrincipalDep` authenticates (API key, JWT or the admin key) and applies the
request-rate limits of that principal; the limit headers of the decision are
kept on `request.state.limit_headers` for the route to send. `AdminDep`
additionally requires an admin principal.
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


async def admit(request: Request) -> Principal:
    services = request.app.state.services
    settings = services.settings
    principal: Principal = await services.auth.authenticate(
        presented_credential(request), client_ip=client_ip(request)
    )
    decision = await services.limiter.admit(
        principal.limit_key,
        per_minute=principal.rpm or settings.rate_limit_per_minute,
        per_hour=principal.rph or settings.rate_limit_per_hour,
    )
    if not decision.allowed:
        raise rate_limit_error(decision, limit_key=principal.limit_key)
    request.state.limit_headers = decision.request_headers()
    request.state.request_decision = decision
    return principal


async def require_admin(principal: Annotated[Principal, Depends(admit)]) -> Principal:
    if not principal.admin:
        metrics.SECURITY_EVENTS.labels("admin_forbidden").inc()
        raise PermissionDeniedError("This endpoint requires the admin key or an admin token.")
    return principal


PrincipalDep = Annotated[Principal, Depends(admit)]
AdminDep = Annotated[Principal, Depends(require_admin)]
