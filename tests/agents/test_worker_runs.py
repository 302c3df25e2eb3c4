"""Background runs on the job queue, and the usage ledger of a run.

`background: true` answers 202 at once and the run executes on the job queue: in
the web process itself on SQLite (the embedded default), and in a real
`python -m worker` process on PostgreSQL (`tests.worker.fleet`), where the web app
still serves the run's events and takes its cancel. Every model call of a run,
the finalizing one included, is one usage record naming the agent, the run and
the turn, and those records add up to the run's `usage`.

The model is the fake upstream in `script` mode behind a priced deployment
(`priced_router`: litellm's cost map prices it), so costs are not zero and their
sums mean something.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bench.fake_upstream import FakeUpstream
from database.models import UsageRecord
from main_enterprise import create_app
from tests.support.app import make_settings, services, settle
from tests.support.asgi_server import serve
from tests.support.auth import ADMIN, bearer, insert_key
from tests.support.llm import PRICED_MODEL, LLMApp, priced_router
from tests.worker.fleet import Worker, fast_settings, until

T = TypeVar("T")
AGENTS = """\
agents:
  - id: scripted
    name: Scripted
    model: metered
    instructions: Use the calculator for arithmetic.
    tools: [calculator]
"""
TWO_TOOL_TURNS = [
    {"tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}]},
    {"tool_calls": [{"name": "calculator", "arguments": {"expression": "42+1"}}]},
    {"content": "Six times seven is 42, and one more is 43."},
]
LOOPING = [{"tool_calls": [{"name": "calculator", "arguments": {"expression": "1+1"}}]}]
SLOW_WORDS = " ".join(f"word{i}" for i in range(60))  # ~6 s at 100 ms a piece
FINISHED = frozenset({"completed", "incomplete", "failed", "cancelled"})


# -- helpers -------------------------------------------------------------------------------
async def get_run(client: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/v1/runs/{run_id}")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


async def finished(client: httpx.AsyncClient, run_id: str, within: float = 30) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        run = await get_run(client, run_id)
        return run if run["status"] in FINISHED else None

    return await until(done, within, what=f"run {run_id} to finish")


async def start_background(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/api/v1/agents/scripted/runs", json={"background": True, **body})
    assert response.status_code == 202, response.text
    run: dict[str, Any] = response.json()
    assert run["background"] is True and run["status"] == "queued"
    assert response.headers["location"] == f"/api/v1/runs/{run['id']}"
    return run


async def usage_rows(sessions: async_sessionmaker[AsyncSession], run_id: str) -> list[UsageRecord]:
    query = select(UsageRecord).where(UsageRecord.run_id == run_id).order_by(UsageRecord.id)
    async with sessions() as session:
        return list((await session.execute(query)).scalars())


def assert_ledger_matches(rows: list[UsageRecord], run: dict[str, Any], turns: int) -> None:
    """One row per model call, turns 0..turns-1, each naming the agent and the run,
    and their sum is the run's usage."""
    assert [row.turn for row in rows] == list(range(turns))
    assert {(row.agent_id, row.run_id, row.model_group) for row in rows} == {
        ("scripted", run["id"], "metered")
    }
    usage = run["usage"]
    assert usage["llm_calls"] == len(rows)
    assert usage["prompt_tokens"] == sum(row.prompt_tokens for row in rows)
    assert usage["completion_tokens"] == sum(row.completion_tokens for row in rows)
    assert usage["estimated"] is any(row.estimated for row in rows)
    cost = sum(float(row.cost_usd) for row in rows)
    assert cost > 0
    assert usage["cost_usd"] == pytest.approx(cost, abs=1e-9)


