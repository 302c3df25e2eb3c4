"""Request dependencies shared by the routers: services and the caller.

Authentication here is the foundation's stopgap until tenant API keys arrive:
with `ADMIN_API_KEY` set, `/api/v1` requires it (Bearer or X-API-Key); without
it (development only — production refuses to start), every caller is the
anonymous tenant.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

import structlog
from fastapi import Depends, Request

from core import metrics
from core.errors import AuthenticationError

log = structlog.get_logger("skygate.auth")
ANONYMOUS = "anonymous"


@dataclass(frozen=True, slots=True)
class Principal:
    tenant: str
    key_id: str | None
    admin: bool


def presented_credential(request: Request) -> str | None:
    authorization = request.headers.get("authorization")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else None
    return request.headers.get("x-api-key") or None


async def authenticate(request: Request) -> Principal:
    settings = request.app.state.settings
    if settings.admin_api_key is None:
        return Principal(tenant=ANONYMOUS, key_id=None, admin=True)
    presented = presented_credential(request)
    expected = settings.admin_api_key.get_secret_value()
    if presented is None or not hmac.compare_digest(presented.encode(), expected.encode()):
        kind = "auth_missing" if presented is None else "auth_invalid"
        metrics.SECURITY_EVENTS.labels(kind).inc()
        log.info("auth_rejected", reason=kind)
        raise AuthenticationError(
            "Missing credentials: send 'Authorization: Bearer <key>'."
            if presented is None
            else "Invalid API key.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return Principal(tenant="admin", key_id="admin", admin=True)


PrincipalDep = Annotated[Principal, Depends(authenticate)]
