"""Worker heartbeats: written by `python -m worker`, read by the web's `/health`.

A worker beats every WORKER_HEARTBEAT_SECONDS: `worker:heartbeat:<name>` in
Redis (JSON: name, pid, started_at, running jobs, version; it expires after
three beats, so a dead worker's key goes away by itself). When Redis is away
(absent, or its circuit open) the beat goes to the `worker_heartbeats` table
instead, so the status stays truthful either way; the reader takes the newest
beat of each worker from both places.

The web side (`WorkerMonitor`) reads both every WORKER_HEARTBEAT_SECONDS in the
background, so `/health` (a sync reporter) never waits on Redis or the
database for it, and sets the queue-depth and heartbeat gauges /metrics shows.
No fresh worker makes the `workers` component `degraded`, never `/ready` 503:
jobs wait in the table and run when a worker comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import structlog

from core.infra.redis import ResilientRedis
from core.observability import metrics
from database.repositories.jobs import JobRepository

log = structlog.get_logger("skygate.worker")

KEY_PREFIX = "worker:heartbeat:"
STALE_BEATS = 3  # a worker is fresh while its last beat is younger than 3 beats
LISTED_FOR = timedelta(hours=1)  # /health lists workers seen this recently


def default_worker_name() -> str:
    return f"{os.uname().nodename}-{os.getpid()}"


class Heartbeat:
    """A worker's beat: Redis first, the database when Redis is away."""

    def __init__(
        self,
        *,
        name: str,
        redis: ResilientRedis,
        repository: JobRepository,
        interval: float,
        version: str,
        running: Callable[[], list[str]],
    ) -> None:
        self.name = name
        self.redis = redis
        self.repository = repository
        self.interval = interval
        self.version = version
        self.running = running
        self.started_at = datetime.now(UTC).isoformat()
        self.source: str | None = None  # where the last beat went (logged on change)

    @property
    def key(self) -> str:
        return KEY_PREFIX + self.name

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pid": os.getpid(),
            "started_at": self.started_at,
            "beat_at": datetime.now(UTC).isoformat(),
            "running": self.running(),
            "version": self.version,
        }

    async def beat(self) -> str:
        """One beat; where it went (`redis` or `database`)."""
        info = self.info()
        payload = orjson.dumps(info)
        ttl = max(1, round(self.interval * STALE_BEATS))

        async def store(client: Any) -> bool:
            return bool(await client.set(self.key, payload, ex=ttl))

        stored = await self.redis.run(store, False)
        source = "redis" if stored else "database"
        if not stored:
            await self.repository.beat(self.name, info)
        if source != self.source:
            log.info("worker_heartbeat_to", source=source, worker=self.name)
            self.source = source
        return source

    async def run(self, stop: asyncio.Event) -> None:
        """Beat until `stop`; then remove the Redis key (a stopped worker is not
        a live one)."""
        while not stop.is_set():
            try:
                await self.beat()
            except Exception as exc:  # both Redis and the database away: try next time
                log.warning("worker_heartbeat_failed", error=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)
        await self.redis.run(lambda r: r.delete(self.key), 0)


async def _redis_beats(redis: ResilientRedis) -> dict[str, dict[str, Any]] | None:
    """Every live worker's beat in Redis (SCAN, then MGET); None when unreadable."""

    async def read(client: Any) -> dict[str, dict[str, Any]]:
        keys = [key async for key in client.scan_iter(match=KEY_PREFIX + "*", count=100)]
        values = await client.mget(keys) if keys else []
        found = {}
        for value in values:
            if value:
                info = orjson.loads(value)
                found[info["name"]] = info
        return found

    if not redis.configured:
        return None
    result: dict[str, dict[str, Any]] | None = await redis.run(read, None)
    return result


class WorkerMonitor:
    """The web's view of the workers and the queue, refreshed in the background."""

    def __init__(
        self, *, redis: ResilientRedis, repository: JobRepository, interval: float
    ) -> None:
        self.redis = redis
        self.repository = repository
        self.interval = interval
        self.report: dict[str, Any] = {
            "status": "degraded",
            "latency_ms": None,
            "worker_ok": False,
            "durable": True,
            "workers": [],
            "queue": None,
        }

    async def refresh(self) -> dict[str, Any]:
        started = time.perf_counter()
        now = datetime.now(UTC)
        beats: dict[str, dict[str, Any]] = {}
        with contextlib.suppress(Exception):  # the database away: Redis's beats only
            for name, at in (await self.repository.beats(since=now - LISTED_FOR)).items():
                beats[name] = {"name": name, "beat_at": at.isoformat(), "source": "database"}
        for name, info in ((await _redis_beats(self.redis)) or {}).items():
            known = beats.get(name)
            if known is None or info["beat_at"] >= known["beat_at"]:
                beats[name] = {**info, "source": "redis"}
        queue: dict[str, Any] | None = None
        with contextlib.suppress(Exception):
            queue = await self.repository.stats(tenant=None)
        fresh_within = self.interval * STALE_BEATS
        workers = []
        for name, info in sorted(beats.items()):
            at = datetime.fromisoformat(info["beat_at"])
            age = round((now - at).total_seconds(), 3)
            workers.append({**info, "age_seconds": age, "fresh": age <= fresh_within})
            metrics.WORKER_LAST_BEAT.labels(name).set(at.timestamp())
            metrics.WORKER_BEAT_AGE.labels(name).set(age)
        if queue is not None:
            metrics.JOBS_QUEUE_DEPTH.labels("queued").set(queue["pending"])
            metrics.JOBS_QUEUE_DEPTH.labels("in_progress").set(queue["processing"])
            metrics.JOBS_OLDEST_QUEUED.set(queue["oldest_pending_seconds"] or 0.0)
        fresh = sum(1 for worker in workers if worker["fresh"])
        metrics.WORKERS_SEEN.labels("fresh").set(fresh)
        metrics.WORKERS_SEEN.labels("stale").set(len(workers) - fresh)
        worker_ok = fresh > 0
        self.report = {
            "status": "ok" if worker_ok else "degraded",
            "latency_ms": round((time.perf_counter() - started) * 1000, 2),
            "worker_ok": worker_ok,
            "durable": True,
            "workers": workers,
            "queue": queue,
        }
        return self.report

    async def run(self) -> None:
        """Refresh every interval until cancelled (the web edge closes it)."""
        while True:
            try:
                await self.refresh()
            except Exception as exc:  # never let the monitor die with the report stale
                log.warning("worker_monitor_failed", error=type(exc).__name__)
            await asyncio.sleep(self.interval)


def in_process_report(*, durable: bool) -> dict[str, Any]:
    """Jobs run in the web process itself (the embedded default)."""
    return {
        "status": "ok",
        "latency_ms": None,
        "worker_ok": True,
        "durable": durable,
        "workers": [],
        "in_process": True,
    }
