"""A model turn's edges: reading its answer, shaping the messages around it, and the
request-rate check each of its calls passes.

`read_answer` turns what the chat pipeline returned (a whole answer, or a stream) into
the assistant message that goes back into the conversation, emitting its text deltas
as they arrive; the message helpers build the tool messages and tool-call views that
events and the conversation share. Each call of a run passes the chat
route's request-rate check (`core.auth.request_rate`, shared with `chat.batch`).
Pure functions over messages, but for `read_answer` (reads the stream).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import orjson

from agents.events import EventLog
from agents.state import RunState, Stop
from core.gateway.completions import Answer, StreamAnswer
from core.gateway.streams import StreamAssembler
from core.limits.admission import RunTurn


@dataclass(slots=True)
class Turn:
    """A model turn's assistant message, and the tool calls it asks for."""

    message: dict[str, Any]
    tool_calls: list[dict[str, Any]]


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
