"""Cohere's native path (`core.llm.cohere`) as a provider: embeddings (batches, base64)
and prices found without litellm. Upstream failures, the same on every provider:
tests/providers/test_provider_errors.py; no litellm on this path:
tests/providers/test_no_litellm.py. Requests in Cohere's terms: test_cohere_requests.py;
answers and streams: test_cohere_answers.py."""

from __future__ import annotations

import base64
import struct
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.fake_upstream import FakeUpstream
from core.llm.costs import CostTable
from tests.support.cohere import EMBED_MODEL, MODEL, sent
from tests.support.contracts import assert_valid

ROOT = Path(__file__).resolve().parents[4]


# -- embeddings -----------------------------------------------------------------------------
async def embed(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/api/v1/embeddings", json={"model": "cohere-embed", **body})
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    assert_valid("CreateEmbeddingResponse", data)
    return data


async def test_embeddings(client: httpx.AsyncClient, upstream: FakeUpstream) -> None:
    data = await embed(client, input=["a b", "c"], dimensions=256)
    assert data["model"] == EMBED_MODEL
    assert [item["index"] for item in data["data"]] == [0, 1]
    assert data["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    request = sent(upstream, EMBED_MODEL)
    assert request["path"] == "/v2/embed"
    assert request["body"] == {
        "model": EMBED_MODEL,
        "texts": ["a b", "c"],
        "input_type": "search_document",
        "embedding_types": ["float"],
        "output_dimension": 256,
    }
    # OpenAI's base64: the same floats, packed (its published schema types `embedding`
    # as an array only, so this answer is not validated against it).
    response = await client.post(
        "/api/v1/embeddings",
        json={"model": "cohere-embed", "input": "a b", "encoding_format": "base64"},
    )
    assert response.status_code == 200, response.text
    raw = base64.b64decode(response.json()["data"][0]["embedding"])
    floats = struct.unpack(f"<{len(raw) // 4}f", raw)
    assert floats == pytest.approx(data["data"][0]["embedding"], rel=1e-6)


async def test_more_texts_than_cohere_takes_go_in_batches(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    texts = [f"text {i}" for i in range(200)]
    data = await embed(client, input=texts)
    assert upstream.calls(EMBED_MODEL) == 3  # 96 + 96 + 8
    assert [item["index"] for item in data["data"]] == list(range(200))
    single = await embed(client, input=texts[150])
    assert data["data"][150]["embedding"] == single["data"][0]["embedding"]
    assert data["usage"]["prompt_tokens"] == 400


async def test_token_ids_are_not_text(client: httpx.AsyncClient, upstream: FakeUpstream) -> None:
    response = await client.post(
        "/api/v1/embeddings", json={"model": "cohere-embed", "input": [1, 2]}
    )
    assert response.status_code == 400, response.text
    assert "not token ids" in response.json()["error"]["message"]
    assert upstream.calls(EMBED_MODEL) == 0


# -- costs and memory -----------------------------------------------------------------------
def test_cohere_prices_come_from_the_bundled_map() -> None:
    models = {("cohere", m) for m in (MODEL, "command-a-03-2025", EMBED_MODEL, "embed-v4.0")}
    table = CostTable.load(models)
    assert all(table.known(*pair) for pair in models)
    assert table.cost("cohere", MODEL, 1_000_000, 1_000_000) == pytest.approx(0.15 + 0.60)
