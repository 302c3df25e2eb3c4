"""Finding 12 (credentials): failed authentication is throttled per client
address, and a flood of keys costs neither database reads nor log lines.

On 041514a, 40 random `sk-sg-...` keys cost 40 database lookups and 40 log
lines, and nothing ever slowed the caller down. Lookups are observed on the
real engine (an SQLAlchemy `before_cursor_execute` listener) and, under
gunicorn, through the exact `security_events_total` counters.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi import FastAPI
from prometheus_client import REGISTRY
from sqlalchemy import event

from tests.support.app import AppFactory
from tests.support.auth import ADMIN, bearer
from tests.support.gateway import GatewayProcess

MODELS = "/api/v1/models"
ATTACKER, BYSTANDER = "203.0.113.5", "198.51.100.7"


def random_key() -> str:
    return "sk-sg-" + secrets.token_urlsafe(32)


def events(kind: str) -> float:
    return REGISTRY.get_sample_value("security_events_total", {"type": kind}) or 0.0


class KeyReads:
    """Counts the SELECTs on api_keys that the app's real engine sends."""

    def __init__(self, app: FastAPI) -> None:
        self.count = 0
        event.listen(app.state.services.engine.sync_engine, "before_cursor_execute", self._seen)

    def _seen(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "api_keys" in statement:
            self.count += 1


def client_from(app: FastAPI, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://skygate.test")


async def test_random_keys_from_one_address_are_throttled_before_any_lookup(
    app_factory: AppFactory,
) -> None:
    async with app_factory(admin_api_key=ADMIN, auth_failures_per_minute=20) as (app, _):
        reads = KeyReads(app)
        throttled_before = events("auth_throttled")
        async with client_from(app, ATTACKER) as attacker, client_from(app, BYSTANDER) as other:
            responses = [
                await attacker.get(MODELS, headers=bearer(random_key())) for _ in range(25)
            ]
            assert [r.status_code for r in responses] == [401] * 20 + [429] * 5
            assert reads.count == 20, "the throttled requests were never looked up"
            for response in responses[20:]:
                assert int(response.headers["retry-after"]) >= 1
                error = response.json()["error"]
                assert error["code"] == "auth_throttled" and error["type"] == "rate_limit_error"
            assert events("auth_throttled") - throttled_before == 5

            # Another address is not affected, and a good credential there costs nothing extra.
            assert (await other.get(MODELS, headers=bearer(random_key()))).status_code == 401
            assert (await other.get(MODELS, headers=bearer(ADMIN))).status_code == 200
            assert reads.count == 21
            # The throttled address stays throttled, whatever it presents.
            assert (await attacker.get(MODELS, headers=bearer(ADMIN))).status_code == 429


async def test_rotating_through_an_ipv6_prefix_does_not_escape(app_factory: AppFactory) -> None:
    async with app_factory(admin_api_key=ADMIN, auth_failures_per_minute=5) as (app, _):
        statuses = []
        for host in range(1, 9):  # eight addresses of one subscriber's /64
            async with client_from(app, f"2001:db8:5:6::{host:x}") as client:
                statuses.append(
                    (await client.get(MODELS, headers=bearer(random_key()))).status_code
                )
        assert statuses == [401] * 5 + [429] * 3
        async with client_from(app, "2001:db8:5:7::1") as neighbour:  # the next /64
            assert (await neighbour.get(MODELS, headers=bearer(random_key()))).status_code == 401


async def test_an_unknown_key_is_remembered_past_the_auth_cache(
    app_factory: AppFactory,
) -> None:
    async with app_factory(admin_api_key=ADMIN, auth_cache_seconds=0.2) as (app, client):
        reads = KeyReads(app)
        key = random_key()
        for _ in range(4):
            assert (await client.get(MODELS, headers=bearer(key))).status_code == 401
            await asyncio.sleep(0.3)  # past AUTH_CACHE_SECONDS each time
        assert reads.count == 1
        # A key created now is found at once: nobody can have presented it before.
        created = await client.post(
            "/api/v1/keys", headers=bearer(ADMIN), json={"name": "new", "tenant": "team-a"}
        )
        fresh = created.json()["key"]
        assert (await client.get(MODELS, headers=bearer(fresh))).status_code == 200


async def test_a_flood_of_bad_keys_is_a_few_log_lines_and_an_exact_metric(
    app_factory: AppFactory, capfd: pytest.CaptureFixture[str]
) -> None:
    async with app_factory(admin_api_key=ADMIN, auth_failures_per_minute=1000) as (_, client):
        capfd.readouterr()
        before = events("key_unknown")
        for _ in range(60):
            assert (await client.get(MODELS, headers=bearer(random_key()))).status_code == 401
        assert events("key_unknown") - before == 60
    lines = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line[:1] == "{"]
    rejected = [line for line in lines if line["event"] == "auth_rejected"]
    assert 1 <= len(rejected) <= 10


# -- two gunicorn workers sharing Redis --------------------------------------------


def scrape(gateway: GatewayProcess, kind: str) -> float:
    text = httpx.get(f"{gateway.base_url}/metrics", timeout=5).text
    match = re.search(rf'^security_events_total\{{type="{kind}"\}} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def test_the_throttle_holds_across_workers(
    tmp_path: Path, migrated_postgres_url: str, redis_url: str
) -> None:
    limit = 10
    gateway = GatewayProcess(
        {
            "DATABASE_URL": migrated_postgres_url,
            "REDIS_URL": redis_url,
            "ADMIN_API_KEY": ADMIN,
            "WEB_CONCURRENCY": "2",
            "AUTH_FAILURES_PER_MINUTE": str(limit),
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"),
        },
        tmp_path / "gunicorn.log",
    )

    def attempt(address: str, credential: str) -> httpx.Response:
        # A new connection each time, so the requests spread over both workers.
        headers = {**bearer(credential), "X-Forwarded-For": address}
        return httpx.get(f"{gateway.base_url}{MODELS}", headers=headers, timeout=10)

    try:
        gateway.start()
        with ThreadPoolExecutor(4) as pool:
            statuses = [
                r.status_code
                for r in pool.map(lambda _: attempt(ATTACKER, random_key()), range(40))
            ]
        # Requests in flight at the limit still finish (3 more at most with 4 at a
        # time), and each other worker learns of the address from one failure.
        assert set(statuses) == {401, 429}
        assert limit <= statuses.count(401) <= limit + 3 + 1
        statuses += [attempt(ATTACKER, random_key()).status_code for _ in range(10)]
        assert statuses[-10:] == [429] * 10
        # Every 401 was one lookup, every 429 none: the exact counters say so.
        assert scrape(gateway, "key_unknown") == statuses.count(401)
        assert scrape(gateway, "auth_throttled") == statuses.count(429)
        # The count lives in Redis, shared by the workers.
        with redis.Redis.from_url(redis_url) as shared:
            keys = shared.keys(f"skygate:limits:fail:{ATTACKER}:*")
            assert sum(int(shared.get(key) or 0) for key in keys) == statuses.count(401)
        assert attempt(BYSTANDER, random_key()).status_code == 401
        assert attempt(BYSTANDER, ADMIN).status_code == 200
        assert attempt(ATTACKER, ADMIN).status_code == 429
    finally:
        gateway.stop()
