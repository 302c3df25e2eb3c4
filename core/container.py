"""The live resources of a process, built in layers and closed in reverse.

Each layer is an async context manager on an `AsyncExitStack`: whatever a layer
opened is closed when a later step fails, and everything closes in the reverse
order of opening when the process stops.

- `open_infrastructure`: the database engine and sessions, Redis.
- `open_gateway`: the router, cache, usage recorder, rate limiter, spend and the
  completion service: what any process that calls a model needs (the web
  workers, and the background worker when jobs land); and the process's
  tracing when an OTLP endpoint is set (built here, after gunicorn's fork).
- `open_jobs`: the job service (submit, read, cancel) over the queue, and the
  runner; it also serves the queue in this process when jobs run in-process
  (the embedded SQLite default). `python -m worker` builds infrastructure,
  gateway and jobs, never the web edge.
- `open_web_edge`: what only the HTTP/WebSocket edge needs: auth, key
  management, the health monitor.
- `open_services`: all of them, for a web process.

How the process is run is passed in (`Process`), never sniffed from the
environment: gunicorn's worker says so from gunicorn's own configuration
(core.serving.worker), the embedded server and tests take the default.

Routes reach the result through `ServicesDep`; nothing keeps these resources in
module globals, so several apps (tests) can live in one process and nothing
opens at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, Literal

import structlog
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from core.auth.authenticator import Authenticator
from core.auth.keys import KeyService
from core.auth.tickets import TicketService
from core.config import Settings
from core.gateway.cache import ResponseCache
from core.gateway.completions import CompletionService
from core.gateway.usage import UsageRecorder
from core.infra.health import HealthMonitor, Lifecycle, RecentTraffic
from core.infra.redis import ResilientRedis
from core.jobs.heartbeat import WorkerMonitor, in_process_report
from core.jobs.queue import Delivery, InProcessQueue, JobQueue, PostgresQueue
from core.jobs.registry import JobResources, job_catalog
from core.jobs.runner import JobRunner
from core.jobs.service import JobService
from core.jobs.signals import JobSignals, SignallingJobRepository
from core.jobs.types import JobTypes
from core.limits.admission import Admission
from core.limits.budget import SpendTracker
from core.limits.rate_limit import FailureThrottle, RateLimiter
from core.llm.factory import build_router
from core.llm.router import Router
from core.observability.tracing import Tracing
from database.engine import EngineOptions, asyncpg_dsn, create_engine, session_factory
from database.repositories.jobs import JobRepository
from database.repositories.keys import KeyRepository
from database.repositories.usage import UsageRepository
from database.schema import head_revisions

log = structlog.get_logger("skygate.container")


@dataclass(frozen=True, slots=True)
class Process:
    """How this process is run. `workers` processes of the same kind on one
    instance split a rate limit's local share when Redis is away."""

    kind: Literal["embedded", "gunicorn", "worker"] = "embedded"
    workers: int = 1

    @property
    def announces(self) -> bool:
        """Whether start-up warnings are this process's to give (under gunicorn
        the master gives them once, not every worker)."""
        return self.kind != "gunicorn"


@dataclass(slots=True)
class Infrastructure:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    redis: ResilientRedis


@dataclass(slots=True)
class Gateway:
    router: Router
    demo: bool
    cache: ResponseCache
    usage: UsageRecorder
    limiter: RateLimiter
    spend: SpendTracker
    completions: CompletionService


@dataclass(slots=True)
class Jobs:
    service: JobService
    runner: JobRunner
    queue: JobQueue
    in_process: bool  # this process serves the queue itself


@dataclass(slots=True)
class WebEdge:
    auth: Authenticator
    keys: KeyService
    health: HealthMonitor
    tickets: TicketService


@dataclass(slots=True)
class Services:
    """Everything a web process serves with (the layers' parts, flat for routes)."""

    settings: Settings
    lifecycle: Lifecycle
    process: Process
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    redis: ResilientRedis
    router: Router
    demo: bool
    cache: ResponseCache
    usage: UsageRecorder
    limiter: RateLimiter
    spend: SpendTracker
    completions: CompletionService
    jobs: Jobs
    auth: Authenticator
    keys: KeyService
    health: HealthMonitor
    tickets: TicketService


