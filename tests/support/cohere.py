"""Cohere through the gateway, for tests/core/llm/cohere/: a gateway whose groups
are Cohere deployments on two upstreams, the fake (`bench.fake_cohere`: Cohere's Chat v2
and Embed v2 with fault injection) and `Replay`, which serves any answer a test sets,
verbatim (what the fake never says: other finish reasons, reasoning blocks, float
token counts, a failed generation); and Cohere's own sample streams, from its docs.

Groups: `cohere` (the fake's `command-r-08-2024`), `cohere-embed` (the fake's
`embed-english-v3.0`), `replayed` (`Replay`'s `command-a-03-2025`).
"""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from bench.fake_upstream import FakeUpstream
from tests.support.app import NO_RETRIES, routed_app
from tests.support.contracts import assert_valid, assert_valid_stream
from tests.support.replay import Replay
from tests.support.requests import CHAT

MODEL = "command-r-08-2024"
EMBED_MODEL = "embed-english-v3.0"
REPLAYED_MODEL = "command-a-03-2025"
KEY = "fake-cohere-key"


@asynccontextmanager
async def cohere_gateway(
    upstream: FakeUpstream, replay: Replay, database_url: str, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    """A running gateway (no cache, no retries) and its client; the key is COHERE_API_KEY."""
    router = NO_RETRIES + textwrap.dedent(f"""\
        providers:
          fake: {{kind: cohere, api_base: "{upstream.root_url}"}}
          replay: {{kind: cohere, api_base: "{replay.url}"}}
        model_groups:
          - {{name: cohere, deployments: [{{provider: fake, model: {MODEL}}}]}}
          - {{name: cohere-embed, deployments: [{{provider: fake, model: {EMBED_MODEL}}}]}}
          - {{name: replayed, deployments: [{{provider: replay, model: {REPLAYED_MODEL}}}]}}
        """)
    async with routed_app(router, tmp_path, cohere_api_key=KEY, database_url=database_url) as http:
        yield http


def sent(upstream: FakeUpstream, model: str = MODEL) -> dict[str, Any]:
    request = upstream.last_request(model)
    assert request is not None, "nothing reached Cohere"
    return request


async def completed(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(CHAT, json=body)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    assert_valid("CreateChatCompletionResponse", data)
    return data


async def streamed(
    client: httpx.AsyncClient, body: dict[str, Any], *, include_usage: bool = True
) -> list[dict[str, Any]]:
    options = {"stream_options": {"include_usage": True}} if include_usage else {}
    response = await client.post(CHAT, json={**body, "stream": True, **options})
    assert response.status_code == 200, response.text
    return assert_valid_stream(response.content, include_usage=include_usage)


# -- Cohere's stream events -----------------------------------------------------------------
def tool_call_events(call_id: str, arguments: list[str], index: int) -> list[dict[str, Any]]:
    start = {
        "type": "tool-call-start",
        "index": index,
        "delta": {
            "message": {
                "tool_calls": {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            }
        },
    }
    deltas = [
        {
            "type": "tool-call-delta",
            "index": index,
            "delta": {"message": {"tool_calls": {"function": {"arguments": piece}}}},
        }
        for piece in arguments
    ]
    return [start, *deltas, {"type": "tool-call-end", "index": index}]


def message_start(message_id: str) -> dict[str, Any]:
    empty = {"role": "assistant", "content": [], "tool_plan": "", "tool_calls": [], "citations": []}
    return {"type": "message-start", "id": message_id, "delta": {"message": empty}}


def message_end(finish: str, billed: tuple[float, float], **extra: Any) -> dict[str, Any]:
    usage = {
        "billed_units": {"input_tokens": billed[0], "output_tokens": billed[1]},
        "tokens": {"input_tokens": 913.0, "output_tokens": 83.0},
    }
    return {"type": "message-end", "delta": {"finish_reason": finish, "usage": usage, **extra}}


# Cohere's tool-use stream sample ("What's the weather in Madrid and Brasilia?"), with its
# plan and argument pieces fewer and longer.
TOOL_STREAM = [
    message_start("fba98ad3-e5a1-413c-a8de-84fbf9baabf7"),
    {"type": "tool-plan-delta", "delta": {"message": {"tool_plan": "I"}}},
    {"type": "tool-plan-delta", "delta": {"message": {"tool_plan": " will search."}}},
    *tool_call_events(
        "get_weather_p1t92w7gfgq7", ['{\n    "', "location", '":', ' "', "Madrid", '"\n}'], 0
    ),
    *tool_call_events(
        "get_weather_ay6nmvjgp9vn", ['{\n    "', "location", '": "', "Bras", 'ilia"\n}'], 1
    ),
    message_end("TOOL_CALL", (37.0, 28.0)),
]


def text_stream(pieces: list[str], finish: str = "COMPLETE") -> list[dict[str, Any]]:
    def content(kind: str, text: str) -> dict[str, Any]:
        return {"type": kind, "index": 0, "delta": {"message": {"content": {"text": text}}}}

    return [
        message_start("29f14a5a-11de-4cae-9800-25e4747408ea"),
        {
            "type": "content-start",
            "index": 0,
            "delta": {"message": {"content": {"type": "text", "text": ""}}},
        },
        *(content("content-delta", piece) for piece in pieces),
        {"type": "content-end", "index": 0},
        message_end(finish, (5.0, 26.0)),
    ]
