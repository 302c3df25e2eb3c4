"""`/ws/agents` over a real server with the `websockets` client: each way in, each
refusal, and a run streamed to its end on the demo model."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

from main_enterprise import create_app
from tests.support.app import make_settings
from tests.support.asgi_server import serve
from tests.support.auth import ADMIN, bearer, create_key

PROTOCOL = Subprotocol("skygate.agents.v1")


@dataclass
class Gateway:
    ws: str
    http: httpx.AsyncClient
    key: str


@pytest.fixture
async def gateway(sqlite_url: str) -> AsyncIterator[Gateway]:
    app = create_app(make_settings(database_url=sqlite_url, admin_api_key=ADMIN))
    async with serve(app) as served, httpx.AsyncClient(base_url=served.http_url) as client:
        key = (await create_key(client, tenant="team-a"))["key"]
        yield Gateway(served.ws_url + "/ws/agents", client, key)


async def receive(ws: ClientConnection) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await ws.recv(decode=True))
    return frame


async def until(ws: ClientConnection, kind: str) -> list[dict[str, Any]]:
    """Frames up to and including the first of type `kind` (heartbeats skipped)."""
    frames = []
    while True:
        frame = await receive(ws)
        if frame["type"] != "heartbeat":
            frames.append(frame)
        if frame["type"] == kind:
            return frames


async def closed_with(ws: ClientConnection) -> int | None:
    try:
        while True:
            await ws.recv()
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None


async def test_a_server_streams_a_run_over_a_bearer_authenticated_socket(
    gateway: Gateway,
) -> None:
    async with connect(
        gateway.ws, additional_headers=bearer(gateway.key), subprotocols=[PROTOCOL], proxy=None
    ) as ws:
        assert ws.subprotocol == PROTOCOL
        session = await receive(ws)
        assert session["type"] == "session.created" and session["protocol"] == PROTOCOL
        await ws.send(
            json.dumps(
                {
                    "type": "run.create",
                    "id": "c1",
                    "agent_id": "calculator",
                    "input": "what is 6*7?",
                }
            )
        )
        frames = await until(ws, "run.completed")
    acks = [f for f in frames if f["type"] == "ack"]
    assert acks and acks[0]["id"] == "c1"
    events = [f for f in frames if "seq" in f]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))  # no gap, no repeat
    assert events[-1]["run"]["output"] == "The result is 42."
    assert {"tool_call.created", "tool_call.completed", "message.delta"} <= {
        e["type"] for e in events
    }


async def test_a_browser_ticket_works_once(gateway: Gateway) -> None:
    made = await gateway.http.post("/api/v1/ws/tickets", headers=bearer(gateway.key))
    assert made.status_code == 201, made.text
    offered = [Subprotocol(name) for name in made.json()["subprotocols"]]
    async with connect(gateway.ws, subprotocols=offered, proxy=None) as ws:
        assert ws.subprotocol == PROTOCOL  # only the protocol is echoed, never the ticket
        assert (await receive(ws))["tenant"] == "team-a"
    with pytest.raises(InvalidStatus) as refused:
        async with connect(gateway.ws, subprotocols=offered, proxy=None):
            pass
    assert refused.value.response.status_code == 401


async def test_the_first_message_may_authenticate(gateway: Gateway) -> None:
    async with connect(gateway.ws, proxy=None) as ws:
        await ws.send(json.dumps({"type": "auth", "id": "a", "token": gateway.key}))
        assert (await receive(ws)) == {"type": "ack", "id": "a"}
        assert (await receive(ws))["type"] == "session.created"
        await ws.send(json.dumps({"type": "ping", "id": "p"}))
        assert (await until(ws, "pong"))[-1]["id"] == "p"
    async with connect(gateway.ws, proxy=None) as ws:
        await ws.send(json.dumps({"type": "auth", "id": "a", "token": "sk-wrong"}))
        assert await closed_with(ws) == 4401


@pytest.mark.parametrize("query", ["?token=abc", "?api_key=sk-x", "?Ticket=tkt_x"])
async def test_a_credential_in_the_query_string_is_refused(gateway: Gateway, query: str) -> None:
    async with connect(
        gateway.ws + query, additional_headers=bearer(gateway.key), proxy=None
    ) as ws:
        assert await closed_with(ws) == 4401


async def test_bad_credentials_on_the_upgrade_are_an_http_401(gateway: Gateway) -> None:
    for headers in (bearer("sk-nope"), bearer("not a key")):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(gateway.ws, additional_headers=headers, proxy=None):
                pass
        assert refused.value.response.status_code == 401
        assert json.loads(refused.value.response.body)["error"]["code"]


async def test_protocol_mistakes(gateway: Gateway) -> None:
    headers = bearer(gateway.key)
    async with connect(
        gateway.ws, additional_headers=headers, subprotocols=[Subprotocol("other.v9")], proxy=None
    ) as ws:
        assert await closed_with(ws) == 4400
    for bad in (b"\x00\x01", "not json", "[1, 2]", '{"id": "x"}'):
        async with connect(gateway.ws, additional_headers=headers, proxy=None) as ws:
            await receive(ws)
            await ws.send(bad)
            assert await closed_with(ws) == 4400
    async with connect(gateway.ws, additional_headers=headers, proxy=None) as ws:
        await receive(ws)
        await ws.send(json.dumps({"type": "run.subscribe", "id": "s", "run_id": "run_nope"}))
        error = (await until(ws, "error"))[-1]
        assert (error["id"], error["status"], error["retryable"]) == ("s", 4404, False)
        await ws.send(json.dumps({"type": "teleport", "id": "t"}))
        assert (await until(ws, "error"))[-1]["code"] == "unknown_type"
        await ws.send(
            json.dumps({"type": "run.create", "id": "c", "agent_id": "nope", "input": "hi"})
        )
        assert (await until(ws, "error"))[-1]["status"] == 4404


async def test_a_flood_is_closed_with_1008(gateway: Gateway) -> None:
    async with connect(gateway.ws, additional_headers=bearer(gateway.key), proxy=None) as ws:
        await receive(ws)
        for n in range(200):
            try:
                await ws.send(json.dumps({"type": "ping", "id": str(n)}))
            except ConnectionClosed:
                break
        assert await closed_with(ws) == 1008


async def test_a_revoked_key_closes_the_session_at_its_next_run(gateway: Gateway) -> None:
    made = await create_key(gateway.http, tenant="team-b")
    async with connect(gateway.ws, additional_headers=bearer(made["key"]), proxy=None) as ws:
        await receive(ws)
        revoked = await gateway.http.delete(f"/api/v1/keys/{made['id']}", headers=bearer(ADMIN))
        assert revoked.status_code in (200, 204), revoked.text
        await ws.send(
            json.dumps({"type": "run.create", "id": "c", "agent_id": "calculator", "input": "1+1"})
        )
        assert await closed_with(ws) == 1008


async def test_a_client_resumes_a_run_from_its_cursor(gateway: Gateway) -> None:
    headers = bearer(gateway.key)
    async with connect(gateway.ws, additional_headers=headers, proxy=None) as ws:
        await receive(ws)
        await ws.send(
            json.dumps(
                {"type": "run.create", "id": "c", "agent_id": "calculator", "input": "what is 2^8?"}
            )
        )
        frames = await until(ws, "run.completed")
    events = [f for f in frames if "seq" in f]
    run_id, cursor = events[0]["run_id"], events[2]["seq"]
    async with connect(gateway.ws, additional_headers=headers, proxy=None) as ws:
        await receive(ws)
        await ws.send(
            json.dumps({"type": "run.subscribe", "id": "s", "run_id": run_id, "after_seq": cursor})
        )
        resumed = [f for f in await until(ws, "run.completed") if "seq" in f]
    assert [e["seq"] for e in resumed] == [e["seq"] for e in events if e["seq"] > cursor]


async def test_a_browser_origin_outside_the_cors_rules_is_refused_before_the_upgrade(
    gateway: Gateway,
) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(
            gateway.ws,
            origin="https://evil.example",  # type: ignore[arg-type]
            additional_headers=bearer(gateway.key),
            proxy=None,
        ):
            pass
    assert refused.value.response.status_code == 403
    assert json.loads(refused.value.response.body)["error"]["code"] == "cors_rejected"


async def test_the_tenant_run_quota_refuses_a_run_without_closing(sqlite_url: str) -> None:
    settings = make_settings(database_url=sqlite_url, admin_api_key=ADMIN, ws_max_runs_per_tenant=1)
    async with (
        serve(create_app(settings)) as served,
        httpx.AsyncClient(base_url=served.http_url) as client,
    ):
        key = (await create_key(client, tenant="team-q"))["key"]
        async with connect(
            served.ws_url + "/ws/agents", additional_headers=bearer(key), proxy=None
        ) as ws:
            await receive(ws)
            # a client tool keeps the first run going (requires_action) while the second asks
            made = await client.post(
                "/api/v1/agents",
                headers=bearer(ADMIN),
                json={
                    "id": "waiter",
                    "name": "Waiter",
                    "model": "demo",
                    "tenant": "team-q",
                    "tools": [
                        {
                            "type": "client",
                            "name": "calculator",
                            "description": "computed by the client",
                            "parameters": {"type": "object", "properties": {}},
                        }
                    ],
                },
            )
            assert made.status_code == 201, made.text
            for ref in ("one", "two"):
                await ws.send(
                    json.dumps(
                        {
                            "type": "run.create",
                            "id": ref,
                            "agent_id": "waiter",
                            "input": "what is 1+1?",
                        }
                    )
                )
                if ref == "one":
                    await until(ws, "tool_call.requires_action")
            refused = (await until(ws, "error"))[-1]
            assert (refused["id"], refused["status"], refused["code"]) == ("two", 4429, "run_quota")
            await ws.send(json.dumps({"type": "ping", "id": "still-open"}))
            assert (await until(ws, "pong"))[-1]["id"] == "still-open"
