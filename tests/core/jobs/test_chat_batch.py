"""`chat.batch` as a client sees it, on the embedded default (SQLite, the job run in
the web process by the real runner on pgqueuer's in-memory queue) against the fake
upstream, a real HTTP server: answers in request order, per-request errors that are
the chat route's own, the cache and one usage row per request, cancel, a revoked key,
a crashed delivery resumed without resending an answered request, and pacing under
the key's request limit with no 429 in the result."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from bench.fake_upstream import FakeUpstream
from core.jobs.chat_batch import NAME, ChatBatch
from core.jobs.queue import Delivery
from database.models import UsageRecord
from tests.support.app import services, settle
from tests.support.auth import ADMIN, SECRET, bearer, create_key
from tests.support.jobs import finished
from tests.support.llm import LLMApp
from tests.support.requests import CHAT, chat

JOBS = "/api/v1/jobs"
AUTH = {"admin_api_key": ADMIN, "jwt_secret_key": SECRET}


async def submit(
    client: httpx.AsyncClient, headers: dict[str, str], requests: list[Any], **input: Any
) -> str:
    accepted = await client.post(
        JOBS, json={"type": NAME, "input": {"requests": requests, **input}}, headers=headers
    )
    assert accepted.status_code == 202, accepted.text
    job_id: str = accepted.json()["id"]
    return job_id


async def reached(app: FastAPI, job_id: str, step: int) -> dict[str, Any]:
    """The job's progress once it has answered `step` requests, through the job
    service's own watch (the in-process client cannot read a stream part-way)."""
    async for row in services(app).jobs.service.watch(job_id, tenant=None):
        progress: dict[str, Any] = dict(row.progress or {}) if row is not None else {}
        if progress.get("current_step", 0) >= step:
            return progress
    raise AssertionError(f"job {job_id} ended before answering {step} requests")


async def usage_rows(app: FastAPI, job_id: str) -> list[UsageRecord]:
    await settle(app)
    query = select(UsageRecord).where(UsageRecord.request_id.like(f"{job_id}:%"))
    async with services(app).sessions() as session:
        return list((await session.execute(query)).scalars())


async def test_answers_in_order_with_the_routes_own_errors_cache_hits_and_usage(
    llm_app: LLMApp, upstream: FakeUpstream
) -> None:
    async with llm_app(**AUTH) as (app, client):
        created = await create_key(client)
        key = bearer(created["key"])
        warm = await client.post(CHAT, json=chat("cached"), headers=key)
        assert warm.status_code == 200 and warm.headers["x-cache"] == "miss"
        await settle(app)  # stored in the cache
        no_messages = {"model": "primary"}
        unknown_model = chat("x", model="no-such-model")
        requests = [
            chat("first"),
            no_messages,
            chat("cached"),
            "not an object",
            chat("streamed", stream=True),
            unknown_model,
            chat("last"),
        ]
        before = upstream.calls()
        job_id = await submit(client, key, requests, concurrency=3)
        job = await finished(client, job_id, headers=key)

        assert job["status"] == "success", job
        assert job["progress"]["current_step"] == job["progress"]["total_steps"] == 7
        result = job["result"]
        assert result["object"] == "list"
        assert [entry["index"] for entry in result["data"]] == list(range(7))
        statuses = [entry["status"] for entry in result["data"]]
        assert statuses == ["success", "error", "success", "error", "error", "error", "success"]
        first, cached, last = (result["data"][i]["response"] for i in (0, 2, 6))
        assert first["object"] == "chat.completion"
        assert first["choices"][0]["message"]["content"] == "echo: first"
        assert last["choices"][0]["message"]["content"] == "echo: last"
        assert cached == warm.json(), "the cached answer, byte for byte"
        # A bad body's error is the one the chat route answers for it.
        for index, body in ((1, no_messages), (5, unknown_model)):
            route = await client.post(CHAT, json=body, headers=key)
            assert route.status_code in (404, 422)
            assert result["data"][index]["error"] == route.json()["error"]
            assert result["data"][index]["response"] is None
        assert result["data"][3]["error"]["code"] == "invalid_json"
        assert result["data"][4]["error"]["code"] == "stream_not_supported"
        assert result["data"][4]["error"]["param"] == "stream"
        assert upstream.calls() - before == 2, "only the two uncached valid bodies went upstream"

        rows = await usage_rows(app, job_id)
        assert sorted(row.request_id for row in rows) == [f"{job_id}:{i}" for i in (0, 2, 6)]
        assert {row.api_key_id for row in rows} == {created["id"]}
        assert {row.tenant for row in rows} == {"team-a"}
        by_index = {row.request_id.rsplit(":", 1)[1]: row for row in rows}
        assert (by_index["2"].cache_status, by_index["2"].provider) == ("hit", "cache")
        assert by_index["0"].cache_status == "miss" and by_index["0"].outcome == "success"


async def test_the_batch_input_is_validated_before_anything_is_enqueued(
    llm_app: LLMApp,
) -> None:
    async with llm_app(**AUTH) as (_, client):
        key = bearer((await create_key(client))["key"])
        for input, where in (
            ({"requests": []}, "input.requests"),
            ({"requests": [chat()] * 1001}, "input.requests"),
            ({"requests": [chat()], "concurrency": 17}, "input.concurrency"),
            ({"requests": [chat()], "concurrency": 0}, "input.concurrency"),
            ({"requests": [chat()], "model": "primary"}, "input.model"),
        ):
            refused = await client.post(JOBS, json={"type": NAME, "input": input}, headers=key)
            assert refused.status_code == 422, refused.text
            assert refused.json()["error"]["param"] == where
        listed = await client.get(JOBS, headers=key)
        assert listed.json()["data"] == []


