"""Probes: `/live` (no I/O), `/ready` (can serve traffic), `/health` (deep status).

Never refused, never rate limited, cheap by construction: readiness and health
results are cached for a second by `core.infra.health.HealthMonitor`. `/health`
gives everyone each service's state and latency; the details (backends, model
groups, deployments cooling down, recent traffic) only to a caller presenting
the metrics token, the admin key or an admin JWT — anyone else, a wrong
credential included, gets the short form, never a 401 (probes carry no
credentials).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api import bodies, openapi
from api.deps import client_ip, operator_access, presented_credential
from core.container import Services, ServicesDep
from core.errors import RateLimitError
from core.infra.health import public_services

router = APIRouter(tags=["probes"])
NO_STORE = {"Cache-Control": "no-store"}


@router.get("/live", responses=openapi.ok(bodies.Live))
async def live() -> JSONResponse:
    return JSONResponse({"alive": True}, headers=NO_STORE)


@router.get("/ready", responses={**openapi.ok(bodies.Ready), **openapi.unavailable(bodies.Ready)})
async def ready(services: ServicesDep) -> JSONResponse:
    ok, reasons = await services.health.readiness()
    if ok:
        return JSONResponse({"ready": True}, headers=NO_STORE)
    return JSONResponse({"ready": False, "reasons": reasons}, status_code=503, headers=NO_STORE)


async def _detailed(request: Request, services: ServicesDep) -> bool:
    """Whether to show the details; a wrong credential counts as a failed
    authentication (the long form must not be an oracle for guessing tokens)."""
    if not presented_credential(request):
        return False
    throttle = services.auth.throttle
    address = client_ip(request)
    try:
        if throttle is not None:
            await throttle.check(address)
    except RateLimitError:
        return False
    if operator_access(request):
        return True
    if throttle is not None:
        await throttle.failed(address)
    return False


@router.get(
    "/health", responses={**openapi.ok(bodies.Health), **openapi.unavailable(bodies.Health)}
)
async def health(request: Request, services: ServicesDep) -> JSONResponse:
    body = await health_body(request, services, detailed=await _detailed(request, services))
    status = 503 if body["status"] == "unhealthy" else 200
    return JSONResponse(body, status_code=status, headers=NO_STORE)


async def health_body(request: Request, services: Services, *, detailed: bool) -> dict[str, Any]:
    """`/health`'s answer; also what `/status` renders (always the short form)."""
    report: dict[str, Any] = await services.health.health()
    settings = services.settings
    body = {
        "status": report["status"],
        "version": settings.version,
        "environment": settings.environment,
        "uptime_seconds": services.lifecycle.uptime_seconds,
        "agents": request.app.state.agents.monitor.counts,
        "services": report["services"] if detailed else public_services(report["services"]),
    }
    if detailed:
        body["traffic"] = services.health.recent_traffic()
    return body
