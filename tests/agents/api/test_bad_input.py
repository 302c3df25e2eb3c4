"""Every bad or hostile request to the agents API answered with a 4xx in OpenAI's error
shape, reaching no model and changing nothing: run requests, cancels and tool outputs,
agent definitions, and identifiers with a NUL byte on PostgreSQL.

The model is the fake upstream's `script` mode (`bench.fake_script`): the turn it
answers is the number of assistant messages in the request, so a test states the
whole conversation up front and reads what the model was sent from `last_request`.
The gateway (tests/agents/api/conftest.py) runs in-process on SQLite.
"""

from __future__ import annotations

from typing import Any

from bench.fake_upstream import FakeUpstream
from tests.support.agents import (
    ADMIN_HEADERS,
    AGENTS,
    CONFIRM,
    MODEL,
    ApiGateway,
    agent_body,
    assert_error,
)
from tests.support.auth import ADMIN, bearer, create_key
from tests.support.llm import LLMApp

# -- bad and hostile requests ---------------------------------------------------------------
HUGE = "x" * 200_000
BAD_RUNS: list[tuple[Any, int | None, str | None]] = [  # body, status, code (None: any 4xx)
    (b"{not json", 400, "invalid_json"),
    (b"", 400, "invalid_json"),
    (b"[]", 400, "invalid_json"),
    (b'"input"', 400, "invalid_json"),
    (b"null", 400, "invalid_json"),
    (b"[" * 5000 + b"]" * 5000, 400, "invalid_json"),
    ({"input": "hi", "colour": "red"}, 422, "validation_error"),
    ({"input": "hi", "model": "solo"}, 422, "validation_error"),  # no choosing the model
    ({"input": "hi", "tools": [{"type": "function"}]}, 422, "validation_error"),
    ({}, 422, "validation_error"),
    ({"input": ""}, 422, "validation_error"),
    ({"input": []}, 422, "validation_error"),
    ({"input": None}, 422, "validation_error"),
    ({"input": 5}, 422, "validation_error"),
    ({"input": {"role": "user", "content": "hi"}}, 422, "validation_error"),
    ({"input": ["hi"]}, 422, "validation_error"),
    ({"input": [{"content": "hi"}]}, 422, "validation_error"),
    ({"input": [{"role": "tool", "content": "hi"}]}, 422, "validation_error"),
    ({"input": [{"role": "robot", "content": "hi"}]}, 422, "validation_error"),
    ({"input": [{"role": HUGE, "content": "hi"}]}, 422, "validation_error"),
    ({"input": [{"role": ["user"], "content": "hi"}]}, 422, "validation_error"),
    ({"input": [{"role": {"user": 1}, "content": "hi"}]}, 422, "validation_error"),
    ({"input": [{"role": "user", "content": None}]}, 422, "validation_error"),
    ({"input": [{"role": "user", "content": {"text": "hi"}}]}, 422, "validation_error"),
    ({"input": [{"role": "user", "content": "hi", "tool_calls": []}]}, 422, "validation_error"),
    ({"input": [{"role": "user", "content": [1, {"a": [None]}]}]}, 422, "validation_error"),
    ({"input": [{"role": "user", "content": [{"type": "video", "url": "x"}]}]}, 422, None),
    ({"input": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}, 422, None),
    ({"input": [{"role": "user", "content": "hi", "name": {"x": [1]}}]}, 422, None),
    ({"input": "hi", "thread_id": HUGE}, 422, "validation_error"),
    ({"input": "hi", "thread_id": 7}, 422, "validation_error"),
    ({"input": "hi", "thread_id": ["t"]}, 422, "validation_error"),
    ({"input": "hi", "idempotency_key": ""}, 422, "validation_error"),
    ({"input": "hi", "idempotency_key": HUGE}, 422, "validation_error"),
    ({"input": "hi", "idempotency_key": {"k": 1}}, 422, "validation_error"),
    ({"input": "hi", "stream": "maybe"}, 422, "validation_error"),
    ({"input": "hi", "background": [True]}, 422, "validation_error"),
    ({"input": "hi", "limits": "tight"}, 422, "validation_error"),
    ({"input": "hi", "limits": {"max_turns": 0}}, 422, "validation_error"),
    ({"input": "hi", "limits": {"max_turns": "2" * 400}}, 422, "validation_error"),
    ({"input": "hi", "limits": {"max_turns": 1.5}}, 422, "validation_error"),
    ({"input": "hi", "limits": {"max_cost_usd": -1}}, 422, "validation_error"),
    ({"input": "hi", "limits": {"max_wall_seconds": 1e308}}, 422, "validation_error"),
    ({"input": "hi", "limits": {"on_limit": "explode"}}, 422, "validation_error"),
    ({"input": "hi", "limits": {"max_loops": 1}}, 422, "validation_error"),
    ({"input": "hi", "limits": {"max_turns": 5}}, 400, "limit_not_allowed"),  # helper's is 4
    ({"input": "hi", "limits": {"max_tool_calls": 6}}, 400, "limit_not_allowed"),
    ({"input": "hi", "limits": {"max_wall_seconds": 121}}, 400, "limit_not_allowed"),
    ({"input": "hi", "stream": True, "background": True}, 400, None),
    ({"input": "hi", "thread_id": "thread_unknown"}, 404, "thread_not_found"),
    (b'{"input": "' + b"x" * (11 * 1024 * 1024) + b'"}', 413, None),
]


