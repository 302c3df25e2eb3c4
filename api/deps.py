"""Request dependencies shared by the routers: the caller and its admission.

`PrincipalDep` authenticates (API key, JWT or the admin key) and applies the
request-rate limits of that principal; the limit headers of the decision are
kept on `request.state.limit_headers` for the route to send. `AdminDep`
additionally requires an admin principal (no credential is never one).
`operator_access` tells whether a request carries the metrics token, the
admin key or an admin JWT, without any I/O (`/metrics`, `/health`). `CallerDep` (the LLM routes)
authenticates and hands the route a `RequestAdmission` to await later, so the
pipeline can send the limit check in the same Redis round trip as its cache
lookup; the route still awaits it before answering any error, so every
authenticated request is counted and a 429 wins over any other refusal.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from fastapi import Depends, Request

from core.auth.authenticator import Principal
from core.auth.credentials import constant_time_equals
from core.errors import PermissionDeniedError
from core.limits.rate_limit import rate_limit_error
from core.observability import metrics


def presented_credential(request: Request) -> str | None:
    return presented_credential_of(request.headers)


def presented_credential_of(headers: Mapping[str, str]) -> str | None:
    """`Authorization: Bearer <credential>` or `X-API-Key` (HTTP and WebSocket alike);
    "" for another Authorization scheme, None for none."""
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        return token.strip() if scheme.lower() == "bearer" else ""
    return headers.get("x-api-key")


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
        principal = self.principal
        per_minute, per_hour = principal.request_limits(services.settings)
        decision = await services.limiter.admit(
            principal.limit_key, per_minute=per_minute, per_hour=per_hour
        )
        if not decision.allowed:
            raise rate_limit_error(decision, limit_key=principal.limit_key)
        self.request.state.limit_headers = decision.request_headers()
        self.request.state.request_decision = decision


async def admit(request: Request) -> Principal:
    principal = await authenticate(request)
    await RequestAdmission(request, principal)()
    return principal


async def require_admin(
    request: Request, principal: Annotated[Principal, Depends(admit)]
) -> Principal:
    if principal.admin:
        return principal
    metrics.SECURITY_EVENTS.labels("admin_forbidden").inc()
    if request.app.state.services.auth.admin_key is None:
        raise PermissionDeniedError(
            "The admin endpoints are disabled: no ADMIN_API_KEY is configured. "
            "Set ADMIN_API_KEY and present it as 'Authorization: Bearer <key>'.",
            code="admin_disabled",
        )
    raise PermissionDeniedError("This endpoint requires the admin key or an admin token.")


def operator_access(request: Request) -> bool:
    """Whether the request carries the metrics token, the admin key or a current
    admin JWT (compared in constant time; no database, no Redis)."""
    credential = presented_credential(request)
    if not credential:
        return False
    token = request.app.state.settings.metrics_token
    if token is not None and constant_time_equals(credential, token.get_secret_value()):
        return True
    return bool(request.app.state.services.auth.is_admin_credential(credential))


PrincipalDep = Annotated[Principal, Depends(admit)]
CallerDep = Annotated[Principal, Depends(authenticate)]
AdminDep = Annotated[Principal, Depends(require_admin)]