async def sse_events(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """Each event's data (with its `id:` checked against its seq) as it arrives."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line.startswith(":"):
            continue
        if line:
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
            continue
        if "data" in fields:
            data: dict[str, Any] = json.loads(fields["data"])
            assert int(fields["id"]) == data["seq"] and fields["event"] == data["type"]
            yield data
        fields = {}


# -- in-process, on SQLite ---------------------------------------------------------------
@pytest.fixture
def agents_yaml(tmp_path: Path) -> str:
    path = tmp_path / "agents.yaml"
    path.write_text(AGENTS)
    return str(path)


async def test_a_background_run_completes_on_the_in_process_queue_and_is_metered(
    llm_app: LLMApp, upstream: FakeUpstream, tmp_path: Path, agents_yaml: str
) -> None:
    upstream.set_behaviour(PRICED_MODEL, "script", turns=TWO_TOOL_TURNS)
    app_settings = {
        "router_config": priced_router(upstream, tmp_path / "router.yaml"),
        "agents_config": agents_yaml,
        "admin_api_key": ADMIN,
        "enable_cache": False,
    }
    async with llm_app(**app_settings) as (app, client):
        key, key_id = await insert_key(app, tenant="team-a")
        client.headers.update(bearer(key))
        queued = await start_background(client, input="What is 6*7, plus one?")
        run = await finished(client, queued["id"])
        assert run["status"] == "completed" and run["stop_reason"] == "final"
        assert run["output"] == "Six times seven is 42, and one more is 43."
        assert run["usage"]["tool_calls"] == 2 and run["background"] is True

        events = await client.get(f"/api/v1/runs/{run['id']}/events")
        kinds = [e["type"] async for e in sse_events(events)]
        assert kinds[0] == "run.created" and kinds[-1] == "run.completed"
        assert kinds.count("tool_call.completed") == 2

        # The same idempotency key twice: one run, the second answer is that run.
        first = await start_background(client, input="again", idempotency_key="bg-1")
        repeat = await client.post(
            "/api/v1/agents/scripted/runs",
            json={"input": "again", "background": True, "idempotency_key": "bg-1"},
        )
        assert repeat.status_code == 200 and repeat.json()["id"] == first["id"]
        await finished(client, first["id"])

        await settle(app)
        rows = await usage_rows(services(app).sessions, run["id"])
        assert_ledger_matches(rows, run, turns=3)
        assert {(row.tenant, row.api_key_id, row.estimated) for row in rows} == {
            ("team-a", key_id, False)
        }


async def test_a_run_that_hits_a_limit_meters_its_finalizing_call_too(
    llm_app: LLMApp, upstream: FakeUpstream, tmp_path: Path, agents_yaml: str
) -> None:
    upstream.set_behaviour(PRICED_MODEL, "script", turns=LOOPING)
    app_settings = {
        "router_config": priced_router(upstream, tmp_path / "router.yaml"),
        "agents_config": agents_yaml,
        "admin_api_key": ADMIN,
        "enable_cache": False,
    }
    async with llm_app(**app_settings) as (app, client):
        key, _ = await insert_key(app, tenant="team-a")
        client.headers.update(bearer(key))
        queued = await start_background(client, input="1+1?", limits={"max_turns": 2})
        run = await finished(client, queued["id"])
        assert run["status"] == "incomplete" and run["stop_reason"] == "max_turns"
        assert run["output"] == "final answer"  # the script's tool-less answer
        await settle(app)
        rows = await usage_rows(services(app).sessions, run["id"])
    # Two turns and the tool-less call after the limit: three calls, three rows.
    assert_ledger_matches(rows, run, turns=3)
    assert upstream.calls(PRICED_MODEL) == 3


# -- a real worker, on PostgreSQL ------------------------------------------------------------
async def test_a_background_run_executes_in_the_worker_and_the_web_app_follows_and_cancels_it(
    migrated_postgres_url: str,
    redis_url: str,
    upstream: FakeUpstream,
    tmp_path: Path,
    agents_yaml: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_OPENAI_KEY", "fake-openai-key")
    router = priced_router(upstream, tmp_path / "router.yaml")
    common = {
        "database_url": migrated_postgres_url,
        "redis_url": redis_url,
        "router_config": router,
        "agents_config": agents_yaml,
        "enable_cache": False,
        "usage_flush_seconds": 0.1,
    }
    worker = Worker(
        "agents-worker",
        tmp_path,
        {name.upper(): str(value) for name, value in common.items()}
        | {"FAKE_OPENAI_KEY": "fake-openai-key"},
    )
    app = create_app(make_settings(admin_api_key=ADMIN, **common, **fast_settings()))
    try:
        async with (
            serve(app) as served,
            httpx.AsyncClient(base_url=served.http_url, timeout=30) as client,
        ):
            assert (await client.get("/live")).status_code == 200  # the lifespan has run
            key, _ = await insert_key(app, tenant="team-a")
            client.headers.update(bearer(key))
            sessions = services(app).sessions

            # No worker yet: the web app queues the run and does not run it itself.
            upstream.set_behaviour(PRICED_MODEL, "script", turns=TWO_TOOL_TURNS)
            queued = await start_background(client, input="What is 6*7, plus one?")
            assert (await get_run(client, queued["id"]))["status"] == "queued"
            assert upstream.calls(PRICED_MODEL) == 0
            worker.start()

            # The worker runs it; the web app streams its events from the database.
            await worker.started()
            async with client.stream("GET", f"/api/v1/runs/{queued['id']}/events") as response:
                events = [event async for event in sse_events(response)]
            assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
            assert events[-1]["type"] == "run.completed"
            run = await get_run(client, queued["id"])
            assert run["status"] == "completed" and run["last_seq"] == events[-1]["seq"]
            assert run["output"] == "Six times seven is 42, and one more is 43."
            rows = await until(
                lambda: _rows(sessions, run["id"], 3), what="the worker's usage records"
            )
            assert_ledger_matches(rows, run, turns=3)

            # A slow run: followed live from the web app, cancelled through it.
            upstream.set_behaviour(
                PRICED_MODEL, "script", turns=[{"content": SLOW_WORDS}], chunk_delay_ms=100
            )
            slow = await start_background(client, input="Tell me a long story.")
            deltas = 0
            async with client.stream("GET", f"/api/v1/runs/{slow['id']}/events") as response:
                async for event in sse_events(response):
                    if event["type"] == "message.delta":
                        deltas += 1
                        if deltas == 1:
                            cancel = await client.post(
                                f"/api/v1/runs/{slow['id']}/cancel", json={"mode": "immediate"}
                            )
                            assert cancel.status_code == 200, cancel.text
                    last = event
            assert last["type"] == "run.cancelled"
            cancelled = await get_run(client, slow["id"])
            assert cancelled["status"] == "cancelled" and cancelled["stop_reason"] == "cancelled"
            assert 0 < deltas < 40  # the turn was stopped, far short of its 60 pieces
            # The worker cut its provider call, and recorded the turn, estimated.
            assert upstream.cancelled == 1 and upstream.in_flight == 0
            (row,) = await until(
                lambda: _rows(sessions, slow["id"], 1), what="the cancelled turn's usage record"
            )
            assert (row.agent_id, row.turn, row.estimated) == ("scripted", 0, True)
            assert cancelled["usage"]["estimated"] is True
            assert cancelled["usage"]["completion_tokens"] == row.completion_tokens
            assert upstream.calls(PRICED_MODEL) == 4
    finally:
        worker.stop()
    # Both runs were the worker's jobs (the web app on PostgreSQL runs none itself).
    jobs = [json.loads(line) for line in worker.logs().splitlines() if line.startswith("{")]
    ran = [j for j in jobs if j.get("type") == "agent.run" and j["event"] == "job_succeeded"]
    assert len(ran) == 2, worker.logs()[-3000:]
    assert not [j for j in jobs if j["event"] == "run_failed"]


async def _rows(
    sessions: async_sessionmaker[AsyncSession], run_id: str, count: int
) -> list[UsageRecord] | None:
    rows = await usage_rows(sessions, run_id)
    return rows if len(rows) >= count else None
