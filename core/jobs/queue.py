"""The job queue port, and its one engine: pgqueuer.

The port is what Skygate needs from a queue and nothing more: put a job's id on
it (inside the transaction that creates the job, when the queue lives in the
same database), and serve deliveries to a runner with a concurrency per type.
The API's state is never here (it is in the `jobs` table), so the engine could
be swapped.

Two placements of the same engine:
- `PostgresQueue`: pgqueuer's tables in Skygate's PostgreSQL (installed by the
  migrations). The web process enqueues in the job's own transaction, so a job
  row never exists without its delivery or the other way round; `python -m
  worker` serves it on a dedicated session connection (LISTEN needs one).
- `InProcessQueue`: pgqueuer's in-memory adapter, for the embedded default
  (SQLite): the web process serves its own jobs; nothing survives a restart,
  which `/health` says (`durable: false`). A job left queued or in progress by
  a restart is put back on the queue at start from the `jobs` table.

What pgqueuer leaves to us (pinned to 1.6.0; see the notes in core.jobs.runner):
attempts after a crash, time limits, progress and results are the runner's;
pgqueuer's object names are pinned here rather than read from bare environment
variables (`CHANNEL`, `QUEUE_TABLE`, ...) that it would otherwise honour.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

import structlog

from core.jobs.types import JobType

log = structlog.get_logger("skygate.jobs")

DEQUEUE_TIMEOUT = timedelta(seconds=5)  # also bounds how soon a crashed job is re-picked
HEARTBEAT_TIMEOUT = timedelta(seconds=30)  # a delivery unbeaten this long is re-picked


@dataclass(frozen=True, slots=True)
class Delivery:
    job_id: str
    type: str


# A runner's verdict on a delivery: None when the delivery is done with (finished,
# failed, cancelled, or nothing to do), else the seconds to wait before a retry.
RunJob = Callable[[Delivery], Awaitable[float | None]]


class JobQueue(Protocol):
    durable: bool
    transactional: bool  # enqueue_in works inside the job's own transaction

    async def enqueue_in(self, connection: Any, delivery: Delivery) -> None: ...

    async def enqueue(self, delivery: Delivery) -> None: ...

    async def serve(
        self, run: RunJob, types: Iterable[JobType[Any]], *, stop: asyncio.Event
    ) -> None: ...


@functools.cache
def _pinned_settings() -> Any:
    """pgqueuer's object names, fixed (built once: a pydantic-settings model reads
    the environment on every construction, ~0.8 ms)."""
    from pgqueuer.domain.settings import DBSettings

    return DBSettings(
        prefix="",
        channel="ch_pgqueuer",
        function="fn_pgqueuer_changed",
        statistics_table="pgqueuer_statistics",
        queue_status_type="pgqueuer_status",
        queue_table="pgqueuer",
        queue_table_log="pgqueuer_log",
        trigger="tg_pgqueuer_changed",
        schedules_table="pgqueuer_schedules",
    )


@functools.cache
def _builders() -> tuple[Any, Any, Any]:
    """pgqueuer's query builders for those names, shared by every `Queries` of the
    process (they hold only the names and a cache of rendered SQL)."""
    from pgqueuer.adapters.persistence import qb

    settings = _pinned_settings()
    return (
        qb.QueryBuilderEnvironment(settings),
        qb.QueryQueueBuilder(settings),
        qb.QuerySchedulerBuilder(settings),
    )


def _queries(driver: Any) -> Any:
    from pgqueuer.adapters.persistence.queries import Queries

    qbe, qbq, qbs = _builders()
    return Queries(driver, qbe=qbe, qbq=qbq, qbs=qbs)


def pinned_queries(connection: Any) -> Any:
    """pgqueuer's queries on an asyncpg connection, with the pinned names (the
    worker's scheduler runs on a connection of its own)."""
    from pgqueuer.adapters.drivers.asyncpg import AsyncpgDriver

    return _queries(AsyncpgDriver(connection))


