"""Readiness and deep health, computed at most once per short interval.

`/ready` answers "send me traffic?": the database answers, migrations are at
head, the process is not draining. Redis never makes it fail — Skygate serves
without Redis. `/health` reports each dependency's state and latency for
humans and dashboards; the details beyond those two (backends, model groups,
deployments cooling down, recent traffic) are for operators only
(`public_services`). Both results are cached briefly and computed by one caller
at a time, so a probe storm costs one database round trip per interval.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from core.infra.redis import ResilientRedis
from core.observability import exposition, metrics
from database.schema import current_revisions

DB_TIMEOUT_SECONDS = 2.0
PUBLIC_FIELDS = ("status", "latency_ms")


def public_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each service's state and latency only: what a probe or a stranger may see
    (model groups and deployment names tell an attacker what to aim at)."""
    return {
        name: {field: report.get(field) for field in PUBLIC_FIELDS}
        for name, report in services.items()
    }


@dataclass(frozen=True, slots=True)
class TrafficTotals:
    """The instance's counters at one moment: API requests by class, cache lookups."""

    at: float  # time.monotonic()
    requests: float
    client_errors: float
    server_errors: float
    cache_hits: float
    cache_misses: float


API_ROUTES = "/api/"  # traffic is the API's: probes, /metrics and /status polling are not


def traffic_totals(at: float) -> TrafficTotals:
    """Read from the counters the access middleware and the response cache keep."""
    requests = client_errors = server_errors = hits = misses = 0.0
    for sample in exposition.counter_samples(
        "http_requests", "redis_cache_hits", "redis_cache_misses"
    ):
        if sample.name == "redis_cache_hits_total":
            hits += sample.value
        elif sample.name == "redis_cache_misses_total":
            misses += sample.value
        elif sample.labels.get("route", "").startswith(API_ROUTES):
            requests += sample.value
            status = sample.labels.get("status", "")
            if status.startswith("5"):
                server_errors += sample.value
            elif status.startswith("4"):
                client_errors += sample.value
    return TrafficTotals(at, requests, client_errors, server_errors, hits, misses)


