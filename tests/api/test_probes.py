"""Probes in every state, against real PostgreSQL and Redis servers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx

from core.infra.health import Lifecycle
from tests.support.app import AppFactory, make_settings, running_app
from tests.support.servers import PostgresServer, RedisServer

METRICS_TOKEN = "metrics-token-for-probe-tests"
OPERATOR = {"Authorization": f"Bearer {METRICS_TOKEN}"}


async def wait_for(
    client: httpx.AsyncClient,
    path: str,
    predicate: Callable[[httpx.Response], bool],
    within: float = 15.0,
) -> httpx.Response:
    """GET `path` until `predicate` holds or `within` seconds pass; the last response."""
    deadline = time.monotonic() + within
    while True:
        response = await client.get(path)
        if predicate(response) or time.monotonic() > deadline:
            return response
        await asyncio.sleep(0.2)


async def test_live_is_cheap_and_constant(app_factory: AppFactory) -> None:
    async with app_factory() as (_, client):
        response = await client.get("/live")
        assert response.status_code == 200 and response.json() == {"alive": True}


async def test_root_lists_the_api(app_factory: AppFactory) -> None:
    async with app_factory() as (_, client):
        body = (await client.get("/")).json()
        assert body["name"] == "Skygate" and body["version"]
        assert body["endpoints"]["api"] == "/api/v1"
        for probe in ("live", "ready", "health", "metrics", "docs"):
            assert body["endpoints"][probe] == f"/{probe}"


async def test_healthy_on_postgres_and_redis(migrated_postgres_url: str, redis_url: str) -> None:
    settings = make_settings(
        database_url=migrated_postgres_url,
        redis_url=redis_url,
        metrics_token=METRICS_TOKEN,
        jobs_in_process=True,  # this process runs the jobs: no separate worker to wait for
    )
    async with running_app(settings) as (_, client):
        assert (await client.get("/ready")).json() == {"ready": True}
        health = (await client.get("/health", headers=OPERATOR)).json()
        assert health["status"] == "healthy"
        assert health["environment"] == "development" and health["version"]
        assert health["uptime_seconds"] >= 0
        services = health["services"]
        assert set(services) == {
            "api",
            "database",
            "redis",
            "cache",
            "rate_limiter",
            "llm_providers",
            "workers",
            "agents",
        }
        assert services["workers"]["status"] == "ok"
        assert services["agents"]["status"] == "ok" and services["agents"]["total"] == 2
        assert health["agents"] == {"total": 2, "active": 2, "runs_active": 0}  # the examples
        assert services["database"]["status"] == "ok"
        assert services["database"]["backend"] == "postgresql"
        assert services["database"]["latency_ms"] >= 0
        assert services["redis"]["status"] == "ok" and services["redis"]["latency_ms"] >= 0
        for service in services.values():
            assert "status" in service and "latency_ms" in service


async def test_redis_stopped_degrades_health_not_readiness_and_recovers(
    migrated_postgres_url: str, redis_url: str, redis_server: RedisServer
) -> None:
    settings = make_settings(
        database_url=migrated_postgres_url,
        redis_url=redis_url,
        redis_retry_seconds=0.5,
        redis_failure_threshold=1,
        jobs_in_process=True,  # no separate worker whose absence would degrade /health
    )
    async with running_app(settings) as (_, client):
        assert (await client.get("/health")).json()["status"] == "healthy"
        redis_server.stop()
        health = await wait_for(client, "/health", lambda r: r.json()["status"] == "degraded")
        assert health.status_code == 200
        assert health.json()["services"]["redis"]["status"] == "degraded"
        ready = await client.get("/ready")
        assert ready.status_code == 200 and ready.json() == {"ready": True}

        redis_server.start()
        health = await wait_for(client, "/health", lambda r: r.json()["status"] == "healthy")
        assert health.json()["status"] == "healthy"
        assert health.json()["services"]["redis"]["status"] == "ok"


async def test_frozen_redis_costs_a_bounded_delay(
    migrated_postgres_url: str, redis_url: str, redis_server: RedisServer
) -> None:
    settings = make_settings(
        database_url=migrated_postgres_url,
        redis_url=redis_url,
        redis_socket_timeout=0.3,
        redis_retry_seconds=30,
    )
    async with running_app(settings) as (app, client):
        await client.get("/health")
        redis_server.freeze()
        try:
            started = time.monotonic()
            await asyncio.sleep(1.1)  # let the cached health result expire
            first = await client.get("/health")
            assert first.json()["services"]["redis"]["status"] == "degraded"
            assert (await client.get("/ready")).status_code == 200
            live_started = time.monotonic()
            assert (await client.get("/live")).status_code == 200
            assert time.monotonic() - live_started < 0.2
            # The breaker is open now: more calls cost nothing.
            redis = app.state.services.redis
            for _ in range(3):
                await redis.run(lambda r: r.ping(), False)
            before = time.monotonic()
            for _ in range(50):
                assert await redis.run(lambda r: r.ping(), False) is False
            assert time.monotonic() - before < 0.1
            assert time.monotonic() - started < 10
        finally:
            redis_server.thaw()


async def test_database_stopped_makes_ready_503(
    migrated_postgres_url: str, postgres_server: PostgresServer
) -> None:
    settings = make_settings(database_url=migrated_postgres_url)
    async with running_app(settings) as (_, client):
        assert (await client.get("/ready")).status_code == 200
        postgres_server.stop()
        try:
            ready = await wait_for(client, "/ready", lambda r: r.status_code == 503)
            assert ready.status_code == 503
            body = ready.json()
            assert body["ready"] is False
            assert any("database unreachable" in reason for reason in body["reasons"])
            health = await client.get("/health")
            assert health.status_code == 503 and health.json()["status"] == "unhealthy"
            assert (await client.get("/live")).status_code == 200
        finally:
            postgres_server.start()
        ready = await wait_for(client, "/ready", lambda r: r.status_code == 200)
        assert ready.status_code == 200


async def test_unmigrated_database_is_not_ready(postgres_url: str) -> None:
    async with running_app(make_settings(database_url=postgres_url)) as (_, client):
        ready = await client.get("/ready")
        assert ready.status_code == 503
        assert "migrations not at head" in ready.json()["reasons"][0]


async def test_draining_process_is_not_ready_but_still_serves(app_factory: AppFactory) -> None:
    async with app_factory() as (app, client):
        lifecycle: Lifecycle = app.state.lifecycle
        lifecycle.draining = True
        await asyncio.sleep(1.1)
        ready = await client.get("/ready")
        assert ready.status_code == 503 and ready.json()["reasons"] == ["shutting down"]
        assert (await client.get("/live")).status_code == 200
        assert (await client.get("/health")).json()["status"] == "degraded"


async def test_probe_results_are_cached_so_probes_cannot_stampede(
    app_factory: AppFactory,
) -> None:
    async with app_factory() as (app, client):
        monitor = app.state.services.health
        calls = 0
        original = monitor._database.compute

        async def counting():  # type: ignore[no-untyped-def]
            nonlocal calls
            calls += 1
            return await original()

        monitor._database.compute = counting
        monitor._database.at = float("-inf")
        await asyncio.gather(*(client.get("/ready") for _ in range(50)))
        assert calls == 1