async def test_bad_run_requests_get_a_4xx_error_and_reach_no_model(gateway: ApiGateway) -> None:
    failures = []
    for body, status, code in BAD_RUNS:
        if isinstance(body, bytes):
            response = await gateway.client.post(
                f"{AGENTS}/helper/runs",
                content=body,
                headers={**gateway.a, "Content-Type": "application/json"},
            )
        else:
            response = await gateway.run("helper", gateway.a, **body)
        try:
            assert_error(response, status, code=code)
        except (AssertionError, ValueError) as failure:
            failures.append(f"{str(body)[:80]}: {failure}"[:400])
    assert not failures, "\n".join(failures)
    limit = assert_error(
        await gateway.run("helper", gateway.a, input="hi", limits={"max_turns": 9})
    )
    assert limit["param"] == "limits.max_turns" and "4" in limit["message"]
    assert gateway.upstream.calls() == 0
    # ... and the gateway is fine: a good list of messages with content parts runs.
    gateway.upstream.set_behaviour(MODEL, "script", turns=[{"content": "Fine."}])
    parts = [{"type": "text", "text": "Still "}, {"type": "text", "text": "there?"}]
    good = [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": parts}]
    run = (await gateway.run("helper", gateway.a, input=good)).json()
    assert (run["status"], run["output"]) == ("completed", "Fine."), run
    assert gateway.sent()[1:] == good


async def test_runs_of_unknown_or_disabled_agents_are_refused(gateway: ApiGateway) -> None:
    for agent_id in ("nobody", "Helper", "x" * 10_000, "helper%00", "..%2f..%2fkeys"):
        assert_error(await gateway.run(agent_id, gateway.a, input="hi"), 404)
    disabled = await gateway.run("dormant", gateway.a, input="hi")
    assert_error(disabled, 409, code="agent_disabled")
    assert_error(await gateway.run("helper", {}, input="hi"), 401)
    assert gateway.upstream.calls() == 0


async def test_tighter_limits_are_kept_and_a_looser_one_is_refused(gateway: ApiGateway) -> None:
    gateway.upstream.set_behaviour(
        MODEL,
        "script",
        turns=[
            {"tool_calls": [{"name": "calculator", "arguments": {"expression": "1+1"}}]},
            {"content": "Stopped."},
        ],
    )
    tight = {"max_turns": 1, "max_total_tokens": 50_000, "on_limit": "finalize"}
    run = (await gateway.run("helper", gateway.a, input="add", limits=tight)).json()
    assert (run["status"], run["stop_reason"]) == ("incomplete", "max_turns"), run
    assert run["limits"]["max_turns"] == 1 and run["limits"]["max_total_tokens"] == 50_000
    assert run["limits"]["max_tool_calls"] == 5  # the agent's, untouched
    looser = await gateway.run("helper", gateway.a, input="add", limits={"max_tool_calls": 99})
    assert_error(looser, 400, code="limit_not_allowed", param="limits.max_tool_calls")


async def test_bad_cancels_and_tool_outputs_get_a_4xx_error(gateway: ApiGateway) -> None:
    client = gateway.client
    gateway.upstream.set_behaviour(MODEL, "script", turns=[CONFIRM, {"content": "Done."}])
    paused = (await gateway.run("asker", gateway.a, input="go")).json()
    run_id = paused["id"]
    (call,) = paused["required_action"]["tool_calls"]
    cancel, outputs = f"/api/v1/runs/{run_id}/cancel", f"/api/v1/runs/{run_id}/tool_outputs"
    one = {"tool_call_id": call["id"], "output": "yes"}
    bad: list[tuple[str, Any, int | None, str | None]] = [
        (cancel, {"mode": "now"}, 422, "validation_error"),
        (cancel, {"mode": ""}, 422, None),
        (cancel, {"mode": ["immediate"]}, 422, None),
        (cancel, {"mode": HUGE}, 422, None),
        (cancel, {"mode": "immediate", "force": True}, 422, None),
        (cancel, b"junk", None, None),
        (cancel, b"[1, 2]", 422, None),
        (cancel, b'"immediate"', 422, None),
        ("/api/v1/runs/cancel", {}, 422, None),
        ("/api/v1/runs/cancel", {"idempotency_key": ""}, 422, None),
        ("/api/v1/runs/cancel", {"idempotency_key": HUGE}, 422, None),
        ("/api/v1/runs/cancel", {"idempotency_key": 5}, 422, None),
        ("/api/v1/runs/cancel", {"idempotency_key": "k", "mode": "later"}, 422, None),
        (outputs, {}, 422, None),
        (outputs, {"tool_outputs": []}, 422, None),
        (outputs, {"tool_outputs": "yes"}, 422, None),
        (outputs, {"tool_outputs": [one] * 65}, 422, None),
        (outputs, {"tool_outputs": [{"tool_call_id": call["id"]}]}, 422, None),
        (outputs, {"tool_outputs": [{**one, "output": 42}]}, 422, None),
        (outputs, {"tool_outputs": [{**one, "output": {"nested": [[[]]]}}]}, 422, None),
        (outputs, {"tool_outputs": [{**one, "tool_call_id": HUGE}]}, 422, None),
        (outputs, {"tool_outputs": [{**one, "extra": 1}]}, 422, None),
        (
            outputs,
            {"tool_outputs": [{**one, "tool_call_id": "call_nope"}]},
            400,
            "unknown_tool_call",
        ),
        (outputs, {"tool_outputs": [one, {**one, "tool_call_id": "x"}]}, 400, "unknown_tool_call"),
        ("/api/v1/runs/run_nope/cancel", {}, 404, "run_not_found"),
        ("/api/v1/runs/run_nope/tool_outputs", {"tool_outputs": [one]}, 404, "run_not_found"),
        (f"/api/v1/runs/{'r' * 5000}/cancel", {}, 404, None),
    ]
    failures = []
    for path, body, status, code in bad:
        if isinstance(body, bytes):
            headers = {**gateway.a, "Content-Type": "application/json"}
            response = await client.post(path, content=body, headers=headers)
        else:
            response = await client.post(path, json=body, headers=gateway.a)
        try:
            assert_error(response, status, code=code)
        except (AssertionError, ValueError) as failure:
            failures.append(f"{path[-12:]} {str(body)[:80]}: {failure}"[:400])
    assert not failures, "\n".join(failures)
    for path in (f"/api/v1/runs/{'r' * 5000}", "/api/v1/runs/run_nope/events"):
        assert_error(await client.get(path, headers=gateway.a), 404)
    events = f"/api/v1/runs/{run_id}/events"
    assert_error(await client.get(f"{events}?after=-1", headers=gateway.a))
    assert_error(await client.get(f"{events}?after=x", headers=gateway.a))
    assert_error(await client.get(events, headers={**gateway.a, "Last-Event-ID": "9" * 64}))
    # None of it touched the run; the right answer finishes it, and then it waits no more.
    still = (await client.get(f"/api/v1/runs/{run_id}", headers=gateway.a)).json()
    assert still["status"] == "requires_action"
    assert (await client.post(outputs, json={"tool_outputs": [one]}, headers=gateway.a)).is_success
    done = await gateway.finished(run_id, gateway.a)
    assert (done["status"], done["output"]) == ("completed", "Done."), done
    late = await client.post(outputs, json={"tool_outputs": [one]}, headers=gateway.a)
    assert_error(late, 409, code="run_not_waiting")
    again = await client.post(cancel, json={"mode": "after_turn"}, headers=gateway.a)
    assert (again.status_code, again.json()["status"]) == (200, "completed")  # stays as it ended


BAD_AGENTS: list[tuple[Any, int | None]] = [  # body of POST /agents, status (None: any 4xx)
    (b"{", 400),
    (b"[]", 400),
    ({}, 422),
    ({"id": "a"}, 422),
    (agent_body("Bad Id"), 422),
    (agent_body("a" * 65), 422),
    (agent_body("x", colour="red"), 422),
    (agent_body("x", status="paused"), 422),
    (agent_body("x", model="no-such-group"), 400),
    (agent_body("x", model="agent:helper"), 400),
    (agent_body("x", model=HUGE), None),
    (agent_body("x", name=HUGE), 422),
    (agent_body("x", name=["n"]), 422),
    (agent_body("x", tenant=5), 400),
    (agent_body("x", tenant=""), 400),
    (agent_body("x", tenant="*"), 400),
    (agent_body("x", tenant={"t": 1}), 400),
    (agent_body("x", tools="calculator"), 422),
    (agent_body("x", tools=["rm -rf /"]), 422),
    (agent_body("x", tools=["calculator", "calculator"]), 422),
    (agent_body("x", tools=[{"builtin": "http_fetch"}]), 422),
    (agent_body("x", tools=[{"type": "http", "name": "t", "url": "file:///etc/passwd"}]), 422),
    (agent_body("x", tools=[{"type": "http", "name": "t", "url": "http://h/${KEY}"}]), 422),
    (agent_body("x", tools=[{"type": "client", "name": "t", "parameters": "junk"}]), 422),
    (agent_body("x", tools=[[[[[]]]]]), 422),
    (agent_body("x", model_settings={"api_base": "http://evil"}), 422),
    (agent_body("x", model_settings={"api_key": "sk-1"}), 422),
    (agent_body("x", limits={"max_turns": 0}), 422),
    (agent_body("x", limits={"max_turns": "ten"}), 422),
    (agent_body("x", limits={"unbounded": True}), 422),
    (agent_body("x", output_schema={"type": "string"}), 422),
    (agent_body("x", output_schema=[1]), 422),
]


async def test_bad_agent_definitions_get_a_4xx_error_and_change_nothing(
    gateway: ApiGateway,
) -> None:
    client = gateway.client
    failures = []
    for body, status in BAD_AGENTS:
        if isinstance(body, bytes):
            headers = {**ADMIN_HEADERS, "Content-Type": "application/json"}
            response = await client.post(AGENTS, content=body, headers=headers)
        else:
            response = await client.post(AGENTS, json=body, headers=ADMIN_HEADERS)
        try:
            assert_error(response, status)
        except (AssertionError, ValueError) as failure:
            failures.append(f"{str(body)[:80]}: {failure}"[:400])
    made = await client.post(
        AGENTS, json=agent_body("kept", tenant="team-a"), headers=ADMIN_HEADERS
    )
    assert made.status_code == 201
    patch = f"{AGENTS}/kept?tenant=team-a"
    for changes, status in [
        ({"id": "renamed"}, 400),
        ({"model": "nope"}, 400),
        ({"tools": ["nope"]}, 422),
        ({"limits": "x"}, 422),
        ({"surprise": 1}, 422),
        (b"[1]", 400),
        (b"\xff\xfe", 400),
    ]:
        if isinstance(changes, bytes):
            headers = {**ADMIN_HEADERS, "Content-Type": "application/json"}
            response = await client.patch(patch, content=changes, headers=headers)
        else:
            response = await client.patch(patch, json=changes, headers=ADMIN_HEADERS)
        try:
            assert_error(response, status)
        except (AssertionError, ValueError) as failure:
            failures.append(f"PATCH {str(changes)[:80]}: {failure}"[:400])
    huge_tenant = await client.patch(
        f"{AGENTS}/kept?tenant={'t' * 5000}", json={}, headers=ADMIN_HEADERS
    )
    try:
        assert_error(huge_tenant)
    except AssertionError as failure:
        failures.append(f"PATCH ?tenant=<5000>: {failure}"[:400])
    assert not failures, "\n".join(failures)
    listed = (await client.get(AGENTS, headers=gateway.a)).json()["data"]
    assert [a["id"] for a in listed] == ["asker", "crm", "dormant", "helper", "kept"]
    assert [a["version"] for a in listed if a["id"] == "kept"] == [1]  # no edit went through


async def test_identifiers_with_a_nul_byte_are_4xx_on_postgresql(
    llm_app: LLMApp, upstream: FakeUpstream, migrated_postgres_url: str
) -> None:
    async with llm_app(admin_api_key=ADMIN, database_url=migrated_postgres_url) as (_, client):
        key = bearer((await create_key(client, tenant="team-a"))["key"])
        upstream.set_behaviour(MODEL, "script", turns=[{"content": "x"}])
        made = await client.post(AGENTS, json=agent_body("pg"), headers=ADMIN_HEADERS)
        assert made.status_code == 201
        answers = [
            await client.get("/api/v1/runs/run%00x", headers=key),
            await client.get("/api/v1/runs/run%00x/events", headers=key),
            await client.post("/api/v1/runs/run%00x/cancel", json={}, headers=key),
            await client.get(f"{AGENTS}/a%00b", headers=key),
            await client.get("/api/v1/threads/t%00/messages", headers=key),
            await client.post(f"{AGENTS}/a%00/runs", json={"input": "hi"}, headers=key),
            await client.post(
                f"{AGENTS}/pg/runs", json={"input": "hi", "thread_id": "t\u0000"}, headers=key
            ),
            await client.post(
                f"{AGENTS}/pg/runs", json={"input": "hi", "idempotency_key": "k\u0000"}, headers=key
            ),
            await client.post(
                "/api/v1/runs/cancel", json={"idempotency_key": "k\u0000"}, headers=key
            ),
            await client.post(
                AGENTS, json=agent_body("t", tenant="t\u0000"), headers=ADMIN_HEADERS
            ),
            await client.patch(f"{AGENTS}/pg?tenant=t%00", json={}, headers=ADMIN_HEADERS),
        ]
        assert [r.status_code for r in answers if r.status_code >= 500] == []
        for answer in answers:
            assert_error(answer)
