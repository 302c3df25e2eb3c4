"""Cohere's native path (`core.llm.cohere`) as a provider: what each upstream failure
turns into for the client, embeddings (batches, base64), prices found without litellm,
and a Cohere-only gateway that never imports litellm. Requests in Cohere's terms:
test_cohere_requests.py; answers and streams: test_cohere_answers.py."""

from __future__ import annotations

import base64
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.fake_upstream import FakeUpstream
from core.llm.costs import CostTable
from tests.support.cohere import EMBED_MODEL, MODEL, sent
from tests.support.contracts import assert_valid
from tests.support.requests import CHAT, chat

ROOT = Path(__file__).resolve().parents[4]


# -- errors ---------------------------------------------------------------------------------
@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
async def test_a_400_is_the_clients_with_cohere_message(
    client: httpx.AsyncClient, upstream: FakeUpstream, stream: bool
) -> None:
    says = "invalid request: temperature must be between 0 and 1"
    upstream.set_behaviour(MODEL, "status", status=400, message=says)
    response = await client.post(CHAT, json=chat("hi", model="cohere", stream=stream))
    assert response.status_code == 400, response.text
    assert_valid("ErrorResponse", response.json())
    assert response.json()["error"]["message"] == says
    assert upstream.calls(MODEL) == 1  # not retried


async def test_a_429_passes_cohere_retry_after(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    upstream.set_behaviour(MODEL, "status", status=429, retry_after=7)
    response = await client.post(CHAT, json=chat("hi", model="cohere"))
    assert response.status_code == 429, response.text
    assert_valid("ErrorResponse", response.json())
    assert response.headers["retry-after"] == "7"


async def test_a_500_is_a_bad_gateway(client: httpx.AsyncClient, upstream: FakeUpstream) -> None:
    upstream.set_behaviour(MODEL, "status", status=500, message="internal: secret detail")
    response = await client.post(CHAT, json=chat("hi", model="cohere"))
    assert response.status_code == 502, response.text
    assert_valid("ErrorResponse", response.json())
    assert "secret detail" not in response.text


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


def test_a_cohere_only_gateway_never_imports_litellm(sqlite_url: str) -> None:
    """Chat, a stream and embeddings through a gateway whose only provider is Cohere, in
    a fresh interpreter: litellm (~160 MiB a worker) is never imported."""
    script = textwrap.dedent(f"""\
        import asyncio, sys
        from bench.fake_upstream import FakeUpstream
        from tests.support.app import make_settings, running_app

        async def main():
            async with FakeUpstream() as fake:
                settings = make_settings(
                    cohere_api_key="k", cohere_api_base=fake.root_url,
                    database_url="{sqlite_url}",
                )
                async with running_app(settings) as (_, http):
                    chat = {{"model": "{MODEL}", "messages": [{{"role": "user", "content": "hi"}}]}}
                    for body in (chat, {{**chat, "stream": True}}):
                        response = await http.post("/api/v1/chat/completions", json=body)
                        assert response.status_code == 200, response.text
            print(sorted(m for m in sys.modules if m.split(".")[0] == "litellm"))

        asyncio.run(main())
        """)
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_API_BASE"))}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
