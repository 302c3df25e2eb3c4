"""Gemini's native path (`core.llm.gemini`) as a provider, through the gateway against the
fake Gemini API: the key and endpoint Google receives, the safety filter, Google's retry
hint, and embeddings in batches of Google's size (the failures every provider has:
tests/providers/test_provider_errors.py). The translation: test_gemini_requests.py and
test_gemini_answers.py."""

from __future__ import annotations

import base64
import struct
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.fake_upstream import FakeUpstream
from core.llm.gemini import retry_delay
from core.llm.gemini_request import MAX_EMBED_TEXTS
from tests.support.app import NO_RETRIES, routed_app
from tests.support.contracts import assert_valid, assert_valid_stream
from tests.support.requests import CHAT, chat

MODEL = "gemini-2.5-flash"
EMBED_MODEL = "text-embedding-004"
KEY = "fake-google-key"


@pytest.fixture
async def client(
    upstream: FakeUpstream, sqlite_url: str, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    """No cache, no retries; the key is GOOGLE_AI_API_KEY, the base URL the version root."""
    router = NO_RETRIES + textwrap.dedent(f"""\
        providers:
          fake: {{kind: google, api_base: "{upstream.root_url}/v1beta"}}
        model_groups:
          - {{name: gemini, deployments: [{{provider: fake, model: {MODEL}}}]}}
          - {{name: gemini-embed, deployments: [{{provider: fake, model: {EMBED_MODEL}}}]}}
        """)
    async with routed_app(router, tmp_path, google_ai_api_key=KEY, database_url=sqlite_url) as http:
        yield http


def sent(upstream: FakeUpstream, model: str = MODEL) -> dict[str, Any]:
    request = upstream.last_request(model)
    assert request is not None, "nothing reached Gemini"
    return request


async def failed(client: httpx.AsyncClient, body: dict[str, Any], status: int) -> dict[str, Any]:
    response = await client.post(CHAT, json=body)
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()
    assert_valid("ErrorResponse", error)
    return error


# -- what Google receives -------------------------------------------------------------------
@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
async def test_gemini_gets_its_key_and_endpoint(
    client: httpx.AsyncClient, upstream: FakeUpstream, stream: bool
) -> None:
    response = await client.post(CHAT, json=chat("hello", model="gemini", stream=stream))
    assert response.status_code == 200, response.text
    if stream:
        chunks = assert_valid_stream(response.content, include_usage=False)
        text = "".join(
            c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]
        )
    else:
        data = response.json()
        assert_valid("CreateChatCompletionResponse", data)
        text = data["choices"][0]["message"]["content"]
    assert text == "echo: hello"
    request = sent(upstream)
    method = "streamGenerateContent?alt=sse" if stream else "generateContent"
    assert request["path"] == f"/v1beta/models/{MODEL}:{method}"
    assert request["headers"]["x-goog-api-key"] == KEY
    assert "authorization" not in request["headers"]
    assert "key=" not in request["path"]  # never in the URL, where access logs keep it


# -- failures -------------------------------------------------------------------------------
async def test_the_safety_filter_is_a_content_filter_finish(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    upstream.set_behaviour(MODEL, "content_filter")
    response = await client.post(CHAT, json=chat("hi", model="gemini"))
    assert response.status_code == 200, response.text
    assert_valid("CreateChatCompletionResponse", response.json())
    assert response.json()["choices"][0]["finish_reason"] == "content_filter"


# -- embeddings -----------------------------------------------------------------------------
async def test_embeddings_in_batches_of_googles_size(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    """More texts than one `batchEmbedContents` takes: several calls, one answer in the
    inputs' order, base64 as OpenAI encodes it, `dimensions` passed on, and usage."""
    texts = [f"text {i}" for i in range(MAX_EMBED_TEXTS + 5)]
    body = {"model": "gemini-embed", "input": texts, "dimensions": 64}
    plain = await client.post("/api/v1/embeddings", json=body)
    assert plain.status_code == 200, plain.text
    data = plain.json()
    assert_valid("CreateEmbeddingResponse", data)
    assert [item["index"] for item in data["data"]] == list(range(len(texts)))
    # Google counts no tokens: estimated (4 characters a token), never metered as free
    estimate = sum(-(-len(text) // 4) for text in texts)
    assert data["usage"] == {"prompt_tokens": estimate, "total_tokens": estimate}
    assert upstream.calls(EMBED_MODEL) == 2
    request = sent(upstream, EMBED_MODEL)
    assert request["path"] == f"/v1beta/models/{EMBED_MODEL}:batchEmbedContents"
    assert {r["outputDimensionality"] for r in request["body"]["requests"]} == {64}

    encoded = await client.post("/api/v1/embeddings", json={**body, "encoding_format": "base64"})
    assert encoded.status_code == 200, encoded.text
    # (OpenAI's schema types only the float form; base64 is a string, as OpenAI sends it)
    first = base64.b64decode(encoded.json()["data"][0]["embedding"])
    floats = struct.unpack(f"<{len(first) // 4}f", first)
    assert floats == pytest.approx(data["data"][0]["embedding"], rel=1e-6)


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        (
            b'{"error": {"details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo",'
            b' "retryDelay": "37.5s"}]}}',
            37.5,
        ),
        (
            b'{"error": {"details": [{"@type": "other"}, {"@type":'
            b' "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "3s"}]}}',
            3.0,
        ),
        (
            b'{"error": {"details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo",'
            b' "retryDelay": "inf"}]}}',
            None,
        ),
        (
            b'{"error": {"details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo",'
            b' "retryDelay": 5}]}}',
            None,
        ),
        (b'{"error": {"details": "3s"}}', None),
        (b'{"error": "busy"}', None),
        (b"[1, 2]", None),
        (b"not json", None),
    ],
    ids=[
        "fraction",
        "among-others",
        "not-a-duration",
        "a-number",
        "no-list",
        "no-object",
        "a-list",
        "not-json",
    ],
)
def test_googles_retry_hint_is_read_from_its_error_details(
    raw: bytes, seconds: float | None
) -> None:
    assert retry_delay(raw) == seconds
