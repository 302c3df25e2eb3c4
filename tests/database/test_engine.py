"""The engine on both backends: migrations apply, the PostgreSQL pool holds its
bounds and replaces connections the server dropped, and the PgBouncer switch
reaches the driver."""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack

import pytest
from sqlalchemy import exc, text
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool

from database.engine import EngineOptions, create_engine, engine_kwargs
from database.schema import current_revisions, head_revisions, upgrade_head


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_migrations_reach_head_on_both_backends(
    backend: str, request: pytest.FixtureRequest, tmp_path: object
) -> None:
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path}/nested/dir/skygate.db"
    else:
        url = request.getfixturevalue("postgres_url")
    engine = create_engine(EngineOptions(url=url))
    try:
        assert await current_revisions(engine) == frozenset()
        await asyncio.to_thread(upgrade_head, url)
        assert await current_revisions(engine) == head_revisions()
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO usage_records (request_id, tenant, model_group, prompt_tokens,"
                    " completion_tokens, cost_usd, latency_ms, cache_status, outcome)"
                    " VALUES ('r1', 't1', 'demo', 3, 4, 0.000012, 5.5, 'miss', 'success')"
                )
            )
            row = (
                await conn.execute(
                    text("SELECT tenant, prompt_tokens, created_at FROM usage_records")
                )
            ).one()
        assert row[0] == "t1" and row[1] == 3 and row[2] is not None
    finally:
        await engine.dispose()


async def test_postgres_pool_is_bounded_and_waits_pool_timeout(postgres_url: str) -> None:
    """pool_size + max_overflow connections can be held at once; the next
    checkout waits `pool_timeout` for one to come back, then fails."""
    options = EngineOptions(url=postgres_url, pool_size=2, max_overflow=1, pool_timeout=0.5)
    engine = create_engine(options)
    try:
        async with AsyncExitStack() as held:
            for _ in range(3):
                conn = await held.enter_async_context(engine.connect())
                assert (await conn.execute(text("SELECT 1"))).scalar() == 1
            started = time.monotonic()
            with pytest.raises(exc.TimeoutError):
                async with engine.connect():
                    pass
            assert 0.4 <= time.monotonic() - started < 5
        async with engine.connect() as conn:  # one came back: served at once
            assert (await conn.execute(text("SELECT 1"))).scalar() == 1
    finally:
        await engine.dispose()


async def backend_pid(conn: AsyncConnection) -> int:
    pid: int = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
    return pid


async def test_pooled_connections_the_server_dropped_are_replaced(postgres_url: str) -> None:
    """PostgreSQL restarts or a proxy cuts idle connections: the pool's next
    checkout pings, finds them dead and opens new ones; no caller gets an error."""
    engine = create_engine(EngineOptions(url=postgres_url, pool_size=2, max_overflow=0))
    admin = create_async_engine(postgres_url, poolclass=NullPool)
    try:
        async with engine.connect() as first, engine.connect() as second:
            pooled = {await backend_pid(first), await backend_pid(second)}
            name = (await first.execute(text("SHOW application_name"))).scalar_one()
            assert name == "skygate"
        async with admin.connect() as conn:  # both idle in the pool now; cut them
            for pid in pooled:
                await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            deadline = time.monotonic() + 10
            alive = text("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(:pids)")
            while (await conn.execute(alive, {"pids": list(pooled)})).scalar_one():
                assert time.monotonic() < deadline, "the server did not end the backends"
                await asyncio.sleep(0.05)
        async with engine.connect() as first, engine.connect() as second:
            fresh = {await backend_pid(first), await backend_pid(second)}
        assert fresh.isdisjoint(pooled)
    finally:
        await engine.dispose()
        await admin.dispose()


async def test_pgbouncer_mode_turns_prepared_statement_caches_off(postgres_url: str) -> None:
    options = EngineOptions(url=postgres_url, pgbouncer=True)
    connect_args = engine_kwargs(options)["connect_args"]
    assert connect_args["statement_cache_size"] == 0
    names = {connect_args["prepared_statement_name_func"]() for _ in range(3)}
    assert len(names) == 3
    engine = create_engine(options)
    try:
        assert engine.url.query["prepared_statement_cache_size"] == "0"
        async with engine.connect() as conn:  # and it still works against a real server
            for _ in range(3):
                assert (await conn.execute(text("SELECT 1"))).scalar() == 1
    finally:
        await engine.dispose()


def test_head_from_the_files_is_alembics_head() -> None:
    from alembic.script import ScriptDirectory

    from database.schema import alembic_config

    alembic_heads = frozenset(ScriptDirectory.from_config(alembic_config()).get_heads())
    assert head_revisions() == alembic_heads and len(alembic_heads) == 1
