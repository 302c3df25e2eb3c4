"""Maintenance jobs: the house-keeping the schedules (core.jobs.schedules) submit.

They are ordinary job types (limits, retries, history in `GET /api/v1/jobs`),
but not public: only a schedule, as the reserved tenant `system`, submits them.
Each is idempotent, so a retry or a re-pick after a crash is harmless.

- `maintenance.purge`: usage rows older than USAGE_RETENTION_DAYS, finished jobs
  and agent runs (with their events) older than JOB_RETENTION_DAYS, and
  pgqueuer's own log and statistics rows older than a week (pgqueuer never prunes
  them; PostgreSQL only). Interactive agent runs left active by a process that
  stopped are failed (`process_lost`) first.
- `maintenance.expire_keys`: active keys past `expires_at` become `expired`.
  The authenticator already refuses them by date (`key_expired`); the state
  makes the admin's key list say so. An admin revives one by setting a later
  `expires_at` and `state: active`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict

from core.jobs.types import JobContext, JobType
from database.repositories.agents import RunRepository
from database.repositories.keys import KeyRepository
from database.repositories.usage import UsageRepository

QUEUE_LOG_RETENTION = timedelta(days=7)  # far past pgqueuer's 30 s log aggregation
ABANDONED_RUN = timedelta(hours=2)  # an interactive run's wall limit is at most one hour


class NoInput(BaseModel):
    model_config = ConfigDict(extra="forbid")


async def purge(_: NoInput, ctx: JobContext) -> Any:
    resources = ctx.services  # core.jobs.registry.JobResources
    settings, jobs = resources.settings, resources.jobs
    now = datetime.now(UTC)
    await ctx.progress(current_step=0, total_steps=4, step="usage")
    usage = await UsageRepository(jobs.sessions).purge_before(
        now - timedelta(days=settings.usage_retention_days)
    )
    await ctx.progress(current_step=1, total_steps=4, step="jobs")
    finished = await jobs.purge_finished(before=now - timedelta(days=settings.job_retention_days))
    await ctx.progress(current_step=2, total_steps=4, step="agent_runs")
    agent_runs = RunRepository(jobs.sessions)
    await agent_runs.fail_abandoned(started_before=now - ABANDONED_RUN)
    runs = await agent_runs.purge_finished(before=now - timedelta(days=settings.job_retention_days))
    await ctx.progress(current_step=3, total_steps=4, step="queue_log")
    queue_log = await jobs.purge_queue_log(before=now - QUEUE_LOG_RETENTION)
    await ctx.progress(current_step=4, total_steps=4, step="done")
    return {
        "usage_rows": usage,
        "finished_jobs": finished,
        "finished_runs": runs,
        "queue_log_rows": queue_log,
    }


async def expire_keys(_: NoInput, ctx: JobContext) -> Any:
    expired = await KeyRepository(ctx.services.jobs.sessions).expire_past(datetime.now(UTC))
    return {"expired_keys": expired}


def maintenance_types() -> list[JobType[Any]]:
    return [
        JobType(
            "maintenance.purge",
            NoInput,
            purge,
            description="Delete usage, finished jobs and queue log past their retention.",
            concurrency=1,
            public=False,
        ),
        JobType(
            "maintenance.expire_keys",
            NoInput,
            expire_keys,
            description="Mark API keys past their expires_at as expired.",
            concurrency=1,
            soft_limit_seconds=5 * 60,
            hard_limit_seconds=10 * 60,
            public=False,
        ),
    ]
