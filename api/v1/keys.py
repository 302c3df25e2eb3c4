"""Admin endpoints for API keys: create (the secret is shown once), list, read,
update and revoke. Admin key or admin JWT only.

What a key may hold, and how it is shown, is `core.auth.key_schema` (shared with
the CLI, `python -m skygate keys`): a reserved tenant name is refused with 422, and a
key's tenant cannot be changed after creation (PATCH refuses `tenant`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from api import bodies, openapi
from api.deps import AdminDep
from core.auth.key_schema import KeyCreate, KeyUpdate, key_view
from core.container import ServicesDep

router = APIRouter(tags=["keys"])


@router.post(
    "/api/v1/keys", status_code=201, responses=openapi.ok(bodies.ApiKeyCreated, status=201)
)
async def create_key(
    body: KeyCreate, services: ServicesDep, principal: AdminDep, response: Response
) -> dict[str, Any]:
    created = await services.keys.create(**body.model_dump())
    response.headers["Cache-Control"] = "no-store"
    return {**key_view(created.row), "key": created.secret}


@router.get("/api/v1/keys", responses=openapi.ok(bodies.ApiKeyList))
async def get_keys(
    services: ServicesDep, principal: AdminDep, tenant: str | None = None
) -> dict[str, Any]:
    rows = await services.keys.list(tenant=tenant)
    return {"object": "list", "data": [key_view(row) for row in rows]}


@router.get("/api/v1/keys/{key_id}", responses=openapi.ok(bodies.ApiKeyObject, 404))
async def get_key(key_id: str, services: ServicesDep, principal: AdminDep) -> dict[str, Any]:
    return key_view(await services.keys.get(key_id))


@router.patch("/api/v1/keys/{key_id}", responses=openapi.ok(bodies.ApiKeyObject, 404))
async def patch_key(
    key_id: str, body: KeyUpdate, services: ServicesDep, principal: AdminDep
) -> dict[str, Any]:
    return key_view(await services.keys.update(key_id, **body.model_dump(exclude_unset=True)))


@router.delete("/api/v1/keys/{key_id}", responses=openapi.ok(bodies.ApiKeyRevoked, 404))
async def revoke_key(key_id: str, services: ServicesDep, principal: AdminDep) -> dict[str, Any]:
    return {**key_view(await services.keys.revoke(key_id)), "deleted": True}
