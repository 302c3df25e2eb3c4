"""Anthropic's answer translation, pure (`core.llm.anthropic_answer`): what the client
gets back for Anthropic's answers and stream events, each validated with OpenAI's
schema. No server: the provider is not wired yet."""

from __future__ import annotations

import json
from typing import Any

import pytest

from core.llm.anthropic_answer import AnthropicStream, completion, usage
from core.llm.types import ProviderError
from tests.support.anthropic import (
    DEPLOYMENT,
    MODEL,
    answer_body,
    answered,
    block_events,
    json_delta,
    stream_close,
    stream_start,
    streamed,
    text_delta,
)


# -- answers --------------------------------------------------------------------------------
def test_an_answer_in_openais_shape() -> None:
    content = [
        {"type": "thinking", "thinking": "The user greets me.", "signature": "sig"},
        {"type": "text", "text": "Hello"},
        {"type": "text", "text": " world"},
    ]
    data = answered(answer_body(content))
    assert (data["id"], data["object"], data["model"]) == ("msg_01abc", "chat.completion", MODEL)
    assert data["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello world", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert data["usage"] == {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}


def test_tool_use_blocks_are_tool_calls() -> None:
    content = [
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "toolu_b", "name": "get_time", "input": {}},
    ]
    message = answered(answer_body(content, "tool_use"))["choices"][0]
    assert message["finish_reason"] == "tool_calls"
    assert message["message"]["content"] == "Checking."
    calls = message["message"]["tool_calls"]
    assert [(c["id"], c["type"], c["function"]["name"]) for c in calls] == [
        ("toolu_a", "function", "get_weather"),
        ("toolu_b", "function", "get_time"),
    ]
    assert [json.loads(c["function"]["arguments"]) for c in calls] == [{"city": "Paris"}, {}]


@pytest.mark.parametrize(
    ("stop_reason", "expected"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("pause_turn", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("some_future_reason", "stop"),
    ],
)
def test_finish_reasons(stop_reason: str, expected: str) -> None:
    data = answered(answer_body([{"type": "text", "text": "x"}], stop_reason))
    assert data["choices"][0]["finish_reason"] == expected


def test_an_empty_answer_has_null_content() -> None:
    assert answered(answer_body([], "refusal"))["choices"][0]["message"]["content"] is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            {
                "input_tokens": 10,
                "cache_creation_input_tokens": 100,
                "cache_read_input_tokens": 1000,
                "output_tokens": 5,
            },
            {
                "prompt_tokens": 1110,
                "completion_tokens": 5,
                "total_tokens": 1115,
                "prompt_tokens_details": {"cached_tokens": 1000, "cache_write_tokens": 100},
            },
        ),
        (
            {
                "input_tokens": 10,
                "cache_creation_input_tokens": None,
                "cache_read_input_tokens": 0,
                "output_tokens": 5,
            },
            {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        ),
        ({"output_tokens": 3}, {"prompt_tokens": 0, "completion_tokens": 3, "total_tokens": 3}),
        ({}, None),
        ({"input_tokens": -1, "output_tokens": "many"}, None),
        (None, None),
    ],
)
def test_usage_counts_the_cache(raw: Any, expected: Any) -> None:
    assert usage(raw) == expected
    if expected is not None:
        data = answered(answer_body([{"type": "text", "text": "x"}], usage=raw))
        assert data["usage"] == expected


def test_an_answer_without_usage_has_none() -> None:
    data = answer_body([{"type": "text", "text": "x"}])
    del data["usage"]
    assert "usage" not in answered(data)


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ("not json", "with an unexpected shape"),
        ({"type": "message"}, "with an unexpected shape"),
        (answer_body([{"type": "text", "text": "x"}], None), "without a stop reason"),
        (answer_body([{"type": "tool_use", "id": "t", "input": {}}], "tool_use"), "without a name"),
    ],
)
def test_garbage_answers(data: Any, says: str) -> None:
    with pytest.raises(ProviderError) as caught:
        completion(DEPLOYMENT, data)
    assert caught.value.kind == "garbage"
    assert says in caught.value.message


