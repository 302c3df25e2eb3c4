"""Finding 10: a streamed answer assembled into the cache was served to a non-streaming request
with fields missing (`logprobs: true` streamed, then the same body without streaming got a hit
with `"logprobs": null`).

The rule: an answer assembled from a stream is stored only with every field a non-streaming
answer would have had, or not at all. Against the fake provider (a real HTTP server): the
direct path and Anthropic's, logprobs, tool calls and several choices; and, on the assembler
itself, that anything it does not know makes a stream uncacheable.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from bench.fake_upstream import FakeUpstream
from core.gateway.streams import StreamAssembler, replay
from tests.support.app import settle
from tests.support.llm import LLMApp
from tests.support.requests import CHAT, chat

FRESH = {"cache-control": "no-cache, no-store"}  # straight to the provider, nothing kept
VARYING = {"id", "created"}  # differ between any two answers
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def events(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    assert response.text.endswith("data: [DONE]\n\n"), response.text
    return [
        orjson.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: {")
    ]


def assert_has_every_field(hit: Any, fresh: Any, path: str = "") -> None:
    """Every field the provider's own non-streaming answer carries with a value is in the
    cached answer, with the same value (ids and timestamps aside)."""
    if isinstance(fresh, dict):
        assert isinstance(hit, dict), f"{path}: {hit!r}"
        for key, value in fresh.items():
            if value is None or (not path and key in VARYING):
                continue
            assert key in hit and hit[key] is not None, f"{path}.{key} missing from the hit"
            assert_has_every_field(hit[key], value, f"{path}.{key}")
    elif isinstance(fresh, list):
        assert isinstance(hit, list) and len(hit) == len(fresh), f"{path}: {hit!r}"
        for i, (a, b) in enumerate(zip(hit, fresh, strict=True)):
            assert_has_every_field(a, b, f"{path}[{i}]")
    elif path.endswith(".function.arguments"):  # JSON text: its spacing is the model's
        assert orjson.loads(hit) == orjson.loads(fresh), f"{path}: {hit!r} != {fresh!r}"
    else:
        assert hit == fresh, f"{path}: {hit!r} != {fresh!r}"


async def stream_then_plain(
    app: FastAPI, client: httpx.AsyncClient, upstream: FakeUpstream, body: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Stream `body` (stored), then ask without streaming: (the hit, a fresh answer)."""
    streamed = await client.post(CHAT, json={**body, "stream": True})
    assert streamed.headers["x-cache"] == "miss"
    events(streamed)
    await settle(app)  # the store runs in the background after [DONE]
    calls = upstream.total_calls
    hit = await client.post(CHAT, json=body)
    assert hit.status_code == 200, hit.text
    assert hit.headers["x-cache"] == "hit", "the whole stream was not stored"
    assert upstream.total_calls == calls
    fresh = await client.post(CHAT, json=body, headers=FRESH)
    assert fresh.status_code == 200 and fresh.headers["x-cache"] == "bypass"
    return hit.json(), fresh.json()


# --------------------------------------------------------------------------- the reported case


async def test_streamed_logprobs_reach_a_later_non_streaming_hit(
    llm_app: LLMApp, upstream: FakeUpstream
) -> None:
    async with llm_app() as (app, client):
        hit, fresh = await stream_then_plain(
            app, client, upstream, chat("tell me about logprobs", "solo", logprobs=True)
        )
    assert fresh["choices"][0]["logprobs"]["content"]  # the provider sends them
    assert hit["choices"][0]["logprobs"] == fresh["choices"][0]["logprobs"]
    assert_has_every_field(hit, fresh)
    assert hit["usage"] == fresh["usage"]


async def test_a_non_streaming_answer_replays_its_logprobs(
    llm_app: LLMApp, upstream: FakeUpstream
) -> None:
    """The other direction: a stored non-streaming answer served to a streaming request."""
    body = chat("logprobs the other way", "solo", logprobs=True)
    async with llm_app() as (app, client):
        plain = await client.post(CHAT, json=body)
        stored = plain.json()
        await settle(app)
        streamed = await client.post(CHAT, json={**body, "stream": True})
        assert streamed.headers["x-cache"] == "hit"
        chunks = events(streamed)
    tokens = [
        token
        for chunk in chunks
        for choice in chunk["choices"]
        for token in ((choice.get("logprobs") or {}).get("content") or ())
    ]
    assert tokens == stored["choices"][0]["logprobs"]["content"]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == stored["choices"][0]["message"]["content"]


# --------------------------------------------------------------------------- other shapes