def _register(pgq: Any, run: RunJob, types: Iterable[JobType[Any]]) -> None:
    from pgqueuer.domain.errors import RetryRequested
    from pgqueuer.domain.models import Job as Delivered

    for job_type in types:

        async def handle(job: Delivered, name: str = job_type.name) -> None:
            delivery = Delivery(job_id=(job.payload or b"").decode(), type=name)
            delay = await run(delivery)
            if delay is not None:
                raise RetryRequested(delay=timedelta(seconds=delay))

        pgq.entrypoint(job_type.name, concurrency_limit=job_type.concurrency)(handle)


async def _serve(
    pgq: Any,
    stop: asyncio.Event,
    dequeue_timeout: timedelta = DEQUEUE_TIMEOUT,
    heartbeat_timeout: timedelta = HEARTBEAT_TIMEOUT,
    concurrency: int | None = None,
) -> None:
    """Run pgqueuer until `stop`; then it takes no new job and waits for the
    running ones (never cancelled: pgqueuer deletes a job cancelled mid-run)."""

    async def stopper() -> None:
        await stop.wait()
        pgq.shutdown.set()

    watcher = asyncio.create_task(stopper())
    try:
        await pgq.run(
            dequeue_timeout=dequeue_timeout,
            heartbeat_timeout=heartbeat_timeout,
            # pgqueuer wants room for two batches: a batch is half of what may run
            max_concurrent_tasks=concurrency,
            batch_size=max(1, concurrency // 2) if concurrency else 10,
        )
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


class PostgresQueue:
    durable = True
    transactional = True

    def __init__(
        self,
        dsn: str,
        *,
        dequeue_timeout: timedelta = DEQUEUE_TIMEOUT,
        heartbeat_timeout: timedelta = HEARTBEAT_TIMEOUT,
        concurrency: int | None = None,
    ) -> None:
        self.concurrency = concurrency  # WORKER_CONCURRENCY: jobs this process runs at once
        self.dsn = dsn  # a plain postgresql:// DSN for asyncpg (the worker's own connection)
        self.dequeue_timeout = dequeue_timeout  # settings: JOB_DEQUEUE_TIMEOUT_SECONDS ...
        self.heartbeat_timeout = heartbeat_timeout  # ... and JOB_HEARTBEAT_TIMEOUT_SECONDS

    async def enqueue_in(self, connection: Any, delivery: Delivery) -> None:
        from pgqueuer.adapters.drivers.asyncpg import AsyncpgDriver

        await _queries(AsyncpgDriver(connection)).enqueue(delivery.type, delivery.job_id.encode())

    async def enqueue(self, delivery: Delivery) -> None:
        import asyncpg
        from pgqueuer.adapters.drivers.asyncpg import AsyncpgDriver

        connection = await asyncpg.connect(self.dsn)
        try:
            await _queries(AsyncpgDriver(connection)).enqueue(
                delivery.type, delivery.job_id.encode()
            )
        finally:
            await connection.close()

    async def serve(
        self, run: RunJob, types: Iterable[JobType[Any]], *, stop: asyncio.Event
    ) -> None:
        import asyncpg
        from pgqueuer.adapters.drivers.asyncpg import AsyncpgDriver
        from pgqueuer.core.applications import PgQueuer

        connection = await asyncpg.connect(self.dsn)
        try:
            driver = AsyncpgDriver(connection)
            settings = _pinned_settings()
            pgq = PgQueuer(connection=driver, channel=settings.channel, queries=_queries(driver))
            _register(pgq, run, types)
            await _serve(pgq, stop, self.dequeue_timeout, self.heartbeat_timeout, self.concurrency)
        finally:
            await connection.close()


class InProcessQueue:
    durable = False
    transactional = False

    def __init__(self) -> None:
        from pgqueuer.core.applications import PgQueuer

        self.pgq = PgQueuer.in_memory(channel=_pinned_settings().channel)

    async def enqueue_in(self, connection: Any, delivery: Delivery) -> None:
        raise NotImplementedError("the in-process queue enqueues after the job commits")

    async def enqueue(self, delivery: Delivery) -> None:
        queries = self.pgq.queries
        assert queries is not None  # in_memory() always builds its queries
        await queries.enqueue(delivery.type, delivery.job_id.encode())

    async def serve(
        self, run: RunJob, types: Iterable[JobType[Any]], *, stop: asyncio.Event
    ) -> None:
        _register(self.pgq, run, types)
        await _serve(self.pgq, stop)
