"""Gemini's answer translation, pure (`core.llm.gemini_answer`): what the client gets back
for Gemini's answers, stream events and embeddings, each validated with OpenAI's schema,
and the failure each broken or hostile answer is. No HTTP: the provider is not wired yet."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import pytest

from core.llm.gemini_answer import GeminiStream, completion, embeddings, usage
from core.llm.types import ProviderError
from tests.support.contracts import assert_valid
from tests.support.gemini import DEPLOYMENT, MODEL

USAGE = {"promptTokenCount": 12, "candidatesTokenCount": 5, "totalTokenCount": 17}


def _candidate(parts: Any, finish: Any = "STOP", index: int = 0) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": index}
    if finish is not None:
        candidate["finishReason"] = finish
    return candidate


def _answer(*candidates: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "candidates": list(candidates),
        "usageMetadata": USAGE,
        "modelVersion": "gemini-real-name",
        "responseId": "resp-1",
        **extra,
    }


def answered(data: Any) -> dict[str, Any]:
    out = completion(DEPLOYMENT, data)
    assert_valid("CreateChatCompletionResponse", out)
    return out


def _call(name: str, args: Any = None, **extra: Any) -> dict[str, Any]:
    call: dict[str, Any] = {"name": name, **extra}
    if args is not None:
        call["args"] = args
    return {"functionCall": call}


# -- answers ------------------------------------------------------------------------------
def test_an_answer_in_openais_shape() -> None:
    parts = [
        {"text": "The user greets me.", "thought": True},
        {"text": "Hello"},
        {"text": " world"},
        {"executableCode": {"language": "PYTHON", "code": "1"}},
    ]
    data = answered(_answer(_candidate(parts)))
    assert (data["id"], data["object"], data["model"]) == ("resp-1", "chat.completion", MODEL)
    assert data["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello world", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert data["usage"] == {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}


def test_function_calls_are_tool_calls_after_stop() -> None:
    """Gemini says STOP after calls; the client is told `tool_calls`. Gemini gives no id
    (one is made, unique), or its own when it does."""
    parts = [
        {"text": "Checking."},
        _call("get_weather", {"city": "Paris"}, id="g-1"),
        _call("get_weather", {"city": "Rome"}, thoughtSignature="sig"),
        _call("get_time"),
    ]
    choice = answered(_answer(_candidate(parts)))["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Checking."
    calls = choice["message"]["tool_calls"]
    assert [(c["type"], c["function"]["name"]) for c in calls] == [
        ("function", "get_weather"),
        ("function", "get_weather"),
        ("function", "get_time"),
    ]
    assert calls[0]["id"] == "g-1"
    assert calls[1]["id"].startswith("call_") and calls[1]["id"] != calls[2]["id"]
    assert [json.loads(c["function"]["arguments"]) for c in calls] == [
        {"city": "Paris"},
        {"city": "Rome"},
        {},
    ]


def test_candidates_are_choices_in_index_order() -> None:
    data = answered(
        _answer(_candidate([{"text": "b"}], "MAX_TOKENS", 1), _candidate([{"text": "a"}]))
    )
    assert [(c["index"], c["message"]["content"], c["finish_reason"]) for c in data["choices"]] == [
        (0, "a", "stop"),
        (1, "b", "length"),
    ]


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("IMAGE_SAFETY", "content_filter"),
        ("OTHER", "stop"),
        ("FINISH_REASON_UNSPECIFIED", "stop"),
        ("SOME_FUTURE_REASON", "stop"),
    ],
)
def test_finish_reasons(reason: str, expected: str) -> None:
    data = answered(_answer(_candidate([{"text": "x"}], reason)))
    assert data["choices"][0]["finish_reason"] == expected


def test_a_filtered_candidate_without_content_is_empty() -> None:
    data = answered(_answer({"finishReason": "SAFETY", "index": 0, "safetyRatings": []}))
    assert data["choices"][0]["message"]["content"] is None
    assert data["choices"][0]["finish_reason"] == "content_filter"


@pytest.mark.parametrize("reason", ["MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL"])
def test_a_malformed_call_is_a_failed_generation(reason: str) -> None:
    """Not an empty `stop` answer (the client asked for a call and would get nothing),
    and not cached: the upstream's failure, worth another attempt."""
    for run in (
        lambda: completion(DEPLOYMENT, _answer(_candidate([], reason))),
        lambda: GeminiStream(DEPLOYMENT).chunks(_answer(_candidate([], reason))),
    ):
        with pytest.raises(ProviderError) as caught:
            run()
        assert (caught.value.kind, caught.value.status, caught.value.retryable) == (
            "status",
            502,
            True,
        )
        assert reason in caught.value.message


