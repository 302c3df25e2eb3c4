"""Agents and their runs: list and read agents (admins create, edit and delete them),
start a run (finished, streamed as server-sent events, or in the background), read
it, follow its events, cancel it, answer its client tools, and read threads.

Everything is tenant-scoped: another tenant's agent, run or thread is a 404. The
run engine and its transport-agnostic events are in `agents/`; this module only
carries them over HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.types import Receive, Scope, Send

from agents.definitions import AgentSpec
from agents.events import RunEvent as EngineEvent
from agents.registry import SHARED
from agents.run_views import Mode, RunRequest, run_object
from agents.runtime import Agents
from api import openapi
from api.deps import AdminDep, PrincipalDep
from api.v1.agent_models import (
    AgentCreate,
    AgentDeleted,
    AgentDetail,
    AgentList,
    AgentPatch,
    RunCreate,
    RunEvent,
    RunObject,
    ThreadMessages,
)
from api.v1.chat import CLIENT_CLOSED, ClientDisconnected, until_disconnect
from api.v1.jobs import SSE_HEADERS, EventStream
from core.auth.authenticator import Principal
from core.errors import BadRequestError, ConflictError, NotFoundError, ValidationFailedError
from core.http.json_body import parse_json_object

router = APIRouter(tags=["agents"])
CancelMode = Literal["immediate", "after_turn"]


def get_agents(request: Request) -> Agents:
    agents: Agents = request.app.state.agents
    return agents


AgentsDep = Annotated[Agents, Depends(get_agents)]


# -- agents ------------------------------------------------------------------------
@router.get("/api/v1/agents", responses=openapi.ok(AgentList))
async def list_agents(agents: AgentsDep, principal: PrincipalDep) -> dict[str, Any]:
    visible = await agents.registry.visible(principal.tenant)
    return {"object": "list", "data": [agent.summary() for agent in visible]}


@router.get("/api/v1/agents/{agent_id}", responses=openapi.ok(AgentDetail, 404))
async def get_agent(agent_id: str, agents: AgentsDep, principal: PrincipalDep) -> dict[str, Any]:
    agent = await agents.registry.get(principal.tenant, agent_id)
    if agent is None:
        raise _no_agent(agent_id)
    return agent.detail()


def _no_agent(agent_id: str) -> NotFoundError:
    return NotFoundError(
        f"The agent '{agent_id}' does not exist or you do not have access to it.",
        param="agent_id",
        code="agent_not_found",
    )


def _spec(data: dict[str, Any]) -> AgentSpec:
    try:
        return AgentSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise ValidationFailedError(f"{where}: {first['msg']}", param=where) from None


def _owner(tenant: str | None) -> str:
    return SHARED if tenant is None else tenant


@router.post(
    "/api/v1/agents",
    status_code=201,
    responses=openapi.ok(AgentDetail, 400, 403, 409, status=201),
    openapi_extra=openapi.json_body(AgentCreate, "An agent; `tenant` absent: every tenant's."),
)
async def create_agent(request: Request, agents: AgentsDep, principal: AdminDep) -> dict[str, Any]:
    """Admin: a tenant's agent (`tenant`), or one shared by every tenant (no `tenant`)."""
    body = parse_json_object(await request.body())
    tenant = body.pop("tenant", None)
    if tenant is not None and (not isinstance(tenant, str) or not tenant or tenant == SHARED):
        raise BadRequestError(
            "tenant must be a tenant name, or absent for a shared agent.", param="tenant"
        )
    spec = _spec(body)
    _check_model(agents, spec)
    row = await agents.registry.repository.save(
        _owner(tenant), spec.id, spec.definition(), replace=False
    )
    if row is None:
        raise ConflictError(
            f"The agent '{spec.id}' exists; PATCH it to change it.", code="agent_exists"
        )
    agent = await agents.registry.get(_owner(tenant), spec.id)
    assert agent is not None
    return agent.detail()


@router.patch(
    "/api/v1/agents/{agent_id}",
    responses=openapi.ok(AgentDetail, 400, 403, 404, 409),
    openapi_extra=openapi.json_body(AgentPatch, "The fields to change; a new version."),
)
async def update_agent(
    agent_id: str,
    request: Request,
    agents: AgentsDep,
    principal: AdminDep,
    tenant: Annotated[str | None, Query(max_length=128)] = None,
) -> dict[str, Any]:
    """Admin: the next version of an agent, from the fields given."""
    owner = _owner(tenant)
    current = await agents.registry.repository.get(owner, agent_id)
    if current is None:
        raise _no_agent(agent_id)
    changes = parse_json_object(await request.body())
    if changes.get("id", agent_id) != agent_id:
        raise BadRequestError("An agent's id cannot change.", param="id")
    spec = _spec({**current.definition, **changes})
    _check_model(agents, spec)
    row = await agents.registry.repository.save(owner, agent_id, spec.definition(), replace=True)
    if row is None:
        raise ConflictError("The agent changed meanwhile; try again.", code="agent_changed")
    agent = await agents.registry.get(owner, agent_id)
    assert agent is not None
    return agent.detail()


