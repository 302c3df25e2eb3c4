"""Gemini's request translation, pure (`core.llm.gemini_request`): what Gemini would receive
for each OpenAI parameter, the 400 that says what it cannot do, and the fake Gemini
server's own checks (unknown field names, roles, one response per call) passing on what
is sent. No HTTP: the provider is not wired yet."""

from __future__ import annotations

from typing import Any

import pytest

from bench.fake_gemini import _Invalid
from core.llm.gemini_conversation import THOUGHT_SIGNATURE
from core.llm.gemini_request import (
    DROPPED,
    MAX_EMBED_TEXTS,
    REFUSED,
    TRANSLATED,
    chat_path,
    embed_body,
    embed_path,
    embed_texts,
)
from core.llm.parameters import CHAT_PARAMETERS
from core.llm.types import Deployment, ProviderError
from tests.support.gemini import (
    CALL,
    DEPLOYMENT,
    MODEL,
    PNG,
    TIME,
    WEATHER,
    accepted,
    native,
    refused,
)


def test_every_chat_parameter_is_translated_dropped_or_refused() -> None:
    """A name added to the allow-list must be decided for Gemini before it can pass."""
    assert TRANSLATED | DROPPED | REFUSED == CHAT_PARAMETERS
    assert not (TRANSLATED & DROPPED or TRANSLATED & REFUSED or DROPPED & REFUSED)


def _deployment(model: str) -> Deployment:
    return Deployment(id="g", group="g", kind="google", model=model, api_base=None, api_key=None)


def test_paths_quote_the_model() -> None:
    assert chat_path(DEPLOYMENT, stream=False) == f"/models/{MODEL}:generateContent"
    assert chat_path(DEPLOYMENT, stream=True) == (f"/models/{MODEL}:streamGenerateContent?alt=sse")
    assert embed_path(DEPLOYMENT) == f"/models/{MODEL}:batchEmbedContents"
    assert embed_path(_deployment("models/text-embedding-004")) == (
        "/models/text-embedding-004:batchEmbedContents"
    )
    hostile = chat_path(_deployment("x/../../files?key=1#:a b"), stream=False)
    assert hostile == "/models/x%2F..%2F..%2Ffiles%3Fkey%3D1%23%3Aa%20b:generateContent"


def test_what_gemini_receives_for_each_parameter() -> None:
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
                    {"type": "input_audio", "input_audio": {"data": PNG, "format": "wav"}},
                ],
            },
            {"role": "assistant", "content": None, "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ],
        "tools": [WEATHER, TIME],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "n": 2,
        "max_tokens": 80,
        "max_completion_tokens": 50,
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 40,
        "stop": "END",
        "seed": 7,
        "frequency_penalty": 0.2,
        "presence_penalty": 0.1,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "w", "schema": {"type": "object"}, "strict": True},
        },
        # Dropped: no Gemini counterpart.
        "parallel_tool_calls": False,
        "user": "user-1",
        "metadata": {"team": "a"},
        "logprobs": False,
        "store": False,
        "stream_options": {"include_usage": True},
        "reasoning_effort": "low",
    }
    request = native(stream=True, **body)
    assert request == {
        "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Use tools."}]},
        "contents": [
            {
                "role": "user",
                "parts": [
                    {"text": "weather here?"},
                    {"inlineData": {"mimeType": "image/png", "data": PNG}},
                    {"inlineData": {"mimeType": "audio/wav", "data": PNG}},
                ],
            },
            {
                "role": "model",
                "parts": [
                    {
                        "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                        "thoughtSignature": THOUGHT_SIGNATURE,
                    }
                ],
            },
            {
                "role": "user",
                "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"output": "sunny"}}}
                ],
            },
        ],
        "tools": [
            {
                "functionDeclarations": [
                    {
                        "name": "get_weather",
                        "description": "Current weather for a city",
                        "parametersJsonSchema": WEATHER["function"]["parameters"],
                    },
                    {"name": "get_time"},
                ]
            }
        ],
        "toolConfig": {
            "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}
        },
        "generationConfig": {
            "temperature": 0.5,
            "topP": 0.9,
            "topK": 40,
            "seed": 7,
            "presencePenalty": 0.1,
            "frequencyPenalty": 0.2,
            "maxOutputTokens": 50,
            "stopSequences": ["END"],
            "candidateCount": 2,
            "responseMimeType": "application/json",
            "responseJsonSchema": {"type": "object"},
        },
    }
    turn = accepted(request)  # the fake's field-name, role and response-count checks
    assert (turn.results, turn.forced, turn.allowed) == (("sunny",), True, ("get_weather",))