def test_a_blocked_prompt_is_a_400() -> None:
    blocked = {
        "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": []},
        "usageMetadata": USAGE,
    }
    for run in (
        lambda: completion(DEPLOYMENT, blocked),
        lambda: GeminiStream(DEPLOYMENT).chunks(blocked),
    ):
        with pytest.raises(ProviderError) as caught:
            run()
        assert (caught.value.kind, caught.value.status, caught.value.client_fault) == (
            "status",
            400,
            True,
        )
        assert "blocked the prompt (SAFETY)" in caught.value.message


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            {
                "promptTokenCount": 1000,
                "cachedContentTokenCount": 800,
                "toolUsePromptTokenCount": 10,
                "candidatesTokenCount": 5,
                "thoughtsTokenCount": 40,
                "totalTokenCount": 1055,
            },
            {
                "prompt_tokens": 1010,
                "completion_tokens": 45,
                "total_tokens": 1055,
                "prompt_tokens_details": {"cached_tokens": 800},
                "completion_tokens_details": {"reasoning_tokens": 40},
            },
        ),
        ({"promptTokenCount": 7}, {"prompt_tokens": 7, "completion_tokens": 0, "total_tokens": 7}),
        (
            {"promptTokenCount": 3, "thoughtsTokenCount": 0, "cachedContentTokenCount": 0},
            {"prompt_tokens": 3, "completion_tokens": 0, "total_tokens": 3},
        ),
        ({}, None),
        ({"totalTokenCount": 9}, None),
        ({"promptTokenCount": -1, "candidatesTokenCount": "many"}, None),
        ({"promptTokenCount": True}, None),
        (None, None),
        ([1, 2], None),
    ],
)
def test_usage(raw: Any, expected: Any) -> None:
    assert usage(raw) == expected
    data = answered(_answer(_candidate([{"text": "x"}]), usageMetadata=raw))
    assert data.get("usage") == expected


