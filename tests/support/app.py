"""In-process apps for tests: settings without ambient environment, an app built by
`create_app` with its real lifespan running, and the waits for its background work.

Test modules import these from here, never from each other or from conftest (a
conftest is pytest's to load; importing it by name can load it twice).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from core.config import Settings
from core.container import Services
from main_enterprise import create_app

# A router config's head for tests that count upstream calls: no retries, no cooldown.
NO_RETRIES = "retry:\n  attempts: 0\ncooldown:\n  failures: 100\n  seconds: 1\n"

AppFactory = Callable[..., AbstractAsyncContextManager[tuple[FastAPI, httpx.AsyncClient]]]


def make_settings(**overrides: Any) -> Settings:
    """Settings from explicit values only (no .env file); development defaults."""
    overrides.setdefault("log_json", True)
    # Limits high unless a test is about limits (tests/core/limits/test_rate_limit.py).
    overrides.setdefault("rate_limit_per_minute", 1_000_000)
    overrides.setdefault("rate_limit_per_hour", 10_000_000)
    return Settings(_env_file=None, **overrides)


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


@asynccontextmanager
async def routed_app(
    router: str, tmp_path: Path, **overrides: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """A running app routed by `router` (router config YAML, written under `tmp_path`),
    without the response cache unless told, and a client talking to it."""
    path = tmp_path / "router.yaml"
    path.write_text(router)
    overrides.setdefault("enable_cache", False)
    async with running_app(make_settings(router_config=str(path), **overrides)) as (_, http):
        yield http


def services(app: FastAPI) -> Services:
    """The live services of a running app (typed, where `app.state` is not)."""
    found: Services = app.state.services
    return found


async def settle(app: FastAPI) -> None:
    """Wait for what the requests answered so far left in the background: cache
    stores and limit/spend settlements (the pipeline's own tasks), then the usage
    records they queued, written to the database. The client has its answer
    before any of it happens, so a test that reads it next waits here, not on a
    sleep that is too short on a slow machine and too long on a fast one."""
    live = services(app)
    await live.completions.drain()
    await live.usage.flush()