@router.delete("/api/v1/agents/{agent_id}", responses=openapi.ok(AgentDeleted, 403, 404))
async def delete_agent(
    agent_id: str,
    agents: AgentsDep,
    principal: AdminDep,
    tenant: Annotated[str | None, Query(max_length=128)] = None,
) -> dict[str, Any]:
    if not await agents.registry.repository.retire(_owner(tenant), agent_id):
        raise _no_agent(agent_id)
    return {"id": agent_id, "object": "agent.deleted", "deleted": True}


def _check_model(agents: AgentsDep, spec: AgentSpec) -> None:
    router_ = agents.runs.engine.completions.router
    if router_.resolve(spec.model) is None:
        raise BadRequestError(
            f"The model '{spec.model}' is not a model group or alias of this gateway.",
            param="model",
            code="model_not_found",
        )


# -- runs ----------------------------------------------------------------------------
class _RunStream(EventStream):
    """A run's events; `on_close` runs however the response ends (a client gone)."""

    def __init__(self, content: Any, on_close: Any = None) -> None:
        super().__init__(content, headers=SSE_HEADERS)
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with contextlib.suppress(Exception):
                await self.body_iterator.aclose()  # type: ignore[attr-defined]
            if self.on_close is not None:
                await self.on_close()


_STREAM_FAILED = (
    b"event: error\ndata: "
    + orjson.dumps(
        {
            "error": {
                "message": "The event stream failed; resume with Last-Event-ID.",
                "type": "server_error",
                "param": None,
                "code": "events_unavailable",
            }
        }
    )
    + b"\n\n"
)


def _sse(event: EngineEvent) -> bytes:
    return (
        f"id: {event.seq}\nevent: {event.type}\n".encode()
        + b"data: "
        + orjson.dumps(event.payload())
        + b"\n\n"
    )


def _event_stream(agents: Agents, run_id: str, after: int, heartbeat: float) -> Any:
    async def pump(queue: asyncio.Queue[EngineEvent | None]) -> None:
        try:
            async for event in agents.runs.events(run_id, after):
                await queue.put(event)
        finally:
            await queue.put(None)

    async def body() -> Any:
        queue: asyncio.Queue[EngineEvent | None] = asyncio.Queue(maxsize=256)
        task = asyncio.create_task(pump(queue))
        try:
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), heartbeat)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                if event is None:
                    if task.done() and task.exception() is not None:
                        yield _STREAM_FAILED
                    return
                yield _sse(event)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    return body()


@router.post(
    "/api/v1/agents/{agent_id}/runs",
    responses={
        200: {
            "model": RunObject,
            "description": "The finished run (or paused in requires_action); with "
            "`stream: true`, its events as server-sent events (`id` = seq, `event` = type).",
            "content": openapi.stream(
                RunEvent, last="run.completed, run.incomplete, run.failed or run.cancelled"
            ),
        },
        202: {"model": RunObject, "description": "A background run, queued."},
        **openapi.errors(400, 403, 404, 409, 429),
    },
    openapi_extra=openapi.json_body(RunCreate, "The run: input, and how to run it."),
)
async def create_run(
    agent_id: str, request: Request, agents: AgentsDep, principal: PrincipalDep
) -> Response:
    try:
        run_request = RunRequest.model_validate(parse_json_object(await request.body()))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise ValidationFailedError(f"{where}: {first['msg']}", param=where) from None
    if run_request.background and run_request.stream:
        raise BadRequestError(
            "A run is either streamed or in the background, not both.", param="stream"
        )
    mode: Mode = (
        "background" if run_request.background else "stream" if run_request.stream else "sync"
    )
    service = agents.runs
    row, new = await service.create(principal, agent_id, run_request, mode)
    headers = {"Location": f"/api/v1/runs/{row.id}", "x-skygate-run-id": row.id}
    if new and mode != "background":
        service.start(row, _fixed(principal))
    if mode == "background" or row.mode == "background":
        return _json(run_object(row), 202 if new else 200, headers)
    settings = request.app.state.settings
    if mode == "stream":

        async def leave() -> None:
            await _cancel_if_interactive(agents, row.id)

        return _RunStream(
            _event_stream(agents, row.id, 0, settings.stream_heartbeat_seconds),
            on_close=leave if new else None,
        )
    try:
        await until_disconnect(request, service.wait_settled(row.id))
    except ClientDisconnected:
        if new:
            await _cancel_if_interactive(agents, row.id)
        return Response(status_code=CLIENT_CLOSED)
    return _json(run_object(await service.get(principal.tenant, row.id)), 200, headers)


