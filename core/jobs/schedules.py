"""Recurring jobs, declared in one place (`SCHEDULES`, cron in UTC), run by the
worker exactly once per tick however many worker instances there are.

pgqueuer's scheduler owns the "once": one row per (job type, cron) in
`pgqueuer_schedules`, claimed `FOR UPDATE SKIP LOCKED` when due. A tick only
*submits* a normal job through the JobService, as the reserved tenant `system`
(no API key can have it), with the dedupe key `schedule:<type>:<tick>`: so a
schedule's work gets the runner's retries, limits and history (`GET
/api/v1/jobs?type=maintenance.purge`), and a tick submitted twice (pgqueuer
takes a schedule over after a 30 s stall) is a 409, not a second job.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from croniter import croniter  # type: ignore[import-untyped]  # no stubs; pgqueuer's own

from core.auth.authenticator import SYSTEM_TENANT
from core.jobs.queue import pinned_queries
from core.jobs.service import JobConflictError, JobService

log = structlog.get_logger("skygate.jobs")


@dataclass(frozen=True, slots=True)
class Schedule:
    type: str  # the job type a tick submits
    cron: str  # 5 fields, or 6 with seconds last (pgqueuer's croniter), in UTC
    input: dict[str, Any] = field(default_factory=dict)

    def tick(self, next_run: datetime) -> datetime:
        """The tick being run: the cron's last fire before the next one the
        database scheduled (its clock, not this worker's)."""
        prev: datetime = croniter(self.cron, next_run.astimezone(UTC)).get_prev(datetime)
        return prev

    def dedupe_key(self, tick: datetime) -> str:
        return f"schedule:{self.type}:{tick.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}"


SCHEDULES: list[Schedule] = [
    Schedule("maintenance.purge", "0 2 * * *"),  # daily at 02:00 UTC
    Schedule("maintenance.expire_keys", "0 * * * *"),  # hourly
]


async def submit_tick(service: JobService, schedule: Schedule, next_run: datetime) -> str | None:
    """Submit the job of one tick; the job's id, or None when it was submitted
    already (the same tick seen twice)."""
    tick = schedule.tick(next_run)
    try:
        job = await service.submit(
            tenant=SYSTEM_TENANT,
            api_key_id=None,
            type=schedule.type,
            input=schedule.input,
            dedupe_key=schedule.dedupe_key(tick),
            internal=True,
        )
    except JobConflictError as conflict:
        log.info("schedule_tick_duplicate", type=schedule.type, existing=conflict.existing_id)
        return None
    log.info("schedule_tick", type=schedule.type, tick=tick.isoformat(), job_id=job.id)
    return job.id


async def run_schedules(
    dsn: str, schedules: list[Schedule], service: JobService, *, stop: asyncio.Event
) -> None:
    """pgqueuer's scheduler on a connection of its own until `stop`; a tick in
    flight finishes (it only submits a job: milliseconds)."""
    import asyncpg
    from pgqueuer.core.sm import SchedulerManager
    from pgqueuer.domain.models import Schedule as Due

    if not schedules:
        return
    connection = await asyncpg.connect(dsn)
    try:
        manager = SchedulerManager(pinned_queries(connection))
        for schedule in schedules:

            async def tick(due: Due, schedule: Schedule = schedule) -> None:
                await submit_tick(service, schedule, due.next_run)

            manager.schedule(schedule.type, schedule.cron)(tick)

        async def stopper() -> None:
            await stop.wait()
            manager.shutdown.set()

        watcher = asyncio.create_task(stopper())
        try:
            await manager.run()
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
    finally:
        await connection.close()