@asynccontextmanager
async def open_infrastructure(settings: Settings) -> AsyncIterator[Infrastructure]:
    async with AsyncExitStack() as stack:
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
        stack.push_async_callback(engine.dispose)
        redis = ResilientRedis(
            settings.redis_url,
            max_connections=settings.redis_max_connections,
            socket_timeout=settings.redis_socket_timeout,
            failure_threshold=settings.redis_failure_threshold,
            retry_seconds=settings.redis_retry_seconds,
        )
        stack.push_async_callback(redis.close)
        yield Infrastructure(
            settings=settings, engine=engine, sessions=session_factory(engine), redis=redis
        )


@asynccontextmanager
async def open_gateway(
    infra: Infrastructure, process: Process, tracing: Tracing | None = None
) -> AsyncIterator[Gateway]:
    """`tracing`: the web app's (its middleware shares it); else this process's own."""
    settings = infra.settings
    async with AsyncExitStack() as stack:
        # First in, last out: the spans of everything closing below are flushed.
        tracing = await stack.enter_async_context((tracing or Tracing(settings)).running())
        router, demo = build_router(settings, tracer=tracing.tracer)
        stack.push_async_callback(router.close)
        cache = ResponseCache(
            infra.redis, enabled=settings.enable_cache, ttl=settings.llm_cache_ttl
        )
        usage_rows = UsageRepository(infra.sessions)
        usage = UsageRecorder(usage_rows, flush_seconds=settings.usage_flush_seconds)
        usage.start()
        stack.push_async_callback(usage.close)
        # With Redis away, each of this instance's processes takes its share of a limit.
        limiter = RateLimiter(infra.redis, share=process.workers * settings.instance_count)
        spend = SpendTracker(usage_rows)
        stack.push_async_callback(spend.close)
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
        stack.push_async_callback(completions.close)
        yield Gateway(
            router=router,
            demo=demo,
            cache=cache,
            usage=usage,
            limiter=limiter,
            spend=spend,
            completions=completions,
        )


@asynccontextmanager
async def open_jobs(
    infra: Infrastructure,
    gateway: Gateway,
    process: Process,
    types: JobTypes | None = None,
) -> AsyncIterator[Jobs]:
    settings = infra.settings
    types = types if types is not None else job_catalog(settings)[0]
    signals = JobSignals(infra.redis)
    repository = SignallingJobRepository(infra.sessions, signals)
    queue: JobQueue = (
        InProcessQueue()
        if settings.is_sqlite
        else PostgresQueue(
            asyncpg_dsn(settings.database_url),
            dequeue_timeout=timedelta(seconds=settings.job_dequeue_timeout_seconds),
            heartbeat_timeout=timedelta(seconds=settings.job_heartbeat_timeout_seconds),
            concurrency=settings.worker_concurrency,
        )
    )
    runner = JobRunner(
        repository,
        types,
        services=JobResources(settings=settings, gateway=gateway, jobs=repository),
    )
    service = JobService(repository, queue, types, signals)
    in_process = process.kind != "worker" and settings.runs_jobs_in_process
    async with AsyncExitStack() as stack:
        if process.kind != "worker":  # where the watchers (SSE streams) are
            signals.start()
            stack.push_async_callback(signals.close)
        if in_process:
            stop = asyncio.Event()
            serving = asyncio.create_task(queue.serve(runner, types, stop=stop), name="jobs")

            async def stop_serving() -> None:
                stop.set()  # no new job; the running ones finish (or resume at next start)
                await serving

            stack.push_async_callback(stop_serving)
            if not queue.durable:
                await _requeue_active(repository, queue)
        yield Jobs(service=service, runner=runner, queue=queue, in_process=in_process)