def _fixed(principal: Principal) -> Any:
    async def source() -> Principal:
        return principal

    return source


async def _cancel_if_interactive(agents: Agents, run_id: str) -> None:
    """The client of an interactive run left: the run stops (its usage is recorded)."""
    control = agents.live.controls.get(run_id)
    if control is not None:
        control.cancel("immediate")


def _json(body: Any, status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body), status_code=status, media_type="application/json", headers=headers
    )


@router.get("/api/v1/runs/{run_id}", responses=openapi.ok(RunObject, 404))
async def get_run(run_id: str, agents: AgentsDep, principal: PrincipalDep) -> Response:
    return _json(run_object(await agents.runs.get(principal.tenant, run_id)), 200)


@router.get(
    "/api/v1/runs/{run_id}/events",
    response_class=EventStream,
    responses={
        200: {
            "description": "Server-sent events: the run's events after `after` (or "
            "Last-Event-ID), then live ones, ending after its terminal event; "
            "`: keep-alive` comments in between.",
            "content": openapi.stream(RunEvent, last="the run's terminal event"),
        },
        **openapi.errors(404),
    },
)
async def run_events(
    run_id: str,
    request: Request,
    agents: AgentsDep,
    principal: PrincipalDep,
    after: Annotated[int | None, Query(ge=0)] = None,
    last_event_id: Annotated[str | None, Header(max_length=32)] = None,
) -> EventStream:
    await agents.runs.get(principal.tenant, run_id)  # a 404 now, not inside the stream
    start = after or 0
    if last_event_id and last_event_id.isdigit():
        start = max(start, int(last_event_id))
    heartbeat = request.app.state.settings.stream_heartbeat_seconds
    return _RunStream(_event_stream(agents, run_id, start, heartbeat))


class CancelBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: CancelMode = "immediate"


class CancelByKey(CancelBody):
    idempotency_key: str = Field(min_length=1, max_length=256)


@router.post("/api/v1/runs/{run_id}/cancel", responses=openapi.ok(RunObject, 404))
async def cancel_run(
    run_id: str, agents: AgentsDep, principal: PrincipalDep, body: CancelBody | None = None
) -> Response:
    mode = body.mode if body is not None else "immediate"
    row = await agents.runs.cancel(principal.tenant, run_id=run_id, idempotency_key=None, mode=mode)
    return _json(run_object(row), 200)


@router.post("/api/v1/runs/cancel", responses=openapi.ok(RunObject, 404))
async def cancel_run_by_key(
    body: CancelByKey, agents: AgentsDep, principal: PrincipalDep
) -> Response:
    """Cancel the run started with this `idempotency_key` (before its id is known)."""
    row = await agents.runs.cancel(
        principal.tenant, run_id=None, idempotency_key=body.idempotency_key, mode=body.mode
    )
    return _json(run_object(row), 200)


class ToolOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tool_call_id: str = Field(min_length=1, max_length=128)
    output: str = Field(max_length=64_000)  # 16 of them fit any body limit, escaped


class ToolOutputs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tool_outputs: list[ToolOutput] = Field(min_length=1, max_length=16)


@router.post("/api/v1/runs/{run_id}/tool_outputs", responses=openapi.ok(RunObject, 404, 409))
async def submit_tool_outputs(
    run_id: str, body: ToolOutputs, agents: AgentsDep, principal: PrincipalDep
) -> Response:
    outputs = {item.tool_call_id: item.output for item in body.tool_outputs}
    row = await agents.runs.submit_tool_outputs(principal.tenant, run_id, outputs)
    return _json(run_object(row), 200)


@router.get("/api/v1/threads/{thread_id}/messages", responses=openapi.ok(ThreadMessages, 404))
async def thread_messages(thread_id: str, agents: AgentsDep, principal: PrincipalDep) -> Response:
    messages = await agents.runs.thread_messages(principal.tenant, thread_id)
    return _json({"object": "list", "thread_id": thread_id, "data": messages}, 200)
