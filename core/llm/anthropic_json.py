"""JSON mode on Anthropic, which has no `response_format`: the forced tool a JSON
`response_format` becomes (`json_tool`, `JsonTool`, the schema wrapped when it is not an
object's) for `core.llm.anthropic_request`, and its call turned back into content for
`core.llm.anthropic_answer` (`_unwrapped` for a stream's held input); with the small
helpers both sides share (`rejected`, `_garbage`, `_dumps`). Pure functions; imports
neither of those modules, which both import it.

Decisions:
- A JSON `response_format` (Anthropic has none) is a forced tool, as litellm did it
  (`json_tool`; `core.llm.anthropic_answer` turns its call back into content):
  `json_schema` offers one tool whose `input_schema` is the schema, `json_object`
  (or a `json_schema` without a schema) one taking any object (litellm's `{"type":
  "object", "properties": {}, "additionalProperties": true}`), and `tool_choice`
  forces it, one call only (`disable_parallel_tool_use`). The tool is named after
  the schema (OpenAI's name rule is Anthropic's tool name rule, and the model reads
  the name), `JSON_TOOL_NAME` when there is no valid one; its description is the
  schema's, else one saying the input is the answer. Anthropic's input is an object:
  a schema of another top-level type (an array, a string, no type) is wrapped as the
  required property `value` (its `$defs` hoisted beside it, so `#/$defs/...` refs
  still resolve) and unwrapped on the way back. `strict` is not sent (Anthropic's
  strict tool use is a beta). `text` is the default and changes nothing.
- Answers in JSON mode (`core.llm.anthropic_answer`, given the request's `json_tool`):
  the tool's input is the content, its JSON compact (a wrapped schema's `value`
  unwrapped), never a tool call; finish `tool_use` -> `stop` (`max_tokens` stays
  `length`). A call of another tool, a second call, an input that is not an object
  or a wrapped one without its value is garbage. Anthropic writes no text before a
  forced call; text it writes without one (a refusal) is the content as usual.
  Streamed, the input's pieces are content deltas as they come, but a wrapped input
  is held until `message_delta` and sent unwrapped in one delta (cut by
  `max_tokens`: what came of the value).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from core.llm.translation import garbage
from core.llm.types import Deployment, ProviderError

# JSON mode's forced tool: its name when the schema gives no valid one (Anthropic's
# tool names: 1 to 64 letters, digits, `_` or `-`), the description when it gives
# none, and the property a schema that is not an object's is wrapped in.
JSON_TOOL_NAME = "json_response"
JSON_TOOL_DESCRIPTION = "Give your answer as this tool's input: the JSON the user asked for."
WRAPPED_KEY = "value"
_TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
# The start of a wrapped input's JSON text, before its value.
_WRAPPED_START = re.compile(r'\s*\{\s*"' + WRAPPED_KEY + r'"\s*:\s*')


def _any_object() -> dict[str, Any]:
    """Any object, as litellm spelled it for Anthropic (a fresh one per request)."""
    return {"type": "object", "properties": {}, "additionalProperties": True}


@dataclass(frozen=True, slots=True)
class JsonTool:
    """The forced tool a JSON `response_format` became: what the answer side needs
    to turn its call back into content (`wrapped`: its input is `{"value": answer}`)."""

    name: str
    wrapped: bool


def rejected(message: str) -> ProviderError:
    """A request Anthropic cannot serve as asked: the client's 400, nobody's health."""
    return ProviderError("status", message, status=400)


def _dumps(deployment: Deployment, value: Any) -> str:
    """Compact JSON text of a parsed input (garbage if it has none: a huge integer)."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        raise garbage(deployment, "a tool input that is not JSON") from None


# -- requests ---------------------------------------------------------------------------
def json_tool(body: dict[str, Any]) -> JsonTool | None:
    """The forced tool `chat_body` makes of the body's JSON `response_format`, None
    when there is none (no `response_format`, or `text`): the answer side's key to
    its call. The same 400 as `chat_body` for a `response_format` it refuses."""
    json_mode = _json_mode(body)
    return json_mode[0] if json_mode is not None else None


