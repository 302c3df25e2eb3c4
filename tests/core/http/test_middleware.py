"""Request ids, CORS, body limits and route-templated metrics, as a client and
an operator see them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from prometheus_client import REGISTRY

from tests.conftest import AppFactory
from tests.support.routes import add_test_routes

ALLOWED = ["https://app.devskyy.app", "https://devskyy.app"]
VERCEL_REGEX = r"https://skygate-web-[a-z0-9]{9}-devskyy\.vercel\.app"
CORS = {"cors_origins": ",".join(ALLOWED), "cors_origin_regex": VERCEL_REGEX}


def sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# -- request id -----------------------------------------------------------------


async def test_client_request_id_is_echoed_and_bound_to_logs(
    app_factory: AppFactory, capfd: pytest.CaptureFixture[str]
) -> None:
    async with app_factory() as (_, client):
        response = await client.get("/live", headers={"X-Request-ID": "client-trace-42"})
        assert response.headers["x-request-id"] == "client-trace-42"
        response = await client.get("/nowhere", headers={"X-Request-ID": "client-trace-43"})
        assert response.json()["request_id"] == "client-trace-43"
    lines = [
        json.loads(line) for line in capfd.readouterr().err.splitlines() if line.startswith("{")
    ]
    access = [line for line in lines if line.get("path") == "/nowhere"]
    assert access and access[0]["request_id"] == "client-trace-43"
    assert access[0]["status"] == 404 and access[0]["route"] == "<unmatched>"


@pytest.mark.parametrize("bad", ["has space", "x" * 300, "semi;colon", "<script>", "ünï"])
async def test_insane_request_ids_are_replaced(app_factory: AppFactory, bad: str) -> None:
    async with app_factory() as (_, client):
        response = await client.get("/live", headers={b"X-Request-ID": bad.encode("utf-8")})
        rid = response.headers["x-request-id"]
        assert rid != bad and len(rid) == 32 and rid.isalnum()


async def test_generated_request_ids_are_unique(app_factory: AppFactory) -> None:
    async with app_factory() as (_, client):
        ids = {(await client.get("/live")).headers["x-request-id"] for _ in range(20)}
        assert len(ids) == 20


# -- CORS -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://app.devskyy.app", True),
        ("https://devskyy.app", True),
        ("https://skygate-web-a1b2c3d4e-devskyy.vercel.app", True),
        ("https://other-project-a1b2c3d4e-someone.vercel.app", False),
        ("https://skygate-web-a1b2c3d4e-devskyy.vercel.app.evil.com", False),
        ("https://skygate-web-a1b2c3d4e-x-devskyy.vercel.app", False),
        ("https://attackerdevskyy.app", False),
        ("https://x.devskyy.app.evil.com", False),
        ("http://app.devskyy.app", False),
        ("null", False),
    ],
)
async def test_cors_matrix(app_factory: AppFactory, origin: str, allowed: bool) -> None:
    async with app_factory(**CORS) as (_, client):
        before = sample("security_events_total", {"type": "cors_origin_rejected"})
        simple = await client.get("/live", headers={"Origin": origin})
        assert simple.status_code == 200
        assert "Origin" in simple.headers.get("vary", "")
        preflight = await client.options(
            "/api/v1/chat/completions",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type, authorization, x-request-id",
            },
        )
        if allowed:
            assert simple.headers["access-control-allow-origin"] == origin
            assert simple.headers["access-control-allow-credentials"] == "true"
            assert "X-Request-ID" in simple.headers["access-control-expose-headers"]
            assert preflight.status_code == 204
            assert preflight.headers["access-control-allow-origin"] == origin
            methods = preflight.headers["access-control-allow-methods"].split(", ")
            assert set(methods) == {"GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"}
            headers = preflight.headers["access-control-allow-headers"].split(", ")
            assert {
                "content-type",
                "authorization",
                "x-request-id",
                "accept",
                "accept-language",
                "content-language",
            } <= set(headers)
        else:
            assert "access-control-allow-origin" not in simple.headers
            assert "access-control-allow-credentials" not in simple.headers
            assert preflight.status_code == 403
            assert preflight.json()["error"]["code"] == "cors_rejected"
            assert "access-control-allow-origin" not in preflight.headers
            after = sample("security_events_total", {"type": "cors_origin_rejected"})
            assert after == before + 2


async def test_no_origin_still_varies_on_origin(app_factory: AppFactory) -> None:
    async with app_factory(**CORS) as (_, client):
        response = await client.get("/live")
        assert "Origin" in response.headers["vary"]
        assert "access-control-allow-origin" not in response.headers


async def test_preflight_refuses_unlisted_headers(app_factory: AppFactory) -> None:
    async with app_factory(**CORS) as (_, client):
        response = await client.options(
            "/live",
            headers={
                "Origin": ALLOWED[0],
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "x-evil-header",
            },
        )
        assert response.status_code == 403
        assert "x-evil-header" in response.json()["error"]["message"]


# -- body size ------------------------------------------------------------------

LIMIT = 64 * 1024


async def test_declared_oversized_body_is_refused_before_reading(app_factory: AppFactory) -> None:
    async with app_factory(customize=add_test_routes, max_request_body_bytes=LIMIT) as (_, c):
        before = sample("security_events_total", {"type": "body_too_large"})
        response = await c.post(
            "/test/echo",
            content=b"{" + b" " * (LIMIT + 10) + b"}",
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "request_too_large"
        assert sample("security_events_total", {"type": "body_too_large"}) == before + 1
        ok = await c.post("/test/echo", json={"text": "small"})
        assert ok.status_code == 200 and ok.json() == {"text": "small", "n": 1}


async def test_chunked_oversized_body_is_cut_off_early(app_factory: AppFactory) -> None:
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(1000):  # would be 64 MiB if read in full
            sent += 1
            yield b" " * (64 * 1024)

    async with app_factory(customize=add_test_routes, max_request_body_bytes=LIMIT) as (_, c):
        response = await c.post(
            "/test/echo", content=endless(), headers={"content-type": "application/json"}
        )
        assert response.status_code == 413
        assert response.json()["error"]["type"] == "invalid_request_error"
        assert sent <= 3


async def test_chunked_body_under_the_limit_is_served(app_factory: AppFactory) -> None:
    async def pieces() -> AsyncIterator[bytes]:
        yield b'{"text": '
        yield b'"chunked"}'

    async with app_factory(customize=add_test_routes, max_request_body_bytes=LIMIT) as (_, c):
        response = await c.post(
            "/test/echo", content=pieces(), headers={"content-type": "application/json"}
        )
        assert response.status_code == 200 and response.json()["text"] == "chunked"


async def test_invalid_content_length_is_a_400(app_factory: AppFactory) -> None:
    async with app_factory(customize=add_test_routes) as (_, client):
        response = await client.post(
            "/test/echo",
            content=b"{}",
            headers={"content-length": "abc", "content-type": "application/json"},
        )
        assert response.status_code == 400


# -- metrics ------------------------------------------------------------------------


async def test_metrics_use_route_templates_and_unknown_paths_add_no_series(
    app_factory: AppFactory,
) -> None:
    def add_item_route(app: FastAPI) -> None:
        @app.get("/test/items/{item_id}")
        async def item(item_id: str) -> dict[str, Any]:
            return {"id": item_id}

    async with app_factory(customize=add_item_route) as (_, client):
        labels = {
            "method": "GET",
            "route": "/test/items/{item_id}",
            "status": "200",
            "error_type": "",  # a success: no fault
        }
        before = sample("http_requests_total", labels)
        for i in range(5):
            assert (await client.get(f"/test/items/{i}")).status_code == 200
        for i in range(5):
            await client.get(f"/random/{i}/path")
        assert sample("http_requests_total", labels) == before + 5
        body = (await client.get("/metrics")).text
        assert "/random/" not in body
        assert 'route="<unmatched>"' in body
        assert "http_request_duration_seconds_bucket" in body
        assert "http_requests_in_progress" in body
        assert "process_resident_memory_bytes" in body


async def test_metrics_can_be_turned_off(app_factory: AppFactory) -> None:
    async with app_factory(enable_metrics=False) as (_, client):
        assert (await client.get("/metrics")).status_code == 404
        assert (await client.get("/")).json()["endpoints"]["metrics"] is None


# -- last resort ----------------------------------------------------------------------


async def test_each_unanswered_exception_is_answered_and_logged_once(
    app_factory: AppFactory, capfd: pytest.CaptureFixture[str]
) -> None:
    def add_routes(app: FastAPI) -> None:
        add_test_routes(app)

        @app.get("/test/stream-fails")
        async def stream_fails() -> StreamingResponse:
            async def body() -> AsyncIterator[bytes]:
                yield b"first"
                raise RuntimeError("midway")

            return StreamingResponse(body())

    async with app_factory(customize=add_routes) as (app, client):
        capfd.readouterr()
        boom = await client.get("/test/boom")
        assert boom.status_code == 500 and boom.json()["error"]["type"] == "api_error"
        assert boom.json()["request_id"] == boom.headers["x-request-id"]
        # Raw ASGI: httpx's transport refuses a response whose body never ended.
        sent: list[MutableMapping[str, Any]] = []
        requests = [{"type": "http.request", "body": b"", "more_body": False}]

        async def receive() -> MutableMapping[str, Any]:
            if requests:
                return requests.pop()
            await asyncio.Event().wait()  # no disconnect: the stream's failure ends it
            raise AssertionError("unreachable")

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(message)

        scope: dict[str, Any] = {"type": "http", "asgi": {"version": "3.0"}}
        scope |= {"http_version": "1.1", "method": "GET", "scheme": "http"}
        scope |= {"path": "/test/stream-fails", "raw_path": b"/test/stream-fails"}
        scope |= {"query_string": b"", "root_path": "", "client": ("127.0.0.1", 1)}
        scope |= {"headers": [(b"host", b"skygate.test")]}
        await app(scope, receive, send)
        assert sent[0]["status"] == 200 and sent[1]["body"] == b"first"
    lines = [
        json.loads(line) for line in capfd.readouterr().err.splitlines() if line.startswith("{")
    ]
    errors = [line["event"] for line in lines if line["level"] == "error"]
    assert errors == ["unhandled_exception", "response_failed_after_start"]
    statuses = {line["path"]: line["status"] for line in lines if line["event"] == "request"}
    assert statuses["/test/boom"] == 500 and statuses["/test/stream-fails"] == 200
