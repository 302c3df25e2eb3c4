"""The response cache: what the key covers, tenant isolation, the local
fallback, and a Redis that dies or freezes under concurrent load."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bench.fake_upstream import FakeUpstream
from core.gateway.cache import CacheDirectives, LocalLRU, cache_key
from tests.support.app import settle
from tests.support.auth import ADMIN, SECRET, bearer, create_key
from tests.support.llm import LLMApp
from tests.support.requests import CHAT, chat
from tests.support.servers import RedisServer

BASE: dict[str, Any] = {
    "model": "primary",
    "messages": [{"role": "user", "content": "hi"}],
}
OUTPUT_PARAMS = {
    "messages": [{"role": "user", "content": "bye"}],
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
    "tool_choice": "none",
    "response_format": {"type": "json_object"},
    "temperature": 0.3,
    "top_p": 0.5,
    "max_tokens": 7,
    "max_completion_tokens": 9,
    "stop": ["\n"],
    "seed": 42,
    "n": 2,
    "logit_bias": {"50256": -100},
    "presence_penalty": 0.5,
    "frequency_penalty": 0.5,
    "logprobs": True,
    "parallel_tool_calls": False,
    "reasoning_effort": "low",
}


def key(body: dict[str, Any], tenant: str = "t1", group: str = "primary") -> str:
    return cache_key(tenant=tenant, endpoint="chat", group=group, body=body)


@pytest.mark.parametrize("param", sorted(OUTPUT_PARAMS))
def test_every_output_affecting_parameter_changes_the_key(param: str) -> None:
    assert key({**BASE, param: OUTPUT_PARAMS[param]}) != key(BASE)


@pytest.mark.parametrize("param", ["stream", "stream_options", "user", "metadata", "model"])
def test_transport_only_parameters_do_not(param: str) -> None:
    value: Any = {
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": "u-1",
        "metadata": {"a": "b"},
        "model": "fast",
    }[param]
    assert key({**BASE, param: value}) == key(BASE)


def test_tenants_group_and_endpoint_are_in_the_key() -> None:
    assert key(BASE, tenant="a") != key(BASE, tenant="b")
    assert key(BASE, group="primary") != key(BASE, group="backup")
    assert cache_key(tenant="t", endpoint="chat", group="g", body=BASE) != cache_key(
        tenant="t", endpoint="embeddings", group="g", body=BASE
    )


def test_key_is_canonical_and_versioned() -> None:
    reordered = {"messages": BASE["messages"], "model": "primary", "temperature": 0.1}
    assert key(reordered) == key({**BASE, "temperature": 0.1})
    assert key(BASE).startswith("skygate:cache:v3:") and len(key(BASE)) == 17 + 64


def test_cache_directives_from_headers() -> None:
    assert CacheDirectives.from_headers(None, None) == CacheDirectives(True, True, None)
    assert CacheDirectives.from_headers("no-cache", None).lookup is False
    assert CacheDirectives.from_headers("No-Store, max-age=0", None).store is False
    assert CacheDirectives.from_headers(None, "60").ttl == 60
    assert CacheDirectives.from_headers(None, "-5").ttl is None
    assert CacheDirectives.from_headers(None, "99999999").ttl == 7 * 24 * 3600


def test_local_lru_is_bounded_and_expires() -> None:
    lru = LocalLRU(max_entries=2, max_bytes=100)
    lru.set("a", b"1", 60)
    lru.set("b", b"2", 60)
    lru.get("a")
    lru.set("c", b"3", 60)
    assert lru.get("b") is None and lru.get("a") == b"1"
    lru.set("big", b"x" * 99, 60)
    assert lru.bytes <= 100
    lru.set("gone", b"v", 0)
    assert lru.get("gone") is None


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_one_tenants_cached_answer_is_never_served_to_another(
    llm_app: LLMApp, upstream: FakeUpstream, request: pytest.FixtureRequest, backend: str
) -> None:
    """Tenant A's answer is cached; tenant B sends the very same body: B's call
    goes to the provider and B gets its own answer, while A's next call is a hit
    on A's. Then each tenant hits only its own entry."""
    redis: dict[str, str] = {}
    if backend == "redis":
        redis["redis_url"] = request.getfixturevalue("redis_url")
    async with llm_app(admin_api_key=ADMIN, jwt_secret_key=SECRET, **redis) as (app, client):
        as_a = bearer((await create_key(client, tenant="tenant-a"))["key"])
        as_b = bearer((await create_key(client, tenant="tenant-b"))["key"])
        body = chat("tenant secret")
        first_a = await client.post(CHAT, json=body, headers=as_a)
        assert first_a.status_code == 200 and first_a.headers["x-cache"] == "miss"
        await settle(app)  # A's answer is in the cache
        first_b = await client.post(CHAT, json=body, headers=as_b)
        assert first_b.status_code == 200 and first_b.headers["x-cache"] == "miss"
        assert upstream.calls("primary-1") == 2, "B's call reached the provider"
        assert first_b.json()["id"] != first_a.json()["id"]
        await settle(app)
        for headers, own in ((as_a, first_a), (as_b, first_b)):
            again = await client.post(CHAT, json=body, headers=headers)
            assert again.headers["x-cache"] == "hit"
            assert again.json()["id"] == own.json()["id"], "a tenant hits its own entry"
        assert upstream.calls("primary-1") == 2


