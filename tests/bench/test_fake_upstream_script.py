"""The fake upstream's `script` mode over real HTTP: the turn chosen from the
conversation, the tool-less fallback, OpenAI's shapes (checked against the
published schema), streams that assemble to the non-streamed answer, delays."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from bench.fake_upstream import FakeUpstream
from core.gateway.streams import StreamAssembler
from tests.support.contracts import assert_valid

MODEL = "scripted"
TOOLS = [
    {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}
    for name in ("calculator", "current_time")
]
SCRIPT: list[dict[str, Any]] = [
    {"tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}]},
    {
        "tool_calls": [
            {"name": "current_time", "arguments": {"timezone": "Asia/Tokyo"}, "id": "call_mine"},
            {"name": "calculator", "arguments": '{"expression": "1+1"}'},
        ],
        "content": "no tools, so: 42",
    },
    {"content": "It is 42, and noon in Tokyo.", "usage": {"completion_tokens": 99}},
]


@pytest.fixture
async def client(upstream: FakeUpstream) -> AsyncIterator[httpx.AsyncClient]:
    upstream.set_behaviour(MODEL, "script", turns=SCRIPT)
    async with httpx.AsyncClient(base_url=upstream.base_url, timeout=5) as http:
        yield http


def conversation(assistant_turns: int) -> list[dict[str, Any]]:
    """A user question followed by `assistant_turns` tool-calling turns and their results."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": "what is 6*7, and the time?"}]
    for turn in range(assistant_turns):
        call = {
            "id": f"call_{turn}_0",
            "type": "function",
            "function": {"name": "calculator", "arguments": "{}"},
        }
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        messages.append({"role": "tool", "tool_call_id": f"call_{turn}_0", "content": "42"})
    return messages


