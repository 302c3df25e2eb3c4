"""Anthropic's translation tests (tests/core/llm/anthropic/): a deployment, tools and a
tool call in OpenAI's shape, the request Anthropic would receive for a body, and
Anthropic's answers and stream events, translated and checked against OpenAI's schema."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from core.llm.anthropic_answer import AnthropicStream, completion
from core.llm.anthropic_json import JsonTool
from core.llm.anthropic_request import chat_body
from core.llm.types import Deployment, ProviderError
from tests.support.contracts import assert_valid

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


# -- answers -----------------------------------------------------------------------------
def answer_body(content: list[Any], stop_reason: Any = "end_turn", **extra: Any) -> dict[str, Any]:
    return {
        "id": "msg_01abc",
        "type": "message",
        "role": "assistant",
        "model": "claude-real-name",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 5},
        **extra,
    }


def answered(data: Any, json_tool: JsonTool | None = None) -> dict[str, Any]:
    out = completion(DEPLOYMENT, data, json_tool=json_tool)
    assert_valid("CreateChatCompletionResponse", out)
    return out


# -- streams -----------------------------------------------------------------------------
def stream_start(usage: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "type": "message_start",
        "message": {
            "id": "msg_stream1",
            "type": "message",
            "role": "assistant",
            "model": "claude-real-name",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage or {"input_tokens": 25, "output_tokens": 1},
        },
    }


def block_events(
    index: int, block: dict[str, Any], *deltas: dict[str, Any]
) -> list[dict[str, Any]]:
    return [
        {"type": "content_block_start", "index": index, "content_block": block},
        *({"type": "content_block_delta", "index": index, "delta": d} for d in deltas),
        {"type": "content_block_stop", "index": index},
    ]


def stream_close(reason: str = "end_turn", output: int = 15) -> list[dict[str, Any]]:
    return [
        {
            "type": "message_delta",
            "delta": {"stop_reason": reason, "stop_sequence": None},
            "usage": {"output_tokens": output},
        },
        {"type": "message_stop"},
    ]


def text_delta(text: str) -> dict[str, Any]:
    return {"type": "text_delta", "text": text}


def json_delta(piece: str) -> dict[str, Any]:
    return {"type": "input_json_delta", "partial_json": piece}


def streamed(
    events: list[dict[str, Any]], json_tool: JsonTool | None = None
) -> tuple[list[dict[str, Any]], AnthropicStream]:
    state = AnthropicStream(DEPLOYMENT, json_tool=json_tool)
    chunks = [chunk for event in events for chunk in state.chunks(event)]
    for chunk in chunks:
        assert_valid("CreateChatCompletionStreamResponse", chunk)
    return chunks, state
