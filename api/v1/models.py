"""`GET /api/v1/models` and `GET /api/v1/models/{id}`: exactly the public model names."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api import bodies, openapi
from api.deps import PrincipalDep
from core.container import ServicesDep
from core.errors import NotFoundError

router = APIRouter(tags=["llm"])
CREATED = 1_700_000_000  # a fixed timestamp: the list must not change between calls


def _model(services: Any, name: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": name,
        "object": "model",
        "created": CREATED,
        "owned_by": "skygate",
    }
    if services.demo:
        entry["owned_by"] = "skygate-demo"
        entry["description"] = "Offline demo model: deterministic, no provider, development only"
    return entry


@router.get("/api/v1/models", responses=openapi.ok(bodies.ModelList))
async def list_models(services: ServicesDep, principal: PrincipalDep) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [_model(services, name) for name in services.router.public_names()],
    }


@router.get("/api/v1/models/{model_id:path}", responses=openapi.ok(bodies.ModelObject, 404))
async def get_model(
    model_id: str, services: ServicesDep, principal: PrincipalDep
) -> dict[str, Any]:
    if model_id not in services.router.public_names():
        raise NotFoundError(
            f"The model '{model_id}' does not exist.", param="model", code="model_not_found"
        )
    return _model(services, model_id)
