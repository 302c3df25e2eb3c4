"""Credentials for tests: the admin key and JWT secret the apps are started with,
keys created through the admin API or written straight to the database, and
admin tokens forged with the real secret (what an attacker who has it can mint)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import jwt
from fastapi import FastAPI

from core.auth.credentials import admin_fingerprint, display_prefix, hash_api_key, new_api_key
from database.models import ApiKey
from tests.support.app import services

ADMIN = "admin-key-for-tests-0123456789abcdef"
SECRET = "jwt-secret-for-tests-0123456789abcdef-0123456789abcdef-0123456789"


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


async def create_key(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    """A key created by the admin (`ADMIN`) through the API; the body it answered
    (the secret is in `key`)."""
    body = {"name": "test key", "tenant": "team-a", **fields}
    response = await client.post("/api/v1/keys", json=body, headers=bearer(ADMIN))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def insert_key(app: FastAPI, *, tenant: str = "team-a", **fields: Any) -> tuple[str, str]:
    """A tenant key written straight to the database (for apps with no admin to
    create one): (secret, id)."""
    secret, key_id = new_api_key(), str(uuid.uuid4())
    async with services(app).sessions() as session, session.begin():
        session.add(
            ApiKey(
                id=key_id,
                name="direct",
                tenant=tenant,
                key_prefix=display_prefix(secret),
                key_hash=hash_api_key(secret),
                state="active",
                **fields,
            )
        )
    return secret, key_id


def admin_claims(**overrides: Any) -> dict[str, Any]:
    """The claims of a valid admin token for `ADMIN`/`SECRET`, valid for 5 minutes;
    an override of None removes that claim."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": "skygate",
        "aud": "skygate-api",
        "sub": "admin",
        "tenant": "admin",
        "admin": True,
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "akf": admin_fingerprint(secret=SECRET, admin_key=ADMIN),
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def forged_admin_token(**claims: Any) -> str:
    """An admin token signed with `SECRET` but bound to no admin key (no `akf`
    unless given): what a gateway without an admin key must refuse."""
    return jwt.encode(admin_claims(**{"akf": None, **claims}), SECRET, algorithm="HS256")