@pytest.mark.parametrize(
    ("error", "kind", "status"),
    [
        ({"type": "overloaded_error", "message": "Overloaded"}, "status", 529),
        ({"type": "rate_limit_error", "message": "slow down"}, "status", 429),
        ({"type": "api_error", "message": "Internal server error"}, "status", 500),
        ({"type": "invalid_request_error", "message": "prompt is too long"}, "status", 400),
        ({"type": "timeout_error", "message": "took too long"}, "timeout", None),
        ({"type": "brand_new_error", "message": "?"}, "status", 502),
        ("nonsense", "status", 502),
    ],
)
def test_an_error_object_is_a_failure(error: Any, kind: str, status: int | None) -> None:
    for run in (
        lambda: completion(DEPLOYMENT, {"type": "error", "error": error}),
        lambda: AnthropicStream(DEPLOYMENT).chunks({"type": "error", "error": error}),
    ):
        with pytest.raises(ProviderError) as caught:
            run()
        assert (caught.value.kind, caught.value.status) == (kind, status)
        if isinstance(error, dict):
            assert error["message"] in caught.value.message


# -- streams -------------------------------------------------------------------------------
def test_a_streamed_text_answer() -> None:
    events = [
        stream_start(),
        *block_events(
            0, {"type": "text", "text": ""}, text_delta("Hello"), text_delta(""), text_delta("!")
        ),
        {"type": "ping"},
        *stream_close(),
    ]
    chunks, state = streamed(events[:1])
    assert not state.finished
    chunks, state = streamed(events)
    assert state.finished
    assert {c["id"] for c in chunks} == {"msg_stream1"}
    assert {(c["object"], c["model"]) for c in chunks} == {("chat.completion.chunk", MODEL)}
    assert [c["choices"] for c in chunks[:-1]] == [
        [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        for delta, finish in [
            ({"role": "assistant", "content": ""}, None),
            ({"content": "Hello"}, None),
            ({"content": "!"}, None),
            ({}, "stop"),
        ]
    ]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 25, "completion_tokens": 15, "total_tokens": 40}


