"""Cached answers keep OpenAI's wire shape: a hit returns the stored body, a streamed
request for it gets a replay, and a stream is stored as the completion it assembles
to; each validated with OpenAI's published schemas. Answers are stored by one
gateway instance and read by another, so every hit comes from a real Redis.

The three upstreams of `test_wire_shape.py` stand behind the gateway; the answers
of the one that bends OpenAI's format (`solo`) and of the Anthropic translation
(`claude`) are stored only after they were put in shape, so no hit or replay ever
brings the upstream's deviations back.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from bench.fake_upstream import FakeUpstream
from tests.support.app import settle
from tests.support.contracts import assert_valid, assert_valid_stream
from tests.support.llm import LLMApp
from tests.support.requests import CHAT, chat

GROUPS = ["primary", "solo", "claude", "claude-litellm"]
IDS = ["direct", "direct-sloppy", "anthropic", "anthropic-litellm"]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest.fixture(autouse=True)
def sloppy_solo(upstream: FakeUpstream) -> None:
    upstream.set_behaviour("solo-1", "sloppy")


async def post(
    client: httpx.AsyncClient, body: dict[str, Any], *, cache: str, **extra: Any
) -> httpx.Response:
    response = await client.post(CHAT, json={**body, **extra})
    assert response.status_code == 200, response.text
    assert response.headers["x-cache"] == cache
    return response


async def replays_in_shape(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    """The stored answer, streamed to a client that asks for usage and to one that does not."""
    for include_usage in (True, False):
        options = {"stream_options": {"include_usage": True}} if include_usage else {}
        replay = await post(client, body, cache="hit", stream=True, **options)
        chunks = assert_valid_stream(replay.content, include_usage=include_usage)
        assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1]


async def stored(app: FastAPI, client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    """The answer `app` stored, read back through a non-streaming hit on `client`."""
    await settle(app)  # the store happens off the request path
    hit = await post(client, body, cache="hit")
    data: dict[str, Any] = hit.json()
    assert_valid("CreateChatCompletionResponse", data)
    return data


@pytest.mark.parametrize("tools", [False, True], ids=["text", "tools"])
@pytest.mark.parametrize("group", GROUPS, ids=IDS)
async def test_cached_answer_and_its_replay_have_openais_shape(
    llm_app: LLMApp, redis_url: str, group: str, tools: bool
) -> None:
    text = "weather in Paris?" if tools else "cache this answer"
    body = chat(text, model=group, max_tokens=50, **({"tools": [WEATHER]} if tools else {}))
    async with (
        llm_app(redis_url=redis_url, litellm=True) as (app, client),
        llm_app(redis_url=redis_url, litellm=True) as (_, other),
    ):
        first = await post(client, body, cache="miss")
        data = await stored(app, other, body)
        assert data == first.json()
        await replays_in_shape(other, body)


@pytest.mark.parametrize("tools", [False, True], ids=["text", "tools"])
@pytest.mark.parametrize("group", GROUPS, ids=IDS)
async def test_stored_stream_and_its_replay_have_openais_shape(
    llm_app: LLMApp, redis_url: str, group: str, tools: bool
) -> None:
    """A stream is stored as the completion it assembles to, which answers a later
    non-streaming request as well as a streaming one."""
    text = "weather in Paris today?" if tools else "cache this stream"
    body = chat(text, model=group, max_tokens=50, **({"tools": [WEATHER]} if tools else {}))
    async with (
        llm_app(redis_url=redis_url, litellm=True) as (app, client),
        llm_app(redis_url=redis_url, litellm=True) as (_, other),
    ):
        live = await post(
            client, body, cache="miss", stream=True, stream_options={"include_usage": True}
        )
        chunks = assert_valid_stream(live.content, include_usage=True)
        data = await stored(app, other, body)
        message = data["choices"][0]["message"]
        if tools:
            (call,) = message["tool_calls"]
            assert orjson.loads(call["function"]["arguments"]) == {"city": "Paris"}
        else:
            assert message["content"] == f"echo: {text}"
        assert data["usage"] == chunks[-1]["usage"]
        await replays_in_shape(other, body)
