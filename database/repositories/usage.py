"""Usage records: batched writes from the usage recorder, month-to-date spend per
key for budgets, and the daily summary behind `/api/v1/usage`.

On PostgreSQL a batch is one binary COPY through asyncpg (~2 us of CPU per row,
where SQLAlchemy's multi-row INSERT cost ~12 us and prepared a new statement for
every batch size; docs/PERFORMANCE.md); SQLite keeps the INSERT.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Date, Numeric, case, cast, delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from database.models import UsageRecord

_NUMERIC = frozenset(
    column.name for column in UsageRecord.__table__.columns if isinstance(column.type, Numeric)
)


class UsageRepository:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions
        bind = sessions.kw.get("bind")
        self.copy = bind is not None and bind.dialect.name == "postgresql"

    async def insert(self, columns: tuple[str, ...], rows: Sequence[tuple[Any, ...]]) -> None:
        """Write rows, each a tuple in `columns` order, in one transaction."""
        async with self.sessions() as session:
            if self.copy:
                # In its own transaction: asyncpg prepares a type lookup before the
                # COPY, and behind PgBouncer (transaction pooling) both must reach
                # the same server connection.
                numeric = [i for i, name in enumerate(columns) if name in _NUMERIC]
                records = rows
                if numeric:  # asyncpg's binary COPY wants Decimal for NUMERIC
                    records = [_decimals(row, numeric) for row in rows]
                connection = await session.connection()
                driver: Any = (await connection.get_raw_connection()).driver_connection
                async with driver.transaction():
                    await driver.copy_records_to_table(
                        UsageRecord.__tablename__, records=records, columns=columns
                    )
                return
            async with session.begin():
                await session.execute(
                    insert(UsageRecord), [dict(zip(columns, row, strict=True)) for row in rows]
                )

    async def spend_since(
        self, key_id: str, *, since: datetime, after_id: int = 0
    ) -> tuple[float, int]:
        """Spend of a key recorded since `since` in rows with id > `after_id`, and the
        highest id seen — so a caller can keep a running total reading only new rows."""
        query = select(
            func.coalesce(func.sum(UsageRecord.cost_usd), 0),
            func.coalesce(func.max(UsageRecord.id), after_id),
        ).where(
            UsageRecord.api_key_id == key_id,
            UsageRecord.created_at >= since,
            UsageRecord.id > after_id,
        )
        async with self.sessions() as session:
            total, last_id = (await session.execute(query)).one()
        return float(total), int(last_id)

    async def summary(
        self, *, tenant: str | None, since: date, until: date
    ) -> list[dict[str, Any]]:
        """Totals by day (UTC), model group and tenant (one tenant, or all)."""
        async with self.sessions() as session:
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
                    func.sum(case((UsageRecord.cache_status == "hit", 1), else_=0)).label(
                        "cache_hits"
                    ),
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

    async def purge_before(self, before: datetime) -> int:
        """Delete usage rows recorded before `before` (USAGE_RETENTION_DAYS, the
        `maintenance.purge` job); the number deleted."""
        query = delete(UsageRecord).where(UsageRecord.created_at < before)
        async with self.sessions() as session, session.begin():
            return int((await session.execute(query)).rowcount)  # type: ignore[attr-defined]


def _decimals(row: tuple[Any, ...], numeric: list[int]) -> tuple[Any, ...]:
    values = list(row)
    for index in numeric:
        if values[index] is not None:
            values[index] = Decimal(repr(values[index]))
    return tuple(values)
