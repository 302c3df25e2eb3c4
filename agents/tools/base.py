"""What every tool is, what it runs with, and how its arguments are checked.

The run engine sees tools only through this module: the `Tool` protocol, the
`ToolContext` a call runs in, `ToolError` (the one failure a model is told about),
and three helpers: the OpenAI `tools` entry of a tool, validation of a model's
argument string against the tool's JSON schema, and the canonical form of arguments
the engine compares to stop identical-call loops. Nothing here performs I/O.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol

# jsonschema ships no type information (no py.typed); it is a locked runtime dependency
# (through litellm) and the reference implementation of the draft our schemas use.
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from jsonschema.exceptions import best_match  # type: ignore[import-untyped]
from referencing import Registry
from referencing.exceptions import Unresolvable

if TYPE_CHECKING:
    from agents.tools.http import SafeHttp

TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")  # OpenAI's rule for function names
MAX_ARGUMENT_CHARS = 100_000  # a model's argument string past this is a runaway, not input
_MAX_MESSAGE_CHARS = 300
# An explicit, empty registry: without one, jsonschema fetches a remote `$ref` with
# urllib (deprecated, but still its default), a network path around SafeHttp.
_NO_RETRIEVAL: Registry[Any] = Registry()


class ToolError(Exception):
    """A tool failed in a way the model should be told (message is safe to show)."""


@dataclass(frozen=True, slots=True)
class ToolSettings:
    """Process-wide limits for tools; the lead maps Skygate's settings onto it.

    `allowed_networks` are exempt from the private-address refusal of `SafeHttp`
    (an operator's internal API, or a test's own server on 127.0.0.1/32)."""

    allowed_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    max_redirects: int = 3
    default_timeout_seconds: float = 10
    default_max_bytes: int = 65536


@dataclass(frozen=True, slots=True)
class ToolContext:
    """What a tool call runs with. `http` is shared by every run of the process."""

    tenant: str
    run_id: str
    http: SafeHttp


class Tool(Protocol):
    name: str  # ^[a-zA-Z0-9_-]{1,64}$ (OpenAI function-name rule)
    description: str
    parameters: dict[str, Any]  # JSON schema (object) of the arguments
    client: bool  # True: executed by the API client (the run pauses), never here

    async def run(self, arguments: dict[str, Any], ctx: ToolContext) -> str: ...


def openai_tool(tool: Tool) -> dict[str, Any]:
    """The tool as an entry of a chat completion's `tools`."""
    return {
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description,
            "parameters": tool.parameters,
        },
    }


def canonical_arguments(arguments: dict[str, Any]) -> str:
    """A stable text form of `arguments`: two calls are identical when these are equal,
    whatever order the model wrote the keys in."""
    return json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def validate_arguments(tool: Tool, raw: str) -> dict[str, Any]:
    """Parse the model's argument string and check it against `tool.parameters`.

    An empty string means no arguments (some models send it for parameterless tools).
    Every failure is a `ToolError` whose message tells the model what to fix."""
    if len(raw) > MAX_ARGUMENT_CHARS:
        raise ToolError(f"arguments for {tool.name} are too long ({len(raw)} characters)")
    text = raw.strip() or "{}"
    try:
        arguments = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise ToolError(f"arguments for {tool.name} are not valid JSON: {_short(exc)}") from None
    if not isinstance(arguments, dict):
        found = type(arguments).__name__
        raise ToolError(f"arguments for {tool.name} must be a JSON object, not {found}")
    validator = _validator(canonical_arguments(tool.parameters))
    try:
        error = best_match(validator.iter_errors(arguments))
    except Unresolvable as exc:
        raise ToolError(f"tool {tool.name}'s schema has an unresolvable $ref: {exc.ref}") from None
    if error is not None:
        where = "".join(f"[{step!r}]" for step in error.absolute_path) or "arguments"
        raise ToolError(f"invalid arguments for {tool.name}: {where}: {_short(error.message)}")
    return arguments


def check_parameters_schema(schema: dict[str, Any]) -> str | None:
    """Why `schema` cannot be a tool's parameters, or None. For the spec models."""
    if schema.get("type") != "object":
        return 'parameters must be a JSON schema with "type": "object"'
    remote = next(_remote_refs(schema), None)
    if remote is not None:
        return f"parameters may use only local references ($ref: '#/...'), not {remote!r}"
    meta = Draft202012Validator(Draft202012Validator.META_SCHEMA, registry=_NO_RETRIEVAL)
    problem = best_match(meta.iter_errors(schema))
    if problem is not None:
        where = "/".join(str(step) for step in problem.absolute_path) or "schema"
        return f"parameters is not a valid JSON schema: {where}: {_short(problem.message)}"
    return None


def _remote_refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("$ref", "$dynamicRef") and isinstance(value, str):
                if not value.startswith("#"):
                    yield value
            else:
                yield from _remote_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _remote_refs(item)


@lru_cache(maxsize=256)
def _validator(schema_json: str) -> Any:
    """One compiled validator per distinct schema; tools are few and long-lived. No
    format checking, and nothing retrieved over the network."""
    return Draft202012Validator(json.loads(schema_json), registry=_NO_RETRIEVAL)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _short(value: object) -> str:
    text = str(value)
    return text if len(text) <= _MAX_MESSAGE_CHARS else text[: _MAX_MESSAGE_CHARS - 3] + "..."
