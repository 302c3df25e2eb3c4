"""Cooldown never empties a group on its own (#15).

One failing request used to take a one-deployment group away for 30 s: its
retries counted as three consecutive failures, the breaker opened, and every
request after it was a 503 `no_deployment_available`. Now the retries of one
request are one failure; the last deployment in service for a group is never
opened by its breaker (requests keep reaching it, get the upstream's real error
at once, and the first success heals it); groups with more than one deployment
still cool the failing one down and serve from the others.

The router here has the shipped defaults (2 retries, 3 failures, 30 s) and
routes by latency, so that of two unmeasured deployments the first is tried
first and the walk is the same every run.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.fake_upstream import FakeUpstream
from tests.support.llm import LLMApp
from tests.support.requests import CHAT, chat

OPERATOR = "metrics-token-for-cooldown-tests"  # /health's deployment details need it
LONE = {"direct": ("solo", "solo-1"), "anthropic": ("claude", "claude-haiku-4-5")}


def router_config(upstream: FakeUpstream, path: Path, *, attempts: int, failures: int) -> str:
    path.write_text(
        textwrap.dedent(f"""\
            routing:
              strategy: latency
            retry:
              attempts: {attempts}
              backoff_seconds: 0.01
              max_backoff_seconds: 0.02
            cooldown:
              failures: {failures}
              seconds: 30
            providers:
              fake:
                kind: openai_compatible
                api_base: {upstream.base_url}
              anth:
                kind: anthropic
                api_base: {upstream.root_url}
                api_key_env: FAKE_ANTHROPIC_KEY
            model_groups:
              - {{name: solo, deployments: [{{provider: fake, model: solo-1}}]}}
              - {{name: claude, deployments: [{{provider: anth, model: claude-haiku-4-5}}]}}
              - name: pair
                deployments:
                  - {{provider: fake, model: pair-a}}
                  - {{provider: fake, model: pair-b}}
            """)
    )
    return str(path)


@pytest.fixture
def app(llm_app: LLMApp, upstream: FakeUpstream, tmp_path: Path) -> Any:
    def factory(*, attempts: int = 2, failures: int = 3) -> Any:
        path = tmp_path / "router.yaml"
        config = router_config(upstream, path, attempts=attempts, failures=failures)
        return llm_app(router_config=config, metrics_token=OPERATOR)

    return factory


def warnings(capfd: pytest.CaptureFixture[str]) -> list[tuple[str, str]]:
    """(event, deployment model) of the router's warnings since the last call."""
    lines = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line[:1] == "{"]
    return [
        (line["event"], line["deployment"].split("/")[-1].split("#")[0])
        for line in lines
        if line["level"] == "warning" and line.get("logger") == "skygate.router"
    ]


async def cooling_down(client: httpx.AsyncClient) -> list[str]:
    health = await client.get("/health", headers={"Authorization": f"Bearer {OPERATOR}"})
    cooling: list[str] = health.json()["services"]["llm_providers"]["cooling_down"]
    return [name.split("/")[-1].split("#")[0] for name in cooling]


@pytest.mark.parametrize("route", LONE)
async def test_a_one_deployment_group_survives_a_failing_request(
    app: Any, upstream: FakeUpstream, route: str
) -> None:
    group, model = LONE[route]
    upstream.set_behaviour(model, "status", status=500)
    async with app() as (_, client):
        first = await client.post(CHAT, json=chat("the upstream is down", model=group))
        assert first.status_code == 502
        assert first.json()["error"]["type"] == "upstream_error"
        assert upstream.calls(model) == 3  # the attempt and its two retries
        second = await client.post(CHAT, json=chat("still down?", model=group))
        assert second.status_code == 502  # the upstream's own failure, not a 503
        assert upstream.calls(model) == 6
        assert await cooling_down(client) == []
        upstream.set_behaviour(model, "ok")
        healed = await client.post(CHAT, json=chat("back up", model=group))
        assert healed.status_code == 200 and upstream.calls(model) == 7


