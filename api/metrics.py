"""`GET /metrics`: Prometheus exposition, summed over every gunicorn worker;
`GET /metrics/cache`: the response cache's numbers as JSON.

Both show deployment names, costs and security counters, so outside
development they need `Authorization: Bearer <METRICS_TOKEN>` (or the admin
key, or an admin JWT) unless METRICS_PUBLIC=true says they are public; in
development they are open until METRICS_TOKEN is set. Wrong credentials count
towards the client address's failed-authentication throttle.

Reading the multiprocess files is blocking I/O, so it runs in the thread pool
(`/metrics/cache` is a plain `def` for that); `/metrics` first runs the (cached)
database health check, so `database_available` is as fresh as the scrape.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from api import bodies, openapi
from api.deps import client_ip, operator_access, presented_credential
from core.config import Settings
from core.container import ServicesDep
from core.errors import AuthenticationError
from core.observability.exposition import counter_totals, render_latest
from core.observability.metrics import SECURITY_EVENTS

router = APIRouter(tags=["metrics"])


def metrics_public(settings: Settings) -> bool:
    """Served without a credential: METRICS_PUBLIC=true, or development without
    METRICS_TOKEN."""
    return settings.metrics_public or (
        settings.metrics_token is None and settings.environment == "development"
    )


async def require_metrics_token(request: Request) -> None:
    if metrics_public(request.app.state.settings):
        return
    throttle = request.app.state.services.auth.throttle
    address = client_ip(request)
    if throttle is not None:
        await throttle.check(address)
    if operator_access(request):
        return
    SECURITY_EVENTS.labels("metrics_auth_failed").inc()
    if throttle is not None and presented_credential(request):
        await throttle.failed(address)
    raise AuthenticationError(
        "Scraping /metrics requires the metrics token (METRICS_TOKEN) or the admin key "
        "as 'Authorization: Bearer <token>'.",
        headers={"WWW-Authenticate": "Bearer"},
    )


@router.get("/metrics", include_in_schema=False, dependencies=[Depends(require_metrics_token)])
async def prometheus_metrics(services: ServicesDep) -> Response:
    await services.health.check_database()
    body, content_type = await run_in_threadpool(render_latest)
    return Response(body, media_type=content_type, headers={"Cache-Control": "no-store"})


@router.get(
    "/metrics/cache",
    dependencies=[Depends(require_metrics_token)],
    responses=openapi.ok(bodies.CacheStats, 401, 429),
)
def cache_metrics(services: ServicesDep) -> dict[str, Any]:
    totals = counter_totals("redis_cache_hits", "redis_cache_misses")
    hits, misses = totals["redis_cache_hits"], totals["redis_cache_misses"]
    stats = services.cache.stats()
    return {
        "enabled": stats["enabled"],
        "backend": stats["backend"],
        "redis_state": stats["redis_state"],
        "hit_rate": round(hits / (hits + misses), 4) if hits + misses else 0.0,
        "total_hits": int(hits),
        "total_misses": int(misses),
        "connection_pool_size": stats["connection_pool_size"],
        "local_entries": stats["local_entries"],
        "ttl_seconds": stats["ttl_seconds"],
    }
