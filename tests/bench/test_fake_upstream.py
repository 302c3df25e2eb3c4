"""The fake LLM upstream, exercised over real HTTP with httpx."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

import httpx
import pytest

from bench.fake_upstream import FakeUpstream, run_in_thread
from tests.support import requests

USER = {"role": "user", "content": "hello there world"}
# The fake answers any model name; these tests name the model, not the text.
chat = partial(requests.chat, text=str(USER["content"]), model="m1")


# `upstream` (a started FakeUpstream) comes from tests/support/llm.py.


@pytest.fixture
async def client(upstream: FakeUpstream) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=upstream.base_url, timeout=5) as http:
        yield http


def sse_data(text: str) -> list[str]:
    return [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


async def wait_for(condition: Callable[[], bool], within: float = 2.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# --------------------------------------------------------------------------- OpenAI chat


async def test_chat_completion_shape_and_usage(client: httpx.AsyncClient) -> None:
    body = {
        "model": "gpt-fake",
        "n": 2,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "first question"}]},
            {"role": "assistant", "content": "an answer"},
            USER,
        ],
    }
    response = await client.post("/chat/completions", json=body)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    data = response.json()
    assert data["id"].startswith("chatcmpl-fake-")
    assert data["object"] == "chat.completion"
    assert isinstance(data["created"], int)
    assert data["model"] == "gpt-fake"
    assert len(data["choices"]) == 2
    for index, choice in enumerate(data["choices"]):
        assert choice == {
            "index": index,
            "message": {"role": "assistant", "content": "echo: hello there world", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    # 2 + 2 + 2 + 3 prompt words; 4 reply words per choice.
    assert data["usage"] == {"prompt_tokens": 9, "completion_tokens": 8, "total_tokens": 17}


async def test_reply_is_truncated_and_ids_advance(client: httpx.AsyncClient) -> None:
    long = chat(messages=[{"role": "user", "content": "word " * 100}])
    first = (await client.post("/chat/completions", json=long)).json()
    second = (await client.post("/chat/completions", json=long)).json()

    content = first["choices"][0]["message"]["content"]
    assert len(content) == 200 and content.startswith("echo: word word")
    assert first["id"] != second["id"]


async def test_tool_call_when_weather_is_asked(client: httpx.AsyncClient) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    data = (await client.post("/chat/completions", json=chat(messages=ask, tools=tools))).json()

    choice = data["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [
        {
            "id": "call_fake_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
        }
    ]

    stream = await client.post(
        "/chat/completions", json=chat(messages=ask, tools=tools, stream=True)
    )
    chunks = [json.loads(d) for d in sse_data(stream.text)[:-1]]
    calls = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks[1:-1]]
    assert calls[0] == {
        "index": 0,
        "id": "call_fake_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert "".join(c["function"]["arguments"] for c in calls) == '{"city": "Paris"}'
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize("include_usage", [False, True])
async def test_chat_stream_sequence(client: httpx.AsyncClient, include_usage: bool) -> None:
    body = chat(stream=True, stream_options={"include_usage": include_usage})
    response = await client.post("/chat/completions", json=body)

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    data = sse_data(response.text)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    if include_usage:
        *chunks, usage_chunk = chunks
        assert usage_chunk["choices"] == []
        assert usage_chunk["usage"] == {
            "prompt_tokens": 3,
            "completion_tokens": 4,
            "total_tokens": 7,
        }
    else:
        assert all("usage" not in c for c in chunks)
    finish = chunks[-1]["choices"][0]
    assert finish["delta"] == {} and finish["finish_reason"] == "stop"
    pieces = [c["choices"][0]["delta"]["content"] for c in chunks[1:-1]]
    assert len(pieces) == 4
    assert "".join(pieces) == "echo: hello there world"


async def test_paths_work_without_v1_prefix_and_models_lists_seen(
    upstream: FakeUpstream,
) -> None:
    async with httpx.AsyncClient(base_url=upstream.root_url, timeout=5) as http:
        assert (await http.post("/chat/completions", json=chat(model="bare"))).status_code == 200
        assert (
            await http.post("/v1/chat/completions", json=chat(model="prefixed"))
        ).status_code == 200
        models = (await http.get("/v1/models")).json()
    assert [m["id"] for m in models["data"]] == ["bare", "prefixed"]
    assert upstream.calls() == 2


async def test_bad_request_answers_400_in_provider_shape(client: httpx.AsyncClient) -> None:
    openai = await client.post("/chat/completions", content=b"{nope")
    assert openai.status_code == 400
    assert openai.json()["error"]["type"] == "invalid_request_error"

    anthropic = await client.post("/messages", json={"messages": []})
    assert anthropic.status_code == 400
    assert anthropic.json()["type"] == "error"


# --------------------------------------------------------------------------- Anthropic


async def test_anthropic_message(client: httpx.AsyncClient) -> None:
    body = {
        "model": "claude-fake",
        "max_tokens": 64,
        "system": "be brief",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi you"}]}],
    }
    response = await client.post("/messages", json=body)

    assert response.status_code == 200
    data = response.json()
    assert data["id"].startswith("msg_fake_")
    assert data == {
        "id": data["id"],
        "type": "message",
        "role": "assistant",
        "model": "claude-fake",
        "content": [{"type": "text", "text": "echo: hi you"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 4, "output_tokens": 3},
    }


async def test_anthropic_stream(client: httpx.AsyncClient) -> None:
    body = {"model": "claude-fake", "max_tokens": 64, "stream": True, "messages": [USER]}
    response = await client.post("/messages", json=body)

    assert response.headers["content-type"] == "text/event-stream"
    events = sse_events(response.text)
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert all(name == data["type"] for name, data in events)
    start = events[0][1]["message"]
    assert start["id"].startswith("msg_fake_") and start["model"] == "claude-fake"
    assert start["usage"]["input_tokens"] == 3
    deltas = [data["delta"] for name, data in events if name == "content_block_delta"]
    assert {d["type"] for d in deltas} == {"text_delta"}
    assert "".join(d["text"] for d in deltas) == "echo: hello there world"
    message_delta = events[-2][1]
    assert message_delta["delta"]["stop_reason"] == "end_turn"
    assert message_delta["usage"] == {"output_tokens": 4}


# --------------------------------------------------------------------------- embeddings


async def test_embeddings(client: httpx.AsyncClient) -> None:
    body = {"model": "embed-fake", "input": ["alpha beta", "gamma", "alpha beta"]}
    data = (await client.post("/embeddings", json=body)).json()

    assert data["object"] == "list" and data["model"] == "embed-fake"
    assert data["usage"] == {"prompt_tokens": 5, "total_tokens": 5}
    vectors = [item["embedding"] for item in data["data"]]
    assert [item["index"] for item in data["data"]] == [0, 1, 2]
    assert all(len(v) == 8 and all(-1 <= x <= 1 for x in v) for v in vectors)
    assert vectors[0] == vectors[2] != vectors[1]

    single = (await client.post("/embeddings", json={"model": "e", "input": "gamma"})).json()
    assert single["data"][0]["embedding"] == vectors[1]

    encoded = await client.post(
        "/embeddings", json={"model": "e", "input": "gamma", "encoding_format": "base64"}
    )
    raw = base64.b64decode(encoded.json()["data"][0]["embedding"])
    assert struct.unpack("<8f", raw) == pytest.approx(vectors[1], abs=1e-6)


# --------------------------------------------------------------------------- faults


async def test_status_with_retry_after_in_each_provider_shape(
    upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    upstream.set_behaviour("m1", "status", status=429, retry_after=3)
    response = await client.post("/chat/completions", json=chat())
    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "rate_limit_exceeded"

    upstream.set_behaviour("claude", "status", status=503, retry_after=1.5)
    body = {"model": "claude", "max_tokens": 5, "messages": [USER], "stream": True}
    response = await client.post("/messages", json=body)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1.5"
    assert response.json() == {
        "type": "error",
        "error": {"type": "api_error", "message": "fake upstream: injected HTTP 503"},
    }

    # Other models are unaffected; "ok" restores the model.
    assert (await client.post("/chat/completions", json=chat(model="m2"))).status_code == 200
    upstream.set_behaviour("m1", "ok")
    assert (await client.post("/chat/completions", json=chat())).status_code == 200


async def test_fail_times_then_ok(upstream: FakeUpstream, client: httpx.AsyncClient) -> None:
    upstream.set_behaviour("m1", "fail_times", count=2, status=500)
    statuses = [(await client.post("/chat/completions", json=chat())).status_code for _ in "abc"]
    assert statuses == [500, 500, 200]
    assert upstream.calls("m1") == 3

    upstream.set_behaviour("e", "fail_times", count=1, status=503)
    embed = {"model": "e", "input": "x"}
    statuses = [(await client.post("/embeddings", json=embed)).status_code for _ in "ab"]
    assert statuses == [503, 200]


async def test_wildcard_behaviour_applies_to_models_without_their_own(
    upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    upstream.set_behaviour("*", "status", status=500)
    upstream.set_behaviour("healthy", "slow", delay_ms=1)
    assert (await client.post("/chat/completions", json=chat(model="any"))).status_code == 500
    assert (await client.post("/chat/completions", json=chat(model="healthy"))).status_code == 200


async def test_hang_is_cancelled_by_client_timeout_and_counted(
    upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    upstream.set_behaviour("m1", "hang")
    with pytest.raises(httpx.ReadTimeout):
        await client.post("/chat/completions", json=chat(), timeout=0.2)

    await wait_for(lambda: upstream.cancelled == 1)
    assert upstream.in_flight == 0
    assert upstream.calls("m1") == 1


async def test_slow_delays_answer_and_chunks(
    upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    upstream.set_behaviour("m1", "slow", delay_ms=100, chunk_delay_ms=20)
    started = time.monotonic()
    assert (await client.post("/chat/completions", json=chat())).status_code == 200
    assert time.monotonic() - started >= 0.1

    started = time.monotonic()
    response = await client.post("/chat/completions", json=chat(stream=True))
    # 100 ms, then 6 chunks after the first, 20 ms apart.
    assert time.monotonic() - started >= 0.2
    assert sse_data(response.text)[-1] == "[DONE]"


async def test_cut_stream_ends_without_done(
    upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    upstream.set_behaviour("m1", "cut", after_chunks=2)
    received: list[str] = []
    with pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"):
        async with client.stream("POST", "/chat/completions", json=chat(stream=True)) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    received.append(line[6:])
    assert "[DONE]" not in received
    deltas = [json.loads(d)["choices"][0]["delta"] for d in received]
    assert deltas == [
        {"role": "assistant", "content": ""},
        {"content": "echo: "},
        {"content": "hello "},
    ]
    assert upstream.cancelled == 0


async def test_cut_anthropic_stream_and_plain_body(
    upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    upstream.set_behaviour("claude", "cut", after_chunks=1)
    body = {"model": "claude", "max_tokens": 5, "messages": [USER], "stream": True}
    with pytest.raises(httpx.RemoteProtocolError):
        await client.post("/messages", json=body)

    upstream.set_behaviour("m1", "cut")
    with pytest.raises(httpx.RemoteProtocolError, match="expected"):
        await client.post("/chat/completions", json=chat())
    # The connection pool recovers: the next request gets a fresh connection.
    assert (await client.post("/chat/completions", json=chat(model="m2"))).status_code == 200


async def test_garbage(upstream: FakeUpstream, client: httpx.AsyncClient) -> None:
    upstream.set_behaviour("m1", "garbage")
    response = await client.post("/chat/completions", json=chat())
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        response.json()

    stream = await client.post("/chat/completions", json=chat(stream=True))
    data = sse_data(stream.text)
    assert data[0].startswith("{not json")
    with pytest.raises(json.JSONDecodeError):
        json.loads(data[0])


async def test_content_filter(upstream: FakeUpstream, client: httpx.AsyncClient) -> None:
    upstream.set_behaviour("m1", "content_filter")
    plain = (await client.post("/chat/completions", json=chat())).json()
    assert plain["choices"][0]["finish_reason"] == "content_filter"

    stream = await client.post("/chat/completions", json=chat(stream=True))
    data = sse_data(stream.text)
    assert data[-1] == "[DONE]"
    assert json.loads(data[-2])["choices"][0]["finish_reason"] == "content_filter"

    upstream.set_behaviour("claude", "content_filter")
    body = {"model": "claude", "max_tokens": 5, "messages": [USER]}
    assert (await client.post("/messages", json=body)).json()["stop_reason"] == "refusal"


def test_unknown_mode_or_parameter_is_rejected() -> None:
    upstream = FakeUpstream()
    with pytest.raises(ValueError, match="unknown mode"):
        upstream.set_behaviour("m1", "explode")
    with pytest.raises(ValueError, match="delay"):
        upstream.set_behaviour("m1", "status", delay=5)


# --------------------------------------------------------------------------- control and stats


async def test_control_api_and_stats(upstream: FakeUpstream) -> None:
    async with httpx.AsyncClient(base_url=upstream.root_url, timeout=5) as http:
        behaviour = {"model": "m1", "mode": "status", "status": 401}
        assert (await http.post("/_control/behaviour", json=behaviour)).status_code == 200
        bad = {"model": "m1", "mode": "nope"}
        assert (await http.post("/_control/behaviour", json=bad)).status_code == 400

        assert (await http.post("/v1/chat/completions", json=chat())).status_code == 401
        await http.post("/v1/chat/completions", json=chat(model="m2"))
        await http.post("/v1/chat/completions", json=chat(model="m2"))

        stats = (await http.get("/_control/stats")).json()
        assert stats["calls"] == {"m1": 1, "m2": 2}
        assert stats["in_flight"] == 0 and stats["cancelled"] == 0
        assert upstream.calls("m2") == 2 and upstream.total_calls == 3 == upstream.calls()

        assert (await http.post("/_control/reset")).status_code == 200
        assert (await http.get("/_control/stats")).json()["calls"] == {}
        assert (await http.post("/v1/chat/completions", json=chat())).status_code == 200
        assert upstream.total_calls == 1


async def test_last_request(upstream: FakeUpstream, client: httpx.AsyncClient) -> None:
    assert upstream.last_request("m1") is None
    await client.post("/chat/completions", json=chat(temperature=0.5))
    await client.post(
        "/chat/completions",
        json=chat(user="second"),
        headers={"Authorization": "Bearer sk-upstream", "X-Trace": "t1"},
    )

    last = upstream.last_request("m1")
    assert last is not None
    assert last["method"] == "POST" and last["path"] == "/v1/chat/completions"
    assert last["body"] == chat(user="second")
    assert last["headers"]["authorization"] == "Bearer sk-upstream"
    assert last["headers"]["x-trace"] == "t1"

    async with httpx.AsyncClient(base_url=upstream.root_url) as http:
        remote = await http.get("/_control/last_request", params={"model": "m1"})
    assert remote.json()["body"] == chat(user="second")


# --------------------------------------------------------------------------- other ways to run


async def test_global_latency() -> None:
    async with FakeUpstream(latency_ms=80) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=5) as http:
            started = time.monotonic()
            assert (await http.post("/chat/completions", json=chat())).status_code == 200
            assert time.monotonic() - started >= 0.08


def test_run_in_thread_serves_sync_clients() -> None:
    server, stop = run_in_thread()
    try:
        server.set_behaviour("m1", "fail_times", count=1, status=500)
        with httpx.Client(base_url=server.base_url, timeout=5) as http:
            assert http.post("/chat/completions", json=chat()).status_code == 500
            data = http.post("/chat/completions", json=chat()).json()
        assert data["choices"][0]["message"]["content"] == "echo: hello there world"
        assert server.calls("m1") == 2
    finally:
        stop()
    stop()  # idempotent
