"""The run loop against a real HTTP provider (the fake upstream's `script` mode):
tool turns, every hard limit with its stop reason and a finalized answer, and
usage rows that add up to the run's usage."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from bench.fake_upstream import FakeUpstream
from database.models import UsageRecord
from tests.support.app import services, settle
from tests.support.llm import LLMApp, priced_router

CALC = {"name": "calculator", "arguments": {"expression": "6*7"}}


def agents_yaml(tmp_path: Path, *, model: str = "solo", limits: str = "") -> str:
    """One agent, `helper`, with calculator and current_time; `limits` are YAML lines
    (identical calls are allowed 10 times unless a test says otherwise)."""
    lines = dict(line.split(": ", 1) for line in limits.splitlines() if line)
    lines.setdefault("max_identical_tool_calls", "10")
    path = tmp_path / "agents.yaml"
    path.write_text(
        textwrap.dedent(f"""\
            agents:
              - id: helper
                name: Helper
                model: {model}
                instructions: Use the tools.
                tools: [calculator, current_time]
                limits:
            """)
        + "".join(f"      {name}: {value}\n" for name, value in lines.items())
    )
    return str(path)


async def run(client: httpx.AsyncClient, text: str = "go", **extra: Any) -> dict[str, Any]:
    response = await client.post("/api/v1/agents/helper/runs", json={"input": text, **extra})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def usage_rows(app: FastAPI, run_id: str) -> list[UsageRecord]:
    await settle(app)
    async with services(app).sessions() as session:
        query = select(UsageRecord).where(UsageRecord.run_id == run_id).order_by(UsageRecord.id)
        return list((await session.execute(query)).scalars())


def tool_results(request: dict[str, Any] | None) -> list[str]:
    assert request is not None
    return [m["content"] for m in request["body"]["messages"] if m["role"] == "tool"]


async def test_a_run_with_two_tool_turns_answers_from_both_results(
    llm_app: LLMApp, upstream: FakeUpstream, tmp_path: Path
) -> None:
    upstream.set_behaviour(
        "solo-1",
        "script",
        turns=[
            {"tool_calls": [CALC]},
            {"tool_calls": [{"name": "calculator", "arguments": {"expression": "42+1"}}]},
            {"content": "It is 43."},
        ],
    )
    async with llm_app(agents_config=agents_yaml(tmp_path)) as (app, client):
        body = await run(client)
        assert (body["status"], body["stop_reason"], body["output"]) == (
            "completed",
            "final",
            "It is 43.",
        )
        assert body["usage"]["llm_calls"] == 3 and body["usage"]["tool_calls"] == 2
        assert tool_results(upstream.last_request("solo-1")) == ["42", "43"]
        rows = await usage_rows(app, body["id"])
    assert [(r.agent_id, r.turn) for r in rows] == [("helper", 0), ("helper", 1), ("helper", 2)]
    assert sum(r.prompt_tokens for r in rows) == body["usage"]["prompt_tokens"]
    assert sum(r.completion_tokens for r in rows) == body["usage"]["completion_tokens"]


@pytest.mark.parametrize(
    ("limits", "turns", "reason", "tool_calls"),
    [
        (
            "max_turns: 2",
            [{"content": "gathered so far", "tool_calls": [CALC]}],
            "max_turns",
            2,
        ),
        (
            "max_tool_calls: 2",
            [{"content": "gathered so far", "tool_calls": [CALC, CALC, CALC]}],
            "max_tool_calls",
            2,
        ),
    ],
)
async def test_a_limit_ends_the_run_incomplete_with_a_finalized_answer(
    llm_app: LLMApp,
    upstream: FakeUpstream,
    tmp_path: Path,
    limits: str,
    turns: list[dict[str, Any]],
    reason: str,
    tool_calls: int,
) -> None:
    upstream.set_behaviour("solo-1", "script", turns=turns)
    async with llm_app(agents_config=agents_yaml(tmp_path, limits=limits)) as (app, client):
        body = await run(client)
        last = upstream.last_request("solo-1")
        rows = await usage_rows(app, body["id"])
    assert (body["status"], body["stop_reason"]) == ("incomplete", reason)
    assert body["output"] == "gathered so far"  # the tool-less last call's answer
    assert body["usage"]["tool_calls"] == tool_calls
    assert last is not None and last["body"]["tool_choice"] == "none"
    # every call of the last assistant message was answered before that call
    calls = [m for m in last["body"]["messages"] if m.get("tool_calls")][-1]["tool_calls"]
    answered = {m["tool_call_id"] for m in last["body"]["messages"] if m["role"] == "tool"}
    assert {c["id"] for c in calls} <= answered
    assert len(rows) == body["usage"]["llm_calls"]


async def test_an_identical_tool_call_loop_is_stopped_at_three(
    llm_app: LLMApp, upstream: FakeUpstream, tmp_path: Path
) -> None:
    upstream.set_behaviour("solo-1", "script", turns=[{"content": "looped", "tool_calls": [CALC]}])
    config = agents_yaml(tmp_path, limits="max_identical_tool_calls: 3\nmax_turns: 50")
    async with llm_app(agents_config=config) as (_app, client):
        body = await run(client)
    assert (body["status"], body["stop_reason"]) == ("incomplete", "repeated_tool_call")
    assert body["usage"]["tool_calls"] == 3
    assert body["usage"]["llm_calls"] == 5  # 4 turns (the 4th's call refused) + the final one
    assert body["output"] == "looped"


async def test_a_token_budget_stops_the_tools_and_keeps_room_for_an_answer(
    llm_app: LLMApp, upstream: FakeUpstream, tmp_path: Path
) -> None:
    upstream.set_behaviour(
        "solo-1",
        "script",
        turns=[
            {"tool_calls": [CALC], "usage": {"completion_tokens": 200}},
            {"content": "what I found", "tool_calls": [CALC]},  # tool-less: the content
        ],
    )
    config = agents_yaml(tmp_path, limits="max_total_tokens: 400")
    async with llm_app(agents_config=config) as (app, client):
        body = await run(client)
        rows = await usage_rows(app, body["id"])
    assert (body["status"], body["stop_reason"]) == ("incomplete", "token_budget")
    assert body["output"] == "what I found"  # the finalizing call still fitted
    assert body["usage"]["total_tokens"] <= 400
    assert [r.turn for r in rows] == [0, 1]  # one tool turn, then the last call


async def test_a_cost_budget_cuts_the_turn_to_fit_and_then_stops(
    llm_app: LLMApp, upstream: FakeUpstream, tmp_path: Path
) -> None:
    # gpt-4o-mini: $0.15 / $0.60 per million tokens. $0.0002 allows ~300 output tokens.
    router = priced_router(upstream, tmp_path / "router.yaml")
    upstream.set_behaviour(
        "gpt-4o-mini",
        "script",
        turns=[{"tool_calls": [CALC], "usage": {"prompt_tokens": 100, "completion_tokens": 300}}],
    )
    config = agents_yaml(tmp_path, model="metered", limits="max_cost_usd: 0.0002")
    async with llm_app(router_config=router, agents_config=config) as (app, client):
        body = await run(client)
        first = upstream.last_request("gpt-4o-mini")
        rows = await usage_rows(app, body["id"])
    assert first is not None and first["body"]["max_tokens"] < 1024  # cut to the budget
    assert (body["status"], body["stop_reason"]) == ("incomplete", "cost_budget")
    assert body["usage"]["cost_usd"] == pytest.approx(sum(float(r.cost_usd) for r in rows))
    assert body["usage"]["cost_usd"] <= 0.0002


async def test_the_wall_clock_limit_stops_a_slow_turn_and_records_its_usage(
    llm_app: LLMApp, upstream: FakeUpstream, tmp_path: Path
) -> None:
    upstream.set_behaviour(
        "solo-1", "script", turns=[{"content": "slow words " * 20}], chunk_delay_ms=200
    )
    config = agents_yaml(tmp_path, limits="max_wall_seconds: 1\non_limit: stop")
    async with llm_app(agents_config=config) as (app, client):
        body = await run(client)
        rows = await usage_rows(app, body["id"])
    assert (body["status"], body["stop_reason"]) == ("incomplete", "timeout")
    assert len(rows) == 1 and rows[0].estimated  # the cut turn, estimated, still recorded
    assert body["usage"]["llm_calls"] == 1 and body["usage"]["estimated"] is True


async def test_a_tool_the_agent_does_not_have_is_an_error_the_model_sees(
    llm_app: LLMApp, upstream: FakeUpstream, tmp_path: Path
) -> None:
    upstream.set_behaviour(
        "solo-1",
        "script",
        turns=[{"tool_calls": [{"name": "rm_rf", "arguments": {}}]}, {"content": "sorry"}],
    )
    async with llm_app(agents_config=agents_yaml(tmp_path)) as (_app, client):
        body = await run(client)
    assert (body["status"], body["output"]) == ("completed", "sorry")
    assert tool_results(upstream.last_request("solo-1")) == ["error: unknown tool 'rm_rf'"]


async def test_a_provider_failure_fails_the_run_with_the_error(
    llm_app: LLMApp, upstream: FakeUpstream, tmp_path: Path
) -> None:
    upstream.set_behaviour("solo-1", "status", status=400, message="bad thing")
    async with llm_app(agents_config=agents_yaml(tmp_path)) as (_app, client):
        body = await run(client)
    assert (body["status"], body["stop_reason"]) == ("failed", "error")
    assert body["error"]["code"] and "bad thing" in body["error"]["message"]


async def test_the_demo_agents_work_offline(app_factory: Any) -> None:
    async with app_factory() as (_app, client):
        body = (
            await client.post("/api/v1/agents/assistant/runs", json={"input": "What is 2^10 + 1?"})
        ).json()
    assert (body["status"], body["output"]) == ("completed", "The result is 1025.")
    assert body["usage"]["tool_calls"] == 1
