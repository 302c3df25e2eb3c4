"""`GET /metrics`: Prometheus exposition, summed over every gunicorn worker;
`GET /metrics/cache`: the response cache's numbers as JSON.

Plain `def` handlers: reading the multiprocess files is blocking I/O, so
FastAPI runs them in the thread pool instead of on the event loop.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from core.errors import AuthenticationError
from core.metrics import SECURITY_EVENTS, counter_totals, render_latest
from core.security import constant_time_equals
from core.services import ServicesDep

router = APIRouter(tags=["metrics"])


async def require_metrics_token(request: Request) -> None:
    """With METRICS_TOKEN set, scrapes must send `Authorization: Bearer <token>`."""
    token = request.app.state.settings.metrics_token
    if token is None:
        return
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not constant_time_equals(
        presented.strip(), token.get_secret_value()
    ):
        SECURITY_EVENTS.labels("metrics_auth_failed").inc()
        raise AuthenticationError(
            "Scraping /metrics requires the metrics bearer token.",
            headers={"WWW-Authenticate": "Bearer"},
        )


@router.get("/metrics", include_in_schema=False, dependencies=[Depends(require_metrics_token)])
def prometheus_metrics() -> Response:
    body, content_type = render_latest()
    return Response(body, media_type=content_type, headers={"Cache-Control": "no-store"})


@router.get("/metrics/cache", dependencies=[Depends(require_metrics_token)])
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
