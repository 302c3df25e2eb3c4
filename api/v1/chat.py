"""`POST /api/v1/chat/completions` and `POST /api/v1/embeddings`.

Bodies are parsed by `core.http.json_body` and validated by `core.gateway.schemas` (no
FastAPI body model), handed to `core.gateway.completions`, and the answer sent as JSON or as
server-sent events. A client that disconnects cancels the upstream call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from agents.chat import is_agent_model
from api import openapi
from api.deps import CallerDep, RequestAdmission
from core.auth.authenticator import Principal
from core.container import ServicesDep
from core.errors import GatewayError
from core.gateway.cache import CacheDirectives
from core.gateway.completions import Answer, StreamAnswer, Upstream
from core.gateway.ledger import MeteredStream
from core.http.json_body import parse_json_object
from core.limits.admission import Caller
from core.limits.rate_limit import Decision

router = APIRouter(tags=["llm"])
T = TypeVar("T")
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
CLIENT_CLOSED = 499


class ClientDisconnected(Exception):
    """The client went away before the answer was ready."""


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it if the client disconnects first (or if this
    request is itself cancelled). A cancelled call is waited for, so that its
    usage is settled now rather than whenever the loop next runs it."""
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(watch())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()
    await asyncio.wait({task})
    if not task.cancelled() and task.exception() is None:  # it finished as it was cancelled
        result = task.result()
        if isinstance(result, StreamAnswer):
            await result.events.aclose()
    raise ClientDisconnected


class _ClosingStreamingResponse(StreamingResponse):
    """Closes its events however the response ends. On a client disconnect
    starlette cancels the sending task and leaves the events' async generator
    suspended, to be finalised only when it is garbage collected; closing it
    here settles the call's usage at that moment (`core.gateway.ledger`)."""

    body_iterator: MeteredStream | AsyncGenerator[bytes, None]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()


def _directives(request: Request) -> CacheDirectives:
    return CacheDirectives.from_headers(
        request.headers.get("cache-control"), request.headers.get("x-cache-ttl")
    )


def _request_limit_headers(request: Request) -> dict[str, str]:
    """X-RateLimit-* and OpenAI's x-ratelimit-*-requests for this request's decision."""
    decision: Decision | None = getattr(request.state, "request_decision", None)
    if decision is None:
        return {}
    return {
        **request.state.limit_headers,
        "x-ratelimit-limit-requests": str(decision.limit),
        "x-ratelimit-remaining-requests": str(max(decision.remaining, 0)),
        "x-ratelimit-reset-requests": f"{max(decision.reset_at - time.time(), 0):.0f}s",
    }


def _respond(request: Request, answer: Answer | StreamAnswer) -> Response:
    headers = {**_request_limit_headers(request), **answer.headers}
    if isinstance(answer, StreamAnswer):
        return _ClosingStreamingResponse(
            answer.events, media_type="text/event-stream", headers={**SSE_HEADERS, **headers}
        )
    return Response(answer.body, media_type="application/json", headers=headers)


async def _answer(request: Request, outcome: Answer | StreamAnswer | Upstream) -> Response:
    """The answer; one that needs the provider is cancelled if the client goes away."""
    if isinstance(outcome, Upstream):
        try:
            outcome = await until_disconnect(request, outcome.call)
        except ClientDisconnected:
            return Response(status_code=CLIENT_CLOSED)
    return _respond(request, outcome)


Pipeline = Callable[
    [Caller, dict[str, Any], CacheDirectives, RequestAdmission],
    Awaitable[Answer | StreamAnswer | Upstream],
]


async def _serve(request: Request, principal: Principal, pipeline: Pipeline) -> Response:
    """Read the body and run the pipeline, which checks the request rate with its
    cache lookup; a request refused before that is still counted (and, over its
    limit, answered 429 rather than with the other refusal)."""
    admission = RequestAdmission(request, principal)
    try:
        body = parse_json_object(await request.body())
        caller = principal.caller(request.state.request_id)
        outcome = await pipeline(caller, body, _directives(request), admission)
    except GatewayError:
        await admission()
        raise
    return await _answer(request, outcome)


@router.post(
    "/api/v1/chat/completions",
    openapi_extra=openapi.CHAT_BODY,
    responses=openapi.CHAT_RESPONSES,
)
async def chat_completions(
    request: Request, services: ServicesDep, principal: CallerDep
) -> Response:
    chat = services.completions.chat

    async def pipeline(
        caller: Caller, body: dict[str, Any], directives: CacheDirectives, admit: RequestAdmission
    ) -> Answer | StreamAnswer | Upstream:
        if is_agent_model(body):  # `agent:<id>`: an agent run (agents.chat)
            upstream: Upstream = await request.app.state.agents.chat.complete(
                principal, body, admit
            )
            return upstream
        return await chat(caller, body, directives, admit)

    return await _serve(request, principal, pipeline)


@router.post(
    "/api/v1/embeddings",
    openapi_extra=openapi.EMBEDDINGS_BODY,
    responses=openapi.EMBEDDINGS_RESPONSES,
)
async def embeddings(request: Request, services: ServicesDep, principal: CallerDep) -> Response:
    return await _serve(request, principal, services.completions.embeddings)
