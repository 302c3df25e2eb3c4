"""The typed container of live resources, opened and closed in the lifespan.

Routes reach it through `ServicesDep`; nothing keeps these resources in module
globals, so several apps (tests) can live in one process and nothing opens at
import time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from core.config import Settings
from core.health import HealthMonitor, Lifecycle
from core.redis import ResilientRedis
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

    async def close(self) -> None:
        await self.redis.close()
        await self.engine.dispose()


def _placeholder(detail: str) -> dict[str, Any]:
    return {"status": "not_configured", "latency_ms": None, "detail": detail}


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
    health = HealthMonitor(engine=engine, redis=redis, lifecycle=lifecycle, heads=head_revisions())
    health.add_reporter("cache", lambda: _placeholder("the response cache arrives with the router"))
    health.add_reporter("rate_limiter", lambda: _placeholder("rate limits arrive with auth"))
    health.add_reporter("llm_providers", lambda: _placeholder("providers arrive with the router"))
    return Services(
        settings=settings,
        lifecycle=lifecycle,
        engine=engine,
        sessions=session_factory(engine),
        redis=redis,
        health=health,
    )


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