def test_a_plain_request() -> None:
    request = native()
    assert request == {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    assert native(stream=True) == request
    assert native(max_tokens=7)["generationConfig"] == {"maxOutputTokens": 7}
    assert native(n=1, stop=["A", "B"])["generationConfig"] == {"stopSequences": ["A", "B"]}
    assert accepted(request).last_user == "hi"


@pytest.mark.parametrize(
    ("response_format", "expected"),
    [
        ({"type": "text"}, None),
        ({"type": "json_object"}, {"responseMimeType": "application/json"}),
        (
            {"type": "json_schema", "json_schema": {"name": "x"}},
            {"responseMimeType": "application/json"},
        ),
    ],
)
def test_response_formats(response_format: dict[str, Any], expected: Any) -> None:
    request = native(response_format=response_format)
    assert request.get("generationConfig") == expected
    accepted(request)


def test_turns_are_merged_and_tool_results_follow_the_calls_order() -> None:
    """Alternating `user`/`model` turns; results named after their call, in the calls'
    order whatever the order of the tool messages, the user's next words after them;
    empty text and empty turns are left out, and a late system message is hoisted."""
    second = {**CALL, "id": "call_2", "function": {"name": "get_time", "arguments": ""}}
    messages = [
        {"role": "user", "content": "one"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "two"}, {"type": "text", "text": ""}],
        },
        {"role": "assistant", "content": "Let me look."},
        {"role": "assistant", "content": "", "tool_calls": [CALL, second]},
        {"role": "tool", "tool_call_id": "call_2", "content": ""},
        {"role": "system", "content": "Late rule."},
        {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "sun"}]},
        {"role": "user", "content": "thanks"},
        {"role": "assistant", "content": ""},  # an empty turn: dropped
        {"role": "user", "content": "and tomorrow?"},
    ]
    request = native(messages=messages, tools=[WEATHER, TIME])
    assert request["systemInstruction"] == {"parts": [{"text": "Late rule."}]}
    assert request["contents"] == [
        {"role": "user", "parts": [{"text": "one"}, {"text": "two"}]},
        {
            "role": "model",
            "parts": [
                {"text": "Let me look."},
                {
                    "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                    "thoughtSignature": THOUGHT_SIGNATURE,
                },
                {"functionCall": {"name": "get_time", "args": {}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"output": "sun"}}},
                {"functionResponse": {"name": "get_time", "response": {"output": ""}}},
                {"text": "thanks"},
                {"text": "and tomorrow?"},
            ],
        },
    ]
    accepted(request)


def test_a_conversation_ending_in_tool_results() -> None:
    messages = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": "21 C"},
    ]
    request = native(messages=messages, tools=[WEATHER])
    assert request["contents"][-1] == {
        "role": "user",
        "parts": [{"functionResponse": {"name": "get_weather", "response": {"output": "21 C"}}}],
    }
    assert accepted(request).results == ("21 C",)


def test_the_fake_refuses_a_call_left_unanswered() -> None:
    """What the translation refuses itself (every call answered once any is) is what
    Google refuses: hand-built, the fake's check says so."""
    request = native(messages=[{"role": "user", "content": "x"}])
    request["contents"] += [
        {
            "role": "model",
            "parts": [{"functionCall": {"name": "a"}}, {"functionCall": {"name": "b"}}],
        },
        {"role": "user", "parts": [{"functionResponse": {"name": "a", "response": {}}}]},
    ]
    with pytest.raises(_Invalid):
        accepted(request)


@pytest.mark.parametrize(
    ("tool_choice", "expected", "offered"),
    [
        (None, None, ["get_weather", "get_time"]),
        ("auto", {"mode": "AUTO"}, ["get_weather", "get_time"]),
        ("required", {"mode": "ANY"}, ["get_weather", "get_time"]),
        ("none", {"mode": "NONE"}, ["get_weather", "get_time"]),
        (
            {"type": "function", "function": {"name": "get_time"}},
            {"mode": "ANY", "allowedFunctionNames": ["get_time"]},
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
            {"mode": "ANY"},
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
            {"mode": "AUTO"},
            ["get_time"],
        ),
    ],
)
def test_tool_choice_in_gemini_terms(tool_choice: Any, expected: Any, offered: list[str]) -> None:
    extra: dict[str, Any] = {"tools": [WEATHER, TIME]}
    if tool_choice is not None:
        extra["tool_choice"] = tool_choice
    request = native(**extra)
    config = request.get("toolConfig")
    assert (config["functionCallingConfig"] if config else None) == expected
    assert [d["name"] for d in request["tools"][0]["functionDeclarations"]] == offered
    accepted(request)


def test_no_tools_means_no_tool_config() -> None:
    request = native(tool_choice="none", parallel_tool_calls=False)
    assert "toolConfig" not in request and "tools" not in request


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ({"functions": [{"name": "f"}]}, "not the deprecated `functions`"),
        ({"function_call": "auto"}, "not the deprecated `functions`"),
        ({"modalities": ["text", "audio"]}, "no `audio` output"),
        ({"audio": {"voice": "x", "format": "wav"}}, "no `audio` output"),
        ({"response_format": {"type": "yaml"}}, "not text, json_object or json_schema"),
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
def test_what_gemini_cannot_do_is_a_400_that_says_so(extra: dict[str, Any], says: str) -> None:
    assert says in refused(**extra)


