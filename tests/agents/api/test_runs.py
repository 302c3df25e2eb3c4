"""Runs and threads through the agents API: tenants that never see each other's runs
or threads, threads that continue a conversation, and idempotency keys.

The model is the fake upstream's `script` mode (`bench.fake_script`): the turn it
answers is the number of assistant messages in the request, so a test states the
whole conversation up front and reads what the model was sent from `last_request`.
The gateway (tests/agents/api/conftest.py) runs in-process on SQLite.
"""

from __future__ import annotations

import asyncio
import time

from tests.support.agents import CONFIRM, MODEL, ApiGateway, assert_error, usage_rows


# -- runs and threads across tenants ------------------------------------------------------
async def test_another_tenants_run_is_not_found_and_left_alone(gateway: ApiGateway) -> None:
    client = gateway.client
    gateway.upstream.set_behaviour(MODEL, "script", turns=[CONFIRM, {"content": "Done."}])
    paused = (await gateway.run("asker", gateway.a, input="go", idempotency_key="k-1")).json()
    assert paused["status"] == "requires_action", paused
    run_id = paused["id"]
    (call,) = paused["required_action"]["tool_calls"]
    outputs = {"tool_outputs": [{"tool_call_id": call["id"], "output": "yes"}]}
    for refused in (
        await client.get(f"/api/v1/runs/{run_id}", headers=gateway.b),
        await client.get(f"/api/v1/runs/{run_id}/events", headers=gateway.b),
        await client.post(f"/api/v1/runs/{run_id}/cancel", json={}, headers=gateway.b),
        await client.post(f"/api/v1/runs/{run_id}/tool_outputs", json=outputs, headers=gateway.b),
        await client.post(
            "/api/v1/runs/cancel", json={"idempotency_key": "k-1"}, headers=gateway.b
        ),
    ):
        assert_error(refused, 404, code="run_not_found")
        assert "Proceed?" not in refused.text and "asker" not in refused.text
    # None of that reached the run: it still waits for team-a, who finishes it.
    still = (await client.get(f"/api/v1/runs/{run_id}", headers=gateway.a)).json()
    assert (still["status"], still["required_action"]) == (
        "requires_action",
        paused["required_action"],
    )
    answered = await client.post(
        f"/api/v1/runs/{run_id}/tool_outputs", json=outputs, headers=gateway.a
    )
    assert answered.status_code == 200, answered.text
    assert (await gateway.finished(run_id, gateway.a))["output"] == "Done."
    # team-b's own run with the same idempotency key is a different run.
    gateway.upstream.set_behaviour(MODEL, "script", turns=[{"content": "B's."}])
    theirs = (await gateway.run("helper", gateway.b, input="go", idempotency_key="k-1")).json()
    assert theirs["id"] != run_id and theirs["output"] == "B's."


async def test_another_tenants_thread_is_not_found(gateway: ApiGateway) -> None:
    client = gateway.client
    gateway.upstream.set_behaviour(MODEL, "script", turns=[{"content": "Noted."}])
    first = (await gateway.run("helper", gateway.a, input="My code is 1234.")).json()
    thread = first["thread_id"]
    before = (await client.get(f"/api/v1/threads/{thread}/messages", headers=gateway.a)).json()
    calls = gateway.upstream.calls(MODEL)
    for refused in (
        await gateway.run("helper", gateway.b, input="What is the code?", thread_id=thread),
        await client.get(f"/api/v1/threads/{thread}/messages", headers=gateway.b),
        await client.get("/api/v1/threads/thread_nope/messages", headers=gateway.a),
        await gateway.run("helper", gateway.a, input="hi", thread_id="thread_nope"),
    ):
        assert_error(refused, 404, code="thread_not_found")
        assert "1234" not in refused.text
    assert gateway.upstream.calls(MODEL) == calls  # nothing reached the model
    after = (await client.get(f"/api/v1/threads/{thread}/messages", headers=gateway.a)).json()
    assert after == before


