"""Commands into a run over real HTTP: an immediate cancel, an after-turn cancel, a
cancel of a finished run, and a client tool's output that resumes a paused run.

Every test serves the app with a real uvicorn server (tests/agents/transports/conftest.py):
httpx's ASGI transport buffers a whole response, so it could neither show events
arriving while the run goes on nor a client leaving in the middle of one. The
model is the fake upstream in `script` mode (a real HTTP provider), so each turn's
answer, its pace (`chunk_delay_ms`) and the requests it received are the test's.
"""

from __future__ import annotations

import json

from tests.support.agents import (
    MODEL,
    SLOW_WORDS,
    TWO_TOOL_TURNS,
    ServedGateway,
    Sse,
    assert_numbered,
    collect,
    error_of,
    sse_events,
)


# -- cancelling ----------------------------------------------------------------------------
async def test_an_immediate_cancel_stops_the_provider_call_and_records_the_turn(
    gateway: ServedGateway,
) -> None:
    gateway.upstream.set_behaviour(
        MODEL, "script", turns=[{"content": SLOW_WORDS}], chunk_delay_ms=100
    )
    body = {"input": "Tell me a long story.", "stream": True}
    events: list[Sse] = []
    async with gateway.http.stream("POST", "/api/v1/agents/scripted/runs", json=body) as response:
        async for event in sse_events(response):
            events.append(event)
            if (
                event.event == "message.delta"
                and sum(e.event == "message.delta" for e in events) == 2
            ):
                run_id = event.data["run_id"]  # two pieces in, mid-turn: cancel, keep reading
                cancelled = await gateway.http.post(
                    f"/api/v1/runs/{run_id}/cancel", json={"mode": "immediate"}
                )
                assert cancelled.status_code == 200, cancelled.text
                assert cancelled.json()["id"] == run_id
    assert_numbered(events)
    assert events[-1].event == "run.cancelled"
    final = events[-1].data["run"]
    assert final["status"] == "cancelled" and final["stop_reason"] == "cancelled"
    # Far fewer pieces than the 40 words: the turn did not run to its end.
    assert sum(e.event == "message.delta" for e in events) < 20
    assert gateway.upstream.cancelled == 1 and gateway.upstream.calls(MODEL) == 1
    (row,) = await gateway.usage_rows(run_id)
    assert (row.run_id, row.turn, row.estimated) == (run_id, 0, True)
    assert final["usage"]["llm_calls"] == 1 and final["usage"]["estimated"] is True
    assert final["usage"]["completion_tokens"] == row.completion_tokens

    # A second cancel is fine, and changes nothing.
    again = await gateway.http.post(f"/api/v1/runs/{run_id}/cancel", json={"mode": "immediate"})
    assert again.status_code == 200 and again.json() == await gateway.get_run(run_id)
    assert again.json()["status"] == "cancelled"


async def test_an_after_turn_cancel_lets_the_turn_finish_and_calls_no_tool(
    gateway: ServedGateway,
) -> None:
    gateway.upstream.set_behaviour(MODEL, "script", turns=TWO_TOOL_TURNS, chunk_delay_ms=200)
    body = {"input": "What is 6*7, plus one?", "stream": True}
    events: list[Sse] = []
    async with gateway.http.stream("POST", "/api/v1/agents/scripted/runs", json=body) as response:
        async for event in sse_events(response):
            events.append(event)
            if event.event == "run.status" and event.data["status"] == "in_progress":
                run_id = event.data["run_id"]
                await gateway.upstream_reaches(in_flight=1)  # the first turn is under way
                accepted = await gateway.http.post(
                    f"/api/v1/runs/{run_id}/cancel", json={"mode": "after_turn"}
                )
                assert accepted.status_code == 200, accepted.text
                assert accepted.json()["status"] == "in_progress"  # the turn goes on
    kinds = [e.event for e in events]
    assert kinds[-1] == "run.cancelled"
    # The turn finished (its tool call is in its message) but the call was never run.
    (completed,) = [e for e in events if e.event == "message.completed"]
    assert completed.data["message"]["tool_calls"][0]["function"]["name"] == "calculator"
    assert not any(k.startswith("tool_call.") for k in kinds)
    assert gateway.upstream.calls(MODEL) == 1 and gateway.upstream.cancelled == 0
    final = events[-1].data["run"]
    assert final["status"] == "cancelled" and final["stop_reason"] == "cancelled"
    assert final["usage"]["llm_calls"] == 1 and final["usage"]["tool_calls"] == 0
    (row,) = await gateway.usage_rows(run_id)
    assert row.turn == 0 and row.estimated is False  # the provider reported this one
    assert final["usage"]["estimated"] is False
    assert final["usage"]["prompt_tokens"] == row.prompt_tokens


