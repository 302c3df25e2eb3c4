"""The `error_type` label an operator alerts on: every answered error is counted by
whose fault it is (`caller_*`, `policy_*`, `provider_*`, `gateway_*`), on
`http_requests_total` and, for LLM calls, `llm_requests_total`; a success has none.
And the stream timings and per-tenant numbers recorded next to them: time to first
token, time per output token, tokens and cost by tenant, budget use, 429s by limit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from bench.fake_upstream import FakeUpstream
from core import errors
from core.errors import FAULTS, GatewayError
from tests.support.app import settle
from tests.support.auth import ADMIN, SECRET, bearer, create_key
from tests.support.llm import LLMApp, priced_router
from tests.support.requests import CHAT, chat

FAULT_GROUPS = ("caller_", "policy_", "provider_", "gateway_")


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def http_count(status: int, error_type: str) -> float:
    return sample(
        "http_requests_total",
        method="POST",
        route=CHAT,
        status=str(status),
        error_type=error_type,
    )


def llm_count(group: str, error_type: str) -> float:
    """Over every provider and outcome (the provider label is whoever answered)."""
    total = 0.0
    for family in REGISTRY.collect():
        if family.name != "llm_requests":
            continue
        for s in family.samples:
            if (
                s.name == "llm_requests_total"
                and s.labels["model_group"] == group
                and s.labels["error_type"] == error_type
            ):
                total += s.value
    return total


def subclasses(cls: type[GatewayError]) -> list[type[GatewayError]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found += subclasses(sub)
    return found


def test_every_error_names_a_fault_from_the_fixed_set() -> None:
    assert all(fault.startswith(FAULT_GROUPS) for fault in FAULTS)
    for cls in subclasses(GatewayError):
        assert cls.default_fault in FAULTS, cls
    for code, fault in errors._FAULT_BY_CODE.items():
        assert fault in FAULTS, code
    for status in (400, 401, 403, 404, 405, 406, 408, 413, 422, 429, 499, 500, 502, 503, 504):
        assert errors.fault_for_status(status) in FAULTS, status
    assert errors.fault_for_status(200) == ""


# (fake behaviour for the model, the request's model group, stream?, status,
#  error_type on http_requests_total, error_type on llm_requests_total or None: no call)
CASES: list[tuple[dict[str, Any] | None, str, bool, int, str, str | None]] = [
    (None, "solo", False, 200, "", ""),
    ({"mode": "status", "status": 500}, "solo", False, 502, "provider_error", "provider_error"),
    (
        {"mode": "status", "status": 429, "retry_after": 30},
        "solo",
        False,
        429,
        "provider_rate_limited",
        "provider_rate_limited",
    ),
    (
        {"mode": "status", "status": 401},
        "solo",
        False,
        502,
        "provider_rejected",
        "provider_rejected",
    ),
    (
        {"mode": "status", "status": 400, "message": "too long"},
        "solo",
        False,
        400,
        "caller_upstream_rejected",
        "caller_upstream_rejected",
    ),
    ({"mode": "hang"}, "solo", False, 504, "provider_timeout", "provider_timeout"),
    # A stream the provider cut after its first chunks: the status was already 200,
    # but the client got an error event, so the request counts as that error.
    (
        {"mode": "cut", "after_chunks": 2},
        "solo",
        True,
        200,
        "provider_stream_interrupted",
        "provider_stream_interrupted",
    ),
    (None, "no-such-model", False, 404, "caller_not_found", None),
]


@pytest.mark.parametrize(
    ("behaviour", "group", "stream", "status", "http_fault", "llm_fault"),
    CASES,
    ids=["ok", "500", "429", "refused", "rejected", "timeout", "cut", "unknown-model"],
)
async def test_answers_are_counted_by_whose_fault_they_are(
    llm_app: LLMApp,
    upstream: FakeUpstream,
    behaviour: dict[str, Any] | None,
    group: str,
    stream: bool,
    status: int,
    http_fault: str,
    llm_fault: str | None,
) -> None:
    if behaviour is not None:
        upstream.set_behaviour("solo-1", **behaviour)
    async with llm_app(timeout=0.5, attempts=0) as (app, client):
        before_http = http_count(status, http_fault)
        before_llm = llm_count(group, llm_fault) if llm_fault is not None else 0.0
        response = await client.post(CHAT, json=chat("whose fault", model=group, stream=stream))
        assert response.status_code == status, response.text
        await settle(app)
        assert http_count(status, http_fault) == before_http + 1
        if llm_fault is not None:
            assert llm_count(group, llm_fault) == before_llm + 1


async def test_a_bad_body_and_a_missing_key_are_the_callers(llm_app: LLMApp) -> None:
    async with llm_app(admin_api_key=ADMIN, jwt_secret_key=SECRET) as (_, client):
        before = (http_count(401, "caller_unauthenticated"), http_count(400, "caller_bad_request"))
        assert (await client.post(CHAT, json=chat())).status_code == 401
        key = (await create_key(client))["key"]
        bad = await client.post(CHAT, content=b"{not json", headers=bearer(key))
        assert bad.status_code == 400
        after = (http_count(401, "caller_unauthenticated"), http_count(400, "caller_bad_request"))
        assert after == (before[0] + 1, before[1] + 1)


async def test_limits_are_policy_and_counted_by_limit(llm_app: LLMApp) -> None:
    async with llm_app(admin_api_key=ADMIN, jwt_secret_key=SECRET) as (_, client):
        key = (await create_key(client, rpm_limit=1))["key"]
        refused_before = sample("rate_limit_refusals_total", limit="requests_per_minute")
        http_before = http_count(429, "policy_rate_limited")
        assert (await client.post(CHAT, json=chat("one"), headers=bearer(key))).status_code == 200
        limited = await client.post(CHAT, json=chat("two"), headers=bearer(key))
        assert limited.status_code == 429
        assert sample("rate_limit_refusals_total", limit="requests_per_minute") == (
            refused_before + 1
        )
        assert http_count(429, "policy_rate_limited") == http_before + 1


async def test_budget_use_per_tenant_and_cost_by_tenant(
    llm_app: LLMApp, upstream: FakeUpstream, tmp_path: Path
) -> None:
    router = priced_router(upstream, tmp_path / "priced.yaml")
    async with llm_app(router_config=router, admin_api_key=ADMIN, jwt_secret_key=SECRET) as (
        app,
        client,
    ):
        key = (await create_key(client, tenant="budgeted", monthly_budget_usd=0.0001))["key"]
        cost_before = sample(
            "llm_cost_usd_total", provider="openai", model_group="metered", tenant="budgeted"
        )
        long = chat("word " * 1000, model="metered")
        assert (await client.post(CHAT, json=long, headers=bearer(key))).status_code == 200
        assert sample("tenant_budget_used_ratio", tenant="budgeted") == 0.0  # before the call
        await settle(app)
        cost = sample(
            "llm_cost_usd_total", provider="openai", model_group="metered", tenant="budgeted"
        )
        assert cost - cost_before >= 0.0001
        budget_before = sample("rate_limit_refusals_total", limit="monthly_budget")
        over = await client.post(CHAT, json=chat("b", model="metered"), headers=bearer(key))
        assert over.status_code == 429
        assert sample("tenant_budget_used_ratio", tenant="budgeted") >= 1.0
        assert sample("rate_limit_refusals_total", limit="monthly_budget") == budget_before + 1
        assert http_count(429, "policy_budget_exceeded") >= 1


async def test_a_stream_records_its_first_token_and_its_time_per_token(
    llm_app: LLMApp, upstream: FakeUpstream
) -> None:
    """Chunks 30 ms apart: each token after the first took at least that long."""
    upstream.set_behaviour("solo-1", "slow", chunk_delay_ms=30)
    labels = {"provider": "openai_compatible", "model_group": "solo"}
    async with llm_app() as (app, client):
        ttft_before = sample("llm_time_to_first_token_seconds_count", **labels)
        tpot_before = sample("llm_time_per_output_token_seconds_count", **labels)
        tpot_sum_before = sample("llm_time_per_output_token_seconds_sum", **labels)
        body = chat("one two three four five six", model="solo", stream=True)
        response = await client.post(CHAT, json=body)
        assert response.status_code == 200
        await settle(app)
        assert sample("llm_time_to_first_token_seconds_count", **labels) == ttft_before + 1
        assert sample("llm_time_per_output_token_seconds_count", **labels) == tpot_before + 1
        per_token = sample("llm_time_per_output_token_seconds_sum", **labels) - tpot_sum_before
        assert 0.02 <= per_token < 1.0
