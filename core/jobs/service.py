"""What the job API does, without HTTP: submit, read, list, cancel, watch, stats.

Tenant-scoped: a job of another tenant is a 404, as if it did not exist (admins
read every tenant's). Submitting validates the type and its input before
anything is written, creates the job's row and its delivery together, and
answers 409 `job_conflict` naming the active job that holds the same dedupe
key. With the database away every call is a 503 with `Retry-After`; the LLM
routes never touch this service.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from core.errors import (
    BadRequestError,
    ConflictError,
    NotFoundError,
    ServiceUnavailableError,
    ValidationFailedError,
)
from core.jobs.queue import Delivery, JobQueue
from core.jobs.signals import WATCH_POLL_SECONDS, JobSignals
from core.jobs.types import JobTypes
from database.models import Job
from database.repositories.jobs import FINISHED, DuplicateJob, JobRepository

T = TypeVar("T")
JobRow = Job  # what the routes render (they never touch the ORM themselves)


class JobConflictError(ConflictError):
    default_code = "job_conflict"

    def __init__(self, existing_id: str | None) -> None:
        super().__init__(
            f"An active job with this dedupe_key already exists: {existing_id}.",
            param="dedupe_key",
            headers={"Location": f"/api/v1/jobs/{existing_id}"} if existing_id else None,
        )
        self.existing_id = existing_id


def _unavailable() -> ServiceUnavailableError:
    return ServiceUnavailableError(
        "Jobs are unavailable right now (the database cannot be reached); retry shortly.",
        code="jobs_unavailable",
        headers={"Retry-After": "5"},
    )


async def _guarded(call: Callable[[], Awaitable[T]]) -> T:
    try:
        return await call()
    except (SQLAlchemyError, OSError) as exc:
        raise _unavailable() from exc


class JobService:
    def __init__(
        self,
        repository: JobRepository,
        queue: JobQueue,
        types: JobTypes,
        signals: JobSignals | None = None,
    ) -> None:
        self.repository = repository
        self.queue = queue
        self.types = types
        self.signals = signals

    @property
    def durable(self) -> bool:
        return self.queue.durable

    async def submit(
        self,
        *,
        tenant: str,
        api_key_id: str | None,
        type: str,
        input: Any,
        dedupe_key: str | None,
        internal: bool = False,  # a schedule's submission: non-public types too
    ) -> Job:
        job_type = self.types.get(type)
        if job_type is None or not (job_type.public or internal):
            known = ", ".join(self.types.public_names())
            raise BadRequestError(
                f"Unknown job type '{type}'. Known types: {known}.",
                param="type",
                code="unknown_job_type",
            )
        try:
            parsed = job_type.parse(input)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in ("input", *first["loc"]))
            raise ValidationFailedError(f"{where}: {first['msg']}", param=where) from None
        job_id = str(uuid.uuid4())
        delivery = Delivery(job_id=job_id, type=type)
        queue = self.queue

        async def enqueue(connection: Any) -> None:
            await queue.enqueue_in(connection, delivery)

        try:
            row = await _guarded(
                lambda: self.repository.create(
                    id=job_id,
                    tenant=tenant,
                    api_key_id=api_key_id,
                    type=type,
                    input=parsed.model_dump(mode="json"),
                    dedupe_key=dedupe_key,
                    then=enqueue if queue.transactional else None,
                )
            )
        except DuplicateJob as duplicate:
            raise JobConflictError(duplicate.existing_id) from None
        if not queue.transactional:
            await queue.enqueue(delivery)
        return row

    async def get(self, job_id: str, *, tenant: str | None) -> Job:
        row = await _guarded(lambda: self.repository.get(job_id, tenant=tenant))
        if row is None:
            raise NotFoundError(f"No job with id '{job_id}'.", param="id", code="job_not_found")
        return row

    async def list(
        self,
        *,
        tenant: str | None,
        status: str | None,
        type: str | None,
        limit: int,
        after: str | None,
    ) -> list[Job]:
        before = None
        if after is not None:
            cursor = await _guarded(lambda: self.repository.get(after, tenant=tenant))
            if cursor is None:
                raise BadRequestError(
                    f"after: no job with id '{after}' to page after.",
                    param="after",
                    code="invalid_cursor",
                )
            before = (cursor.created_at, cursor.id)
        return await _guarded(
            lambda: self.repository.list(
                tenant=tenant, status=status, type=type, limit=limit, before=before
            )
        )

    async def cancel(self, job_id: str, *, tenant: str | None) -> Job:
        """Queued: cancelled at once. Running: asked to stop at its next checkpoint.
        Already cancelled: the same answer again. Finished otherwise: 409."""
        row = await self.get(job_id, tenant=tenant)
        if row.status == "queued":
            if await _guarded(
                lambda: self.repository.finish(job_id, status="cancelled", from_status=("queued",))
            ):
                return await self.get(job_id, tenant=tenant)
            row = await self.get(job_id, tenant=tenant)  # it started meanwhile
        if row.status == "in_progress":
            await _guarded(lambda: self.repository.request_cancel(job_id))
            return await self.get(job_id, tenant=tenant)
        if row.status == "cancelled":
            return row
        raise ConflictError(
            f"The job has already finished ({row.status}); it cannot be cancelled.",
            param="id",
            code="job_finished",
        )

    async def stats(self, *, tenant: str | None) -> dict[str, Any]:
        return await _guarded(lambda: self.repository.stats(tenant=tenant))

    async def watch(
        self, job_id: str, *, tenant: str | None, after_seq: int = 0
    ) -> AsyncIterator[Job | None]:
        """The job each time it changes (first its current state, unless the
        watcher has seen it already), None after each look that found nothing
        new (a transport's chance to send a heartbeat); ends after the terminal
        state."""
        seen = after_seq
        with contextlib.ExitStack() as stack:
            changed = (
                stack.enter_context(self.signals.watching(job_id))
                if self.signals is not None
                else asyncio.Event()
            )
            while True:
                changed.clear()  # before the read: a change after it wakes the wait below
                row = await self.get(job_id, tenant=tenant)
                if row.seq > seen:
                    seen = row.seq
                    yield row
                else:
                    yield None
                if row.status in FINISHED:
                    return
                poll = self.signals.poll_seconds if self.signals else WATCH_POLL_SECONDS
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), poll)
