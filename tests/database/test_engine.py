"""The engine on both backends: migrations apply, pool settings and the
PgBouncer switch reach the driver."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

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


async def test_postgres_pool_settings_and_pre_ping(postgres_url: str) -> None:
    options = EngineOptions(
        url=postgres_url, pool_size=3, max_overflow=2, pool_timeout=5, pool_recycle=60
    )
    engine = create_engine(options)
    try:
        pool = engine.sync_engine.pool
        assert pool.size() == 3  # type: ignore[attr-defined]
        assert pool._pre_ping is True  # type: ignore[attr-defined]
        assert pool._recycle == 60  # type: ignore[attr-defined]
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar() == 1
    finally:
        await engine.dispose()


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
