"""Tool specs and arguments: argument checks that say what to fix, the canonical form
and OpenAI shape of a tool, schemas that never reach the network, and spec mistakes
reported at their field. That a schema's remote `$ref` is never fetched is shown by the
tool tests' server (`tests.support.echo_server`) never accepting a connection.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from agents.tools import (
    ToolContext,
    ToolError,
    canonical_arguments,
    openai_tool,
    validate_arguments,
)
from agents.tools.calculator import Calculator
from tests.support.agents import Agent, tools_of
from tests.support.echo_server import EchoServer


# -- arguments -----------------------------------------------------------------------
def test_validate_arguments_reports_what_to_fix() -> None:
    (tool,) = tools_of(
        {
            "type": "client",
            "name": "pick",
            "parameters": {
                "type": "object",
                "properties": {
                    "color": {"enum": ["red", "green"]},
                    "count": {"type": "integer"},
                },
                "required": ["color"],
                "additionalProperties": False,
            },
        }
    )
    assert validate_arguments(tool, '{"color": "red", "count": 2}') == {"color": "red", "count": 2}
    cases = {
        "{not json": "not valid JSON",
        "[1, 2]": "must be a JSON object, not list",
        '{"count": 1}': "'color' is a required property",
        '{"color": "blue"}': r"\['color'\]: 'blue' is not one of",
        '{"color": "red", "count": "two"}': r"\['count'\]: 'two' is not of type 'integer'",
        '{"color": "red", "size": 3}': "Additional properties are not allowed",
        '{"color": "red", "count": NaN}': "not valid JSON",
        "[" * 5000: "not valid JSON",  # nesting past the recursion limit
        "[" * 100_001: "too long",
    }
    for raw, message in cases.items():
        with pytest.raises(ToolError, match=message):
            validate_arguments(tool, raw)


def test_canonical_arguments_and_openai_shape() -> None:
    assert canonical_arguments({"b": 1, "a": [1, {"y": 2, "x": "é"}]}) == (
        '{"a":[1,{"x":"é","y":2}],"b":1}'
    )
    assert canonical_arguments({"a": 1, "b": 2}) == canonical_arguments({"b": 2, "a": 1})
    entry = openai_tool(Calculator())
    assert entry["type"] == "function"
    assert entry["function"]["name"] == "calculator"
    assert entry["function"]["parameters"]["required"] == ["expression"]


class Handmade:
    """A tool built without the spec models, as a plugin might: its schema is unchecked."""

    name = "handmade"
    description = ""
    client = True

    def __init__(self, parameters: dict[str, Any]) -> None:
        self.parameters = parameters

    async def run(self, arguments: dict[str, Any], ctx: ToolContext) -> str:
        return ""


async def test_schemas_never_reach_the_network(echo_server: EchoServer) -> None:
    """jsonschema fetches a remote $ref with urllib by default; here it must not."""
    remote = {"type": "object", "properties": {"a": {"$ref": f"{echo_server.url}/schema"}}}
    with pytest.raises(ValidationError, match="only local references"):
        tools_of({"type": "client", "name": "c", "parameters": remote})
    with pytest.raises(ToolError, match="unresolvable \\$ref"):
        validate_arguments(Handmade(remote), '{"a": 1}')
    assert echo_server.connections == 0
    local = {
        "type": "object",
        "$defs": {"id": {"type": "integer"}},
        "properties": {"a": {"$ref": "#/$defs/id"}},
    }
    (tool,) = tools_of({"type": "client", "name": "c", "parameters": local})
    assert tool.client
    assert validate_arguments(tool, '{"a": 1}') == {"a": 1}
    with pytest.raises(ToolError, match="is not of type 'integer'"):
        validate_arguments(tool, '{"a": "x"}')


# -- specs ---------------------------------------------------------------------------
def test_specs_report_mistakes_at_their_field() -> None:
    bad = [
        "http_fetch",
        "weather",
        {"builtin": "http_fetch", "allowed_hosts": ["example.com/path", "*.10.0.0.1"]},
        {"type": "http", "name": "x", "url": "https://api.example/{id}"},
        {"type": "http", "name": "y", "url": "https://{host}/a"},
        {"type": "http", "name": "z", "url": "https://api.example/?key=${TOKEN}"},
        {"type": "client", "name": "bad name", "parameters": {"type": "array"}},
    ]
    with pytest.raises(ValidationError) as caught:
        Agent.model_validate({"tools": bad})
    problems = {(".".join(map(str, e["loc"])), e["msg"]) for e in caught.value.errors()}
    locations = {loc for loc, _ in problems}
    assert {"tools.0", "tools.1", "tools.2.allowed_hosts.0", "tools.2.allowed_hosts.1"} <= locations
    assert {"tools.3.url", "tools.4.url", "tools.5.url", "tools.6.name"} <= locations
    assert "tools.6.parameters" in locations
    messages = " ".join(message for _, message in problems)
    assert "http_fetch needs the hosts" in messages
    assert "{id} must be a required parameter" in messages
    assert "secrets belong in a header value" in messages


def test_duplicate_tool_names_are_refused() -> None:
    with pytest.raises(ValueError, match="repeated: calculator"):
        tools_of("calculator", "calculator")
