"""The chat pipeline against a fake provider over real HTTP: passthrough,
streaming, caching, fallbacks, retries, cooldowns and cut streams."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import REGISTRY

from bench.fake_upstream import FakeUpstream
from tests.support.app import settle
from tests.support.llm import LLMApp
from tests.support.requests import CHAT, chat


def events(response: httpx.Response) -> list[bytes]:
    return [line[6:] for line in response.content.split(b"\n") if line.startswith(b"data: ")]


def sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_non_streaming_answer_is_passed_through(
    llm_app: LLMApp, upstream: FakeUpstream
) -> None:
    async with llm_app() as (_, client):
        response = await client.post(CHAT, json=chat("pass me through"))
        assert response.status_code == 200
        body = response.json()
        assert body["object"] == "chat.completion"
        assert body["choices"][0]["message"]["content"] == "echo: pass me through"
        assert body["usage"]["prompt_tokens"] > 0
        assert response.headers["x-skygate-provider"] == "openai_compatible"
        assert response.headers["x-skygate-model"] == "primary-1"
        assert float(response.headers["x-skygate-overhead-ms"]) >= 0
        assert response.headers["x-cache"] == "miss"
        sent = upstream.last_request("primary-1")
        assert sent is not None and sent["body"]["model"] == "primary-1"


async def test_identical_requests_hit_the_cache(llm_app: LLMApp, upstream: FakeUpstream) -> None:
    async with llm_app() as (app, client):
        first = await client.post(CHAT, json=chat("cache me"))
        await settle(app)  # the store happens off the request path
        second = await client.post(CHAT, json=chat("cache me"))
        assert (first.headers["x-cache"], second.headers["x-cache"]) == ("miss", "hit")
        assert second.content == first.content
        assert upstream.calls("primary-1") == 1
        # the alias resolves to the same group, so it shares the entry
        third = await client.post(CHAT, json=chat("cache me", model="fast"))
        assert third.headers["x-cache"] == "hit"
        stats = (await client.get("/metrics/cache")).json()
        assert stats["total_hits"] >= 2 and 0 < stats["hit_rate"] <= 1
        assert stats["backend"] == "memory"


async def test_cache_control_headers(llm_app: LLMApp, upstream: FakeUpstream) -> None:
    async with llm_app() as (app, client):
        await client.post(CHAT, json=chat("directives"), headers={"Cache-Control": "no-store"})
        await settle(app)
        again = await client.post(CHAT, json=chat("directives"))
        assert again.headers["x-cache"] == "miss"  # the first answer was not stored
        await settle(app)
        bypass = await client.post(
            CHAT, json=chat("directives"), headers={"Cache-Control": "no-cache"}
        )
        assert bypass.headers["x-cache"] == "bypass"
        assert upstream.calls("primary-1") == 3
    async with llm_app(enable_cache=False) as (_, client):
        response = await client.post(CHAT, json=chat("directives"))
        assert response.headers["x-cache"] == "bypass"


async def test_stream_is_forwarded_and_ends_with_done(
    llm_app: LLMApp, upstream: FakeUpstream
) -> None:
    async with llm_app() as (_, client):
        response = await client.post(CHAT, json=chat("stream these words", stream=True))
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        assert "content-encoding" not in response.headers
        data = events(response)
        assert data[-1] == b"[DONE]"
        chunks = [orjson.loads(d) for d in data[:-1]]
        text = "".join(
            c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]
        )
        assert text == "echo: stream these words"
        assert all(not c.get("usage") for c in chunks), "usage chunk sent without being asked"
        sent = upstream.last_request("primary-1")
        assert sent is not None and sent["body"]["stream_options"] == {"include_usage": True}

        with_usage = await client.post(
            CHAT,
            json=chat("stream with usage", stream=True, stream_options={"include_usage": True}),
        )
        last = orjson.loads(events(with_usage)[-2])
        assert last["choices"] == [] and last["usage"]["completion_tokens"] > 0


async def test_completed_stream_is_cached_and_replayed(
    llm_app: LLMApp, upstream: FakeUpstream
) -> None:
    async with llm_app() as (app, client):
        await client.post(CHAT, json=chat("replay me", stream=True))
        await settle(app)
        replayed = await client.post(CHAT, json=chat("replay me", stream=True))
        assert replayed.headers["x-cache"] == "hit"
        data = events(replayed)
        assert data[-1] == b"[DONE]"
        text = "".join(
            orjson.loads(d)["choices"][0]["delta"].get("content") or "" for d in data[:-1]
        )
        assert text == "echo: replay me"
        as_json = await client.post(CHAT, json=chat("replay me"))
        assert as_json.headers["x-cache"] == "hit"
        assert as_json.json()["choices"][0]["message"]["content"] == "echo: replay me"
        assert upstream.calls("primary-1") == 1


async def test_cut_stream_ends_with_an_error_event_and_is_not_cached(
    llm_app: LLMApp, upstream: FakeUpstream
) -> None:
    upstream.set_behaviour("primary-1", "cut", after_chunks=2)
    async with llm_app() as (app, client):
        response = await client.post(CHAT, json=chat("cut me off", stream=True))
        data = events(response)
        assert b"[DONE]" not in data
        error = orjson.loads(data[-1])
        assert error["error"]["code"] == "stream_interrupted"
        await settle(app)
        upstream.set_behaviour("primary-1", "ok")
        again = await client.post(CHAT, json=chat("cut me off", stream=True))
        assert again.headers["x-cache"] == "miss"
        assert events(again)[-1] == b"[DONE]"


@pytest.mark.parametrize(
    "mode",
    [
        {"mode": "status", "status": 500},
        {"mode": "status", "status": 503},
        {"mode": "status", "status": 429, "retry_after": 30},
        {"mode": "slow", "delay_ms": 3000},
        {"mode": "garbage"},
    ],
    ids=["500", "503", "429-long-retry-after", "timeout", "garbage"],
)
async def test_failures_fall_back_to_the_next_group(
    llm_app: LLMApp, upstream: FakeUpstream, mode: dict[str, Any]
) -> None:
    upstream.set_behaviour("primary-1", **mode)
    async with llm_app(timeout=0.5) as (_, client):
        before = sample("llm_fallbacks_total", {"from_group": "primary", "to_group": "backup"})
        response = await client.post(CHAT, json=chat("fall back"))
        assert response.status_code == 200
        assert response.headers["x-skygate-model"] == "backup-1"
        assert upstream.calls("backup-1") == 1
        after = sample("llm_fallbacks_total", {"from_group": "primary", "to_group": "backup"})
        assert after == before + 1


async def test_stream_falls_back_before_the_first_byte(
    llm_app: LLMApp, upstream: FakeUpstream
) -> None:
    upstream.set_behaviour("primary-1", "status", status=500)
    async with llm_app() as (_, client):
        response = await client.post(CHAT, json=chat("stream fallback", stream=True))
        assert response.status_code == 200
        assert response.headers["x-skygate-model"] == "backup-1"
        assert events(response)[-1] == b"[DONE]"


async def test_retry_count_is_bounded(llm_app: LLMApp, upstream: FakeUpstream) -> None:
    upstream.set_behaviour("solo-1", "status", status=500)
    async with llm_app(attempts=2, cooldown_failures=10) as (_, client):
        response = await client.post(CHAT, json=chat("never works", model="solo"))
        assert response.status_code == 502
        assert response.json()["error"]["type"] == "upstream_error"
        assert upstream.calls("solo-1") == 3  # the first attempt and two retries


async def test_short_retry_after_is_honoured(llm_app: LLMApp, upstream: FakeUpstream) -> None:
    upstream.set_behaviour("solo-1", "fail_times", count=1, status=429, retry_after=1)
    async with llm_app(attempts=1, max_retry_after=2) as (_, client):
        started = time.monotonic()
        response = await client.post(CHAT, json=chat("wait for it", model="solo"))
        assert response.status_code == 200
        assert time.monotonic() - started >= 0.9
        assert upstream.calls("solo-1") == 2


async def test_exhausted_rate_limit_is_a_429_with_retry_after(
    llm_app: LLMApp, upstream: FakeUpstream
) -> None:
    upstream.set_behaviour("solo-1", "status", status=429, retry_after=30)
    async with llm_app() as (_, client):
        response = await client.post(CHAT, json=chat("limited", model="solo"))
        assert response.status_code == 429
        assert response.headers["retry-after"] == "30"
        assert response.json()["error"]["type"] == "rate_limit_error"


async def test_upstream_timeout_is_a_504(llm_app: LLMApp, upstream: FakeUpstream) -> None:
    upstream.set_behaviour("solo-1", "hang")
    async with llm_app(timeout=0.3, attempts=0) as (_, client):
        response = await client.post(CHAT, json=chat("hang", model="solo"))
        assert response.status_code == 504
        assert response.json()["error"]["type"] == "timeout_error"


async def test_upstream_bad_request_is_the_clients_error(
    llm_app: LLMApp, upstream: FakeUpstream
) -> None:
    upstream.set_behaviour(
        "primary-1",
        "status",
        status=400,
        message="This model's maximum context length is 8 tokens.",
    )
    async with llm_app() as (_, client):
        response = await client.post(CHAT, json=chat("too long"))
        assert response.status_code == 400
        assert "maximum context length" in response.json()["error"]["message"]
        assert upstream.calls("primary-1") == 1 and upstream.calls("backup-1") == 0


async def test_cooldown_opens_then_recovers(llm_app: LLMApp, upstream: FakeUpstream) -> None:
    upstream.set_behaviour("primary-1", "status", status=500)
    token = "metrics-token-for-completion-tests"  # /health's deployment details need it
    async with llm_app(
        attempts=0, cooldown_failures=2, cooldown_seconds=0.5, metrics_token=token
    ) as (_, client):
        for i in range(2):
            assert (await client.post(CHAT, json=chat(f"cool {i}"))).status_code == 200
        assert upstream.calls("primary-1") == 2
        operator = {"Authorization": f"Bearer {token}"}
        health = (await client.get("/health", headers=operator)).json()
        health = health["services"]["llm_providers"]
        assert health["status"] == "degraded" and len(health["cooling_down"]) == 1
        # open circuit: the primary is skipped without a call
        for i in range(3):
            response = await client.post(CHAT, json=chat(f"cooling {i}"))
            assert response.headers["x-skygate-model"] == "backup-1"
        assert upstream.calls("primary-1") == 2
        upstream.set_behaviour("primary-1", "ok")
        await asyncio.sleep(0.6)
        response = await client.post(CHAT, json=chat("warm again"))
        assert response.headers["x-skygate-model"] == "primary-1"
        assert upstream.calls("primary-1") == 3
        response = await client.post(CHAT, json=chat("warm again 2"))
        assert response.headers["x-skygate-model"] == "primary-1"


async def test_a_lone_deployment_is_never_cooled_out_of_service(
    llm_app: LLMApp, upstream: FakeUpstream
) -> None:
    """Its breaker is past the threshold, but nothing else could serve the group:
    the next request still reaches the upstream and gets its real failure, not a 503
    (more in tests/core/llm/test_cooldown.py)."""
    upstream.set_behaviour("solo-1", "status", status=500)
    async with llm_app(attempts=0, cooldown_failures=1, cooldown_seconds=30) as (_, client):
        assert (await client.post(CHAT, json=chat("x", model="solo"))).status_code == 502
        response = await client.post(CHAT, json=chat("y", model="solo"))
        assert response.status_code == 502
        assert upstream.calls("solo-1") == 2


async def test_content_filtered_answers_are_not_cached(
    llm_app: LLMApp, upstream: FakeUpstream
) -> None:
    upstream.set_behaviour("primary-1", "content_filter")
    async with llm_app() as (app, client):
        for _ in range(2):
            response = await client.post(CHAT, json=chat("filtered"))
            assert response.json()["choices"][0]["finish_reason"] == "content_filter"
            await settle(app)
        assert upstream.calls("primary-1") == 2


async def test_tool_calls_pass_through_and_stream(llm_app: LLMApp, upstream: FakeUpstream) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    async with llm_app() as (_, client):
        response = await client.post(CHAT, json=chat("weather in Paris?", tools=tools))
        call = response.json()["choices"][0]["message"]["tool_calls"][0]
        assert call["function"]["name"] == "get_weather"
        streamed = await client.post(CHAT, json=chat("weather now?", tools=tools, stream=True))
        arguments = "".join(
            orjson.loads(d)["choices"][0]["delta"]
            .get("tool_calls", [{}])[0]
            .get("function", {})
            .get("arguments", "")
            for d in events(streamed)[:-1]
            if orjson.loads(d)["choices"]
        )
        assert orjson.loads(arguments) == {"city": "Paris"}


async def test_embeddings_are_routed_and_cached(llm_app: LLMApp, upstream: FakeUpstream) -> None:
    async with llm_app() as (app, client):
        body = {"model": "embed", "input": ["one", "two"]}
        first = await client.post("/api/v1/embeddings", json=body)
        assert first.status_code == 200
        assert len(first.json()["data"]) == 2
        await settle(app)
        second = await client.post("/api/v1/embeddings", json=body)
        assert second.headers["x-cache"] == "hit"
        assert upstream.calls("embed-1") == 1


async def test_anthropic(llm_app: LLMApp, upstream: FakeUpstream) -> None:
    async with llm_app() as (_, client):
        response = await client.post(CHAT, json=chat("hi claude", model="claude", max_tokens=50))
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["choices"][0]["message"]["content"] == "echo: hi claude"
        assert body["usage"]["prompt_tokens"] > 0
        assert response.headers["x-skygate-provider"] == "anthropic"
        streamed = await client.post(
            CHAT, json=chat("stream claude", model="claude", max_tokens=50, stream=True)
        )
        data = events(streamed)
        assert data[-1] == b"[DONE]"
        text = "".join(
            orjson.loads(d)["choices"][0]["delta"].get("content") or ""
            for d in data[:-1]
            if orjson.loads(d)["choices"]
        )
        assert text == "echo: stream claude"
        sent = upstream.last_request("claude-haiku-4-5")
        assert sent is not None and sent["path"].endswith("/v1/messages")
