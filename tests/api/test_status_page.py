"""`/status` in a real browser: headless Chromium against a served gateway.

The gateway runs for real (uvicorn on a loopback port, its lifespan, the fake
upstream behind its router); the page is loaded in Debian's Chromium, which
enforces its CSP and runs its script, and the test reads what the page shows
(the `data-*` attributes of its rows and tiles) and compares it with what
`/health` answers. One case runs gunicorn with two workers, for what only
several workers show: `/health`'s traffic is the instance's, whichever worker
answers. Set STATUS_SCREENSHOT=docs/status.png to write the operator view's
screenshot where the README shows it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

from bench.fake_upstream import FakeUpstream
from core.jobs.heartbeat import Heartbeat
from database.repositories.jobs import JobRepository
from main_enterprise import create_app
from tests.support.app import make_settings, services, settle
from tests.support.asgi_server import serve
from tests.support.auth import ADMIN, bearer
from tests.support.browser import Page, browser_page
from tests.support.gateway import sqlite_gateway
from tests.support.llm import router_yaml
from tests.support.requests import CHAT, chat
from tests.support.servers import HOST, free_port

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "metrics-token-for-status-page-tests"
OPERATOR = {"Authorization": f"Bearer {TOKEN}"}
CALLER = bearer(ADMIN)
ROWS = """Object.fromEntries([...document.querySelectorAll('#services tr[data-service]')]
    .map(r => [r.dataset.service, r.dataset.status]))"""
DEPLOYMENT_ROWS = """Object.fromEntries([...document.querySelectorAll('tr[data-deployment]')]
    .map(r => [r.dataset.deployment, r.dataset.cooling === 'true']))"""
OVERALL = "document.querySelector('#overall .pill').dataset.status"

Gateway = Callable[..., AbstractAsyncContextManager[tuple[str, FastAPI]]]


@pytest.fixture
def gateway(
    upstream: FakeUpstream, sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Gateway:
    """Serve a gateway routed to the fake upstream; its base URL and app."""
    monkeypatch.setenv("FAKE_ANTHROPIC_KEY", "fake-anthropic-key")

    @asynccontextmanager
    async def run(
        *, cooldown_seconds: float = 1.0, **settings: Any
    ) -> AsyncIterator[tuple[str, FastAPI]]:
        config = tmp_path / "router.yaml"
        config.write_text(
            router_yaml(
                upstream, attempts=0, cooldown_failures=1, cooldown_seconds=cooldown_seconds
            )
        )
        settings.setdefault("database_url", sqlite_url)
        app = create_app(
            make_settings(
                router_config=str(config), metrics_token=TOKEN, admin_api_key=ADMIN, **settings
            )
        )
        async with serve(app) as served, httpx.AsyncClient(timeout=30) as client:
            assert (await client.get(f"{served.http_url}/live")).status_code == 200  # started
            yield served.http_url, app

    return run


def names_of_models_and_deployments(health: dict[str, Any]) -> set[str]:
    providers = health["services"]["llm_providers"]
    names = set(providers["models"])
    for deployment in providers["deployment_states"]:
        names |= {deployment["id"], deployment["model"]}
    return names


def csp_of(response: httpx.Response) -> dict[str, str]:
    directives = (
        d.strip().split(" ", 1) for d in response.headers["content-security-policy"].split(";")
    )
    return {d[0]: d[1] if len(d) > 1 else "" for d in directives}


async def page_errors(page: Page) -> list[str]:
    """What the browser refused (CSP) or the script threw, so far."""
    await asyncio.sleep(0)  # let the reader take in what the browser sent so far
    return page.errors


async def test_public_page_shows_only_what_public_health_shows(
    gateway: Gateway, redis_url: str
) -> None:
    async with (
        gateway(redis_url=redis_url) as (base, _),
        httpx.AsyncClient(base_url=base, timeout=30) as client,
    ):
        detailed = (await client.get("/health", headers=OPERATOR)).json()
        secret_names = names_of_models_and_deployments(detailed)
        assert {"primary", "primary/fake/primary-1#0", "claude-haiku-4-5"} <= secret_names

        served = await client.get("/status")
        assert served.status_code == 200 and served.headers["content-type"].startswith("text/html")
        csp = csp_of(served)
        nonce = re.search(r"'nonce-([\w-]+)'", csp["script-src"])
        assert nonce and csp["script-src"] == f"'nonce-{nonce[1]}'"  # no 'self', no 'unsafe-*'
        assert f'<script nonce="{nonce[1]}">' in served.text
        assert csp["default-src"] == "'none'" and csp["frame-ancestors"] == "'none'"
        assert csp["connect-src"] == "'self'" and csp["form-action"] == "'none'"
        assert "unsafe" not in served.headers["content-security-policy"]
        assert served.headers["x-frame-options"] == "DENY"
        assert served.headers["cache-control"] == "no-store"
        assert served.headers["x-content-type-options"] == "nosniff"
        again = (await client.get("/status")).headers["content-security-policy"]
        assert again != served.headers["content-security-policy"], "a nonce per page"
        assert "/status" not in (await client.get("/openapi.json")).json()["paths"]
        assert not [name for name in secret_names if name in served.text]
        public = (await client.get("/health")).json()
        for name, service in public["services"].items():  # rendered without any script
            assert f'data-service="{name}" data-status="{service["status"]}"' in served.text

        async with browser_page() as page:
            await page.goto(f"{base}/status")
            await page.wait_for("Number(document.body.dataset.refreshed) >= 1")
            public = (await client.get("/health")).json()
            assert await page.evaluate(ROWS) == {
                name: service["status"] for name, service in public["services"].items()
            }
            assert await page.evaluate(OVERALL) == public["status"] == "healthy"
            shown = await page.evaluate("document.documentElement.outerHTML")
            assert not [name for name in secret_names if name in shown]
            assert (
                await page.evaluate("document.querySelectorAll('tr[data-deployment]').length") == 0
            )

            # The browser enforces the CSP: markup or a handler injected into the page is refused.
            for injection in (
                "document.body.insertAdjacentHTML('beforeend', '<b>injected</b>')",
                "document.body.setAttribute('onclick', 'document.title = 1')",
            ):
                refused = await page.evaluate(
                    f"try {{ {injection}; '' }} catch (e) {{ e.message }}"
                )
                assert "requires 'Trusted" in refused, injection
            assert "injected" not in await page.evaluate("document.body.textContent")
            refusals = await page_errors(page)
            assert len(refusals) == 2 and all("requires 'Trusted" in r for r in refusals)
            page.errors.clear()

            # A wrong token: /health answers the short form; the page forgets the token.
            await page.evaluate(
                "document.getElementById('token').value = 'not-the-token';"
                "document.querySelector('#operator button[type=submit]').click()"
            )
            await page.wait_for(
                "document.getElementById('operator-note').className === 'note warn'"
            )
            assert await page.evaluate("sessionStorage.length") == 0
            assert await page.evaluate("location.href") == f"{base}/status"
            shown = await page.evaluate("document.documentElement.outerHTML")
            assert not [name for name in secret_names if name in shown]
            assert await page_errors(page) == []


async def test_operator_view_shows_redis_down_and_a_cooling_deployment(
    gateway: Gateway, upstream: FakeUpstream, tmp_path: Path
) -> None:
    upstream.set_behaviour("primary-1", "status", status=500)
    dead_redis = f"redis://{HOST}:{free_port()}/0"  # nothing listens there
    async with (
        gateway(redis_url=dead_redis, redis_failure_threshold=1, cooldown_seconds=600) as (base, _),
        httpx.AsyncClient(base_url=base, timeout=30) as client,
    ):
        # primary-1 fails once and cools down (its fallback, backup, answers); some
        # cache hits and one refused model give the traffic tiles something to show.
        for text in ("one", "two", "two", "three", "three", "three"):
            assert (await client.post(CHAT, json=chat(text), headers=CALLER)).status_code == 200
        assert (
            await client.post(CHAT, json=chat(model="no-such-model"), headers=CALLER)
        ).status_code == 404

        async with browser_page() as page:
            await page.goto(f"{base}/status")
            await page.wait_for("Number(document.body.dataset.refreshed) >= 1")
            await page.evaluate(
                f"document.getElementById('token').value = {json.dumps(TOKEN)};"
                "document.querySelector('#operator button[type=submit]').click()"
            )
            await page.wait_for("document.getElementById('operator').dataset.view === 'operator'")
            await page.wait_for(
                "document.querySelector('[data-metric=requests_per_second] .value')"
                ".textContent !== '—'"
            )
            health = (await client.get("/health", headers=OPERATOR)).json()
            services = health["services"]
            assert services["redis"]["status"] == "degraded"
            assert await page.evaluate(OVERALL) == health["status"] == "degraded"
            assert await page.evaluate(ROWS) == {
                name: service["status"] for name, service in services.items()
            }
            states = services["llm_providers"]["deployment_states"]
            assert await page.evaluate(DEPLOYMENT_ROWS) == {
                d["id"]: d["cooling_down"] for d in states
            }
            assert [d["id"] for d in states if d["cooling_down"]] == ["primary/fake/primary-1#0"]
            assert services["llm_providers"]["cooling_down"] == ["primary/fake/primary-1#0"]
            # The token went in a header, never the URL, and stays in this tab only.
            assert await page.evaluate("location.href") == f"{base}/status"
            assert await page.evaluate("sessionStorage.getItem('skygate.status.token')") == TOKEN
            assert await page_errors(page) == []
            wanted = os.environ.get("STATUS_SCREENSHOT")
            await page.screenshot(ROOT / wanted if wanted else tmp_path / "status.png")


async def test_health_counts_the_instance_api_traffic(gateway: Gateway, redis_url: str) -> None:
    async with (
        gateway(redis_url=redis_url) as (base, app),
        httpx.AsyncClient(base_url=base, timeout=30) as client,
    ):
        for text in ("a", "b", "a", "a"):
            assert (
                await client.post(CHAT, json=chat(text, model="solo"), headers=CALLER)
            ).status_code == 200
            await settle(app)  # the answer is stored in the cache after it is sent
        assert (
            await client.post(CHAT, json=chat(model="no-such-model"), headers=CALLER)
        ).status_code == 404
        for _ in range(5):  # probes are not API traffic
            await client.get("/health")

        async def traffic() -> dict[str, Any]:
            body = (await client.get("/health", headers=OPERATOR)).json()
            assert body["traffic"] is not None
            return dict(body["traffic"])

        async with asyncio.timeout(10):
            while (recent := await traffic())["requests_per_second"] is None:
                await asyncio.sleep(0.5)  # the first reading is the one at start-up
        window = recent["window_seconds"]
        assert recent["scope"] == "instance"
        assert recent["requests_per_second"] * window == pytest.approx(5, abs=0.2)
        assert recent["client_errors_per_second"] * window == pytest.approx(1, abs=0.1)
        assert recent["server_errors_per_second"] == 0 and recent["error_ratio"] == 0
        assert recent["cache_hit_ratio"] == 0.5  # "a" asked three times: two hits of four lookups
        public = (await client.get("/health")).json()
        assert "traffic" not in public


async def test_operator_view_lists_the_workers_and_the_queue(
    gateway: Gateway, migrated_postgres_url: str, redis_url: str
) -> None:
    async with (
        gateway(
            database_url=migrated_postgres_url,
            redis_url=redis_url,
            jobs_in_process=False,  # a separate worker serves the queue
            worker_heartbeat_seconds=0.5,
        ) as (base, app),
        httpx.AsyncClient(base_url=base, timeout=30) as client,
    ):
        live = services(app)
        worker = Heartbeat(  # what `python -m worker` beats with
            name="worker-status-test",
            redis=live.redis,
            repository=JobRepository(live.sessions),
            interval=0.2,
            version="test",
            running=list,
        )
        assert await worker.beat() == "redis"
        stop = asyncio.Event()
        beating = asyncio.create_task(worker.run(stop))
        try:
            async with browser_page() as page:
                await page.goto(f"{base}/status")
                await page.evaluate(
                    f"document.getElementById('token').value = {json.dumps(TOKEN)};"
                    "document.querySelector('#operator button[type=submit]').click()"
                )
                await page.wait_for("!!document.querySelector('[data-worker=worker-status-test]')")
                workers = (await client.get("/health", headers=OPERATOR)).json()["services"][
                    "workers"
                ]
                assert [w["name"] for w in workers["workers"]] == ["worker-status-test"]
                assert workers["status"] == "ok" and workers["queue"]["pending"] == 0
                state = "document.querySelector('[data-worker=worker-status-test] .pill')"
                assert await page.evaluate(state + ".dataset.status") == "ok"
                queue = await page.evaluate("document.getElementById('queue').textContent")
                assert queue.startswith("Queue: 0 waiting, 0 running")
                assert await page_errors(page) == []
        finally:
            stop.set()
            await beating


def served_by(counters: Path) -> float:
    """The `/api/v1/models` requests one worker counted (its own multiprocess file)."""
    families: list[Metric] = MultiProcessCollector.merge([str(counters)], accumulate=True)  # type: ignore[no-untyped-call]
    return sum(
        sample.value
        for family in families
        for sample in family.samples
        if sample.name == "http_requests_total" and sample.labels["route"] == "/api/v1/models"
    )


@pytest.mark.slow
def test_traffic_is_the_instance_whichever_worker_answers(tmp_path: Path) -> None:
    with sqlite_gateway(tmp_path, METRICS_TOKEN=TOKEN, ADMIN_API_KEY=ADMIN) as gateway:
        deadline = time.monotonic() + 30
        while gateway.logs().count('"skygate_started"') < 2:  # both workers took a first reading
            assert time.monotonic() < deadline, gateway.logs()[-2000:]
            time.sleep(0.1)
        # A connection each, until both workers have served some: which worker accepts a
        # connection is the kernel's choice, and on a loaded machine one may take 20 in a row.
        sent, served = 0, list[float]()
        while sent < 20 or len([n for n in served if n]) < 2:
            assert sent < 400, f"one worker accepted every connection: {served}"
            assert httpx.get(f"{gateway.base_url}/api/v1/models", headers=CALLER).status_code == 200
            sent += 1
            served = [served_by(path) for path in (tmp_path / "prom").glob("counter_*.db")]
        time.sleep(2.1)  # each worker takes a new reading at most every 2 s
        seen = []
        for _ in range(8):
            body = httpx.get(f"{gateway.base_url}/health", headers=OPERATOR).json()
            traffic = body["traffic"]
            seen.append(round(traffic["requests_per_second"] * traffic["window_seconds"]))
        assert seen == [sent] * 8, "every worker counts the requests the other one served"
