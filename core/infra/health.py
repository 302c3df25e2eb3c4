"""Readiness and deep health, computed at most once per short interval.

`/ready` answers "send me traffic?": the database answers, migrations are at
head, the process is not draining. Redis never makes it fail — Skygate serves
without Redis. `/health` reports each dependency's state and latency for
humans and dashboards; the details beyond those two (backends, model groups,
deployments cooling down) are for operators only (`public_services`). Both
results are cached briefly and computed by one caller at a time, so a probe
storm costs one database round trip per interval.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from core.infra.redis import ResilientRedis
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
    ) -> None:
        self.engine = engine
        self.redis = redis
        self.lifecycle = lifecycle
        self.heads = heads
        self.reporters: dict[str, Callable[[], dict[str, Any]]] = {}
        self._database = TTLCache(ttl, self._check_database)
        self._redis = TTLCache(ttl, self.redis.ping)

    def add_reporter(self, name: str, reporter: Callable[[], dict[str, Any]]) -> None:
        self.reporters[name] = reporter

    async def _check_database(self) -> DatabaseStatus:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(DB_TIMEOUT_SECONDS):
                async with self.engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
                latency = round((time.perf_counter() - started) * 1000, 2)
                current = await current_revisions(self.engine)
        except Exception as exc:  # any driver or network failure means "unreachable"
            return DatabaseStatus(False, None, False, frozenset(), type(exc).__name__)
        return DatabaseStatus(True, latency, current == self.heads, current)

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
