"""`skygate migrate`: an empty SQLite database brought to head, as `make migrate`
does, from DATABASE_URL or ./.env like the servers; at head it changes nothing."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from database.schema import head_revisions
from tests.support.cli import environment, run

HEAD = ",".join(sorted(head_revisions()))


def at(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {row[0] for row in db.execute("SELECT version_num FROM alembic_version")}


def test_migrate_brings_an_empty_sqlite_database_to_head(tmp_path: Path) -> None:
    path = tmp_path / "new" / "skygate.db"  # neither the file nor its directory exists
    env = environment(DATABASE_URL=f"sqlite:///{path}")
    migrated = run("migrate", cwd=tmp_path, env=env)
    assert migrated.code == 0, migrated.output
    assert f"migrated from empty to {HEAD}" in migrated.stdout
    assert at(path) == set(head_revisions())
    with sqlite3.connect(path) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    assert {"api_keys", "usage_records", "jobs"} <= tables

    again = run("migrate", cwd=tmp_path, env=env)
    assert again.code == 0, again.output
    assert f"is at head ({HEAD}): nothing to do" in again.stdout


def test_migrate_reads_database_url_from_dotenv_like_the_servers(tmp_path: Path) -> None:
    path = tmp_path / "from-dotenv.db"
    (tmp_path / ".env").write_text(f"DATABASE_URL=sqlite:///{path}\n")
    migrated = run("migrate", cwd=tmp_path)
    assert migrated.code == 0, migrated.output
    assert at(path) == set(head_revisions())
    assert not (tmp_path / "data").exists()  # not the default database


def test_an_invalid_environment_is_refused_before_migrating(tmp_path: Path) -> None:
    refused = run("migrate", cwd=tmp_path, env=environment(ENVIRONMENT="production"))
    assert refused.code == 1, refused.output
    assert "DATABASE_URL must point at PostgreSQL in production" in refused.stderr
    assert not (tmp_path / "data").exists()
