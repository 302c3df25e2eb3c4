"""`python -m worker` as real processes on a real PostgreSQL and Redis: jobs
submitted through the API run there, wait while no worker is up (and /health
says so), are never run twice by two workers, survive a SIGKILL mid-job, drain
on SIGTERM; a schedule due on two workers runs once per tick; the heartbeat
falls back to the database when Redis stops."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from database.models import Job
from tests.support.app import make_settings, running_app, services
from tests.support.auth import ADMIN, bearer, create_key
from tests.support.jobs import finished
from tests.support.servers import RedisServer
from tests.worker.fleet import Worker, fast_settings, traces, until


def worker_env(database_url: str, redis_url: str | None, **extra: str) -> dict[str, str]:
    env = {"DATABASE_URL": database_url, **extra}
    if redis_url:
        env["REDIS_URL"] = redis_url
    return env


async def workers_report(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/health", headers=bearer(ADMIN))
    report: dict[str, Any] = response.json()["services"]["workers"]
    return report


def steps_input(log: Path, label: str, **fields: Any) -> dict[str, Any]:
    return {"log": str(log), "label": label, **fields}


async def submit(client: httpx.AsyncClient, key: str, job_input: dict[str, Any]) -> str:
    response = await client.post(
        "/api/v1/jobs", json={"type": "test.steps", "input": job_input}, headers=bearer(key)
    )
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


async def status(app: FastAPI, job_id: str) -> Job:
    row = await services(app).jobs.service.repository.get(job_id)
    assert row is not None
    return row


def app_settings(database_url: str, redis_url: str | None) -> Any:
    return make_settings(
        database_url=database_url,
        redis_url=redis_url,
        admin_api_key=ADMIN,
        **fast_settings(),
    )


async def test_jobs_wait_for_a_worker_then_run_and_sigterm_drains(
    migrated_postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    trace = tmp_path / "trace.log"
    async with running_app(app_settings(migrated_postgres_url, redis_url)) as (app, client):
        key = (await create_key(client, tenant="team-a"))["key"]
        # No worker: /health is degraded (not unhealthy), /ready stays 200, jobs wait.
        report = await workers_report(client)
        assert report["worker_ok"] is False and report["status"] == "degraded"
        health = await client.get("/health", headers=bearer(ADMIN))
        assert health.status_code == 200 and health.json()["status"] == "degraded"
        assert (await client.get("/ready")).status_code == 200
        waiting = await submit(client, key, steps_input(trace, "waiting"))
        assert (await status(app, waiting)).status == "queued"

        worker = Worker("w1", tmp_path, worker_env(migrated_postgres_url, redis_url)).start()
        try:
            await worker.started()
            done = await finished(client, waiting, headers=bearer(key))
            assert done["status"] == "success" and done["result"]["label"] == "waiting"
            report = await until(lambda: _fresh(client, "w1"), what="/health to see w1's heartbeat")
            assert report["worker_ok"] is True and report["status"] == "ok"

            # SIGTERM mid-job: no new job is taken, the running one finishes, exit 0.
            slow = await submit(client, key, steps_input(trace, "slow", step_seconds=1.0))
            await until(lambda: _in_progress(app, slow), what="the slow job to start")
            worker.signal(signal.SIGTERM)
            assert await asyncio.to_thread(worker.wait, 40) == 0, worker.logs()[-3000:]
            assert (await status(app, slow)).status == "success"
            assert '"worker_draining"' in worker.logs()
        finally:
            worker.stop()
        assert Counter(what for *_, what, _ in traces(trace)) == {"start": 2, "done": 2}


async def _fresh(client: httpx.AsyncClient, name: str) -> dict[str, Any] | None:
    report = await workers_report(client)
    names = {w["name"] for w in report["workers"] if w["fresh"]}
    return report if name in names else None


async def _in_progress(app: FastAPI, job_id: str) -> bool:
    return (await status(app, job_id)).status == "in_progress"


async def test_two_workers_never_run_one_job_twice(
    migrated_postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    trace = tmp_path / "trace.log"
    # Two jobs at a time each: 16 jobs of 0.2 s cannot all go to the first worker.
    env = worker_env(migrated_postgres_url, redis_url, WORKER_CONCURRENCY="2")
    fleet = [Worker(f"w{i}", tmp_path, env).start() for i in (1, 2)]
    try:
        async with running_app(app_settings(migrated_postgres_url, redis_url)) as (app, client):
            for worker in fleet:
                await worker.started()
            key = (await create_key(client, tenant="team-a"))["key"]
            ids = [
                await submit(client, key, steps_input(trace, f"j{i}", step_seconds=0.2))
                for i in range(16)
            ]
            for job_id in ids:
                assert (await finished(client, job_id, headers=bearer(key)))["status"] == "success"
    finally:
        for worker in fleet:
            worker.stop()
    rows = traces(trace)
    starts = Counter(label for label, _, what, _ in rows if what == "start")
    assert starts == {f"j{i}": 1 for i in range(16)}
    assert len({pid for *_, pid in rows}) == 2, "both workers took jobs"


async def test_sigkill_mid_job_is_repicked_and_finished_once(
    migrated_postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    trace = tmp_path / "trace.log"
    env = worker_env(migrated_postgres_url, redis_url)
    first = Worker("first", tmp_path, env).start()
    second = Worker("second", tmp_path, env)
    try:
        async with running_app(app_settings(migrated_postgres_url, redis_url)) as (app, client):
            await first.started()
            key = (await create_key(client, tenant="team-a"))["key"]
            job_id = await submit(
                client, key, steps_input(trace, "crash", steps=4, step_seconds=0.4)
            )
            await until(lambda: _past_step(app, job_id, 1), what="the job's first checkpoint")
            first.signal(signal.SIGKILL)
            first.wait(10)
            await second.start().started()
            done = await finished(client, job_id, headers=bearer(key))
            assert done["status"] == "success" and done["attempts"] == 2, done
    finally:
        first.stop()
        second.stop()
    rows = traces(trace)
    done_steps = Counter(step for _, step, what, _ in rows if what == "done")
    assert done_steps == {0: 1, 1: 1, 2: 1, 3: 1}, rows  # checkpointed steps never re-run
    assert {pid for _, step, what, pid in rows if step == 3} == {second.proc.pid}  # type: ignore[union-attr]


async def _past_step(app: FastAPI, job_id: str, step: int) -> bool:
    row = await status(app, job_id)
    return bool(row.checkpoint and int(str(row.checkpoint.get("next", 0))) >= step)


async def test_a_schedule_due_on_two_workers_runs_once_per_tick(
    migrated_postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    env = worker_env(migrated_postgres_url, redis_url, SKYGATE_TEST_TICK_CRON="* * * * * */1")
    fleet = [Worker(f"s{i}", tmp_path, env).start() for i in (1, 2)]
    try:
        async with running_app(app_settings(migrated_postgres_url, redis_url)) as (app, client):
            for worker in fleet:
                await worker.started()

            async def ticks() -> list[Job] | None:
                async with services(app).sessions() as session:
                    rows = list(
                        (
                            await session.execute(select(Job).where(Job.type == "test.tick"))
                        ).scalars()
                    )
                return rows if len(rows) >= 4 else None

            rows = await until(ticks, 30, what="four ticks")
            listed = await client.get("/api/v1/jobs?type=test.tick", headers=bearer(ADMIN))
            assert listed.status_code == 200 and listed.json()["data"], listed.text
    finally:
        for worker in fleet:
            worker.stop()
    keys = Counter(row.dedupe_key for row in rows)
    assert all(count == 1 for count in keys.values()), keys
    assert {row.tenant for row in rows} == {"system"}
    assert all(str(key).startswith("schedule:test.tick:") for key in keys)
    logs = "".join(worker.logs() for worker in fleet)
    assert '"schedule_tick_duplicate"' not in logs  # pgqueuer's lock alone kept it once


async def test_heartbeat_falls_back_to_the_database_when_redis_stops(
    migrated_postgres_url: str, redis_url: str, redis_server: RedisServer, tmp_path: Path
) -> None:
    env = worker_env(migrated_postgres_url, redis_url, REDIS_SOCKET_TIMEOUT="0.2")
    worker = Worker("beats", tmp_path, env).start()
    try:
        async with running_app(app_settings(migrated_postgres_url, redis_url)) as (app, client):
            await worker.started()

            async def source(name: str) -> dict[str, Any] | None:
                report = await _fresh(client, "beats")
                if report is None:
                    return None
                found = next(w for w in report["workers"] if w["name"] == "beats")
                return report if found["source"] == name else None

            await until(lambda: source("redis"), what="a beat in Redis")
            redis_server.stop()
            report = await until(lambda: source("database"), what="a beat in the database")
            assert report["worker_ok"] is True and report["status"] == "ok"
    finally:
        worker.stop()
        redis_server.ensure_running()


def test_worker_refuses_sqlite(tmp_path: Path) -> None:
    worker = Worker("lite", tmp_path, {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/x.db"})
    assert worker.start().wait(30) == 2
    assert "needs PostgreSQL" in worker.logs()
