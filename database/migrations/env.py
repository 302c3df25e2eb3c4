"""Alembic environment: runs migrations on the async engine Skygate uses.

The URL is `sqlalchemy.url` when a caller (the tests, `database.schema`) sets it
on the Alembic config; otherwise DATABASE_URL from the environment or `./.env`
(what `Settings` reads), normalised the same way, else the embedded default.
The database layer reads no application settings: it sits below `core`.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection

from database.engine import (
    DEFAULT_DATABASE_URL,
    EngineOptions,
    create_engine,
    normalize_database_url,
)
from database.models import Base
from database.schema import ours

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    raw = os.environ.get("DATABASE_URL") or _dotenv("DATABASE_URL")
    return normalize_database_url(raw) if raw else DEFAULT_DATABASE_URL


def _dotenv(name: str) -> str | None:
    from dotenv import dotenv_values  # pydantic-settings' own .env reader

    values = {key.upper(): value for key, value in dotenv_values(".env").items()}
    return values.get(name)


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_name=ours,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = create_engine(EngineOptions(url=_url(), pool_size=1, max_overflow=0))
    async with engine.connect() as connection:
        await connection.run_sync(_configure)
    await engine.dispose()


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
    else:
        asyncio.run(_run_async())
