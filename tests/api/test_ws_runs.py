"""Runs over `/ws/agents` against a real provider (the fake upstream's scripts):
cancel in both modes, a client tool round trip, a slow reader closed with 1013, and a
run nobody follows any more cancelled after its grace."""

from __future__ import annotations

import asyncio
import json
import socket as socket_module
import textwrap
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.fake_upstream import FakeUpstream
from main_enterprise import create_app
from tests.support.app import make_settings
from tests.support.asgi_server import serve
from tests.support.llm import router_yaml

AGENTS = textwrap.dedent("""\
    agents:
      - id: worker
        name: Worker
        model: solo
        tools:
          - calculator
          - type: client
            name: lookup
            description: Looks something up on the client.
            parameters: {type: object, properties: {q: {type: string}}, required: [q]}
    """)
TEXT = ("x" * 1000 + " ") * 8000
Socket = Callable[..., AbstractAsyncContextManager[ClientConnection]]


@pytest.fixture
async def socket(
    upstream: FakeUpstream, sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Socket, httpx.AsyncClient]]:
    monkeypatch.setenv("FAKE_ANTHROPIC_KEY", "unused")
    (tmp_path / "router.yaml").write_text(router_yaml(upstream, timeout=30))
    (tmp_path / "agents.yaml").write_text(AGENTS)
    settings = make_settings(
        database_url=sqlite_url,
        router_config=str(tmp_path / "router.yaml"),
        agents_config=str(tmp_path / "agents.yaml"),
        enable_cache=False,
        ws_send_stall_seconds=1.0,
        ws_run_grace_seconds=0.5,
    )
    async with serve(create_app(settings)) as served:

        @asynccontextmanager
        async def open_socket(small: bool = False) -> AsyncIterator[ClientConnection]:
            """`small`: a client with tiny receive buffers (a slow reader's stand-in)."""
            options: dict[str, Any] = {"proxy": None, "max_size": None}
            if small:
                sock = socket_module.socket()
                sock.setsockopt(socket_module.SOL_SOCKET, socket_module.SO_RCVBUF, 4096)
                host, port = served.http_url.removeprefix("http://").split(":")
                sock.connect((host, int(port)))
                options.update(sock=sock, max_queue=1, compression=None)
            async with connect(served.ws_url + "/ws/agents", **options) as ws:
                assert json.loads(await ws.recv())["type"] == "session.created"
                yield ws

        async with httpx.AsyncClient(base_url=served.http_url) as client:
            yield open_socket, client


async def frames_until(
    ws: ClientConnection, done: Callable[[dict[str, Any]], bool]
) -> list[dict[str, Any]]:
    frames = []
    async with asyncio.timeout(30):
        while True:
            frame = json.loads(await ws.recv())
            frames.append(frame)
            if done(frame):
                return frames


def is_end(frame: dict[str, Any]) -> bool:
    return frame["type"] in ("run.completed", "run.incomplete", "run.failed", "run.cancelled")


async def create(ws: ClientConnection, text: str = "go") -> str:
    await ws.send(
        json.dumps({"type": "run.create", "id": "c", "agent_id": "worker", "input": text})
    )
    ack = (await frames_until(ws, lambda f: f["type"] in ("ack", "error")))[-1]
    assert ack["type"] == "ack", ack
    return str(ack["run_id"])


@pytest.mark.parametrize("mode", ["immediate", "after_turn"])
async def test_cancel_over_the_socket(
    socket: tuple[Socket, httpx.AsyncClient], upstream: FakeUpstream, mode: str
) -> None:
    open_socket, client = socket
    upstream.set_behaviour(
        "solo-1",
        "script",
        turns=[
            {
                "content": "a long answer " * 30,
                "tool_calls": [{"name": "calculator", "arguments": {"expression": "1+1"}}],
            }
        ],
        chunk_delay_ms=50,
    )
    async with open_socket() as ws:
        run_id = await create(ws)
        await frames_until(ws, lambda f: f["type"] == "run.status")
        await ws.send(json.dumps({"type": "run.cancel", "id": "x", "run_ref": "c", "mode": mode}))
        frames = await frames_until(ws, is_end)
    assert frames[-1]["type"] == "run.cancelled"
    run = (await client.get(f"/api/v1/runs/{run_id}")).json()
    assert (run["status"], run["stop_reason"]) == ("cancelled", "cancelled")
    assert not [f for f in frames if f["type"] == "tool_call.completed"]  # no tool ran


