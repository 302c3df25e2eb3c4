"""Migration state: the head revision on disk and the revision a database is at.

`/ready` uses these to refuse traffic until migrations have run; tests and
`make run` use `upgrade_head` to migrate.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

ROOT = Path(__file__).resolve().parent.parent


def alembic_config(url: str | None = None) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "database" / "migrations"))
    if url:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revisions() -> frozenset[str]:
    return frozenset(ScriptDirectory.from_config(alembic_config()).get_heads())


async def current_revisions(engine: AsyncEngine) -> frozenset[str]:
    """The revisions the database is at; empty when it was never migrated."""
    async with engine.connect() as conn:
        try:
            rows = await conn.execute(text("SELECT version_num FROM alembic_version"))
        except DBAPIError as exc:
            if "alembic_version" in str(exc.orig if exc.orig else exc):
                return frozenset()
            raise
        return frozenset(row[0] for row in rows)


def upgrade_head(url: str) -> None:
    """Run `alembic upgrade head` against `url` (blocking; not inside an event loop)."""
    command.upgrade(alembic_config(url), "head")
