"""Findings 3 and 4: no credential is never admin, and admin JWTs die with the
admin key that minted them.

On 041514a, `ENVIRONMENT=staging` without ADMIN_API_KEY made every anonymous
request admin (it listed and created keys and minted admin JWTs), `make serve`
exposed the same on 0.0.0.0, and an admin JWT outlived a rotated ADMIN_API_KEY.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import func, select

from core.auth.credentials import hash_api_key
from database.models import ApiKey
from tests.support.app import AppFactory
from tests.support.auth import ADMIN, SECRET, bearer, forged_admin_token, insert_key
from tests.support.gateway import GatewayProcess
from tests.support.requests import CHAT, chat

READY = "Application startup complete"  # uvicorn, once per worker
DEMO = chat(model="demo")


def unverified(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def log_events(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


# -- staging without ADMIN_API_KEY -------------------------------------------------


async def test_staging_without_an_admin_key_has_no_anonymous_admin(
    app_factory: AppFactory,
) -> None:
    async with app_factory(environment="staging", jwt_secret_key=SECRET) as (app, client):
        assert (await client.post(CHAT, json=DEMO)).status_code == 401
        assert (await client.get("/api/v1/models")).status_code == 401
        listed = await client.get("/api/v1/keys")
        assert listed.status_code == 401 and "data" not in listed.json()
        created = await client.post("/api/v1/keys", json={"name": "x", "tenant": "victim"})
        assert created.status_code == 401
        minted = await client.post("/api/v1/auth/token")
        assert minted.status_code == 401 and "access_token" not in minted.json()
        async with app.state.services.sessions() as session:
            assert (await session.scalar(select(func.count()).select_from(ApiKey))) == 0

        # A tenant key works on the LLM routes and is refused by the admin ones: no admin exists.
        key, _ = await insert_key(app)
        assert (await client.get("/api/v1/models", headers=bearer(key))).status_code == 200
        forbidden = await client.get("/api/v1/keys", headers=bearer(key))
        assert forbidden.status_code == 403
        assert forbidden.json()["error"]["code"] == "admin_disabled"
        token = (await client.post("/api/v1/auth/token", headers=bearer(key))).json()
        assert (
            jwt.decode(token["access_token"], options={"verify_signature": False})["admin"] is False
        )
        # An admin JWT signed with the real secret is still no admin: there is no admin key.
        for forged in (forged_admin_token(), forged_admin_token(akf="0" * 32)):
            response = await client.get("/api/v1/keys", headers=bearer(forged))
            assert response.status_code == 401


# -- development without ADMIN_API_KEY ----------------------------------------------


async def test_development_without_an_admin_key_is_open_but_never_admin(
    app_factory: AppFactory, capfd: pytest.CaptureFixture[str]
) -> None:
    async with app_factory(jwt_secret_key=SECRET) as (_, client):
        answer = await client.post(CHAT, json=DEMO)
        assert answer.status_code == 200, "the LLM routes stay open in development"
        for method, path, body in (
            ("GET", "/api/v1/keys", None),
            ("POST", "/api/v1/keys", {"name": "x", "tenant": "victim"}),
            ("GET", "/api/v1/keys/some-id", None),
            ("DELETE", "/api/v1/keys/some-id", None),
        ):
            response = await client.request(method, path, json=body)
            assert response.status_code == 403, (method, path, response.text)
            assert "ADMIN_API_KEY" in response.json()["error"]["message"]
        minted = await client.post("/api/v1/auth/token")
        assert minted.status_code == 403 and "access_token" not in minted.json()
        usage = (await client.get("/api/v1/usage")).json()
        assert {row["tenant"] for row in usage["data"]} <= {"anonymous"}
        await client.post(CHAT, json=DEMO)
    warnings = [e for e in log_events(capfd.readouterr().err) if e["event"] == "auth_disabled"]
    assert len(warnings) == 1, "the start-up warning, once"
    assert warnings[0]["level"] == "warning" and "ADMIN_API_KEY" in warnings[0]["detail"]


def test_gunicorn_refuses_to_serve_beyond_loopback_without_an_admin_key(
    tmp_path: Path,
) -> None:
    # HOST=0.0.0.0 is what `make serve` and Render bind; the check must stop the
    # master before it binds (the log never says "Listening at").
    gateway = GatewayProcess(
        {"HOST": "0.0.0.0", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom")},
        tmp_path / "gunicorn.log",
    )
    try:
        gateway.start(wait=False)
        code = gateway.wait_exit(timeout=30)
    finally:
        gateway.stop()
    logs = gateway.logs()
    assert code != 0
    assert "ADMIN_API_KEY" in logs and "HOST=0.0.0.0" in logs
    assert "Listening at" not in logs and "Booting worker" not in logs
    assert "Traceback" not in logs


def test_gunicorn_on_loopback_warns_once_for_all_workers(tmp_path: Path) -> None:
    gateway = GatewayProcess(
        {"WEB_CONCURRENCY": "2", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom")},
        tmp_path / "gunicorn.log",
    )
    try:
        gateway.start()
        assert httpx.get(f"{gateway.base_url}/api/v1/keys", timeout=5).status_code == 403
        deadline = time.monotonic() + 10
        while (
            time.monotonic() < deadline and gateway.logs().count("Application startup complete") < 2
        ):
            time.sleep(0.1)
    finally:
        gateway.stop()
    events = log_events(gateway.logs())
    assert sum(e.get("event") == "auth_disabled" for e in events) == 1


# -- admin JWTs and the admin key ---------------------------------------------------


async def test_a_rotated_admin_key_retires_its_admin_tokens(app_factory: AppFactory) -> None:
    async with app_factory(admin_api_key=ADMIN, jwt_secret_key=SECRET) as (_, client):
        issued = await client.post("/api/v1/auth/token", headers=bearer(ADMIN))
        old_token = issued.json()["access_token"]
        assert (await client.get("/api/v1/keys", headers=bearer(old_token))).status_code == 200
        claims = unverified(old_token)
        assert ADMIN not in old_token and hash_api_key(ADMIN) not in json.dumps(claims)

    rotated = ADMIN + "-rotated"
    async with app_factory(admin_api_key=rotated, jwt_secret_key=SECRET) as (_, client):
        refused = await client.get("/api/v1/keys", headers=bearer(old_token))
        assert refused.status_code == 401
        assert refused.json()["error"]["type"] == "authentication_error"
        minted = await client.post("/api/v1/auth/token", headers=bearer(old_token))
        assert minted.status_code == 401 and "access_token" not in minted.json()
        assert (await client.get("/api/v1/keys", headers=bearer(rotated))).status_code == 200
        fresh = (await client.post("/api/v1/auth/token", headers=bearer(rotated))).json()
        assert (
            await client.get("/api/v1/keys", headers=bearer(fresh["access_token"]))
        ).status_code == 200


async def test_an_exchanged_token_never_outlives_the_one_presented(
    app_factory: AppFactory,
) -> None:
    async with app_factory(admin_api_key=ADMIN, jwt_secret_key=SECRET, jwt_ttl_seconds=120) as (
        _,
        client,
    ):
        created = await client.post(
            "/api/v1/keys", headers=bearer(ADMIN), json={"name": "k", "tenant": "team-a"}
        )
        key = created.json()["key"]
        for credential in (key, ADMIN):  # a tenant token and an admin token
            first = (await client.post("/api/v1/auth/token", headers=bearer(credential))).json()
            await asyncio.sleep(1.1)  # a token minted now would naively end a second later
            second = await client.post("/api/v1/auth/token", headers=bearer(first["access_token"]))
            assert second.status_code == 200
            body = second.json()
            assert body["expires_at"] <= first["expires_at"]
            exp = unverified(body["access_token"])["exp"]
            assert exp <= first["expires_at"] and body["expires_in"] <= 120 - 1


async def test_a_token_never_outlives_its_key(app_factory: AppFactory) -> None:
    async with app_factory(admin_api_key=ADMIN, jwt_secret_key=SECRET) as (_, client):
        ends = int(time.time()) + 60
        created = await client.post(
            "/api/v1/keys",
            headers=bearer(ADMIN),
            json={"name": "k", "tenant": "team-a", "expires_at": ends},
        )
        key = created.json()["key"]
        token = (await client.post("/api/v1/auth/token", headers=bearer(key))).json()
        assert token["expires_at"] <= ends and token["expires_in"] <= 60
