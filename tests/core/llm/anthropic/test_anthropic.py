"""Anthropic's native path (`core.llm.anthropic`) as a provider, through the gateway:
the credentials and endpoint Anthropic receives, Anthropic's own failures (an error
object, an error event, a stream without `message_stop`; the failures every provider
has: tests/providers/test_provider_errors.py), embeddings refused as the client's, and
JSON mode. (No litellm on this path: tests/providers/test_no_litellm.py.) The translation:
test_anthropic_requests.py and test_anthropic_answers.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.fake_upstream import FakeUpstream
from tests.support.anthropic import MODEL
from tests.support.anthropic_gateway import KEY, V1_MODEL
from tests.support.contracts import assert_valid, assert_valid_stream, sse_data
from tests.support.replay import Replay
from tests.support.requests import CHAT, chat

ROOT = Path(__file__).resolve().parents[4]


def sent(upstream: FakeUpstream, model: str = MODEL) -> dict[str, Any]:
    request = upstream.last_request(model)
    assert request is not None, "nothing reached Anthropic"
    return request


async def failed(client: httpx.AsyncClient, body: dict[str, Any], status: int) -> dict[str, Any]:
    response = await client.post(CHAT, json=body)
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()
    assert_valid("ErrorResponse", error)
    return error


# -- what Anthropic receives ----------------------------------------------------------------
@pytest.mark.parametrize(("group", "model"), [("claude", MODEL), ("claude-v1", V1_MODEL)])
@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
async def test_anthropic_gets_its_key_version_and_endpoint(
    client: httpx.AsyncClient, upstream: FakeUpstream, group: str, model: str, stream: bool
) -> None:
    """The key as `x-api-key` (never as a bearer token), the API version, and
    `/v1/messages` below the host, whether the base URL is the host or the version root."""
    response = await client.post(CHAT, json=chat("hello", model=group, stream=stream))
    assert response.status_code == 200, response.text
    if stream:
        assert_valid_stream(response.content, include_usage=False)
    else:
        assert_valid("CreateChatCompletionResponse", response.json())
    request = sent(upstream, model)
    assert request["path"] == "/v1/messages"
    assert request["headers"]["x-api-key"] == KEY
    assert request["headers"]["anthropic-version"] == "2023-06-01"
    assert "authorization" not in request["headers"]
    assert request["body"]["model"] == model
    assert request["body"].get("stream", False) is stream


# -- failures before the answer -------------------------------------------------------------
async def test_an_error_object_answered_with_200_is_no_answer(
    client: httpx.AsyncClient, replay: Replay
) -> None:
    replay.answer({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}})
    await failed(client, chat("hi", model="replayed"), 502)


# -- failures during a stream ---------------------------------------------------------------
def text_events(pieces: list[str]) -> list[dict[str, Any]]:
    """Anthropic's stream of a text answer, as its streaming reference shows it, up to
    (not including) its `message_delta` and `message_stop`."""
    start = {
        "type": "message_start",
        "message": {
            "id": "msg_replayed",
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": MODEL,
            "stop_reason": None,
            "usage": {"input_tokens": 5, "output_tokens": 1},
        },
    }
    block = {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    deltas = [
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}}
        for p in pieces
    ]
    return [start, block, {"type": "ping"}, *deltas]


@pytest.mark.parametrize("how", ["error-event", "no-message-stop"])
async def test_a_failure_mid_stream_ends_with_an_error_event(
    client: httpx.AsyncClient, replay: Replay, upstream: FakeUpstream, how: str
) -> None:
    """An `error` event (Anthropic's `overloaded_error` mid-stream) or a stream that ends
    without `message_stop`: the client gets what came, then an error event, never
    `[DONE]`. (A connection dropped: tests/providers/test_provider_errors.py.)"""
    if how == "error-event":
        error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
        replay.stream([*text_events(["Hel"]), error])
    else:
        replay.stream(text_events(["Hel"]))
    response = await client.post(CHAT, json=chat("hello there", model="replayed", stream=True))
    assert response.status_code == 200
    data = sse_data(response.content)
    assert data[-1] != b"[DONE]"
    error = json.loads(data[-1])
    assert_valid("ErrorResponse", error)
    assert error["error"]["code"] == "stream_interrupted"
    for payload in data[:-1]:
        assert_valid("CreateChatCompletionStreamResponse", json.loads(payload))
    assert json.loads(data[0])["choices"][0]["delta"]["role"] == "assistant"
    assert json.loads(data[1])["choices"][0]["delta"]["content"] == "Hel"  # what came first


async def test_a_replayed_stream_ends_at_message_stop(
    client: httpx.AsyncClient, replay: Replay
) -> None:
    """Anthropic's own sequence, pings included: the text, the finish, the usage in a
    chunk of its own, then `[DONE]` (whatever follows `message_stop` is not read as
    the answer)."""
    end: list[dict[str, Any]] = [
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 3},
        },
        {"type": "message_stop"},
    ]
    replay.stream([*text_events(["Hel", "lo"]), *end])
    body = chat("hello", model="replayed", stream=True, stream_options={"include_usage": True})
    response = await client.post(CHAT, json=body)
    assert response.status_code == 200, response.text
    chunks = assert_valid_stream(response.content, include_usage=True)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Hello"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    assert chunks[-1]["usage"]["prompt_tokens"] == 5
    assert chunks[-1]["usage"]["completion_tokens"] == 3
    assert {c["id"] for c in chunks} == {"msg_replayed"}


# -- embeddings -----------------------------------------------------------------------------
async def test_embeddings_from_an_anthropic_group_are_the_clients_400(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    response = await client.post("/api/v1/embeddings", json={"model": "claude", "input": "hi"})
    assert response.status_code == 400, response.text
    assert_valid("ErrorResponse", response.json())
    assert "no embeddings API" in response.json()["error"]["message"]
    assert upstream.calls(MODEL) == 0


# -- JSON mode ------------------------------------------------------------------------------
SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "weather",
        "schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
async def test_a_json_response_format_answers_json_content(
    client: httpx.AsyncClient, upstream: FakeUpstream, stream: bool
) -> None:
    """OpenAI's JSON mode, as Anthropic has none: one forced tool whose input is the
    answer, given back as the message's content (no tool calls, finish `stop`)."""
    body = chat("weather in Paris as JSON", model="claude", response_format=SCHEMA)
    if stream:
        response = await client.post(CHAT, json={**body, "stream": True})
        assert response.status_code == 200, response.text
        chunks = assert_valid_stream(response.content, include_usage=False)
        deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
        content = "".join(d.get("content") or "" for d in deltas)
        assert not any("tool_calls" in d for d in deltas)
        finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1]
    else:
        response = await client.post(CHAT, json=body)
        assert response.status_code == 200, response.text
        data = response.json()
        assert_valid("CreateChatCompletionResponse", data)
        message = data["choices"][0]["message"]
        assert "tool_calls" not in message
        content, finish = message["content"], data["choices"][0]["finish_reason"]
    assert finish == "stop"
    assert json.loads(content) == {"city": "Paris"}
    request = sent(upstream)["body"]
    assert [tool["name"] for tool in request["tools"]] == ["weather"]
    assert request["tool_choice"]["type"] == "tool" and request["tool_choice"]["name"] == "weather"
