"""What Cohere receives (`core.llm.cohere_request`), through the gateway to the fake
Cohere: each OpenAI parameter in Cohere's terms, and a 400 that says so, with nothing
sent, for what Cohere cannot do. The tool round trips: tests/providers/."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from bench.fake_upstream import FakeUpstream
from core.llm.cohere_request import DROPPED, REFUSED, TRANSLATED
from core.llm.parameters import CHAT_PARAMETERS
from tests.support.cohere import KEY, MODEL, completed, sent
from tests.support.contracts import assert_valid
from tests.support.requests import CHAT, chat

WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        "strict": True,
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "strict": True}}


# -- requests -------------------------------------------------------------------------------
def test_every_chat_parameter_is_translated_dropped_or_refused() -> None:
    """A name added to the allow-list must be decided for Cohere before it can pass."""
    assert TRANSLATED | DROPPED | REFUSED == CHAT_PARAMETERS
    assert not (TRANSLATED & DROPPED or TRANSLATED & REFUSED or DROPPED & REFUSED)


async def test_what_cohere_receives_for_each_parameter(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    image = "https://example.com/cat.png"
    call = {
        "id": "get_weather_abc",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    body = {
        "model": "cohere",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
            {
                "role": "user",
                "name": "ann",
                "content": [
                    {"type": "text", "text": "weather here?"},
                    {"type": "image_url", "image_url": {"url": image, "detail": "low"}},
                ],
            },
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "get_weather_abc", "content": "sunny"},
        ],
        "tools": [WEATHER, TIME],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
        "max_tokens": 80,
        "max_completion_tokens": 50,
        "temperature": 0.5,
        "top_p": 1,
        "top_k": 40,
        "stop": "END",
        "seed": 7,
        "frequency_penalty": 0.2,
        "presence_penalty": 0.1,
        "user": "user-1",
        "metadata": {"team": "a"},
        "logprobs": False,
        "store": False,
    }
    data = await completed(client, body)
    assert data["choices"][0]["message"]["content"] == "tool results: sunny"
    request = sent(upstream)
    assert request["path"] == "/v2/chat"
    assert request["headers"]["authorization"] == f"Bearer {KEY}"
    assert "text/event-stream" not in request["headers"].get("accept", "")
    assert request["body"] == {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "system", "content": [{"type": "text", "text": "Use tools."}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "weather here?"},
                    {"type": "image_url", "image_url": {"url": image, "detail": "low"}},
                ],
            },
            {"role": "assistant", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "get_weather_abc", "content": "sunny"},
        ],
        # Only the named function is offered, and a call required; strict on every tool.
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "parameters": WEATHER["function"]["parameters"],
                    "description": "Current weather for a city",
                },
            }
        ],
        "strict_tools": True,
        "tool_choice": "REQUIRED",
        "max_tokens": 50,
        "temperature": 0.5,
        "seed": 7,
        "frequency_penalty": 0.2,
        "presence_penalty": 0.1,
        "p": 0.99,
        "k": 40,
        "stop_sequences": ["END"],
    }


@pytest.mark.parametrize(
    ("response_format", "native"),
    [
        ({"type": "text"}, None),
        ({"type": "json_object"}, {"type": "json_object"}),
        (
            {"type": "json_schema", "json_schema": {"name": "city", "schema": {"type": "object"}}},
            {"type": "json_object", "json_schema": {"type": "object"}},
        ),
    ],
)
async def test_response_format(
    client: httpx.AsyncClient, upstream: FakeUpstream, response_format: Any, native: Any
) -> None:
    await completed(client, chat("a JSON city", model="cohere", response_format=response_format))
    assert sent(upstream)["body"].get("response_format") == native


@pytest.mark.parametrize(
    ("tool_choice", "tools", "native", "offered"),
    [
        ("auto", [WEATHER, TIME], None, ["get_weather", "get_time"]),
        ("none", [], None, []),
        (
            {
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "required",
                    "tools": [{"type": "function", "function": {"name": "get_time"}}],
                },
            },
            [WEATHER, TIME],
            "REQUIRED",
            ["get_time"],
        ),
    ],
)
async def test_tool_choice_in_cohere_terms(
    client: httpx.AsyncClient,
    upstream: FakeUpstream,
    tool_choice: Any,
    tools: list[Any],
    native: str | None,
    offered: list[str],
) -> None:
    body = chat("hello", model="cohere", tool_choice=tool_choice)
    if tools:
        body["tools"] = tools
    await completed(client, body)
    request = sent(upstream)["body"]
    assert request.get("tool_choice") == native
    assert [tool["function"]["name"] for tool in request.get("tools", ())] == offered


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ({"n": 2}, "`n` must be 1"),
        (
            {"tools": [{"type": "custom", "custom": {"name": "grep"}}]},
            "function tools only",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}}
                        ],
                    }
                ]
            },
            "not 'input_audio' content",
        ),
        ({"messages": [{"role": "function", "name": "f", "content": "1"}]}, "no 'function' role"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "x"}}},
            "none of them in `tools`",
        ),
    ],
)
async def test_what_cohere_cannot_do_is_a_400_that_says_so(
    client: httpx.AsyncClient, upstream: FakeUpstream, extra: dict[str, Any], says: str
) -> None:
    response = await client.post(CHAT, json=chat("hello", model="cohere", **extra))
    assert response.status_code == 400, response.text
    assert_valid("ErrorResponse", response.json())
    assert says in response.json()["error"]["message"]
    assert upstream.calls(MODEL) == 0
