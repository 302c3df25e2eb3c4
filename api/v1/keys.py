"""Admin endpoints for API keys: create (the secret is shown once), list, read,
update and revoke. Admin key or admin JWT only.

Tenant names the gateway uses for itself (`admin`, `anonymous`, ... — see
`core.auth.RESERVED_TENANTS`), in any case or with punctuation around them, are
refused with 422: such a tenant would share the admin's cache entries and usage
rows. A key's tenant cannot be changed after creation (PATCH refuses `tenant`).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api import openapi
from api.deps import AdminDep
from core.auth import reserved_tenant
from core.errors import NotFoundError
from core.security import display_prefix, hash_api_key, new_api_key
from core.services import ServicesDep
from database.keys import key_by_id, list_keys, update_key
from database.models import ApiKey

router = APIRouter(tags=["keys"])
MAX_INT32 = 2**31 - 1  # the columns are INTEGER
NAME = r"^[A-Za-z0-9][A-Za-z0-9 ._:@/-]{0,127}$"


class KeyLimits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    allowed_models: list[Annotated[str, Field(min_length=1, max_length=128)]] | None = None
    rpm_limit: int | None = Field(default=None, ge=1, le=MAX_INT32)
    rph_limit: int | None = Field(default=None, ge=1, le=MAX_INT32)
    tpm_limit: int | None = Field(default=None, ge=1, le=MAX_INT32)
    monthly_budget_usd: float | None = Field(default=None, ge=0, le=1e9)
    expires_at: datetime | None = None

    @field_validator("expires_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class KeyCreate(KeyLimits):
    name: str = Field(pattern=NAME)
    tenant: str = Field(pattern=NAME)

    @field_validator("tenant")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if reserved_tenant(value):
            raise ValueError(f"the tenant name {value!r} is reserved by the gateway")
        return value


class KeyUpdate(KeyLimits):
    name: str | None = Field(default=None, pattern=NAME)
    state: Literal["active", "disabled", "revoked"] | None = None

    @field_validator("name", "state")
    @classmethod
    def _not_null(cls, value: str | None) -> str | None:
        # Left out means "unchanged"; null would reach a NOT NULL column (a 500, found
        # by the fuzz pass). A limit's null, by contrast, means "no limit".
        if value is None:
            raise ValueError("may be left out, but not null")
        return value


def key_view(row: ApiKey) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "api_key",
        "name": row.name,
        "tenant": row.tenant,
        "prefix": row.key_prefix,
        "state": row.state,
        "allowed_models": row.allowed_models,
        "rpm_limit": row.rpm_limit,
        "rph_limit": row.rph_limit,
        "tpm_limit": row.tpm_limit,
        "monthly_budget_usd": (
            float(row.monthly_budget_usd) if row.monthly_budget_usd is not None else None
        ),
        "expires_at": row.expires_at.isoformat() if row.expires_at else None,
        "created_at": row.created_at.isoformat() if row.created_at else None,
    }


def _changed(request: Request, key_id: str) -> None:
    services = request.app.state.services
    services.auth.forget()  # this worker at once; the others within AUTH_CACHE_SECONDS
    services.spend.forget(key_id)


@router.post(
    "/api/v1/keys", status_code=201, responses=openapi.ok(openapi.ApiKeyCreated, status=201)
)
async def create_key(
    body: KeyCreate, services: ServicesDep, principal: AdminDep, response: Response
) -> dict[str, Any]:
    secret = new_api_key()
    row = ApiKey(
        id=str(uuid.uuid4()),
        name=body.name,
        tenant=body.tenant,
        key_prefix=display_prefix(secret),
        key_hash=hash_api_key(secret),
        allowed_models=body.allowed_models,
        rpm_limit=body.rpm_limit,
        rph_limit=body.rph_limit,
        tpm_limit=body.tpm_limit,
        monthly_budget_usd=body.monthly_budget_usd,
        expires_at=body.expires_at,
        state="active",
    )
    async with services.sessions() as session, session.begin():
        session.add(row)
    async with services.sessions() as session:
        stored = await key_by_id(session, key_id=row.id)
    assert stored is not None
    response.headers["Cache-Control"] = "no-store"
    return {**key_view(stored), "key": secret}


@router.get("/api/v1/keys", responses=openapi.ok(openapi.ApiKeyList))
async def get_keys(
    services: ServicesDep, principal: AdminDep, tenant: str | None = None
) -> dict[str, Any]:
    async with services.sessions() as session:
        rows = await list_keys(session, tenant=tenant)
    return {"object": "list", "data": [key_view(row) for row in rows]}


async def _load(services: Any, key_id: str) -> ApiKey:
    async with services.sessions() as session:
        row = await key_by_id(session, key_id=key_id)
    if row is None:
        raise NotFoundError(f"No API key with id '{key_id}'.", param="id", code="key_not_found")
    return row


@router.get("/api/v1/keys/{key_id}", responses=openapi.ok(openapi.ApiKeyObject, 404))
async def get_key(key_id: str, services: ServicesDep, principal: AdminDep) -> dict[str, Any]:
    return key_view(await _load(services, key_id))


@router.patch("/api/v1/keys/{key_id}", responses=openapi.ok(openapi.ApiKeyObject, 404))
async def patch_key(
    key_id: str, body: KeyUpdate, request: Request, services: ServicesDep, principal: AdminDep
) -> dict[str, Any]:
    await _load(services, key_id)
    values = body.model_dump(exclude_unset=True)
    if values:
        async with services.sessions() as session, session.begin():
            await update_key(session, key_id=key_id, values=values)
        _changed(request, key_id)
    return key_view(await _load(services, key_id))


@router.delete("/api/v1/keys/{key_id}", responses=openapi.ok(openapi.ApiKeyRevoked, 404))
async def revoke_key(
    key_id: str, request: Request, services: ServicesDep, principal: AdminDep
) -> dict[str, Any]:
    await _load(services, key_id)
    async with services.sessions() as session, session.begin():
        await update_key(session, key_id=key_id, values={"state": "revoked"})
    _changed(request, key_id)
    return {**key_view(await _load(services, key_id)), "deleted": True}