def _json_mode(body: dict[str, Any]) -> tuple[JsonTool, dict[str, Any]] | None:
    """(the forced tool, its Anthropic definition) for a JSON `response_format`."""
    response_format = body.get("response_format")
    if response_format is None:
        return None
    if not isinstance(response_format, dict):
        raise rejected("`response_format` must be an object.")
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return JsonTool(JSON_TOOL_NAME, wrapped=False), _json_definition(
            JSON_TOOL_NAME, None, _any_object()
        )
    if kind != "json_schema":
        raise rejected(
            f"`response_format` {str(kind)[:40]!r} is not text, json_object or json_schema."
        )
    spec = response_format.get("json_schema")
    if not isinstance(spec, dict):
        raise rejected("A json_schema `response_format` needs its `json_schema` object.")
    name = spec.get("name")
    if not isinstance(name, str) or not _TOOL_NAME.fullmatch(name):
        name = JSON_TOOL_NAME
    schema = spec.get("schema")
    if schema is None:
        schema = _any_object()
    elif not isinstance(schema, dict):
        raise rejected("`response_format.json_schema.schema` must be a JSON Schema object.")
    wrapped = schema.get("type") != "object"
    if wrapped:
        schema = _wrapped(schema)
    return JsonTool(name, wrapped=wrapped), _json_definition(name, spec.get("description"), schema)


def _wrapped(schema: dict[str, Any]) -> dict[str, Any]:
    """An object schema whose required `value` is `schema`, its definitions hoisted to
    the new root, where its `#/$defs/...` (or `#/definitions/...`) refs look."""
    inner = {key: value for key, value in schema.items() if key not in ("$defs", "definitions")}
    outer: dict[str, Any] = {
        "type": "object",
        "properties": {WRAPPED_KEY: inner},
        "required": [WRAPPED_KEY],
        "additionalProperties": False,
    }
    for key in ("$defs", "definitions"):
        if key in schema:
            outer[key] = schema[key]
    return outer


def _json_definition(name: str, description: Any, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "description": description
        if isinstance(description, str) and description
        else JSON_TOOL_DESCRIPTION,
        "input_schema": schema,
    }


# -- answers ----------------------------------------------------------------------------
def _json_answer(deployment: Deployment, tool: JsonTool, given: Any, reason: str) -> str | None:
    """The content of a JSON-mode answer: the forced tool's input, unwrapped."""
    if not isinstance(given, dict):
        raise garbage(deployment, "the JSON tool's input not as an object")
    if not tool.wrapped:
        return _dumps(deployment, given)
    if WRAPPED_KEY in given:
        return _dumps(deployment, given[WRAPPED_KEY])
    if reason == "length":
        return None  # cut before the value
    raise garbage(deployment, "the JSON tool's input without its value")


def _json_finish(deployment: Deployment, reason: str, answered: bool) -> str:
    """The finish reason of a JSON-mode answer: the forced call is an answer's end."""
    if reason != "tool_calls":
        return reason
    if not answered:
        raise garbage(deployment, "a tool_use stop without the JSON tool's call")
    return "stop"


def _forced(deployment: Deployment, tool: JsonTool, name: str, again: bool) -> None:
    if name != tool.name:
        raise garbage(deployment, f"a call of {name[:64]!r}, not of the JSON tool")
    if again:
        raise garbage(deployment, "the JSON tool called twice")


def _unwrapped(deployment: Deployment, tool: JsonTool, raw: str, reason: str) -> str | None:
    """A wrapped input's value as JSON text; cut by `max_tokens`, what came of it."""
    try:
        given = orjson.loads(raw) if raw else {}  # nothing streamed: an empty input
    except orjson.JSONDecodeError:
        given = None
    if isinstance(given, dict) and WRAPPED_KEY in given or reason != "length":
        return _json_answer(deployment, tool, given, reason)
    start = _WRAPPED_START.match(raw)
    return raw[start.end() :] if start else None
