"""Anthropic's request translation, pure (`core.llm.anthropic_request`): what Anthropic
would receive for each OpenAI parameter, and the 400 that says what it cannot do. No
server: the provider is not wired yet."""

from __future__ import annotations

from typing import Any

import pytest

from core.llm.anthropic_request import (
    DEFAULT_MAX_TOKENS,
    DROPPED,
    REFUSED,
    TRANSLATED,
)
from core.llm.parameters import CHAT_PARAMETERS
from tests.support.anthropic import CALL, MODEL, PNG, TIME, WEATHER, native, refused


# -- requests -------------------------------------------------------------------------------
def test_every_chat_parameter_is_translated_dropped_or_refused() -> None:
    """A name added to the allow-list must be decided for Anthropic before it can pass."""
    assert TRANSLATED | DROPPED | REFUSED == CHAT_PARAMETERS
    assert not (TRANSLATED & DROPPED or TRANSLATED & REFUSED or DROPPED & REFUSED)


def test_what_anthropic_receives_for_each_parameter() -> None:
    image = f"data:image/png;base64,{PNG}"
    body = {
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
            {"role": "assistant", "content": None, "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
        ],
        "tools": [WEATHER, TIME],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
        "max_tokens": 80,
        "max_completion_tokens": 50,
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 40,
        "stop": "END",
        "user": "user-1",
        # Dropped: no Anthropic counterpart.
        "seed": 7,
        "frequency_penalty": 0.2,
        "presence_penalty": 0.1,
        "metadata": {"team": "a"},
        "logprobs": False,
        "store": False,
        "stream_options": {"include_usage": True},
        "response_format": {"type": "text"},
    }
    assert native(stream=True, **body) == {
        "model": MODEL,
        "max_tokens": 50,
        "system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Use tools."}],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "weather here?"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                    },
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "get_weather",
                        "input": {"city": "Paris"},
                    }
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}],
            },
        ],
        "stream": True,
        "tools": [
            {
                "name": "get_weather",
                "description": "Current weather for a city",
                "input_schema": WEATHER["function"]["parameters"],
            },
            {"name": "get_time", "input_schema": {"type": "object", "properties": {}}},
        ],
        "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 40,
        "stop_sequences": ["END"],
        "metadata": {"user_id": "user-1"},
    }


def test_a_plain_request_and_max_tokens() -> None:
    """Anthropic requires `max_tokens`: the default when the client gave none."""
    assert native() == {
        "model": MODEL,
        "max_tokens": DEFAULT_MAX_TOKENS,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
    }
    assert native(max_tokens=7)["max_tokens"] == 7
    assert native(max_tokens=7, max_completion_tokens=9)["max_tokens"] == 9
    assert "stream" not in native(stream=False)


def test_one_system_text_is_a_string_and_stop_lists_pass() -> None:
    request = native(
        messages=[
            {"role": "user", "content": "hi"},
            {"role": "system", "content": "Late rule."},  # hoisted, wherever it stands
        ],
        stop=["A", "B"],
        safety_identifier="hash-1",
        user="user-1",
    )
    assert request["system"] == "Late rule."
    assert request["stop_sequences"] == ["A", "B"]
    assert request["metadata"] == {"user_id": "hash-1"}


def test_consecutive_turns_are_merged() -> None:
    """Alternating turns: two users become one, two tool results one user turn, with the
    user's next words after the results; empty text and empty turns are left out."""
    second = {**CALL, "id": "toolu_2", "function": {"name": "get_time", "arguments": ""}}
    messages = [
        {"role": "user", "content": "one"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "two"}, {"type": "text", "text": ""}],
        },
        {"role": "assistant", "content": "Let me look."},
        {"role": "assistant", "content": "", "tool_calls": [CALL, second]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": [{"type": "text", "text": "sun"}]},
        {"role": "tool", "tool_call_id": "toolu_2", "content": ""},
        {"role": "user", "content": "thanks"},
        {"role": "assistant", "content": ""},  # an empty turn: dropped
        {"role": "user", "content": "and tomorrow?"},
    ]
    assert native(messages=messages)["messages"] == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me look."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
                {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": [{"type": "text", "text": "sun"}],
                },
                {"type": "tool_result", "tool_use_id": "toolu_2"},
                {"type": "text", "text": "thanks"},
                {"type": "text", "text": "and tomorrow?"},
            ],
        },
    ]


def test_an_assistant_refusal_part_is_text_it_said() -> None:
    messages = [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't."}]},
    ]
    assert native(messages=messages)["messages"][1] == {
        "role": "assistant",
        "content": [{"type": "text", "text": "I can't."}],
    }


