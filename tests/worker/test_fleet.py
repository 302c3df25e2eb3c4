"""The deployment's shape end to end: gunicorn with two workers and a separate
`python -m worker` on one PostgreSQL and Redis. A job submitted on one connection
is watched live, over server-sent events, on another connection (whichever
gunicorn worker takes it: the stream reads the job from the database), and with
PostgreSQL stopped the job endpoints answer 503 while chat keeps answering."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson

from tests.support.auth import ADMIN, SECRET, bearer
from tests.support.gateway import GatewayProcess
from tests.support.servers import PostgresServer
from tests.worker.fleet import FAST, Worker


def fleet_env(database_url: str, redis_url: str, tmp: Path) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "ADMIN_API_KEY": ADMIN,
        "JWT_SECRET_KEY": SECRET,
        "WEB_CONCURRENCY": "2",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp / "prom"),
        "AUTH_CACHE_SECONDS": "1",
        **FAST,
    }


def tenant_key(gateway: GatewayProcess) -> str:
    created = httpx.post(
        f"{gateway.base_url}/api/v1/keys",
        json={"name": "fleet", "tenant": "team-a"},
        headers=bearer(ADMIN),
        timeout=10,
    )
    assert created.status_code == 201, created.text
    key: str = created.json()["key"]
    return key


async def live_events(
    client: httpx.AsyncClient, url: str, key: str
) -> list[tuple[int, dict[str, Any]]]:
    events = []
    async with client.stream("GET", url, headers=bearer(key), timeout=60) as response:
        assert response.status_code == 200
        event_id = None
        async for line in response.aiter_lines():
            if line.startswith("id: "):
                event_id = int(line[4:])
            elif line.startswith("data: "):
                assert event_id is not None
                events.append((event_id, orjson.loads(line[6:])))
    return events


async def test_a_job_is_watched_live_from_another_gateway_worker(
    migrated_postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    env = fleet_env(migrated_postgres_url, redis_url, tmp_path)
    gateway = GatewayProcess(env, tmp_path / "gunicorn.log").start()
    worker = Worker(
        "fleet-w1", tmp_path, {"DATABASE_URL": migrated_postgres_url, "REDIS_URL": redis_url}
    )
    try:
        await worker.start().started()
        key = tenant_key(gateway)
        trace = tmp_path / "trace.log"
        job = {"log": str(trace), "label": "live", "steps": 4, "step_seconds": 0.3}
        async with (
            httpx.AsyncClient(base_url=gateway.base_url) as submitter,
            httpx.AsyncClient(base_url=gateway.base_url) as watcher,
        ):
            accepted = await submitter.post(
                "/api/v1/jobs", json={"type": "test.steps", "input": job}, headers=bearer(key)
            )
            assert accepted.status_code == 202, accepted.text
            events = await live_events(watcher, accepted.headers["location"] + "/stream", key)
        statuses = [event["status"] for _, event in events]
        assert statuses[-1] == "success", events
        steps = [event["progress"]["current_step"] for _, event in events if event["progress"]]
        assert steps == sorted(steps) and len(set(steps)) >= 3, "progress arrived as it happened"
        assert events[-1][1]["result"] == {"label": "live", "attempt": 1}
        assert [event_id for event_id, _ in events] == sorted({i for i, _ in events})
    finally:
        worker.stop()
        gateway.stop()


async def test_postgres_stopped_the_jobs_answer_503_and_chat_still_answers(
    migrated_postgres_url: str,
    redis_url: str,
    postgres_server: PostgresServer,
    tmp_path: Path,
) -> None:
    env = fleet_env(migrated_postgres_url, redis_url, tmp_path)
    gateway = GatewayProcess(env, tmp_path / "gunicorn.log").start()
    chat = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
    try:
        key = tenant_key(gateway)
        async with httpx.AsyncClient(base_url=gateway.base_url, timeout=20) as client:
            for _ in range(4):  # every gunicorn worker has read the key once
                answered = await client.post(
                    "/api/v1/chat/completions", json=chat, headers=bearer(key)
                )
                assert answered.status_code == 200, answered.text
            postgres_server.stop()
            try:
                for path in ("/api/v1/jobs", "/api/v1/jobs/stats"):
                    refused = await client.get(path, headers=bearer(key))
                    assert refused.status_code == 503, refused.text
                    assert refused.headers["retry-after"]
                    assert refused.json()["error"]["code"] == "jobs_unavailable"
                submitted = await client.post(
                    "/api/v1/jobs",
                    json={"type": "test.steps", "input": {"log": "/dev/null", "label": "x"}},
                    headers=bearer(key),
                )
                assert submitted.status_code == 503
                answered = await client.post(
                    "/api/v1/chat/completions", json=chat, headers=bearer(key)
                )
                assert answered.status_code == 200, answered.text
            finally:
                postgres_server.start()
    finally:
        gateway.stop()