def body(assistant_turns: int, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": conversation(assistant_turns), "tools": TOOLS, **extra}


async def complete(client: httpx.AsyncClient, request: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/chat/completions", json=request)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    assert_valid("CreateChatCompletionResponse", data)
    return data


async def stream_chunks(client: httpx.AsyncClient, request: dict[str, Any]) -> list[Any]:
    response = await client.post("/chat/completions", json={**request, "stream": True})
    assert response.status_code == 200, response.text
    data = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    chunks = [json.loads(item) for item in data[:-1]]
    for chunk in chunks:
        assert_valid("CreateChatCompletionStreamResponse", chunk)
    return chunks


def message(data: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = data["choices"][0]["message"]
    return found


# --------------------------------------------------------------------------- choosing the turn


async def test_each_request_gets_the_turn_its_assistant_messages_count(
    client: httpx.AsyncClient,
) -> None:
    first = await complete(client, body(0))
    assert first["choices"][0]["finish_reason"] == "tool_calls"
    assert message(first) == {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "tool_calls": [
            {
                "id": "call_0_0",
                "type": "function",
                "function": {"name": "calculator", "arguments": '{"expression": "6*7"}'},
            }
        ],
    }

    second = await complete(client, body(1))
    calls = message(second)["tool_calls"]
    assert [c["id"] for c in calls] == ["call_mine", "call_1_1"]  # given id, then the default
    assert [c["function"]["name"] for c in calls] == ["current_time", "calculator"]
    assert calls[1]["function"]["arguments"] == '{"expression": "1+1"}'  # a string as given
    assert message(second)["content"] is None  # content is the tool-less answer only

    third = await complete(client, body(2))
    assert third["choices"][0]["finish_reason"] == "stop"
    assert message(third)["content"] == "It is 42, and noon in Tokyo."
    assert third["usage"]["completion_tokens"] == 99  # the script's figure, not a count
    assert third["usage"]["total_tokens"] == third["usage"]["prompt_tokens"] + 99

    past_the_end = await complete(client, body(7))
    assert message(past_the_end)["content"] == "It is 42, and noon in Tokyo."


async def test_a_one_turn_script_loops_with_fresh_ids(
    upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    upstream.set_behaviour(MODEL, "script", turns=SCRIPT[:1])
    for turn in range(4):
        calls = message(await complete(client, body(turn)))["tool_calls"]
        assert [c["id"] for c in calls] == [f"call_{turn}_0"]
    assert upstream.calls(MODEL) == 4


async def test_usage_is_counted_unless_the_script_says(client: httpx.AsyncClient) -> None:
    data = await complete(client, body(0))
    # words of the prompt (question and nothing else) and of the arguments text
    assert data["usage"] == {"prompt_tokens": 6, "completion_tokens": 2, "total_tokens": 8}


# --------------------------------------------------------------------------- the tool-less call


@pytest.mark.parametrize(
    "tool_less",
    [{"tools": None}, {"tool_choice": "none"}, {"tools": []}],
    ids=["no-tools", "tool-choice-none", "empty-tools"],
)
async def test_a_tool_less_request_gets_text_from_a_tool_turn(
    client: httpx.AsyncClient, tool_less: dict[str, Any]
) -> None:
    request = {k: v for k, v in {**body(1), **tool_less}.items() if v is not None}
    data = await complete(client, request)
    assert data["choices"][0]["finish_reason"] == "stop"
    assert message(data) == {"role": "assistant", "content": "no tools, so: 42", "refusal": None}

    without_content = {k: v for k, v in {**body(0), **tool_less}.items() if v is not None}
    assert message(await complete(client, without_content))["content"] == "final answer"


# --------------------------------------------------------------------------- streaming


@pytest.mark.parametrize("turns", [0, 1, 2], ids=["one-call", "parallel-calls", "text"])
@pytest.mark.parametrize("n", [1, 2])
async def test_a_stream_assembles_to_the_non_streamed_answer(
    client: httpx.AsyncClient, turns: int, n: int
) -> None:
    request = body(turns, n=n, stream_options={"include_usage": True})
    plain = await complete(client, {k: v for k, v in request.items() if k != "stream_options"})
    chunks = await stream_chunks(client, request)

    assembler = StreamAssembler()
    for chunk in chunks:
        assembler.add(chunk)
    assert assembler.complete
    assembled = assembler.completion()
    assert assembled["choices"] == plain["choices"]
    assert assembled["usage"] == plain["usage"]
    assert chunks[-1]["choices"] == []  # the usage chunk, as OpenAI sends it


async def test_stream_chunks_have_openais_tool_call_shapes(client: httpx.AsyncClient) -> None:
    chunks = await stream_chunks(client, body(1))
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0] == {"role": "assistant", "content": None}
    calls = [d["tool_calls"][0] for d in deltas[1:-1]]
    openings = [c for c in calls if "id" in c]
    assert openings == [
        {
            "index": 0,
            "id": "call_mine",
            "type": "function",
            "function": {"name": "current_time", "arguments": ""},
        },
        {
            "index": 1,
            "id": "call_1_1",
            "type": "function",
            "function": {"name": "calculator", "arguments": ""},
        },
    ]
    pieces = [c for c in calls if "id" not in c]
    assert all(
        set(c) == {"index", "function"} and set(c["function"]) == {"arguments"} for c in pieces
    )
    assert len(pieces) > 2, "arguments arrive in pieces"
    assert deltas[-1] == {} and chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert all("usage" not in c for c in chunks)  # include_usage was not asked for


# --------------------------------------------------------------------------- delays and cancel


async def test_delays_apply_and_a_client_can_leave_mid_turn(
    upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    upstream.set_behaviour(MODEL, "script", turns=SCRIPT, delay_ms=100, chunk_delay_ms=300)
    started = time.monotonic()
    await complete(client, body(0))
    assert time.monotonic() - started >= 0.1

    request = {**body(1), "stream": True}
    async with client.stream("POST", "/chat/completions", json=request) as response:
        lines = response.aiter_lines()
        first = await anext(lines)
        assert json.loads(first[6:])["choices"][0]["delta"]["role"] == "assistant"
    # the client left after the first chunk: the server sees the turn cancelled
    deadline = time.monotonic() + 5
    while upstream.cancelled < 1:
        assert time.monotonic() < deadline, "the abandoned stream was not noticed"
        await asyncio.sleep(0.02)
    assert upstream.in_flight == 0


# --------------------------------------------------------------------------- control and records


async def test_the_control_api_sets_a_script_and_rejects_a_bad_one(upstream: FakeUpstream) -> None:
    async with httpx.AsyncClient(base_url=upstream.root_url, timeout=5) as http:
        turns = [{"content": "over HTTP"}]
        ok = await http.post(
            "/_control/behaviour", json={"model": "m2", "mode": "script", "turns": turns}
        )
        assert ok.status_code == 200
        stats = (await http.get("/_control/stats")).json()
        assert stats["behaviours"]["m2"] == {"mode": "script", "turns": 1}
        answer = await http.post("/v1/chat/completions", json={**body(0), "model": "m2"})
        assert message(answer.json())["content"] == "over HTTP"

        bad_scripts: list[Any] = [[], [{"tool_calls": [{"arguments": {}}]}], [{"content": 5}]]
        for bad in [
            *bad_scripts,
            [{"text": "x"}],
            [{"content": "x", "usage": {"prompt_tokens": -1}}],
        ]:
            refused = await http.post(
                "/_control/behaviour", json={"model": "m2", "mode": "script", "turns": bad}
            )
            assert refused.status_code == 400, bad
    with pytest.raises(ValueError, match="turns"):
        upstream.set_behaviour("m3", "script")
    with pytest.raises(ValueError, match="usage"):
        upstream.set_behaviour("m3", "script", turns=[{"content": "x", "usage": {"cost": 1}}])


async def test_last_request_shows_the_tool_results_sent(
    upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    await complete(client, body(2))
    sent = upstream.last_request(MODEL)
    assert sent is not None
    tool_messages = [m for m in sent["body"]["messages"] if m["role"] == "tool"]
    assert [(m["tool_call_id"], m["content"]) for m in tool_messages] == [
        ("call_0_0", "42"),
        ("call_1_0", "42"),
    ]


async def test_anthropic_messages_refuse_a_script(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/messages",
        json={"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert response.status_code == 400
    assert "script" in response.json()["error"]["message"]