async def test_a_client_tool_round_trip(
    socket: tuple[Socket, httpx.AsyncClient], upstream: FakeUpstream
) -> None:
    open_socket, _ = socket
    upstream.set_behaviour(
        "solo-1",
        "script",
        turns=[
            {"tool_calls": [{"name": "lookup", "arguments": {"q": "tea"}}]},
            {"content": "done"},
        ],
    )
    async with open_socket() as ws:
        run_id = await create(ws)
        asked = (await frames_until(ws, lambda f: f["type"] == "tool_call.requires_action"))[-1]
        call_id = asked["tool_call"]["id"]
        await ws.send(
            json.dumps(
                {
                    "type": "tool.output",
                    "id": "t",
                    "run_id": run_id,
                    "tool_call_id": call_id,
                    "output": "green",
                }
            )
        )
        frames = await frames_until(ws, is_end)
    assert frames[-1]["type"] == "run.completed" and frames[-1]["run"]["output"] == "done"
    sent = upstream.last_request("solo-1")
    assert sent is not None
    assert {"role": "tool", "tool_call_id": call_id, "content": "green"} in sent["body"]["messages"]


async def test_a_reader_that_stops_reading_is_closed_with_1013_and_can_resume(
    socket: tuple[Socket, httpx.AsyncClient], upstream: FakeUpstream
) -> None:
    open_socket, client = socket
    # 8 MB of text: more than the socket buffers hold, even with the deltas merged
    upstream.set_behaviour("solo-1", "script", turns=[{"content": TEXT}])
    async with open_socket(small=True) as ws:
        run_id = await create(ws)
        # Read nothing for a while: the client's buffers fill, the server's send blocks
        # past WS_SEND_STALL_SECONDS (1 s here) and it closes; then read what got through.
        await asyncio.sleep(4)
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(30):
                while True:
                    await ws.recv()
        code = closed.value.rcvd.code if closed.value.rcvd else None
    assert code == 1013
    # the run went on; the client resumes from its cursor on a new socket
    async with open_socket() as ws:
        await ws.send(
            json.dumps({"type": "run.subscribe", "id": "s", "run_id": run_id, "after_seq": 0})
        )
        frames = await frames_until(ws, is_end)
    assert frames[-1]["type"] == "run.completed"
    deltas = "".join(f["delta"] for f in frames if f["type"] == "message.delta")
    assert deltas == TEXT


async def test_a_run_nobody_follows_is_cancelled_after_its_grace(
    socket: tuple[Socket, httpx.AsyncClient], upstream: FakeUpstream
) -> None:
    open_socket, client = socket
    upstream.set_behaviour(
        "solo-1", "script", turns=[{"content": "slow " * 100}], chunk_delay_ms=100
    )
    async with open_socket() as ws:
        run_id = await create(ws)
        await frames_until(ws, lambda f: f["type"] == "message.delta")
    async with asyncio.timeout(20):
        while (run := (await client.get(f"/api/v1/runs/{run_id}")).json())["status"] != "cancelled":
            await asyncio.sleep(0.1)
    assert run["stop_reason"] == "cancelled" and run["usage"]["llm_calls"] == 1


async def test_the_server_closes_an_oversized_message_with_1009(
    socket: tuple[Socket, httpx.AsyncClient],
) -> None:
    open_socket, _ = socket
    async with open_socket() as ws:
        await ws.send(json.dumps({"type": "ping", "id": "p", "pad": "x" * (1 << 20)}))
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(10):
                while True:
                    await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