@pytest.mark.parametrize(
    ("error", "kind", "status"),
    [
        (
            {"code": 429, "message": "Resource exhausted", "status": "RESOURCE_EXHAUSTED"},
            "status",
            429,
        ),
        ({"code": 500, "message": "Internal error", "status": "INTERNAL"}, "status", 500),
        ({"code": 400, "message": "too long", "status": "INVALID_ARGUMENT"}, "status", 400),
        ({"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}, "status", 503),
        ({"code": 504, "message": "took too long", "status": "DEADLINE_EXCEEDED"}, "timeout", None),
        ({"message": "took too long", "status": "DEADLINE_EXCEEDED"}, "timeout", None),
        ({"code": "429", "message": "odd code", "status": "RESOURCE_EXHAUSTED"}, "status", 429),
        ({"code": 200, "message": "odd code"}, "status", 502),
        ({"message": "?", "status": "BRAND_NEW"}, "status", 502),
        ("nonsense", "status", 502),
    ],
)
def test_an_error_object_is_a_failure(error: Any, kind: str, status: int | None) -> None:
    for run in (
        lambda: completion(DEPLOYMENT, {"error": error}),
        lambda: GeminiStream(DEPLOYMENT).chunks({"error": error}),
    ):
        with pytest.raises(ProviderError) as caught:
            run()
        assert (caught.value.kind, caught.value.status) == (kind, status)
        if isinstance(error, dict):
            assert error["message"] in caught.value.message


_HOSTILE = [
    ("not json", "with an unexpected shape"),
    ([], "with an unexpected shape"),
    ({"usageMetadata": USAGE}, "without candidates"),
    ({"candidates": {"0": {}}}, "candidates that are not a list"),
    ({"candidates": ["x"]}, "a candidate that is not an object"),
    ({"candidates": [_candidate([{"text": "x"}], index="0")]}, "index is no integer"),  # type: ignore[arg-type]
    ({"candidates": [_candidate([{"text": "x"}], index=-1)]}, "index is no integer"),
    ({"candidates": [{"content": "text", "finishReason": "STOP"}]}, "parts are not a list"),
    ({"candidates": [_candidate({"text": "x"})]}, "parts are not a list"),
    ({"candidates": [_candidate(["x"])]}, "parts are not a list"),
    ({"candidates": [_candidate([{"functionCall": "f"}])]}, "a function call without a name"),
    ({"candidates": [_candidate([_call("f", [1])])]}, "args are not an object"),
    ({"candidates": [_candidate([_call("f", "{}")])]}, "args are not an object"),
    ({"candidates": [_candidate([{"functionCall": {"name": 3}}])]}, "without a name"),
]


@pytest.mark.parametrize(("data", "says"), _HOSTILE)
def test_garbage_answers(data: Any, says: str) -> None:
    with pytest.raises(ProviderError) as caught:
        completion(DEPLOYMENT, data)
    assert caught.value.kind == "garbage"
    assert says in caught.value.message


def test_an_answer_without_a_finish_reason_is_garbage() -> None:
    with pytest.raises(ProviderError) as caught:
        completion(DEPLOYMENT, _answer(_candidate([{"text": "x"}], None)))
    assert (caught.value.kind, "without a finish reason" in caught.value.message) == (
        "garbage",
        True,
    )


def test_odd_but_harmless_parts_are_left_out() -> None:
    parts = [{"text": 3}, {"text": None}, {"inlineData": {"mimeType": "image/png", "data": "AA"}}]
    data = answered(_answer(_candidate(parts), responseId=7))
    assert data["choices"][0]["message"]["content"] is None
    assert data["id"].startswith("chatcmpl-")


# -- streams ------------------------------------------------------------------------------
def _event(parts: Any, finish: Any = None, usage_: Any = None, index: int = 0) -> dict[str, Any]:
    return {
        "candidates": [_candidate(parts, finish, index)],
        "usageMetadata": usage_ or {"promptTokenCount": 9, "totalTokenCount": 9},
        "modelVersion": "gemini-real-name",
        "responseId": "resp-stream",
    }


def streamed(
    events: list[dict[str, Any]], choices: int = 1
) -> tuple[list[dict[str, Any]], GeminiStream]:
    state = GeminiStream(DEPLOYMENT, choices=choices)
    chunks = [chunk for event in events for chunk in state.chunks(event)]
    for chunk in chunks:
        assert_valid("CreateChatCompletionStreamResponse", chunk)
    return chunks, state


def test_a_streamed_text_answer() -> None:
    events = [
        _event([{"text": "Hel"}]),
        _event([{"text": "thinking", "thought": True}, {"text": ""}]),
        {"usageMetadata": {"promptTokenCount": 9}},  # an event without candidates
        _event([{"text": "lo!"}], "STOP", {**USAGE, "promptTokenCount": 9, "totalTokenCount": 14}),
    ]
    chunks, state = streamed(events[:3])
    assert not state.finished
    chunks, state = streamed(events)
    assert state.finished
    assert {c["id"] for c in chunks} == {"resp-stream"}
    assert {(c["object"], c["model"]) for c in chunks} == {("chat.completion.chunk", MODEL)}
    assert [c["choices"] for c in chunks[:-1]] == [
        [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        for delta, finish in [
            ({"role": "assistant", "content": ""}, None),
            ({"content": "Hel"}, None),
            ({"content": "lo!"}, None),
            ({}, "stop"),
        ]
    ]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14}


def test_streamed_calls_arrive_whole_and_are_numbered() -> None:
    events = [
        _event([{"text": "Let me check."}]),
        _event([_call("get_weather", {"city": "Madrid"}), _call("get_weather", {"city": "Lima"})]),
        _event([_call("get_time", id="g-7")], "STOP", USAGE),
    ]
    chunks, state = streamed(events)
    assert state.finished
    assert chunks[1]["choices"][0]["delta"] == {"content": "Let me check."}
    pieces = [c["choices"][0]["delta"]["tool_calls"] for c in chunks[2:5]]
    assert [p["index"] for (p,) in pieces] == [0, 1, 2]
    assert [(p["type"], p["function"]["name"]) for (p,) in pieces] == [
        ("function", "get_weather"),
        ("function", "get_weather"),
        ("function", "get_time"),
    ]
    assert [json.loads(p["function"]["arguments"]) for (p,) in pieces] == [
        {"city": "Madrid"},
        {"city": "Lima"},
        {},
    ]
    assert pieces[2][0]["id"] == "g-7" and pieces[0][0]["id"].startswith("call_")
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["usage"]["total_tokens"] == 17


@pytest.mark.parametrize(
    ("reason", "finish"),
    [("MAX_TOKENS", "length"), ("SAFETY", "content_filter"), ("OTHER", "stop")],
)
def test_stream_finish_reasons(reason: str, finish: str) -> None:
    chunks, state = streamed([_event([{"text": "Hi"}]), _event([], reason)])
    assert state.finished
    assert chunks[-2]["choices"][0]["finish_reason"] == finish


def test_a_filtered_stream_opens_with_the_role_and_finishes() -> None:
    event = {"candidates": [{"finishReason": "SAFETY", "index": 0}], "responseId": "r"}
    chunks, state = streamed([event])
    assert state.finished
    assert [c["choices"][0]["delta"] for c in chunks] == [{"role": "assistant", "content": ""}, {}]
    assert chunks[-1]["choices"][0]["finish_reason"] == "content_filter"


def test_a_stream_cut_before_its_finish_is_not_finished() -> None:
    chunks, state = streamed([_event([{"text": "Hel"}])])
    assert not state.finished
    assert [c["choices"][0]["delta"].get("content") for c in chunks] == ["", "Hel"]


def test_several_candidates_stream_as_choices() -> None:
    """`n: 2`: each choice opens with its role, numbers its own calls, and the stream
    finishes (with one usage chunk) once both have."""
    both = {
        "candidates": [
            _candidate([{"text": "a"}], None, 0),
            _candidate([_call("get_time")], None, 1),
        ],
        "responseId": "r",
    }
    events = [both, _event([], "STOP", USAGE, index=1), _event([{"text": "!"}], "STOP", USAGE)]
    chunks, state = streamed(events[:2], choices=2)
    assert not state.finished
    chunks, state = streamed(events, choices=2)
    assert state.finished
    seen = [
        (c["choices"][0]["index"], c["choices"][0]["delta"], c["choices"][0]["finish_reason"])
        for c in chunks[:-1]
    ]
    assert [
        (i, d.get("content"), d.get("tool_calls", [{}])[0].get("index"), f) for i, d, f in seen
    ] == [
        (0, "", None, None),
        (0, "a", None, None),
        (1, "", None, None),
        (1, None, 0, None),
        (1, None, None, "tool_calls"),
        (0, "!", None, None),
        (0, None, None, "stop"),
    ]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 17


@pytest.mark.parametrize(
    ("data", "says"), [(d, s) for d, s in _HOSTILE if isinstance(d, dict) and "candidates" in d]
)
def test_garbage_streams(data: Any, says: str) -> None:
    with pytest.raises(ProviderError) as caught:
        GeminiStream(DEPLOYMENT).chunks(data)
    assert caught.value.kind == "garbage"
    assert says in caught.value.message


@pytest.mark.parametrize(
    ("events", "says"),
    [
        (["not an object"], "an event that is not an object"),
        ([_event([], "STOP"), _event([{"text": "more"}])], "had finished"),
        ([_event([{"text": "x"}], index=1)], "not asked for"),
        ([_event([{"text": "x"}], finish=5)], "without a finish reason"),
    ],
)
def test_garbage_stream_sequences(events: list[Any], says: str) -> None:
    state = GeminiStream(DEPLOYMENT)
    with pytest.raises(ProviderError) as caught:
        for event in events:
            state.chunks(event)
    assert caught.value.kind == "garbage"
    assert says in caught.value.message


def test_an_error_mid_stream_after_content() -> None:
    state = GeminiStream(DEPLOYMENT)
    state.chunks(_event([{"text": "Hel"}]))
    with pytest.raises(ProviderError) as caught:
        state.chunks({"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}})
    assert (caught.value.status, caught.value.retryable) == (503, True)
    assert not state.finished


# -- embeddings ---------------------------------------------------------------------------
def _vectors(*vectors: list[float]) -> dict[str, Any]:
    return {"embeddings": [{"values": v} for v in vectors]}


def test_embeddings_across_batches() -> None:
    data = embeddings(
        DEPLOYMENT, [(2, _vectors([0.1, 0.2], [0.3, 0.4])), (1, _vectors([1, -1]))], None
    )
    assert_valid("CreateEmbeddingResponse", data)
    assert [(item["index"], item["embedding"]) for item in data["data"]] == [
        (0, [0.1, 0.2]),
        (1, [0.3, 0.4]),
        (2, [1, -1]),
    ]
    assert (data["object"], data["model"]) == ("list", MODEL)
    assert data["usage"] == {"prompt_tokens": 0, "total_tokens": 0}


def test_base64_embeddings_are_float32_little_endian() -> None:
    data = embeddings(DEPLOYMENT, [(1, _vectors([0.5, -2.25, 3.0]))], "base64")
    raw = base64.b64decode(data["data"][0]["embedding"])
    assert struct.unpack("<3f", raw) == (0.5, -2.25, 3.0)


@pytest.mark.parametrize(
    ("answer", "sent"),
    [
        ("nope", 1),
        ({"embeddings": None}, 1),
        (_vectors([0.1]), 2),
        ({"embeddings": ["x"]}, 1),
        ({"embeddings": [{"values": "0.1"}]}, 1),
        ({"embeddings": [{"values": [0.1, "x"]}]}, 1),
        ({"embeddings": [{"values": [True]}]}, 1),
        ({"embedding": {"values": [0.1]}}, 1),
    ],
)
def test_garbage_embeddings(answer: Any, sent: int) -> None:
    for encoding in (None, "base64"):
        with pytest.raises(ProviderError) as caught:
            embeddings(DEPLOYMENT, [(sent, answer)], encoding)
        assert caught.value.kind == "garbage"
