"""The provider boundary's repairs (`core.llm.wire`): what real upstreams send that
OpenAI's schema refuses is put in shape, what is already in shape keeps its bytes,
and usage is moved, never invented. The gateway-level contract is in tests/contracts/."""

from __future__ import annotations

import copy
from typing import Any

import orjson

from core.llm.wire import StreamShape, conform_chunk, conform_completion, conform_embeddings
from tests.support.contracts import assert_valid

# As OpenAI answers (gpt-4o-mini, 2025): every field the schema wants, nothing null
# that must not be.
OPENAI_ANSWER: dict[str, Any] = {
    "id": "chatcmpl-BxYz",
    "object": "chat.completion",
    "created": 1752000000,
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Hello!",
                "refusal": None,
                "annotations": [],
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 9,
        "completion_tokens": 2,
        "total_tokens": 11,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
    "service_tier": "default",
    "system_fingerprint": "fp_34a54ae93c",
}
OPENAI_CHUNKS: list[dict[str, Any]] = [
    {
        "id": "chatcmpl-BxYz",
        "object": "chat.completion.chunk",
        "created": 1752000000,
        "model": "gpt-4o-mini-2024-07-18",
        "service_tier": "default",
        "system_fingerprint": "fp_34a54ae93c",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        "usage": None,
        "obfuscation": "x1",
    }
    for delta, finish in (
        ({"role": "assistant", "content": "", "refusal": None}, None),
        ({"content": "Hello"}, None),
        ({}, "stop"),
    )
]
OPENAI_USAGE_CHUNK: dict[str, Any] = {
    **OPENAI_CHUNKS[0],
    "choices": [],
    "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
}


def shaped(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    shape = StreamShape()
    out = [shape.chunk(orjson.dumps(c), c) for c in copy.deepcopy(chunks)]
    last = shape.last()
    sent = [c for c in (*out, last) if c is not None]
    for chunk in sent:
        assert orjson.loads(chunk.payload) == chunk.data
        assert_valid("CreateChatCompletionStreamResponse", chunk.data)
    return [c.data for c in sent]


def test_openais_own_answers_keep_their_bytes() -> None:
    answer = copy.deepcopy(OPENAI_ANSWER)
    assert conform_completion(answer) is False and answer == OPENAI_ANSWER
    shape = StreamShape()
    for chunk in [*OPENAI_CHUNKS, OPENAI_USAGE_CHUNK]:
        payload = orjson.dumps(chunk)
        assert shape.chunk(payload, copy.deepcopy(chunk)).payload is payload  # type: ignore[union-attr]
    assert shape.last() is None
    embeddings = {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.1, -0.2]}],
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 2, "total_tokens": 2},
    }
    assert conform_embeddings(copy.deepcopy(embeddings)) is False


def test_a_mistral_style_answer_is_put_in_shape() -> None:
    answer: dict[str, Any] = {
        "id": "cmpl-1",
        "object": "chat.completion",
        "created": 1752000000,
        "model": "mistral-small-latest",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "tool_calls": None, "content": "Bonjour"},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 5,
            "completion_tokens": 1,
            "total_tokens": 6,
            "prompt_tokens_details": None,
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": None},
        },
        "system_fingerprint": None,
    }
    assert conform_completion(answer) is True
    assert_valid("CreateChatCompletionResponse", answer)
    assert answer["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Bonjour",
        "refusal": None,
    }
    assert answer["usage"]["completion_tokens_details"] == {"reasoning_tokens": 0}
    assert "prompt_tokens_details" not in answer["usage"]


def test_usage_on_the_finish_chunk_moves_to_a_last_chunk_of_its_own() -> None:
    usage = {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}
    chunks = copy.deepcopy(OPENAI_CHUNKS)
    chunks[-1]["usage"] = usage
    sent = shaped(chunks)
    assert [c["choices"][0]["finish_reason"] for c in sent[:-1]] == [None, None, "stop"]
    assert sent[-1]["choices"] == [] and sent[-1]["usage"] == usage
    assert sent[-1]["id"] == "chatcmpl-BxYz" and sent[-1]["model"] == chunks[0]["model"]


def test_running_totals_on_every_chunk_become_one_last_usage_chunk() -> None:
    chunks = copy.deepcopy(OPENAI_CHUNKS)
    for count, chunk in enumerate(chunks, start=1):
        chunk["usage"] = {"prompt_tokens": 9, "completion_tokens": count, "total_tokens": 9 + count}
    sent = shaped(chunks)
    assert [c.get("usage") for c in sent[:-1]] == [None] * 3
    assert sent[-1]["usage"]["completion_tokens"] == 3


def test_an_empty_choice_beside_usage_is_not_sent() -> None:
    """litellm's usage chunk carries a choice that says nothing."""
    companion = {
        **OPENAI_CHUNKS[0],
        "choices": [{"index": 0, "delta": {"content": None, "role": None}, "finish_reason": None}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
    }
    sent = shaped([*OPENAI_CHUNKS, companion])
    assert len(sent) == 4 and sent[-1]["choices"] == []


def test_null_fields_a_chunk_must_not_hold_are_dropped() -> None:
    chunk = copy.deepcopy(OPENAI_CHUNKS[1])
    chunk["system_fingerprint"] = None
    chunk["choices"][0]["delta"] = {
        "role": None,
        "content": None,
        "tool_calls": [{"index": 0, "id": None, "function": {"name": None, "arguments": "{"}}],
    }
    assert conform_chunk(chunk) is True
    assert_valid("CreateChatCompletionStreamResponse", chunk)
    assert chunk["choices"][0]["delta"] == {
        "content": None,
        "tool_calls": [{"index": 0, "function": {"arguments": "{"}}],
    }


def test_usage_is_never_invented() -> None:
    answer = copy.deepcopy(OPENAI_ANSWER)
    del answer["usage"]
    conform_completion(answer)
    assert "usage" not in answer
    partial = copy.deepcopy(OPENAI_ANSWER)
    partial["usage"] = {"prompt_tokens": 4, "completion_tokens": 3}
    conform_completion(partial)
    assert partial["usage"] == {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}
    assert StreamShape().last() is None