def _user(*parts: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": list(parts)}]


def _image(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


_ASKED = [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [CALL]}]


@pytest.mark.parametrize(
    ("messages", "says"),
    [
        ([], "at least one non-empty"),
        ([{"role": "system", "content": "only rules"}], "at least one non-empty"),
        ([{"role": "user", "content": ""}], "at least one non-empty"),
        ([{"role": "function", "name": "f", "content": "1"}], "messages[0]: Gemini has no"),
        ([{"role": "robot", "content": "1"}], "no 'robot' role"),
        (_user(_image("https://example.com/cat.png")), "not web URLs"),
        (_user(_image("gs://bucket/cat.png")), "not web URLs"),
        (_user(_image(f"data:image/svg+xml;base64,{PNG}")), "a base64 data: URL of image/heic"),
        (_user(_image("data:image/png,rawbytes")), "a base64 data: URL"),
        (_user(_image("data:image/png;base64,not base64!")), "not valid base64"),
        (
            _user({"type": "input_audio", "input_audio": {"data": PNG, "format": "flac"}}),
            "audio must be wav or mp3",
        ),
        (_user({"type": "file", "file": {"file_id": "file-1"}}), "not 'file' content"),
        (
            [{"role": "system", "content": [_image(f"data:image/png;base64,{PNG}")]}],
            "takes text here, not 'image_url'",
        ),
        (
            [{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "call_1"}],
            "'call_1' answers no tool call",
        ),
        (
            [
                *_ASKED,
                {"role": "user", "content": "wait"},
                {"role": "tool", "tool_call_id": "call_1"},
            ],
            "messages[3]: `tool_call_id` 'call_1' answers no tool call",
        ),
        (
            [
                *_ASKED,
                {"role": "tool", "tool_call_id": "call_1", "content": "1"},
                {"role": "tool", "tool_call_id": "call_1", "content": "again"},
            ],
            "messages[3]",
        ),
        (
            [{"role": "user", "content": "x"}, {"role": "tool", "content": "1"}],
            "needs the `tool_call_id`",
        ),
        (
            [
                {"role": "user", "content": "x"},
                {"role": "assistant", "tool_calls": [CALL, {**CALL, "id": "call_2"}]},
                {"role": "tool", "tool_call_id": "call_2", "content": "1"},
                {"role": "user", "content": "and?"},
            ],
            "messages[1]: Gemini needs a `tool` message for every tool call; none answers 'call_1'",
        ),
        (
            [
                {"role": "user", "content": "x"},
                {
                    "role": "assistant",
                    "tool_calls": [{**CALL, "function": {"name": "f", "arguments": "[1]"}}],
                },
            ],
            "messages[1].tool_calls[0]: Gemini takes arguments as a JSON object",
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
                {"role": "assistant", "tool_calls": [{"id": "c", "type": "custom"}]},
            ],
            "function tool calls only",
        ),
    ],
)
def test_odd_conversations_are_a_400_that_says_so(messages: list[Any], says: str) -> None:
    assert says in refused(messages=messages)


def test_image_media_types() -> None:
    for media_type in ("image/jpeg", "image/png", "image/webp", "image/heic", "image/heif"):
        request = native(messages=_user(_image(f"data:{media_type};base64,{PNG}")))
        (part,) = request["contents"][0]["parts"]
        assert part == {"inlineData": {"mimeType": media_type, "data": PNG}}
        accepted(request)


def test_an_assistant_refusal_part_is_text_it_said() -> None:
    messages = [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't."}]},
    ]
    assert native(messages=messages)["contents"][1] == {
        "role": "model",
        "parts": [{"text": "I can't."}],
    }


# -- embeddings ---------------------------------------------------------------------------
def test_embedding_requests() -> None:
    assert embed_texts({"input": "a"}) == ["a"]
    assert embed_texts({"input": ["a", "b"]}) == ["a", "b"]
    assert MAX_EMBED_TEXTS == 100
    assert embed_body(DEPLOYMENT, ["a", "b"], {"dimensions": 256}) == {
        "requests": [
            {
                "model": f"models/{MODEL}",
                "content": {"parts": [{"text": t}]},
                "outputDimensionality": 256,
            }
            for t in ("a", "b")
        ]
    }
    assert embed_body(_deployment("models/e"), ["a"], {}) == {
        "requests": [{"model": "models/e", "content": {"parts": [{"text": "a"}]}}]
    }


@pytest.mark.parametrize("value", [[1, 2], [[1, 2]], ["a", 3]])
def test_token_ids_are_refused(value: Any) -> None:
    with pytest.raises(ProviderError) as caught:
        embed_texts({"input": value})
    assert caught.value.status == 400
    assert "not token ids" in caught.value.message