async def test_cancel_mid_batch_sends_nothing_more(llm_app: LLMApp, upstream: FakeUpstream) -> None:
    """The third request hangs until its timeout; cancelled meanwhile, the batch
    stops at its next progress write and the rest is never sent."""
    upstream.set_behaviour("solo-1", "hang")
    async with llm_app(timeout=3, **AUTH) as (app, client):
        key = bearer((await create_key(client))["key"])
        requests = [chat("a"), chat("b"), chat("stall", model="solo")]
        requests += [chat(f"after {i}") for i in range(10)]
        job_id = await submit(client, key, requests, concurrency=1)
        await reached(app, job_id, 2)
        cancelling = await client.post(f"{JOBS}/{job_id}/cancel", headers=key)
        assert cancelling.status_code == 200, cancelling.text
        job = await finished(client, job_id, headers=key)
        assert job["status"] == "cancelled" and job["result"] is None
        assert upstream.calls("primary-1") == 2, "nothing after the cancel went upstream"


async def test_a_key_revoked_meanwhile_fails_the_batch(
    llm_app: LLMApp, upstream: FakeUpstream
) -> None:
    upstream.set_behaviour("solo-1", "hang")
    async with llm_app(timeout=3, auth_cache_seconds=0.1, **AUTH) as (app, client):
        created = await create_key(client)
        key = bearer(created["key"])
        requests = [chat("a"), chat("stall", model="solo"), chat("b"), chat("c")]
        job_id = await submit(client, key, requests, concurrency=1)
        await reached(app, job_id, 1)
        revoked = await client.delete(f"/api/v1/keys/{created['id']}", headers=bearer(ADMIN))
        assert revoked.status_code == 200, revoked.text
        job = await finished(client, job_id, headers=bearer(ADMIN))
        assert job["status"] == "failed"
        assert job["error"]["code"] == "key_revoked"
        assert "revoked" in job["error"]["message"]
        assert upstream.calls("primary-1") == 1, "no request after the revocation"


async def test_a_redelivered_batch_resumes_and_resends_no_answered_request(
    llm_app: LLMApp, upstream: FakeUpstream
) -> None:
    """A real runner's delivery is cut after three answers (its task cancelled, as a
    crash leaves the job: in progress, with a checkpoint), then delivered again. The
    cache is off, so only the checkpoint can spare the answered requests."""
    upstream.set_behaviour("solo-1", "hang")
    async with llm_app(timeout=30, enable_cache=False, **AUTH) as (app, client):
        created = await create_key(client)
        requests = [chat(f"q{i}") for i in range(3)] + [chat("in flight", model="solo")]
        requests += [chat(f"q{i}") for i in range(4, 8)]
        live = services(app)
        job = await live.jobs.service.repository.create(
            id=str(uuid.uuid4()),
            tenant="team-a",
            api_key_id=created["id"],
            type=NAME,
            input=ChatBatch(requests=requests, concurrency=1).model_dump(mode="json"),
            dedupe_key=None,
        )  # the row only: this test delivers it to the runner itself
        delivery = Delivery(job_id=job.id, type=NAME)
        crashed = asyncio.create_task(live.jobs.runner(delivery))
        assert (await reached(app, job.id, 3))["current_step"] == 3
        crashed.cancel()  # the worker dies with the fourth request in flight
        await asyncio.wait({crashed})
        left = (await client.get(f"{JOBS}/{job.id}", headers=bearer(ADMIN))).json()
        assert left["status"] == "in_progress" and left["attempts"] == 1
        assert upstream.calls("primary-1") == 3

        upstream.set_behaviour("solo-1", "ok")
        assert await live.jobs.runner(delivery) is None  # the redelivery, to its end
        done = (await client.get(f"{JOBS}/{job.id}", headers=bearer(ADMIN))).json()
        assert done["status"] == "success" and done["attempts"] == 2
        answers = done["result"]["data"]
        assert [entry["status"] for entry in answers] == ["success"] * 8
        assert [entry["response"]["choices"][0]["message"]["content"] for entry in answers] == [
            f"echo: {body['messages'][0]['content']}" for body in requests
        ]
        assert upstream.calls("primary-1") == 7, "each answered request went upstream once"
        assert upstream.calls("solo-1") == 2, "the one in flight at the crash, sent again"


async def test_a_batch_over_the_keys_request_limit_is_paced_with_no_429(
    llm_app: LLMApp, upstream: FakeUpstream
) -> None:
    """rpm 20 and 21 requests (the submission counts too): the sliding window lets
    the last ones through only after the minute turns, so this test takes until
    then (at most about 70 s)."""
    rpm = 20
    async with llm_app(**AUTH) as (app, client):
        key = bearer((await create_key(client, rpm_limit=rpm))["key"])
        requests = [chat(f"paced {i}") for i in range(rpm + 1)]
        job_id = await submit(client, key, requests, concurrency=4)
        job = await finished(client, job_id, headers=bearer(ADMIN))  # admin: not the key's rate
        assert job["status"] == "success", job
        errors = [entry["error"] for entry in job["result"]["data"] if entry["error"]]
        assert errors == [], "a refusal by the limiter is waited out, never an answer"
        assert upstream.calls("primary-1") == rpm + 1
        assert len(await usage_rows(app, job_id)) == rpm + 1
