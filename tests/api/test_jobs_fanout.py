"""Job events reach their watchers through Redis pub/sub: with the safety-net poll
made a minute long, a watched job's changes still arrive as they happen; with
Redis stopped, the watchers fall back to reading the database often."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from core.jobs import signals
from main_enterprise import create_app
from tests.support.app import make_settings, services
from tests.support.auth import ADMIN, bearer, create_key
from tests.support.jobs import job_events, job_types_for_tests
from tests.support.servers import RedisServer
from tests.worker.fleet import until


@pytest.fixture
async def gateway(
    migrated_postgres_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    monkeypatch.setattr(signals, "LIVE_POLL_SECONDS", 60.0)
    monkeypatch.setattr(signals, "RETRY_SECONDS", 0.2)
    settings = make_settings(
        database_url=migrated_postgres_url,
        redis_url=redis_url,
        admin_api_key=ADMIN,
        jobs_in_process=True,
        redis_retry_seconds=0.2,
        redis_failure_threshold=1,
        job_dequeue_timeout_seconds=0.5,
    )
    app = create_app(settings, job_types=job_types_for_tests())
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://skygate.test") as client:
            yield app, client


async def watch_a_job(client: httpx.AsyncClient, key: dict[str, str]) -> list[str]:
    accepted = await client.post(
        "/api/v1/jobs", json={"type": "test.echo", "input": {"text": "x", "steps": 3}}, headers=key
    )
    assert accepted.status_code == 202, accepted.text
    events = await asyncio.wait_for(job_events(client, accepted.json()["id"], headers=key), 20)
    return [job["status"] for _, job in events]


async def test_watchers_are_woken_by_redis_and_poll_when_it_is_gone(
    gateway: tuple[FastAPI, httpx.AsyncClient], redis_server: RedisServer
) -> None:
    app, client = gateway
    fanout = services(app).jobs.service.signals
    assert fanout is not None

    async def live() -> bool:
        return fanout.live

    await until(live, 10, what="the job subscription")
    key = bearer((await create_key(client, tenant="team-a"))["key"])
    # A minute between safety-net polls: only the messages can make this quick.
    assert (await watch_a_job(client, key))[-1] == "success"

    redis_server.stop()
    try:

        async def gone() -> bool:
            return not fanout.live

        await until(gone, 10, what="the subscription to notice Redis is gone")
        assert fanout.poll_seconds == signals.WATCH_POLL_SECONDS
        assert (await watch_a_job(client, key))[-1] == "success"
    finally:
        redis_server.start()
    await until(live, 15, what="the subscription back")
