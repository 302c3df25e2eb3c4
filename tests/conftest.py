"""Shared fixtures: migrated databases and in-process apps with a real lifespan;
the real PostgreSQL/Redis servers and the fake upstream come from `tests.support`.

Helpers (settings, `running_app`, credentials, request bodies) live in
`tests.support`; the names re-exported here are for modules not yet moved to it.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from database.schema import upgrade_head
from tests.support.app import AppFactory, make_settings, running_app

__all__ = ["AppFactory", "make_settings", "running_app"]

pytest_plugins = ["tests.support.fixtures", "tests.support.llm"]


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A migrated, file-backed SQLite database for this test."""
    url = f"sqlite+aiosqlite:///{tmp_path}/skygate.db"
    upgrade_head(url)
    return url


@pytest.fixture
def migrated_postgres_url(postgres_url: str) -> str:
    upgrade_head(postgres_url)
    return postgres_url


@pytest.fixture
def app_factory(sqlite_url: str) -> AppFactory:
    """Build and run an app; settings default to a migrated SQLite database."""

    def factory(
        customize: Callable[[FastAPI], None] | None = None, **overrides: Any
    ) -> AbstractAsyncContextManager[tuple[FastAPI, httpx.AsyncClient]]:
        overrides.setdefault("database_url", sqlite_url)
        return running_app(make_settings(**overrides), customize)

    return factory
