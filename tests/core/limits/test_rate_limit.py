"""Rate limits that hold across workers and instances (real gunicorn, real
Redis), degrade to a local share when Redis dies or hangs, ignore spoofed
X-Forwarded-For, and revocation that reaches every worker within 5 s."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.fake_upstream import FakeUpstream
from tests.support.app import settle
from tests.support.auth import ADMIN, SECRET, bearer, create_key
from tests.support.gateway import GatewayProcess
from tests.support.llm import LLMApp, router_yaml
from tests.support.requests import CHAT, chat
from tests.support.servers import RedisServer

# -- in-process: headers, tokens, Redis failure ------------------------------------


async def test_limit_headers_and_the_429(llm_app: LLMApp) -> None:
    async with llm_app(admin_api_key=ADMIN, jwt_secret_key=SECRET) as (_, client):
        key = (await create_key(client, rpm_limit=3))["key"]
        ok = await client.post(CHAT, json=chat("one"), headers=bearer(key))
        assert ok.status_code == 200
        assert ok.headers["x-ratelimit-limit"] == "3"
        assert ok.headers["x-ratelimit-remaining"] == "2"
        assert int(ok.headers["x-ratelimit-reset"]) > time.time()
        assert ok.headers["x-ratelimit-limit-requests"] == "3"
        assert ok.headers["x-ratelimit-remaining-requests"] == "2"
        for i in range(2):
            await client.post(CHAT, json=chat(f"n{i}"), headers=bearer(key))
        limited = await client.post(CHAT, json=chat("four"), headers=bearer(key))
        assert limited.status_code == 429
        assert limited.json()["error"]["type"] == "rate_limit_error"
        assert 1 <= int(limited.headers["retry-after"]) <= 120  # sliding: up to two windows
        assert limited.headers["x-ratelimit-remaining"] == "0"
        models = await client.get("/api/v1/models", headers=bearer(key))
        assert models.status_code == 429  # one principal, one limit, every route


async def test_refused_requests_count_and_over_the_limit_the_429_wins(llm_app: LLMApp) -> None:
    """The LLM routes check the limit together with the cache lookup, late in the
    pipeline; a request refused before that (bad body, unknown model, cache hit
    or not) still counts, and once over the limit every answer is the 429."""
    async with llm_app(admin_api_key=ADMIN, jwt_secret_key=SECRET) as (_, client):
        key = (await create_key(client, rpm_limit=3))["key"]
        bad_body = await client.post(CHAT, content=b"{not json", headers=bearer(key))
        assert bad_body.status_code == 400
        unknown = await client.post(CHAT, json={**chat("x"), "model": "nope"}, headers=bearer(key))
        assert unknown.status_code == 404
        third = await client.post(CHAT, json=chat("one"), headers=bearer(key))
        assert third.status_code == 200
        assert third.headers["x-ratelimit-remaining"] == "0", "both refusals were counted"
        for refused in (
            await client.post(CHAT, json=chat("one"), headers=bearer(key)),  # a cache hit
            await client.post(CHAT, content=b"{not json", headers=bearer(key)),
            await client.post("/api/v1/embeddings", json={"model": "nope"}, headers=bearer(key)),
        ):
            assert refused.status_code == 429, refused.text
            assert refused.json()["error"]["code"] == "rate_limit_exceeded"


async def test_tokens_per_minute_from_max_tokens_then_real_usage(
    llm_app: LLMApp, upstream: FakeUpstream
) -> None:
    async with llm_app(admin_api_key=ADMIN, jwt_secret_key=SECRET) as (app, client):
        key = (await create_key(client, tpm_limit=300))["key"]
        first = await client.post(
            CHAT, json={**chat("tokens"), "max_tokens": 200}, headers=bearer(key)
        )
        assert first.status_code == 200
        assert first.headers["x-ratelimit-limit-tokens"] == "300"
        assert int(first.headers["x-ratelimit-remaining-tokens"]) < 100
        await settle(app)  # the estimate is corrected by the real (small) usage
        second = await client.post(
            CHAT, json={**chat("tokens 2"), "max_tokens": 200}, headers=bearer(key)
        )
        assert second.status_code == 200
        await settle(app)
        too_big = await client.post(
            CHAT, json={**chat("too many"), "max_tokens": 290}, headers=bearer(key)
        )
        assert too_big.status_code == 429
        assert "tokens" in too_big.json()["error"]["message"]
        assert upstream.calls("primary-1") == 2


async def test_a_cache_hit_from_redis_gives_its_tokens_back(
    llm_app: LLMApp, upstream: FakeUpstream, redis_url: str
) -> None:
    """With the answer in Redis (not in this worker's near-cache) the token check
    goes out with the lookup, and a hit returns the tokens it was counted."""
    async with llm_app(redis_url=redis_url, admin_api_key=ADMIN, jwt_secret_key=SECRET) as (
        app,
        client,
    ):
        key = (await create_key(client, tpm_limit=1000))["key"]
        body = {**chat("cached tokens"), "max_tokens": 200}
        assert (await client.post(CHAT, json=body, headers=bearer(key))).status_code == 200
        await settle(app)  # stored in Redis, the estimate settled to the real usage
        for _ in range(10):  # each a Redis hit (as on another worker): 10 x 200 tokens asked
            app.state.services.cache.local.entries.clear()
            hit = await client.post(CHAT, json=body, headers=bearer(key))
            assert hit.status_code == 200 and hit.headers["x-cache"] == "hit"
        await settle(app)
        fresh = await client.post(
            CHAT, json={**chat("after the hits"), "max_tokens": 200}, headers=bearer(key)
        )
        assert fresh.status_code == 200, "the hits' tokens were given back"
        assert int(fresh.headers["x-ratelimit-remaining-tokens"]) > 500
        assert upstream.calls("primary-1") == 2


@pytest.mark.parametrize("failure", ["stop", "freeze"])
async def test_redis_down_enforces_the_local_share(
    llm_app: LLMApp, redis_url: str, redis_server: RedisServer, failure: str
) -> None:
    # one process standing for one of two instances: its share is half of each limit
    async with llm_app(
        redis_url=redis_url,
        rate_limit_per_minute=20,
        instance_count=2,
        redis_socket_timeout=0.2,
        redis_retry_seconds=30,
        metrics_token="metrics-token-for-limit-tests",  # /health's details need it
    ) as (_, client):
        assert (await client.get("/api/v1/models")).status_code == 200
        redis_server.stop() if failure == "stop" else redis_server.freeze()
        try:
            statuses = [(await client.get("/api/v1/models")).status_code for _ in range(15)]
            assert 500 not in statuses
            assert statuses.count(200) == 10 and statuses.count(429) == 5  # 20 / 2 instances
            started = time.monotonic()
            assert (await client.get("/live")).status_code == 200
            assert time.monotonic() - started < 0.1
            operator = bearer("metrics-token-for-limit-tests")
            health = (await client.get("/health", headers=operator)).json()
            health = health["services"]["rate_limiter"]
            assert health == {
                "status": "degraded",
                "latency_ms": None,
                "backend": "local",
                "local_share": 2,
            }
        finally:
            redis_server.thaw() if failure == "freeze" else redis_server.start()


# -- real gunicorn -----------------------------------------------------------------


@pytest.fixture
def fleet(
    tmp_path: Path, postgres_url: str, redis_url: str
) -> Iterator[tuple[list[GatewayProcess], FakeUpstream]]:
    """Two gateway instances (2 workers each) sharing PostgreSQL and Redis."""
    from bench.fake_upstream import run_in_thread
    from database.schema import upgrade_head

    upgrade_head(postgres_url)
    upstream, stop_upstream = run_in_thread()
    config = tmp_path / "router.yaml"
    config.write_text(router_yaml(upstream))
    env = {
        "DATABASE_URL": postgres_url,
        "REDIS_URL": redis_url,
        "ROUTER_CONFIG": str(config),
        "FAKE_ANTHROPIC_KEY": "k",
        "ADMIN_API_KEY": ADMIN,
        "JWT_SECRET_KEY": SECRET,
        "RATE_LIMIT_PER_MINUTE": "60",
        "RATE_LIMIT_PER_HOUR": "100000",
        "WEB_CONCURRENCY": "2",
        "AUTH_CACHE_SECONDS": "2",
        # A revoked key's 401s count as failed authentications from 127.0.0.1; the
        # throttle (tests/security/test_auth_throttle.py) is not what these tests are about.
        "AUTH_FAILURES_PER_MINUTE": "100000",
    }
    gateways = [
        GatewayProcess(
            {**env, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / f"p{i}")},
            tmp_path / f"gateway-{i}.log",
        )
        for i in range(2)
    ]
    try:
        for gateway in gateways:
            gateway.start()
        yield gateways, upstream
    finally:
        for gateway in gateways:
            gateway.stop()
        stop_upstream()


def new_key(gateway: GatewayProcess, **fields: object) -> dict[str, str]:
    response = httpx.post(
        f"{gateway.base_url}/api/v1/keys",
        headers=bearer(ADMIN),
        timeout=10,
        json={"name": "fleet", "tenant": f"t-{uuid.uuid4().hex[:6]}", **fields},
    )
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def get_models(gateway: GatewayProcess, key: str) -> httpx.Response:
    # a new connection per request, so both workers of the instance serve
    return httpx.get(f"{gateway.base_url}/api/v1/models", headers=bearer(key), timeout=10)


@pytest.mark.slow
def test_one_limit_across_workers_and_instances(
    fleet: tuple[list[GatewayProcess], FakeUpstream],
) -> None:
    gateways, _ = fleet
    for instances in (gateways[:1], gateways):
        key = new_key(gateways[0])["key"]
        # The sliding-window counter weighs the previous minute in: requests that
        # straddle a minute boundary may see one more allowed. Start inside a minute.
        if time.time() % 60 > 40:
            time.sleep(60.5 - time.time() % 60)
        responses = [get_models(instances[i % len(instances)], key) for i in range(120)]
        statuses = [r.status_code for r in responses]
        assert statuses.count(200) == 60, statuses
        assert statuses.count(429) == 60
        assert all(r.headers.get("retry-after") for r in responses if r.status_code == 429)


@pytest.mark.slow
def test_revocation_reaches_every_worker_within_5s(
    fleet: tuple[list[GatewayProcess], FakeUpstream],
) -> None:
    gateways, _ = fleet
    created = new_key(gateways[0])
    key = created["key"]
    for _ in range(8):  # every worker of both instances has the key cached
        for gateway in gateways:
            assert get_models(gateway, key).status_code == 200
    response = httpx.delete(
        f"{gateways[0].base_url}/api/v1/keys/{created['id']}", headers=bearer(ADMIN), timeout=10
    )
    assert response.status_code == 200
    revoked_at = time.monotonic()
    while True:
        statuses = [get_models(g, key).status_code for g in gateways for _ in range(4)]
        if set(statuses) == {401}:
            break
        assert time.monotonic() - revoked_at < 5, statuses
        time.sleep(0.1)
    assert time.monotonic() - revoked_at < 5


@pytest.mark.slow
@pytest.mark.parametrize("trusted", [False, True])
def test_spoofed_forwarded_for_does_not_change_the_limit_key(
    tmp_path: Path, sqlite_url: str, trusted: bool
) -> None:
    gateway = GatewayProcess(
        {
            "DATABASE_URL": sqlite_url,
            "RATE_LIMIT_PER_MINUTE": "10",
            "WEB_CONCURRENCY": "1",
            "FORWARDED_ALLOW_IPS": "127.0.0.1" if trusted else "10.9.9.9",
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"),
        },
        tmp_path / "gateway.log",
    )
    try:
        gateway.start()
        statuses = [
            httpx.get(
                f"{gateway.base_url}/api/v1/models",
                timeout=10,
                headers={"X-Forwarded-For": f"203.0.113.{i}"},
            ).status_code
            for i in range(20)
        ]
    finally:
        gateway.stop()
    if trusted:  # a trusted proxy's header is believed: twenty different clients
        assert statuses.count(200) == 20
    else:  # an untrusted peer cannot mint new addresses
        assert statuses.count(200) == 10 and statuses.count(429) == 10


# -- the algorithm -------------------------------------------------------------------


async def test_lua_script_and_local_windows_agree(redis_url: str) -> None:
    """Drive the Redis script and the in-memory twin through the same sequence
    of timestamps-within-a-window and compare every decision."""
    from core.infra.redis import ResilientRedis
    from core.limits.rate_limit import HOUR, MINUTE, RateLimiter, sliding_window

    redis = ResilientRedis(
        redis_url, max_connections=4, socket_timeout=1, failure_threshold=3, retry_seconds=1
    )
    limiter = RateLimiter(redis, share=1)
    try:
        counts: dict[str, int] = {}
        for i in range(15):
            remote = await limiter.admit("agree", per_minute=10, per_hour=12)
            local = sliding_window(
                counts, time.time(), [("a:minute", 10, MINUTE, 1), ("a:hour", 12, HOUR, 1)]
            )
            assert remote.allowed == local[0], i
            assert remote.remaining == local[2], i
            if not remote.allowed:
                assert remote.exceeded == ("minute", "hour")[local[1] - 1]
                assert remote.retry_after >= 1
        assert limiter.backend == "redis"
    finally:
        await redis.close()


def test_sliding_window_weights_the_previous_window() -> None:
    from core.limits.rate_limit import sliding_window

    counts = {"k:0": 10}  # ten hits in the window [0, 60)
    limits = [("k", 10, 60, 1)]
    # at t=60 the whole previous window still overlaps: refused, wait ~ 6 s
    allowed, _, _, _, wait = sliding_window(counts, 60.0, limits)
    assert not allowed and 5.9 <= wait <= 6.1
    # at t=66 one tenth of it has slid out: exactly one more is allowed
    assert sliding_window(counts, 66.01, limits)[0] is True
    assert sliding_window(counts, 66.02, limits)[0] is False
    # a cost of 3 needs three hits' worth of room
    assert sliding_window({"t:0": 5}, 30.0, [("t", 10, 60, 3)])[0] is True
    assert sliding_window({"t:0": 8}, 30.0, [("t", 10, 60, 3)])[0] is False
