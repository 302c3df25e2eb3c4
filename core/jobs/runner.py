"""One life for every job, whatever its type and wherever it runs.

A delivery from the queue becomes: a counted start (Skygate's own attempts:
pgqueuer does not count a re-pick after a crash, so a job that keeps killing its
worker would loop forever), the handler under the type's soft time limit, and
exactly one ending written to the `jobs` table: `success` with the result,
`failed` with an error, `cancelled`, or back to `queued` for a retry with
exponential backoff. Every write is guarded by the status it leaves, so a
delivery that arrives twice (the queue is at-least-once) does no harm.

The hard time limit is the worker process's (`worker`): a handler that blocks
its event loop cannot be stopped from inside it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from core.jobs.queue import Delivery
from core.jobs.types import (
    JobCancelled,
    JobFailed,
    JobType,
    JobTypes,
    RetryableJobError,
)
from core.observability import metrics
from database.repositories.jobs import JobRepository

log = structlog.get_logger("skygate.jobs")

OUTAGE_RETRY_SECONDS = 10.0  # the database was away mid-job: deliver again later


def job_error(message: str, *, code: str, type: str = "job_error") -> dict[str, Any]:
    return {"message": message, "type": type, "code": code}


@dataclass
class _Context:
    """The JobContext a handler receives (core.jobs.types.JobContext)."""

    repository: JobRepository
    job_id: str
    tenant: str
    api_key_id: str | None
    attempt: int
    resume: Any
    services: Any

    async def progress(
        self,
        *,
        current_step: int,
        total_steps: int,
        step: str | None = None,
        message: str | None = None,
        checkpoint: Any = None,
    ) -> None:
        percentage = round(100.0 * current_step / total_steps, 1) if total_steps else 0.0
        recorded = await self.repository.progress(
            self.job_id,
            progress={
                "step": step,
                "percentage": percentage,
                "current_step": current_step,
                "total_steps": total_steps,
                "message": message,
            },
            checkpoint=checkpoint,
        )
        if not recorded:
            raise JobCancelled(self.job_id)

    async def checkpoint(self) -> None:
        if await self.repository.cancel_requested(self.job_id):
            raise JobCancelled(self.job_id)


@dataclass
class JobRunner:
    repository: JobRepository
    types: JobTypes
    services: Any = None  # the gateway layer handlers call models through
    running: dict[str, tuple[float, float]] = field(default_factory=dict)  # id -> (start, hard)

    async def __call__(self, delivery: Delivery) -> float | None:
        try:
            return await self.run(delivery)
        except Exception as exc:  # the database went away mid-job: try the delivery later
            log.warning("job_interrupted", job_id=delivery.job_id, error=type(exc).__name__)
            return OUTAGE_RETRY_SECONDS

    async def run(self, delivery: Delivery) -> float | None:
        job_type = self.types.get(delivery.type)
        if job_type is None:
            log.error("job_type_unknown", job_id=delivery.job_id, type=delivery.type)
            return None
        started = await self.repository.start(delivery.job_id)
        if started is None:
            return None  # cancelled, finished, or another worker has it
        job, previous = started
        if job.cancel_requested:
            await self.repository.finish(job.id, status="cancelled")
            return None
        if previous == "in_progress" and job.attempts > job_type.max_attempts:
            await self.repository.finish(
                job.id,
                status="failed",
                error=job_error(
                    f"The job was started {job.attempts - 1} times and its worker was lost "
                    "each time (crashed, killed or out of memory).",
                    code="worker_lost",
                ),
            )
            log.error("job_worker_lost", job_id=job.id, type=job.type, attempts=job.attempts)
            metrics.JOBS_FINISHED.labels(job.type, "worker_lost").inc()
            return None
        if job.attempts == 1 and job.created_at is not None:  # submission -> first start
            created = (
                job.created_at if job.created_at.tzinfo else job.created_at.replace(tzinfo=UTC)
            )
            wait = (datetime.now(UTC) - created).total_seconds()
            metrics.JOB_QUEUE_WAIT.labels(job.type).observe(max(wait, 0.0))
        context = _Context(
            repository=self.repository,
            job_id=job.id,
            tenant=job.tenant,
            api_key_id=job.api_key_id,
            attempt=job.attempts,
            resume=job.checkpoint,
            services=self.services,
        )
        return await self._execute(job_type, job.id, job.input, job.attempts, context)

    async def _execute(
        self, job_type: JobType[Any], job_id: str, raw: Any, attempt: int, context: _Context
    ) -> float | None:
        began = time.monotonic()
        self.running[job_id] = (began, job_type.hard_limit_seconds)
        log.info("job_started", job_id=job_id, type=job_type.name, attempt=attempt)
        try:
            async with asyncio.timeout(job_type.soft_limit_seconds) as limit:
                result = await job_type.handler(job_type.parse(raw), context)
        except JobCancelled:
            await self.repository.finish(job_id, status="cancelled")
            log.info("job_cancelled", job_id=job_id, type=job_type.name)
            metrics.JOBS_FINISHED.labels(job_type.name, "cancelled").inc()
            return None
        except TimeoutError:
            if not limit.expired():
                return await self._failed(job_type, job_id, attempt, "timeout", retryable=True)
            await self.repository.finish(
                job_id,
                status="failed",
                error=job_error(
                    f"The job ran past its time limit of {job_type.soft_limit_seconds:g} s.",
                    code="time_limit_exceeded",
                ),
            )
            log.warning("job_time_limit", job_id=job_id, type=job_type.name)
            metrics.JOBS_FINISHED.labels(job_type.name, "time_limit").inc()
            return None
        except JobFailed as failed:
            await self.repository.finish(
                job_id,
                status="failed",
                error=job_error(str(failed), code=failed.code, type=failed.type),
            )
            metrics.JOBS_FINISHED.labels(job_type.name, "failed").inc()
            return None
        except RetryableJobError as exc:
            return await self._failed(job_type, job_id, attempt, str(exc), retryable=True)
        except Exception as exc:
            log.exception("job_error", job_id=job_id, type=job_type.name)
            reason = type(exc).__name__
            return await self._failed(job_type, job_id, attempt, reason, retryable=False)
        finally:
            self.running.pop(job_id, None)
            metrics.JOB_DURATION.labels(job_type.name).observe(time.monotonic() - began)
        await self.repository.finish(job_id, status="success", result=result)
        metrics.JOBS_FINISHED.labels(job_type.name, "success").inc()
        log.info(
            "job_succeeded",
            job_id=job_id,
            type=job_type.name,
            duration_ms=round((time.monotonic() - began) * 1000, 3),
        )
        return None

    async def _failed(
        self, job_type: JobType[Any], job_id: str, attempt: int, reason: str, *, retryable: bool
    ) -> float | None:
        if retryable and attempt < job_type.max_attempts:
            delay = job_type.retry_delay(attempt)
            error = job_error(f"Attempt {attempt} failed ({reason}); retrying.", code="retrying")
            if await self.repository.requeue(job_id, error=error):
                log.info("job_retry", job_id=job_id, type=job_type.name, delay_s=delay)
                metrics.JOBS_FINISHED.labels(job_type.name, "retry").inc()
                return delay
            return None
        await self.repository.finish(
            job_id,
            status="failed",
            error=job_error(
                f"The job failed ({reason}) after {attempt} attempt(s).", code="job_failed"
            ),
        )
        metrics.JOBS_FINISHED.labels(job_type.name, "failed").inc()
        return None