def test_streamed_tool_calls_are_numbered_in_order() -> None:
    events = [
        stream_start(),
        *block_events(
            0, {"type": "thinking", "thinking": ""}, {"type": "thinking_delta", "thinking": "hm"}
        ),
        *block_events(1, {"type": "text", "text": "Let me check."}),
        *block_events(
            2,
            {"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {}},
            json_delta(""),
            json_delta('{"city": '),
            json_delta('"Madrid"}'),
        ),
        *block_events(
            3,
            {"type": "tool_use", "id": "toolu_b", "name": "get_weather", "input": {}},
            json_delta('{"city": "Brasilia"}'),
        ),
        *stream_close("tool_use"),
    ]
    chunks, state = streamed(events)
    assert state.finished
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[1]["choices"][0]["delta"] == {"content": "Let me check."}
    pieces = [c["choices"][0]["delta"]["tool_calls"] for c in chunks[2:-2]]
    assert pieces[0] == [
        {
            "index": 0,
            "id": "toolu_a",
            "type": "function",
            "function": {"name": "get_weather", "arguments": ""},
        }
    ]
    assert pieces[1:3] == [
        [{"index": 0, "function": {"arguments": '{"city": '}}],
        [{"index": 0, "function": {"arguments": '"Madrid"}'}}],
    ]
    assert pieces[3][0]["index"] == 1 and pieces[3][0]["id"] == "toolu_b"
    assert pieces[4] == [{"index": 1, "function": {"arguments": '{"city": "Brasilia"}'}}]
    calls: dict[int, str] = {}
    for (piece,) in pieces:
        calls[piece["index"]] = calls.get(piece["index"], "") + piece["function"]["arguments"]
    assert [json.loads(arguments) for arguments in calls.values()] == [
        {"city": "Madrid"},
        {"city": "Brasilia"},
    ]
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"


def test_a_tool_use_start_with_its_input_whole() -> None:
    block = {"type": "tool_use", "id": "toolu_a", "name": "get_time", "input": {"tz": "UTC"}}
    chunks, _ = streamed([stream_start(), *block_events(0, block), *stream_close("tool_use")])
    (piece,) = chunks[1]["choices"][0]["delta"]["tool_calls"]
    assert piece["function"] == {"name": "get_time", "arguments": '{"tz":"UTC"}'}


@pytest.mark.parametrize(
    ("reason", "finish"),
    [("max_tokens", "length"), ("refusal", "content_filter"), ("stop_sequence", "stop")],
)
def test_stream_finish_reasons(reason: str, finish: str) -> None:
    events = [
        stream_start(),
        *block_events(0, {"type": "text", "text": "Hi"}),
        *stream_close(reason),
    ]
    chunks, _ = streamed(events)
    assert chunks[1]["choices"][0]["delta"] == {"content": "Hi"}
    assert chunks[-2]["choices"][0]["finish_reason"] == finish


def test_stream_usage_counts_the_cache_and_takes_message_deltas_figures() -> None:
    start = stream_start(
        {
            "input_tokens": 5,
            "cache_creation_input_tokens": 20,
            "cache_read_input_tokens": None,
            "output_tokens": 1,
        }
    )
    last = {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn"},
        "usage": {"output_tokens": 9, "cache_read_input_tokens": 300},
    }
    chunks, _ = streamed([start, *block_events(0, {"type": "text", "text": "x"}), last])
    assert chunks[-1]["usage"] == {
        "prompt_tokens": 325,
        "completion_tokens": 9,
        "total_tokens": 334,
        "prompt_tokens_details": {"cached_tokens": 300, "cache_write_tokens": 20},
    }


def test_a_stream_cut_before_message_stop_is_not_finished() -> None:
    events = [stream_start(), *block_events(0, {"type": "text", "text": ""}, text_delta("Hel"))]
    chunks, state = streamed(events)
    assert not state.finished
    assert [c["choices"][0]["delta"].get("content") for c in chunks] == ["", "Hel"]


def test_an_error_mid_stream_after_content() -> None:
    state = AnthropicStream(DEPLOYMENT)
    for event in [
        stream_start(),
        *block_events(0, {"type": "text", "text": ""}, text_delta("Hel")),
    ]:
        state.chunks(event)
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    with pytest.raises(ProviderError) as caught:
        state.chunks(overloaded)
    assert (caught.value.status, caught.value.retryable) == (529, True)
    assert not state.finished


def test_unknown_events_and_deltas_are_ignored() -> None:
    events = [
        stream_start(),
        {"type": "some_future_event", "data": 1},
        *block_events(0, {"type": "text", "text": ""}, {"type": "citations_delta", "citation": {}}),
        *block_events(1, {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search"}),
        *stream_close(),
    ]
    chunks, state = streamed(events)
    assert state.finished
    assert [c["choices"][0]["delta"] for c in chunks[:-1]] == [
        {"role": "assistant", "content": ""},
        {},
    ]


def test_a_stream_without_message_start_still_opens_with_the_role() -> None:
    chunks, _ = streamed([*block_events(0, {"type": "text", "text": "Hi"}), *stream_close()])
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[0]["id"].startswith("chatcmpl-")
    assert chunks[-1]["usage"]["completion_tokens"] == 15


@pytest.mark.parametrize(
    ("events", "says"),
    [
        (
            [{"type": "content_block_delta", "index": 0, "delta": text_delta("x")}],
            "had not started",
        ),
        (
            [{"type": "content_block_delta", "index": [0], "delta": text_delta("x")}],
            "had not started",
        ),
        ([{"type": "content_block_start", "index": 0}], "without a body"),
        (
            [{"type": "content_block_start", "index": "0", "content_block": {"type": "text"}}],
            "without an index",
        ),
        (
            [{"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use"}}],
            "without a name",
        ),
        (
            block_events(0, {"type": "text", "text": ""}, json_delta("{}")),
            "an input delta outside a tool_use block",
        ),
        (
            block_events(
                0, {"type": "tool_use", "id": "t", "name": "f", "input": {}}, text_delta("x")
            ),
            "a text delta outside a text block",
        ),
        ([{"type": "message_delta", "delta": {}}], "without a stop reason"),
        ([{"type": "message_stop"}], "a stream without a stop reason"),
    ],
)
def test_garbage_streams(events: list[dict[str, Any]], says: str) -> None:
    state = AnthropicStream(DEPLOYMENT)
    with pytest.raises(ProviderError) as caught:
        for event in events:
            state.chunks(event)
    assert caught.value.kind == "garbage"
    assert says in caught.value.message
