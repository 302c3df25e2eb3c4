"""Finding 11: a tenant named like the gateway's own principals.

On 041514a a key for the tenant `admin` was accepted; the admin principal's
tenant is `admin`, and the cache key and the usage view go by tenant name, so
that tenant shared the admin's cached answers and usage rows.
"""

from __future__ import annotations

import pytest

from tests.support.app import AppFactory
from tests.support.auth import ADMIN, SECRET, bearer, insert_key
from tests.support.requests import CHAT, chat

DEMO = chat(model="demo")
RESERVED = [
    "admin",
    "Admin",
    "ADMIN",
    "admin ",
    "admin.",
    "admin-",
    "ad-min",
    "a.d.m.i.n",
    "anonymous",
    "Anonymous  ",
    "skygate",
    "SkyGate",
]


@pytest.mark.parametrize("tenant", RESERVED)
async def test_reserved_tenant_names_are_refused(app_factory: AppFactory, tenant: str) -> None:
    async with app_factory(admin_api_key=ADMIN) as (_, client):
        response = await client.post(
            "/api/v1/keys", headers=bearer(ADMIN), json={"name": "k", "tenant": tenant}
        )
        assert response.status_code == 422, response.text
        assert response.json()["error"]["param"] == "tenant"
        assert "reserved" in response.json()["error"]["message"]
        listed = (await client.get("/api/v1/keys", headers=bearer(ADMIN))).json()["data"]
        assert listed == []
        # Nor can an existing key be moved there.
        created = await client.post(
            "/api/v1/keys", headers=bearer(ADMIN), json={"name": "k", "tenant": "team-a"}
        )
        moved = await client.patch(
            f"/api/v1/keys/{created.json()['id']}", headers=bearer(ADMIN), json={"tenant": tenant}
        )
        assert moved.status_code == 422
        one = await client.get(f"/api/v1/keys/{created.json()['id']}", headers=bearer(ADMIN))
        assert one.json()["tenant"] == "team-a"


async def test_only_the_reserved_names_themselves_are_refused(app_factory: AppFactory) -> None:
    async with app_factory(admin_api_key=ADMIN) as (_, client):
        for tenant, status in (
            ("admins-team", 201),
            ("team-admin", 201),
            ("skygate-customers", 201),
            ("Admin", 422),
        ):
            response = await client.post(
                "/api/v1/keys", headers=bearer(ADMIN), json={"name": "k", "tenant": tenant}
            )
            assert response.status_code == status, (tenant, response.text)


async def test_a_key_stored_under_a_reserved_name_sees_nothing_of_the_admin(
    app_factory: AppFactory,
) -> None:
    # A row from before names were reserved: it must not share the admin's cache
    # entries or usage rows.
    async with app_factory(admin_api_key=ADMIN, jwt_secret_key=SECRET) as (app, client):
        admin_answer = await client.post(CHAT, json=DEMO, headers=bearer(ADMIN))
        assert admin_answer.status_code == 200
        key, _ = await insert_key(app, tenant="admin")
        for path, method in ((CHAT, "POST"), ("/api/v1/usage", "GET")):
            response = await client.request(
                method, path, json=DEMO if method == "POST" else None, headers=bearer(key)
            )
            assert response.status_code == 401, (path, response.text)
            assert "x-cache" not in response.headers
