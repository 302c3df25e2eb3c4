"""Migration state: the head revision on disk and the revision a database is at.

`/ready` uses these to refuse traffic until migrations have run; tests and
`make run` use `upgrade_head` to migrate. Workers only need the head, which is
read from the revision files directly: importing Alembic would cost every
worker ~11 MiB for one string (a test checks both agree).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

if TYPE_CHECKING:
    from alembic.config import Config

ROOT = Path(__file__).resolve().parent.parent
VERSIONS = ROOT / "database" / "migrations" / "versions"
_REVISION = re.compile(r'^revision(?:: str)? = ["\'](\w+)["\']', re.MULTILINE)
_DOWN = re.compile(r"^down_revision(?:: [^=]+)? = (.+)$", re.MULTILINE)


# Objects the migrations create but the ORM does not model: pgqueuer's queue
# (0005). Autogenerate and the schema check leave them out.
FOREIGN_PREFIXES = ("pgqueuer",)


def ours(name: str | None, type_: str, parent_names: object) -> bool:
    """Alembic's `include_name` hook: False for objects Skygate does not model."""
    return not (name or "").startswith(FOREIGN_PREFIXES)


def alembic_config(url: str | None = None) -> Config:
    from alembic.config import Config

    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "database" / "migrations"))
    if url:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revisions(versions: Path = VERSIONS) -> frozenset[str]:
    """Revisions no other revision builds on, read from the migration files."""
    revisions, parents = set(), set()
    for path in versions.glob("*.py"):
        source = path.read_text()
        revision = _REVISION.search(source)
        if revision is None:
            continue
        revisions.add(revision.group(1))
        down = _DOWN.search(source)
        if down is not None:
            parents.update(re.findall(r"[\"'](\w+)[\"']", down.group(1)))
    return frozenset(revisions - parents)


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
    from alembic import command

    command.upgrade(alembic_config(url), "head")
