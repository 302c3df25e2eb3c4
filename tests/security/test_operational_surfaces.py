"""Finding 12: what `/metrics`, `/metrics/cache` and `/health` show, and to whom.

On 041514a both metrics endpoints were public unless METRICS_TOKEN was set
(deployment ids, costs, security counters), the admin key did not open them,
and `/health` listed model groups and cooling deployments to anyone.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.app import AppFactory, make_settings, running_app
from tests.support.auth import ADMIN, SECRET, bearer

TOKEN = "metrics-token-for-security-tests-0123"
SHORT = {"status", "latency_ms"}


def production(database_url: str, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "environment": "production",
        "database_url": database_url,
        "jwt_secret_key": SECRET,
        "admin_api_key": ADMIN,
        "cors_origins": "https://app.example.com",
        "openai_api_key": "sk-test-provider-key-not-used",
        "metrics_token": TOKEN,
        **overrides,
    }
    return make_settings(**{k: v for k, v in values.items() if v is not None})


async def test_metrics_in_production_need_the_token_or_the_admin_key(
    migrated_postgres_url: str,
) -> None:
    async with running_app(production(migrated_postgres_url)) as (_, client):
        admin_token = (await client.post("/api/v1/auth/token", headers=bearer(ADMIN))).json()
        for path in ("/metrics", "/metrics/cache"):
            for headers in ({}, bearer("wrong-token"), {"Authorization": TOKEN}):
                refused = await client.get(path, headers=headers)
                assert refused.status_code == 401, (path, headers)
                assert refused.json()["error"]["type"] == "authentication_error"
                assert "llm_requests_total" not in refused.text
            for credential in (TOKEN, ADMIN, admin_token["access_token"]):
                assert (await client.get(path, headers=bearer(credential))).status_code == 200
    # METRICS_PUBLIC=true is the explicit way to serve them without a token.
    public = production(migrated_postgres_url, metrics_token=None, metrics_public=True)
    async with running_app(public) as (_, client):
        assert (await client.get("/metrics")).status_code == 200
        assert (await client.get("/metrics/cache")).status_code == 200


async def test_metrics_outside_development_are_never_anonymous(app_factory: AppFactory) -> None:
    async with app_factory(environment="staging", admin_api_key=ADMIN) as (_, client):
        assert (await client.get("/metrics")).status_code == 401
        assert (await client.get("/metrics/cache")).status_code == 401
        assert (await client.get("/metrics", headers=bearer(ADMIN))).status_code == 200


def assert_short_form(body: dict[str, Any]) -> None:
    assert set(body) == {"status", "version", "environment", "uptime_seconds", "agents", "services"}
    # agents: counts only (no agent ids, names or models: those are the caller's to list)
    assert set(body["agents"]) == {"total", "active", "runs_active"}
    assert all(isinstance(count, int) for count in body["agents"].values())
    assert set(body["services"]) >= {"api", "database", "redis", "llm_providers"}
    for name, service in body["services"].items():
        assert set(service) == SHORT, name


@pytest.mark.parametrize("environment", ["development", "staging"])
async def test_health_names_deployments_only_to_operators(
    app_factory: AppFactory, environment: str
) -> None:
    async with app_factory(
        environment=environment, admin_api_key=ADMIN, jwt_secret_key=SECRET, metrics_token=TOKEN
    ) as (_, client):
        for headers in ({}, bearer("wrong-token"), bearer("sk-sg-" + "x" * 43)):
            response = await client.get("/health", headers=headers)
            assert response.status_code == 200, "never a 401 on /health"
            assert_short_form(response.json())
            assert "demo" not in response.text and "cooling_down" not in response.text
        admin_token = (await client.post("/api/v1/auth/token", headers=bearer(ADMIN))).json()
        for credential in (TOKEN, ADMIN, admin_token["access_token"]):
            detailed = (await client.get("/health", headers=bearer(credential))).json()
            providers = detailed["services"]["llm_providers"]
            assert "models" in providers and "cooling_down" in providers, credential[:6]
            assert detailed["services"]["database"]["backend"] == "sqlite"
