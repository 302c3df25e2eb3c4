"""Request dependencies shared by the routers: the caller and its admission.

`PrincipalDep` authenticates (API key, JWT or the admin key) and applies the
request-rate limits of that principal; the limit headers of the decision are
kept on `request.state.limit_headers` for the route to send. `AdminDep`
additionally requires an admin principal.
"""

from __future__ import annotations

from typing import Annotated

import structlog
from fastapi import Depends, Request

from core import metrics
from core.auth import Principal
from core.errors import PermissionDeniedError, RateLimitError
from core.rate_limit import Decision

log = structlog.get_logger("skygate.limits")


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


def limit_headers(decision: Decision) -> dict[str, str]:
    return {
        "X-RateLimit-Limit": str(decision.limit),
        "X-RateLimit-Remaining": str(max(decision.remaining, 0)),
        "X-RateLimit-Reset": str(int(decision.reset_at)),
    }


def rate_limited(decision: Decision, principal: Principal, what: str) -> RateLimitError:
    metrics.SECURITY_EVENTS.labels("rate_limited").inc()
    log.info(
        "rate_limited",
        limit_key=principal.limit_key,
        window=decision.exceeded,
        limit=decision.limit,
    )
    headers = {"Retry-After": str(decision.retry_after)}
    if decision.exceeded == "tokens":
        headers.update(
            {
                "x-ratelimit-limit-tokens": str(decision.limit),
                "x-ratelimit-remaining-tokens": "0",
            }
        )
    else:
        headers.update(limit_headers(decision))
    return RateLimitError(
        f"Rate limit reached for {what}: {decision.limit} per {decision.exceeded or 'minute'}."
        f" Retry after {decision.retry_after} s.",
        code="rate_limit_exceeded",
        headers=headers,
    )


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
        raise rate_limited(decision, principal, "requests")
    request.state.limit_headers = limit_headers(decision)
    request.state.request_decision = decision
    return principal


async def require_admin(principal: Annotated[Principal, Depends(admit)]) -> Principal:
    if not principal.admin:
        metrics.SECURITY_EVENTS.labels("admin_forbidden").inc()
        raise PermissionDeniedError("This endpoint requires the admin key or an admin token.")
    return principal


PrincipalDep = Annotated[Principal, Depends(admit)]
AdminDep = Annotated[Principal, Depends(require_admin)]