async def test_redis_backed_cache_is_shared_between_apps(
    llm_app: LLMApp, upstream: FakeUpstream, redis_url: str
) -> None:
    body = {**BASE, "messages": [{"role": "user", "content": "shared through redis"}]}
    async with llm_app(redis_url=redis_url) as (app, first):
        assert (await first.post("/api/v1/chat/completions", json=body)).headers[
            "x-cache"
        ] == "miss"
        await settle(app)  # stored in Redis
    async with llm_app(redis_url=redis_url) as (_, second):  # another worker or instance
        response = await second.post("/api/v1/chat/completions", json=body)
        assert response.headers["x-cache"] == "hit"
        assert (await second.get("/metrics/cache")).json()["backend"] == "redis"
    assert upstream.calls("primary-1") == 1


@pytest.mark.parametrize("failure", ["stop", "freeze"])
async def test_redis_failing_under_load_never_causes_a_5xx(
    llm_app: LLMApp,
    upstream: FakeUpstream,
    redis_url: str,
    redis_server: RedisServer,
    failure: str,
) -> None:
    async with llm_app(redis_url=redis_url, redis_socket_timeout=0.2, redis_retry_seconds=0.5) as (
        _,
        client,
    ):

        async def burst(tag: str, count: int = 40) -> list[int]:
            responses = await asyncio.gather(
                *(
                    client.post(
                        "/api/v1/chat/completions",
                        json={**BASE, "messages": [{"role": "user", "content": f"{tag} {i % 10}"}]},
                    )
                    for i in range(count)
                )
            )
            return [r.status_code for r in responses]

        assert set(await burst("warm")) == {200}
        try:
            if failure == "stop":
                redis_server.stop()
            else:
                redis_server.freeze()
            statuses = await burst("during") + await burst("during-2")
            assert set(statuses) == {200}
            health = (await client.get("/health")).json()
            assert health["services"]["cache"]["status"] == "degraded"
            assert (await client.get("/ready")).status_code == 200
        finally:
            redis_server.thaw() if failure == "freeze" else redis_server.start()
        await asyncio.sleep(0.6)
        statuses = await burst("after")
        assert set(statuses) == {200}
        for _ in range(30):
            if (await client.get("/metrics/cache")).json()["backend"] == "redis":
                break
            await client.post("/api/v1/chat/completions", json=BASE)
            await asyncio.sleep(0.1)
        assert (await client.get("/metrics/cache")).json()["backend"] == "redis"


@pytest.mark.parametrize("policy", ["noeviction", "allkeys-lru"])
async def test_redis_out_of_memory_or_evicting_is_only_a_cache_miss(
    llm_app: LLMApp,
    upstream: FakeUpstream,
    redis_url: str,
    redis_server: RedisServer,
    policy: str,
) -> None:
    import redis as redis_sync

    control = redis_sync.Redis.from_url(redis_url)
    control.set("ballast", b"x" * 2_000_000)  # over the limit from the start
    control.config_set("maxmemory-policy", policy)
    control.config_set("maxmemory", "1mb")
    try:
        async with llm_app(redis_url=redis_url) as (_, client):
            statuses = []
            for i in range(30):
                response = await client.post(
                    "/api/v1/chat/completions",
                    json={**BASE, "messages": [{"role": "user", "content": f"oom {i % 3} " * 50}]},
                )
                statuses.append(response.status_code)
            assert set(statuses) == {200}
    finally:
        control.config_set("maxmemory", "0")
        control.config_set("maxmemory-policy", "noeviction")
        control.close()
