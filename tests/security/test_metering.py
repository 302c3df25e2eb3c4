"""Finding 2: usage escapes metering. However an upstream call ends, exactly one
usage record is written and the budget and token limit are settled with it.

Before the fix a stream the client cut was recorded with 0 tokens and $0 and
its whole token estimate given back (five cut streams of a 5000-token prompt
left a $0.01 budget untouched), and a non-streaming call the client abandoned
recorded nothing. Real servers throughout: the gateway on a real socket
(uvicorn, so a client's disconnect really reaches it), the fake provider over
HTTP, Redis for the token limit, PostgreSQL (the COPY path) for abandoned calls;
the rows are read from `usage_records`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy import select

from bench.fake_upstream import FakeUpstream
from core.gateway.cache import CacheDirectives
from core.gateway.completions import StreamAnswer, Upstream
from core.limits.admission import Caller
from database.models import UsageRecord
from main_enterprise import create_app
from tests.support import requests
from tests.support.app import make_settings
from tests.support.auth import ADMIN, SECRET, bearer, create_key
from tests.support.llm import PRICED_MODEL as MODEL
from tests.support.llm import LLMApp, priced_router
from tests.support.requests import CHAT
from tests.support.servers import free_port

LONG_PROMPT = "word " * 4000  # ~5000 tokens by the gateway's estimate, ~$0.00075 of input


chat = partial(requests.chat, model="metered")


@asynccontextmanager
async def serving(**overrides: Any) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app under uvicorn on a real 127.0.0.1 socket, and a client over TCP."""
    app = create_app(make_settings(**overrides))
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, lifespan="on", log_config=None, access_log=False
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("uvicorn stopped before it started")
            await asyncio.sleep(0.02)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield app, client
    finally:
        server.should_exit = True
        await task


@pytest.fixture
def settings(
    upstream: FakeUpstream, sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    monkeypatch.setenv("FAKE_OPENAI_KEY", "fake-openai-key")
    return {
        "database_url": sqlite_url,
        "router_config": priced_router(upstream, tmp_path / "router.yaml"),
        "admin_api_key": ADMIN,
        "jwt_secret_key": SECRET,
        "usage_flush_seconds": 0.05,
        "enable_cache": False,
    }


async def metered_key(client: httpx.AsyncClient, **limits: Any) -> tuple[str, str]:
    """(id, secret) of a new key of the tenant `team-m` with these limits."""
    created = await create_key(client, name="metered", tenant="team-m", **limits)
    return created["id"], created["key"]


async def rows(app: FastAPI, *, count: int, within: float = 5.0, **where: Any) -> list[UsageRecord]:
    """The usage rows matching `where`, once there are `count` of them (and the
    settlements they started are done); fails if more appear."""
    services = app.state.services
    filters = [getattr(UsageRecord, name) == value for name, value in where.items()]
    deadline = asyncio.get_running_loop().time() + within
    found: list[UsageRecord] = []
    while True:
        await services.usage.flush()
        async with services.sessions() as session:
            query = select(UsageRecord).where(*filters).order_by(UsageRecord.id)
            found = list((await session.execute(query)).scalars())
        if len(found) >= count or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.05)
    await services.completions.drain()
    assert len(found) == count, [(r.request_id, r.outcome) for r in found]
    return found


async def cut_stream(client: httpx.AsyncClient, key: str, body: dict[str, Any]) -> None:
    """Read the first events of a stream, then close the connection mid-stream."""
    async with client.stream("POST", CHAT, json=body, headers=bearer(key)) as response:
        assert response.status_code == 200, await response.aread()
        seen = 0
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                seen += 1
                if seen == 3:
                    break
    # leaving the block closes the connection before the answer is complete


def assert_estimated(row: UsageRecord, *, outcome: str, completion: bool) -> None:
    assert row.outcome == outcome
    assert row.estimated is True
    assert (row.provider, row.model) == ("openai", MODEL)
    assert row.prompt_tokens >= 4000, row.prompt_tokens
    assert (row.completion_tokens > 0) is completion, row.completion_tokens
    assert float(row.cost_usd) > 0