@pytest.mark.parametrize(
    ("tool_choice", "parallel", "expected", "offered"),
    [
        (None, None, None, ["get_weather", "get_time"]),
        ("auto", None, {"type": "auto"}, ["get_weather", "get_time"]),
        ("required", None, {"type": "any"}, ["get_weather", "get_time"]),
        ("none", None, {"type": "none"}, ["get_weather", "get_time"]),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}, None),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}, None),
        ("none", False, {"type": "none"}, None),  # Anthropic's `none` takes no such flag
        ("auto", True, {"type": "auto"}, None),
        (
            {"type": "function", "function": {"name": "get_time"}},
            None,
            {"type": "tool", "name": "get_time"},
            ["get_weather", "get_time"],
        ),
        (
            {
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "required",
                    "tools": [{"type": "function", "function": {"name": "get_time"}}],
                },
            },
            None,
            {"type": "any"},
            ["get_time"],
        ),
        (
            {
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "auto",
                    "tools": [{"type": "function", "name": "get_time"}],
                },
            },
            None,
            {"type": "auto"},
            ["get_time"],
        ),
    ],
)
def test_tool_choice_in_anthropic_terms(
    tool_choice: Any, parallel: bool | None, expected: Any, offered: list[str] | None
) -> None:
    extra: dict[str, Any] = {"tools": [WEATHER, TIME]}
    if tool_choice is not None:
        extra["tool_choice"] = tool_choice
    if parallel is not None:
        extra["parallel_tool_calls"] = parallel
    request = native(**extra)
    assert request.get("tool_choice") == expected
    if offered is not None:
        assert [tool["name"] for tool in request["tools"]] == offered


def test_no_tools_means_no_tool_choice() -> None:
    """Anthropic refuses a `tool_choice` without tools."""
    request = native(tool_choice="none", parallel_tool_calls=False)
    assert "tool_choice" not in request and "tools" not in request


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ({"n": 2}, "`n` must be 1"),
        ({"functions": [{"name": "f"}]}, "not the deprecated `functions`"),
        ({"modalities": ["text", "audio"]}, "no `audio` output"),
        (
            {"response_format": {"type": "json_object"}, "tools": [WEATHER]},
            "either `tools` or a JSON `response_format`",
        ),
        ({"tools": [{"type": "custom", "custom": {"name": "grep"}}]}, "function tools only"),
        ({"tools": [WEATHER], "tool_choice": "sometimes"}, "is not auto, required or none"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "x"}}},
            "not in `tools`",
        ),
        (
            {
                "tools": [WEATHER],
                "tool_choice": {
                    "type": "allowed_tools",
                    "allowed_tools": {"mode": "auto", "tools": [{"type": "function", "name": "x"}]},
                },
            },
            "none of them in `tools`",
        ),
        ({"tools": [WEATHER], "tool_choice": {"type": "custom", "custom": {}}}, "no `custom`"),
    ],
)
def test_what_anthropic_cannot_do_is_a_400_that_says_so(extra: dict[str, Any], says: str) -> None:
    assert says in refused(**extra)


def _user(*parts: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": list(parts)}]


def _image(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


@pytest.mark.parametrize(
    ("messages", "says"),
    [
        ([], "at least one non-empty user message"),
        ([{"role": "system", "content": "only rules"}], "at least one non-empty user message"),
        ([{"role": "user", "content": ""}], "at least one non-empty user message"),
        (
            [{"role": "function", "name": "f", "content": "1"}],
            "messages[0]: Anthropic has no 'function'",
        ),
        ([{"role": "robot", "content": "1"}], "no 'robot' role"),
        (_user(_image("https://example.com/cat.png")), "data: URLs"),
        (_user(_image("file:///etc/passwd")), "not web URLs"),
        (_user(_image(f"data:image/svg+xml;base64,{PNG}")), "a base64 data: URL of image/gif"),
        (_user(_image("data:image/png,rawbytes")), "a base64 data: URL"),
        (_user(_image("data:image/png;base64,not base64!")), "not valid base64"),
        (
            _user({"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}}),
            "not 'input_audio' content",
        ),
        (
            [{"role": "system", "content": [_image(f"data:image/png;base64,{PNG}")]}],
            "takes text here, not 'image_url'",
        ),
        (
            [
                {"role": "user", "content": "x"},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "1"},
            ],
            "'toolu_1' answers no tool call",
        ),
        (
            [
                {"role": "user", "content": "x"},
                {"role": "assistant", "tool_calls": [CALL]},
                {"role": "user", "content": "wait"},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "1"},
            ],
            "messages[3]: `tool_call_id` 'toolu_1' answers no tool call",
        ),
        (
            [
                {"role": "user", "content": "x"},
                {"role": "assistant", "tool_calls": [CALL]},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "1"},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "again"},
            ],
            "messages[3]",
        ),
        (
            [{"role": "user", "content": "x"}, {"role": "tool", "content": "1"}],
            "needs the `tool_call_id` it answers",
        ),
        (
            [
                {"role": "user", "content": "x"},
                {
                    "role": "assistant",
                    "tool_calls": [{**CALL, "function": {"name": "f", "arguments": "[1]"}}],
                },
            ],
            "messages[1].tool_calls[0]: Anthropic takes arguments as a JSON object",
        ),
        (
            [
                {"role": "user", "content": "x"},
                {
                    "role": "assistant",
                    "tool_calls": [{**CALL, "function": {"name": "f", "arguments": "{"}}],
                },
            ],
            "arguments as a JSON object",
        ),
        (
            [
                {"role": "user", "content": "x"},
                {"role": "assistant", "tool_calls": [{"id": "c", "type": "custom", "custom": {}}]},
            ],
            "function tool calls only",
        ),
    ],
)
def test_odd_conversations_are_a_400_that_says_so(messages: list[Any], says: str) -> None:
    assert says in refused(messages=messages)


def test_image_media_types() -> None:
    for media_type in ("image/jpeg", "image/png", "image/gif", "image/webp"):
        request = native(messages=_user(_image(f"data:{media_type};base64,{PNG}")))
        (block,) = request["messages"][0]["content"]
        assert block["source"] == {"type": "base64", "media_type": media_type, "data": PNG}
