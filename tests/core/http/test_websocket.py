"""The middleware stack on WebSocket scopes, as a real client and an operator see it:
a real uvicorn server, the app `create_app` builds (the real stack) with a few
WebSocket routes, and the `websockets` client."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI, WebSocket
from prometheus_client import REGISTRY
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError, InvalidStatus

from tests.conftest import make_settings
from tests.support.asgi_server import Served, serve

ALLOWED = "https://app.devskyy.app"
LEAKY = "internal detail: password=hunter2"
ECHO, EARLY, LATE = "/test/ws/echo", "/test/ws/fails-before-accept", "/test/ws/fails-after-accept"


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def sessions(route: str, outcome: str) -> float:
    return sample("websocket_sessions_total", {"route": route, "outcome": outcome})


def add_websocket_routes(app: FastAPI, reached: list[str]) -> None:
    @app.websocket(ECHO)
    async def echo(websocket: WebSocket) -> None:
        reached.append(ECHO)
        await websocket.accept()
        await websocket.send_text(await websocket.receive_text())
        await websocket.receive_text()  # until the client closes (WebSocketDisconnect)

    @app.websocket(EARLY)
    async def early(websocket: WebSocket) -> None:
        raise RuntimeError(LEAKY)

    @app.websocket(LATE)
    async def late(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.receive_text()
        raise RuntimeError(LEAKY)


@pytest.fixture
async def server(sqlite_url: str) -> AsyncIterator[tuple[Served, list[str]]]:
    reached: list[str] = []
    settings = make_settings(database_url=sqlite_url, cors_origins=ALLOWED)
    from main_enterprise import create_app

    app = create_app(settings)
    add_websocket_routes(app, reached)
    async with serve(app) as served:
        yield served, reached


def lines(capfd: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    err = capfd.readouterr().err
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


def session_line(capfd: pytest.CaptureFixture[str]) -> dict[str, Any]:
    found = [line for line in lines(capfd) if line.get("event") == "websocket"]
    assert len(found) == 1, found
    return found[0]


async def test_request_id_on_the_accept_and_one_access_line_at_the_close(
    server: tuple[Served, list[str]], capfd: pytest.CaptureFixture[str]
) -> None:
    served, _ = server
    active = sample("websocket_connections_active")
    normal = sessions(ECHO, "normal")
    durations = sample("websocket_session_duration_seconds_count", {"route": ECHO})
    capfd.readouterr()
    async with connect(
        served.ws_url + ECHO, additional_headers={"X-Request-ID": "ws-trace-7"}
    ) as ws:
        assert ws.response is not None
        assert ws.response.headers["x-request-id"] == "ws-trace-7"
        await ws.send("hello")
        assert await ws.recv() == "hello"
        assert sample("websocket_connections_active") == active + 1
        assert not [line for line in lines(capfd) if line.get("event") == "websocket"]
    await served.watch.wait_ended(1)

    line = session_line(capfd)
    assert line["request_id"] == "ws-trace-7" and line["route"] == ECHO
    assert (line["status"], line["close_code"], line["outcome"]) == (101, 1000, "normal")
    assert line["duration_ms"] > 0 and line["client"] == "127.0.0.1"
    assert line["level"] == "info" and line["logger"] == "skygate.access"
    assert sample("websocket_connections_active") == active
    assert sessions(ECHO, "normal") == normal + 1
    assert sample("websocket_session_duration_seconds_count", {"route": ECHO}) == durations + 1


async def test_a_generated_request_id_when_the_client_sends_none_or_an_insane_one(
    server: tuple[Served, list[str]],
) -> None:
    served, _ = server
    for headers in ({}, {"X-Request-ID": "has space"}):
        async with connect(served.ws_url + ECHO, additional_headers=headers) as ws:
            assert ws.response is not None
            rid = ws.response.headers["x-request-id"]
            assert len(rid) == 32 and rid.isalnum()


async def test_a_refused_origin_is_denied_before_the_app_and_counted(
    server: tuple[Served, list[str]], capfd: pytest.CaptureFixture[str]
) -> None:
    served, reached = server
    rejected = sample("security_events_total", {"type": "cors_origin_rejected"})
    capfd.readouterr()
    with pytest.raises(InvalidStatus) as refused:
        async with connect(served.ws_url + ECHO, origin="https://evil.example"):  # type: ignore[arg-type]
            pass
    response = refused.value.response
    assert response.status_code == 403
    body = json.loads(response.body or b"")
    assert body["error"]["code"] == "cors_rejected"
    assert body["request_id"] == response.headers["x-request-id"]
    assert reached == [], "the route never ran"
    assert sample("security_events_total", {"type": "cors_origin_rejected"}) == rejected + 1
    await served.watch.wait_ended(1)
    line = session_line(capfd)
    assert (line["status"], line["outcome"]) == (403, "rejected")

    # An allowed Origin, and none at all (a server, not a browser), pass.
    async with connect(served.ws_url + ECHO, origin=ALLOWED):  # type: ignore[arg-type]
        pass
    async with connect(served.ws_url + ECHO):
        pass
    assert reached == [ECHO, ECHO]


async def test_an_error_before_accept_is_a_500_denial_in_the_error_shape(
    server: tuple[Served, list[str]], capfd: pytest.CaptureFixture[str]
) -> None:
    served, _ = server
    errors = sessions(EARLY, "error")
    capfd.readouterr()
    with pytest.raises(InvalidStatus) as denied:
        async with connect(served.ws_url + EARLY):
            pass
    response = denied.value.response
    assert response.status_code == 500
    body = json.loads(response.body or b"")
    assert body["error"]["type"] == "api_error" and "hunter2" not in str(body)
    assert body["request_id"] == response.headers["x-request-id"]
    await served.watch.wait_ended(1)
    logged = lines(capfd)
    assert [line["event"] for line in logged if line["level"] == "error"] == ["websocket_failed"]
    assert sessions(EARLY, "error") == errors + 1
    (line,) = [line for line in logged if line.get("event") == "websocket"]
    assert (line["status"], line["outcome"], line["level"]) == (500, "error", "warning")


async def test_an_error_after_accept_closes_with_1011(
    server: tuple[Served, list[str]], capfd: pytest.CaptureFixture[str]
) -> None:
    served, _ = server
    active = sample("websocket_connections_active")
    errors = sessions(LATE, "error")
    capfd.readouterr()
    async with connect(served.ws_url + LATE) as ws:
        await ws.send("go")
        with pytest.raises(ConnectionClosedError) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
    await served.watch.wait_ended(1)
    logged = lines(capfd)
    assert [line["event"] for line in logged if line["level"] == "error"] == ["websocket_failed"]
    (line,) = [line for line in logged if line.get("event") == "websocket"]
    assert (line["status"], line["close_code"], line["outcome"]) == (101, 1011, "error")
    assert sessions(LATE, "error") == errors + 1
    assert sample("websocket_connections_active") == active