async def test_cut_streams_are_metered_and_spend_the_budget(
    settings: dict[str, Any], upstream: FakeUpstream
) -> None:
    """Each cut stream costs its prompt and what was streamed; the budget
    ($0.001, about 1.3 cut streams of this prompt) refuses the third request."""
    upstream.set_behaviour(MODEL, "slow", chunk_delay_ms=200)
    async with serving(**settings) as (app, client):
        key_id, key = await metered_key(client, monthly_budget_usd=0.001)
        for n in (1, 2):
            await cut_stream(client, key, chat(LONG_PROMPT, stream=True))
            found = await rows(app, count=n, api_key_id=key_id)
        for row in found:
            assert_estimated(row, outcome="cancelled", completion=True)
        assert sum(float(r.cost_usd) for r in found) > 0.001
        calls = upstream.calls(MODEL)
        refused = await client.post(CHAT, json=chat("one more"), headers=bearer(key))
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "budget_exceeded"
        assert upstream.calls(MODEL) == calls, "a refused request reached the provider"


async def test_cut_streams_count_against_the_token_limit(
    settings: dict[str, Any], upstream: FakeUpstream, redis_url: str
) -> None:
    """A limit of 5000 tokens per minute: each request is admitted on its estimate
    (~1500 prompt + 1500 max_tokens) and settled by what it really used (~1500 each,
    though cut); the third is refused. Before, every cut stream gave back all."""
    upstream.set_behaviour(MODEL, "slow", chunk_delay_ms=200)
    async with serving(**settings, redis_url=redis_url) as (app, client):
        key_id, key = await metered_key(client, tpm_limit=5000)
        prompt = "word " * 1200
        for n in (1, 2):
            await cut_stream(client, key, chat(prompt, stream=True, max_tokens=1500))
            found = await rows(app, count=n, api_key_id=key_id)
        assert all(r.estimated and r.prompt_tokens >= 1200 for r in found)
        refused = await client.post(
            CHAT, json=chat(prompt, stream=True, max_tokens=1500), headers=bearer(key)
        )
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert "tokens" in refused.json()["error"]["message"]


@pytest.mark.parametrize("stream", [False, True], ids=["non-streaming", "stream-not-started"])
async def test_an_abandoned_call_writes_one_row_and_spends_the_budget(
    settings: dict[str, Any],
    upstream: FakeUpstream,
    migrated_postgres_url: str,
    stream: bool,
) -> None:
    """The provider never answers and the client gives up: the call is cancelled
    (499), and its one row (written by COPY on PostgreSQL) carries the prompt's
    estimate, which spends a $0.0005 budget."""
    upstream.set_behaviour(MODEL, "hang")
    settings["database_url"] = migrated_postgres_url
    async with serving(**settings) as (app, client):
        key_id, key = await metered_key(client, monthly_budget_usd=0.0005)
        cancelled = upstream.cancelled
        with pytest.raises(httpx.ReadTimeout):
            await client.post(
                CHAT, json=chat(LONG_PROMPT, stream=stream), headers=bearer(key), timeout=0.5
            )
        (row,) = await rows(app, count=1, api_key_id=key_id)
        assert_estimated(row, outcome="cancelled", completion=False)
        for _ in range(100):  # the upstream call was really stopped
            if upstream.cancelled > cancelled:
                break
            await asyncio.sleep(0.02)
        assert upstream.cancelled > cancelled and upstream.in_flight == 0
        upstream.set_behaviour(MODEL, "ok")
        refused = await client.post(CHAT, json=chat("again"), headers=bearer(key))
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "budget_exceeded"


