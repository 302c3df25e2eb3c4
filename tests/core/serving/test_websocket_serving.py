"""WebSockets as the servers serve them (core/serving/ws_protocol.py): real gunicorn
with two workers running Skygate's app plus test-only routes (`ws_app`), spoken to
by the `websockets` client. An oversized message closes with 1009; a token in the
query string never reaches the log, even at DEBUG; a denied upgrade logs no bogus
ERROR; each socket's count on the connection board is released when it closes;
SIGTERM and a recycle's shutdown set `Lifecycle.stopping`, so an endpoint closes
1012 in its own words before uvicorn does."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from core.infra.health import Lifecycle
from core.serving.http_protocol import SkygateHttpProtocol
from core.serving.worker import DrainingServer
from core.serving.ws_protocol import WebSocketLimits
from database.schema import upgrade_head
from tests.core.serving.ws_app import DENIED, ECHO, STOPPING, STOPPING_REASON, add_websocket_routes
from tests.support.app import make_settings
from tests.support.gateway import VENV_BIN, GatewayProcess
from tests.support.servers import HOST

pytestmark = pytest.mark.slow
WAIT_SECONDS = 15.0
TOKEN = "tkt_querysecret_4c1f9a"  # matches none of the log redactor's patterns


class RoutesGateway(GatewayProcess):
    """gunicorn serving `ws_app:app` (Skygate's app plus the test routes)."""

    def command(self) -> list[str]:
        app = "tests.core.serving.ws_app:app"
        return [str(VENV_BIN / "gunicorn"), "-c", "gunicorn.conf.py", app]


@contextmanager
def gunicorn(root: Path, database_url: str, **env: str) -> Iterator[RoutesGateway]:
    gateway = RoutesGateway(
        {
            "DATABASE_URL": database_url,
            "WEB_CONCURRENCY": "2",
            "PROMETHEUS_MULTIPROC_DIR": str(root / "prom"),
            **env,
        },
        root / "gunicorn.log",
    )
    try:
        gateway.start()
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoutesGateway]:
    # DEBUG: websockets' own trace (request line, headers, frames) would show the token.
    root = tmp_path_factory.mktemp("ws-gateway")
    url = f"sqlite+aiosqlite:///{root}/gateway.db"
    upgrade_head(url)
    with gunicorn(root, url, LOG_LEVEL="DEBUG") as gateway:
        yield gateway


def ws_url(gateway: GatewayProcess, path: str) -> str:
    return f"ws://127.0.0.1:{gateway.port}{path}"


def log_lines(gateway: GatewayProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in gateway.logs().splitlines() if line.startswith("{")]


