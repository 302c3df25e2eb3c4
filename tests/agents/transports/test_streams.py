"""Streamed agent runs over real HTTP: events delivered live and in order, a client
leaving mid-run, and events replayed after `after`, `Last-Event-ID` or to a follower
joining mid-run.

Every test serves the app with a real uvicorn server (tests/agents/transports/conftest.py):
httpx's ASGI transport buffers a whole response, so it could neither show events
arriving while the run goes on nor a client leaving in the middle of one. The
model is the fake upstream in `script` mode (a real HTTP provider), so each turn's
answer, its pace (`chunk_delay_ms`) and the requests it received are the test's.
"""

from __future__ import annotations

import asyncio

import httpx

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
from tests.support.auth import bearer


# -- streamed runs -----------------------------------------------------------------------
async def test_a_streamed_run_delivers_its_events_live_and_in_order(gateway: ServedGateway) -> None:
    gateway.upstream.set_behaviour(MODEL, "script", turns=TWO_TOOL_TURNS, chunk_delay_ms=40)
    body = {"input": "What is 6*7, plus one?", "stream": True}
    statuses_while_streaming: list[str] = []
    events: list[Sse] = []
    async with gateway.http.stream("POST", "/api/v1/agents/scripted/runs", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for event in sse_events(response):
            events.append(event)
            if event.event == "tool_call.completed" and not statuses_while_streaming:
                # The stream is live: the run is still going when its first tool answers.
                run = await gateway.get_run(event.data["run_id"])
                statuses_while_streaming.append(run["status"])
    assert statuses_while_streaming == ["in_progress"]
    assert_numbered(events)
    kinds = [e.event for e in events]
    assert kinds[:2] == ["run.created", "run.status"]
    assert kinds[-1] == "run.completed" and kinds.count("run.completed") == 1
    # Each tool turn: the model's message, then its call, then the call's answer.
    tool_events = [k for k in kinds if k.startswith("tool_call.")]
    assert tool_events == ["tool_call.created", "tool_call.completed"] * 2
    first_created = kinds.index("tool_call.created")
    assert kinds[first_created - 2 : first_created] == ["message.completed", "usage.updated"]
    outputs = [e.data["output"] for e in events if e.event == "tool_call.completed"]
    assert outputs == ["42", "43"]
    deltas = "".join(e.data["delta"] for e in events if e.event == "message.delta")
    final = events[-1].data["run"]
    assert deltas == final["output"] == "Six times seven is 42, and one more is 43."
    assert final["status"] == "completed" and final["stop_reason"] == "final"
    assert final["last_seq"] == events[-1].id
    assert final["usage"]["llm_calls"] == 3 and final["usage"]["tool_calls"] == 2
    # The deltas arrived over time, not in one piece at the end.
    delta_times = [e.at for e in events if e.event == "message.delta"]
    assert delta_times[-1] - delta_times[0] > 0.1
    assert await gateway.get_run(final["id"]) == final


async def test_a_client_leaving_a_streamed_run_cancels_it_and_keeps_the_turns_usage(
    gateway: ServedGateway,
) -> None:
    gateway.upstream.set_behaviour(
        MODEL, "script", turns=[{"content": SLOW_WORDS}], chunk_delay_ms=100
    )
    body = {"input": "Tell me a long story.", "stream": True}
    async with gateway.http.stream("POST", "/api/v1/agents/scripted/runs", json=body) as response:
        async for event in sse_events(response):
            if event.event == "message.delta":
                run_id = event.data["run_id"]
                break  # leaves mid-turn: the block closes the connection
    run = await gateway.finished(run_id)
    assert run["status"] == "cancelled" and run["stop_reason"] == "cancelled"
    # The provider call was stopped, not left to finish on its own.
    await gateway.upstream_reaches(cancelled=1)
    assert gateway.upstream.in_flight == 0 and gateway.upstream.calls(MODEL) == 1
    # The turn is on the ledger, estimated: the provider never reported its usage.
    (row,) = await gateway.usage_rows(run_id)
    assert (row.agent_id, row.turn, row.estimated) == ("scripted", 0, True)
    assert row.prompt_tokens > 0 and row.completion_tokens > 0
    assert run["usage"]["llm_calls"] == 1 and run["usage"]["estimated"] is True
    assert run["usage"]["prompt_tokens"] == row.prompt_tokens
    assert run["usage"]["completion_tokens"] == row.completion_tokens


# -- replaying events --------------------------------------------------------------------
async def test_events_after_n_and_last_event_id_replay_exactly_the_rest(
    gateway: ServedGateway,
) -> None:
    gateway.upstream.set_behaviour(MODEL, "script", turns=TWO_TOOL_TURNS)
    created = await gateway.run("scripted", input="What is 6*7, plus one?")
    assert created.status_code == 200, created.text
    run = created.json()
    assert run["status"] == "completed"
    run_id, last = run["id"], run["last_seq"]
    events_url = f"/api/v1/runs/{run_id}/events"

    async with gateway.http.stream("GET", events_url) as response:
        everything = await collect(response)
    assert_numbered(everything)
    assert everything[-1].event == "run.completed" and everything[-1].id == last

    for after in (0, 3, last - 1, last):
        async with gateway.http.stream("GET", events_url, params={"after": after}) as response:
            rest = await collect(response)
        assert [(e.id, e.event, e.data) for e in rest] == [
            (e.id, e.event, e.data) for e in everything[after:]
        ]
        async with gateway.http.stream(
            "GET", events_url, headers={"Last-Event-ID": str(after)}
        ) as response:
            resumed = await collect(response)
        assert [e.id for e in resumed] == [e.id for e in rest]

    # Both given: the later of the two wins, as a browser reconnecting with `after` would want.
    async with gateway.http.stream(
        "GET", events_url, params={"after": 2}, headers={"Last-Event-ID": "5"}
    ) as response:
        assert [e.id for e in await collect(response)] == list(range(6, last + 1))

    missing = await gateway.http.get("/api/v1/runs/run_missing/events")
    assert missing.status_code == 404 and error_of(missing)["code"] == "run_not_found"


async def test_a_follower_joining_mid_run_gets_the_rest_live_without_duplicates(
    gateway: ServedGateway,
) -> None:
    gateway.upstream.set_behaviour(
        MODEL,
        "script",
        turns=[TWO_TOOL_TURNS[0], {"content": "one two three four five six seven eight"}],
        chunk_delay_ms=60,
    )
    body = {"input": "What is 6*7?", "stream": True}
    async with gateway.http.stream("POST", "/api/v1/agents/scripted/runs", json=body) as response:
        stream = sse_events(response)
        head = [await anext(stream) for _ in range(4)]
        run_id = head[0].data["run_id"]
        # A second client follows from seq 4 while the run goes on, resuming as an
        # EventSource does after a dropped connection.
        async with httpx.AsyncClient(
            base_url=gateway.url, headers=bearer(gateway.key), timeout=30
        ) as other:
            async with other.stream(
                "GET", f"/api/v1/runs/{run_id}/events", headers={"Last-Event-ID": "4"}
            ) as followed:
                following = asyncio.ensure_future(collect(followed))
                original = head + [event async for event in stream]
                tail = await following
    assert_numbered(original)
    assert original[-1].event == "run.completed"
    assert [(e.id, e.event, e.data) for e in tail] == [
        (e.id, e.event, e.data) for e in original[4:]
    ]
    # The follower was live: it had text before the run's end, not all at the end.
    tail_deltas = [e.at for e in tail if e.event == "message.delta"]
    assert tail_deltas and tail_deltas[0] < tail[-1].at - 0.1
