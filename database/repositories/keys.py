"""API keys: lookups for the authenticator, changes for the admin endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from database.models import ApiKey


class KeyRepository:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def by_hash(self, key_hash: str) -> ApiKey | None:
        async with self.sessions() as session:
            result = await session.execute(select(ApiKey).where(ApiKey.key_hash == key_hash))
            return result.scalar_one_or_none()

    async def by_id(self, key_id: str) -> ApiKey | None:
        async with self.sessions() as session:
            return await session.get(ApiKey, key_id)

    async def list(self, *, tenant: str | None = None) -> list[ApiKey]:
        query = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
        if tenant is not None:
            query = query.where(ApiKey.tenant == tenant)
        async with self.sessions() as session:
            return list((await session.execute(query)).scalars())

    async def create(self, **values: Any) -> ApiKey:
        """Insert a key and read it back (with the defaults the database filled in)."""
        row = ApiKey(**values)
        async with self.sessions() as session, session.begin():
            session.add(row)
        stored = await self.by_id(row.id)
        if stored is None:  # pragma: no cover - the insert above committed
            raise LookupError(row.id)
        return stored

    async def update(self, key_id: str, **values: Any) -> None:
        async with self.sessions() as session, session.begin():
            await session.execute(update(ApiKey).where(ApiKey.id == key_id).values(**values))

    async def expire_past(self, now: datetime) -> int:
        """Mark active keys whose `expires_at` has passed as `expired` (the
        `maintenance.expire_keys` job): the authenticator already refuses them by
        date; the state makes the key list say so. The number marked."""
        query = (
            update(ApiKey)
            .where(
                ApiKey.state == "active",
                ApiKey.expires_at.is_not(None),
                ApiKey.expires_at <= now,
            )
            .values(state="expired")
        )
        async with self.sessions() as session, session.begin():
            return int((await session.execute(query)).rowcount)  # type: ignore[attr-defined]
