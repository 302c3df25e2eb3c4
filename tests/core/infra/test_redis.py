"""The Redis circuit breaker against a real server that dies, hangs and returns."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from core.infra.redis import ResilientRedis
from core.observability.logging import configure_logging
from tests.support.servers import RedisServer


def get(key: str) -> Callable[[Redis], Awaitable[Any]]:
    """`GET key` as an operation for `ResilientRedis.run`. Typed here, not as a
    lambda at the call: mypy infers a lambda after the fallback, and a str
    fallback would make `GET`'s `bytes | str | None` a type error."""
    return lambda r: r.get(key)


def client(url: str | None, **overrides: float) -> ResilientRedis:
    options = {"socket_timeout": 0.3, "failure_threshold": 3, "retry_seconds": 0.5}
    options.update(overrides)
    return ResilientRedis(
        url,
        max_connections=8,
        socket_timeout=options["socket_timeout"],
        failure_threshold=int(options["failure_threshold"]),
        retry_seconds=options["retry_seconds"],
    )


def state_lines(err: str) -> list[str]:
    events = []
    for line in err.splitlines():
        if line.startswith("{"):
            event = json.loads(line).get("event", "")
            if event.startswith("redis_"):
                events.append(event)
    return events


async def test_absent_redis_is_a_noop() -> None:
    redis = client(None)
    assert redis.state == "absent"
    assert await redis.run(get("k"), "fallback") == "fallback"
    assert await redis.ping() == ("absent", None)


async def test_stopped_redis_opens_the_circuit_logs_once_and_recovers(
    redis_url: str, redis_server: RedisServer, capfd: pytest.CaptureFixture[str]
) -> None:
    configure_logging(json_logs=True, level="INFO")
    redis = client(redis_url)
    try:
        assert await redis.run(lambda r: r.set("k", "v"), None)
        assert redis.state == "ok"
        redis_server.stop()
        results = [await redis.run(get("k"), b"fallback") for _ in range(200)]
        assert set(results) == {b"fallback"}
        assert redis.state == "degraded"

        redis_server.start()
        deadline = time.monotonic() + 10
        while redis.state != "ok" and time.monotonic() < deadline:
            await redis.run(lambda r: r.ping(), False)
            await asyncio.sleep(0.1)
        assert redis.state == "ok"
        assert await redis.run(lambda r: r.ping(), False) is True
    finally:
        await redis.close()
    assert state_lines(capfd.readouterr().err) == ["redis_unavailable", "redis_recovered"]


async def test_frozen_redis_delays_only_the_calls_in_flight(
    redis_url: str, redis_server: RedisServer
) -> None:
    redis = client(redis_url, socket_timeout=0.2, retry_seconds=60)
    try:
        assert await redis.run(lambda r: r.ping(), False) is True
        redis_server.freeze()
        started = time.monotonic()
        # 64 concurrent callers hit the frozen server at once: all wait at most
        # one deadline, then the circuit is open and later calls return at once.
        results = await asyncio.gather(*(redis.run(get("k"), "fallback") for _ in range(64)))
        first_wave = time.monotonic() - started
        assert set(results) == {"fallback"}
        assert first_wave < 1.5
        assert redis.state == "degraded"
        started = time.monotonic()
        for _ in range(1000):
            await redis.run(get("k"), "fallback")
        assert time.monotonic() - started < 0.5
    finally:
        redis_server.thaw()
        await redis.close()


async def test_half_open_lets_one_probe_through(redis_url: str, redis_server: RedisServer) -> None:
    redis = client(redis_url, failure_threshold=1, retry_seconds=0.3)
    try:
        redis_server.stop()
        await redis.run(lambda r: r.ping(), False)
        assert redis.state == "degraded"
        await asyncio.sleep(0.35)
        calls = 0

        async def counted(r):  # type: ignore[no-untyped-def]
            nonlocal calls
            calls += 1
            return await r.ping()

        await asyncio.gather(*(redis.run(counted, False) for _ in range(20)))
        assert calls == 1  # only the probe touched the dead server
        assert redis.state == "degraded"
    finally:
        await redis.close()


async def test_concurrent_commands_share_one_round_trip_and_connection(redis_url: str) -> None:
    redis = client(redis_url)
    try:
        results = await asyncio.gather(
            *(redis.command("INCR", "batched", fallback=0) for _ in range(50))
        )
        assert sorted(results) == list(range(1, 51)), "each caller gets its own reply"
        assert redis.pool_size == 1, "fifty concurrent commands, one pipelined connection"
        assert await redis.command("GET", "batched", fallback=None) == b"50"
        wrong_type = await redis.command("HGET", "batched", "field", fallback="fallback")
        assert wrong_type == "fallback", "a command's error is that caller's fallback"
        assert redis.state == "ok", "and not a Redis failure"
    finally:
        await redis.close()


