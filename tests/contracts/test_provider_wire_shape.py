"""Every translated provider answers in OpenAI's wire shape: Anthropic (Messages) and Gemini
(generateContent) through litellm, Cohere (Chat v2 and Embed v2) natively, each against a fake
upstream speaking that provider's own format (`tests.support.providers`), beside the
direct path for parity. Answers, streams with and without usage, embeddings, and the
cache hit and stream replay of each answer (from Redis), validated with OpenAI's schemas.
Tool calls per provider: tests/providers/test_tool_round_trips.py (also validated).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from bench.fake_upstream import FakeUpstream
from tests.support.app import make_settings, running_app, settle
from tests.support.contracts import assert_valid, assert_valid_stream
from tests.support.providers import provider_router_yaml, set_keys
from tests.support.requests import CHAT, chat

GROUPS = ["anthropic", "gemini", "cohere", "openai"]
EMBEDDINGS = ["gemini-embed", "cohere-embed", "openai-embed"]


@pytest.fixture
async def gateway(
    upstream: FakeUpstream,
    sqlite_url: str,
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    set_keys(monkeypatch)
    router = tmp_path / "router.yaml"
    router.write_text(provider_router_yaml(upstream))
    settings = make_settings(
        router_config=str(router),
        database_url=sqlite_url,
        redis_url=redis_url,
        usage_flush_seconds=0.1,
    )
    async with running_app(settings) as running:
        yield running


def text_of(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


async def post(client: httpx.AsyncClient, body: dict[str, Any], cache: str) -> httpx.Response:
    response = await client.post(CHAT, json=body)
    assert response.status_code == 200, response.text
    assert response.headers["x-cache"] == cache
    return response


@pytest.mark.parametrize("group", GROUPS)
async def test_answers_and_their_cache_hits_have_openais_shape(
    gateway: tuple[FastAPI, httpx.AsyncClient], group: str
) -> None:
    app, client = gateway
    body = chat(f"hello {group}", model=group, max_tokens=50)
    live = (await post(client, body, "miss")).json()
    assert_valid("CreateChatCompletionResponse", live)
    assert live["choices"][0]["message"]["content"] == f"echo: hello {group}"
    await settle(app)
    hit = (await post(client, body, "hit")).json()
    assert hit == live
    for include_usage in (False, True):
        options = {"stream_options": {"include_usage": True}} if include_usage else {}
        replay = await post(client, {**body, "stream": True, **options}, "hit")
        chunks = assert_valid_stream(replay.content, include_usage=include_usage)
        assert text_of(chunks) == f"echo: hello {group}"


@pytest.mark.parametrize("group", GROUPS)
async def test_streams_and_their_replays_have_openais_shape(
    gateway: tuple[FastAPI, httpx.AsyncClient], group: str
) -> None:
    app, client = gateway
    for include_usage in (False, True):
        text = f"stream {group} with usage {include_usage}"
        options = {"stream_options": {"include_usage": True}} if include_usage else {}
        body = chat(text, model=group, max_tokens=50)
        live = await post(client, {**body, "stream": True, **options}, "miss")
        chunks = assert_valid_stream(live.content, include_usage=include_usage)
        assert text_of(chunks) == f"echo: {text}"
        if include_usage:
            assert chunks[-1]["usage"]["completion_tokens"] > 0
            await settle(app)  # stored as the completion it assembles to
            stored = (await post(client, body, "hit")).json()
            assert_valid("CreateChatCompletionResponse", stored)
            replay = await post(client, {**body, "stream": True, **options}, "hit")
            assert_valid_stream(replay.content, include_usage=True)


@pytest.mark.parametrize("group", EMBEDDINGS)
async def test_embeddings_have_openais_shape(
    gateway: tuple[FastAPI, httpx.AsyncClient], group: str
) -> None:
    app, client = gateway
    body = {"model": group, "input": ["one", "two"], "encoding_format": "float"}
    live = await client.post("/api/v1/embeddings", json=body)
    assert live.status_code == 200, live.text
    assert_valid("CreateEmbeddingResponse", live.json())
    assert [item["index"] for item in live.json()["data"]] == [0, 1]
    await settle(app)
    hit = await client.post("/api/v1/embeddings", json=body)
    assert hit.headers["x-cache"] == "hit"
    assert_valid("CreateEmbeddingResponse", hit.json())
