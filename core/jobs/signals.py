"""Job changes fanned out across processes and instances over Redis pub/sub.

Every change to a job (the repository below publishes it) is a message on one
channel carrying the job's id; each web process holds one subscription and
wakes the watchers of that job (the SSE streams), which then read the job from
the database, where the truth is. With Redis away, or before the subscription
is up, watchers poll the database instead (`WATCH_POLL_SECONDS`); while it is
up they still look every `LIVE_POLL_SECONDS`, so a missed message (a frozen
Redis, a restart between two messages) costs latency, never an event.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import structlog

from core.infra.redis import ResilientRedis
from database.models import Job
from database.repositories.jobs import JobRepository

log = structlog.get_logger("skygate.jobs")

CHANNEL = "skygate:jobs"
WATCH_POLL_SECONDS = 0.5  # no subscription: how often a watcher reads the job
LIVE_POLL_SECONDS = 5.0  # subscribed: the safety net behind the messages
RETRY_SECONDS = 2.0


class JobSignals:
    def __init__(self, redis: ResilientRedis) -> None:
        self.redis = redis
        self.live = False  # subscribed now
        self._waiters: defaultdict[str, set[asyncio.Event]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None

    @property
    def poll_seconds(self) -> float:
        return LIVE_POLL_SECONDS if self.live else WATCH_POLL_SECONDS

    async def publish(self, job_id: str) -> None:
        if self.redis.configured:
            await self.redis.command("PUBLISH", CHANNEL, job_id, fallback=None)

    @contextlib.contextmanager
    def watching(self, job_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever the job changes, for as long as the block runs."""
        changed = asyncio.Event()
        self._waiters[job_id].add(changed)
        try:
            yield changed
        finally:
            waiters = self._waiters.get(job_id)
            if waiters is not None:
                waiters.discard(changed)
                if not waiters:
                    del self._waiters[job_id]

    def start(self) -> None:
        """Subscribe (web processes: where the watchers are)."""
        if self.redis.url and self._task is None:
            self._task = asyncio.create_task(self._listen(), name="job-signals")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _listen(self) -> None:
        from redis.asyncio import Redis

        failing = False
        while True:
            # Its own connection, not the pool's: a subscription holds it for good,
            # and the pool's short socket timeout would end every quiet minute.
            client: Any = Redis.from_url(
                self.redis.url or "", socket_connect_timeout=self.redis.timeout
            )
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    self.live = True
                    if failing:
                        log.info("job_signals_recovered")
                        failing = False
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self._wake(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: watchers poll until it is back
                if not failing:
                    log.warning("job_signals_unavailable", error=type(exc).__name__)
                    failing = True
            finally:
                self.live = False
                with contextlib.suppress(Exception):
                    await client.aclose()
            await asyncio.sleep(RETRY_SECONDS)

    def _wake(self, raw: bytes | str) -> None:
        job_id = raw.decode() if isinstance(raw, bytes) else raw
        for changed in self._waiters.get(job_id, ()):
            changed.set()


class SignallingJobRepository(JobRepository):
    """The job repository that announces each change it makes."""

    def __init__(self, sessions: Any, signals: JobSignals) -> None:
        super().__init__(sessions)
        self.signals = signals

    async def create(self, *, then: Any = None, **values: Any) -> Job:
        row = await super().create(then=then, **values)
        await self.signals.publish(row.id)
        return row

    async def start(self, job_id: str) -> tuple[Job, str] | None:
        started = await super().start(job_id)
        if started is not None:
            await self.signals.publish(job_id)
        return started

    async def progress(
        self, job_id: str, *, progress: dict[str, Any], checkpoint: Any = None
    ) -> bool:
        recorded = await super().progress(job_id, progress=progress, checkpoint=checkpoint)
        if recorded:
            await self.signals.publish(job_id)
        return recorded

    async def requeue(self, job_id: str, *, error: dict[str, Any]) -> bool:
        requeued = await super().requeue(job_id, error=error)
        if requeued:
            await self.signals.publish(job_id)
        return requeued

    async def finish(self, job_id: str, **kwargs: Any) -> bool:
        finished = await super().finish(job_id, **kwargs)
        if finished:
            await self.signals.publish(job_id)
        return finished

    async def request_cancel(self, job_id: str) -> None:
        await super().request_cancel(job_id)
        await self.signals.publish(job_id)
