"""A model turn's edges: reading its answer, shaping the messages around it, and the
request-rate check each of its calls passes.

`read_answer` turns what the chat pipeline returned (a whole answer, or a stream) into
the assistant message that goes back into the conversation, emitting its text deltas
as they arrive; the message helpers build the tool messages and tool-call views that
events and the conversation share. `RequestRate` is the chat route's request-rate
check for one call of a run: a refusal raises `Paced` with its wait, and `rate_wait`
reads the same wait off a pipeline refusal, so the engine waits instead of failing.
Pure functions over messages, but for `read_answer` (reads the stream) and
`RequestRate` (asks the limiter).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import orjson

from agents.events import EventLog
from agents.state import RunState, Stop
from core.auth.authenticator import Principal
from core.config import Settings
from core.errors import GatewayError, RateLimitError
from core.gateway.completions import Answer, StreamAnswer
from core.gateway.streams import StreamAssembler
from core.limits.admission import RunTurn
from core.limits.rate_limit import RateLimiter


@dataclass(slots=True)
class Turn:
    """A model turn's assistant message, and the tool calls it asks for."""

    message: dict[str, Any]
    tool_calls: list[dict[str, Any]]


# -- the request rate of a call ------------------------------------------------------
class Paced(Exception):
    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.seconds = seconds


class RequestRate:
    """The chat route's request-rate check for one model call of a run."""

    def __init__(self, limiter: RateLimiter, principal: Principal, settings: Settings) -> None:
        self.limiter = limiter
        self.principal = principal
        self.settings = settings
        self.done = False

    async def __call__(self) -> None:
        if self.done:
            return
        per_minute, per_hour = self.principal.request_limits(self.settings)
        decision = await self.limiter.admit(
            self.principal.limit_key, per_minute=per_minute, per_hour=per_hour
        )
        if not decision.allowed:
            raise Paced(max(decision.wait or decision.retry_after, 0.05))
        self.done = True


def rate_wait(error: GatewayError) -> float | None:
    if not isinstance(error, RateLimitError) or error.code != "rate_limit_exceeded":
        return None
    retry_after = error.headers.get("Retry-After", "1")
    return float(retry_after) if retry_after.isdigit() else 1.0


def with_run(caller: Any, run: RunTurn) -> Any:
    return replace(caller, run=run)


# -- the answer ------------------------------------------------------------------------
async def read_answer(
    outcome: Answer | StreamAnswer, events: EventLog, turn: int
) -> dict[str, Any]:
    """The assistant message of a turn, its text deltas emitted as they arrive."""
    if isinstance(outcome, Answer):  # a cache hit replayed whole, or a non-streamed answer
        data = orjson.loads(outcome.body)
        message = dict(data["choices"][0]["message"]) if data.get("choices") else {}
        text = text_of(message.get("content"))
        if text:
            events.emit("message.delta", {"turn": turn, "delta": text})
        return _clean(message)
    assembler = StreamAssembler()
    try:
        async for item in outcome.events:
            if not item.startswith(b"data: ") or item.startswith(b"data: [DONE]"):
                continue
            chunk = orjson.loads(item[6:])
            if "error" in chunk:
                error = chunk["error"]
                raise Stop("error", str(error.get("message")), code=error.get("code"))
            assembler.add(chunk)
            for choice in chunk.get("choices") or ():
                delta = (choice.get("delta") or {}).get("content")
                if isinstance(delta, str) and delta and choice.get("index", 0) == 0:
                    events.emit("message.delta", {"turn": turn, "delta": delta})
    finally:
        await outcome.events.aclose()
    completion = assembler.completion()
    choices = completion.get("choices") or [{}]
    return _clean(dict(choices[0].get("message") or {"role": "assistant", "content": ""}))


def _clean(message: dict[str, Any]) -> dict[str, Any]:
    """The assistant message as it goes back into the conversation."""
    clean: dict[str, Any] = {"role": "assistant", "content": message.get("content")}
    calls = message.get("tool_calls")
    if calls:
        clean["tool_calls"] = [
            {"id": c.get("id"), "type": "function", "function": c.get("function")} for c in calls
        ]
    return clean


# -- messages ----------------------------------------------------------------------------
def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def last_text(messages: list[dict[str, Any]]) -> str | None:
    for message in reversed(messages):
        if message.get("role") == "assistant" and text_of(message.get("content")):
            return text_of(message.get("content"))
    return None


def call_view(call: dict[str, Any], name: str) -> dict[str, Any]:
    function = call.get("function") or {}
    return {"id": call.get("id"), "name": name, "arguments": function.get("arguments") or "{}"}


def tool_message(call: dict[str, Any], output: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call.get("id"), "content": output}


def answer_open_calls(state: RunState, reason: str) -> None:
    """Every tool call of the last assistant message needs its answer before another
    model call: the ones not run say why."""
    for message in reversed(state.messages):
        if message.get("role") != "assistant":
            continue
        answered = {m.get("tool_call_id") for m in state.messages if m.get("role") == "tool"}
        for call in message.get("tool_calls") or ():
            if call.get("id") not in answered:
                state.messages.append(tool_message(call, f"not run: limit reached ({reason})"))
                state.new_messages.append(state.messages[-1])
        return
