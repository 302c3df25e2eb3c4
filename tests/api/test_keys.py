"""API keys, tokens and what a key may do: admin endpoints, the secret shown
once, model allow-lists, budgets, revocation, JWT exchange and JWT attacks,
hostile credentials and tenant isolation."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest

from bench.fake_upstream import FakeUpstream
from tests.support.app import settle
from tests.support.auth import ADMIN, SECRET, admin_claims, bearer, create_key
from tests.support.llm import LLMApp, priced_router
from tests.support.requests import CHAT, chat

AUTH = {"admin_api_key": ADMIN, "jwt_secret_key": SECRET, "auth_cache_seconds": 0.5}


async def test_key_lifecycle_through_the_admin_api(llm_app: LLMApp) -> None:
    async with llm_app(**AUTH) as (_, client):
        created = await create_key(
            client, allowed_models=["primary"], rpm_limit=100, monthly_budget_usd=5
        )
        secret = created["key"]
        assert secret.startswith("sk-sg-") and created["prefix"] == secret[:12]
        assert created["state"] == "active" and created["tenant"] == "team-a"

        listed = (await client.get("/api/v1/keys", headers=bearer(ADMIN))).json()["data"]
        assert [k["id"] for k in listed] == [created["id"]]
        assert all("key" not in k for k in listed)  # the secret is shown once
        one = await client.get(f"/api/v1/keys/{created['id']}", headers=bearer(ADMIN))
        assert one.json()["prefix"] == created["prefix"] and "key" not in one.json()

        assert (await client.post(CHAT, json=chat(), headers=bearer(secret))).status_code == 200
        patched = await client.patch(
            f"/api/v1/keys/{created['id']}",
            headers=bearer(ADMIN),
            json={"name": "renamed", "rpm_limit": 5},
        )
        assert patched.json()["name"] == "renamed" and patched.json()["rpm_limit"] == 5

        revoked = await client.delete(f"/api/v1/keys/{created['id']}", headers=bearer(ADMIN))
        assert revoked.json()["state"] == "revoked"
        response = await client.post(CHAT, json=chat("after revoke"), headers=bearer(secret))
        assert response.status_code == 401
        assert "revoked" in response.json()["error"]["message"]
        missing = await client.get("/api/v1/keys/nope", headers=bearer(ADMIN))
        assert missing.status_code == 404


async def test_only_admins_manage_keys(llm_app: LLMApp) -> None:
    async with llm_app(**AUTH) as (_, client):
        created = await create_key(client)
        assert (await client.get("/api/v1/keys")).status_code == 401
        forbidden = await client.get("/api/v1/keys", headers=bearer(created["key"]))
        assert forbidden.status_code == 403
        assert forbidden.json()["error"]["type"] == "permission_error"
        bad = await client.post(
            "/api/v1/keys", headers=bearer(ADMIN), json={"name": "x", "tenant": "t", "rpm_limit": 0}
        )
        assert bad.status_code == 422


async def test_key_limited_to_some_models_gets_403_for_others(
    llm_app: LLMApp, upstream: FakeUpstream
) -> None:
    async with llm_app(**AUTH) as (_, client):
        key = (await create_key(client, allowed_models=["backup"]))["key"]
        denied = await client.post(CHAT, json=chat(), headers=bearer(key))
        assert denied.status_code == 403
        assert denied.json()["error"]["code"] == "model_not_allowed"
        assert upstream.calls("primary-1") == 0
        allowed = await client.post(CHAT, json=chat(model="backup"), headers=bearer(key))
        assert allowed.status_code == 200


async def test_budget_exhausted_is_a_429_until_raised(
    llm_app: LLMApp, upstream: FakeUpstream, tmp_path: Path
) -> None:
    """Real answers spend the budget: a priced model, whose answers (from the fake)
    carry usage, and a budget of $0.0001 that one answer to a long prompt (~1000
    tokens each way, ~$0.0008) uses up."""
    router = priced_router(upstream, tmp_path / "priced.yaml")
    async with llm_app(router_config=router, **AUTH) as (app, client):
        created = await create_key(client, monthly_budget_usd=0.0001)
        key = created["key"]
        long = chat("word " * 1000, model="metered")
        assert (await client.post(CHAT, json=long, headers=bearer(key))).status_code == 200
        await settle(app)  # the answer's cost is added to the key's spend
        spent = (await client.get("/api/v1/usage", headers=bearer(key))).json()
        assert spent["totals"]["cost_usd"] >= 0.0001
        over = await client.post(CHAT, json=chat("b", model="metered"), headers=bearer(key))
        assert over.status_code == 429
        assert over.json()["error"]["code"] == "budget_exceeded"
        assert "budget" in over.json()["error"]["message"]
        await client.patch(
            f"/api/v1/keys/{created['id']}", headers=bearer(ADMIN), json={"monthly_budget_usd": 10}
        )
        ok = await client.post(CHAT, json=chat("c", model="metered"), headers=bearer(key))
        assert ok.status_code == 200


async def test_expired_and_disabled_keys_are_refused(llm_app: LLMApp) -> None:
    async with llm_app(**AUTH) as (_, client):
        expired = await create_key(client, expires_at="2020-01-01T00:00:00Z")
        response = await client.post(CHAT, json=chat(), headers=bearer(expired["key"]))
        assert response.status_code == 401 and "expired" in response.json()["error"]["message"]
        disabled = await create_key(client)
        await client.patch(
            f"/api/v1/keys/{disabled['id']}", headers=bearer(ADMIN), json={"state": "disabled"}
        )
        response = await client.post(CHAT, json=chat(), headers=bearer(disabled["key"]))
        assert response.status_code == 401


async def test_x_api_key_header_works(llm_app: LLMApp) -> None:
    async with llm_app(**AUTH) as (_, client):
        key = (await create_key(client))["key"]
        response = await client.post(CHAT, json=chat(), headers={"X-API-Key": key})
        assert response.status_code == 200


HOSTILE = [
    "' OR '1'='1",
    "sk-sg-' OR '1'='1' --",
    "x'); SELECT pg_sleep(10); --",
    "sk-sg-" + "A" * 37 + "'; SELECT pg_sleep(5)--",
    "k" * 8192,
    "sk-sg-\u00e9\u00e8\u00ea\u00eb\u4e2d\u6587",
    "",
    "Bearer",
]


@pytest.mark.parametrize("value", HOSTILE, ids=range(len(HOSTILE)))
async def test_hostile_key_values_are_a_quick_401(llm_app: LLMApp, value: str) -> None:
    async with llm_app(**AUTH) as (_, client):
        started = time.monotonic()
        response = await client.post(
            CHAT, json=chat(), headers={b"Authorization": f"Bearer {value}".encode()}
        )
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "authentication_error"
        assert time.monotonic() - started < 1.0


async def test_nul_bytes_in_x_api_key_are_a_401(llm_app: LLMApp) -> None:
    async with llm_app(**AUTH) as (_, client):
        response = await client.post(CHAT, json=chat(), headers={b"X-API-Key": b"sk-sg-\x00abc"})
        assert response.status_code == 401


async def test_token_exchange_and_revocation(llm_app: LLMApp) -> None:
    async with llm_app(**AUTH) as (_, client):
        created = await create_key(client)
        issued = await client.post("/api/v1/auth/token", headers=bearer(created["key"]))
        assert issued.status_code == 200
        token = issued.json()["access_token"]
        assert issued.json()["token_type"] == "bearer" and issued.json()["expires_in"] == 900
        assert (await client.post(CHAT, json=chat(), headers=bearer(token))).status_code == 200
        assert (await client.get("/api/v1/keys", headers=bearer(token))).status_code == 403
        await client.delete(f"/api/v1/keys/{created['id']}", headers=bearer(ADMIN))
        await asyncio.sleep(0.6)
        response = await client.post(CHAT, json=chat("later"), headers=bearer(token))
        assert response.status_code == 401
        admin_token = (await client.post("/api/v1/auth/token", headers=bearer(ADMIN))).json()[
            "access_token"
        ]
        assert (await client.get("/api/v1/keys", headers=bearer(admin_token))).status_code == 200


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _forge(name: str) -> str:
    if name == "alg-none":
        return _b64({"alg": "none", "typ": "JWT"}) + "." + _b64(admin_claims()) + "."
    if name == "alg-confusion":  # HS512 / RS-style header with the shared secret
        return jwt.encode(admin_claims(), SECRET, algorithm="HS512")
    if name == "wrong-secret":
        return jwt.encode(
            admin_claims(), "another-secret-that-is-long-enough-000", algorithm="HS256"
        )
    if name == "wrong-aud":
        return jwt.encode(admin_claims(aud="someone-else"), SECRET, algorithm="HS256")
    if name == "wrong-iss":
        return jwt.encode(admin_claims(iss="evil"), SECRET, algorithm="HS256")
    if name == "no-exp":
        return jwt.encode(admin_claims(exp=None), SECRET, algorithm="HS256")
    if name == "expired":
        return jwt.encode(admin_claims(exp=int(time.time()) - 3600), SECRET, algorithm="HS256")
    if name == "future-nbf":
        return jwt.encode(admin_claims(nbf=int(time.time()) + 3600), SECRET, algorithm="HS256")
    if name == "tampered":
        good = jwt.encode(admin_claims(admin=False, sub="nobody"), SECRET, algorithm="HS256")
        header, _, signature = good.split(".")
        return f"{header}.{_b64(admin_claims())}.{signature}"
    if name == "oversized":
        return jwt.encode(admin_claims(pad="x" * 5000), SECRET, algorithm="HS256")
    raise ValueError(name)


@pytest.mark.parametrize(
    "attack",
    [
        "alg-none",
        "alg-confusion",
        "wrong-secret",
        "wrong-aud",
        "wrong-iss",
        "no-exp",
        "expired",
        "future-nbf",
        "tampered",
        "oversized",
    ],
)
async def test_jwt_attacks_are_refused(llm_app: LLMApp, attack: str) -> None:
    async with llm_app(**AUTH) as (_, client):
        control = jwt.encode(admin_claims(), SECRET, algorithm="HS256")
        assert (await client.get("/api/v1/keys", headers=bearer(control))).status_code == 200
        response = await client.get("/api/v1/keys", headers=bearer(_forge(attack)))
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "authentication_error"


async def test_tenants_do_not_see_each_others_usage_or_cache(
    llm_app: LLMApp, upstream: FakeUpstream
) -> None:
    async with llm_app(**AUTH) as (app, client):
        key_a = (await create_key(client, tenant="tenant-a"))["key"]
        key_b = (await create_key(client, tenant="tenant-b"))["key"]
        first = await client.post(CHAT, json=chat("private to a"), headers=bearer(key_a))
        assert first.headers["x-cache"] == "miss"
        await settle(app)  # the answer is stored
        again_a = await client.post(CHAT, json=chat("private to a"), headers=bearer(key_a))
        assert again_a.headers["x-cache"] == "hit"
        as_b = await client.post(CHAT, json=chat("private to a"), headers=bearer(key_b))
        assert as_b.headers["x-cache"] == "miss"
        assert upstream.calls("primary-1") == 2
        usage_b = (await client.get("/api/v1/usage", headers=bearer(key_b))).json()
        assert {row["tenant"] for row in usage_b["data"]} == {"tenant-b"}
        assert usage_b["totals"]["requests"] == 1
        usage_admin = (await client.get("/api/v1/usage", headers=bearer(ADMIN))).json()
        assert {row["tenant"] for row in usage_admin["data"]} == {"tenant-a", "tenant-b"}


async def test_a_null_name_or_state_is_a_422_and_a_null_limit_clears_it(llm_app: LLMApp) -> None:
    async with llm_app(**AUTH) as (_, client):
        created = await create_key(client, rpm_limit=5)
        path = f"/api/v1/keys/{created['id']}"
        for field in ("name", "state"):
            response = await client.patch(path, headers=bearer(ADMIN), json={field: None})
            assert response.status_code == 422 and response.json()["error"]["param"] == field
        cleared = await client.patch(path, headers=bearer(ADMIN), json={"rpm_limit": None})
        assert cleared.status_code == 200 and cleared.json()["rpm_limit"] is None
        assert cleared.json()["name"] == "test key" and cleared.json()["state"] == "active"


async def test_limits_beyond_the_column_range_are_a_422(llm_app: LLMApp) -> None:
    async with llm_app(**AUTH) as (_, client):
        response = await client.post(
            "/api/v1/keys",
            headers=bearer(ADMIN),
            json={"name": "big", "tenant": "t", "tpm_limit": 2**31},
        )
        assert response.status_code == 422
