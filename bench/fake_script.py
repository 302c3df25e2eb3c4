"""The fake upstream's `script` mode: scripted multi-turn answers, tool calls included.

Agent tests drive a run of several model turns against a real HTTP provider and
need to say what each turn answers. A script is a list of turns::

    [{"tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}]},
     {"content": "The answer is 42.", "usage": {"prompt_tokens": 10, "completion_tokens": 5}}]

The turn answered is chosen from the request alone (no state in the server, so
retries, fallbacks and parallel runs all see the same script): the number of
`assistant` messages already in the conversation, the last turn repeating past
the end (`[{"tool_calls": [...]}]` loops forever). A turn with tool calls, asked
with no `tools` or with `tool_choice: "none"`, answers its `content` instead, or
"final answer": an agent's last, tool-less call must get text. When the calls
are answered, `content` is not sent with them (it is the tool-less answer only).

This module parses and chooses; `bench.fake_upstream` renders the answer in
OpenAI's wire format. Nothing here is on the benchmark's path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

FALLBACK_CONTENT = "final answer"
_TURN_KEYS = frozenset({"content", "tool_calls", "usage"})
_CALL_KEYS = frozenset({"name", "arguments", "id"})
_USAGE_KEYS = frozenset({"prompt_tokens", "completion_tokens"})


@dataclass(frozen=True, slots=True)
class ScriptCall:
    name: str
    arguments: str  # JSON text (a dict is serialised; a string is sent as is, even invalid)
    id: str | None = None


@dataclass(frozen=True, slots=True)
class ScriptTurn:
    content: str | None = None
    tool_calls: tuple[ScriptCall, ...] = ()
    prompt_tokens: int | None = None  # None: counted from the request
    completion_tokens: int | None = None  # None: counted from the answer


@dataclass(frozen=True, slots=True)
class ScriptAnswer:
    """One request's answer: text, or tool calls as (id, name, arguments)."""

    turn: int
    content: str | None
    tool_calls: tuple[tuple[str, str, str], ...]
    prompt_tokens: int | None
    completion_tokens: int | None


def parse_turns(value: Any) -> tuple[ScriptTurn, ...]:
    """The validated script; ValueError names the first thing wrong with it."""
    if not isinstance(value, list | tuple) or not value:
        raise ValueError("'turns' must be a non-empty list")
    return tuple(_turn(i, turn) for i, turn in enumerate(value))


def _turn(i: int, turn: Any) -> ScriptTurn:
    where = f"turns[{i}]"
    if not isinstance(turn, dict):
        raise ValueError(f"{where} must be an object")
    unknown = set(turn) - _TURN_KEYS
    if unknown:
        raise ValueError(f"{where} has unknown key(s) {sorted(unknown)}")
    content = turn.get("content")
    if content is not None and not isinstance(content, str):
        raise ValueError(f"{where}.content must be a string")
    raw_calls = turn.get("tool_calls") or []
    if not isinstance(raw_calls, list):
        raise ValueError(f"{where}.tool_calls must be a list")
    if content is None and not raw_calls:
        raise ValueError(f"{where} needs 'content' or 'tool_calls'")
    calls = tuple(_call(f"{where}.tool_calls[{j}]", call) for j, call in enumerate(raw_calls))
    usage = turn.get("usage") or {}
    if not isinstance(usage, dict) or set(usage) - _USAGE_KEYS:
        raise ValueError(f"{where}.usage takes only {sorted(_USAGE_KEYS)}")
    counts = {}
    for key in _USAGE_KEYS:
        if key in usage:
            count = usage[key]
            if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                raise ValueError(f"{where}.usage.{key} must be a non-negative integer")
            counts[key] = count
    return ScriptTurn(content, calls, counts.get("prompt_tokens"), counts.get("completion_tokens"))


def _call(where: str, call: Any) -> ScriptCall:
    if not isinstance(call, dict) or set(call) - _CALL_KEYS:
        raise ValueError(f"{where} must be an object with keys among {sorted(_CALL_KEYS)}")
    name, arguments, call_id = call.get("name"), call.get("arguments", {}), call.get("id")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}.name must be a non-empty string")
    if isinstance(arguments, dict):
        arguments = json.dumps(arguments)
    elif not isinstance(arguments, str):
        raise ValueError(f"{where}.arguments must be an object or a string")
    if call_id is not None and (not isinstance(call_id, str) or not call_id):
        raise ValueError(f"{where}.id must be a non-empty string")
    return ScriptCall(name, arguments, call_id)


def answer(data: dict[str, Any], turns: tuple[ScriptTurn, ...]) -> ScriptAnswer:
    """The scripted answer to chat request `data` (already parsed, messages a list)."""
    messages = data.get("messages") or []
    number = sum(1 for m in messages if isinstance(m, dict) and m.get("role") == "assistant")
    turn = turns[min(number, len(turns) - 1)]
    tool_less = not data.get("tools") or data.get("tool_choice") == "none"
    if turn.tool_calls and not tool_less:
        calls = tuple(
            (call.id or f"call_{number}_{index}", call.name, call.arguments)
            for index, call in enumerate(turn.tool_calls)
        )
        return ScriptAnswer(number, None, calls, turn.prompt_tokens, turn.completion_tokens)
    content = turn.content if turn.content is not None else FALLBACK_CONTENT
    return ScriptAnswer(number, content, (), turn.prompt_tokens, turn.completion_tokens)
