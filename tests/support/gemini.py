"""Gemini's translation tests (tests/core/llm/gemini/): a deployment, tools and a tool call
in OpenAI's shape, the request Gemini would receive for a body, and the fake Gemini
server's own reading of it (`bench.fake_gemini`, which refuses what Google refuses)."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from bench.fake_gemini import _read
from bench.fake_tools import Turn
from core.llm.gemini_request import chat_body
from core.llm.types import Deployment, ProviderError

MODEL = "gemini-test-1.5"
DEPLOYMENT = Deployment(
    id="gemini-1", group="gemini", kind="google", model=MODEL, api_base=None, api_key=None
)
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n fake").decode()
WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}
TIME: dict[str, Any] = {"type": "function", "function": {"name": "get_time"}}
CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}


def native(stream: bool = False, **body: Any) -> dict[str, Any]:
    """The request Gemini receives for `body` (one user "hi" unless given messages)."""
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    return chat_body(DEPLOYMENT, {"model": "gemini", **body}, stream=stream)


def accepted(request: dict[str, Any]) -> Turn:
    """The fake Gemini server's reading of `request`; raises what it would answer 400 to."""
    _, turn, _ = _read(orjson.dumps(request))
    return turn


def refused(**body: Any) -> str:
    """The message of the 400 the translation answers `body` with."""
    with pytest.raises(ProviderError) as caught:
        native(**body)
    assert (caught.value.kind, caught.value.status, caught.value.client_fault) == (
        "status",
        400,
        True,
    )
    return caught.value.message
