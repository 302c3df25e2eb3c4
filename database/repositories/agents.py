"""Agents defined through the admin API (versioned), their runs, run events and threads.

A run's row is what `GET /runs/{id}` reads; its events are numbered from 1 per run and
written in small batches by the engine (`agents.events`). Status changes are guarded
by the status they leave, so a finished run is never re-opened by a slow writer.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from database.models import (
    AgentRun,
    AgentRunEvent,
    AgentThread,
    AgentThreadMessage,
    AgentVersion,
)

ACTIVE_RUN = ("queued", "in_progress", "requires_action")


class DuplicateRun(Exception):
    """The tenant already has a run with this idempotency key."""


class AgentRepository:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def current(self, tenant: str | None = None) -> list[AgentVersion]:
        query = select(AgentVersion).where(AgentVersion.retired.is_(False))
        if tenant is not None:
            query = query.where(AgentVersion.tenant == tenant)
        async with self.sessions() as session:
            return list((await session.execute(query)).scalars())

    async def get(self, tenant: str, agent_id: str) -> AgentVersion | None:
        query = select(AgentVersion).where(
            AgentVersion.tenant == tenant,
            AgentVersion.agent_id == agent_id,
            AgentVersion.retired.is_(False),
        )
        async with self.sessions() as session:
            return (await session.execute(query)).scalar_one_or_none()

    async def save(
        self, tenant: str, agent_id: str, definition: dict[str, Any], *, replace: bool
    ) -> AgentVersion | None:
        """Add the next version (retiring the current one when `replace`). None when
        `replace` and there is no current version, or not `replace` and there is one."""
        async with self.sessions() as session, session.begin():
            latest = (
                await session.execute(
                    select(func.max(AgentVersion.version)).where(
                        AgentVersion.tenant == tenant, AgentVersion.agent_id == agent_id
                    )
                )
            ).scalar_one_or_none()
            retired = await session.execute(
                update(AgentVersion)
                .where(
                    AgentVersion.tenant == tenant,
                    AgentVersion.agent_id == agent_id,
                    AgentVersion.retired.is_(False),
                )
                .values(retired=True)
            )
            if (retired.rowcount > 0) != replace:  # type: ignore[attr-defined]
                await session.rollback()
                return None
            row = AgentVersion(
                tenant=tenant,
                agent_id=agent_id,
                version=(latest or 0) + 1,
                definition=definition,
                retired=False,
                created_at=datetime.now(UTC),
            )
            session.add(row)
            try:
                await session.flush()
            except IntegrityError:  # a concurrent save won
                await session.rollback()
                return None
        return row

    async def retire(self, tenant: str, agent_id: str) -> bool:
        async with self.sessions() as session, session.begin():
            result = await session.execute(
                update(AgentVersion)
                .where(
                    AgentVersion.tenant == tenant,
                    AgentVersion.agent_id == agent_id,
                    AgentVersion.retired.is_(False),
                )
                .values(retired=True)
            )
        return bool(result.rowcount)  # type: ignore[attr-defined]


class RunRepository:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    # -- runs ------------------------------------------------------------------------
    async def create(self, row: AgentRun, *, new_thread: bool) -> AgentRun:
        """Insert a run (and its thread when new); `DuplicateRun` for a repeated key."""
        try:
            async with self.sessions() as session, session.begin():
                if new_thread:
                    session.add(AgentThread(id=row.thread_id, tenant=row.tenant))
                session.add(row)
        except IntegrityError:
            if row.idempotency_key is None:
                raise
            raise DuplicateRun() from None
        return row

    async def get(self, run_id: str, *, tenant: str | None = None) -> AgentRun | None:
        async with self.sessions() as session:
            row = await session.get(AgentRun, run_id)
        if row is None or (tenant is not None and row.tenant != tenant):
            return None
        return row

    async def by_idempotency_key(self, tenant: str, key: str) -> AgentRun | None:
        query = select(AgentRun).where(AgentRun.tenant == tenant, AgentRun.idempotency_key == key)
        async with self.sessions() as session:
            return (await session.execute(query)).scalar_one_or_none()

    async def update(self, run_id: str, *, unless: Sequence[str] = (), **values: Any) -> bool:
        """Set `values` unless the run's status is one of `unless`."""
        query = update(AgentRun).where(AgentRun.id == run_id).values(**values)
        if unless:
            query = query.where(AgentRun.status.not_in(unless))
        async with self.sessions() as session, session.begin():
            result = await session.execute(query)
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def count_active(self, tenant: str | None = None) -> int:
        query = select(func.count()).select_from(AgentRun).where(AgentRun.status.in_(ACTIVE_RUN))
        if tenant is not None:
            query = query.where(AgentRun.tenant == tenant)
        async with self.sessions() as session:
            return int((await session.execute(query)).scalar_one())

    # -- events ----------------------------------------------------------------------
    async def add_events(
        self, run_id: str, events: Sequence[tuple[int, str, dict[str, Any]]]
    ) -> None:
        """Append (seq, type, data) events and move the run's `last_seq` to the last."""
        if not events:
            return
        now = datetime.now(UTC)
        async with self.sessions() as session, session.begin():
            await session.execute(
                insert(AgentRunEvent),
                [
                    {"run_id": run_id, "seq": seq, "type": kind, "data": data, "created_at": now}
                    for seq, kind, data in events
                ],
            )
            await session.execute(  # never backwards: the run's final update may be ahead
                update(AgentRun)
                .where(AgentRun.id == run_id, AgentRun.last_seq < events[-1][0])
                .values(last_seq=events[-1][0])
            )

    async def events_after(
        self, run_id: str, after: int, *, limit: int = 500
    ) -> list[tuple[int, str, dict[str, Any]]]:
        query = (
            select(AgentRunEvent.seq, AgentRunEvent.type, AgentRunEvent.data)
            .where(AgentRunEvent.run_id == run_id, AgentRunEvent.seq > after)
            .order_by(AgentRunEvent.seq)
            .limit(limit)
        )
        async with self.sessions() as session:
            return [(seq, kind, data) for seq, kind, data in await session.execute(query)]

    # -- threads ---------------------------------------------------------------------
    async def thread(self, thread_id: str, *, tenant: str) -> AgentThread | None:
        async with self.sessions() as session:
            row = await session.get(AgentThread, thread_id)
        return row if row is not None and row.tenant == tenant else None

    async def thread_messages(self, thread_id: str, *, limit: int = 1000) -> list[dict[str, Any]]:
        query = (
            select(AgentThreadMessage.message)
            .where(AgentThreadMessage.thread_id == thread_id)
            .order_by(AgentThreadMessage.id)
            .limit(limit)
        )
        async with self.sessions() as session:
            return list((await session.execute(query)).scalars())

    async def add_thread_messages(
        self, thread_id: str, run_id: str, messages: Sequence[dict[str, Any]]
    ) -> None:
        if not messages:
            return
        now = datetime.now(UTC)
        async with self.sessions() as session, session.begin():
            session.add_all(
                AgentThreadMessage(thread_id=thread_id, run_id=run_id, message=m, created_at=now)
                for m in messages
            )
            await session.execute(
                update(AgentThread).where(AgentThread.id == thread_id).values(updated_at=now)
            )

    async def fail_abandoned(self, *, started_before: datetime) -> int:
        """Interactive runs still active long past any wall-clock limit: their process
        stopped without finishing them (a background run's job does this itself)."""
        async with self.sessions() as session, session.begin():
            result = await session.execute(
                update(AgentRun)
                .where(
                    AgentRun.status.in_(ACTIVE_RUN),
                    AgentRun.mode != "background",
                    AgentRun.created_at < started_before,
                )
                .values(
                    status="failed",
                    stop_reason="error",
                    error={"code": "process_lost", "message": "The process running it stopped."},
                    finished_at=datetime.now(UTC),
                )
            )
        return int(result.rowcount)  # type: ignore[attr-defined]

    async def purge_finished(self, *, before: datetime) -> int:
        """Runs finished before `before`, with their events."""
        async with self.sessions() as session, session.begin():
            old = select(AgentRun.id).where(
                AgentRun.finished_at < before, AgentRun.status.not_in(ACTIVE_RUN)
            )
            await session.execute(delete(AgentRunEvent).where(AgentRunEvent.run_id.in_(old)))
            result = await session.execute(delete(AgentRun).where(AgentRun.id.in_(old)))
        return int(result.rowcount)  # type: ignore[attr-defined]
