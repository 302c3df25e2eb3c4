"""Shared fixtures: settings without ambient environment, in-process apps with a
real lifespan, and the real PostgreSQL/Redis servers from `tests.support`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from core.config import Settings
from database.schema import upgrade_head
from main_enterprise import create_app

pytest_plugins = ["tests.support.fixtures", "tests.support.llm"]

AppFactory = Callable[..., AbstractAsyncContextManager[tuple[FastAPI, httpx.AsyncClient]]]


def make_settings(**overrides: Any) -> Settings:
    """Settings from explicit values only (no .env file); development defaults."""
    overrides.setdefault("log_json", True)
    # Limits high unless a test is about limits (tests/core/test_rate_limit.py).
    overrides.setdefault("rate_limit_per_minute", 1_000_000)
    overrides.setdefault("rate_limit_per_hour", 10_000_000)
    return Settings(_env_file=None, **overrides)  # type: ignore[call-arg]


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


@asynccontextmanager
async def running_app(
    settings: Settings, customize: Callable[[FastAPI], None] | None = None
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """An app built by `create_app`, its lifespan running, and a client talking to it."""
    app = create_app(settings)
    if customize is not None:
        customize(app)
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://skygate.test") as client:
            yield app, client


@pytest.fixture
def app_factory(sqlite_url: str) -> AppFactory:
    """Build and run an app; settings default to a migrated SQLite database."""

    def factory(
        customize: Callable[[FastAPI], None] | None = None, **overrides: Any
    ) -> AbstractAsyncContextManager[tuple[FastAPI, httpx.AsyncClient]]:
        overrides.setdefault("database_url", sqlite_url)
        return running_app(make_settings(**overrides), customize)

    return factory
