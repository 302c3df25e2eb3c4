"""`GET /`: the platform's name, version and a directory of its API."""

from __future__ import annotations

from fastapi import APIRouter

from api import bodies, openapi
from core.container import ServicesDep

router = APIRouter(tags=["meta"])


@router.get("/", responses=openapi.ok(bodies.Root))
async def root(services: ServicesDep) -> dict[str, object]:
    settings = services.settings
    return {
        "name": "Skygate",
        "description": "Enterprise API gateway for LLM traffic (OpenAI-compatible).",
        "version": settings.version,
        "environment": settings.environment,
        "endpoints": {
            "api": "/api/v1",
            "docs": "/docs" if not settings.is_production else None,
            "openapi": "/openapi.json" if not settings.is_production else None,
            "live": "/live",
            "ready": "/ready",
            "health": "/health",
            "status": "/status",
            "metrics": "/metrics" if settings.enable_metrics else None,
        },
    }
