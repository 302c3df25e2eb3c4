"""Probes: `/live` (no I/O), `/ready` (can serve traffic), `/health` (deep status).

Never authenticated, never rate limited, cheap by construction: readiness and
health results are cached for a second by `core.health.HealthMonitor`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from core.services import ServicesDep

router = APIRouter(tags=["probes"])
NO_STORE = {"Cache-Control": "no-store"}


@router.get("/live")
async def live() -> JSONResponse:
    return JSONResponse({"alive": True}, headers=NO_STORE)


@router.get("/ready")
async def ready(services: ServicesDep) -> JSONResponse:
    ok, reasons = await services.health.readiness()
    if ok:
        return JSONResponse({"ready": True}, headers=NO_STORE)
    return JSONResponse({"ready": False, "reasons": reasons}, status_code=503, headers=NO_STORE)


@router.get("/health")
async def health(services: ServicesDep) -> JSONResponse:
    report: dict[str, Any] = await services.health.health()
    settings = services.settings
    body = {
        "status": report["status"],
        "version": settings.version,
        "environment": settings.environment,
        "uptime_seconds": services.lifecycle.uptime_seconds,
        "services": report["services"],
    }
    status = 503 if report["status"] == "unhealthy" else 200
    return JSONResponse(body, status_code=status, headers=NO_STORE)