async def test_cancelling_a_finished_run_returns_it_unchanged(gateway: ServedGateway) -> None:
    gateway.upstream.set_behaviour(MODEL, "script", turns=[{"content": "done"}])
    created = await gateway.run("scripted", input="hello")
    run = created.json()
    assert run["status"] == "completed"
    for mode in ("immediate", "after_turn"):
        response = await gateway.http.post(f"/api/v1/runs/{run['id']}/cancel", json={"mode": mode})
        assert response.status_code == 200 and response.json() == run
    assert await gateway.get_run(run["id"]) == run
    wrong = await gateway.http.post(f"/api/v1/runs/{run['id']}/cancel", json={"mode": "later"})
    assert wrong.status_code == 422
    assert error_of(wrong)["code"] == "validation_error" and error_of(wrong)["param"] == "mode"


# -- client tools ------------------------------------------------------------------------
async def test_a_client_tool_pauses_the_run_until_its_output_arrives(
    gateway: ServedGateway,
) -> None:
    gateway.upstream.set_behaviour(
        MODEL,
        "script",
        turns=[
            {"tool_calls": [{"name": "lookup", "arguments": {"key": "order-7"}, "id": "call_a"}]},
            {"content": "Order 7 has shipped."},
        ],
    )
    created = await gateway.run("desk", input="Where is order 7?")
    assert created.status_code == 200, created.text
    run = created.json()
    assert run["status"] == "requires_action" and run["stop_reason"] is None
    action = run["required_action"]
    assert action["type"] == "submit_tool_outputs"
    (call,) = action["tool_calls"]
    assert call["id"] == "call_a" and call["name"] == "lookup"
    assert json.loads(call["arguments"]) == {"key": "order-7"}
    assert gateway.upstream.calls(MODEL) == 1

    outputs_url = f"/api/v1/runs/{run['id']}/tool_outputs"
    unknown = await gateway.http.post(
        outputs_url, json={"tool_outputs": [{"tool_call_id": "call_zzz", "output": "x"}]}
    )
    assert unknown.status_code == 400 and error_of(unknown)["code"] == "unknown_tool_call"

    answered = await gateway.http.post(
        outputs_url,
        json={"tool_outputs": [{"tool_call_id": "call_a", "output": '{"status": "shipped"}'}]},
    )
    assert answered.status_code == 200, answered.text
    done = await gateway.finished(run["id"])
    assert done["status"] == "completed" and done["output"] == "Order 7 has shipped."
    assert done["required_action"] is None
    assert done["usage"]["llm_calls"] == 2 and done["usage"]["tool_calls"] == 1
    # The model's next request carried the client's answer to its call.
    last = gateway.upstream.last_request(MODEL)
    assert last is not None
    tool_messages = [m for m in last["body"]["messages"] if m["role"] == "tool"]
    assert tool_messages == [
        {"role": "tool", "tool_call_id": "call_a", "content": '{"status": "shipped"}'}
    ]

    late = await gateway.http.post(
        outputs_url, json={"tool_outputs": [{"tool_call_id": "call_a", "output": "again"}]}
    )
    assert late.status_code == 409 and error_of(late)["code"] == "run_not_waiting"
    async with gateway.http.stream("GET", f"/api/v1/runs/{run['id']}/events") as response:
        kinds = [e.event for e in await collect(response)]
    assert kinds.index("tool_call.requires_action") < kinds.index("tool_call.completed")
    assert kinds[-1] == "run.completed"