async def test_a_cancelled_first_caller_costs_the_others_nothing(redis_url: str) -> None:
    """The first caller of a batch goes away (before the batch is sent, or while it
    is in flight): the others still get their real replies, and every command of
    the batch ran exactly once (a rate limit counts each request once)."""
    redis = client(redis_url)
    try:
        for cancel_after in (1, 2):  # 1: before the batch is sent; 2: while in flight
            key = f"counted-{cancel_after}"
            first = asyncio.ensure_future(redis.command("INCR", key, fallback=-1))
            others = [
                asyncio.ensure_future(redis.command("INCR", key, fallback=-1)) for _ in range(3)
            ]
            for _ in range(cancel_after):
                await asyncio.sleep(0)
            first.cancel()
            done = await asyncio.wait_for(asyncio.gather(*others), 2)
            assert sorted(done) == [2, 3, 4], "replies, not fallbacks; the first's INCR ran"
            assert first.cancelled()
            assert await redis.command("GET", key, fallback=None) == b"4", "each ran once"
        assert await redis.command("SET", "k", "v", fallback=None), "the client still works"
    finally:
        await redis.close()


async def test_a_script_lost_by_redis_is_loaded_again(redis_url: str) -> None:
    redis = client(redis_url)
    try:
        assert redis.client is not None
        script = redis.client.register_script("return ARGV[1] .. KEYS[1]")
        assert await redis.script(script, ["k"], ["v"], None) == b"vk"
        await redis.run(lambda r: r.script_flush(), None)  # as after a Redis restart
        assert await redis.script(script, ["k"], ["again"], None) == b"againk"
    finally:
        await redis.close()


async def test_pipelined_commands_survive_a_freeze_and_a_restart(
    redis_url: str, redis_server: RedisServer
) -> None:
    """The request-path connection: a frozen server costs one deadline and then
    fallbacks; after it thaws, and after a restart, commands work again."""
    redis = client(redis_url, socket_timeout=0.2, failure_threshold=1, retry_seconds=0.3)
    try:
        assert await redis.command("SET", "k", "v", fallback=None)
        redis_server.freeze()
        started = time.monotonic()
        frozen = await asyncio.gather(
            *(redis.command("GET", "k", fallback="fallback") for _ in range(16))
        )
        assert frozen == ["fallback"] * 16
        assert time.monotonic() - started < 1.0
        redis_server.thaw()
        await asyncio.sleep(0.35)
        assert await redis.command("GET", "k", fallback="fallback") == b"v"

        redis_server.stop()
        redis_server.start()
        deadline = time.monotonic() + 5
        value = "fallback"
        while value == "fallback" and time.monotonic() < deadline:
            value = await redis.command("SET", "k2", "v2", fallback="fallback")
            await asyncio.sleep(0.1)
        assert value is True or value == b"OK"
        assert redis.state == "ok"
    finally:
        redis_server.thaw()
        await redis.close()


async def test_pipelined_commands_use_the_database_in_the_url(redis_url: str) -> None:
    other_db = redis_url.rsplit("/", 1)[0] + "/3"
    redis, check = client(other_db), client(other_db)
    try:
        assert await redis.command("SET", "in-db-3", "yes", fallback=None)
        assert await check.run(get("in-db-3"), None) == b"yes"
        default = client(redis_url)
        assert await default.run(get("in-db-3"), "none") is None
        await default.close()
    finally:
        await redis.close()
        await check.close()


async def test_pipelined_commands_authenticate_with_the_credentials_in_the_url(
    redis_url: str,
) -> None:
    admin = client(redis_url)
    user = f"skygate-{uuid.uuid4().hex[:8]}"
    host = redis_url.split("://", 1)[1].rsplit("/", 1)[0]
    try:
        assert admin.client is not None
        await admin.client.execute_command(  # type: ignore[no-untyped-call]
            "ACL", "SETUSER", user, "on", ">right-password", "~*", "+@all"
        )
        good = client(f"redis://{user}:right-password@{host}/4")
        bad = client(f"redis://{user}:wrong-password@{host}/4", failure_threshold=1)
        try:
            assert await good.command("SET", "authed", "yes", fallback=None)
            assert await good.command("GET", "authed", fallback=None) == b"yes"
            assert await bad.command("GET", "authed", fallback="fallback") == "fallback"
            assert bad.state == "degraded", "a refused login counts as Redis being unusable"
        finally:
            await good.close()
            await bad.close()
    finally:
        assert admin.client is not None
        await admin.client.execute_command("ACL", "DELUSER", user)  # type: ignore[no-untyped-call]
        await admin.close()