async def test_stream_events_closed_unread_still_settle(
    settings: dict[str, Any], upstream: FakeUpstream
) -> None:
    """A transport that closes the events without reading them (the client left
    as the answer started): an async generator that never started would skip its
    `finally`; the call is settled and the upstream stream released anyway."""
    upstream.set_behaviour(MODEL, "slow", chunk_delay_ms=200)
    async with serving(**settings) as (app, _):
        services = app.state.services
        caller = Caller(tenant="team-m", request_id="never-read")
        outcome = await services.completions.chat(
            caller, chat(LONG_PROMPT, stream=True), CacheDirectives()
        )
        assert isinstance(outcome, Upstream)
        answer = await outcome.call
        assert isinstance(answer, StreamAnswer)
        await answer.events.aclose()
        (row,) = await rows(app, count=1, request_id="never-read")
        assert_estimated(row, outcome="cancelled", completion=False)
        for _ in range(100):
            if upstream.in_flight == 0:
                break
            await asyncio.sleep(0.02)
        assert upstream.in_flight == 0, "the upstream stream was left open"


# -- every other way a call ends: one row each, provider figures kept --------------


async def one_row(app: FastAPI, response: httpx.Response) -> UsageRecord:
    (row,) = await rows(app, count=1, request_id=response.headers["x-request-id"])
    return row


def usage_of_stream(response: httpx.Response) -> dict[str, Any]:
    for line in response.content.split(b"\n"):
        if line.startswith(b"data: {"):
            usage = orjson.loads(line[6:]).get("usage")
            if usage:
                return dict(usage)
    raise AssertionError("no usage chunk")


async def test_each_way_a_call_ends_writes_exactly_one_row(
    llm_app: LLMApp, upstream: FakeUpstream
) -> None:
    async with llm_app(timeout=0.3, attempts=0, cooldown_failures=100) as (app, client):
        answered = await client.post(CHAT, json=chat("plain answer", model="solo"))
        row = await one_row(app, answered)
        reported = answered.json()["usage"]
        assert (row.outcome, row.estimated) == ("success", False)
        assert (row.prompt_tokens, row.completion_tokens) == (
            reported["prompt_tokens"],
            reported["completion_tokens"],
        ), "the provider's figures are kept as is"

        streamed = await client.post(
            CHAT,
            json=chat(
                "streamed answer", model="solo", stream=True, stream_options={"include_usage": True}
            ),
        )
        row = await one_row(app, streamed)
        reported = usage_of_stream(streamed)
        assert (row.outcome, row.estimated) == ("success", False)
        assert (row.prompt_tokens, row.completion_tokens) == (
            reported["prompt_tokens"],
            reported["completion_tokens"],
        )

        hit = await client.post(CHAT, json=chat("plain answer", model="solo"))
        assert hit.headers["x-cache"] == "hit"
        row = await one_row(app, hit)
        assert (row.provider, row.cache_status, row.estimated) == ("cache", "hit", False)

        upstream.set_behaviour("solo-1", "status", status=500)
        failed = await client.post(CHAT, json=chat("provider error", model="solo"))
        assert failed.status_code == 502
        row = await one_row(app, failed)
        assert (row.outcome, row.prompt_tokens, row.estimated) == ("error", 0, False)

        # spaced out, so that the chunks before the cut reach the gateway whole
        upstream.set_behaviour("solo-1", "cut", after_chunks=4, chunk_delay_ms=30)
        cut = await client.post(
            CHAT, json=chat("cut after the first byte", model="solo", stream=True)
        )
        assert b"stream_interrupted" in cut.content
        row = await one_row(app, cut)
        assert (row.outcome, row.estimated) == ("stream_cut", True)
        relayed = sum(
            b'"content":"' in line and b'"content":""' not in line
            for line in cut.content.split(b"\n")
        )
        assert relayed >= 2, cut.content
        assert (
            row.prompt_tokens > 0 and row.completion_tokens >= relayed
        )  # a token per chunk at least

        upstream.set_behaviour("solo-1", "hang")
        timed_out = await client.post(CHAT, json=chat("never answered", model="solo"))
        assert timed_out.status_code == 504
        row = await one_row(app, timed_out)
        assert (row.outcome, row.estimated, row.completion_tokens) == ("timeout", True, 0)
        assert row.prompt_tokens > 0

        embedded = await client.post("/api/v1/embeddings", json={"model": "embed", "input": "x"})
        row = await one_row(app, embedded)
        assert (row.outcome, row.estimated) == ("success", False)
        assert row.prompt_tokens == embedded.json()["usage"]["prompt_tokens"]
