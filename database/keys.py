"""Queries for API keys and the spend recorded against them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import ApiKey, UsageRecord


async def key_by_hash(session: AsyncSession, *, key_hash: str) -> ApiKey | None:
    result = await session.execute(select(ApiKey).where(ApiKey.key_hash == key_hash))
    return result.scalar_one_or_none()


async def key_by_id(session: AsyncSession, *, key_id: str) -> ApiKey | None:
    return await session.get(ApiKey, key_id)


async def list_keys(session: AsyncSession, *, tenant: str | None = None) -> list[ApiKey]:
    query = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
    if tenant is not None:
        query = query.where(ApiKey.tenant == tenant)
    return list((await session.execute(query)).scalars())


async def update_key(session: AsyncSession, *, key_id: str, values: dict[str, Any]) -> None:
    await session.execute(update(ApiKey).where(ApiKey.id == key_id).values(**values))


async def spend_since(
    session: AsyncSession, *, key_id: str, since: datetime, after_id: int = 0
) -> tuple[float, int]:
    """Spend of a key recorded since `since` in rows with id > `after_id`, and the
    highest id seen — so a caller can keep a running total reading only new rows."""
    result = await session.execute(
        select(
            func.coalesce(func.sum(UsageRecord.cost_usd), 0),
            func.coalesce(func.max(UsageRecord.id), after_id),
        ).where(
            UsageRecord.api_key_id == key_id,
            UsageRecord.created_at >= since,
            UsageRecord.id > after_id,
        )
    )
    total, last_id = result.one()
    return float(total), int(last_id)