async def test_the_retries_of_one_request_are_one_failure(
    app: Any, upstream: FakeUpstream, capfd: pytest.CaptureFixture[str]
) -> None:
    """Threshold 3, two retries per request: three failing requests trip the breaker
    (not the first one's three attempts). Past it, the lone deployment stays in
    service and each request makes one attempt; the first success clears it."""
    upstream.set_behaviour("solo-1", "status", status=503)
    async with app() as (_, client):
        capfd.readouterr()
        calls = []
        for i in range(4):
            response = await client.post(CHAT, json=chat(f"failing {i}", model="solo"))
            assert response.status_code == 502
            calls.append(upstream.calls("solo-1"))
        # 3 + 3 + (the third failure trips it: no retries) 1 + 1
        assert calls == [3, 6, 7, 8]
        assert warnings(capfd) == [("deployment_failing_kept_in_service", "solo-1")]
        upstream.set_behaviour("solo-1", "ok")
        response = await client.post(CHAT, json=chat("recovered", model="solo"))
        assert response.status_code == 200 and upstream.calls("solo-1") == 9
        assert warnings(capfd) == [("deployment_recovered", "solo-1")]
        # healed: the count starts again, and a failing request gets its retries back
        upstream.set_behaviour("solo-1", "status", status=503)
        response = await client.post(CHAT, json=chat("failing again", model="solo"))
        assert response.status_code == 502 and upstream.calls("solo-1") == 12


async def test_a_group_of_two_cools_the_failing_one_and_keeps_the_last(
    app: Any, upstream: FakeUpstream, capfd: pytest.CaptureFixture[str]
) -> None:
    upstream.set_behaviour("pair-a", "status", status=500)
    async with app(attempts=1, failures=2) as (_, client):
        capfd.readouterr()
        for i in range(2):  # pair-a first (unmeasured), then the retry on pair-b
            response = await client.post(CHAT, json=chat(f"pair {i}", model="pair"))
            assert response.headers["x-skygate-model"] == "pair-b"
        assert (upstream.calls("pair-a"), upstream.calls("pair-b")) == (2, 2)
        assert await cooling_down(client) == ["pair-a"]
        assert warnings(capfd) == [("deployment_cooling_down", "pair-a")]
        response = await client.post(CHAT, json=chat("pair 2", model="pair"))
        assert response.headers["x-skygate-model"] == "pair-b"
        assert upstream.calls("pair-a") == 2  # skipped while it cools down
        # now the last one in service fails too: it is held, never opened
        upstream.set_behaviour("pair-b", "status", status=500)
        before = upstream.calls("pair-b")
        for i in range(3):
            response = await client.post(CHAT, json=chat(f"both down {i}", model="pair"))
            assert response.status_code == 502, response.text
        # 2 (an attempt and a retry), then past the threshold: one attempt each
        assert upstream.calls("pair-b") - before == 2 + 1 + 1
        assert upstream.calls("pair-a") == 2
        assert await cooling_down(client) == ["pair-a"]
        assert warnings(capfd) == [("deployment_failing_kept_in_service", "pair-b")]


async def test_a_rate_limited_lone_deployment_passes_the_429_on(
    app: Any, upstream: FakeUpstream
) -> None:
    """A long Retry-After is the client's to honour: the lone deployment is not
    paused for it (each worker would pause on its own, and the 503 would hide the
    provider's answer); the next request asks the provider again."""
    upstream.set_behaviour("solo-1", "status", status=429, retry_after=30)
    async with app(failures=1) as (_, client):
        for i in range(2):
            response = await client.post(CHAT, json=chat(f"limited {i}", model="solo"))
            assert response.status_code == 429
            assert response.headers["retry-after"] == "30"
            assert response.json()["error"]["code"] == "upstream_rate_limited"
            assert upstream.calls("solo-1") == i + 1  # too long to wait for: not retried
