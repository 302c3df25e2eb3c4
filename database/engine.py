"""The async SQLAlchemy engine and session factory for PostgreSQL or SQLite.

PostgreSQL runs on asyncpg with a bounded, pre-pinged, recycled pool. Behind
PgBouncer in transaction mode (`DATABASE_PGBOUNCER=true`) asyncpg's prepared
statement caches are turned off and statement names made unique, as the
SQLAlchemy asyncpg dialect documents. The embedded default is an SQLite file
(aiosqlite) in WAL mode, its directory created on first use.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./data/skygate.db"


def normalize_database_url(url: str) -> str:
    """Map the URLs platforms hand out onto the async drivers Skygate uses.

    Render and Heroku give `postgres://` or `postgresql://`; SQLAlchemy needs
    `postgresql+asyncpg://`. libpq's `sslmode` is not an asyncpg argument, so it
    becomes asyncpg's `ssl`. Plain `sqlite://` becomes `sqlite+aiosqlite://`.
    """
    url = url.strip()
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("DATABASE_URL must look like postgresql://user:pass@host/db")
    scheme = scheme.lower()
    if scheme in {"postgres", "postgresql", "postgresql+psycopg2", "postgresql+psycopg"}:
        scheme = "postgresql+asyncpg"
    elif scheme == "sqlite":
        scheme = "sqlite+aiosqlite"
    url = f"{scheme}://{rest}"
    if scheme == "postgresql+asyncpg":
        parts = urlsplit(url)
        query = [("ssl" if k == "sslmode" else k, v) for k, v in parse_qsl(parts.query)]
        url = urlunsplit(parts._replace(query=urlencode(query)))
    return url


def asyncpg_dsn(url: str) -> str:
    """The libpq-style DSN asyncpg takes directly (for connections SQLAlchemy does
    not manage: the job queue's LISTEN connection): the driver suffix dropped and
    `ssl` back to libpq's `sslmode`."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0]
    query = [("sslmode" if k == "ssl" else k, v) for k, v in parse_qsl(parts.query)]
    return urlunsplit(parts._replace(scheme=scheme, query=urlencode(query)))


@dataclass(frozen=True, slots=True)
class EngineOptions:
    url: str
    pool_size: int = 10
    max_overflow: int = 20
    pool_timeout: float = 30
    pool_recycle: int = 1800
    pgbouncer: bool = False
    echo: bool = False


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def ensure_sqlite_dir(url: str) -> None:
    """Create the directory of a file-backed SQLite database."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def engine_kwargs(options: EngineOptions) -> dict[str, Any]:
    """Keyword arguments for `create_async_engine` (also used by Alembic)."""
    url = make_url(options.url)
    if url.get_backend_name() == "sqlite":
        return {"connect_args": {"timeout": 30}}
    kwargs: dict[str, Any] = {
        "pool_size": options.pool_size,
        "max_overflow": options.max_overflow,
        "pool_timeout": options.pool_timeout,
        "pool_recycle": options.pool_recycle,
        "pool_pre_ping": True,
        "connect_args": {
            "timeout": 10,
            "command_timeout": 60,
            "server_settings": {"application_name": "skygate"},
        },
    }
    if options.pgbouncer:
        kwargs["connect_args"].update(
            statement_cache_size=0,
            prepared_statement_name_func=lambda: f"__asyncpg_{uuid.uuid4()}__",
        )
        kwargs["connect_args"]["server_settings"] = {}
    return kwargs


def create_engine(options: EngineOptions) -> AsyncEngine:
    url = make_url(options.url)
    if options.pgbouncer and url.get_backend_name() == "postgresql":
        url = url.update_query_dict({"prepared_statement_cache_size": "0"})
    ensure_sqlite_dir(options.url)
    engine = create_async_engine(url, echo=options.echo, **engine_kwargs(options))
    if url.get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
