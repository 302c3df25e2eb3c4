"""`skygate migrate`: `alembic upgrade head` on DATABASE_URL.

The same upgrade `make migrate`, Render's pre-deploy step and the tests run
(`database.schema.upgrade_head`, through alembic.ini and database/migrations/env.py),
on the URL the servers read (DATABASE_URL or ./.env, normalised by Settings). An
SQLite file and its directory are created when missing; running it again at head
changes nothing.
"""

from __future__ import annotations

import argparse
import asyncio

from sqlalchemy.exc import SQLAlchemyError

from database.schema import upgrade_head
from skygate import common
from skygate.common import shown_url
from skygate.database import failure, state

Commands = argparse._SubParsersAction  # argparse names no public type for it


def register(commands: Commands[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "migrate",
        help="apply the database migrations (alembic upgrade head)",
        description="Bring the database at DATABASE_URL to the migrations' head, as "
        "`make migrate` and Render's pre-deploy step do; an SQLite file is created when "
        "missing. Safe to run again: at head it changes nothing. Run it before the "
        "gateway starts on a new version (`/ready` refuses traffic until it has run).",
    )
    parser.set_defaults(run=migrate)


def migrate(args: argparse.Namespace) -> int:
    settings = common.settings()
    before, heads = asyncio.run(state(settings))
    target = ",".join(sorted(heads))
    if before == heads:
        print(f"Database {shown_url(settings.database_url)} is at head ({target}): nothing to do.")
        return common.OK
    try:
        upgrade_head(settings.database_url)  # runs its own event loop (env.py)
    except (SQLAlchemyError, OSError) as exc:
        raise failure(exc, settings) from None
    after, _ = asyncio.run(state(settings))
    was = ",".join(sorted(before)) or "empty"
    print(
        f"Database {shown_url(settings.database_url)} migrated from {was} "
        f"to {','.join(sorted(after))}."
    )
    return common.OK
