"""`model: "agent:<id>"` on `/api/v1/chat/completions`: an agent run for clients that
only speak chat completions (the OpenAI SDKs, unchanged).

The request's `messages` are the run's input; the answer is a `chat.completion` (or
its chunks, streamed as the run's final text arrives) whose content is the run's
output and whose usage is the run's, summed over its model calls. The run is an
interactive one: it stops when the client leaves. The agent's own tools, limits and
model apply; a request that brings `tools` of its own is refused rather than
silently ignored. The run's id is in the `x-skygate-run-id` header.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import orjson
from pydantic import ValidationError

from agents.run_views import RunRequest, run_object
from agents.runs import RunService
from core.auth.authenticator import Principal
from core.errors import (
    BadRequestError,
    GatewayError,
    ValidationFailedError,
    error_for_status,
    note_answered,
)
from core.gateway.completions import Answer, StreamAnswer, Upstream
from core.gateway.streams import DONE, sse, sse_error

PREFIX = "agent:"
REFUSED = ("tools", "tool_choice", "functions", "function_call", "n")


def is_agent_model(body: dict[str, Any]) -> bool:
    model = body.get("model")
    return isinstance(model, str) and model.startswith(PREFIX)


def run_failure(error: dict[str, Any] | None) -> GatewayError:
    """The error a failed run answers with, whole or as a stream's last event: the
    status and code its failure recorded, so both count under the same fault."""
    error = error or {}
    failure = error_for_status(
        int(error.get("status") or 502), str(error.get("message") or "The agent run failed.")
    )
    failure.code = str(error.get("code") or "run_failed")
    return failure


class AgentChat:
    def __init__(self, runs: RunService) -> None:
        self.runs = runs

    async def complete(
        self, principal: Principal, body: dict[str, Any], admit: Callable[[], Awaitable[None]]
    ) -> Upstream:
        await admit()  # the request itself counts, as any chat request does
        agent_id = str(body["model"])[len(PREFIX) :]
        for name in REFUSED:
            if body.get(name) not in (None, 1) or (name != "n" and name in body):
                raise BadRequestError(
                    f"'{name}' is not supported with an agent model: the agent brings its "
                    "own tools and answers once.",
                    param=name,
                    code="unsupported_parameter",
                )
        messages = body.get("messages")
        try:
            request = RunRequest.model_validate(
                {"input": messages if isinstance(messages, list) else messages or ""}
            )
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in ("messages", *first["loc"][1:])) or "messages"
            raise ValidationFailedError(f"{where}: {first['msg']}", param="messages") from None
        row, _ = await self.runs.create(principal, agent_id, request, "chat")

        async def source() -> Principal:
            return principal

        task = self.runs.start(row, source)
        model = str(body["model"])
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        headers = {"x-skygate-run-id": row.id, "x-skygate-agent": agent_id}
        if body.get("stream") is True:
            return Upstream(self._opened(row.id, task, model, include_usage, headers))
        return Upstream(self._answer(row.id, task, model, headers))

    def _stop(self, run_id: str) -> None:
        control = self.runs.live.controls.get(run_id)
        if control is not None:
            control.cancel("immediate")

    async def _answer(
        self, run_id: str, task: asyncio.Task[Any], model: str, headers: dict[str, str]
    ) -> Answer:
        try:
            finished = await asyncio.shield(task)
        except asyncio.CancelledError:  # the client left: the run stops, its usage stays
            self._stop(run_id)
            raise
        data = run_object(finished)
        if finished.status == "failed":
            raise run_failure(finished.error)
        usage = data["usage"]
        body = {
            "id": f"chatcmpl-{run_id}",
            "object": "chat.completion",
            "created": data["created_at"] or int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": finished.output or "",
                        "refusal": None,
                    },
                    "logprobs": None,
                    "finish_reason": "stop" if finished.status == "completed" else "length",
                }
            ],
            "usage": {
                "prompt_tokens": usage["prompt_tokens"],
                "completion_tokens": usage["completion_tokens"],
                "total_tokens": usage["total_tokens"],
            },
        }
        return Answer(orjson.dumps(body), headers)

    async def _opened(
        self,
        run_id: str,
        task: asyncio.Task[Any],
        model: str,
        include_usage: bool,
        headers: dict[str, str],
    ) -> StreamAnswer:
        return StreamAnswer(self._chunks(run_id, task, model, include_usage), headers)

    async def _chunks(
        self, run_id: str, task: asyncio.Task[Any], model: str, include_usage: bool
    ) -> AsyncGenerator[bytes, None]:
        base = {
            "id": f"chatcmpl-{run_id}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            return sse(orjson.dumps({**base, "choices": choices, **extra}))

        finished = False
        try:
            yield chunk(
                [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": ""},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                ]
            )
            async for event in self.runs.events(run_id, 0):
                if event.type == "message.delta":
                    yield chunk(
                        [
                            {
                                "index": 0,
                                "delta": {"content": event.data["delta"]},
                                "logprobs": None,
                                "finish_reason": None,
                            }
                        ]
                    )
                elif event.terminal:
                    finished = True
                    run = event.data["run"]
                    if run["status"] == "failed":
                        failure = run_failure(run.get("error"))
                        note_answered(failure.fault)  # the client's answer, though a 200
                        yield sse_error(
                            failure.message,
                            code=failure.code or "run_failed",
                            error_type=failure.error_type,
                        )
                        return
                    reason = "stop" if run["status"] == "completed" else "length"
                    yield chunk(
                        [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": reason}]
                    )
                    if include_usage:
                        usage = run["usage"]
                        yield chunk(
                            [],
                            usage={
                                "prompt_tokens": usage["prompt_tokens"],
                                "completion_tokens": usage["completion_tokens"],
                                "total_tokens": usage["total_tokens"],
                            },
                        )
                    yield DONE
                    return
        finally:
            if not finished:
                self._stop(run_id)
                await asyncio.wait({task})
