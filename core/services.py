"""The typed container of live resources, opened and closed in the lifespan.

Routes reach it through `ServicesDep`; nothing keeps these resources in module
globals, so several apps (tests) can live in one process and nothing opens at
import time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from core import metrics
from core.admission import Admission
from core.auth import Authenticator
from core.budget import SpendTracker
from core.cache import ResponseCache
from core.completions import CompletionService
from core.config import Settings
from core.health import HealthMonitor, Lifecycle
from core.llm.factory import build_router
from core.llm.router import Router
from core.rate_limit import FailureThrottle, RateLimiter
from core.redis import ResilientRedis
from core.usage import UsageRecorder
from database.engine import EngineOptions, create_engine, session_factory
from database.schema import head_revisions


@dataclass(slots=True)
class Services:
    settings: Settings
    lifecycle: Lifecycle
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    redis: ResilientRedis
    health: HealthMonitor
    router: Router
    demo: bool
    cache: ResponseCache
    usage: UsageRecorder
    completions: CompletionService
    auth: Authenticator
    limiter: RateLimiter
    spend: SpendTracker

    async def close(self) -> None:
        await self.completions.close()
        await self.spend.close()
        await self.usage.close()
        await self.router.close()
        await self.redis.close()
        await self.engine.dispose()


async def open_services(settings: Settings, lifecycle: Lifecycle) -> Services:
    engine = create_engine(
        EngineOptions(
            url=settings.database_url,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            pool_timeout=settings.db_pool_timeout,
            pool_recycle=settings.db_pool_recycle,
            pgbouncer=settings.database_pgbouncer,
        )
    )
    redis = ResilientRedis(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        socket_timeout=settings.redis_socket_timeout,
        failure_threshold=settings.redis_failure_threshold,
        retry_seconds=settings.redis_retry_seconds,
    )
    router, demo = build_router(settings)
    cache = ResponseCache(redis, enabled=settings.enable_cache, ttl=settings.llm_cache_ttl)
    sessions = session_factory(engine)
    usage = UsageRecorder(sessions, flush_seconds=settings.usage_flush_seconds)
    usage.start()
    # Under gunicorn (which exports SKYGATE_MASTER_PID) each of WEB_CONCURRENCY workers
    # takes its share of a limit when Redis is away; the embedded server is one process.
    workers = settings.web_concurrency if os.environ.get(metrics.MASTER_PID_ENV) else 1
    limiter = RateLimiter(redis, share=workers * settings.instance_count)
    spend = SpendTracker(sessions)
    auth = Authenticator(
        sessions,
        admin_key=settings.admin_api_key.get_secret_value() if settings.admin_api_key else None,
        jwt_secret=settings.jwt_secret_key.get_secret_value() if settings.jwt_secret_key else None,
        enabled=settings.auth_enabled,
        cache_seconds=settings.auth_cache_seconds,
        throttle=FailureThrottle(limiter, per_minute=settings.auth_failures_per_minute),
    )
    completions = CompletionService(
        router=router,
        cache=cache,
        usage=usage,
        heartbeat_seconds=settings.stream_heartbeat_seconds,
        admission=Admission(
            limiter=limiter,
            spend=spend,
            default_tokens_per_minute=settings.rate_limit_tokens_per_minute,
        ),
        demo=demo,
    )
    health = HealthMonitor(engine=engine, redis=redis, lifecycle=lifecycle, heads=head_revisions())
    health.add_reporter("cache", lambda: _cache_report(cache))
    health.add_reporter("rate_limiter", lambda: _limiter_report(limiter))
    health.add_reporter("llm_providers", lambda: _providers_report(router, demo))
    return Services(
        settings=settings,
        lifecycle=lifecycle,
        engine=engine,
        sessions=sessions,
        redis=redis,
        health=health,
        router=router,
        demo=demo,
        cache=cache,
        usage=usage,
        completions=completions,
        auth=auth,
        limiter=limiter,
        spend=spend,
    )


def _limiter_report(limiter: RateLimiter) -> dict[str, Any]:
    backend = limiter.backend
    degraded = limiter.distributed and backend == "local"
    return {
        "status": "degraded" if degraded else "ok",
        "latency_ms": None,
        "backend": backend,
        "local_share": limiter.share,
    }


def _cache_report(cache: ResponseCache) -> dict[str, Any]:
    if not cache.enabled:
        return {"status": "disabled", "latency_ms": None, "backend": "disabled"}
    backend = cache.backend
    degraded = cache.redis.configured and backend == "memory"
    return {
        "status": "degraded" if degraded else "ok",
        "latency_ms": None,
        "backend": backend,
        "hit_rate": cache.hit_rate,
    }


def _providers_report(router: Router, demo: bool) -> dict[str, Any]:
    deployments = router.all_deployments()
    cooling = router.cooling_down()
    status = "ok"
    if deployments and len(cooling) == len(deployments):
        status = "unavailable"
    elif cooling:
        status = "degraded"
    return {
        "status": status,
        "latency_ms": None,
        "demo": demo,
        "models": router.public_names(),
        "deployments": len(deployments),
        "cooling_down": cooling,
    }


async def get_services(request: Request) -> Services:
    """The live services (async: FastAPI runs a plain `def` dependency in a thread)."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
