"""Usage accounting written in batches, off the request path.

`record()` never waits: it appends to a bounded in-memory queue (dropping, and
counting the drop, if the database falls far behind). A background task writes
the queue to `usage_records` every `USAGE_FLUSH_SECONDS` or when a batch fills,
and once more at shutdown. A database outage delays accounting; it never fails
or slows a request. On PostgreSQL a batch is one binary COPY through asyncpg
(~2 us of CPU per row, where SQLAlchemy's multi-row INSERT cost ~12 us and
prepared a new statement for every batch size; docs/PERFORMANCE.md); SQLite
keeps the INSERT. A record's `estimated` says its tokens are the gateway's
estimate (`core.ledger`), not the provider's figure.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy import Date, case, cast, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core import metrics
from database.models import UsageRecord

log = structlog.get_logger("skygate.usage")

MAX_QUEUE = 50_000
BATCH = 500


@dataclass(slots=True)
class UsageEvent:
    request_id: str
    tenant: str
    api_key_id: str | None
    model_group: str
    provider: str | None
    model: str | None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_ms: float
    cache_status: str
    outcome: str
    estimated: bool = False  # tokens estimated by the gateway, not reported by the provider
    created_at: datetime | None = None


_EVENT_FIELDS = tuple(f.name for f in fields(UsageEvent))


def _row(event: UsageEvent) -> dict[str, Any]:
    """The insert parameters (`dataclasses.asdict` deep-copies; nothing here needs it)."""
    return {name: getattr(event, name) for name in _EVENT_FIELDS}


def _record(event: UsageEvent) -> tuple[Any, ...]:
    """The COPY tuple, in `_EVENT_FIELDS` order (numerics as Decimal for asyncpg)."""
    row = _row(event)
    row["cost_usd"] = Decimal(repr(event.cost_usd))
    row["latency_ms"] = Decimal(repr(event.latency_ms))
    return tuple(row.values())


class UsageRecorder:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, flush_seconds: float) -> None:
        self.sessions = sessions
        bind = sessions.kw.get("bind")
        self.copy = bind is not None and bind.dialect.name == "postgresql"
        self.flush_seconds = flush_seconds
        self.queue: list[UsageEvent] = []
        self.wakeup = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.failing = False
        self.stopping = False

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name="usage-writer")

    def record(self, event: UsageEvent) -> None:
        if len(self.queue) >= MAX_QUEUE:
            metrics.USAGE_DROPPED.inc()
            return
        event.created_at = event.created_at or datetime.now(UTC)
        self.queue.append(event)
        if len(self.queue) >= BATCH:
            self.wakeup.set()

    async def _run(self) -> None:
        while not self.stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wakeup.wait(), self.flush_seconds)
            self.wakeup.clear()
            await self.flush()

    async def flush(self) -> None:
        """Write what is queued now, in batches. What arrives meanwhile waits for
        the next flush: chasing it would write a few rows at a time for as long as
        requests keep coming (one statement per handful of requests under load)."""
        pending = len(self.queue)
        while pending > 0 and self.queue:
            size = min(BATCH, pending)
            batch, self.queue = self.queue[:size], self.queue[size:]
            pending -= size
            try:
                await self._write(batch)
            except Exception as exc:  # database down: keep the batch, try again later
                self.queue = batch + self.queue
                if not self.failing:
                    log.warning(
                        "usage_write_failed", error=type(exc).__name__, pending=len(self.queue)
                    )
                    self.failing = True
                return
            if self.failing:
                log.warning("usage_write_recovered")
                self.failing = False
            metrics.USAGE_WRITTEN.inc(len(batch))

    async def _write(self, batch: list[UsageEvent]) -> None:
        async with self.sessions() as session:
            if self.copy:
                # In its own transaction: asyncpg prepares a type lookup before the
                # COPY, and behind PgBouncer (transaction pooling) both must reach
                # the same server connection.
                connection = await session.connection()
                driver: Any = (await connection.get_raw_connection()).driver_connection
                async with driver.transaction():
                    await driver.copy_records_to_table(
                        UsageRecord.__tablename__,
                        records=[_record(e) for e in batch],
                        columns=_EVENT_FIELDS,
                    )
                return
            async with session.begin():
                await session.execute(insert(UsageRecord), [_row(e) for e in batch])

    async def close(self) -> None:
        """Write what is queued and stop. The writer is asked to stop, not cancelled:
        cancelling it mid-insert would strand a database connection."""
        self.stopping = True
        self.wakeup.set()
        if self.task is not None:
            await self.task
        await self.flush()


async def usage_summary(
    session: AsyncSession, *, tenant: str | None, since: date, until: date
) -> list[dict[str, Any]]:
    """Totals by day (UTC), model group and tenant (one tenant, or all for admins)."""
    if session.get_bind().dialect.name == "sqlite":
        day: Any = func.date(UsageRecord.created_at)
    else:
        day = cast(func.timezone("UTC", UsageRecord.created_at), Date)
    start = datetime.combine(since, time.min, tzinfo=UTC)
    end = datetime.combine(until + timedelta(days=1), time.min, tzinfo=UTC)
    query = (
        select(
            day.label("day"),
            UsageRecord.model_group,
            UsageRecord.tenant,
            func.count().label("requests"),
            func.sum(UsageRecord.prompt_tokens).label("prompt_tokens"),
            func.sum(UsageRecord.completion_tokens).label("completion_tokens"),
            func.sum(UsageRecord.cost_usd).label("cost_usd"),
            func.sum(case((UsageRecord.cache_status == "hit", 1), else_=0)).label("cache_hits"),
            func.sum(case((UsageRecord.estimated, 1), else_=0)).label("estimated"),
        )
        .where(UsageRecord.created_at >= start, UsageRecord.created_at < end)
        .group_by(day, UsageRecord.model_group, UsageRecord.tenant)
        .order_by(day, UsageRecord.model_group, UsageRecord.tenant)
    )
    if tenant is not None:
        query = query.where(UsageRecord.tenant == tenant)
    rows = (await session.execute(query)).all()
    return [
        {
            "date": str(row.day),
            "model": row.model_group,
            "tenant": row.tenant,
            "requests": int(row.requests),
            "prompt_tokens": int(row.prompt_tokens or 0),
            "completion_tokens": int(row.completion_tokens or 0),
            "cost_usd": round(float(row.cost_usd or 0), 9),
            "cache_hits": int(row.cache_hits or 0),
            "estimated": int(row.estimated or 0),
        }
        for row in rows
    ]
