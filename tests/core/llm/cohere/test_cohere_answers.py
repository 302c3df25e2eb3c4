"""What the client gets from Cohere (`core.llm.cohere_answer`), through the gateway:
answers in OpenAI's shape, finish reasons, usage as Cohere bills it, streams (Cohere's
own sample streams replayed: text, two streamed tool calls, other framings) and a
failure mid-stream. Every answer and chunk is validated with OpenAI's schema."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from bench.fake_upstream import FakeUpstream
from tests.support.cohere import (
    MODEL,
    REPLAYED_MODEL,
    TOOL_STREAM,
    completed,
    message_end,
    sent,
    streamed,
    text_stream,
    tool_call_events,
)
from tests.support.contracts import assert_valid, sse_data
from tests.support.replay import Replay
from tests.support.requests import CHAT, chat


# -- answers --------------------------------------------------------------------------------
async def test_an_answer_in_openais_shape(client: httpx.AsyncClient) -> None:
    data = await completed(client, chat("hello there", model="cohere"))
    assert data["id"].startswith("fake-cohere-")
    assert (data["object"], data["model"]) == ("chat.completion", MODEL)
    assert data["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "echo: hello there", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert data["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}


def _answer(finish: str, usage: Any = None, **message: Any) -> dict[str, Any]:
    content = [
        {"type": "thinking", "thinking": "The user greets me."},
        {"type": "text", "text": "Hello"},
        {"type": "text", "text": " world"},
    ]
    data: dict[str, Any] = {
        "id": "c0ffee",
        "finish_reason": finish,
        "message": {"role": "assistant", "content": content, **message},
    }
    if usage is not None:
        data["usage"] = usage
    return data


BILLED = {
    "billed_units": {"input_tokens": 5.0, "output_tokens": 2.0},
    "tokens": {"input_tokens": 71.0, "output_tokens": 9.0},
}


@pytest.mark.parametrize(
    ("finish", "expected"),
    [
        ("COMPLETE", "stop"),
        ("STOP_SEQUENCE", "stop"),
        ("MAX_TOKENS", "length"),
        ("TOOL_CALL", "tool_calls"),
    ],
)
async def test_finish_reasons(
    client: httpx.AsyncClient, replay: Replay, finish: str, expected: str
) -> None:
    replay.answer(_answer(finish, BILLED))
    data = await completed(client, chat("hi", model="replayed"))
    choice = data["choices"][0]
    assert choice["finish_reason"] == expected
    # The text blocks, not the reasoning model's thinking; usage as Cohere bills it.
    assert choice["message"]["content"] == "Hello world"
    assert (data["id"], data["model"]) == ("c0ffee", REPLAYED_MODEL)
    assert data["usage"] == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        ({"tokens": {"input_tokens": 71, "output_tokens": 9}}, [71, 9, 80]),
        (None, None),
    ],
)
async def test_usage_without_billed_units(
    client: httpx.AsyncClient, replay: Replay, usage: Any, expected: list[int] | None
) -> None:
    replay.answer(_answer("COMPLETE", usage))
    data = await completed(client, chat("hi", model="replayed"))
    found = data.get("usage")
    names = ("prompt_tokens", "completion_tokens", "total_tokens")
    assert ([found[name] for name in names] if found else None) == expected


@pytest.mark.parametrize(("finish", "status"), [("ERROR", 502), ("TIMEOUT", 504)])
async def test_a_failed_generation_is_not_an_answer(
    client: httpx.AsyncClient, replay: Replay, finish: str, status: int
) -> None:
    replay.answer(_answer(finish))
    response = await client.post(CHAT, json=chat("hi", model="replayed"))
    assert response.status_code == status, response.text
    assert_valid("ErrorResponse", response.json())


# -- streams -------------------------------------------------------------------------------
async def test_a_streamed_tool_call_sample(client: httpx.AsyncClient, replay: Replay) -> None:
    replay.stream(TOOL_STREAM)
    chunks = await streamed(client, chat("weather?", model="replayed"))
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert {c["id"] for c in chunks} == {"fba98ad3-e5a1-413c-a8de-84fbf9baabf7"}
    assert {c["model"] for c in chunks} == {REPLAYED_MODEL}
    calls: dict[int, dict[str, Any]] = {}
    for chunk in chunks[1:-2]:
        (piece,) = chunk["choices"][0]["delta"]["tool_calls"]
        if "id" in piece:  # a call's first delta: id, type and name
            assert piece["index"] not in calls
            calls[piece["index"]] = {"id": piece["id"], **piece["function"]}
        else:
            assert set(piece) == {"index", "function"}
            calls[piece["index"]]["arguments"] += piece["function"]["arguments"]
    assert [(c["id"], c["name"], json.loads(c["arguments"])) for c in calls.values()] == [
        ("get_weather_p1t92w7gfgq7", "get_weather", {"location": "Madrid"}),
        ("get_weather_ay6nmvjgp9vn", "get_weather", {"location": "Brasilia"}),
    ]
    assert chunks[-2]["choices"] == [
        {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "tool_calls"}
    ]
    assert chunks[-1]["usage"] == {"prompt_tokens": 37, "completion_tokens": 28, "total_tokens": 65}


@pytest.mark.parametrize(
    ("done", "lines"), [(False, False), (True, False), (False, True)], ids=["sse", "done", "lines"]
)
async def test_a_streamed_text_sample(
    client: httpx.AsyncClient, replay: Replay, done: bool, lines: bool
) -> None:
    """Cohere's text stream sample, as SSE, with a `[DONE]` after it, and in Cohere's
    other framing (one JSON event a line)."""
    pieces = ["LL", "Ms", " stand", " for", " Large", " Language", " Models."]
    replay.stream(text_stream(pieces), done=done, lines=lines)
    chunks = await streamed(client, chat("Tell me about LLMs", model="replayed"))
    text = [c["choices"][0]["delta"].get("content") for c in chunks[1:-2]]
    assert text == pieces
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"]["completion_tokens"] == 26


async def test_a_stream_without_include_usage_has_no_usage_chunk(
    client: httpx.AsyncClient, replay: Replay
) -> None:
    replay.stream(text_stream(["Hi"], finish="MAX_TOKENS"))
    chunks = await streamed(client, chat("hi", model="replayed"), include_usage=False)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


async def test_streaming_asks_cohere_for_sse(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    chunks = await streamed(client, chat("hello", model="cohere"))
    assert "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]
    ) == ("echo: hello")
    request = sent(upstream)
    assert request["headers"]["accept"] == "text/event-stream"
    assert request["body"]["stream"] is True


@pytest.mark.parametrize("how", ["error", "cut"])
async def test_a_failure_mid_stream_ends_with_an_error_event(
    client: httpx.AsyncClient, replay: Replay, upstream: FakeUpstream, how: str
) -> None:
    """Cohere's `message-end` carrying an error, or a stream that stops before its
    `message-end`: the client gets what came, then an error event, never `[DONE]`."""
    if how == "error":
        events = text_stream(["Hel"])[:-1]
        events.append({"type": "message-end", "delta": {"finish_reason": "ERROR", "error": "boom"}})
        replay.stream(events)
        model = "replayed"
    else:
        upstream.set_behaviour(MODEL, "cut", after_chunks=2)
        model = "cohere"
    body = {**chat("hello there", model=model), "stream": True}
    response = await client.post(CHAT, json=body)
    assert response.status_code == 200
    data = sse_data(response.content)
    assert data[-1] != b"[DONE]"
    error = json.loads(data[-1])
    assert_valid("ErrorResponse", error)
    assert error["error"]["code"] == "stream_interrupted"
    for payload in data[:-1]:
        assert_valid("CreateChatCompletionStreamResponse", json.loads(payload))
    assert json.loads(data[0])["choices"][0]["delta"]["role"] == "assistant"
    if how == "error":  # what came before the failure reached the client
        assert json.loads(data[1])["choices"][0]["delta"]["content"] == "Hel"


@pytest.mark.parametrize(
    "index",
    [[0], {"a": 1}, "0", True, 7],
    ids=["list", "object", "string", "bool", "never-started"],
)
async def test_a_tool_call_delta_with_a_bad_index_is_the_providers_garbage(
    client: httpx.AsyncClient, replay: Replay, index: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    """An index that is no integer (or names a call never started) is Cohere's broken
    stream, ended with the provider's error event, not a Skygate bug (an internal error)
    nor a delta silently given to another call."""
    events = [*TOOL_STREAM[:3], *tool_call_events("call_1", ['{"a"', ": 1}"], 0)]
    events[-2] = {**events[-2], "index": index}  # the second argument piece
    replay.stream([*events, message_end("TOOL_CALL", (1.0, 1.0))])
    body = {**chat("weather?", model="replayed"), "stream": True}
    response = await client.post(CHAT, json=body)
    assert response.status_code == 200
    data = sse_data(response.content)
    error = json.loads(data[-1])
    assert_valid("ErrorResponse", error)
    assert error["error"]["code"] == "stream_interrupted", error
    assert "provider_failed_locally" not in capfd.readouterr().err, "not logged as Skygate's bug"
