"""Helpers of the agents tests (tests/agents): building tools from their specs, the
agents API in-process (`ApiGateway`), and the app served over real HTTP with its
server-sent events (`ServedGateway`, `Sse`). The fixtures that build the gateways are
in the conftest.py of tests/agents/api and tests/agents/transports.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from agents.tools import (
    Tool,
    ToolContext,
    ToolSettings,
    ToolSpec,
    build_tools,
    canonical_arguments,
    validate_arguments,
)
from bench.fake_upstream import FakeUpstream
from core.yaml_models import StrictModel
from database.models import UsageRecord
from tests.support.app import services, settle
from tests.support.auth import ADMIN, bearer
from tests.support.echo_server import EchoServer
from tests.worker.fleet import until

MODEL = "primary-1"  # the fake upstream's model behind the `primary` group
FINISHED = frozenset({"completed", "incomplete", "failed", "cancelled"})


# -- tools ---------------------------------------------------------------------------
class Agent(StrictModel):
    """How an agent model holds its tools (the lead's has more fields)."""

    tools: tuple[ToolSpec, ...] = ()


def tools_of(*specs: Any, settings: ToolSettings | None = None) -> list[Tool]:
    agent = Agent.model_validate({"tools": list(specs)})
    return build_tools(agent.tools, settings=settings or ToolSettings())


def fetcher(*hosts: str, **options: Any) -> Tool:
    (tool,) = tools_of({"builtin": "http_fetch", "allowed_hosts": list(hosts), **options})
    return tool


async def call(tool: Tool, ctx: ToolContext, **arguments: Any) -> str:
    checked = validate_arguments(tool, canonical_arguments(arguments))
    return await tool.run(checked, ctx)


# -- the agents API, in-process --------------------------------------------------------
AGENTS = "/api/v1/agents"
ADMIN_HEADERS = bearer(ADMIN)
TOKEN_ENV = "SKYGATE_TEST_CRM_TOKEN"
TOKEN = "crm-token-5f1c9e"  # the declared tool's secret, from the environment
LITERAL = "literal-team-value-77a1"  # a literal header value: shown as *** everywhere
SUMMARY_KEYS = {"id", "object", "name", "description", "status", "model", "tools", "version"}
CONFIRM = {"tool_calls": [{"name": "confirm", "arguments": {"question": "Proceed?"}}]}


@dataclass
class ApiGateway:
    app: FastAPI
    client: httpx.AsyncClient
    upstream: FakeUpstream
    echo: EchoServer
    a: dict[str, str]  # a key of tenant team-a
    b: dict[str, str]  # a key of tenant team-b

    async def run(self, agent: str, key: dict[str, str], **body: Any) -> httpx.Response:
        return await self.client.post(f"{AGENTS}/{agent}/runs", json=body, headers=key)

    async def finished(self, run_id: str, key: dict[str, str]) -> dict[str, Any]:
        """Poll the run until it has ended (a deadline, never a fixed sleep)."""
        deadline = time.monotonic() + 15
        while True:
            run: dict[str, Any] = (
                await self.client.get(f"/api/v1/runs/{run_id}", headers=key)
            ).json()
            if run["status"] in FINISHED or time.monotonic() > deadline:
                return run
            await asyncio.sleep(0.05)

    def sent(self) -> list[dict[str, Any]]:
        """The messages of the model's last request."""
        last = self.upstream.last_request(MODEL)
        assert last is not None
        messages: list[dict[str, Any]] = last["body"]["messages"]
        return messages


def assert_error(
    response: httpx.Response,
    status: int | None = None,
    *,
    code: str | None = None,
    param: str | None = None,
) -> dict[str, Any]:
    """A 4xx (exactly `status` when given) in OpenAI's error shape."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:500])
    if status is not None:
        assert response.status_code == status, response.text[:500]
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code, error
    if param is not None:
        assert error["param"] == param, error
    return error


async def usage_rows(app: FastAPI, run_id: str) -> list[UsageRecord]:
    await settle(app)
    query = select(UsageRecord).where(UsageRecord.run_id == run_id)
    async with services(app).sessions() as session:
        return list((await session.execute(query)).scalars())


def agent_body(agent_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": agent_id, "name": agent_id.title(), "model": "primary", **fields}


# -- the app served over real HTTP -------------------------------------------------------
TWO_TOOL_TURNS = [
    {"tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}]},
    {"tool_calls": [{"name": "calculator", "arguments": {"expression": "42+1"}}]},
    {"content": "Six times seven is 42, and one more is 43."},
]
# A turn of 40 words streamed one piece every 100 ms: several seconds of a provider
# call in flight, for a cancel or a disconnect to land in.
SLOW_WORDS = " ".join(f"word{i}" for i in range(40))


@dataclass
class ServedGateway:
    app: FastAPI
    http: httpx.AsyncClient  # a real client on the real server, authenticated
    url: str
    key: str
    upstream: FakeUpstream

    async def run(self, agent: str, **body: Any) -> httpx.Response:
        return await self.http.post(f"/api/v1/agents/{agent}/runs", json=body)

    async def get_run(self, run_id: str) -> dict[str, Any]:
        response = await self.http.get(f"/api/v1/runs/{run_id}")
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found

    async def finished(self, run_id: str, within: float = 20) -> dict[str, Any]:
        async def done() -> dict[str, Any] | None:
            run = await self.get_run(run_id)
            return run if run["status"] in FINISHED else None

        return await until(done, within, what=f"run {run_id} to finish")

    async def usage_rows(self, run_id: str) -> list[UsageRecord]:
        await settle(self.app)
        query = select(UsageRecord).where(UsageRecord.run_id == run_id)
        async with services(self.app).sessions() as session:
            rows = list((await session.execute(query)).scalars())
        return sorted(rows, key=lambda row: (row.turn or 0, row.created_at))

    async def upstream_reaches(self, **counts: int) -> None:
        """Until the fake upstream's counters (`in_flight`, `cancelled`) read `counts`."""

        async def reached() -> bool:
            return all(getattr(self.upstream, name) == n for name, n in counts.items())

        await until(reached, what=f"the upstream to show {counts}")


@dataclass(frozen=True)
class Sse:
    id: int | None
    event: str
    data: dict[str, Any]
    at: float  # when it arrived (monotonic)


async def sse_events(response: httpx.Response) -> AsyncIterator[Sse]:
    """The response's events, each as soon as its blank line arrives."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line.startswith(":"):
            continue  # a keep-alive comment
        if line:
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
            continue
        if "data" in fields:
            raw_id = fields.get("id")
            yield Sse(
                int(raw_id) if raw_id is not None else None,
                fields.get("event", "message"),
                json.loads(fields["data"]),
                time.monotonic(),
            )
        fields = {}


async def collect(response: httpx.Response) -> list[Sse]:
    return [event async for event in sse_events(response)]


def assert_numbered(events: list[Sse]) -> None:
    """`id:` is the event's seq, counting from 1 with no gap and no repeat."""
    assert [e.id for e in events] == list(range(1, len(events) + 1))
    assert all(e.data["seq"] == e.id and e.data["type"] == e.event for e in events)


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) <= {"error", "request_id"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    error: dict[str, Any] = body["error"]
    return error
