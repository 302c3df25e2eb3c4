"""`POST /api/v1/auth/token`: exchange an API key (or a token) for a short-lived
JWT, so a browser never has to hold a long-lived key.

A token never outlives what it was exchanged for: its expiry is at most the
presented JWT's, or the key's `expires_at`. An admin token carries the
fingerprint of the admin key that minted it (`core.auth.credentials.admin_fingerprint`),
so rotating ADMIN_API_KEY retires it, and nothing can be minted from it after.
The open development principal (no ADMIN_API_KEY) has nothing to exchange.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Response

from api import bodies, openapi
from api.deps import PrincipalDep
from core.auth.credentials import issue_token
from core.container import ServicesDep
from core.errors import PermissionDeniedError, ServiceUnavailableError

router = APIRouter(tags=["auth"])


@router.post("/api/v1/auth/token", responses=openapi.ok(bodies.Token, 403, 503))
async def token(
    services: ServicesDep, principal: PrincipalDep, response: Response
) -> dict[str, Any]:
    settings = services.settings
    if settings.jwt_secret_key is None:
        raise ServiceUnavailableError(
            "Tokens are not available: JWT_SECRET_KEY is not set.", code="tokens_unavailable"
        )
    if principal.key_id is None and not principal.admin:
        raise PermissionDeniedError(
            "Authentication is off (no ADMIN_API_KEY): there is no credential to exchange.",
            code="tokens_unavailable",
        )
    admin = principal.admin and principal.key_id is None
    now = int(time.time())
    encoded, expires = issue_token(
        secret=settings.jwt_secret_key.get_secret_value(),
        subject=principal.key_id or "admin",
        tenant=principal.tenant,
        admin=admin,
        ttl_seconds=settings.jwt_ttl_seconds,
        not_after=principal.expires_at,
        fingerprint=services.auth.fingerprint if admin else None,
    )
    response.headers["Cache-Control"] = "no-store"
    return {
        "access_token": encoded,
        "token_type": "bearer",
        "expires_in": max(0, min(settings.jwt_ttl_seconds, expires - now)),
        "expires_at": expires,
    }
