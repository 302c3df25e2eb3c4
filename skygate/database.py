"""The database as the commands reach it: the servers' own engine and sessions
(`core.container.open_infrastructure`, so pool, PgBouncer and SQLite settings are the
same), checked to be the gateway's database at the migrations' head before a key is
read or written, and the admin API's key service over it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from core.auth.authenticator import Authenticator
from core.auth.keys import KeyService
from core.config import Settings
from core.container import open_infrastructure
from core.limits.budget import SpendTracker
from core.observability.logging import redactor
from database.repositories.keys import KeyRepository
from database.repositories.usage import UsageRepository
from database.schema import current_revisions, head_revisions
from skygate.common import CommandError, shown_url

MIGRATE_HINT = "run `python -m skygate migrate` first"


def failure(exc: BaseException, settings: Settings) -> CommandError:
    """A database error as one line naming the database (its password hidden)."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    detail = redactor.scrub_text(str(cause).strip().splitlines()[0] if str(cause).strip() else "")
    reason = f"{type(cause).__name__}: {detail}" if detail else type(cause).__name__
    return CommandError(f"database {shown_url(settings.database_url)}: {reason}")


def missing_sqlite_file(url: str) -> Path | None:
    """The file of an SQLite URL that does not exist yet (opening it would create an
    empty database beside the real one, under whatever directory the command ran in)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    path = Path(parsed.database).expanduser()
    return None if path.exists() else path


async def revisions(engine: AsyncEngine) -> tuple[frozenset[str], frozenset[str]]:
    """(the revisions the database is at, the head on disk)."""
    return await current_revisions(engine), head_revisions()


def not_at_head(current: frozenset[str], heads: frozenset[str]) -> str | None:
    """/ready's reason for a database that is not at head, or None."""
    if current == heads:
        return None
    at = ",".join(sorted(current)) or "none"
    return f"database migrations not at head (at {at}, head {','.join(sorted(heads))})"


@asynccontextmanager
async def key_service(settings: Settings) -> AsyncIterator[KeyService]:
    """The admin API's `KeyService` on DATABASE_URL. Its caches (the authenticator's
    view of keys, a key's spend) are this process's, and empty: running gateways see
    a change within AUTH_CACHE_SECONDS, as they see one made on another worker."""
    missing = missing_sqlite_file(settings.database_url)
    if missing is not None:
        raise CommandError(
            f"no database at {missing} (DATABASE_URL={shown_url(settings.database_url)}): "
            f"point DATABASE_URL at the gateway's database, or {MIGRATE_HINT} to create it"
        )
    try:
        async with open_infrastructure(settings) as infra:
            problem = not_at_head(*await revisions(infra.engine))
            if problem is not None:
                raise CommandError(f"{problem}: {MIGRATE_HINT}")
            keys = KeyRepository(infra.sessions)
            auth = Authenticator(keys, admin_key=None, jwt_secret=None, enabled=True)
            yield KeyService(keys, auth=auth, spend=SpendTracker(UsageRepository(infra.sessions)))
    except (SQLAlchemyError, OSError) as exc:
        raise failure(exc, settings) from None


async def state(settings: Settings) -> tuple[frozenset[str], frozenset[str]]:
    """The migration state of DATABASE_URL (connecting creates an SQLite file)."""
    try:
        async with open_infrastructure(settings) as infra:
            return await revisions(infra.engine)
    except (SQLAlchemyError, OSError) as exc:
        raise failure(exc, settings) from None