async def wait_for_line(gateway: GatewayProcess, **fields: Any) -> dict[str, Any]:
    """The first log line with these fields, once the worker has written it."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        for line in log_lines(gateway):
            if all(line.get(key) == value for key, value in fields.items()):
                return line
        await asyncio.sleep(0.05)
    raise AssertionError(f"no log line with {fields}")


async def test_a_message_over_the_limit_closes_with_1009(gateway: RoutesGateway) -> None:
    limit = WebSocketLimits().max_message_bytes
    async with connect(ws_url(gateway, ECHO), proxy=None, max_size=None) as ws:
        assert ws.response is not None
        assert "sec-websocket-extensions" not in ws.response.headers, "deflate is off"
        await ws.send("x" * limit)
        assert await ws.recv() == str(limit), "exactly the limit passes"
        await ws.send("x" * (limit + 1))
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_a_token_in_the_query_string_never_reaches_the_log(
    gateway: RoutesGateway,
) -> None:
    # Also where a client may rightly put it, which only websockets' DEBUG trace would log.
    ticket = f"skygate.ticket.{TOKEN}"
    auth = json.dumps({"type": "auth", "token": TOKEN})
    url = ws_url(gateway, f"{ECHO}?token={TOKEN}")
    async with connect(url, proxy=None, subprotocols=[ticket]) as ws:  # type: ignore[list-item]
        await ws.send(auth)
        assert await ws.recv() == str(len(auth))
    with pytest.raises(InvalidStatus) as denied:
        async with connect(ws_url(gateway, f"{DENIED}?token={TOKEN}"), proxy=None):
            pass
    assert denied.value.response.status_code == 401
    await wait_for_line(gateway, event="websocket", route=ECHO, close_code=1000)
    await wait_for_line(gateway, event="websocket", route=DENIED, status=401)
    events = [str(line.get("event")) for line in log_lines(gateway)]
    assert any(e.endswith(f'"WebSocket {ECHO}" [accepted]') for e in events), "path only"
    assert any(e.endswith(f'"WebSocket {DENIED}" 401') for e in events)
    logs = gateway.logs()
    assert TOKEN not in logs
    assert "token=" not in logs


async def test_a_denied_upgrade_logs_no_handshake_error(gateway: RoutesGateway) -> None:
    with pytest.raises(InvalidStatus) as denied:
        async with connect(ws_url(gateway, DENIED), proxy=None):
            pass
    response = denied.value.response
    assert response.status_code == 401
    assert json.loads(response.body or b"")["error"]["code"] == "invalid_api_key"
    rid = response.headers["x-request-id"]
    await wait_for_line(gateway, event="websocket", request_id=rid)
    assert "without completing handshake" not in gateway.logs()
    errors = [
        line
        for line in log_lines(gateway)
        if line.get("level") == "error" and line.get("logger") == "uvicorn.error"
    ]
    assert errors == [], errors


def worker_connections(text: str) -> dict[str, float]:
    found = re.findall(r'^skygate_worker_connections\{pid="(\d+)"\} (\S+)$', text, re.M)
    return {pid: float(value) for pid, value in found}


async def held(gateway: GatewayProcess) -> dict[str, float]:
    """Each worker's published count; the scrape's own connection is one of them."""
    async with httpx.AsyncClient(trust_env=False) as client:
        response = await client.get(f"{gateway.base_url}/metrics", timeout=5)
    return worker_connections(response.text)


async def wait_held(gateway: GatewayProcess, total: int) -> dict[str, float]:
    deadline = time.monotonic() + WAIT_SECONDS
    counts = await held(gateway)
    while sum(counts.values()) != total or len(counts) != 2:
        if time.monotonic() > deadline:
            raise AssertionError(f"workers hold {counts}, expected {total} in all")
        await asyncio.sleep(0.05)
        counts = await held(gateway)
    return counts


async def test_closed_websockets_leave_the_connection_board(gateway: RoutesGateway) -> None:
    sockets = 10
    await wait_held(gateway, 1)  # only the scrape
    for _ in range(2):  # the second round would start from 11 with the leak
        opened = [await connect(ws_url(gateway, ECHO), proxy=None) for _ in range(sockets)]
        try:
            for ws in opened:
                await ws.send("hi")
                assert await ws.recv() == "2"
            await wait_held(gateway, sockets + 1)  # each socket counted once, and the scrape
        finally:
            for ws in opened:
                await ws.close()
        await wait_held(gateway, 1)  # back to the baseline: every count released


async def expect_stopping(ws: ClientConnection) -> tuple[float, int, str]:
    """When the endpoint said "stopping", and its close (code, reason)."""
    assert await ws.recv() == "stopping"
    at = time.monotonic()
    with pytest.raises(ConnectionClosed) as closed:
        await ws.recv()
    rcvd = closed.value.rcvd
    assert rcvd is not None
    return at, rcvd.code, rcvd.reason


async def test_sigterm_sets_stopping_when_the_drain_begins(tmp_path: Path, sqlite_url: str) -> None:
    drain = 3.0
    with gunicorn(tmp_path, sqlite_url, SHUTDOWN_DRAIN_SECONDS=str(drain)) as gateway:
        async with connect(ws_url(gateway, STOPPING), proxy=None) as ws:
            assert await ws.recv() == "waiting"
            sent = time.monotonic()
            gateway.signal(signal.SIGTERM)
            at, code, reason = await expect_stopping(ws)
        # uvicorn's own 1012 (no reason) would come after the drain plus a second.
        assert (code, reason) == (1012, STOPPING_REASON)
        assert at - sent < drain, f"stopping was set {at - sent:.2f} s after TERM"


class _QuietDrainingServer(DrainingServer):
    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the test runner owns SIGINT and SIGTERM


@asynccontextmanager
async def draining_server(
    sqlite_url: str,
) -> AsyncIterator[tuple[FastAPI, DrainingServer, str]]:
    """The worker's server in this loop (no gunicorn, no drain): a recycle's shutdown."""
    from main_enterprise import create_app

    app = create_app(make_settings(database_url=sqlite_url))
    add_websocket_routes(app)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((HOST, 0))
    sock.listen(16)
    config = uvicorn.Config(
        app,
        log_config=None,
        lifespan="on",
        http=SkygateHttpProtocol,
        **WebSocketLimits(ping_interval=0).server_options(),
    )
    server = _QuietDrainingServer(config, drain_seconds=0)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield app, server, f"ws://{HOST}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        try:
            await asyncio.wait_for(task, WAIT_SECONDS)
        finally:
            sock.close()


async def test_a_recycle_sets_stopping_before_uvicorn_closes_the_socket(sqlite_url: str) -> None:
    async with draining_server(sqlite_url) as (app, server, url):
        async with connect(url + STOPPING, proxy=None) as ws:
            assert await ws.recv() == "waiting"
            server.should_exit = True  # what `max_requests` does
            _, code, reason = await expect_stopping(ws)
        assert (code, reason) == (1012, STOPPING_REASON)
        lifecycle: Lifecycle = app.state.lifecycle
        assert lifecycle.closing and not lifecycle.draining