async def _requeue_active(repository: JobRepository, queue: JobQueue) -> None:
    """Put back on an in-memory queue what a restart left queued or running. A
    database that is not migrated yet (or away) costs the jobs, never the start."""
    try:
        active = await repository.active()
    except Exception as exc:
        log.warning("jobs_not_requeued", error=type(exc).__name__)
        return
    for job_id, job_type in active:
        await queue.enqueue(Delivery(job_id=job_id, type=job_type))


@asynccontextmanager
async def open_web_edge(
    infra: Infrastructure, gateway: Gateway, lifecycle: Lifecycle
) -> AsyncIterator[WebEdge]:
    settings = infra.settings
    auth = Authenticator(
        KeyRepository(infra.sessions),
        admin_key=settings.admin_api_key.get_secret_value() if settings.admin_api_key else None,
        jwt_secret=settings.jwt_secret_key.get_secret_value() if settings.jwt_secret_key else None,
        enabled=settings.auth_enabled,
        cache_seconds=settings.auth_cache_seconds,
        throttle=FailureThrottle(gateway.limiter, per_minute=settings.auth_failures_per_minute),
    )
    keys = KeyService(KeyRepository(infra.sessions), auth=auth, spend=gateway.spend)
    health = HealthMonitor(
        engine=infra.engine,
        redis=infra.redis,
        lifecycle=lifecycle,
        heads=head_revisions(),
        traffic=RecentTraffic() if settings.enable_metrics else None,
    )
    health.add_reporter("cache", lambda: _cache_report(gateway.cache))
    health.add_reporter("rate_limiter", lambda: _limiter_report(gateway.limiter))
    health.add_reporter("llm_providers", lambda: _providers_report(gateway.router, gateway.demo))
    async with AsyncExitStack() as stack:
        # Workers (core.jobs.heartbeat): read in the background, never on a probe's time.
        if settings.runs_jobs_in_process:
            jobs_report = in_process_report(durable=not settings.is_sqlite)
            health.add_reporter("workers", lambda: jobs_report)
        else:
            monitor = WorkerMonitor(
                redis=infra.redis,
                repository=JobRepository(infra.sessions),
                interval=settings.worker_heartbeat_seconds,
            )
            await monitor.refresh()
            watching = asyncio.create_task(monitor.run(), name="worker-monitor")

            async def stop_watching() -> None:
                watching.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watching

            stack.push_async_callback(stop_watching)
            health.add_reporter("workers", lambda: monitor.report)
        yield WebEdge(auth=auth, keys=keys, health=health, tickets=TicketService(infra.redis))


@asynccontextmanager
async def open_services(
    settings: Settings,
    lifecycle: Lifecycle,
    process: Process,
    job_types: JobTypes | None = None,
    tracing: Tracing | None = None,
) -> AsyncIterator[Services]:
    async with (
        open_infrastructure(settings) as infra,
        open_gateway(infra, process, tracing) as gateway,
        open_jobs(infra, gateway, process, job_types) as jobs,
        open_web_edge(infra, gateway, lifecycle) as edge,
    ):
        yield Services(
            settings=settings,
            lifecycle=lifecycle,
            process=process,
            engine=infra.engine,
            sessions=infra.sessions,
            redis=infra.redis,
            router=gateway.router,
            demo=gateway.demo,
            cache=gateway.cache,
            usage=gateway.usage,
            limiter=gateway.limiter,
            spend=gateway.spend,
            completions=gateway.completions,
            jobs=jobs,
            auth=edge.auth,
            keys=edge.keys,
            health=edge.health,
            tickets=edge.tickets,
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
    cooling_ids = set(cooling)
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
        # Each deployment's state in the worker that answered (breakers are per worker).
        "deployment_states": [
            {
                "id": d.id,
                "group": d.group,
                "provider": d.kind,
                "model": d.model,
                "cooling_down": d.id in cooling_ids,
            }
            for d in deployments
        ],
    }


async def get_services(request: Request) -> Services:
    """The live services (async: FastAPI runs a plain `def` dependency in a thread)."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
