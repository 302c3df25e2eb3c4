"""The migrations build exactly the schema the ORM models describe, on both
backends, and undo it: a column, index or constraint added to one side only (the
partial unique index behind a job's 409, say) fails here, not in production."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect

from database.engine import EngineOptions, create_engine
from database.models import Base
from database.schema import alembic_config, ours, upgrade_head


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "include_name": ours}
    )
    return list(compare_metadata(context, Base.metadata))


@pytest.fixture(params=["sqlite", "postgres"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/skygate.db"
    url: str = request.getfixturevalue("postgres_url")
    return url


async def test_the_migrated_schema_is_the_models_schema(fresh_url: str) -> None:
    await asyncio.to_thread(upgrade_head, fresh_url)
    engine = create_engine(EngineOptions(url=fresh_url))
    try:
        async with engine.connect() as connection:
            differences = await connection.run_sync(_differences)
            tables = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert differences == []
        queue = {"pgqueuer", "pgqueuer_log", "pgqueuer_statistics", "pgqueuer_schedules"}
        if engine.dialect.name == "postgresql":  # the job queue's own schema (0005)
            assert queue <= tables
        else:  # the embedded default queues in memory
            assert not queue & tables
    finally:
        await engine.dispose()


async def test_every_migration_can_be_undone(fresh_url: str) -> None:
    await asyncio.to_thread(upgrade_head, fresh_url)
    await asyncio.to_thread(command.downgrade, alembic_config(fresh_url), "base")
    engine = create_engine(EngineOptions(url=fresh_url))
    try:
        async with engine.connect() as connection:
            tables = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert tables <= {"alembic_version"}, "pgqueuer's tables included"
    finally:
        await engine.dispose()
