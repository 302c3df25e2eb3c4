"""The API-key cache of a worker, against a real database: a busy key is renewed
in the background before it expires, an expired one is read once for every
concurrent request, and a revocation is never served past the cache time."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import event, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from core.auth.authenticator import Authenticator
from core.auth.credentials import display_prefix, hash_api_key, new_api_key
from core.errors import AuthenticationError
from database.engine import EngineOptions, create_engine, session_factory
from database.models import ApiKey
from database.repositories.keys import KeyRepository

TTL = 0.4


class Database:
    def __init__(self, engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.engine = engine
        self.sessions = sessions
        self.key_reads = 0
        event.listen(engine.sync_engine, "before_cursor_execute", self._count)

    def _count(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "api_keys" in statement:
            self.key_reads += 1

    async def add_key(self) -> tuple[str, str]:
        secret = new_api_key()
        key_id = str(uuid.uuid4())
        async with self.sessions() as session, session.begin():
            session.add(
                ApiKey(
                    id=key_id,
                    name="test",
                    tenant="acme",
                    key_prefix=display_prefix(secret),
                    key_hash=hash_api_key(secret),
                    state="active",
                )
            )
        return secret, key_id

    async def revoke(self, key_id: str) -> None:
        async with self.sessions() as session, session.begin():
            await session.execute(update(ApiKey).where(ApiKey.id == key_id).values(state="revoked"))


@pytest.fixture
async def database(sqlite_url: str) -> AsyncIterator[Database]:
    engine = create_engine(EngineOptions(url=sqlite_url))
    try:
        yield Database(engine, session_factory(engine))
    finally:
        await engine.dispose()


def authenticator(database: Database) -> Authenticator:
    return Authenticator(
        KeyRepository(database.sessions),
        admin_key=None,
        jwt_secret=None,
        enabled=True,
        cache_seconds=TTL,
    )


async def test_an_expired_key_is_read_once_for_a_burst_of_requests(database: Database) -> None:
    secret, _ = await database.add_key()
    auth = authenticator(database)
    principals = await asyncio.gather(
        *(auth.authenticate(secret, client_ip="127.0.0.1") for _ in range(20))
    )
    assert {p.tenant for p in principals} == {"acme"}
    assert database.key_reads == 1, "twenty concurrent requests, one read"
    await asyncio.sleep(TTL + 0.05)
    await asyncio.gather(*(auth.authenticate(secret, client_ip="127.0.0.1") for _ in range(20)))
    assert database.key_reads == 2


async def test_a_busy_key_is_renewed_before_it_expires(database: Database) -> None:
    secret, _ = await database.add_key()
    auth = authenticator(database)
    await auth.authenticate(secret, client_ip="127.0.0.1")
    reads = database.key_reads
    await asyncio.sleep(TTL * 0.8)  # in the last quarter: served, and renewed behind
    await auth.authenticate(secret, client_ip="127.0.0.1")
    await asyncio.sleep(0.05)
    assert database.key_reads == reads + 1, "renewed in the background"
    await asyncio.sleep(TTL * 0.5)  # past the first expiry, within the renewed one
    await auth.authenticate(secret, client_ip="127.0.0.1")
    assert database.key_reads == reads + 1, "no request waited for a read"


async def test_a_revoked_key_is_refused_within_the_cache_time(database: Database) -> None:
    secret, key_id = await database.add_key()
    auth = authenticator(database)
    await auth.authenticate(secret, client_ip="127.0.0.1")
    await database.revoke(key_id)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TTL + 0.2
    refused_at = None
    while loop.time() < deadline:
        try:
            await auth.authenticate(secret, client_ip="127.0.0.1")
        except AuthenticationError:
            refused_at = loop.time()
            break
        await asyncio.sleep(0.01)
    assert refused_at is not None, "the revoked key was still accepted after the cache time"
