"""Declared HTTP tools: the request a GET or POST tool sends, and its secrets (read from
the environment) never in an output, an error or a dump of the spec.

Network tests talk to a real server on 127.0.0.1 (`tests.support.echo_server`, started
by tests/agents/conftest.py). Its network is exempt only where a test says so
(`tool_ctx`); `strict_tool_ctx` has the production default, no exemption.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from agents.tools import HttpToolSpec, ToolContext, ToolError
from tests.support.agents import Agent, call, tools_of
from tests.support.echo_server import EchoServer

# -- declared HTTP tools -------------------------------------------------------------
TOKEN = "tok-9f8e7d6c5b4a"
LITERAL = "literal-key-31337"


def order_tool(port: int, method: str = "GET", **extra: Any) -> dict[str, Any]:
    return {
        "type": "http",
        "name": "get_order",
        "description": "Look up an order",
        "method": method,
        "url": f"http://127.0.0.1:{port}/orders/{{order_id}}?v=2",
        "parameters": {
            "type": "object",
            "properties": {
                "order_id": {"type": "string"},
                "verbose": {"type": "boolean"},
                "page": {"type": "integer"},
            },
            "required": ["order_id"],
        },
        "headers": {
            "Authorization": "Bearer ${SKYGATE_TEST_SHOP_TOKEN}",
            "X-Api-Key": LITERAL,
        },
        **extra,
    }


async def test_declared_get_tool(
    echo_server: EchoServer, tool_ctx: ToolContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SKYGATE_TEST_SHOP_TOKEN", TOKEN)
    (tool,) = tools_of(order_tool(echo_server.port))
    output = await call(tool, tool_ctx, order_id="a/b c?#..", verbose=True, page=2)
    seen = echo_server.requests[0]
    assert seen.method == "GET"
    assert seen.target == "/orders/a%2Fb%20c%3F%23..?v=2&page=2&verbose=true"
    assert seen.headers["authorization"] == f"Bearer {TOKEN}"  # the server got the secret
    assert seen.headers["x-api-key"] == LITERAL
    assert output.startswith("HTTP 200 application/json")
    assert "[redacted]" in output  # the echo of the headers is scrubbed
    assert TOKEN not in output and LITERAL not in output
    for shown in (
        repr(tool),
        str(tool.__dict__),
        repr(Agent.model_validate({"tools": [order_tool(echo_server.port)]})),
    ):
        assert TOKEN not in shown and LITERAL not in shown
    with pytest.raises(ToolError, match="may not be '..'"):
        await call(tool, tool_ctx, order_id="..")


async def test_declared_post_tool_sends_json(
    echo_server: EchoServer, tool_ctx: ToolContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SKYGATE_TEST_SHOP_TOKEN", TOKEN)
    (tool,) = tools_of(order_tool(echo_server.port, method="POST"))
    await call(tool, tool_ctx, order_id="42", page=3)
    seen = echo_server.requests[0]
    assert (seen.method, seen.target) == ("POST", "/orders/42?v=2")
    assert seen.headers["content-type"] == "application/json"
    assert seen.body == b'{"page":3}'


async def test_declared_tool_secrets_never_in_errors_or_dumps(
    echo_server: EchoServer, tool_ctx: ToolContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tool,) = tools_of(order_tool(echo_server.port))
    with pytest.raises(ToolError) as missing:
        await call(tool, tool_ctx, order_id="1")
    assert str(missing.value) == (
        "tool get_order is not configured: environment variable SKYGATE_TEST_SHOP_TOKEN is not set"
    )
    assert echo_server.connections == 0

    monkeypatch.setenv("SKYGATE_TEST_SHOP_TOKEN", f"{TOKEN}\r\nX-Injected: 1")
    with pytest.raises(ToolError, match="SKYGATE_TEST_SHOP_TOKEN holds a value") as unsendable:
        await call(tool, tool_ctx, order_id="1")
    assert TOKEN not in str(unsendable.value)
    assert echo_server.connections == 0

    monkeypatch.setenv("SKYGATE_TEST_SHOP_TOKEN", TOKEN)
    port = echo_server.port
    await echo_server.close()  # nothing listens now: the failure must not quote a header
    with pytest.raises(ToolError, match=f"could not connect to 127.0.0.1:{port}") as refused:
        await call(tool, tool_ctx, order_id="1")
    assert TOKEN not in str(refused.value) and LITERAL not in str(refused.value)

    spec = Agent.model_validate({"tools": [order_tool(port)]}).tools[0]
    assert isinstance(spec, HttpToolSpec)
    public = spec.model_dump(mode="json")
    assert public["headers"] == {
        "Authorization": "***${SKYGATE_TEST_SHOP_TOKEN}",
        "X-Api-Key": "***",
    }
    stored = spec.model_dump(mode="json", context={"reveal_secrets": True})
    assert stored["headers"]["X-Api-Key"] == LITERAL
    assert HttpToolSpec.model_validate(stored) == spec
    with pytest.raises(ValidationError) as invalid:  # a mistake elsewhere quotes the mapping
        Agent.model_validate({"tools": [{**order_tool(port), "url": None}]})
    assert LITERAL not in str(invalid.value)
