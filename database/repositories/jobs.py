"""Jobs: the API's state of background work, and workers' fallback heartbeats.

Every change a client can see bumps `seq` in the same UPDATE, so a reader that
remembers the last `seq` it sent (the SSE event id) knows exactly whether there
is something new. Status changes are guarded by the status they leave (a job
finished by one worker is never re-opened by another that was slow to notice).
"""

from __future__ import annotations

import builtins
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from database.models import Job, WorkerBeat

ACTIVE = ("queued", "in_progress")
FINISHED = ("success", "failed", "cancelled")

# Called inside the creating transaction with the driver's own connection, so a
# queue that lives in the same database (pgqueuer) commits with the job's row.
InTransaction = Callable[[Any], Awaitable[None]]


class DuplicateJob(Exception):
    """An active job of the tenant already has this dedupe key."""

    def __init__(self, existing_id: str | None) -> None:
        super().__init__(existing_id)
        self.existing_id = existing_id


class JobRepository:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def create(self, *, then: InTransaction | None = None, **values: Any) -> Job:
        """Insert a queued job (and run `then` in the same transaction); raises
        `DuplicateJob` naming the active job that holds the dedupe key."""
        now = datetime.now(UTC)  # microseconds: pages are ordered by it
        row = Job(
            status="queued",
            attempts=0,
            seq=1,
            cancel_requested=False,
            created_at=now,
            updated_at=now,
            **values,
        )
        try:
            async with self.sessions() as session, session.begin():
                session.add(row)
                await session.flush()
                if then is not None:
                    connection = await session.connection()
                    raw = await connection.get_raw_connection()
                    await then(raw.driver_connection)
        except IntegrityError:
            if values.get("dedupe_key") is None:
                raise
            raise DuplicateJob(
                await self.active_with_key(values["tenant"], values["dedupe_key"])
            ) from None
        return row  # every column was set here: no read back (a submit is 3 round trips fewer)

    async def active_with_key(self, tenant: str, dedupe_key: str) -> str | None:
        query = select(Job.id).where(
            Job.tenant == tenant, Job.dedupe_key == dedupe_key, Job.status.in_(ACTIVE)
        )
        async with self.sessions() as session:
            return (await session.execute(query)).scalar_one_or_none()

    async def get(self, job_id: str, *, tenant: str | None = None) -> Job | None:
        async with self.sessions() as session:
            row = await session.get(Job, job_id)
        if row is None or (tenant is not None and row.tenant != tenant):
            return None
        return row

    async def list(
        self,
        *,
        tenant: str | None,
        status: str | None = None,
        type: str | None = None,
        limit: int = 20,
        before: tuple[datetime, str] | None = None,
    ) -> list[Job]:
        """Newest first; `before` is the (created_at, id) of the last job of the
        previous page."""
        query = select(Job).order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)
        if tenant is not None:
            query = query.where(Job.tenant == tenant)
        if status is not None:
            query = query.where(Job.status == status)
        if type is not None:
            query = query.where(Job.type == type)
        if before is not None:
            created, job_id = before
            query = query.where(
                (Job.created_at < created) | ((Job.created_at == created) & (Job.id < job_id))
            )
        async with self.sessions() as session:
            return list((await session.execute(query)).scalars())

    async def active(self) -> builtins.list[tuple[str, str]]:
        """(id, type) of every queued or running job, oldest first."""
        query = select(Job.id, Job.type).where(Job.status.in_(ACTIVE)).order_by(Job.created_at)
        async with self.sessions() as session:
            return [(job_id, job_type) for job_id, job_type in (await session.execute(query))]

    async def start(self, job_id: str) -> tuple[Job, str] | None:
        """Count a start and mark the job in progress: the job and the status it
        had (`in_progress` means the last start never finished: its worker was
        lost). None when it is no longer active, or another worker started it
        first (compare-and-set on status and attempts)."""
        current = await self.get(job_id)
        if current is None or current.status not in ACTIVE:
            return None
        now = datetime.now(UTC)
        query = (
            update(Job)
            .where(
                Job.id == job_id,
                Job.status == current.status,
                Job.attempts == current.attempts,
            )
            .values(
                status="in_progress",
                attempts=Job.attempts + 1,
                started_at=func.coalesce(Job.started_at, now),
                seq=Job.seq + 1,
            )
        )
        async with self.sessions() as session, session.begin():
            if (await session.execute(query)).rowcount == 0:  # type: ignore[attr-defined]
                return None
        started = await self.get(job_id)
        return (started, current.status) if started is not None else None

    async def progress(
        self, job_id: str, *, progress: dict[str, Any], checkpoint: Any = None
    ) -> bool:
        """Record progress (and the handler's resume state); False once the job
        was cancelled (or otherwise left `in_progress`)."""
        values: dict[str, Any] = {"progress": progress, "seq": Job.seq + 1}
        if checkpoint is not None:
            values["checkpoint"] = checkpoint
        query = (
            update(Job)
            .where(Job.id == job_id, Job.status == "in_progress", Job.cancel_requested.is_(False))
            .values(**values)
        )
        async with self.sessions() as session, session.begin():
            return bool((await session.execute(query)).rowcount)  # type: ignore[attr-defined]

    async def requeue(self, job_id: str, *, error: dict[str, Any]) -> bool:
        """Back to queued for a retry, with the error that caused it."""
        query = (
            update(Job)
            .where(Job.id == job_id, Job.status == "in_progress")
            .values(status="queued", error=error, seq=Job.seq + 1)
        )
        async with self.sessions() as session, session.begin():
            return bool((await session.execute(query)).rowcount)  # type: ignore[attr-defined]

    async def finish(
        self,
        job_id: str,
        *,
        status: str,
        result: Any = None,
        error: dict[str, Any] | None = None,
        from_status: tuple[str, ...] = ACTIVE,
    ) -> bool:
        query = (
            update(Job)
            .where(Job.id == job_id, Job.status.in_(from_status))
            .values(
                status=status,
                result=result,
                error=error,
                finished_at=datetime.now(UTC),
                seq=Job.seq + 1,
            )
        )
        async with self.sessions() as session, session.begin():
            return bool((await session.execute(query)).rowcount)  # type: ignore[attr-defined]

    async def request_cancel(self, job_id: str) -> None:
        """Ask a running job to stop at its next checkpoint."""
        query = (
            update(Job)
            .where(Job.id == job_id, Job.status == "in_progress", Job.cancel_requested.is_(False))
            .values(cancel_requested=True, seq=Job.seq + 1)
        )
        async with self.sessions() as session, session.begin():
            await session.execute(query)

    async def cancel_requested(self, job_id: str) -> bool:
        async with self.sessions() as session:
            row = await session.get(Job, job_id)
        return row is None or row.cancel_requested or row.status not in ACTIVE

    async def stats(self, *, tenant: str | None) -> dict[str, Any]:
        since = datetime.now(UTC) - timedelta(hours=24)
        counts = select(Job.status, func.count()).group_by(Job.status)
        finished = (
            select(Job.status, func.count())
            .where(Job.finished_at >= since, Job.status.in_(("success", "failed")))
            .group_by(Job.status)
        )
        oldest = select(func.min(Job.created_at)).where(Job.status == "queued")
        if tenant is not None:
            counts = counts.where(Job.tenant == tenant)
            finished = finished.where(Job.tenant == tenant)
            oldest = oldest.where(Job.tenant == tenant)
        async with self.sessions() as session:
            by_status = dict((await session.execute(counts)).all())
            recent = dict((await session.execute(finished)).all())
            first = (await session.execute(oldest)).scalar_one_or_none()
        if first is not None and first.tzinfo is None:
            first = first.replace(tzinfo=UTC)  # SQLite drops the zone; stored as UTC
        return {
            "pending": int(by_status.get("queued", 0)),
            "processing": int(by_status.get("in_progress", 0)),
            "succeeded_24h": int(recent.get("success", 0)),
            "failed_24h": int(recent.get("failed", 0)),
            "oldest_pending_seconds": (
                round((datetime.now(UTC) - first).total_seconds(), 3) if first else None
            ),
        }

    async def purge_finished(self, *, before: datetime) -> int:
        query = delete(Job).where(Job.status.in_(FINISHED), Job.finished_at < before)
        async with self.sessions() as session, session.begin():
            return int((await session.execute(query)).rowcount)  # type: ignore[attr-defined]

    async def purge_queue_log(self, *, before: datetime) -> int:
        """Delete pgqueuer's own log and statistics rows older than `before`
        (pgqueuer appends at least three log rows per job and never prunes them).
        PostgreSQL only (its tables exist there alone); 0 elsewhere."""
        async with self.sessions() as session, session.begin():
            if session.get_bind().dialect.name != "postgresql":
                return 0
            deleted = 0
            for table in ("pgqueuer_log", "pgqueuer_statistics"):  # names pinned in core.jobs.queue
                result = await session.execute(
                    text(f"DELETE FROM {table} WHERE created < :before"), {"before": before}
                )
                deleted += int(result.rowcount)  # type: ignore[attr-defined]
            return deleted

    # -- worker heartbeats (the fallback when Redis is away) ----------------------
    async def beat(self, name: str, info: dict[str, Any]) -> None:
        now = datetime.now(UTC)
        async with self.sessions() as session, session.begin():
            row = await session.get(WorkerBeat, name)
            if row is None:
                session.add(WorkerBeat(name=name, beat_at=now, info=info))
            else:
                row.beat_at, row.info = now, info

    async def beats(self, *, since: datetime) -> dict[str, datetime]:
        query = select(WorkerBeat.name, WorkerBeat.beat_at).where(WorkerBeat.beat_at >= since)
        async with self.sessions() as session:
            rows = (await session.execute(query)).all()
        return {name: (at if at.tzinfo else at.replace(tzinfo=UTC)) for name, at in rows}
