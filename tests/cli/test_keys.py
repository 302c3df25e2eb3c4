"""`skygate keys`: keys made in the database by a real CLI process, used against a
running gateway on the same database (SQLite and PostgreSQL): the secret printed
once and working, listed without it, refused once revoked, replaced by rotation,
and the same key the admin API makes.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from database.schema import head_revisions
from tests.support.app import make_settings, running_app
from tests.support.auth import ADMIN, bearer, create_key
from tests.support.cli import arun, environment, run
from tests.support.requests import CHAT, chat

CACHE_SECONDS = 0.2  # AUTH_CACHE_SECONDS of the app: how long it may still accept an old secret


async def call(client: httpx.AsyncClient, secret: str) -> httpx.Response:
    return await client.post(CHAT, json=chat(model="demo"), headers=bearer(secret))


async def refused_soon(client: httpx.AsyncClient, secret: str) -> httpx.Response:
    """The gateway's answer to `secret` once it has had AUTH_CACHE_SECONDS (and a
    generous margin for a slow machine) to see a change made by another process."""
    deadline = time.monotonic() + CACHE_SECONDS + 5.0
    while True:
        response = await call(client, secret)
        if response.status_code == 401 or time.monotonic() > deadline:
            return response
        await asyncio.sleep(0.05)


def gateway(database_url: str) -> Any:
    return running_app(
        make_settings(
            database_url=database_url, admin_api_key=ADMIN, auth_cache_seconds=CACHE_SECONDS
        )
    )


async def lifecycle(database_url: str, cli_env: dict[str, str], cwd: Path) -> None:
    """Create, use, list, rotate and revoke one key with the CLI while a gateway
    on the same database serves it."""
    async with gateway(database_url) as (_, client):
        created = await arun(
            "keys", "create", "--tenant", "team-a", "--name", "ci", cwd=cwd, env=cli_env
        )
        assert created.code == 0, created.output
        (secret,) = created.secrets()  # printed exactly once
        assert (await call(client, secret)).status_code == 200

        listed = await arun("keys", "list", "--json", cwd=cwd, env=cli_env)
        assert listed.code == 0, listed.output
        (row,) = listed.json()["data"]
        assert row["tenant"] == "team-a" and row["prefix"] == secret[:12]
        assert "key" not in row and listed.secrets() == []
        table = await arun("keys", "list", cwd=cwd, env=cli_env)
        assert row["id"] in table.stdout and secret[:12] in table.stdout
        assert table.secrets() == []

        rotated = await arun("keys", "rotate", row["id"], "--json", cwd=cwd, env=cli_env)
        assert rotated.code == 0, rotated.output
        new_secret = rotated.json()["key"]
        assert rotated.secrets() == [new_secret] and new_secret != secret
        assert rotated.json()["id"] == row["id"]  # the same key: its limits, spend and usage
        assert (await call(client, new_secret)).status_code == 200
        old = await refused_soon(client, secret)
        assert old.status_code == 401, old.text
        assert old.json()["error"]["code"] == "invalid_api_key"

        revoked = await arun("keys", "revoke", row["id"], cwd=cwd, env=cli_env)
        assert revoked.code == 0, revoked.output
        assert revoked.secrets() == []
        refused = await refused_soon(client, new_secret)
        assert refused.status_code == 401, refused.text
        assert "revoked" in refused.json()["error"]["message"]
        after = await arun("keys", "list", "--json", cwd=cwd, env=cli_env)
        assert [k["state"] for k in after.json()["data"]] == ["revoked"]


async def test_the_key_lifecycle_on_sqlite(sqlite_url: str, tmp_path: Path) -> None:
    await lifecycle(sqlite_url, environment(DATABASE_URL=sqlite_url), tmp_path)


async def test_the_key_lifecycle_on_a_postgres_the_cli_migrated(
    postgres_url: str, tmp_path: Path
) -> None:
    # The URL as platforms hand it out (Render: postgres://); Settings normalise it.
    platform_url = postgres_url.replace("postgresql+asyncpg://", "postgres://", 1)
    cli_env = environment(DATABASE_URL=platform_url)
    migrated = await arun("migrate", cwd=tmp_path, env=cli_env)
    assert migrated.code == 0, migrated.output
    assert f"to {','.join(sorted(head_revisions()))}" in migrated.stdout
    await lifecycle(postgres_url, cli_env, tmp_path)


async def test_a_cli_key_is_the_key_the_admin_api_makes(sqlite_url: str, tmp_path: Path) -> None:
    limits: dict[str, Any] = {
        "allowed_models": ["demo"],
        "rpm_limit": 100,
        "rph_limit": 1000,
        "tpm_limit": 50_000,
        "monthly_budget_usd": 5.5,
        "expires_at": "2099-01-01T00:00:00+00:00",
    }
    cli_env = environment(DATABASE_URL=sqlite_url)
    async with gateway(sqlite_url) as (_, client):
        made = await arun(
            "keys", "create", "--tenant", "team-a", "--name", "same", "--json",
            "--allowed-models", "demo", "--rpm-limit", "100", "--rph-limit", "1000",
            "--tpm-limit", "50000", "--monthly-budget-usd", "5.5",
            "--expires-at", "2099-01-01",
            cwd=tmp_path, env=cli_env,
        )  # fmt: skip
        assert made.code == 0, made.output
        by_cli = made.json()
        by_api = await create_key(client, name="same", **limits)
        # What the admin API shows of the CLI's key is what the CLI printed.
        shown = await client.get(f"/api/v1/keys/{by_cli['id']}", headers=bearer(ADMIN))
        assert shown.json() == {k: v for k, v in by_cli.items() if k != "key"}
        varying = {"id", "key", "prefix", "created_at"}
        assert {k: v for k, v in by_cli.items() if k not in varying} == {
            k: v for k, v in by_api.items() if k not in varying
        }
        assert by_cli.keys() == by_api.keys()
        assert (await call(client, by_cli["key"])).status_code == 200
        # The limits the CLI stored are the ones the gateway enforces.
        narrow = await arun(
            "keys", "create", "--tenant", "team-a", "--name", "narrow", "--json",
            "--allowed-models", "other-model", cwd=tmp_path, env=cli_env,
        )  # fmt: skip
        forbidden = await call(client, narrow.json()["key"])
        assert forbidden.status_code == 403, forbidden.text
        assert forbidden.json()["error"]["code"] == "model_not_allowed"


def test_the_admin_apis_refusals_are_usage_errors_naming_the_option(
    sqlite_url: str, tmp_path: Path
) -> None:
    cli_env = environment(DATABASE_URL=sqlite_url)
    refused = run(
        "keys", "create", "--tenant", "Admin", "--name", "x", "--rpm-limit", "0",
        cwd=tmp_path, env=cli_env,
    )  # fmt: skip
    assert refused.code == 2, refused.output
    assert "--tenant: the tenant name 'Admin' is reserved by the gateway" in refused.stderr
    assert "--rpm-limit: Input should be greater than or equal to 1" in refused.stderr
    assert "Traceback" not in refused.stderr and refused.secrets() == []
    missing = run("keys", "create", "--name", "x", cwd=tmp_path, env=cli_env)
    assert missing.code == 2 and "--tenant" in missing.stderr
    listed = run("keys", "list", "--json", cwd=tmp_path, env=cli_env)
    assert listed.json()["data"] == []  # nothing was written


def test_unknown_and_revoked_keys_fail_with_exit_1(sqlite_url: str, tmp_path: Path) -> None:
    cli_env = environment(DATABASE_URL=sqlite_url)
    for action in ("revoke", "rotate"):
        unknown = run("keys", action, "no-such-id", cwd=tmp_path, env=cli_env)
        assert unknown.code == 1 and "No API key with id 'no-such-id'." in unknown.stderr
    key_id = run(
        "keys", "create", "--tenant", "t", "--name", "n", "--json", cwd=tmp_path, env=cli_env
    ).json()["id"]
    assert run("keys", "revoke", key_id, cwd=tmp_path, env=cli_env).code == 0
    rotated = run("keys", "rotate", key_id, cwd=tmp_path, env=cli_env)
    assert rotated.code == 1 and "is revoked; create a new key instead" in rotated.stderr
    assert rotated.secrets() == []


def test_a_database_that_is_not_the_gateways_is_refused_before_writing(tmp_path: Path) -> None:
    # No DATABASE_URL: the default ./data/skygate.db under the working directory, which
    # does not exist there; the command says so instead of creating an empty database.
    absent = run("keys", "list", cwd=tmp_path)
    assert absent.code == 1, absent.output
    assert "no database at data/skygate.db" in absent.stderr and "migrate" in absent.stderr
    assert not (tmp_path / "data").exists()

    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    unmigrated = run(
        "keys", "create", "--tenant", "t", "--name", "n",
        cwd=tmp_path, env=environment(DATABASE_URL=f"sqlite:///{empty}"),
    )  # fmt: skip
    assert unmigrated.code == 1, unmigrated.output
    assert "database migrations not at head (at none" in unmigrated.stderr
    assert "python -m skygate migrate" in unmigrated.stderr and unmigrated.secrets() == []


def test_an_unreachable_database_fails_without_showing_its_password(tmp_path: Path) -> None:
    url = "postgresql://skygate:hunter2-secret@127.0.0.1:1/skygate"
    failed = run("keys", "list", cwd=tmp_path, env=environment(DATABASE_URL=url))
    assert failed.code == 1, failed.output
    assert "postgresql+asyncpg://skygate:***@127.0.0.1:1/skygate" in failed.stderr
    assert "hunter2" not in failed.output and "Traceback" not in failed.stderr


@pytest.mark.parametrize("action", ["create", "rotate"])
def test_json_output_is_the_admin_apis_shape(action: str, sqlite_url: str, tmp_path: Path) -> None:
    cli_env = environment(DATABASE_URL=sqlite_url)
    created = run(
        "keys", "create", "--tenant", "t", "--name", "n", "--json", cwd=tmp_path, env=cli_env
    )
    body = created.json()
    if action == "rotate":
        body = run("keys", "rotate", body["id"], "--json", cwd=tmp_path, env=cli_env).json()
    assert body["object"] == "api_key" and body["key"].startswith(body["prefix"])
    revoked = run("keys", "revoke", body["id"], "--json", cwd=tmp_path, env=cli_env).json()
    assert revoked["deleted"] is True and revoked["state"] == "revoked" and "key" not in revoked