@pytest.mark.parametrize(
    ("model", "text", "extra"),
    [
        ("solo", "plain text", {}),
        ("solo", "two choices", {"n": 2, "logprobs": True}),
        ("solo", "what is the weather in Paris", {"tools": [WEATHER_TOOL]}),
        ("claude", "translated from Anthropic", {}),
        ("claude", "what is the weather in Paris", {"tools": [WEATHER_TOOL]}),
    ],
    ids=["direct", "direct-n2-logprobs", "direct-tool-call", "anthropic", "anthropic-tool-call"],
)
async def test_a_stored_stream_has_every_field_of_a_plain_answer(
    llm_app: LLMApp, upstream: FakeUpstream, model: str, text: str, extra: dict[str, Any]
) -> None:
    async with llm_app() as (app, client):
        hit, fresh = await stream_then_plain(app, client, upstream, chat(text, model, **extra))
    assert_has_every_field(hit, fresh)
    assert len(hit["choices"]) == len(fresh["choices"])


# --------------------------------------------------------------------------- the assembler


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "system_fingerprint": "fp_1",
        "service_tier": "default",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        **extra,
    }


USAGE = {
    "prompt_tokens": 5,
    "completion_tokens": 7,
    "total_tokens": 12,
    "prompt_tokens_details": {"cached_tokens": 2, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 3, "accepted_prediction_tokens": 0},
}


def whole_stream() -> list[dict[str, Any]]:
    lp = {"content": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105], "top_logprobs": []}]}
    return [
        chunk({"role": "assistant", "content": ""}),
        {
            **chunk({"content": "Hi"}),
            "choices": [
                {
                    "index": 0,
                    "delta": {"content": "Hi"},
                    "logprobs": {**lp, "refusal": None},
                    "finish_reason": None,
                }
            ],
        },
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "f", "arguments": ""},
                    }
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a": 1}'}}]}),
        chunk({}, "tool_calls"),
        {**chunk({}), "choices": [], "usage": USAGE},
    ]


def assemble(chunks: list[dict[str, Any]]) -> StreamAssembler:
    assembler = StreamAssembler()
    for item in chunks:
        assembler.add(item)
    return assembler


def test_the_assembler_rebuilds_every_field() -> None:
    assembler = assemble(whole_stream())
    assert assembler.complete
    assert assembler.completion() == {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "system_fingerprint": "fp_1",
        "service_tier": "default",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Hi",
                    "refusal": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "f", "arguments": '{"a": 1}'},
                        }
                    ],
                },
                "logprobs": {
                    "content": [
                        {"token": "Hi", "logprob": -0.1, "bytes": [72, 105], "top_logprobs": []}
                    ],
                    "refusal": None,
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": USAGE,
    }
    # and a stream request served from it gets the same text, tool call and logprobs back
    replayed = [
        orjson.loads(e[6:])
        for e in replay(assembler.completion(), include_usage=True)
        if e.startswith(b"data: {")
    ]
    again = assemble(replayed)
    assert again.complete and again.completion() == assembler.completion()


@pytest.mark.parametrize(
    "where",
    ["chunk", "choice", "delta", "tool_call", "function", "logprobs", "custom_tool"],
)
def test_anything_unknown_makes_a_stream_uncacheable(where: str) -> None:
    chunks = whole_stream()
    target = chunks[2]
    choice = target["choices"][0]
    if where == "chunk":
        target["citations"] = ["https://example.com"]
    elif where == "choice":
        choice["content_filter_results"] = {"hate": {"filtered": False}}
    elif where == "delta":
        choice["delta"]["reasoning_content"] = "thinking..."
    elif where == "tool_call":
        choice["delta"]["tool_calls"][0]["provider_specific_fields"] = {"x": 1}
    elif where == "function":
        choice["delta"]["tool_calls"][0]["function"]["thought_signature"] = "sig"
    elif where == "logprobs":
        choice["logprobs"] = {"content": [], "top": 1}
    else:
        choice["delta"]["tool_calls"][0]["type"] = "custom"
    assembler = assemble(chunks)
    assert assembler.finished and not assembler.complete


def test_null_fields_and_padding_do_not_count_as_unknown() -> None:
    chunks = whole_stream()
    chunks[1]["citations"] = None  # litellm's way of saying "none"
    chunks[1]["obfuscation"] = "aGk"  # OpenAI's stream-only padding
    chunks[2]["choices"][0]["delta"]["reasoning_content"] = None
    assert assemble(chunks).complete


def test_no_usage_or_no_finish_is_not_cacheable() -> None:
    assert not assemble(whole_stream()[:-1]).complete  # no usage: a plain answer has it
    assert not assemble(whole_stream()[:-2]).complete  # no finish reason
    assert not StreamAssembler().complete