async def test_a_thread_continues_the_conversation(gateway: ApiGateway) -> None:
    client = gateway.client
    gateway.upstream.set_behaviour(
        MODEL,
        "script",
        turns=[
            {"tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}]},
            {"content": "It is 42."},
            {"content": "You asked about 6*7."},
        ],
    )
    first = (await gateway.run("helper", gateway.a, input="What is 6*7?")).json()
    assert (first["status"], first["output"]) == ("completed", "It is 42."), first
    thread = first["thread_id"]
    second = (
        await gateway.run("helper", gateway.a, input="What did I ask?", thread_id=thread)
    ).json()
    assert (second["status"], second["thread_id"]) == ("completed", thread), second
    assert second["output"] == "You asked about 6*7."
    sent = gateway.sent()
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool", "assistant", "user"]
    assert sent[1]["content"] == "What is 6*7?" and sent[3]["content"] == "42"
    assert sent[4]["content"] == "It is 42." and sent[5]["content"] == "What did I ask?"
    listed = await client.get(f"/api/v1/threads/{thread}/messages", headers=gateway.a)
    assert listed.status_code == 200
    body = listed.json()
    assert (body["object"], body["thread_id"]) == ("list", thread)
    assert body["data"] == [*sent[1:], {"role": "assistant", "content": "You asked about 6*7."}]


# -- idempotency --------------------------------------------------------------------------
async def test_the_same_idempotency_key_twice_is_one_run(gateway: ApiGateway) -> None:
    gateway.upstream.set_behaviour(MODEL, "script", turns=[{"content": "Once."}], delay_ms=300)
    both = await asyncio.gather(
        gateway.run("helper", gateway.a, input="once", idempotency_key="same"),
        gateway.run("helper", gateway.a, input="once", idempotency_key="same"),
    )
    runs = [response.json() for response in both]
    assert all(r.status_code == 200 for r in both), [r.text for r in both]
    assert runs[0]["id"] == runs[1]["id"] and runs[0]["output"] == runs[1]["output"] == "Once."
    later = await gateway.run("helper", gateway.a, input="other", idempotency_key="same")
    assert (later.status_code, later.json()) == (200, runs[0])  # ended: returned as it is
    assert gateway.upstream.calls(MODEL) == 1
    (row,) = await usage_rows(gateway.app, runs[0]["id"])
    assert (row.prompt_tokens, row.completion_tokens) == (
        runs[0]["usage"]["prompt_tokens"],
        runs[0]["usage"]["completion_tokens"],
    )


async def test_a_cancel_by_idempotency_key_stops_the_run_before_its_id_is_known(
    gateway: ApiGateway,
) -> None:
    client, upstream = gateway.client, gateway.upstream
    upstream.set_behaviour(MODEL, "script", turns=[{"content": "Too late."}], delay_ms=10_000)
    started = asyncio.create_task(
        gateway.run("helper", gateway.a, input="slow", idempotency_key="late")
    )
    deadline = time.monotonic() + 10
    while upstream.in_flight == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)  # until the turn reaches the provider
    assert upstream.in_flight == 1
    cancel = {"idempotency_key": "late", "mode": "immediate"}
    cancelled = await client.post("/api/v1/runs/cancel", json=cancel, headers=gateway.a)
    assert cancelled.status_code == 200, cancelled.text
    run = (await asyncio.wait_for(started, 10)).json()
    assert (run["status"], run["stop_reason"]) == ("cancelled", "cancelled"), run
    assert cancelled.json()["id"] == run["id"]
    again = await client.post("/api/v1/runs/cancel", json=cancel, headers=gateway.a)
    assert (again.status_code, again.json()["status"]) == (200, "cancelled")  # idempotent
    (row,) = await usage_rows(gateway.app, run["id"])  # the stopped turn is recorded
    assert row.estimated and row.prompt_tokens > 0
    assert_error(
        await client.post("/api/v1/runs/cancel", json={"idempotency_key": "x"}, headers=gateway.a),
        404,
        code="run_not_found",
    )
