"""The job API as a client sees it, on the embedded default (SQLite, jobs run in
the web process by the real runner on pgqueuer's in-memory queue): 202 and a
Location, progress and results, live events with resume, validation before
anything is written, 409 on a duplicate, cancel, retries, time limits, paging,
and tenants that never see each other's jobs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from main_enterprise import create_app
from tests.support.app import make_settings
from tests.support.auth import ADMIN, SECRET, bearer, create_key
from tests.support.jobs import GATES, STARTED, finished, job_events, job_types_for_tests

JOBS = "/api/v1/jobs"


@pytest.fixture
async def gateway(sqlite_url: str) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    settings = make_settings(database_url=sqlite_url, admin_api_key=ADMIN, jwt_secret_key=SECRET)
    app = create_app(settings, job_types=job_types_for_tests())
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://skygate.test") as client:
            yield app, client
    GATES.clear()
    STARTED.clear()


async def tenant_key(client: httpx.AsyncClient, tenant: str) -> dict[str, str]:
    return bearer((await create_key(client, tenant=tenant))["key"])


async def submit(
    client: httpx.AsyncClient, headers: dict[str, str], type: str, **body: Any
) -> httpx.Response:
    return await client.post(JOBS, json={"type": type, **body}, headers=headers)


async def test_a_job_is_accepted_then_runs_to_its_result(
    gateway: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, client = gateway
    key = await tenant_key(client, "team-a")
    accepted = await submit(client, key, "test.echo", input={"text": "hello", "steps": 4})
    assert accepted.status_code == 202, accepted.text
    created = accepted.json()
    assert accepted.headers["location"] == f"{JOBS}/{created['id']}"
    assert created["object"] == "job" and created["type"] == "test.echo"
    assert created["status"] == "queued" and created["created_at"].endswith("+00:00")
    job = await finished(client, created["id"], headers=key)
    assert job["status"] == "success"
    assert job["result"] == {"echo": "hello", "attempt": 1}
    assert job["attempts"] == 1 and job["error"] is None
    assert job["progress"] == {
        "step": "echo",
        "percentage": 100.0,
        "current_step": 4,
        "total_steps": 4,
        "message": None,
    }
    assert job["started_at"] and job["finished_at"] and job["finished_at"] >= job["started_at"]
    again = await client.get(f"{JOBS}/{created['id']}", headers=key)
    assert again.json() == job


async def test_events_arrive_in_order_and_resume_after_the_last_one_seen(
    gateway: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, client = gateway
    key = await tenant_key(client, "team-a")
    job_id = (await submit(client, key, "test.echo", input={"text": "x", "steps": 3})).json()["id"]
    events = await job_events(client, job_id, headers=key)
    ids = [event_id for event_id, _ in events]
    assert ids == sorted(set(ids)), "event ids only grow"
    assert events[-1][1]["status"] == "success"
    statuses = [job["status"] for _, job in events]
    assert statuses.index("success") == len(statuses) - 1
    # A client that saw an earlier event gets only what came after it...
    middle = ids[len(ids) // 2]
    resumed = await job_events(client, job_id, headers={**key, "Last-Event-ID": str(middle)})
    assert [event_id for event_id, _ in resumed] == [i for i in ids if i > middle]
    # ... and one that saw the last gets nothing more: the stream just ends.
    assert await job_events(client, job_id, headers={**key, "Last-Event-ID": str(ids[-1])}) == []


@pytest.mark.parametrize(
    ("body", "status", "param", "code"),
    [
        ({"type": "no.such.type"}, 400, "type", "unknown_job_type"),
        ({"type": "test.echo", "input": {}}, 422, "input.text", "validation_error"),
        ({"type": "test.echo", "input": {"text": 5}}, 422, "input.text", "validation_error"),
        ({"type": "test.echo", "input": {"text": "a"}, "priority": 9}, 422, None, None),
        ({"type": "test.echo", "input": "text"}, 422, None, None),
        ({"type": "", "input": {}}, 422, None, None),
    ],
)
async def test_bad_submissions_are_refused_and_nothing_is_enqueued(
    gateway: tuple[FastAPI, httpx.AsyncClient],
    body: dict[str, Any],
    status: int,
    param: str | None,
    code: str | None,
) -> None:
    _, client = gateway
    key = await tenant_key(client, "team-a")
    refused = await client.post(JOBS, json=body, headers=key)
    assert refused.status_code == status, refused.text
    error = refused.json()["error"]
    if param is not None:
        assert (error["param"], error["code"]) == (param, code)
    listed = await client.get(JOBS, headers=key)
    assert listed.json()["data"] == []
    assert (await client.get(f"{JOBS}/stats", headers=key)).json()["pending"] == 0


async def test_a_duplicate_active_job_is_a_409_naming_the_existing_one(
    gateway: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, client = gateway
    key = await tenant_key(client, "team-a")
    first = await submit(client, key, "test.gate", input={"name": "dup"}, dedupe_key="report-7")
    duplicate = await submit(
        client, key, "test.gate", input={"name": "other"}, dedupe_key="report-7"
    )
    assert duplicate.status_code == 409
    error = duplicate.json()["error"]
    assert (error["code"], error["param"]) == ("job_conflict", "dedupe_key")
    assert first.json()["id"] in error["message"]
    assert duplicate.headers["location"] == f"{JOBS}/{first.json()['id']}"
    other_tenant = await tenant_key(client, "team-b")  # keys are per tenant
    assert (
        await submit(client, other_tenant, "test.echo", input={"text": "a"}, dedupe_key="report-7")
    ).status_code == 202
    GATES.setdefault("dup", asyncio.Event()).set()
    assert (await finished(client, first.json()["id"], headers=key))["status"] == "success"
    reused = await submit(client, key, "test.echo", input={"text": "a"}, dedupe_key="report-7")
    assert reused.status_code == 202, "a finished job frees its dedupe key"


async def test_cancel_a_queued_job_at_once_and_a_running_one_at_its_checkpoint(
    gateway: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, client = gateway
    key = await tenant_key(client, "team-a")
    running = (await submit(client, key, "test.gate", input={"name": "hold"})).json()["id"]
    queued = (await submit(client, key, "test.gate", input={"name": "next"})).json()["id"]
    await asyncio.wait_for(STARTED.setdefault("hold", asyncio.Event()).wait(), 30)
    # one slot (concurrency 1): the second waits
    assert (await client.get(f"{JOBS}/{queued}", headers=key)).json()["status"] == "queued"

    cancelled = await client.post(f"{JOBS}/{queued}/cancel", headers=key)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    again = await client.post(f"{JOBS}/{queued}/cancel", headers=key)
    assert again.status_code == 200 and again.json()["status"] == "cancelled", "idempotent"

    asked = await client.post(f"{JOBS}/{running}/cancel", headers=key)
    assert asked.status_code == 200 and asked.json()["status"] == "in_progress"
    stopped = await finished(client, running, headers=key)
    assert stopped["status"] == "cancelled" and stopped["result"] is None

    done = (await submit(client, key, "test.echo", input={"text": "a"})).json()["id"]
    await finished(client, done, headers=key)
    late = await client.post(f"{JOBS}/{done}/cancel", headers=key)
    assert late.status_code == 409 and late.json()["error"]["code"] == "job_finished"


async def test_a_transient_failure_is_retried_and_a_persistent_one_fails(
    gateway: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, client = gateway
    key = await tenant_key(client, "team-a")
    recovers = (await submit(client, key, "test.flaky", input={"failures": 2})).json()["id"]
    gives_up = (await submit(client, key, "test.flaky", input={"failures": 5})).json()["id"]
    recovered = await finished(client, recovers, headers=key)
    assert (recovered["status"], recovered["attempts"]) == ("success", 3)
    assert recovered["result"] == {"attempts": 3} and recovered["error"] is None
    failed = await finished(client, gives_up, headers=key)
    assert (failed["status"], failed["attempts"]) == ("failed", 3)
    assert failed["error"]["code"] == "job_failed"
    assert "after 3 attempt(s)" in failed["error"]["message"]


async def test_a_job_past_its_time_limit_fails_and_says_so(
    gateway: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, client = gateway
    key = await tenant_key(client, "team-a")
    job_id = (await submit(client, key, "test.stuck", input={})).json()["id"]
    job = await finished(client, job_id, headers=key)
    assert job["status"] == "failed"
    assert job["error"]["code"] == "time_limit_exceeded"
    assert job["attempts"] == 1, "a time limit is not retried"


async def test_tenants_never_see_each_others_jobs(
    gateway: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, client = gateway
    a, b = await tenant_key(client, "team-a"), await tenant_key(client, "team-b")
    job_id = (await submit(client, a, "test.echo", input={"text": "a"})).json()["id"]
    await finished(client, job_id, headers=a)
    for path in (f"{JOBS}/{job_id}", f"{JOBS}/{job_id}/stream"):
        hidden = await client.get(path, headers=b)
        assert hidden.status_code == 404 and hidden.json()["error"]["code"] == "job_not_found"
    assert (await client.post(f"{JOBS}/{job_id}/cancel", headers=b)).status_code == 404
    assert (await client.get(JOBS, headers=b)).json()["data"] == []
    assert (await client.get(f"{JOBS}/stats", headers=b)).json()["succeeded_24h"] == 0
    assert (await client.get(f"{JOBS}/stats", headers=a)).json()["succeeded_24h"] == 1
    everyone = await client.get(JOBS, headers=bearer(ADMIN))
    assert [job["id"] for job in everyone.json()["data"]] == [job_id]


async def test_jobs_are_listed_newest_first_in_pages_and_filtered(
    gateway: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, client = gateway
    key = await tenant_key(client, "team-a")
    ids = [
        (await submit(client, key, "test.echo", input={"text": str(i)})).json()["id"]
        for i in range(5)
    ]
    for job_id in ids:
        await finished(client, job_id, headers=key)
    flaky = (await submit(client, key, "test.flaky", input={"failures": 0})).json()["id"]
    await finished(client, flaky, headers=key)
    first = (await client.get(JOBS, params={"type": "test.echo", "limit": 3}, headers=key)).json()
    assert [job["id"] for job in first["data"]] == ids[::-1][:3] and first["has_more"]
    rest = await client.get(
        JOBS, params={"type": "test.echo", "limit": 3, "after": ids[2]}, headers=key
    )
    assert [job["id"] for job in rest.json()["data"]] == ids[1::-1]
    assert rest.json()["has_more"] is False
    succeeded = (await client.get(JOBS, params={"status": "success"}, headers=key)).json()
    assert len(succeeded["data"]) == 6
    assert (await client.get(JOBS, params={"status": "bogus"}, headers=key)).status_code == 422
    stats = (await client.get(f"{JOBS}/stats", headers=key)).json()
    assert stats == {
        "pending": 0,
        "processing": 0,
        "succeeded_24h": 6,
        "failed_24h": 0,
        "oldest_pending_seconds": None,
        "durable": False,
    }
