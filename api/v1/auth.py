"""`POST /api/v1/auth/token`: exchange an API key for a short-lived JWT, so a
browser never has to hold a long-lived key."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from api.deps import PrincipalDep
from core.errors import ServiceUnavailableError
from core.security import issue_token
from core.services import ServicesDep

router = APIRouter(tags=["auth"])


@router.post("/api/v1/auth/token")
async def token(
    services: ServicesDep, principal: PrincipalDep, response: Response
) -> dict[str, Any]:
    settings = services.settings
    if settings.jwt_secret_key is None:
        raise ServiceUnavailableError(
            "Tokens are not available: JWT_SECRET_KEY is not set.", code="tokens_unavailable"
        )
    subject = principal.key_id or ("admin" if principal.admin else principal.tenant)
    encoded, expires = issue_token(
        secret=settings.jwt_secret_key.get_secret_value(),
        subject=subject,
        tenant=principal.tenant,
        admin=principal.admin and principal.key_id is None,
        ttl_seconds=settings.jwt_ttl_seconds,
    )
    response.headers["Cache-Control"] = "no-store"
    return {
        "access_token": encoded,
        "token_type": "bearer",
        "expires_in": settings.jwt_ttl_seconds,
        "expires_at": expires,
    }
