"""Anthropic's translation tests (tests/core/llm/anthropic/): a deployment, tools and a
tool call in OpenAI's shape, and the request Anthropic would receive for a body."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from core.llm.anthropic_request import (
    chat_body,
)
from core.llm.types import Deployment, ProviderError

MODEL = "claude-test-1"
DEPLOYMENT = Deployment(
    id="anthropic-1", group="claude", kind="anthropic", model=MODEL, api_base=None, api_key=None
)
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n fake").decode()
WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        "strict": True,
    },
}
TIME: dict[str, Any] = {"type": "function", "function": {"name": "get_time"}}
CALL = {
    "id": "toolu_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}


def native(stream: bool = False, **body: Any) -> dict[str, Any]:
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    return chat_body(DEPLOYMENT, {"model": "claude", **body}, stream=stream)


def refused(**body: Any) -> str:
    with pytest.raises(ProviderError) as caught:
        native(**body)
    assert (caught.value.kind, caught.value.status, caught.value.client_fault) == (
        "status",
        400,
        True,
    )
    return caught.value.message