class RecentTraffic:
    """API request and error rates and the cache hit ratio over about the last
    `window` seconds, for `/health`'s detailed view.

    Deltas between readings of the Prometheus counters that already exist, taken
    when asked (at most one per `every` seconds, the last `window` seconds kept):
    nothing added to the request path, no background task. Under gunicorn the
    counters are summed over every worker of the instance (the multiprocess
    directory), so whichever worker answers, the rate is the instance's, not that
    worker's own; other instances are not in it (Prometheus is the fleet's view).
    After a pause between reads the window is shorter; `window_seconds` says what
    it is.
    """

    def __init__(
        self,
        *,
        window: float = 60.0,
        every: float = 2.0,
        read: Callable[[float], TrafficTotals] = traffic_totals,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window = window
        self.every = every
        self.read = read
        self.clock = clock
        self.samples: deque[TrafficTotals] = deque([read(clock())])  # from start-up on

    def report(self) -> dict[str, Any]:
        now = self.clock()
        if now - self.samples[-1].at >= self.every:
            self.samples.append(self.read(now))
        latest = self.samples[-1]
        while len(self.samples) > 2 and self.samples[1].at <= latest.at - self.window:
            self.samples.popleft()
        # The oldest reading within the window; after a pause, the one before it.
        first = next((s for s in self.samples if s.at >= latest.at - self.window), latest)
        if first is latest and len(self.samples) > 1:
            first = self.samples[-2]
        span = latest.at - first.at
        requests = max(latest.requests - first.requests, 0.0)
        server = max(latest.server_errors - first.server_errors, 0.0)
        hits = max(latest.cache_hits - first.cache_hits, 0.0)
        lookups = hits + max(latest.cache_misses - first.cache_misses, 0.0)

        def per_second(count: float) -> float | None:
            return round(count / span, 3) if span > 0 else None

        return {
            "scope": "instance",
            "window_seconds": round(span, 1),
            "requests_per_second": per_second(requests),
            "client_errors_per_second": per_second(
                max(latest.client_errors - first.client_errors, 0.0)
            ),
            "server_errors_per_second": per_second(server),
            "error_ratio": round(server / requests, 4) if requests else None,
            "cache_hit_ratio": round(hits / lookups, 4) if lookups else None,
        }


@dataclass(slots=True)
class Lifecycle:
    """Per-process serving state: when it started, whether it is draining, and an
    event to await its stop (`stopping`)."""

    started_at: float = field(default_factory=time.monotonic)
    draining: bool = False  # SIGTERM received: not ready, still serving
    closing: bool = False  # about to stop (drain or recycle): answer with Connection: close
    _stop_begun: bool = field(default=False, init=False, repr=False, compare=False)
    _stopping: asyncio.Event | None = field(default=None, init=False, repr=False, compare=False)
    _loop: asyncio.AbstractEventLoop | None = field(
        default=None, init=False, repr=False, compare=False
    )

    @property
    def uptime_seconds(self) -> float:
        return round(time.monotonic() - self.started_at, 3)

    @property
    def stopping(self) -> asyncio.Event:
        """Set once this process is about to stop serving: a drain began (SIGTERM) or
        the server is shutting down (a `max_requests` recycle, the drain's end). For a
        long-lived connection (a WebSocket) to await, so it can say goodbye in its own
        words (`server.draining`, close 1012) before the server closes it bluntly
        (~1 s after shutdown begins). Made on first use, bound to the running loop, so
        each app (tests build several, each in its own loop) has its own."""
        event = self._stopping
        if event is None:
            self._loop = asyncio.get_running_loop()
            event = self._stopping = asyncio.Event()
            if self._stop_begun:
                event.set()
        return event

    def begin_stopping(self) -> None:
        """Set `stopping`. Safe from a signal handler (gunicorn's SIGTERM reaches
        uvicorn's `handle_exit` as one) or another thread: the event is set by its
        own loop, which `call_soon_threadsafe` also wakes."""
        self._stop_begun = True
        event, loop = self._stopping, self._loop
        if event is not None and loop is not None and not event.is_set():
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that loop is closed: nothing waits on the event any more
                pass


@dataclass(frozen=True, slots=True)
class DatabaseStatus:
    reachable: bool
    latency_ms: float | None
    at_head: bool
    current: frozenset[str]
    error: str | None = None


class TTLCache:
    """One value, recomputed by a single caller once it is older than `ttl`."""

    def __init__(self, ttl: float, compute: Callable[[], Awaitable[Any]]) -> None:
        self.ttl = ttl
        self.compute = compute
        self.value: Any = None
        self.at = float("-inf")
        self.lock = asyncio.Lock()

    async def get(self) -> Any:
        if time.monotonic() - self.at < self.ttl:
            return self.value
        async with self.lock:
            if time.monotonic() - self.at >= self.ttl:
                self.value = await self.compute()
                self.at = time.monotonic()
        return self.value


class HealthMonitor:
    """Checks the database and Redis; extra components register a reporter."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        redis: ResilientRedis,
        lifecycle: Lifecycle,
        heads: frozenset[str],
        ttl: float = 1.0,
        traffic: RecentTraffic | None = None,
    ) -> None:
        self.engine = engine
        self.redis = redis
        self.lifecycle = lifecycle
        self.heads = heads
        self.traffic = traffic  # None when metrics are off (nothing counts requests)
        self.reporters: dict[str, Callable[[], dict[str, Any]]] = {}
        self._database = TTLCache(ttl, self._check_database)
        self._redis = TTLCache(ttl, self.redis.ping)

    def add_reporter(self, name: str, reporter: Callable[[], dict[str, Any]]) -> None:
        self.reporters[name] = reporter

    def recent_traffic(self) -> dict[str, Any] | None:
        """For operators only: rates say how busy and how broken the gateway is."""
        return self.traffic.report() if self.traffic is not None else None

    async def _check_database(self) -> DatabaseStatus:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(DB_TIMEOUT_SECONDS):
                async with self.engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
                latency = round((time.perf_counter() - started) * 1000, 2)
                current = await current_revisions(self.engine)
        except Exception as exc:  # any driver or network failure means "unreachable"
            metrics.DATABASE_STATE.labels(self.engine.dialect.name).set(0)
            return DatabaseStatus(False, None, False, frozenset(), type(exc).__name__)
        metrics.DATABASE_STATE.labels(self.engine.dialect.name).set(1)
        return DatabaseStatus(True, latency, current == self.heads, current)

    async def check_database(self) -> DatabaseStatus:
        """The database's state (cached like the probes'), which also sets the
        `database_available` gauge: each `/metrics` scrape calls it, so the gauge is
        as fresh as the scrape without a background task."""
        status: DatabaseStatus = await self._database.get()
        return status

    async def readiness(self) -> tuple[bool, list[str]]:
        reasons = []
        if self.lifecycle.draining:
            reasons.append("shutting down")
        db: DatabaseStatus = await self._database.get()
        if not db.reachable:
            reasons.append(f"database unreachable ({db.error})")
        elif not db.at_head:
            at = ",".join(sorted(db.current)) or "none"
            reasons.append(
                f"database migrations not at head (at {at}, head {','.join(sorted(self.heads))})"
            )
        return not reasons, reasons

    async def health(self) -> dict[str, Any]:
        db: DatabaseStatus = await self._database.get()
        redis_state, redis_latency = await self._redis.get()
        services: dict[str, dict[str, Any]] = {
            "api": {"status": "draining" if self.lifecycle.draining else "ok", "latency_ms": 0.0},
            "database": {
                "status": "ok"
                if db.reachable and db.at_head
                else ("migrations_pending" if db.reachable else "unavailable"),
                "latency_ms": db.latency_ms,
                "backend": self.engine.dialect.name,
            },
            "redis": {"status": redis_state, "latency_ms": redis_latency},
        }
        for name, reporter in self.reporters.items():
            services[name] = reporter()
        if not (db.reachable and db.at_head):
            status = "unhealthy"
        elif (
            redis_state == "degraded"
            or self.lifecycle.draining
            or any(s.get("status") == "degraded" for s in services.values())
        ):
            status = "degraded"
        else:
            status = "healthy"
        return {"status": status, "services": services}
